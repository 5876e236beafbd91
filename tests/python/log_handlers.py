"""Logging handlers that stress the client, run as a script by test_log_handlers.py (a
stuck client must fail the test by its timeout, not hang pytest).

    python log_handlers.py URL HTTP_VERSION forward   a handler that sends every record
                                                      with the same client
    python log_handlers.py URL HTTP_VERSION slow      a handler that sleeps 0.2 s a record

Meanwhile an asyncio thread has many `call_async` in flight and the main thread makes 20
blocking calls. Prints one JSON line: which threads ran the handler for which calls, and
how long the main thread's calls took.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import sys
import threading
import time

import quill

url, version, mode = sys.argv[1], sys.argv[2], sys.argv[3]
# The async calls go to another method than the main thread's, so each record shows
# whose call it logs.
MAIN, ASYNC = "echo.v1.EchoService/Echo", "echo.v1.EchoService/Headers"
IN_FLIGHT = 500 if mode == "forward" else 40

local = threading.local()
ran: collections.Counter[str] = collections.Counter()
forward_errors: list[str] = []
client: quill.QuillClient


class Handler(logging.Handler):
    def handle(self, record: logging.LogRecord) -> bool:
        # Without logging's per-handler lock, which would make each thread wait for the
        # other's records: logging's doing, not the client's.
        if self.filter(record):
            self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        method = getattr(record, "method", "")
        ran[f"{threading.current_thread().name} {method}"] += 1
        if mode == "slow":
            time.sleep(0.2)
            return
        if getattr(local, "busy", False):  # the usual guard against recursion
            return
        local.busy = True
        try:
            client.call("echo.v1.EchoService", "Echo", record.getMessage().encode())
        except Exception as e:  # noqa: BLE001 - reported below
            forward_errors.append(repr(e))
        finally:
            local.busy = False


logger = logging.getLogger("quill")
logger.setLevel(logging.DEBUG)
logger.addHandler(Handler())
# No timeout at all: a deadlock would wait forever (the test's timeout ends it), and few
# HTTP/1.1 connections, so that calls wait for each other's.
client = quill.QuillClient(url, timeout_ms=0, http_version=version, max_connections=4)


def concurrent() -> None:
    async def main() -> None:
        calls = [client.call_async("echo.v1.EchoService", "Headers", b"") for _ in range(IN_FLIGHT)]
        await asyncio.gather(*calls)

    asyncio.run(main())


aio = threading.Thread(target=concurrent, name="aio")
aio.start()
start = time.monotonic()
for _ in range(20):
    assert client.call("echo.v1.EchoService", "Echo", b"main") == b"main"
main_s = time.monotonic() - start
aio.join()
print(
    json.dumps(
        {
            "ran": dict(ran),
            "main_s": main_s,
            "forward_errors": forward_errors,
            "threads": sorted({k.split(" ")[0] for k in ran}),
        }
    ),
    flush=True,
)
