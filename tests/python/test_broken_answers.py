"""Answers that break the promise of their call are typed errors, the same on every HTTP
version: an `embed` answer without one tensor per layer asked for, and a stream that
breaks off (before or after its first message)."""

from __future__ import annotations

import asyncio

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
