"""Tensor and token benchmarks, side by side with numpy's own copy (scripts/bench).

Prints a Markdown table; every ratio is measured in the same run on the same machine.
"""

from __future__ import annotations

import pickle
import platform
import time
from collections.abc import Callable

import numpy as np

import quill


def best(fn: Callable[[], object], *, min_time: float = 0.3, repeat: int = 5) -> float:
    """Best per-call seconds over `repeat` rounds of enough calls to fill `min_time`."""
    fn()
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= min_time / repeat or n >= 1 << 20:
            break
        n *= 2
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n)
    return min(times)


def fmt(sec: float) -> str:
    if sec < 1e-6:
        return f"{sec * 1e9:.0f} ns"
    if sec < 1e-3:
        return f"{sec * 1e6:.2f} µs"
    return f"{sec * 1e3:.2f} ms"


def tensor_rows() -> list[str]:
    rows = [
        "| size | numpy `arr.copy()` | `Tensor.from_numpy` | ratio | `to_numpy()` | ratio "
        "| `np.asarray(tensor)` (zero-copy) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, nbytes in (("4 KiB", 4 << 10), ("1 MiB", 1 << 20), ("64 MiB", 64 << 20)):
        arr = np.random.default_rng(0).standard_normal(nbytes // 4).astype(np.float32)
        t = quill.Tensor.from_numpy(arr)
        np_copy = best(arr.copy)
        from_np = best(lambda arr=arr: quill.Tensor.from_numpy(arr))
        to_np = best(t.to_numpy)
        view = best(lambda t=t: np.asarray(t))
        rows.append(
            f"| {label} | {fmt(np_copy)} | {fmt(from_np)} | {from_np / np_copy:.2f}× | "
            f"{fmt(to_np)} | {to_np / np_copy:.2f}× | {fmt(view)} |"
        )
    return rows


def pickle_rows() -> list[str]:
    """dumps+loads of a 64 MiB float32 tensor against numpy's own round trip: protocol 5
    out of band (buffer_callback / buffers=, what multiprocessing and Ray do), protocol 5
    in band, protocol 4."""
    arr = np.random.default_rng(0).standard_normal(16 << 20).astype(np.float32)
    t = quill.Tensor.from_numpy(arr)

    def out_of_band(obj: object) -> object:
        bufs: list[pickle.PickleBuffer] = []
        data = pickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
        return pickle.loads(data, buffers=bufs)

    rows = [
        "| 64 MiB float32, `dumps` + `loads` | numpy `ndarray` | `quill.Tensor` | ratio |",
        "|---|---|---|---|",
    ]
    for label, fn in (
        ("protocol 5, out of band", out_of_band),
        ("protocol 5, in band", lambda o: pickle.loads(pickle.dumps(o, protocol=5))),
        ("protocol 4", lambda o: pickle.loads(pickle.dumps(o, protocol=4))),
    ):
        np_t = best(lambda fn=fn: fn(arr), min_time=1.0)
        q_t = best(lambda fn=fn: fn(t), min_time=1.0)
        rows.append(f"| {label} | {fmt(np_t)} | {fmt(q_t)} | {q_t / np_t:.2f}× |")
    return rows


def dlpack_rows() -> list[str]:
    """Zero-copy exchange of a 64 MiB float32 tensor: DLPack both ways against the buffer
    protocol (`np.asarray`) and the one-copy `from_numpy`."""
    arr = np.random.default_rng(0).standard_normal(16 << 20).astype(np.float32)
    t = quill.Tensor.from_numpy(arr)
    results = {
        "`np.asarray(tensor)` (buffer protocol)": best(lambda: np.asarray(t)),
        "`np.from_dlpack(tensor)`": best(lambda: np.from_dlpack(t)),
        "`Tensor.from_dlpack(arr)`": best(lambda: quill.Tensor.from_dlpack(arr)),
        "`Tensor.from_numpy(arr)` (one copy)": best(lambda: quill.Tensor.from_numpy(arr)),
    }
    rows = ["| 64 MiB float32 | time |", "|---|---|"]
    rows += [f"| {name} | {fmt(sec)} |" for name, sec in results.items()]
    return rows


def token_rows() -> list[str]:
    n = 10_000
    words = [f" w{i % 97}" for i in range(n)]
    tokens = [quill.Token.with_text(i, words[i], i, logprob=-0.25) for i in range(n)]
    batch = quill.TokenBatch.from_tokens(tokens, sequence_id=1)
    raw = batch.encode()
    results = {
        "build (`Token.with_text` × 10 000 + `from_tokens`)": best(
            lambda: quill.TokenBatch.from_tokens(
                [quill.Token.with_text(i, words[i], i, logprob=-0.25) for i in range(n)]
            ),
            min_time=0.5,
        ),
        "`from_tokens` (tokens already built)": best(lambda: quill.TokenBatch.from_tokens(tokens)),
        "`text()`": best(batch.text),
        "`encode()`": best(batch.encode),
        "`TokenBatch.decode()`": best(lambda: quill.TokenBatch.decode(raw)),
        "iterate (`for t in batch`)": best(lambda: [t.id for t in batch]),
    }
    rows = ["| 10 000-token batch | time | tokens/s |", "|---|---|---|"]
    for name, sec in results.items():
        rows.append(f"| {name} | {fmt(sec)} | {n / sec / 1e6:.1f} M |")
    return rows


def main() -> None:
    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"Python {platform.python_version()}, numpy {np.__version__}, quill {quill.__version__}"
    )
    print()
    print("\n".join(tensor_rows()))
    print()
    print("\n".join(pickle_rows()))
    print()
    print("\n".join(dlpack_rows()))
    print()
    print("\n".join(token_rows()))


if __name__ == "__main__":
    main()
