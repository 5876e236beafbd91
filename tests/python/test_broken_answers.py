"""Answers that break the promise of their call are typed errors, the same on every HTTP
version: an `embed` answer without one tensor per layer asked for, and a stream that
breaks off (before or after its first message)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import pytest

import quill


def empty_answers(client: quill.QuillClient) -> quill.QuillClient:
    """The same client, but every call lands under the bundled server's
    `test.v1.EmptyAnswers` prefix: 200 with an empty body for every POST, as the
    original Quill server's HTTP/3 path answers."""
    config = client.to_config(include_secrets=True)
    config["base_url"] += "/test.v1.EmptyAnswers"
    return quill.QuillClient.from_config(config)


def test_embed_without_one_tensor_per_layer_is_a_protocol_error(
    client: quill.QuillClient,
) -> None:
    empty = empty_answers(client)
    for layers, expected in (([-1, -2], 2), (None, 1), ([3], 1)):
        with pytest.raises(quill.ProtocolError) as info:
            empty.embed([5, 6], layers=layers)
        text = str(info.value)
        assert f"{expected} embeddings expected" in text and "0 received" in text, text

    async def embed_async() -> object:
        return await empty.embed_async([5], layers=[-1, -2])

    with pytest.raises(quill.ProtocolError, match="2 embeddings expected"):
        asyncio.run(embed_async())
    # The same calls on the real route get what they asked for.
    assert len(client.embed([5, 6], layers=[-1, -2])) == 2
    assert len(client.embed([5, 6])) == 1


def broken_end(open_stream: Callable[[], Iterable[object]]) -> BaseException:
    """The error a stream ends with, whether at its open or while reading it."""
    with pytest.raises(quill.QuillError) as info:
        for _ in open_stream():
            pass
    return info.value


FAULT = "test.v1.FaultService"


def test_a_stream_that_breaks_off_is_a_stream_error_on_every_version(
    client: quill.QuillClient,
) -> None:
    for _ in range(5):
        # Fails before its first byte: over HTTP/1.1 no response at all (the
        # connection closes, as the original Quill server's does), over HTTP/2 and
        # HTTP/3 a reset stream.
        for method in (client.stream, client.stream_tokens):
            e = broken_end(lambda m=method: m(FAULT, "StreamBreak", {}))
            assert type(e) is quill.StreamError and "StreamBreak" in str(e), repr(e)
        # Fails after its headers, before or after a message.
        for n in (0, 2):
            e = broken_end(lambda n=n: client.stream(FAULT, "StreamCut", {"messages": n}))
            assert type(e) is quill.StreamError, repr(e)

    async def read_async() -> None:
        async for _ in client.stream_async(FAULT, "StreamBreak", {}):
            pass

    with pytest.raises(quill.StreamError):
        asyncio.run(read_async())
    # A unary call without an answer is still a connection error (it may be retried).
    with pytest.raises(quill.QuillConnectionError):
        client.call(FAULT, "StreamBreak", b"{}")


def test_a_chat_the_server_fails_midway_is_a_stream_error(client: quill.QuillClient) -> None:
    """The server fails the second generation (max_new_tokens over its limit) while
    the first streams: whether the response headers were out yet is a race, and the
    error is the same either way."""
    for _ in range(10):
        with pytest.raises(quill.StreamError):
            list(
                client.chat(
                    [
                        {"input_ids": [1], "max_new_tokens": 3},
                        {"input_ids": [1], "max_new_tokens": 100_000},
                    ]
                )
            )
