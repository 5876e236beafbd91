"""A client with a lifecycle (close, with, async with), per-call options (timeout_ms,
headers), request ids on errors, and the client's events on the `quill` logger."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from quilltest import ROOT, TOKEN, Server, start_server

import quill

FAULT = "test.v1.FaultService"
ECHO = "echo.v1.EchoService"


def closed_error() -> Any:
    return pytest.raises(quill.CallCancelledError, match="client is closed")


def test_with_closes_and_closed_clients_refuse_calls(server: Server) -> None:
    with quill.QuillClient(server.url) as c:
        assert not c.closed
        assert c.call(ECHO, "Echo", b"hi") == b"hi"
    assert c.closed
    with closed_error():
        c.call(ECHO, "Echo", b"hi")
    with closed_error():
        c.stream(FAULT, "StreamSlow", {"messages": 1, "interval_ms": 0})
    with closed_error():
        c.call_tensor("tensor.v1.TensorService", "Download", {"shape": [2], "dtype": "uint8"})
    c.close()  # idempotent
    # An exception inside the block still closes, and is not swallowed.
    with pytest.raises(KeyError), quill.QuillClient(server.url) as c2:
        raise KeyError("x")
    assert c2.closed
    del c2  # dropping a closed client is a no-op
    gc.collect()


def test_async_with_closes(server: Server) -> None:
    async def main() -> quill.QuillClient:
        async with quill.QuillClient(server.url) as c:
            assert await c.call_async(ECHO, "Echo", b"a") == b"a"
        with closed_error():
            await c.call_async(ECHO, "Echo", b"a")
        with closed_error():
            async for _ in c.stream_async(FAULT, "StreamSlow", {"messages": 1}):
                pass
        return c

    assert asyncio.run(main()).closed


def _until(condition: Callable[[], bool], what: str) -> None:
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < 10, what
        time.sleep(0.005)


def test_close_ends_calls_and_streams_on_other_threads() -> None:
    """close() ends every kind of call in flight on other threads at once. It is called
    once each call is seen running: the streams and request iterables first (the server
    reports the open stream, each iterable has handed over its first item, the client
    stream's handler is in flight), then seven slow calls (the server reports them in
    flight). A server of its own, so its counters see these calls alone."""
    own = start_server()
    watcher = quill.QuillClient(own.url)
    c = quill.QuillClient(own.url, timeout_ms=60_000)
    results: dict[str, BaseException | None] = {}

    def stat(key: str) -> int:
        return int(watcher.call_json(FAULT, "Stats", {})[key])

    def run(name: str, fn: Callable[[], object]) -> None:
        try:
            fn()
            results[name] = None
        except BaseException as e:  # noqa: BLE001 - the test inspects what ended it
            results[name] = e

    def slow_requests(started: threading.Event) -> Any:
        for _ in range(100):
            started.set()
            time.sleep(0.1)
            yield b"x"

    async def async_call() -> None:
        await c.call_json_async(FAULT, "Slow", {"ms": 30_000})

    bidi_started, client_stream_started = threading.Event(), threading.Event()
    streams: dict[str, Callable[[], object]] = {
        "stream": lambda: list(
            c.stream(FAULT, "StreamSlow", {"messages": 100, "interval_ms": 500})
        ),
        "bidi": lambda: list(c.bidi_stream(ECHO, "BidiEcho", slow_requests(bidi_started))),
        "client_stream": lambda: c.client_stream(
            ECHO, "ClientStream", slow_requests(client_stream_started)
        ),
    }
    calls: dict[str, Callable[[], object]] = {
        **{
            f"call{i}": (lambda: c.call_json(FAULT, "Slow", {"ms": 30_000}))
            for i in range(6)  # more threads than the client's lanes
        },
        "async": lambda: asyncio.run(async_call()),
    }
    try:
        threads = [threading.Thread(target=run, args=item) for item in streams.items()]
        for t in threads:
            t.start()
        _until(lambda: stat("open_streams") == 1, "the server stream did not open")
        _until(bidi_started.is_set, "the bidi stream took no request")
        _until(client_stream_started.is_set, "the client stream took no request")
        # The client stream's handler reads its requests until they end: in flight.
        _until(lambda: stat("in_flight") == 1, "the client stream did not reach the server")
        more = [threading.Thread(target=run, args=item) for item in calls.items()]
        for t in more:
            t.start()
        threads += more
        _until(lambda: stat("in_flight") == 8, "the slow calls did not all reach the server")
        start = time.monotonic()
        c.close()
        for t in threads:
            t.join(timeout=10)
            assert not t.is_alive(), "a call hung after close()"
        # At once, not at the calls' own 30 s end; the slack is for a loaded machine.
        assert time.monotonic() - start < 10
        assert set(results) == set(streams) | set(calls)
        for name, err in results.items():
            assert isinstance(err, quill.CallCancelledError), (name, err)
            assert "closed" in str(err), (name, err)
    finally:
        own.process.terminate()
        own.process.wait(timeout=10)
        if own.process.stdout is not None:
            own.process.stdout.close()


def test_gc_of_an_unclosed_client_with_an_open_stream_does_not_block(server: Server) -> None:
    c = quill.QuillClient(server.url)
    stream = c.stream(FAULT, "StreamSlow", {"messages": 100, "interval_ms": 30_000})
    assert c.call(ECHO, "Echo", b"x") == b"x"
    start = time.monotonic()
    del c
    gc.collect()
    # Not held up by the stream, whose next message is 30 s away; the slack is for a
    # loaded machine.
    assert time.monotonic() - start < 5
    stream.close()


def test_per_call_timeout_overrides_the_client_timeout(server: Server) -> None:
    c = quill.QuillClient(server.url, timeout_ms=10_000)
    t0 = time.monotonic()
    with pytest.raises(quill.QuillTimeoutError, match="150 ms"):
        c.call_json(FAULT, "Slow", {"ms": 3000}, timeout_ms=150)
    assert 0.15 <= time.monotonic() - t0 < 2
    with pytest.raises(quill.QuillTimeoutError):
        list(c.stream(FAULT, "StreamSlow", {"messages": 5, "interval_ms": 400}, timeout_ms=200))
    # A longer per-call timeout than the client's also wins.
    short = quill.QuillClient(server.url, timeout_ms=100)
    assert short.call_json(FAULT, "Slow", {"ms": 300}, timeout_ms=5_000) == {"slept_ms": 300}
    with pytest.raises(quill.OutOfRangeError, match="timeout_ms"):
        c.call(ECHO, "Echo", b"", timeout_ms=-1)
    with pytest.raises(TypeError, match="timeout_ms must be an int"):
        c.call(ECHO, "Echo", b"", timeout_ms="5")  # type: ignore[arg-type]


def test_timeout_ms_0_waits_past_what_the_client_timeout_cuts(client: quill.QuillClient) -> None:
    """timeout_ms=0 on a call means no deadline at all: on a client whose own 300 ms
    timeout cuts a 1 s call, the same call with timeout_ms=0 completes, on every call
    path; so does a client whose timeout_ms is 0."""
    config = client.to_config()
    short = quill.QuillClient.from_config({**config, "timeout_ms": 300})
    slow = {"ms": 1000}
    with pytest.raises(quill.QuillTimeoutError, match="300 ms"):
        short.call_json(FAULT, "Slow", slow)

    t0 = time.monotonic()
    assert short.call_json(FAULT, "Slow", slow, timeout_ms=0) == {"slept_ms": 1000}
    assert time.monotonic() - t0 >= 1.0
    assert json.loads(short.call(FAULT, "Slow", b'{"ms": 1000}', timeout_ms=0)) == {
        "slept_ms": 1000
    }
    assert asyncio.run(
        _await(lambda: short.call_json_async(FAULT, "Slow", slow, timeout_ms=0))
    ) == {"slept_ms": 1000}
    # Four messages 200 ms apart: 600 ms in all, past the client's 300 ms.
    ticks = {"messages": 4, "interval_ms": 200}
    assert len(list(short.stream(FAULT, "StreamSlow", ticks, timeout_ms=0))) == 4

    unbounded = quill.QuillClient.from_config({**config, "timeout_ms": 0})
    assert unbounded.timeout_ms == 0
    assert unbounded.call_json(FAULT, "Slow", slow) == {"slept_ms": 1000}


def headers_seen(c: quill.QuillClient, method: str, headers: Any) -> dict[str, str]:
    """What the server received, for each call and stream method of the client."""
    request = {"k": 1}
    if method == "call":
        raw = c.call(ECHO, "Headers", b"{}", headers=headers)
    elif method == "call_json":
        return dict(c.call_json(ECHO, "Headers", request, headers=headers))
    elif method == "call_async":
        raw = asyncio.run(_await(lambda: c.call_async(ECHO, "Headers", b"{}", headers=headers)))
    elif method == "call_json_async":
        return dict(
            asyncio.run(_await(lambda: c.call_json_async(ECHO, "Headers", headers=headers)))
        )
    elif method == "client_stream":
        raw = c.client_stream(ECHO, "Headers", iter([b"{}"]), headers=headers)
    else:
        raise AssertionError(method)
    return dict(json.loads(raw))


async def _await(make: Callable[[], Any]) -> Any:
    """Makes the awaitable inside the event loop: the async methods need a running one."""
    return await make()


@pytest.mark.parametrize(
    "method", ["call", "call_json", "call_async", "call_json_async", "client_stream"]
)
def test_per_call_headers_on_unary_methods(client: quill.QuillClient, method: str) -> None:
    client.set_header("X-Trace", "client")
    client.set_header("X-Keep", "kept")
    seen = headers_seen(client, method, {"X-Trace": "call", "X-Extra": "1"})
    assert seen["x-trace"] == "call" and seen["x-extra"] == "1" and seen["x-keep"] == "kept"
    seen = headers_seen(client, method, [("X-Pair", "p")])
    assert seen["x-pair"] == "p" and seen["x-trace"] == "client"
    # Only that call: the next one sends the client's headers alone.
    seen = headers_seen(client, method, None)
    assert "x-extra" not in seen and "x-pair" not in seen


def test_per_call_headers_reach_streams_and_tensor_calls(server: Server) -> None:
    """The server answers a wrong bearer token with 401, so a header that arrived shows
    as the call's outcome for methods whose reply cannot echo headers."""
    good = {"Authorization": "Bearer " + TOKEN}
    bad = {"Authorization": "Bearer wrong"}
    client = quill.QuillClient(server.url)
    assert client.call_json(FAULT, "Auth", {}, headers=good) == {"ok": True}
    t = quill.Tensor.from_numpy(np.arange(4, dtype=np.float32))
    calls: list[Callable[[quill.QuillClient, dict[str, str]], object]] = [
        lambda c, h: c.call_json(FAULT, "Auth", {}, headers=h),
        lambda c, h: list(c.stream(FAULT, "Auth", {}, headers=h)),
        lambda c, h: list(c.stream_tokens(FAULT, "Auth", {}, headers=h)),
        lambda c, h: list(c.bidi_stream(FAULT, "Auth", iter([b"{}"]), headers=h)),
        lambda c, h: c.send_tensor(FAULT, "Auth", t, headers=h),
        lambda c, h: c.call_tensor(FAULT, "Auth", {}, headers=h),
        lambda c, h: asyncio.run(_drain(lambda: c.stream_async(FAULT, "Auth", {}, headers=h))),
        lambda c, h: asyncio.run(
            _drain(lambda: c.stream_tokens_async(FAULT, "Auth", {}, headers=h))
        ),
    ]
    for i, fn in enumerate(calls):
        # A client each: the server closes a connection whose streamed request body it
        # refused unread, and the next call must not race that close.
        with quill.QuillClient(server.url) as c, pytest.raises(quill.RpcError) as e:
            fn(c, bad)
        assert e.value.status == 401, i


