"""quill: tensors, tokens and an RPC client for ML inference, backed by a Rust core.

>>> import quill
>>> quill.DType.float32().element_size
4
"""

from __future__ import annotations

import atexit

from quill._quill import (
    DType,
    QuillClient,
    Stream,
    Tensor,
    TensorMeta,
    Token,
    TokenBatch,
    __version__,
    _mark_shutdown,
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

# At exit, runtime threads must stop calling into Python before it finalizes.
atexit.register(_mark_shutdown)

__all__ = [
    "__version__",
    "QuillClient",
    "Stream",
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
