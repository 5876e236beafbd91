"""quill: tensors, tokens and an RPC client for ML inference, backed by a Rust core.

>>> import quill
>>> quill.DType.float32().element_size
4
"""

from __future__ import annotations

from quill._quill import (
    DType,
    Tensor,
    TensorMeta,
    Token,
    TokenBatch,
    __version__,
)
from quill.exceptions import (
    CallCancelledError,
    DecodeError,
    InvalidArgumentError,
    ProtocolError,
    QuillConnectionError,
    QuillError,
    QuillTimeoutError,
    RpcError,
    StreamError,
    UnsupportedDTypeError,
)

__all__ = [
    "__version__",
    "DType",
    "Tensor",
    "TensorMeta",
    "Token",
    "TokenBatch",
    "QuillError",
    "InvalidArgumentError",
    "UnsupportedDTypeError",
    "DecodeError",
    "QuillConnectionError",
    "QuillTimeoutError",
    "RpcError",
    "StreamError",
    "ProtocolError",
    "CallCancelledError",
]