async def _drain(open_stream: Callable[[], quill.Stream]) -> list[Any]:
    return [m async for m in open_stream()]


def test_per_call_headers_are_validated_like_set_header(client: quill.QuillClient) -> None:
    secret = "s3cret-value"
    with pytest.raises(quill.InvalidArgumentError, match="X-Bad") as e:
        client.call(ECHO, "Echo", b"", headers={"X-Bad": secret + "\r\nInjected: 1"})
    assert secret not in str(e.value)
    for bad in ({"Bad Name": "v"}, {"Content-Type": "text/plain"}):
        with pytest.raises(quill.InvalidArgumentError):
            client.call(ECHO, "Echo", b"", headers=bad)
    with pytest.raises(TypeError, match="pairs"):
        client.call(ECHO, "Echo", b"", headers=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="X-Num") as e:
        client.call(ECHO, "Echo", b"", headers={"X-Num": 5})  # type: ignore[dict-item]
    with pytest.raises(quill.InvalidArgumentError):
        list(client.stream(FAULT, "StreamSlow", {}, headers={"X": "a\nb"}))


def test_request_id_of_failed_calls(client: quill.QuillClient) -> None:
    with pytest.raises(quill.RpcError) as e:
        client.call_json(FAULT, "Error", {"status": 503}, headers={"X-Request-ID": "req-42"})
    assert e.value.request_id == "req-42"
    client.set_header("X-Request-ID", "from-client")
    with pytest.raises(quill.RpcError) as e:
        client.call_json(FAULT, "Error", {"status": 400})
    assert e.value.request_id == "from-client"
    client.remove_header("X-Request-ID")
    with pytest.raises(quill.RpcError) as e:
        client.call_json(FAULT, "Error", {"status": 500})
    assert e.value.request_id is not None and e.value.request_id.startswith("quill-")
    with pytest.raises(quill.QuillTimeoutError) as t:
        client.call_json(FAULT, "Slow", {"ms": 1000}, timeout_ms=50)
    assert t.value.request_id is None


