"""Batch inference on Ray (examples/ray_batch.py) against the bundled server.

A local Ray cluster of 2 CPUs runs the example's workers; every result must equal the
same batch run in this process. QUILL_RAY_REQUESTS sets the batch size (default 256;
the README's longer run uses more).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from quilltest import ROOT, TOKEN, Server, start_server

import quill

ray = pytest.importorskip("ray", reason="ray is not installed (scripts/requirements-ray.txt)")

pytestmark = pytest.mark.ray

EXAMPLE = ROOT / "examples" / "ray_batch.py"
REQUESTS = int(os.environ.get("QUILL_RAY_REQUESTS", "256"))
CHUNK = 8


def load_example() -> ModuleType:
    # Registered under its own name, so Ray pickles its classes by reference and the
    # workers import the same file (the cluster fixture puts examples/ on their path).
    spec = importlib.util.spec_from_file_location("ray_batch", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ray_batch"] = module
    spec.loader.exec_module(module)
    return module


rb = load_example()


def processes_with(env_entry: str) -> list[int]:
    """Processes other than this one whose environment holds `env_entry` (NAME=value)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if env_entry.encode() in environ.split(b"\0"):
            found.append(int(proc.name))
    return found


def assert_all_gone(env_entry: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while (left := processes_with(env_entry)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"Ray processes left running: {left}"


HAS_PROC = Path("/proc/self/environ").exists()


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray cluster (2 CPUs) with its files in a temporary directory. Every Ray
    process inherits a marker in its environment, so the finalizer can check that
    `ray.shutdown()` left none of them running."""
    # Short on purpose: Ray's socket paths under it must fit the 107-byte limit.
    temp = tempfile.mkdtemp(prefix="quill-ray-")
    marker = f"QUILL_RAY_TEST={uuid.uuid4().hex}"
    saved = dict(os.environ)
    # The workers import the example by name, as this process did.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(EXAMPLE.parent), saved.get("PYTHONPATH")) if p
    )
    os.environ[marker.split("=")[0]] = marker.split("=")[1]
    t0 = time.monotonic()
    try:
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            _temp_dir=temp,
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    print(f"\nray.init: {time.monotonic() - t0:.2f} s")
    if HAS_PROC:
        assert processes_with(marker), "the marker did not reach Ray's processes"
    try:
        yield
    finally:
        t0 = time.monotonic()
        ray.shutdown()
        if HAS_PROC:
            assert_all_gone(marker)
        print(f"\nray.shutdown, all processes gone: {time.monotonic() - t0:.2f} s")
        shutil.rmtree(temp, ignore_errors=True)


def test_example_runs_standalone(server: Server) -> None:
    """The command-line example starts its own Ray, joins nothing else, finds its
    results equal to its single-process run and leaves no process behind. (First in
    the file, before the module's cluster exists.)"""
    temp = tempfile.mkdtemp(prefix="quill-ray-")
    marker = f"QUILL_RAY_TEST={uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "QUILL_URL")}
    env.update(RAY_TMPDIR=temp, QUILL_TOKEN=TOKEN)
    env[marker.split("=")[0]] = marker.split("=")[1]
    try:
        proc = subprocess.run(
            [sys.executable, str(EXAMPLE), "--url", server.url, "--requests", "24"]
            + ["--num-cpus", "2", "--chunk", "4"],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0] == "24 requests, 2 Ray workers, 1 server(s), chunks of 4", lines
        assert "served by 2 worker/server pairs" in lines
        assert lines[-1] == "results match the single-process run"
        if HAS_PROC:
            assert_all_gone(marker)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def second_server() -> Iterator[Server]:
    s = start_server("--token", TOKEN)
    yield s
    s.process.terminate()
    s.process.wait(timeout=10)
    if s.process.stdout is not None:
        s.process.stdout.close()


def test_batch_on_ray_equals_one_process(
    server: Server, second_server: Server, ray_cluster: None
) -> None:
    settings = rb.Settings()
    client = quill.QuillClient(server.url, timeout_ms=60_000)
    client.set_bearer_token(TOKEN)
    requests = rb.make_requests(REQUESTS)
    labels = rb.embed_labels(client, settings.dim)
    t0 = time.perf_counter()
    local = rb.run_requests(client, requests, labels, settings)
    local_s = time.perf_counter() - t0

    urls = [server.url, second_server.url]
    workers = rb.start_workers(client, urls, 2)
    try:
        seen = ray.get([w.describe.remote() for w in workers])
        t0 = time.perf_counter()
        got = rb.run_on_ray(workers, requests, labels, settings, CHUNK)
        ray_s = time.perf_counter() - t0
    finally:
        for w in workers:
            ray.kill(w)  # frees their CPUs for the next test
    print(
        f"\n{REQUESTS} requests: one process {local_s:.2f} s ({REQUESTS / local_s:.0f}/s), "
        f"Ray with 2 workers {ray_s:.2f} s ({REQUESTS / ray_s:.0f}/s)"
    )

    # Each worker is its own process, on its own server, holding the bearer token that
    # came in its config (shown redacted).
    assert [s["base_url"] for s in seen] == urls
    pids = {int(s["pid"]) for s in seen}
    assert len(pids) == 2 and os.getpid() not in pids
    assert all(s["Authorization"] == "<redacted>" for s in seen)

    # The single-process run is a real batch: every request answered, and answered
    # differently.
    emb = np.asarray(local.embeddings)
    assert emb.shape == (REQUESTS, settings.dim) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert len({row.tobytes() for row in emb}) == REQUESTS
    assert all(len(ids) == settings.max_tokens for ids in local.token_ids)
    assert len(set(local.texts)) > REQUESTS // 2
    expected_labels = (emb @ np.asarray(labels).T).argmax(axis=1).tolist()
    assert local.labels == expected_labels and len(set(expected_labels)) > 1

    # Ray's answers, gathered in request order, are exactly the single-process ones.
    assert got.indices == list(range(REQUESTS))
    assert got.embeddings == local.embeddings
    assert got.token_ids == local.token_ids
    assert got.texts == local.texts
    assert got.labels == local.labels
    assert rb.mismatches(got, local) == []
    # Chunks went to the workers in turn, each worker to its own server.
    by_worker = {(int(s["pid"]), s["base_url"]) for s in seen}
    assert set(got.served_by) == by_worker
    for i, origin in enumerate(got.served_by):
        assert origin[1] == urls[(i // CHUNK) % 2]


def test_mismatches_names_what_differs(server: Server) -> None:
    """The example's own check, which decides its exit code, sees a changed result."""
    settings = rb.Settings(dim=8, max_tokens=4)
    client = quill.QuillClient(server.url, timeout_ms=10_000)
    requests = rb.make_requests(3)
    labels = rb.embed_labels(client, settings.dim)
    a = rb.run_requests(client, requests, labels, settings)
    b = rb.run_requests(client, requests, labels, settings)
    assert rb.mismatches(a, b) == []
    b.texts[1] += "!"
    b.embeddings = quill.Tensor.from_numpy(np.asarray(b.embeddings) * 2)
    assert rb.mismatches(a, b) == ["texts", "embeddings"]


def test_secrets_reach_workers_only_through_an_explicit_config(
    server: Server, ray_cluster: None
) -> None:
    client = quill.QuillClient(server.url, timeout_ms=10_000)
    client.set_bearer_token(TOKEN)

    # Defined here so Ray ships the function itself, not a reference to this module.
    def auth_status(c: object) -> int:
        import quill as q

        worker_client = c if isinstance(c, q.QuillClient) else q.QuillClient.from_config(c)
        try:
            worker_client.call_json("test.v1.FaultService", "Auth", {})
        except q.RpcError as e:
            return e.status
        return 200

    remote = ray.remote(num_cpus=1)(auth_status)
    statuses = ray.get(
        [
            remote.remote(client),  # pickled: settings only
            remote.remote(client.to_config()),
            remote.remote(client.to_config(include_secrets=True)),
        ]
    )
    assert statuses == [401, 401, 200]


def test_tensors_travel_through_the_object_store(ray_cluster: None) -> None:
    rng = np.random.default_rng(1)
    big = quill.Tensor.from_numpy(rng.standard_normal((1024, 4096)).astype(np.float32), name="x")
    bits = quill.Tensor.from_numpy(
        np.arange(12, dtype=np.uint16).reshape(3, 4), dtype=quill.DType.bfloat16(), name="b"
    )

    def double(t: quill.Tensor) -> quill.Tensor:
        import numpy

        import quill as q

        return q.Tensor.from_numpy(numpy.asarray(t) * 2, name=t.name)

    def describe(t: quill.Tensor) -> tuple[str, list[int], str | None, bytes]:
        return t.dtype.name, t.shape, t.name, t.tobytes()

    big_ref = ray.put(big)  # stored once, read by the task from the object store
    doubled, (dtype, shape, name, raw) = ray.get(
        [
            ray.remote(num_cpus=1)(double).remote(big_ref),
            ray.remote(num_cpus=1)(describe).remote(bits),
        ]
    )
    assert ray.get(big_ref) == big
    assert isinstance(doubled, quill.Tensor) and doubled.name == "x"
    assert np.array_equal(np.asarray(doubled), np.asarray(big) * 2)
    assert (dtype, shape, name, raw) == ("bfloat16", [3, 4], "b", bits.tobytes())
