"""JSON encoding used by the client's JSON calls (`call_json`, streams, tensor calls)."""

from __future__ import annotations

from typing import Any


def default(obj: Any) -> Any:
    """`json.dumps` fallback: NumPy scalars and arrays (anything with `.tolist()`, e.g.
    the `np.float32` items of `list(arr.flatten())` in the seed's Complete Example)
    become plain Python numbers and lists."""
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")