def test_events_reach_the_quill_logger(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="quill")
    c = quill.QuillClient(server.url, max_retries=1, max_decoded_size=1024)
    c.set_bearer_token("tok-never-logged")
    c.call(ECHO, "Echo", b"hi")
    c.call(ECHO, "Echo", b"hi")
    with pytest.raises(quill.RpcError):
        c.call_json(FAULT, "Error", {"status": 503, "retry_after": 0}, idempotent=True)
    with pytest.raises(quill.QuillTimeoutError):
        c.call_json(FAULT, "Slow", {"ms": 1000}, timeout_ms=50)
    with pytest.raises(quill.ProtocolError):
        c.call_json(FAULT, "Big", {"bytes": 4096})
    s = c.stream(FAULT, "StreamSlow", {"messages": 10, "interval_ms": 100})
    next(iter(s))
    s.close()
    c.close()
    records = [r for r in caplog.records if r.name == "quill"]
    by_event: dict[str, list[logging.LogRecord]] = {}
    for r in records:
        by_event.setdefault(r.quill_event, []).append(r)
    assert {
        "connection_opened",
        "connection_reused",
        "call_finished",
        "call_failed",
        "retry_scheduled",
        "timeout",
        "decode_limit",
        "stream_cancelled",
    } <= set(by_event), sorted(by_event)
    done = by_event["call_finished"][0]
    assert done.levelno == logging.DEBUG
    assert (done.method, done.status) == ("echo.v1.EchoService/Echo", 200)
    assert done.elapsed_ms > 0
    assert by_event["retry_scheduled"][0].levelno == logging.INFO
    assert by_event["timeout"][0].levelno == logging.WARNING
    assert by_event["decode_limit"][0].levelno == logging.WARNING
    failed = [r for r in by_event["call_failed"] if r.status == 503]
    assert failed and failed[0].method == "test.v1.FaultService/Error"
    for r in records:
        assert "tok-never-logged" not in r.getMessage()
        assert "tok-never-logged" not in repr(r.__dict__)


