"""The exception tree of quill.

Every error raised by quill is a :class:`QuillError`, and also an instance of the
builtin exception a user already catches: ``ValueError`` for bad input,
``TypeError`` for unsupported dtypes, ``OverflowError``/``IndexError`` for integers
out of range, ``ConnectionError``, ``TimeoutError`` and
``RuntimeError`` for calls. The native module picks the class
(``src/python/errors.rs``); this file only declares them.
"""

from __future__ import annotations

from typing import Any

__all__ = [
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


class QuillError(Exception):
    """Base class of every quill error.

    ``request_id`` is the ``x-request-id`` of a call the server answered with an error
    (the server's, else the one the call sent): quote it to the server's operators. It
    is None for every other error.
    """

    request_id: str | None = None


class InvalidArgumentError(QuillError, ValueError):
    """An argument is wrong: a shape, a byte length, a header, a URL."""


class OutOfRangeError(InvalidArgumentError, OverflowError, IndexError):
    """An integer outside the range it must fall in: an argument that does not fit
    (``Token(2**32)``, ``timeout_ms=-1``) or an index past the end. Also an
    ``OverflowError``, as Python's own integer conversions raise, and an ``IndexError``,
    as sequences raise."""


class UnsupportedDTypeError(QuillError, TypeError):
    """A dtype (numpy or wire number) that quill does not support."""


class DecodeError(QuillError, ValueError):
    """Bytes handed to a decoder are not a valid encoding (truncated, over-long, ...).

    For a call reply that is not the JSON it should be, ``status`` is the reply's HTTP
    status and ``body`` its first bytes; both are None for other decoders.
    """

    status: int | None = None
    body: bytes | None = None


class QuillConnectionError(QuillError, ConnectionError):
    """The server could not be reached (DNS, refused, reset)."""


class QuillTimeoutError(QuillError, TimeoutError):
    """The call did not finish within its timeout."""


class RpcError(QuillError, RuntimeError):
    """The server answered with a non-2xx status.

    Carries the HTTP status and the Problem Details fields (RFC 7807); ``problem`` is
    the whole JSON object (empty when the body was plain text or HTML, then see
    ``body``).
    """

    status: int = 0
    type: str | None = None
    title: str | None = None
    detail: str | None = None
    instance: str | None = None
    proto_type: str | None = None
    proto_detail: bytes | None = None
    retry_after: float | None = None
    body: str = ""
    problem: dict[str, Any]

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.problem = {}


class StreamError(QuillError, RuntimeError):
    """A stream broke: truncated before END_STREAM, or cancelled by the peer."""


class ProtocolError(QuillError, RuntimeError):
    """The peer sent bytes that break the protocol (malformed or oversized frames)."""


class CallCancelledError(QuillError, RuntimeError):
    """The call was cancelled locally: its client was closed (before or during the
    call), its request iterable failed, or its stream was closed."""
