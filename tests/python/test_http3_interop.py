"""HTTP/3 interop: the client against aioquic, an HTTP/3 implementation that shares
nothing with it (the bundled server uses the client's own h3/quinn stack and codecs).

A small Quill server on aioquic's asyncio API runs in a thread with its own event loop,
on 127.0.0.1 and a free UDP port, with a throwaway self-signed certificate. It serves
the wire protocol (../shared/protocol.md) for a unary echo, a server stream (§3 frames)
and Problem Details errors (§4), and records every request it dispatches.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "aioquic", reason="aioquic (scripts/requirements-dev.txt) is needed for the interop server"
)

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, ProtocolNegotiated, QuicEvent
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import quill

ECHO = ("echo.v1.EchoService", "Echo")
# A server stream of this test only: JSON {"messages": [...], "layout": ...} in, each
# message back as a DATA frame, then END_STREAM; "layout" says how (see replay()).
REPLAY = ("interop.v1.StreamService", "Replay")

DATA, END_STREAM = 0x01, 0x02
PACE = 0.1  # seconds between the DATA frames of a "paced" Replay
H3_NO_ERROR, H3_REQUEST_CANCELLED = 0x0100, 0x010C  # RFC 9114 §8.1


def varint(n: int) -> bytes:
    """Unsigned LEB128, as §3 frames carry their payload length."""
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def frame(flags: int, payload: bytes = b"") -> bytes:
    """One §3 stream frame: [length varint][flags][payload]."""
    return varint(len(payload)) + bytes([flags]) + payload


@dataclass
class Seen:
    """One request the server dispatched."""

    connection: int
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return self.headers[":path"]


@dataclass
class Recorder:
    """What the server saw; written on the server's loop, read by the tests."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: list[Seen] = field(default_factory=list)
    closes: list[tuple[int, str]] = field(default_factory=list)

    def requests(self) -> list[Seen]:
        with self.lock:
            return list(self.seen)

    def wait_for_close(
        self, since: int, match: Callable[[int, str], bool], timeout: float = 2
    ) -> tuple[int, str]:
        """The first connection close after the `since` first ones that `match`es (error
        code, reason), waiting for it up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = [c for c in self.closes[since:] if match(*c)]
                if found:
                    return found[0]
                if time.monotonic() > deadline:
                    raise AssertionError(f"no such connection close in {self.closes[since:]}")
            time.sleep(0.01)


class QuillOverH3(QuicConnectionProtocol):
    """One QUIC connection: HTTP/3 requests are buffered whole, then answered."""

    def __init__(self, *args: Any, recorder: Recorder, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._recorder = recorder
        self._http: H3Connection | None = None
        self._requests: dict[int, tuple[dict[str, str], bytearray]] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self._http = H3Connection(self._quic)
        if isinstance(event, ConnectionTerminated):
            with self._recorder.lock:
                self._recorder.closes.append((event.error_code, event.reason_phrase))
        if self._http is None:
            return
        for h3 in self._http.handle_event(event):
            if isinstance(h3, HeadersReceived):
                headers = {k.decode(): v.decode() for k, v in h3.headers}
                self._requests[h3.stream_id] = (headers, bytearray())
                ended = h3.stream_ended
            elif isinstance(h3, DataReceived):
                self._requests[h3.stream_id][1].extend(h3.data)
                ended = h3.stream_ended
            else:
                continue
            if ended:
                headers, body = self._requests.pop(h3.stream_id)
                self._answer(h3.stream_id, headers, bytes(body))

    def _answer(self, stream_id: int, headers: dict[str, str], body: bytes) -> None:
        assert self._http is not None
        with self._recorder.lock:
            self._recorder.seen.append(Seen(id(self), headers, body))
        path = headers.get(":path", "")
        layout = "whole"
        chunks: list[bytes]
        if path == "/{}/{}".format(*ECHO):
            status, ctype, chunks = 200, "application/proto", [body]
        elif path == "/{}/{}".format(*REPLAY):
            request = json.loads(body)
            status, ctype, chunks = 200, "application/proto", replay(request)
            layout = request["layout"]
        else:
            status, ctype, chunks = 404, "application/problem+json", [not_found(path)]
        if layout == "refuse":
            self._quic.reset_stream(stream_id, H3_REQUEST_CANCELLED)
            self.transmit()
            return
        head = [(b":status", str(status).encode()), (b"content-type", ctype.encode())]
        if layout == "whole":
            head.append((b"content-length", str(len(chunks[0])).encode()))
        head.append((b"selected-prism", b"hyper"))
        self._http.send_headers(stream_id, head)
        if layout == "paced":
            # One DATA frame every PACE seconds, the QUIC FIN with the last (END_STREAM):
            # a client that has read END_STREAM may stop the stream (STOP_SENDING)
            # before a separate empty FIN could be sent.
            loop = asyncio.get_running_loop()
            for i, chunk in enumerate(chunks):
                loop.call_later(PACE * i, self._send, stream_id, chunk, i == len(chunks) - 1)
        else:
            for chunk in chunks:
                self._http.send_data(stream_id, chunk, end_stream=False)
            if layout == "reset":
                # Once the client has surely read what was sent.
                asyncio.get_running_loop().call_later(PACE, self._reset, stream_id)
            else:
                self._http.send_data(stream_id, b"", end_stream=True)
        self.transmit()

    def _reset(self, stream_id: int) -> None:
        self._quic.reset_stream(stream_id, H3_REQUEST_CANCELLED)
        self.transmit()

    def _send(self, stream_id: int, chunk: bytes, end: bool) -> None:
        assert self._http is not None
        self._http.send_data(stream_id, chunk, end_stream=end)
        self.transmit()


def not_found(path: str) -> bytes:
    """A §4 Problem Details body, with a field of its own (kept in `RpcError.problem`)."""
    return json.dumps(
        {
            "type": "urn:quill:error:404",
            "title": "Not Found",
            "status": 404,
            "detail": f"no route for {path}",
            "instance": path,
            "interop_server": "aioquic",
        }
    ).encode()


def replay(request: dict[str, Any]) -> list[bytes]:
    """The body of the Replay stream, as the HTTP/3 DATA frames to send it in.

    layout "frames" (and "paced"): one DATA frame per stream frame; "bytes3": the whole
    body cut into 3-byte DATA frames (stream frames straddle them); "merged": the last
    message carries END_STREAM in its own flags (DATA|END_STREAM, 0x03); "truncated": no
    END_STREAM before the body ends; "reset": no END_STREAM, the stream is reset after
    the messages; "refuse": the stream is reset before any response."""
    messages = [m.encode() for m in request["messages"]]
    layout = request["layout"]
    if layout in ("truncated", "reset", "refuse"):
        return [frame(DATA, m) for m in messages]
    if layout == "merged":
        frames = [frame(DATA, m) for m in messages[:-1]]
        frames.append(frame(DATA | END_STREAM, messages[-1]))
    else:
        frames = [frame(DATA, m) for m in messages] + [frame(END_STREAM)]
    if layout == "bytes3":
        whole = b"".join(frames)
        return [whole[i : i + 3] for i in range(0, len(whole), 3)]
    return frames


def self_signed(directory: Path) -> tuple[Path, Path, bytes]:
    """A throwaway ECDSA P-256 certificate for localhost and 127.0.0.1: its certificate
    and key files, and the certificate's PEM (what the client trusts)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file, pem


