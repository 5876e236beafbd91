"""Scale on one client, HTTP/1.1 against HTTP/2, against the bundled server (release
build, started by scripts/bench with --h2-max-streams 2000): 1,000 concurrent token
streams from asyncio (time to first token p50/p99, tokens/s, client RSS growth), then
10,000 concurrent unary calls (calls/s, RSS growth). Each load runs in a fresh process,
so RSS growth is its own."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import quill

LLM = "inference.v1.LLMService"
STREAMS, TOKENS, CALLS = 1000, 64, 10_000


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def pct(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


async def streams(client: quill.QuillClient) -> dict[str, float]:
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
    ttft.sort()
    return {
        "p50": pct(ttft, 0.5) * 1e3,
        "p99": pct(ttft, 0.99) * 1e3,
        "rate": STREAMS * TOKENS / elapsed,
    }


async def calls(client: quill.QuillClient) -> dict[str, float]:
    t0 = time.perf_counter()
    replies = await asyncio.gather(
        *(client.call_async("echo.v1.EchoService", "Echo", b"%d" % i) for i in range(CALLS))
    )
    elapsed = time.perf_counter() - t0
    if replies != [b"%d" % i for i in range(CALLS)]:
        raise RuntimeError("a reply came back wrong")
    return {"rate": CALLS / elapsed}


def child(url: str, version: str, load: str) -> None:
    client = quill.QuillClient(url, timeout_ms=300_000, http_version=version)  # type: ignore[arg-type]

    async def measure() -> dict[str, float]:
        await client.call_async("echo.v1.EchoService", "Echo", b"warm")
        nonlocal before
        before = rss_mib()
        return await (streams(client) if load == "streams" else calls(client))

    before = 0.0
    out = asyncio.run(measure())
    out["rss"] = rss_mib() - before
    print(json.dumps(out))


def run(url: str, version: str, load: str) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, __file__, url, version, load], capture_output=True, text=True, check=True
    )
    return dict(json.loads(proc.stdout.splitlines()[-1]))


def main() -> None:
    url = sys.argv[1]
    if len(sys.argv) == 4:
        child(url, sys.argv[2], sys.argv[3])
        return
    rows = {v: (run(url, v, "streams"), run(url, v, "calls")) for v in ("http1", "http2")}
    print(
        f"| one client, asyncio | {STREAMS} token streams: TTFT p50 / p99 | tokens/s | RSS growth"
        f" | {CALLS:,} concurrent unary calls: calls/s | RSS growth |"
    )
    print("|---|---|---|---|---|---|")
    names = {"http1": "HTTP/1.1 (pool, max_connections=100)", "http2": "HTTP/2 (one connection)"}
    for v, (s, c) in rows.items():
        print(
            f"| {names[v]} | {s['p50']:.0f} / {s['p99']:.0f} ms | {s['rate']:,.0f} | "
            f"+{s['rss']:.0f} MiB | {c['rate']:,.0f} | +{c['rss']:.0f} MiB |"
        )


if __name__ == "__main__":
    main()
