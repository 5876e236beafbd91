"""quill: tensors, tokens and an RPC client for ML inference, backed by a Rust core.

>>> import quill
>>> quill.DType.float32().element_size
4
"""

from __future__ import annotations

import atexit
import os

from quill._quill import (
    DType,
    GenerateRequest,
    GenerateResponse,
    GenerateStream,
    QuillClient,
    Stream,
    StreamTiming,
    Tensor,
    TensorMeta,
    Token,
    TokenBatch,
    __version__,
    _after_fork_in_child,
    _mark_shutdown,
)
from quill.exceptions import (
    CallCancelledError,
    DecodeError,
    InvalidArgumentError,
    OutOfRangeError,
    ProtocolError,
    QuillConnectionError,
    QuillError,
    QuillTimeoutError,
    RpcError,
    StreamError,
    UnsupportedDTypeError,
)

# At exit, threads inside quill must stop taking the GIL before Python finalizes
# (src/python/exit.rs).
atexit.register(_mark_shutdown)
# A forked child keeps only the forking thread: forget the counts of the others.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = [
    "__version__",
    "QuillClient",
    "Stream",
    "GenerateStream",
    "GenerateRequest",
    "GenerateResponse",
    "StreamTiming",
    "DType",
    "Tensor",
    "TensorMeta",
    "Token",
    "TokenBatch",
    "QuillError",
    "InvalidArgumentError",
    "OutOfRangeError",
    "UnsupportedDTypeError",
    "DecodeError",
    "QuillConnectionError",
    "QuillTimeoutError",
    "RpcError",
    "StreamError",
    "ProtocolError",
    "CallCancelledError",
]
