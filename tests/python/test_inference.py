"""The typed quill.inference.v1 API: generate, embed and chat against the bundled server."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time

import numpy as np
import pytest

import quill

FAULT = "test.v1.FaultService"
PREGENERATE = {"quill-pregenerate": "64"}


def stats(client: quill.QuillClient) -> dict[str, int]:
    out: dict[str, int] = client.call_json(FAULT, "Stats", {})
    return out


def wait_for_cancel(client: quill.QuillClient, cancelled_before: int) -> None:
    t0 = time.monotonic()
    while True:
        s = stats(client)
        if s["open_streams"] == 0 and s["cancelled_streams"] > cancelled_before:
            return
        assert time.monotonic() - t0 < 10, f"the server still streams: {s}"
        time.sleep(0.01)


def test_generate_yields_typed_responses(client: quill.QuillClient) -> None:
    stream = client.generate([3, 1, 4], max_new_tokens=20, temperature=0.0)
    assert isinstance(stream, quill.GenerateStream) and isinstance(stream, quill.Stream)
    responses = list(stream)
    assert all(isinstance(r, quill.GenerateResponse) for r in responses)
    assert [len(r.tokens) for r in responses] == [8, 8, 4]
    assert [r.is_complete for r in responses] == [False, False, True]
    assert [r.total_generated for r in responses] == [8, 16, 20]
    assert responses[-1].finish_reason == "length" and responses[0].finish_reason is None
    assert [p for r in responses for p in r.tokens.positions()] == list(range(20))
    assert all(r.embedding is None and r.attention_mask == [] for r in responses)
    # Deterministic: the same request gives the same tokens, and text() joins them.
    again = [
        r.tokens.token_ids() for r in client.generate([3, 1, 4], max_new_tokens=20, temperature=0.0)
    ]
    assert again == [r.tokens.token_ids() for r in responses]
    text = client.generate([3, 1, 4], max_new_tokens=20, temperature=0.0).text()
    assert text == "".join(r.tokens.text() for r in responses)
    batches = list(client.generate([3, 1, 4], max_new_tokens=20, temperature=0.0).batches())
    assert all(isinstance(b, quill.TokenBatch) for b in batches)
    assert [b.token_ids() for b in batches] == [r.tokens.token_ids() for r in responses]


def test_generate_timing(client: quill.QuillClient) -> None:
    stream = client.generate([3, 1, 4], max_new_tokens=20)
    before = stream.timing
    assert before is not None and before.tokens == 0 and before.time_to_first_token_ms is None
    first = next(stream)
    mid = stream.timing
    assert mid is not None and mid.tokens == len(first.tokens) and mid.responses == 1
    assert mid.time_to_first_token_ms is not None and mid.time_to_first_token_ms > 0
    assert mid.inter_token_p50_ms is None  # no gap yet: only the first response
    list(stream)
    t = stream.timing
    assert t is not None and (t.tokens, t.responses) == (20, 3)
    assert t.time_to_first_token_ms == mid.time_to_first_token_ms
    assert t.elapsed_ms is not None and t.time_to_first_token_ms <= t.elapsed_ms
    assert t.inter_token_p50_ms is not None and t.inter_token_p99_ms is not None
    assert 0 <= t.inter_token_p50_ms <= t.inter_token_p99_ms
    assert t.tokens_per_second == pytest.approx(20 / (t.elapsed_ms / 1e3))
    assert "StreamTiming(tokens=20" in repr(t)


def test_stop_tokens_and_streamed_embeddings(client: quill.QuillClient) -> None:
    ids = [t.id for r in client.generate([9], max_new_tokens=20, temperature=0.0) for t in r.tokens]
    stop = ids[5]
    responses = list(
        client.generate(
            [9], max_new_tokens=20, temperature=0.0, stop_token_ids=[stop], stream_embeddings=True
        )
    )
    last = responses[-1]
    assert last.finish_reason == "stop" and last.is_complete
    assert last.total_generated == ids.index(stop) + 1
    assert last.tokens.token_ids()[-1] == stop
    emb = last.embedding
    assert isinstance(emb, quill.Tensor)
    assert emb.shape == [1, 8] and emb.dtype == quill.DType.float32()
    assert np.asarray(emb).dtype == np.float32


def test_generate_errors_are_typed(client: quill.QuillClient) -> None:
    with pytest.raises(quill.RpcError) as e:
        client.generate([1], max_new_tokens=5000)
    assert e.value.status == 400 and "max_new_tokens" in str(e.value)
    with pytest.raises(quill.OutOfRangeError, match=r"input_ids\[1\] must be an integer"):
        client.generate([1, -1])
    with pytest.raises(quill.OutOfRangeError, match="max_new_tokens"):
        client.generate([1], max_new_tokens=2**32)
    with pytest.raises(quill.OutOfRangeError, match=r"stop_token_ids\[0\]"):
        quill.GenerateRequest([1], stop_token_ids=[-3])
    with pytest.raises(TypeError, match="input_ids must be an iterable of ints, got str"):
        client.generate("not ids")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"input_ids\[0\] must be an int, got float"):
        client.embed([0.5])  # type: ignore[list-item]
    # NumPy arrays and tuples are iterables of ints too.
    assert client.generate(np.array([3, 1, 4]), max_new_tokens=20, temperature=0.0).text() == (
        client.generate((3, 1, 4), max_new_tokens=20, temperature=0.0).text()
    )


def test_breaking_out_cancels_the_generation(client: quill.QuillClient) -> None:
    before = stats(client)["cancelled_streams"]
    for response in client.generate([1], max_new_tokens=1_000_000, headers=PREGENERATE):
        assert len(response.tokens) == 64
        break
    wait_for_cancel(client, before)


def test_embed_returns_tensors(client: quill.QuillClient) -> None:
    tensors = client.embed([5, 6, 7], layers=[-1, 2])
    assert [t.shape for t in tensors] == [[3, 64], [3, 64]]
    assert [t.name for t in tensors] == ["layer -1", "layer 2"]
    rows = np.asarray(tensors[0])
    assert rows.dtype == np.float32 and not rows.flags.writeable
    first = client.embed([5, 6, 7], pool=True, pool_strategy="first")
    np.testing.assert_array_equal(np.asarray(first[0]), rows[:1])
    mean = client.embed([5, 6, 7], pool=True)
    np.testing.assert_allclose(np.asarray(mean[0]), rows.mean(axis=0, keepdims=True), rtol=1e-6)
    with pytest.raises(quill.RpcError) as e:
        client.embed([5], pool=True, pool_strategy="median")
    assert e.value.status == 400


def test_chat_runs_one_generation_per_request(client: quill.QuillClient) -> None:
    requests = [
        quill.GenerateRequest([1], max_new_tokens=3),
        {"input_ids": [2], "max_new_tokens": 10, "temperature": 0.5},
    ]
    assert requests[0] == quill.GenerateRequest([1], max_new_tokens=3)
    stream = client.chat(requests)
    responses = list(stream)
    assert [(r.tokens.sequence_id, len(r.tokens), r.is_complete) for r in responses] == [
        (1, 3, True),
        (2, 8, False),
        (2, 2, True),
    ]
    t = stream.timing
    assert t is not None and t.tokens == 13


def test_chat_is_full_duplex(client: quill.QuillClient) -> None:
    """The second request is produced only after the first generation came back."""
    answered: list[int] = []

    def requests():  # type: ignore[no-untyped-def]
        yield quill.GenerateRequest([1], max_new_tokens=2)
        t0 = time.monotonic()
        while not answered:
            assert time.monotonic() - t0 < 5
            time.sleep(0.005)
        yield quill.GenerateRequest([2], max_new_tokens=2)

    for r in client.chat(requests()):
        if r.is_complete:
            answered.append(r.tokens.sequence_id or 0)
    assert answered == [1, 2]


def test_chat_rejects_bad_items(client: quill.QuillClient) -> None:
    with pytest.raises(quill.CallCancelledError, match="GenerateRequest"):
        list(client.chat([42]))


# GenerateResponse{tokens: TokenBatch{tokens: [Token{id: 1}]}, total_generated: 1},
# derived by hand from the field numbers (is_complete left false).
INCOMPLETE = bytes([0x0A, 0x04, 0x0A, 0x02, 0x08, 0x01, 0x18, 0x01])
# A DATA frame (length varint, flags 0x01) of it, then END_STREAM (protocol §3).
CUT_STREAM = bytes([len(INCOMPLETE), 0x01]) + INCOMPLETE + bytes([0x00, 0x02])


class _Scripted(http.server.BaseHTTPRequestHandler):
    body = CUT_STREAM

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/proto")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (CUT_STREAM, quill.StreamError),
        # A message that is not a GenerateResponse (a truncated field) breaks the protocol.
        (bytes([0x03, 0x01, 0x0A, 0x05, 0x01, 0x00, 0x02]), quill.ProtocolError),
    ],
)
def test_a_bad_generate_stream_raises_typed_errors(body: bytes, error: type) -> None:
    handler = type("H", (_Scripted,), {"body": body})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        c = quill.QuillClient(f"http://127.0.0.1:{srv.server_address[1]}", timeout_ms=5000)
        with pytest.raises(error):
            list(c.generate([1]))
    finally:
        srv.shutdown()
        srv.server_close()


async def _async_generate(client: quill.QuillClient) -> tuple[int, quill.StreamTiming | None]:
    stream = client.generate_async([3, 1, 4], max_new_tokens=20)
    n = 0
    async for r in stream:
        n += len(r.tokens)
    return n, stream.timing


def test_async_generate_embed_and_chat(client: quill.QuillClient) -> None:
    async def main() -> None:
        n, timing = await _async_generate(client)
        assert n == 20 and timing is not None and timing.tokens == 20
        stream = client.generate_async([3, 1, 4], max_new_tokens=20, temperature=0.0)
        text = await stream.text_async()
        assert text == client.generate([3, 1, 4], max_new_tokens=20, temperature=0.0).text()
        tensors = await client.embed_async([1, 2], pool=True)
        assert [t.shape for t in tensors] == [[1, 64]]
        seqs = [r.tokens.sequence_id async for r in client.chat_async([{"input_ids": [4]}])]
        assert set(seqs) == {1}
        # Two generations at once on one client.
        a, b = await asyncio.gather(_async_generate(client), _async_generate(client))
        assert a[0] == b[0] == 20

    asyncio.run(main())


def test_async_timing_starts_with_the_call(client: quill.QuillClient) -> None:
    """generate_async opens on the first iteration: its clock starts then too. So the
    time to first token fits inside what the test sees from that iteration to the first
    response, and leaves out the 300 ms the stream sat unopened before it."""

    async def main() -> tuple[float | None, float]:
        stream = client.generate_async([1], max_new_tokens=4)
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        seen_ms = -1.0
        async for _ in stream:
            if seen_ms < 0:
                seen_ms = (time.monotonic() - t0) * 1e3
        assert stream.timing is not None
        return stream.timing.time_to_first_token_ms, seen_ms

    ttft, seen_ms = asyncio.run(main())
    # 1 ms for the two clocks' rounding; a clock started at generate_async() would be
    # 300 ms over.
    assert ttft is not None and 0 < ttft <= seen_ms + 1, (ttft, seen_ms)


def test_cancelling_an_async_generation_stops_the_server(client: quill.QuillClient) -> None:
    before = stats(client)["cancelled_streams"]

    async def main() -> None:
        generating = asyncio.Event()

        async def consume() -> None:
            stream = client.generate_async([1], max_new_tokens=1_000_000, headers=PREGENERATE)
            async for _ in stream:
                generating.set()
                await asyncio.sleep(10)

        task = asyncio.ensure_future(consume())
        # Cancel once the generation runs (its first response is in), not after a guess.
        await asyncio.wait_for(generating.wait(), timeout=10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    wait_for_cancel(client, before)