def test_levels_above_debug_keep_debug_events_away(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="quill")
    c = quill.QuillClient(server.url)
    c.call(ECHO, "Echo", b"hi")
    with pytest.raises(quill.RpcError):
        c.call_json(FAULT, "Error", {"status": 500})
    levels = {r.levelno for r in caplog.records if r.name == "quill"}
    assert logging.INFO in levels and logging.DEBUG not in levels


UNCONFIGURED = r"""
import sys, quill
c = quill.QuillClient(sys.argv[1], max_retries=1)
try:
    c.call_json("test.v1.FaultService", "Slow", {"ms": 1000}, timeout_ms=50)
except quill.QuillTimeoutError:
    pass
try:
    c.call_json("test.v1.FaultService", "Error", {"status": 503, "retry_after": 0}, idempotent=True)
except quill.RpcError:
    pass
print("done")
"""


def test_nothing_is_printed_when_logging_is_not_configured(server: Server) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", UNCONFIGURED, server.url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done\n" and proc.stderr == ""


class _Raising(logging.Handler):
    """A handler raising `error` on every record (a signal handler's KeyboardInterrupt
    runs wherever Python code runs, logging code included)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def emit(self, record: logging.LogRecord) -> None:
        raise self.error


def test_an_interrupt_raised_in_logging_code_is_not_swallowed(server: Server) -> None:
    logger = logging.getLogger("quill")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        # An ordinary handler error is logging's business: the call still succeeds.
        broken = _Raising(ValueError("handler bug"))
        logger.addHandler(broken)
        try:
            client = quill.QuillClient(server.url)
            assert client.call("echo.v1.EchoService", "Echo", b"x") == b"x"
        finally:
            logger.removeHandler(broken)
        # A KeyboardInterrupt raised while the client logs is the program's: it
        # propagates (it used to be dropped, losing a Ctrl-C that landed there).
        interrupting = _Raising(KeyboardInterrupt())
        logger.addHandler(interrupting)
        try:
            client = quill.QuillClient(server.url)
            with pytest.raises(KeyboardInterrupt):
                client.call("echo.v1.EchoService", "Echo", b"x")
        finally:
            logger.removeHandler(interrupting)
    finally:
        logger.setLevel(old_level)
