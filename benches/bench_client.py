"""Unary-call benchmarks against the bundled server (release build), side by side with
what a Python user would pick instead, and with the native Rust floor. scripts/bench
starts the server and passes its URL and the path of the native bench binary."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from urllib.parse import urlparse

import httpx
import requests

import quill

ECHO = "/echo.v1.EchoService/Echo"


def per_call(fn: Callable[[], object], seconds: float = 1.5) -> float:
    for _ in range(100):
        fn()
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def threaded_rate(fn: Callable[[], object], threads: int, seconds: float = 1.5) -> float:
    """Calls per second with `threads` threads sharing whatever `fn` closes over."""
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def run(i: int) -> None:
        while time.perf_counter() < stop:
            fn()
            counts[i] += 1

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / seconds


def main() -> None:
    url, native_bin = sys.argv[1], sys.argv[2]
    u = urlparse(url)
    rows = [
        "| client (unary Echo, keep-alive) | 1 KiB | vs native | 1 MiB | vs native |",
        "|---|---|---|---|---|",
    ]
    results: dict[str, dict[int, float]] = {}
    for size in (1024, 1 << 20):
        body = bytes(size)
        native = json.loads(
            subprocess.run(
                [native_bin, url, str(size), "1.5"], capture_output=True, text=True, check=True
            ).stdout
        )
        results.setdefault("native Rust reqwest loop (floor)", {})[size] = (
            native["reqwest_us"] / 1e6
        )
        results.setdefault("native Rust `quill::QuillClient`", {})[size] = native["quill_us"] / 1e6
        client = quill.QuillClient(url)
        results.setdefault("Python `quill.QuillClient.call`", {})[size] = per_call(
            lambda client=client, body=body: client.call("echo.v1.EchoService", "Echo", body)
        )
        conn = http.client.HTTPConnection(u.hostname, u.port)

        def hc(conn: http.client.HTTPConnection = conn, body: bytes = body) -> bytes:
            conn.request("POST", ECHO, body, {"Content-Type": "application/proto"})
            return conn.getresponse().read()

        results.setdefault("Python `http.client`", {})[size] = per_call(hc)
        hx = httpx.Client()
        results.setdefault("Python `httpx.Client`", {})[size] = per_call(
            lambda hx=hx, body=body: hx.post(url + ECHO, content=body).content
        )
        rs = requests.Session()
        results.setdefault("Python `requests.Session`", {})[size] = per_call(
            lambda rs=rs, body=body: rs.post(url + ECHO, data=body).content
        )
    floor = results["native Rust reqwest loop (floor)"]
    for name, by_size in results.items():
        cells = []
        for size in (1024, 1 << 20):
            cells += [f"{by_size[size] * 1e6:.0f} µs", f"{by_size[size] / floor[size]:.2f}×"]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    print("\n".join(rows))
    print()
    client = quill.QuillClient(url)
    body = bytes(1024)

    def call() -> bytes:
        return client.call("echo.v1.EchoService", "Echo", body)

    one = threaded_rate(call, 1)
    print("| threads sharing one `QuillClient` (1 KiB) | calls/s | vs 1 thread |")
    print("|---|---|---|")
    for n in (1, 2, 8):
        rate = one if n == 1 else threaded_rate(call, n)
        print(f"| {n} | {rate:,.0f} | {rate / one:.2f}× |")

    print()
    stream_rows(url, floor[1 << 20])


def stream_rows(url: str, native_1mib_s: float) -> None:
    import numpy as np

    client = quill.QuillClient(url, timeout_ms=120_000)
    req = {"batches": 4000, "batch_size": 64}
    list(client.stream_tokens("test.v1.FaultService", "Batches", {"batches": 10, "batch_size": 64}))
    t0 = time.perf_counter()
    n = sum(len(b) for b in client.stream_tokens("test.v1.FaultService", "Batches", req))
    tok_rate = n / (time.perf_counter() - t0)

    slow = {"messages": 1, "interval_ms": 0}
    first = per_call(lambda: next(iter(client.stream("test.v1.FaultService", "StreamSlow", slow))))
    unary = per_call(lambda: client.call("echo.v1.EchoService", "Echo", b""))

    big = np.random.default_rng(0).integers(0, 255, size=64 << 20, dtype=np.uint8)
    t = quill.Tensor.from_numpy(big)
    up = per_call(lambda: client.send_tensor("tensor.v1.TensorService", "Upload", t), 3)
    down_req = {"shape": [64 << 20], "dtype": "uint8"}
    down = per_call(lambda: client.call_tensor("tensor.v1.TensorService", "Download", down_req), 3)
    np_copy = per_call(big.copy, 1)
    mib = 64
    print("| streaming | result | reference |")
    print("|---|---|---|")
    print(
        f"| tokens/s to a Python loop (batches of 64) | {tok_rate / 1e6:.2f} M tokens/s | "
        "target ≥ 1 M |"
    )
    print(
        f"| time to first stream message | {first * 1e6:.0f} µs | unary empty call "
        f"{unary * 1e6:.0f} µs (overhead {(first - unary) * 1e6:+.0f} µs) |"
    )
    print(
        f"| tensor upload 64 MiB (`send_tensor`) | {mib / up:.0f} MiB/s | numpy copy "
        f"{mib / np_copy:.0f} MiB/s; native 1 MiB echo {1 / native_1mib_s:.0f} MiB/s |"
    )
    print(f"| tensor download 64 MiB (`call_tensor`) | {mib / down:.0f} MiB/s | |")


if __name__ == "__main__":
    main()
