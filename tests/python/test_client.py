"""QuillClient against the real bundled server: the seed's RPC Client, Authentication,
Client Properties, Error Handling and Threading sections, plus the client issue's list."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from quilltest import ROOT, TOKEN, Server

import quill


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_seed_basic_usage(server: Server) -> None:
    client = quill.QuillClient(base_url=server.url, timeout_ms=30000, enable_compression=True)
    request = b'{"prompt": "Hello"}'
    response = client.call("inference.v1.LLMService", "Generate", request)
    assert isinstance(response, bytes)
    assert json.loads(response)["finish_reason"] in ("length", "stop")
    response = client.call_json(
        "inference.v1.LLMService", "Generate", {"prompt": "Hello", "max_tokens": 100}
    )
    assert len(response["tokens"]) == 100
    assert response["text"] == "".join(t["text"] for t in response["tokens"])
    tok = response["tokens"][0]
    assert set(tok) == {"id", "text", "logprob", "position", "is_special"}


def test_seed_complete_example_runs_verbatim(server: Server) -> None:
    """examples/complete.py is the seed's Complete Example with the URL from $QUILL_URL."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "complete.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "QUILL_URL": server.url},
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    assert not out.startswith("Error"), out
    assert len(out.split()) >= 40  # 50 generated words printed


def test_json_calls_accept_numpy_values(client: quill.QuillClient) -> None:
    import numpy as np

    seen = client.call_json(
        "echo.v1.EchoService", "Echo", {"a": np.float32(0.5), "b": np.arange(3)}
    )
    assert seen == {"a": 0.5, "b": [0, 1, 2]}
    with pytest.raises(TypeError, match="not JSON serializable"):
        client.call_json("echo.v1.EchoService", "Echo", {"x": object()})


def test_seed_authentication_headers_really_arrive(client: quill.QuillClient) -> None:
    client.set_bearer_token("my-auth-token")
    client.set_api_key("api-key-123")
    client.set_header("X-Request-ID", "abc123")
    seen = client.call_json("echo.v1.EchoService", "Headers", {})
    assert seen["authorization"] == "Bearer my-auth-token"
    assert seen["x-api-key"] == "api-key-123"
    assert seen["x-request-id"] == "abc123"
    assert seen["content-type"] == "application/json"
    # Only the profile this client speaks; the server names the one it served.
    profile = {"http1": "classic", "http2": "turbo", "http3": "hyper"}[client.http_version]
    assert seen["prefer"] == f"prism={profile}" and client.selected_prism == profile
    assert seen["user-agent"].startswith("quill/")
    client.remove_header("X-Request-ID")
    seen = client.call_json("echo.v1.EchoService", "Headers", {})
    assert "x-request-id" not in seen
    headers = client.get_headers()
    assert "my-auth-token" not in str(headers) and "api-key-123" not in str(headers)
    assert set(headers) >= {"Authorization", "X-API-Key"}

    client.set_api_key("api-key-123", header_name="Authorization")
    seen = client.call_json("echo.v1.EchoService", "Headers", {})
    assert seen["authorization"] == "api-key-123"


def test_raw_calls_use_proto_content_type(client: quill.QuillClient) -> None:
    seen = json.loads(client.call("echo.v1.EchoService", "Headers", b"x"))
    assert seen["content-type"] == "application/proto"
    assert seen["accept"] == "application/proto"
    assert client.call("echo.v1.EchoService", "Echo", b"") == b""
    assert client.call("echo.v1.EchoService", "Echo", bytearray(b"abc")) == b"abc"