@dataclass
class Interop:
    url: str
    ca_cert: bytes
    recorder: Recorder

    def client(self, **kwargs: Any) -> quill.QuillClient:
        kwargs.setdefault("ca_cert", self.ca_cert)
        return quill.QuillClient(self.url, http_version="http3", timeout_ms=5_000, **kwargs)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def h3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Interop]:
    cert_file, key_file, pem = self_signed(tmp_path_factory.mktemp("h3-interop"))
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    config.load_cert_chain(cert_file, key_file)
    recorder = Recorder()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    state: dict[str, Any] = {}

    def protocol(*args: Any, **kwargs: Any) -> QuillOverH3:
        return QuillOverH3(*args, recorder=recorder, **kwargs)

    async def start() -> None:
        # A port found free may be taken before it is bound again: try a few.
        for attempt in range(5):
            port = free_udp_port()
            try:
                server = await serve(
                    "127.0.0.1", port, configuration=config, create_protocol=protocol
                )
            except OSError:
                if attempt == 4:
                    raise
                continue
            state["server"], state["port"] = server, port
            return

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as e:
            state["error"] = e
            return
        finally:
            started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="aioquic-h3", daemon=True)
    thread.start()
    assert started.wait(10), "the aioquic server did not start"
    if "error" in state:
        raise state["error"]
    yield Interop(f"https://127.0.0.1:{state['port']}", pem, recorder)

    server: QuicServer = state["server"]
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_unary_echo_and_request_headers(h3: Interop) -> None:
    client = h3.client()
    before = len(h3.recorder.requests())
    assert client.call(*ECHO, b"hello over aioquic") == b"hello over aioquic"
    assert client.call(*ECHO, b"") == b""  # an empty message is a message
    seen = h3.recorder.requests()[before:]
    assert [s.path for s in seen] == ["/echo.v1.EchoService/Echo"] * 2
    assert [s.body for s in seen] == [b"hello over aioquic", b""]
    headers = seen[0].headers
    assert headers[":method"] == "POST"
    assert headers[":scheme"] == "https"
    assert headers[":authority"] == h3.url.removeprefix("https://")
    assert headers["prefer"] == "prism=hyper"
    assert headers["content-type"] == "application/proto"
    assert headers["accept"] == "application/proto"
    assert headers["user-agent"] == f"quill/{quill.__version__}"
    assert headers["content-length"] == str(len(b"hello over aioquic"))
    # One connection for both calls; the server's Selected-Prism reaches the client.
    assert seen[0].connection == seen[1].connection
    assert client.selected_prism == "hyper"
    # Closing the client closes its QUIC connection promptly, with H3_NO_ERROR.
    closes = len(h3.recorder.closes)
    client.close()
    h3.recorder.wait_for_close(closes, lambda code, _: code == H3_NO_ERROR)


