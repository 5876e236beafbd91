"""The seed's Token Handling section, verbatim, plus the wire codecs of protocol §8."""

from __future__ import annotations

import math

import pytest

import quill


def test_individual_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    token = quill.Token(id=42, position=0, text="hello", logprob=-0.5, is_special=False)
    token = quill.Token.with_text(42, "hello", 0, logprob=-0.5)
    print(token.id)
    print(token.text)
    print(token.logprob)
    print(token.position)
    print(token.is_special)
    print(token.prob())
    print(token.is_eos())
    as_dict = token.to_dict()
    as_bytes = token.encode()
    out = capsys.readouterr().out.splitlines()
    assert out[:5] == ["42", "hello", "-0.5", "0", "False"]
    assert abs(float(out[5]) - 0.607) < 0.001
    assert out[6] == "False"
    assert as_dict == {
        "id": 42,
        "text": "hello",
        "logprob": -0.5,
        "position": 0,
        "is_special": False,
    }
    assert as_bytes == bytes.fromhex("00 00 00 2a 00 00 00 00 03 bf 00 00 00 00 05 68 65 6c 6c 6f")


def test_protocol_examples_both_directions() -> None:
    hello = bytes.fromhex("00 00 00 2a 00 00 00 00 03 bf 00 00 00 00 05 68 65 6c 6c 6f")
    assert quill.Token.decode(hello) == quill.Token(id=42, position=0, text="hello", logprob=-0.5)
    plain = bytes.fromhex("00 00 00 07 00 00 00 01 00")
    assert quill.Token(id=7, position=1).encode() == plain
    t = quill.Token.decode(plain)
    assert (t.id, t.position, t.text, t.logprob, t.is_special) == (7, 1, None, None, False)
    assert t.prob() is None
    assert t.to_dict() == {
        "id": 7,
        "text": None,
        "logprob": None,
        "position": 1,
        "is_special": False,
    }


def test_token_batches(capsys: pytest.CaptureFixture[str]) -> None:
    batch = quill.TokenBatch(sequence_id=1)
    batch.add(quill.Token.with_text(1, "Hello", 0))
    batch.add(quill.Token.with_text(2, " ", 1))
    batch.add(quill.Token.with_text(3, "World", 2))
    built_by_add = batch

    tokens = [
        quill.Token.with_text(1, "Hello", 0),
        quill.Token.with_text(2, " ", 1),
        quill.Token.with_text(3, "World", 2),
    ]
    batch = quill.TokenBatch.from_tokens(tokens, sequence_id=1)
    assert batch == built_by_add

    print(len(batch))
    print(batch.sequence_id)
    print(batch.is_final)
    print(batch.is_empty())
    print(batch.text())
    print(batch.token_ids())
    print(batch.positions())
    batch.is_final = True
    for token in batch:
        print(f"{token.id}: {token.text}")
    batch.set_metadata("model", "llama-7b")
    batch.set_metadata("temperature", "0.7")
    print(batch.get_metadata("model"))

    assert capsys.readouterr().out.splitlines() == [
        "3",
        "1",
        "False",
        "False",
        "Hello World",
        "[1, 2, 3]",
        "[0, 1, 2]",
        "1: Hello",
        "2:  ",
        "3: World",
        "llama-7b",
    ]
    assert batch.is_final is True
    assert batch.metadata == {"model": "llama-7b", "temperature": "0.7"}
    assert batch.get_metadata("missing") is None
    assert batch.get_metadata("missing", "d") == "d"
    assert batch[0].text == "Hello" and batch[-1].text == "World"
    with pytest.raises(IndexError) as info:
        batch[3]
    assert isinstance(info.value, quill.OutOfRangeError)


def test_batch_wire_codec_round_trip() -> None:
    batch = quill.TokenBatch.from_tokens(
        [
            quill.Token(id=7, position=1),
            quill.Token.with_text(9, "é", 2, logprob=-1.25, is_special=True),
        ],
        sequence_id=5,
        is_final=True,
    )
    batch.set_metadata("not", "encoded")
    raw = batch.encode()
    assert raw[:7] == bytes.fromhex("03 00 00 00 05 00 02")
    back = quill.TokenBatch.decode(raw)
    assert back.tokens == batch.tokens
    assert back.sequence_id == 5 and back.is_final and back.metadata == {}
    assert quill.TokenBatch.decode(bytearray(raw)).tokens == batch.tokens
    assert quill.TokenBatch.decode(memoryview(raw)).tokens == batch.tokens
    empty = quill.TokenBatch()
    assert empty.is_empty() and empty.sequence_id is None
    assert empty.encode() == bytes.fromhex("00 00 00")


def test_eos_and_prob() -> None:
    eos = quill.Token(id=2, position=9, text="</s>", logprob=0.0, is_special=True)
    assert eos.is_eos() and eos.prob() == 1.0
    assert not quill.Token(id=2, position=9, text="</s>").is_eos()
    assert math.isclose(quill.Token(id=1, logprob=-0.1).logprob or 0, -0.1)
    assert repr(quill.Token(id=1, position=2, text="a")) == (
        "Token(id=1, position=2, text='a', logprob=None, is_special=False)"
    )
    assert quill.Token.from_dict(eos.to_dict()) == eos


def test_iteration_is_over_a_snapshot() -> None:
    batch = quill.TokenBatch.from_tokens([quill.Token(id=i) for i in range(3)])
    seen = []
    for t in batch:
        seen.append(t.id)
        batch.add(quill.Token(id=99))
    assert seen == [0, 1, 2] and len(batch) == 6
