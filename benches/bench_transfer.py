"""Bulk tensor transfer (scripts/bench transfer): a 64 MiB tensor up and down over
HTTP/1.1 and HTTP/2, side by side in one run with raw loopback TCP moving the same bytes
and with plain reqwest (the native floor) downloading them.

The raw contender is what the bytes cost with no protocol at all: `sendall` of the
array's buffer into a reader that drops it (upload), and `recv_into` a fresh
`numpy.empty` array (download: a received tensor needs new memory, so the raw side
pays for it too). quill gives the memory of a dropped large tensor to the next download
of a similar size (`src/codec/spare.rs`), and these rounds drop each tensor at once, so
raw TCP into one reused array is also measured, and quill's downloads compared to it.
(A contender that kept every tensor, so as never to reuse memory, is not here: the
1.7 GiB it held made the raw side's fresh arrays five times slower to fault in.)

Quill uploads to `Sink` and downloads from `Download`, routes of the bundled server that
do no per-byte work. Rounds interleave the contenders so machine noise hits each alike:
rates are medians over the rounds, and each ratio to raw TCP is the median (and range)
of the per-round ratios, each taken between runs back to back.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

import quill

SIZE = 64 << 20
ROUNDS = 25


class RawTcp:
    """A loopback peer in a thread: drops what it is sent, or sends SIZE bytes on `g`."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.payload = memoryview(np.ones(SIZE, np.uint8))
        threading.Thread(target=self.serve, daemon=True).start()
        self.conn = socket.create_connection(self.listener.getsockname())

    def serve(self) -> None:
        peer, _ = self.listener.accept()
        scratch = bytearray(1 << 20)
        while op := peer.recv(1):
            if op == b"g":
                peer.sendall(self.payload)
                continue
            got = 0
            while got < SIZE:
                got += peer.recv_into(scratch)
            peer.sendall(b"k")

    def upload(self, data: memoryview) -> None:
        self.conn.sendall(b"u")
        self.conn.sendall(data)
        assert self.conn.recv(1) == b"k"

    def download(self, into: np.ndarray | None = None) -> np.ndarray:
        self.conn.sendall(b"g")
        out = np.empty(SIZE, np.uint8) if into is None else into
        view, got = memoryview(out), 0
        while got < SIZE:
            got += self.conn.recv_into(view[got:], min(SIZE - got, 1 << 20))
        return out


