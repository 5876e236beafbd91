"""Interpreter exit with quill work in flight never aborts, hangs or prints.

Regression for a SIGABRT at exit (13 of 15 runs of a daemon thread reading a stream):
CPython ends threads that take the GIL during finalization with `pthread_exit`, whose
unwind aborts when it crosses Rust frames. `src/python/exit.rs` keeps such threads out
of Python once quill's atexit hook has run. Each kind of work runs many times, at no
delay and at small delays, so the old failure rate would fail this with near certainty.
QUILL_EXIT_RUNS scales the runs per case (default 6; the README's long run uses more).
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from quilltest import Server

SCRIPT = Path(__file__).with_name("exit_scenarios.py")
RUNS = int(os.environ.get("QUILL_EXIT_RUNS", "6"))
DELAYS = ("0", "0.002", "0.02")

SYNC_KINDS = (
    "call",
    "call_json",
    "slow_call",
    "send_tensor",
    "call_tensor",
    "stream",
    "stream_tokens",
    "bidi",
    "client_stream",
)
ASYNC_KINDS = ("call_async", "call_json_async", "stream_async", "stream_tokens_async")

CASES = (
    [(kind, "daemon", d) for kind in SYNC_KINDS + ASYNC_KINDS for d in DELAYS]
    + [(kind, "main", d) for kind in ("stream", "stream_tokens", "bidi") for d in DELAYS[:2]]
    + [(kind, "loop", d) for kind in ASYNC_KINDS for d in DELAYS[:2]]
    + [(kind, "fork", "0.005") for kind in ("stream", "call", "bidi")]
)


def unexpected_stderr(stderr: str) -> str:
    """stderr without asyncio's own report of tasks still pending when a loop is
    destroyed (printed for any library's pending tasks; the "loop" cases leave some)."""
    lines = stderr.splitlines()
    return "\n".join(
        line
        for line in lines
        if line != "Task was destroyed but it is pending!" and not line.startswith("task: <Task")
    )


def run_case(url: str, kind: str, where: str, delay: str) -> str | None:
    """None when the run exited cleanly, else what went wrong."""
    try:
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), url, kind, where, delay],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        return f"{kind}/{where}/{delay}: hung at exit"
    stderr = unexpected_stderr(proc.stderr)
    if proc.returncode != 0 or stderr or proc.stdout.strip() != "exiting":
        return (
            f"{kind}/{where}/{delay}: exit code {proc.returncode}, "
            f"stdout {proc.stdout[-200:]!r}, stderr {stderr[-1500:]!r}"
        )
    return None


@pytest.mark.slow
def test_exit_with_work_in_flight_is_clean(server: Server) -> None:
    jobs = [case for case in CASES for _ in range(RUNS)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [f for f in pool.map(lambda c: run_case(server.url, *c), jobs) if f]
    assert not failures, f"{len(failures)} of {len(jobs)} runs failed:\n" + "\n".join(failures[:10])
