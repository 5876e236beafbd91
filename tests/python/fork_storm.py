"""A fork storm, run as a script by test_process_hygiene.py: one client busy in two
threads (blocking calls in a loop; 20 `call_async` at a time on an asyncio loop), while
the main thread forks N times and each child makes one call with a 3 s timeout.

Each child writes one byte once `os.fork()` returned in it and another once its call
ended, so a child that never answers is told apart: one stuck inside `os.fork()` itself
(CPython's gh-112275, before quill ran any code in the child) from one stuck in quill's
call. A child silent for 10 s is killed. Prints one JSON line of counts.

    python fork_storm.py URL N
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import sys
import threading
import time

import quill

ECHO = "echo.v1.EchoService"


def main(url: str, forks: int) -> None:
    client = quill.QuillClient(url, timeout_ms=3000)
    stop = threading.Event()
    background = [0, 0]

    def blocking() -> None:
        while not stop.is_set():
            client.call(ECHO, "Echo", b"blocking")
            background[0] += 1

    def concurrent() -> None:
        async def loop() -> None:
            while not stop.is_set():
                calls = [client.call_async(ECHO, "Echo", b"async") for _ in range(20)]
                await asyncio.gather(*calls)
                background[1] += 20

        asyncio.run(loop())

    threads = [threading.Thread(target=f, daemon=True) for f in (blocking, concurrent)]
    for t in threads:
        t.start()
    while min(background) == 0:  # both threads are in calls before the first fork
        time.sleep(0.01)
    counts = {"ok": 0, "hung_in_fork": 0, "hung_in_call": 0, "failed": 0}
    for _ in range(forks):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.write(w, b"f")
            try:
                ok = client.call(ECHO, "Echo", b"child", timeout_ms=3000) == b"child"
                os.write(w, b"d" if ok else b"x")
            except BaseException as e:  # noqa: BLE001 - reported, not raised, by a child
                os.write(w, f"e{type(e).__name__}".encode())
            os._exit(0)
        os.close(w)
        got = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ready, _, _ = select.select([r], [], [], 0.5)
            if ready:
                chunk = os.read(r, 64)
                if not chunk:
                    break
                got += chunk
        os.close(r)
        if got == b"fd":
            counts["ok"] += 1
        elif got == b"":
            counts["hung_in_fork"] += 1
        elif got == b"f":
            counts["hung_in_call"] += 1
        else:
            counts["failed"] += 1
            print(f"child answered {got!r}", file=sys.stderr)
        if got in (b"", b"f"):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    stop.set()
    counts["background_calls"] = sum(background)
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