def test_concurrent_calls_share_one_connection(h3: Interop) -> None:
    client = h3.client()
    assert client.call(*ECHO, b"warm") == b"warm"
    before = len(h3.recorder.requests())
    bodies = [bytes([i]) * (1 + i * 37_000) for i in range(8)]  # up to ~260 kB
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda b: client.call(*ECHO, b), bodies))
    assert answers == bodies
    seen = h3.recorder.requests()[before:]
    assert sorted(s.body for s in seen) == sorted(bodies)
    assert len({s.connection for s in seen}) == 1
    client.close()


@pytest.mark.parametrize("layout", ["frames", "bytes3", "merged"])
def test_server_stream_frames(h3: Interop, layout: str) -> None:
    client = h3.client()
    messages = ["first", "", "x" * 300]  # an empty message; a two-byte length varint
    before = len(h3.recorder.requests())
    t0 = time.monotonic()
    got = list(client.stream(*REPLAY, {"messages": messages, "layout": layout}))
    assert got == [m.encode() for m in messages]
    assert time.monotonic() - t0 < 3
    (seen,) = h3.recorder.requests()[before:]
    assert seen.path == "/interop.v1.StreamService/Replay"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["prefer"] == "prism=hyper"
    assert json.loads(seen.body) == {"messages": messages, "layout": layout}
    client.close()


def test_problem_details_404(h3: Interop) -> None:
    client = h3.client()
    with pytest.raises(quill.RpcError) as info:
        client.call("nope.v1.Missing", "Method", b"\x01\x02")
    e = info.value
    assert isinstance(e, RuntimeError) and isinstance(e, quill.QuillError)
    assert e.status == 404
    assert e.type == "urn:quill:error:404"
    assert e.title == "Not Found"
    assert e.detail == "no route for /nope.v1.Missing/Method"
    assert e.instance == "/nope.v1.Missing/Method"
    assert e.problem["interop_server"] == "aioquic"
    assert "404" in str(e)
    # The same answer to a JSON call and to a stream.
    with pytest.raises(quill.RpcError) as info:
        client.call_json("nope.v1.Missing", "Json", {"a": 1})
    assert info.value.status == 404
    with pytest.raises(quill.RpcError) as info:
        list(client.stream("nope.v1.Missing", "Stream", {}))
    assert info.value.status == 404 and info.value.title == "Not Found"
    # The connection is still good after errors.
    assert client.call(*ECHO, b"still here") == b"still here"
    client.close()


def test_untrusted_certificate_is_a_connection_error(h3: Interop) -> None:
    client = h3.client(ca_cert=None)
    before = len(h3.recorder.requests())
    closes = len(h3.recorder.closes)
    with pytest.raises(quill.QuillConnectionError, match="(?i)certificate") as info:
        client.call(*ECHO, b"never sent")
    assert isinstance(info.value, ConnectionError)
    assert h3.recorder.requests()[before:] == []
    # The client aborted the handshake with a TLS alert (QUIC CRYPTO_ERROR, 0x100 + the
    # alert); earlier clients' connections may close meanwhile.
    aborted = h3.recorder.wait_for_close(closes, lambda code, _: 0x100 < code <= 0x1FF)
    assert "certificate" in aborted[1], aborted
    client.close()


def test_server_stream_is_delivered_as_it_arrives(h3: Interop) -> None:
    client = h3.client()
    t0 = time.monotonic()
    arrivals = []
    with client.stream(*REPLAY, {"messages": ["a", "b", "c"], "layout": "paced"}) as stream:
        for message in stream:
            arrivals.append((message, time.monotonic() - t0))
    assert [m for m, _ in arrivals] == [b"a", b"b", b"c"]
    # Sent PACE apart: not held back until the end of the body.
    assert arrivals[2][1] - arrivals[0][1] >= PACE
    client.close()


def test_stream_without_end_stream_is_an_error(h3: Interop) -> None:
    client = h3.client()
    got = []
    with pytest.raises(quill.StreamError, match="truncated"):
        for m in client.stream(*REPLAY, {"messages": ["a", "b"], "layout": "truncated"}):
            got.append(m)
    assert got == [b"a", b"b"]
    got = []
    with pytest.raises(quill.StreamError, match=r"reset the stream \(H3_REQUEST_CANCELLED\)"):
        for m in client.stream(*REPLAY, {"messages": ["a"], "layout": "reset"}):
            got.append(m)
    assert got == [b"a"]
    # Reset before the response headers: the stream broke off, as after them.
    with pytest.raises(
        quill.StreamError, match=r"before its response: .*reset the stream \(H3_REQUEST_CANCELLED\)"
    ):
        list(client.stream(*REPLAY, {"messages": ["a"], "layout": "refuse"}))
    assert client.call(*ECHO, b"after") == b"after"
    client.close()
