"""Request pumping for bidirectional and client streams.

The items of a request iterable are pulled on a daemon Python thread, not a native one:
a user's generator may block between requests, and at interpreter exit only threads
with no native frames beneath them can be ended safely (``src/python/exit.rs``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any


def _run(requests: Iterator[Any], sink: Any) -> None:
    try:
        for item in requests:
            if not sink.send(item):
                return  # the call is over: stop pulling
    except BaseException as exc:
        # A partial request stream must not look complete: break it off. The call then
        # fails with this reason (CallCancelledError), which is where the caller sees it.
        sink.abort(f"the request iterable raised {type(exc).__name__}: {exc}")
        return
    sink.close()


def start(requests: Iterator[Any], sink: Any) -> None:
    """Feed ``requests`` into ``sink`` from a new daemon thread."""
    threading.Thread(target=_run, args=(requests, sink), name="quill-requests", daemon=True).start()
