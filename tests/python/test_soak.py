"""Soak: many calls, streams and tensors in one process with flat memory.

Reports start/end RSS (printed with -s, and recorded in docs/reliability.md)."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from quilltest import rss_mib

import quill

pytestmark = pytest.mark.slow


def test_100k_unary_calls_and_10k_streams_keep_rss_flat(client: quill.QuillClient) -> None:
    body = bytes(1024)
    for _ in range(2000):  # warm-up: pool, allocator arenas
        client.call("echo.v1.EchoService", "Echo", body)
    gc.collect()
    start = rss_mib()
    for _ in range(100_000):
        client.call("echo.v1.EchoService", "Echo", body)
    after_calls = rss_mib()
    req = {"messages": 2, "interval_ms": 0}
    for _ in range(10_000):
        for _ in client.stream("test.v1.FaultService", "StreamSlow", req):
            pass
    gc.collect()
    end = rss_mib()
    print(f"\nRSS MiB: start {start:.1f}, 100k calls {after_calls:.1f}, 10k streams {end:.1f}")
    assert after_calls - start < 16, (start, after_calls)
    assert end - start < 24, (start, end)


def test_million_tensor_create_drop_cycles_do_not_grow() -> None:
    arr = np.arange(64, dtype=np.float32)
    for _ in range(10_000):
        quill.Tensor.from_numpy(arr)
    gc.collect()
    start = rss_mib()
    for i in range(1_000_000):
        t = quill.Tensor.from_numpy(arr)
        if i % 100_000 == 0:
            np.asarray(t).sum()
    del t
    gc.collect()
    end = rss_mib()
    print(f"\nRSS: start {start:.1f} MiB, after 1M tensors {end:.1f} MiB")
    assert end - start < 8, (start, end)
