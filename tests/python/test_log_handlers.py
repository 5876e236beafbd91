"""Logging handlers are user code: one that is slow, or that calls the client itself,
must hold up no call of another thread and never run on the client's I/O threads
(src/python/logging.rs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from quilltest import ROOT, Server

SCRIPT = Path(__file__).with_name("log_handlers.py")
MAIN, ASYNC = "echo.v1.EchoService/Echo", "echo.v1.EchoService/Headers"


def run(server: Server, version: str, mode: str, timeout: float) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), server.url, version, mode],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize("version", ["http1", "http2"])
def test_a_handler_that_calls_the_client_deadlocks_nothing(server: Server, version: str) -> None:
    # 500 async calls in flight over 4 HTTP/1.1 connections, 20 blocking calls, and a
    # handler sending each record with the same client, without any timeout: this used
    # to stall every call (the handler ran on the I/O threads the calls needed).
    result = run(server, version, "forward", timeout=120)
    assert result["forward_errors"] == []
    # Records are written on the Python threads that made the calls, never on the
    # client's own threads (quill-io, seen by logging as Dummy-N).
    assert result["threads"] == ["MainThread", "aio"], result["threads"]
    ran = result["ran"]
    assert ran.get(f"aio {ASYNC}", 0) >= 500, ran  # one record per async call at least
    assert ran.get(f"MainThread {MAIN}", 0) >= 20, ran


@pytest.mark.parametrize("version", ["http1", "http2"])
def test_a_slow_handler_holds_up_only_the_thread_whose_calls_it_logs(
    server: Server, version: str
) -> None:
    result = run(server, version, "slow", timeout=180)
    ran = result["ran"]
    assert result["threads"] == ["MainThread", "aio"], result["threads"]
    # Each thread writes the records of its own calls: the async calls' records on the
    # event loop's thread, the main thread's on the main thread (connection records
    # name the server, not a method: each thread has its own).
    peer = server.url.removeprefix("http://")
    assert set(ran) <= {f"MainThread {MAIN}", f"aio {ASYNC}", f"MainThread {peer}", f"aio {peer}"}
    assert ran[f"aio {ASYNC}"] >= 40, ran
    # So the main thread's 20 calls took about its own records' 0.2 s each, not the
    # 80-odd records of the async calls as well.
    own = ran[f"MainThread {MAIN}"] + ran.get(f"MainThread {peer}", 0)
    assert result["main_s"] < own * 0.2 + 5, (result["main_s"], own)


EXIT_SCRIPT = r"""
import asyncio, logging, sys, threading, time
import quill

class Slow(logging.Handler):
    def emit(self, record):
        time.sleep(0.2)

logging.getLogger("quill").setLevel(logging.DEBUG)
logging.getLogger("quill").addHandler(Slow())
c = quill.QuillClient(sys.argv[1])

def concurrent():
    async def main():
        calls = [c.call_async("echo.v1.EchoService", "Echo", b"a") for _ in range(200)]
        await asyncio.gather(*calls)
    asyncio.run(main())

def blocking():
    while True:
        c.call("echo.v1.EchoService", "Echo", b"b")

threading.Thread(target=concurrent, daemon=True).start()
threading.Thread(target=blocking, daemon=True).start()
time.sleep(1.0)
print("exiting", flush=True)
"""


def test_exit_while_daemon_threads_are_in_a_slow_handler(server: Server) -> None:
    # Daemon threads still writing records when the interpreter exits: CPython 3.9-3.13
    # ends such threads with pthread_exit, which aborts the process if native frames of
    # quill are under the handler. Neither may happen.
    for _ in range(3):
        proc = subprocess.run(
            [sys.executable, "-c", EXIT_SCRIPT, server.url],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout == "exiting\n"
        assert "FATAL" not in proc.stderr, proc.stderr[-3000:]