class NativeDownload:
    """Plain reqwest in Rust (`examples/bench_native.rs`) reading `Download` into one
    buffer: the native floor of a download over each HTTP version."""

    def __init__(self, binary: str, url: str) -> None:
        self.proc = subprocess.Popen(
            [binary, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def once(self, version: str) -> None:
        assert self.proc.stdin and self.proc.stdout
        # A zero-second window is one download.
        self.proc.stdin.write(f"reqwest_download_{version} {SIZE} 0\n")
        self.proc.stdin.flush()
        float(self.proc.stdout.readline())


def timed(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Each contender's time per round (after one warm-up call each); the rounds
    interleave the contenders, so machine noise hits each alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():
        fn()
    for _ in range(rounds):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def main() -> None:
    url, native_binary = sys.argv[1], sys.argv[2]
    native = NativeDownload(native_binary, url)
    array = np.random.default_rng(0).integers(0, 255, size=SIZE, dtype=np.uint8)
    tensor = quill.Tensor.from_numpy(array)
    raw = RawTcp()
    contenders: dict[str, Callable[[], object]] = {
        "raw TCP up": lambda: raw.upload(memoryview(array)),
        "raw TCP down": raw.download,
    }
    reused = np.empty(SIZE, np.uint8)
    contenders["raw TCP down, reused array"] = lambda: raw.download(into=reused)
    clients = {
        v: quill.QuillClient(url, timeout_ms=120_000, http_version=v) for v in ("http1", "http2")
    }
    down_req = {"shape": [SIZE], "dtype": "uint8"}
    for version, client in clients.items():

        def up(c: quill.QuillClient = client) -> None:
            reply = json.loads(c.send_tensor("tensor.v1.TensorService", "Sink", tensor))
            assert reply["received_bytes"] > SIZE

        def down(c: quill.QuillClient = client) -> None:
            assert c.call_tensor("tensor.v1.TensorService", "Download", down_req).size_bytes == SIZE

        contenders[f"{version} up"] = up
        contenders[f"{version} down"] = down
        contenders[f"reqwest {version} down"] = lambda v=version: native.once(v)
    # The receive windows quill used before (hyper's 2 MiB / 5 MiB), for comparison.
    small = quill.QuillClient(
        url,
        timeout_ms=120_000,
        http_version="http2",
        http2_stream_window=2 << 20,
        http2_connection_window=5 << 20,
    )
    contenders["http2 small windows down"] = lambda: small.call_tensor(
        "tensor.v1.TensorService", "Download", down_req
    )
    contenders["http1 up to Upload (server reassembles and hashes)"] = lambda: clients[
        "http1"
    ].send_tensor("tensor.v1.TensorService", "Upload", tensor)
    times = timed(contenders, ROUNDS)
    rate = {name: (SIZE >> 20) / statistics.median(ts) for name, ts in times.items()}

    def vs_raw(name: str, raw_name: str) -> str:
        """Median and range of the per-round ratios to raw TCP: each round's contenders
        run back to back, so a slow period of the machine slows both sides of a ratio."""
        ratios = [r / t for r, t in zip(times[raw_name], times[name])]
        return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"

    print("| 64 MiB tensor | upload | vs raw TCP | download | vs raw TCP |")
    print("|---|---|---|---|---|")
    print(
        f"| raw loopback TCP | {rate['raw TCP up']:.0f} MiB/s | 1.00 | "
        f"{rate['raw TCP down']:.0f} MiB/s | 1.00 |"
    )
    print(
        f"| raw loopback TCP, into one reused array | | | "
        f"{rate['raw TCP down, reused array']:.0f} MiB/s | "
        f"{vs_raw('raw TCP down, reused array', 'raw TCP down')} |"
    )
    for version, label in (
        ("http1", "quill, HTTP/1.1"),
        ("http2", "quill, HTTP/2 (h2c)"),
    ):
        u, d = rate[f"{version} up"], rate[f"{version} down"]
        print(
            f"| {label} | {u:.0f} MiB/s | {vs_raw(f'{version} up', 'raw TCP up')} | "
            f"{d:.0f} MiB/s | {vs_raw(f'{version} down', 'raw TCP down')} |"
        )
    d = rate["http2 small windows down"]
    print(
        f"| quill, HTTP/2 (h2c), hyper's default windows (2 MiB stream / 5 MiB connection) "
        f"| | | {d:.0f} MiB/s | {vs_raw('http2 small windows down', 'raw TCP down')} |"
    )
    for version, label in (("http1", "HTTP/1.1"), ("http2", "HTTP/2 (h2c)")):
        d = rate[f"reqwest {version} down"]
        print(
            f"| plain reqwest (Rust), {label}, body into one buffer | | | {d:.0f} MiB/s | "
            f"{vs_raw(f'reqwest {version} down', 'raw TCP down')} |"
        )
    hashed = rate["http1 up to Upload (server reassembles and hashes)"]
    print(
        f"| quill, HTTP/1.1, to `Upload` (the server reassembles and hashes) | "
        f"{hashed:.0f} MiB/s | "
        f"{vs_raw('http1 up to Upload (server reassembles and hashes)', 'raw TCP up')} | | |"
    )
    print()
    print("| 64 MiB download | vs raw TCP into one reused array |")
    print("|---|---|")
    for version, label in (("http1", "quill, HTTP/1.1"), ("http2", "quill, HTTP/2 (h2c)")):
        print(f"| {label} | {vs_raw(f'{version} down', 'raw TCP down, reused array')} |")


if __name__ == "__main__":
    main()
