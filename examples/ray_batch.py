"""Batch inference on Ray: a batch of requests fanned out to Ray actors, each talking to
a Quill server with its own QuillClient, the results gathered and checked against the
same batch run in one process.

Each request embeds its prompt (`LLMService/Embed`, a float32 tensor back), generates a
continuation (`LLMService/GenerateStream`, token batches as they are produced) and
scores the embedding against a table of label embeddings that every worker reads from
Ray's object store. Run it against running servers, or let it start bundled ones:

    QUILL_URL=http://127.0.0.1:8080 python examples/ray_batch.py --requests 256
    python examples/ray_batch.py --url http://a:8080 --url http://b:8080   # several servers
    python examples/ray_batch.py --servers 2 --limits   # starts target/debug/quill-server

`RAY_ADDRESS` joins an existing Ray cluster; without it a local one is started with
every CPU of this machine (`--num-cpus` to limit it). `QUILL_TOKEN`, if set, is sent as
a bearer token: the workers get it through `to_config(include_secrets=True)`.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import ray
from ray.actor import ActorProxy

import quill

if TYPE_CHECKING:
    # The dict of QuillClient.to_config / from_config; it exists only in the stubs.
    from quill._quill import _ClientConfig as ClientConfig

LLM = "inference.v1.LLMService"
# Phrases that end in a word of the demo server's corpus, so generation continues it.
PHRASES = [
    "Alice was beginning to get very tired of",
    "a White Rabbit with pink",
    "down the rabbit",
    "she had peeped into the book her",
    "the pleasure of making a daisy",
    "it was labelled ORANGE",
    "she fell past it",
    "Down, down, down. Would the fall",
]
LABELS = ["rabbit", "book", "garden", "marmalade", "falling", "sister"]


@dataclass(frozen=True)
class Request:
    index: int
    prompt: str


@dataclass(frozen=True)
class Settings:
    dim: int = 768
    max_tokens: int = 32
    temperature: float = 0.8


@dataclass
class Results:
    """Per request, in request order."""

    indices: list[int]
    embeddings: quill.Tensor  # float32 [n, dim]
    token_ids: list[list[int]]
    texts: list[str]
    labels: list[int]  # row of the nearest label embedding
    # Which process (pid) and server served each request; one entry per request.
    served_by: list[tuple[int, str]]


def make_requests(n: int) -> list[Request]:
    return [Request(i, f"Request {i}: {PHRASES[i % len(PHRASES)]}") for i in range(n)]


def embed_labels(client: quill.QuillClient, dim: int) -> quill.Tensor:
    rows = [np.asarray(client.call_tensor(LLM, "Embed", {"text": t, "dim": dim})) for t in LABELS]
    return quill.Tensor.from_numpy(np.concatenate(rows), name="labels")


def run_requests(
    client: quill.QuillClient, requests: Sequence[Request], labels: quill.Tensor, s: Settings
) -> Results:
    """The work of one chunk, the same in a Ray worker and in a single process."""
    rows, token_ids, texts = [], [], []
    for r in requests:
        emb = client.call_tensor(LLM, "Embed", {"text": r.prompt, "dim": s.dim})
        rows.append(np.asarray(emb))
        ids: list[int] = []
        text = []
        request = {
            "prompt": r.prompt,
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "batch_size": 8,
            "sequence_id": r.index,
        }
        with client.stream_tokens(LLM, "GenerateStream", request) as stream:
            for batch in stream:
                if batch.sequence_id != r.index:
                    raise RuntimeError(f"request {r.index} got sequence {batch.sequence_id}")
                ids += batch.token_ids()
                text.append(batch.text())
        token_ids.append(ids)
        texts.append("".join(text))
    embeddings = np.concatenate(rows) if rows else np.zeros((0, s.dim), np.float32)
    # Both sides are unit vectors: the dot product is the cosine similarity. The label
    # table is read in place (from the object store in a worker), never copied.
    nearest = (embeddings @ np.asarray(labels).T).argmax(axis=1) if rows else []
    origin = (os.getpid(), client.base_url)
    return Results(
        indices=[r.index for r in requests],
        embeddings=quill.Tensor.from_numpy(embeddings, name="embeddings"),
        token_ids=token_ids,
        texts=texts,
        labels=[int(i) for i in nearest],
        served_by=[origin] * len(requests),
    )


def merge(parts: Sequence[Results], dim: int) -> Results:
    arrays = [np.asarray(p.embeddings) for p in parts]
    return Results(
        indices=[i for p in parts for i in p.indices],
        embeddings=quill.Tensor.from_numpy(
            np.concatenate(arrays) if arrays else np.zeros((0, dim), np.float32),
            name="embeddings",
        ),
        token_ids=[t for p in parts for t in p.token_ids],
        texts=[t for p in parts for t in p.texts],
        labels=[label for p in parts for label in p.labels],
        served_by=[w for p in parts for w in p.served_by],
    )


class Worker:
    """One per worker process: one QuillClient (a runtime and a connection pool), built
    once from the config it was given and used for every chunk that process runs."""

    def __init__(self, config: ClientConfig) -> None:
        self.client = quill.QuillClient.from_config(config)

    @ray.method
    def run(self, requests: list[Request], labels: quill.Tensor, s: Settings) -> Results:
        return run_requests(self.client, requests, labels, s)

    @ray.method
    def describe(self) -> dict[str, str]:
        """The process, the server and the headers (secrets shown as `<redacted>`)."""
        seen = {"pid": str(os.getpid()), "base_url": self.client.base_url}
        return {**seen, **self.client.get_headers()}

    @ray.method
    def ping(self) -> None:
        pass

    @ray.method
    def size_of(self, tensor: quill.Tensor) -> int:
        return tensor.size_bytes

    @ray.method
    def make_tensor(self, nbytes: int) -> quill.Tensor:
        return quill.Tensor.zeros([nbytes], quill.DType.uint8())


# Applied as a call, not as a class decorator, so that type checkers see the actor
# class Ray makes (a class decorator cannot change a class's type for them).
RemoteWorker = ray.remote(num_cpus=1)(Worker)


@ray.remote(num_cpus=1)
def noop() -> None:
    pass


def start_workers(
    client: quill.QuillClient, urls: Sequence[str], count: int
) -> list[ActorProxy[Worker]]:
    """`count` workers spread over `urls`. The client's secrets (if any) are put in the
    config on purpose: a pickled client would leave them behind."""
    config = client.to_config(include_secrets=True)
    workers = []
    for i in range(count):
        c = config.copy()
        c["base_url"] = urls[i % len(urls)]
        workers.append(RemoteWorker.remote(c))
    return workers


def run_on_ray(
    workers: Sequence[ActorProxy[Worker]],
    requests: Sequence[Request],
    labels: quill.Tensor,
    s: Settings,
    chunk: int,
) -> Results:
    """Chunks go to the workers in turn; Ray queues each worker's share and runs it in
    order, so `ray.get` hands the chunks back in request order."""
    labels_ref = ray.put(labels)  # one copy in the object store, read by every worker
    chunks = [list(requests[i : i + chunk]) for i in range(0, len(requests), chunk)]
    refs = [workers[j % len(workers)].run.remote(c, labels_ref, s) for j, c in enumerate(chunks)]
    return merge(ray.get(refs), s.dim)


def mismatches(got: Results, want: Results) -> list[str]:
    """How a Ray run differs from the single-process run (empty when it does not)."""
    out = []
    for field in ("indices", "token_ids", "texts", "labels"):
        if getattr(got, field) != getattr(want, field):
            out.append(field)
    if got.embeddings != want.embeddings:
        out.append("embeddings")
    return out


def mean_seconds(f: Callable[[], object], rounds: int = 200) -> float:
    f()  # warm-up: a worker process may have to start first
    t0 = time.perf_counter()
    for _ in range(rounds):
        f()
    return (time.perf_counter() - t0) / rounds


def measure_task_overhead() -> dict[str, float]:
    """The round trip of an empty Ray task. Run before the workers exist: they hold a
    CPU each for their lifetime, so a task would wait for one forever."""
    return {"task_ms": mean_seconds(lambda: ray.get(noop.remote())) * 1e3}


def measure_limits(workers: Sequence[ActorProxy[Worker]]) -> dict[str, float]:
    """Ray's cost per actor call and for moving a 64 MiB tensor through the object store."""
    out = {"actor_call_ms": mean_seconds(lambda: ray.get(workers[0].ping.remote())) * 1e3}
    nbytes = 64 << 20
    tensor = quill.Tensor.zeros([nbytes], quill.DType.uint8())
    t0 = time.perf_counter()
    ref = ray.put(tensor)
    out["put_64mib_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    sent = ray.get(workers[0].size_of.remote(ref))
    out["to_worker_64mib_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    back = ray.get(workers[0].make_tensor.remote(nbytes))
    out["from_worker_64mib_ms"] = (time.perf_counter() - t0) * 1e3
    if not sent == back.size_bytes == nbytes:
        raise RuntimeError(f"64 MiB tensor arrived as {sent} and {back.size_bytes} bytes")
    return out


@contextmanager
def bundled_servers(count: int) -> Iterator[list[str]]:
    """Starts `count` bundled servers on free loopback ports; stops them on exit."""
    binary = os.environ.get("QUILL_SERVER_BIN") or str(
        Path(__file__).resolve().parents[1] / "target" / "debug" / "quill-server"
    )
    if not Path(binary).exists():
        sys.exit(
            f"no server at {binary}: build it (cargo build --features server --bin "
            "quill-server), set QUILL_SERVER_BIN, or give --url / QUILL_URL"
        )
    procs: list[subprocess.Popen[str]] = []
    try:
        urls = []
        for _ in range(count):
            p = subprocess.Popen([binary, "--port", "0"], stdout=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            if not line.startswith("listening on "):
                sys.exit(f"quill-server did not start: {line!r}")
            urls.append(line.removeprefix("listening on "))
        yield urls
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
            if p.stdout is not None:
                p.stdout.close()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--url", action="append", help="a Quill server (repeatable); or $QUILL_URL")
    ap.add_argument("--servers", type=int, default=2, help="bundled servers to start without URL")
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=8, help="requests per Ray call")
    ap.add_argument("--workers", type=int, help="Ray actors (default: the cluster's CPUs)")
    ap.add_argument("--num-cpus", type=int, help="CPUs of the local Ray cluster")
    ap.add_argument("--dim", type=int, default=Settings.dim)
    ap.add_argument("--max-tokens", type=int, default=Settings.max_tokens)
    ap.add_argument("--limits", action="store_true", help="also measure Ray's own overheads")
    args = ap.parse_args(argv)
    urls = args.url or ([os.environ["QUILL_URL"]] if os.environ.get("QUILL_URL") else [])
    if urls:
        return batch(args, urls)
    with bundled_servers(args.servers) as started:
        return batch(args, started)


def batch(args: argparse.Namespace, urls: list[str]) -> int:
    s = Settings(dim=args.dim, max_tokens=args.max_tokens)
    client = quill.QuillClient(urls[0], timeout_ms=60_000)
    token = os.environ.get("QUILL_TOKEN")
    if token:
        client.set_bearer_token(token)
    requests = make_requests(args.requests)
    labels = embed_labels(client, s.dim)

    t0 = time.perf_counter()
    local = run_requests(client, requests, labels, s)
    local_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    ray.init(
        address=os.environ.get("RAY_ADDRESS", "local"),
        num_cpus=args.num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    init_s = time.perf_counter() - t0
    try:
        limits = measure_task_overhead() if args.limits else {}
        cpus = ray.cluster_resources().get("CPU", 1)  # type: ignore[no-untyped-call]
        n_workers = args.workers or max(1, int(cpus))
        t0 = time.perf_counter()
        workers = start_workers(client, urls, n_workers)
        ray.get([w.ping.remote() for w in workers])
        workers_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = run_on_ray(workers, requests, labels, s, args.chunk)
        ray_s = time.perf_counter() - t0
        if args.limits:
            limits |= measure_limits(workers)
    finally:
        ray.shutdown()

    n = len(requests)
    print(f"{n} requests, {n_workers} Ray workers, {len(urls)} server(s), chunks of {args.chunk}")
    print(f"Ray start: {init_s:.2f} s, workers ready: {workers_s:.2f} s")
    print(f"single process: {local_s:.2f} s ({n / local_s:.0f} requests/s)")
    print(f"Ray:            {ray_s:.2f} s ({n / ray_s:.0f} requests/s)")
    print(f"served by {len(set(got.served_by))} worker/server pairs")
    for name, value in limits.items():
        print(f"{name}: {value:.2f}")
    diff = mismatches(got, local)
    if diff:
        print(f"results differ from the single-process run in: {', '.join(diff)}")
        return 1
    print("results match the single-process run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
