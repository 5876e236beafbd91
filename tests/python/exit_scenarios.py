"""Exits with quill work in flight: run as `python exit_scenarios.py URL KIND WHERE DELAY`.

Used by test_exit.py. Each run starts one kind of work (KIND) in a daemon thread, on
the main thread left open, or in an asyncio loop (WHERE), sleeps DELAY seconds and lets
the interpreter exit with the work still in flight. A correct run exits 0 and prints
nothing but "exiting" on stdout.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import quill

URL, KIND, WHERE, DELAY = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
client = quill.QuillClient(URL, timeout_ms=20_000)
SLOW = {"messages": 100_000, "interval_ms": 1}
TOKENS = {"max_tokens": 4096, "delay_ms": 1}
BIG = quill.Tensor.from_numpy(np.ones(1 << 20, dtype=np.float32))


def slow_requests() -> Iterator[bytes]:
    while True:  # a conversation: the next request comes when the user types it
        yield b"ping"
        time.sleep(0.001)


def forever(call: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        while True:
            call()

    return run


def drain(make: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        while True:
            for _ in make():
                pass

    return run


SYNC: dict[str, Callable[[], None]] = {
    "call": forever(lambda: client.call("echo.v1.EchoService", "Echo", b"x" * 1024)),
    "call_json": forever(lambda: client.call_json("echo.v1.EchoService", "Echo", {"a": [1.5]})),
    "slow_call": forever(lambda: client.call_json("test.v1.FaultService", "Slow", {"ms": 50})),
    "send_tensor": forever(lambda: client.send_tensor("tensor.v1.TensorService", "Upload", BIG)),
    "call_tensor": forever(
        lambda: client.call_tensor("tensor.v1.TensorService", "Download", {"shape": [1 << 22]})
    ),
    "stream": drain(lambda: client.stream("test.v1.FaultService", "StreamSlow", SLOW)),
    "stream_tokens": drain(
        lambda: client.stream_tokens("inference.v1.LLMService", "GenerateStream", TOKENS)
    ),
    "bidi": drain(lambda: client.bidi_stream("echo.v1.EchoService", "BidiEcho", slow_requests())),
    "client_stream": forever(
        lambda: client.client_stream("echo.v1.EchoService", "ClientStream", slow_requests())
    ),
}


async def consume(make: Callable[[], Any]) -> None:
    while True:
        async for _ in make():
            pass


async def await_forever(make: Callable[[], Any]) -> None:
    while True:
        await make()


ASYNC: dict[str, Callable[[], Any]] = {
    "call_async": lambda: await_forever(
        lambda: client.call_async("echo.v1.EchoService", "Echo", b"x" * 1024)
    ),
    "call_json_async": lambda: await_forever(
        lambda: client.call_json_async("test.v1.FaultService", "Slow", {"ms": 20})
    ),
    "stream_async": lambda: consume(
        lambda: client.stream_async("test.v1.FaultService", "StreamSlow", SLOW)
    ),
    "stream_tokens_async": lambda: consume(
        lambda: client.stream_tokens_async("inference.v1.LLMService", "GenerateStream", TOKENS)
    ),
}


def main() -> None:
    if WHERE == "daemon":  # a daemon thread still working when the main thread returns
        target = SYNC.get(KIND) or (lambda: asyncio.run(ASYNC[KIND]()))
        threading.Thread(target=target, daemon=True).start()
        time.sleep(DELAY)
    elif WHERE == "main":  # opened on the main thread and left open (streams only)
        if KIND in ("stream", "stream_tokens", "bidi"):
            opened = {
                "stream": lambda: client.stream("test.v1.FaultService", "StreamSlow", SLOW),
                "stream_tokens": lambda: client.stream_tokens(
                    "inference.v1.LLMService", "GenerateStream", TOKENS
                ),
                "bidi": lambda: client.bidi_stream(
                    "echo.v1.EchoService", "BidiEcho", slow_requests()
                ),
            }[KIND]()
            next(iter(opened))
            globals()["kept_open"] = opened
        time.sleep(DELAY)
    elif WHERE == "loop":  # asyncio on the main thread, tasks still pending at exit
        loop = asyncio.new_event_loop()

        async def start() -> None:
            for _ in range(2):
                asyncio.ensure_future(ASYNC[KIND]())
            await asyncio.sleep(DELAY)

        loop.run_until_complete(start())
    elif WHERE == "fork":  # a forked child exits normally while the parent streams
        threading.Thread(target=SYNC[KIND], daemon=True).start()
        time.sleep(DELAY)
        # 3.12+ warns that forking a threaded process is risky; that is the point here.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        pid = os.fork()
        if pid == 0:
            # The child's own call works, then it returns from main() and exits normally.
            assert client.call("echo.v1.EchoService", "Echo", b"child") == b"child"
            return
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            print(f"child exited with {os.waitstatus_to_exitcode(status)}", file=sys.stderr)
    else:
        raise SystemExit(f"unknown WHERE {WHERE}")
    print("exiting", flush=True)


main()
