"""HTTP/3 against HTTP/1.1 and HTTP/2 (scripts/bench http3), side by side in one run
against ONE bundled server (release build) started with --tls-self-signed: HTTPS on TCP
(HTTP/1.1 or HTTP/2 by ALPN) and HTTP/3 (QUIC) on UDP on the same port. Every version
runs over TLS, so the comparison is between transports, not between TLS and cleartext.
scripts/bench passes the server's https:// URL and the path of its cert.pem, which the
clients trust as `ca_cert`.

What it measures, on loopback, rounds interleaved so machine noise hits each version
alike (medians over the rounds; each ratio is the median, and range, of the per-round
ratios, taken between runs back to back):
- 1 KiB unary Echo on one keep-alive client per version: mean, p50 and p99 per call,
  and the mean's ratio to HTTP/1.1;
- a 64 MiB tensor up (`send_tensor` to `Sink`) and down (`call_tensor` from
  `Download`), as benches/bench_transfer.py moves it: MiB/s, and the ratio to HTTP/1.1;
- 100 concurrent token streams from asyncio on one client (the load of
  benches/bench_scale.py, on one connection) over HTTP/2 and HTTP/3: time to first
  token p50/p99 and tokens/s.

- the same 100 streams over a lossy, slow link (2 % loss, 40 ms RTT), HTTP/2 against
  HTTP/3: HTTP/3's case is a lost packet stalling only its own stream, where TCP holds
  back every stream of the connection (head-of-line blocking).

The lossy link is emulated in user space (benches/lossy_link.py): the kernel netem
qdisc that would do it (`tc qdisc add dev lo root netem loss 2% delay 20ms`) does not
exist on this machine (built without CONFIG_NET_SCH_NETEM, no module to load; `tc`
fails with "Specified qdisc kind is unknown"). QUIC's datagrams are really dropped; for
TCP the relay reproduces the effect of a lost segment (a stall of one RTT for every
byte behind it), see lossy_link.py for how and why that favours TCP. On the clean
loopback rows QUIC's user-space transport and per-packet encryption are all cost.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
from bench_transfer import timed
from lossy_link import LossyLink

import quill

VERSIONS = ("http1", "http2", "http3")
NAMES = {
    "http1": "HTTP/1.1 (TLS, TCP)",
    "http2": "HTTP/2 (TLS, TCP)",
    "http3": "HTTP/3 (QUIC, UDP)",
}
# The profile the server names for each version (`Selected-Prism`): proof that each
# client speaks the version it is labelled with.
PRISM = {"http1": "classic", "http2": "turbo", "http3": "hyper"}

UNARY_ROUNDS, UNARY_WINDOW = 20, 0.15
SIZE, TRANSFER_ROUNDS = 64 << 20, 7
LLM = "inference.v1.LLMService"
STREAMS, TOKENS, STREAM_ROUNDS = 100, 256, 7


def pct(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


def ratio_cell(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"


def unary_rows(clients: dict[str, quill.QuillClient]) -> None:
    body = bytes(1024)

    def window(client: quill.QuillClient, seconds: float) -> list[float]:
        """Per-call seconds over one window of `seconds` (at least one call)."""
        out: list[float] = []
        stop = time.perf_counter() + seconds
        while not out or time.perf_counter() < stop:
            t0 = time.perf_counter()
            reply = client.call("echo.v1.EchoService", "Echo", body)
            out.append(time.perf_counter() - t0)
            assert len(reply) == len(body)
        return out

    for client in clients.values():  # warm-up: handshakes, caches
        window(client, 0.3)
    samples: dict[str, list[float]] = {v: [] for v in clients}
    means: dict[str, list[float]] = {v: [] for v in clients}
    for _ in range(UNARY_ROUNDS):
        for v, client in clients.items():
            got = window(client, UNARY_WINDOW)
            samples[v] += got
            means[v].append(statistics.fmean(got))
    print(
        f"| 1 KiB unary Echo, one client, keep-alive ({UNARY_ROUNDS} rounds) "
        "| mean | p50 | p99 | mean vs HTTP/1.1 |"
    )
    print("|---|---|---|---|---|")
    for v in clients:
        s = sorted(samples[v])
        ratios = [m / b for m, b in zip(means[v], means["http1"])]
        print(
            f"| {NAMES[v]} | {statistics.median(means[v]) * 1e6:.0f} µs | "
            f"{pct(s, 0.5) * 1e6:.0f} µs | {pct(s, 0.99) * 1e6:.0f} µs | {ratio_cell(ratios)} |"
        )


def transfer_rows(clients: dict[str, quill.QuillClient]) -> None:
    array = np.random.default_rng(0).integers(0, 255, size=SIZE, dtype=np.uint8)
    tensor = quill.Tensor.from_numpy(array)
    down_req = {"shape": [SIZE], "dtype": "uint8"}
    contenders: dict[str, Callable[[], object]] = {}
    for version, client in clients.items():

        def up(c: quill.QuillClient = client) -> None:
            reply = json.loads(c.send_tensor("tensor.v1.TensorService", "Sink", tensor))
            assert reply["received_bytes"] > SIZE

        def down(c: quill.QuillClient = client) -> None:
            assert c.call_tensor("tensor.v1.TensorService", "Download", down_req).size_bytes == SIZE

        contenders[f"{version} up"] = up
        contenders[f"{version} down"] = down
    times = timed(contenders, TRANSFER_ROUNDS)
    rate = {name: (SIZE >> 20) / statistics.median(ts) for name, ts in times.items()}

    def vs_http1(name: str, base: str) -> str:
        return ratio_cell([b / t for b, t in zip(times[base], times[name])])

    print(
        f"| 64 MiB tensor, one client ({TRANSFER_ROUNDS} rounds) "
        "| upload | vs HTTP/1.1 | download | vs HTTP/1.1 |"
    )
    print("|---|---|---|---|---|")
    for v in clients:
        u, d = f"{v} up", f"{v} down"
        print(
            f"| {NAMES[v]} | {rate[u]:.0f} MiB/s | {vs_http1(u, 'http1 up')} | "
            f"{rate[d]:.0f} MiB/s | {vs_http1(d, 'http1 down')} |"
        )


async def streams(client: quill.QuillClient) -> tuple[list[float], float]:
    """One round: STREAMS concurrent token streams of TOKENS tokens each. Returns the
    times to first token (from each task's start, all started at once) and tokens/s."""
    ttft: list[float] = []

    async def one(i: int) -> int:
        t0 = time.perf_counter()
        tokens = 0
        request = {"prompt": "Alice", "max_tokens": TOKENS, "batch_size": 8, "seed": i}
        async for batch in client.stream_tokens_async(LLM, "GenerateStream", request):
            if tokens == 0:
                ttft.append(time.perf_counter() - t0)
            tokens += len(batch)
        return tokens

    t0 = time.perf_counter()
    counts = await asyncio.gather(*(one(i) for i in range(STREAMS)))
    elapsed = time.perf_counter() - t0
    if counts != [TOKENS] * STREAMS:
        raise RuntimeError("a stream came back short")
    return ttft, STREAMS * TOKENS / elapsed


def stream_rows(clients: dict[str, quill.QuillClient], rounds: int, title: str) -> None:
    """A warm-up round, then `rounds` interleaved rounds of `streams` per client, as a
    table titled `title`, tokens/s compared with HTTP/2."""

    async def measure() -> tuple[dict[str, list[float]], dict[str, list[float]]]:
        for client in clients.values():  # handshakes, windows
            await streams(client)
        ttfts: dict[str, list[float]] = {v: [] for v in clients}
        rates: dict[str, list[float]] = {v: [] for v in clients}
        for _ in range(rounds):
            for v, client in clients.items():
                ttft, rate = await streams(client)
                ttfts[v] += ttft
                rates[v].append(rate)
        return ttfts, rates

    ttfts, rates = asyncio.run(measure())
    print(f"| {title} ({rounds} rounds) | TTFT p50 / p99 | tokens/s | tokens/s vs HTTP/2 |")
    print("|---|---|---|---|")
    for v in clients:
        s = sorted(ttfts[v])
        ratios = [r / b for r, b in zip(rates[v], rates["http2"])]
        print(
            f"| {NAMES[v]}, one connection | {pct(s, 0.5) * 1e3:.1f} / {pct(s, 0.99) * 1e3:.1f} ms"
            f" | {statistics.median(rates[v]):,.0f} | {ratio_cell(ratios)} |"
        )


LOSS, RTT, LOSSY_ROUNDS = 0.02, 0.040, 3


def lossy_rows(url: str, ca_cert: bytes) -> None:
    port = int(url.rsplit(":", 1)[1])
    link = LossyLink(port, RTT, LOSS)
    try:
        clients = {
            "http2": quill.QuillClient(
                f"https://127.0.0.1:{link.tcp_port}",
                timeout_ms=120_000,
                http_version="http2",
                ca_cert=ca_cert,
            ),
            "http3": quill.QuillClient(
                f"https://127.0.0.1:{link.udp_port}",
                timeout_ms=120_000,
                http_version="http3",
                ca_cert=ca_cert,
            ),
        }

        stream_rows(
            clients,
            LOSSY_ROUNDS,
            f"{STREAMS} concurrent token streams of {TOKENS} tokens, {LOSS:.0%} loss, "
            f"{RTT * 1e3:.0f} ms RTT, emulated",
        )
        for client in clients.values():
            client.close()
    finally:
        link.close()


def main() -> None:
    url, cert_path = sys.argv[1], sys.argv[2]
    with open(cert_path, "rb") as f:
        ca_cert = f.read()
    clients = {
        v: quill.QuillClient(url, timeout_ms=120_000, http_version=v, ca_cert=ca_cert)
        for v in VERSIONS
    }
    for v, client in clients.items():
        client.call("echo.v1.EchoService", "Echo", b"warm")
        if client.selected_prism != PRISM[v]:
            raise RuntimeError(f"{v}: the server answered as {client.selected_prism!r}")
    sections: list[tuple[str, Callable[[], None]]] = [
        ("unary", lambda: unary_rows(clients)),
        ("transfer", lambda: transfer_rows(clients)),
        (
            "streams",
            lambda: stream_rows(
                {v: clients[v] for v in ("http2", "http3")},
                STREAM_ROUNDS,
                f"asyncio, one client, {STREAMS} concurrent token streams of {TOKENS} tokens",
            ),
        ),
        ("lossy link", lambda: lossy_rows(url, ca_cert)),
    ]
    for i, (name, run) in enumerate(sections):
        if i:
            print()
        t0 = time.perf_counter()
        run()
        print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    for client in clients.values():
        client.close()


if __name__ == "__main__":
    main()