def test_seed_client_properties(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    client = quill.QuillClient(server.url + "/", timeout_ms=30000, enable_compression=True)
    print(client.base_url)
    print(client.timeout_ms)
    print(client.compression_enabled)
    assert capsys.readouterr().out.splitlines() == [server.url, "30000", "True"]
    defaults = quill.QuillClient("http://localhost:8080")
    assert (defaults.base_url, defaults.timeout_ms, defaults.compression_enabled) == (
        "http://localhost:8080",
        30000,
        False,
    )


def test_repr_never_shows_secrets(server: Server) -> None:
    client = quill.QuillClient(server.url, timeout_ms=1234)
    client.set_bearer_token(TOKEN)
    client.set_api_key("key-" + TOKEN)
    text = repr(client)
    assert (
        text == f"QuillClient(base_url='{server.url}', timeout_ms=1234, enable_compression=False)"
    )
    assert TOKEN not in text


def test_auth_route_and_token_never_in_errors(client: quill.QuillClient) -> None:
    with pytest.raises(quill.RpcError) as info:
        client.call("test.v1.FaultService", "Auth", b"")
    assert info.value.status == 401 and info.value.title == "Unauthenticated"
    client.set_bearer_token("wrong-" + TOKEN)
    with pytest.raises(quill.RpcError) as info2:
        client.call("test.v1.FaultService", "Auth", b"")
    assert info2.value.status == 401 and isinstance(info2.value, RuntimeError)
    assert TOKEN not in str(info2.value) and TOKEN not in repr(info2.value.args)
    client.set_bearer_token(TOKEN)
    assert client.call_json("test.v1.FaultService", "Auth", {}) == {"ok": True}


def test_problem_details_fields_reach_python(client: quill.QuillClient) -> None:
    req = {
        "status": 429,
        "title": "Quota exceeded",
        "detail": "try later",
        "instance": "/quota/7",
        "retry_after": 2,
        "proto_type": "pkg.QuotaError",
        "proto_detail_base64": "CgRwZWVy",
    }
    with pytest.raises(quill.RpcError) as info:
        client.call_json("test.v1.FaultService", "Error", req)
    e = info.value
    assert isinstance(e, RuntimeError) and isinstance(e, quill.QuillError)
    assert e.status == 429
    assert e.type == "urn:quill:error:429"
    assert e.title == "Quota exceeded" and e.detail == "try later" and e.instance == "/quota/7"
    assert e.proto_type == "pkg.QuotaError" and e.proto_detail == b"\n\x04peer"
    assert e.retry_after == 2.0
    assert e.problem["extra"] == "kept"
    assert "429" in str(e) and "Quota exceeded" in str(e)


@pytest.mark.parametrize(
    ("method", "status", "text"),
    [("PlainText", 502, "bad gateway from proxy"), ("Html", 503, "<html")],
)
def test_plain_text_and_html_errors(
    client: quill.QuillClient, method: str, status: int, text: str
) -> None:
    with pytest.raises(quill.RpcError) as info:
        client.call("test.v1.FaultService", method, b"")
    assert info.value.status == status
    assert text in info.value.body
    assert info.value.title is None and info.value.problem == {}


def test_unknown_route_is_404_problem(client: quill.QuillClient) -> None:
    with pytest.raises(quill.RpcError) as info:
        client.call("nope.v1.Missing", "Method", b"")
    assert info.value.status == 404 and info.value.type == "urn:quill:error:404"


def test_seed_error_handling_connection_refused_quickly() -> None:
    port = free_port()
    t0 = time.monotonic()
    try:
        client = quill.QuillClient(f"http://127.0.0.1:{port}")
        client.call("service", "method", b"data")
        raise AssertionError("expected a connection error")
    except ConnectionError as e:
        assert isinstance(e, quill.QuillConnectionError)
        assert "connect" in str(e).lower()
    assert time.monotonic() - t0 < 2.0


def test_timeout_fires_on_time_never_early(server: Server) -> None:
    """The 500 ms timeout ends a 10 s call: never before 500 ms (the deadline is set
    inside the call, after t0), and long before the reply; the ceiling leaves room for a
    loaded machine."""
    client = quill.QuillClient(server.url, timeout_ms=500)
    t0 = time.monotonic()
    with pytest.raises(quill.QuillTimeoutError) as info:
        client.call_json("test.v1.FaultService", "Slow", {"ms": 10_000})
    elapsed = time.monotonic() - t0
    assert isinstance(info.value, TimeoutError)
    assert 0.5 <= elapsed < 5.0, elapsed


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Bad", "a\r\nInjected: 1"),
        ("X-Bad", "a\nb"),
        ("Bad Name", "v"),
        ("X-Bad\r\n", "v"),
        ("", "v"),
    ],
)
def test_header_injection_refused(client: quill.QuillClient, name: str, value: str) -> None:
    with pytest.raises(quill.InvalidArgumentError) as info:
        client.set_header(name, value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(quill.InvalidArgumentError, match="bearer token"):
        client.set_bearer_token("tok\r\nX-Evil: 1")


def test_bad_base_url() -> None:
    with pytest.raises(quill.InvalidArgumentError, match="not a valid URL") as info:
        quill.QuillClient("not a url")
    assert isinstance(info.value, ValueError)
    with pytest.raises(quill.InvalidArgumentError, match="http or https"):
        quill.QuillClient("ftp://example.com")


def test_zstd_both_directions_and_threshold(server: Server) -> None:
    client = quill.QuillClient(server.url, enable_compression=True)
    # Request bodies are compressed only once a response has said the server decodes
    # zstd (existing Quill servers answer a zstd body with 500): the first goes plain.
    first = json.loads(client.call("echo.v1.EchoService", "Headers", b"x" * 5000))
    assert "content-encoding" not in first and "zstd" in first["accept-encoding"]
    small = client.call("echo.v1.EchoService", "Headers", b"x" * 1023)
    seen = json.loads(small)
    assert "content-encoding" not in seen and "zstd" in seen["accept-encoding"]
    seen = json.loads(client.call("echo.v1.EchoService", "Headers", b"x" * 1024))
    assert seen["content-encoding"] == "zstd"
    payload = bytes(range(256)) * 4096  # 1 MiB, compressed both ways
    assert client.call("echo.v1.EchoService", "Echo", payload) == payload
    plain = quill.QuillClient(server.url)
    seen = json.loads(plain.call("echo.v1.EchoService", "Headers", b"x" * 5000))
    assert "content-encoding" not in seen and "accept-encoding" not in seen


@pytest.mark.parametrize("size", [(64 << 10) - 1, 64 << 10, 1 << 20])
def test_request_bodies_of_every_kind_arrive_intact(client: quill.QuillClient, size: int) -> None:
    # From 64 KiB a `bytes` body is sent from the object's own memory (no copy); other
    # buffers are always copied first, since their owner may change them meanwhile.
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    for body in (payload, bytearray(payload), memoryview(payload)):
        assert client.call("echo.v1.EchoService", "Echo", body) == payload


@pytest.mark.parametrize("size", [0, 1, (64 << 10) - 1, 64 << 10, (1 << 20) + 7])
def test_replies_of_every_size_arrive_intact_on_every_path(server: Server, size: int) -> None:
    """Large replies of known length are read straight into the returned `bytes` by a
    thread driving its own call, and gathered by the client's workers otherwise (more
    threads than lanes); compressed replies have no known length. All must agree."""
    payload = os.urandom(size)
    plain = quill.QuillClient(server.url, timeout_ms=20_000)
    zstd = quill.QuillClient(server.url, timeout_ms=20_000, enable_compression=True)
    for c in (plain, zstd):
        reply = c.call("echo.v1.EchoService", "Echo", payload)
        assert type(reply) is bytes and reply == payload
        assert hash(reply) == hash(payload)
    results: list[bool] = []

    def worker() -> None:
        for _ in range(3):
            results.append(plain.call("echo.v1.EchoService", "Echo", payload) == payload)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 24


def test_decompression_bomb_is_an_error_not_oom(server: Server) -> None:
    client = quill.QuillClient(server.url, enable_compression=True, max_decoded_size=1 << 20)
    with pytest.raises(quill.ProtocolError, match="limit|exceeds|larger"):
        client.call_json("test.v1.FaultService", "Bomb", {"bytes": 1 << 30})
    with pytest.raises(quill.ProtocolError):
        client.call_json("test.v1.FaultService", "Big", {"bytes": (1 << 20) + 1})
    assert len(client.call("test.v1.FaultService", "Big", b'{"bytes": 1048576}')) == 1 << 20


def test_threads_share_one_client(client: quill.QuillClient) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(100):
                body = f"{i}-{j}".encode()
                assert client.call("echo.v1.EchoService", "Echo", body) == body
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_gil_released_during_network_wait(client: quill.QuillClient) -> None:
    count = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal count
        while not stop.is_set():
            count += 1

    t = threading.Thread(target=spin)
    t.start()
    time.sleep(0.05)
    before = count
    client.call_json("test.v1.FaultService", "Slow", {"ms": 400})
    during = count - before
    stop.set()
    t.join()
    # With the GIL held for 400 ms the spinner would be frozen; released, it runs freely.
    assert during > 100_000, during


def test_asyncio_calls(client: quill.QuillClient) -> None:
    async def main() -> None:
        results = await asyncio.gather(
            *(client.call_async("echo.v1.EchoService", "Echo", str(i).encode()) for i in range(50))
        )
        assert results == [str(i).encode() for i in range(50)]
        out = await client.call_json_async("inference.v1.LLMService", "Generate", {"max_tokens": 3})
        assert len(out["tokens"]) == 3
        with pytest.raises(quill.RpcError):
            await client.call_json_async("test.v1.FaultService", "Error", {"status": 503})
        slow = asyncio.ensure_future(
            client.call_json_async("test.v1.FaultService", "Slow", {"ms": 5000})
        )
        await asyncio.sleep(0.05)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow

    asyncio.run(main())


EXIT_SCRIPT = """
import asyncio, sys, quill
client = quill.QuillClient(sys.argv[1])
async def main():
    for _ in range(5):
        asyncio.ensure_future(client.call_json_async("test.v1.FaultService", "Slow", {"ms": 2000}))
    fut = client.call_async("echo.v1.EchoService", "Echo", b"x")
    assert await fut == b"x"
    # leave the slow calls pending and exit
asyncio.run(main())
stream = client.stream("test.v1.FaultService", "StreamSlow", {"messages": 100, "interval_ms": 50})
next(stream)
print("bye")
"""


@pytest.mark.slow
def test_interpreter_exit_with_pending_async_work(server: Server) -> None:
    for run in range(50):
        proc = subprocess.run(
            [sys.executable, "-c", EXIT_SCRIPT, server.url],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )
        assert proc.returncode == 0, (run, proc.returncode, proc.stderr[-2000:])
        assert proc.stdout.strip() == "bye"


def test_http_version_and_http2_settings(server: Server) -> None:
    for version, profile in [("auto", "classic"), ("http1", "classic"), ("http2", "turbo")]:
        c = quill.QuillClient(server.url, http_version=version)  # type: ignore[arg-type]
        assert c.http_version == version and c.selected_prism is None
        assert c.call("echo.v1.EchoService", "Echo", b"x") == b"x"
        assert c.selected_prism == profile  # named by the server in Selected-Prism
    with pytest.raises(quill.InvalidArgumentError, match='"auto", "http1", "http2" or "http3"'):
        quill.QuillClient(server.url, http_version="h3")  # type: ignore[arg-type]
    with pytest.raises(quill.OutOfRangeError, match="http2_stream_window"):
        quill.QuillClient(server.url, http2_stream_window=1 << 31)
    with pytest.raises(quill.InvalidArgumentError, match="initial_connection_window is 0"):
        quill.QuillClient(server.url, http2_connection_window=0)
    tuned = quill.QuillClient(
        server.url,
        http_version="http2",
        http2_keep_alive_interval_ms=None,
        http2_keep_alive_timeout_ms=5000,
        http2_stream_window=1 << 20,
        http2_connection_window=4 << 20,
    )
    config = tuned.to_config()
    assert config["http_version"] == "http2"
    assert config["http2_keep_alive_interval_ms"] is None
    assert (config["http2_keep_alive_timeout_ms"], config["http2_stream_window"]) == (5000, 1 << 20)
    again = quill.QuillClient.from_config(config)
    assert again.to_config() == config
    assert again.call("echo.v1.EchoService", "Echo", b"y" * 100_000) == b"y" * 100_000
    assert again.selected_prism == "turbo"
    defaults = quill.QuillClient(server.url).to_config()
    assert defaults["http_version"] == "auto"
    assert defaults["http2_keep_alive_interval_ms"] == 30000


def test_idempotent_calls_are_retried_and_others_are_not(server: Server) -> None:
    client = quill.QuillClient(server.url, max_retries=2)

    def requests() -> int:
        return int(client.call_json("test.v1.FaultService", "Stats", {})["requests"])

    for idempotent, attempts in ((True, 3), (False, 1)):
        before = requests()
        with pytest.raises(quill.RpcError):
            client.call_json(
                "test.v1.FaultService", "Error", {"status": 503}, idempotent=idempotent
            )
        # The attempts, plus the Stats call.
        assert requests() - before == attempts + 1
    # A 400 is never retried, idempotent or not.
    before = requests()
    with pytest.raises(quill.RpcError):
        client.call_json("test.v1.FaultService", "Error", {"status": 400}, idempotent=True)
    assert requests() - before == 2


def test_http3_stream_survives_rebind_and_needs_https(tls_server: Server) -> None:
    """HTTP/3 over QUIC: a stream continues across moves to new UDP sockets (connection
    migration), and the option refuses a cleartext URL."""
    c = quill.QuillClient(tls_server.url, http_version="http3", ca_cert=tls_server.ca_cert)
    assert c.rebind() is False  # nothing bound before the first call
    with c.stream(
        "test.v1.FaultService", "StreamSlow", {"messages": 8, "interval_ms": 40}
    ) as stream:
        got = [next(stream)]
        assert c.rebind() is True
        got.extend(stream)
    assert len(got) == 8
    assert c.call("echo.v1.EchoService", "Echo", b"after") == b"after"
    assert c.selected_prism == "hyper"
    with pytest.raises(quill.InvalidArgumentError, match="https://"):
        quill.QuillClient("http://127.0.0.1:1", http_version="http3")
    plain = quill.QuillClient(tls_server.url, ca_cert=tls_server.ca_cert)
    assert plain.rebind() is False  # TCP: nothing to migrate


@pytest.mark.parametrize("version", ["http2", "http3"])
def test_tls_server_name_is_the_name_checked(tls_server: Server, version: str) -> None:
    """The certificate is checked against `tls_server_name`, not the URL's host (an
    IP here), over TCP and QUIC alike; the setting survives to_config/from_config."""

    def client(name: str) -> quill.QuillClient:
        return quill.QuillClient(
            tls_server.url,
            http_version=version,  # type: ignore[arg-type]
            ca_cert=tls_server.ca_cert,
            tls_server_name=name,
            timeout_ms=5_000,
        )

    good = client("localhost")
    assert good.call("echo.v1.EchoService", "Echo", b"n") == b"n"
    assert good.to_config()["tls_server_name"] == "localhost"
    again = quill.QuillClient.from_config(good.to_config())
    assert again.call("echo.v1.EchoService", "Echo", b"m") == b"m"
    with pytest.raises(quill.QuillConnectionError, match="not valid for name"):
        client("elsewhere.invalid").call("echo.v1.EchoService", "Echo", b"x")
