"""JSON for the client's JSON calls (`call_json`, streams, tensor calls): one rule each
way.

Out: a `str` or bytes-like request is JSON text already and goes as it is (a `str`
must be encodable as UTF-8); anything else goes through `json.dumps`, NumPy scalars and
arrays included. NaN and Infinity have no JSON form: such a request is refused here,
instead of being sent as the non-standard tokens a server answers with 400.

Back: an empty body is None; anything else must be UTF-8 JSON, or the call raises
`DecodeError` carrying the status and the first bytes of the body.
"""

from __future__ import annotations

import json
from typing import Any

from quill.exceptions import DecodeError, InvalidArgumentError

#: Bytes of an undecodable reply kept on the `DecodeError` (`.body`).
BODY_PREFIX = 64


def default(obj: Any) -> Any:
    """`json.dumps` fallback: NumPy scalars and arrays (anything with `.tolist()`, e.g.
    the `np.float32` items of `list(arr.flatten())` in the seed's Complete Example)
    become plain Python numbers and lists."""
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def dumps(obj: Any) -> str:
    """The JSON text of a request value (not a str or bytes: those pass unchanged)."""
    try:
        return json.dumps(obj, default=default, allow_nan=False)
    except ValueError as e:  # NaN/Infinity, a circular reference
        raise InvalidArgumentError(f"the request cannot be sent as JSON: {e}") from e


def loads(body: bytes, status: int, path: str) -> Any:
    """The value of a JSON reply of `path` (None for an empty body)."""
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        err = DecodeError(
            f"the reply of {path} (HTTP {status}) is not valid JSON: {e}; "
            f"it starts with {body[:BODY_PREFIX]!r}"
        )
        err.status = status
        err.body = body[:BODY_PREFIX]
        raise err from e
