"""Every argument fails with a quill error naming it: integers out of range are
`OutOfRangeError`, `str` arguments that cannot be UTF-8 (a lone surrogate) are
`InvalidArgumentError`; neither carries the value when it may be a secret."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import quill

# Nothing listens on port 1: a call that gets past its arguments fails to connect.
URL = "http://127.0.0.1:1"
LONE = "\ud800"
SECRET = "sk-live-7f3e9a1c"


def closed_client() -> quill.QuillClient:
    return quill.QuillClient(URL, timeout_ms=2000)


def raises(call: Callable[[], object], cls: type[BaseException]) -> BaseException:
    with pytest.raises(cls) as info:
        result = call()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            asyncio.run(result)  # type: ignore[arg-type]
    return info.value


c = closed_client()
batch = quill.TokenBatch()

INTEGERS: list[tuple[str, Callable[[Any], object]]] = [
    ("timeout_ms", lambda v: quill.QuillClient(URL, timeout_ms=v)),
    ("max_decoded_size", lambda v: quill.QuillClient(URL, max_decoded_size=v)),
    ("idle_timeout_ms", lambda v: quill.QuillClient(URL, idle_timeout_ms=v)),
    ("max_retries", lambda v: quill.QuillClient(URL, max_retries=v)),
    ("max_connections", lambda v: quill.QuillClient(URL, max_connections=v)),
    (
        "http2_keep_alive_interval_ms",
        lambda v: quill.QuillClient(URL, http2_keep_alive_interval_ms=v),
    ),
    (
        "http2_keep_alive_timeout_ms",
        lambda v: quill.QuillClient(URL, http2_keep_alive_timeout_ms=v),
    ),
    ("http2_stream_window", lambda v: quill.QuillClient(URL, http2_stream_window=v)),
    ("http2_connection_window", lambda v: quill.QuillClient(URL, http2_connection_window=v)),
    ("timeout_ms", lambda v: quill.QuillClient.from_config({"base_url": URL, "timeout_ms": v})),
    ("max_retries", lambda v: quill.QuillClient.from_config({"base_url": URL, "max_retries": v})),
    ("timeout_ms", lambda v: c.call("s.S", "M", b"", timeout_ms=v)),
    ("timeout_ms", lambda v: c.call_json_async("s.S", "M", {}, timeout_ms=v)),
    ("timeout_ms", lambda v: c.stream("s.S", "M", timeout_ms=v)),
    ("layers[0]", lambda v: c.embed([1], layers=[v])),
    ("layers[1]", lambda v: c.embed_async([1], layers=[-1, v])),
    ("input_ids[0]", lambda v: c.embed([v])),
    ("input_ids[1]", lambda v: c.generate([1, v])),
    ("max_new_tokens", lambda v: c.generate([1], max_new_tokens=v)),
    ("top_k", lambda v: c.generate_async([1], top_k=v)),
    ("stop_token_ids[0]", lambda v: c.generate([1], stop_token_ids=[v])),
    ("timeout_ms", lambda v: c.chat([], timeout_ms=v)),
    ("max_new_tokens", lambda v: quill.GenerateRequest([1], max_new_tokens=v)),
    ("id", lambda v: quill.Token(v)),
    ("position", lambda v: quill.Token(1, v)),
    ("id", lambda v: quill.Token.from_dict({"id": v})),
    ("sequence_id", lambda v: quill.TokenBatch(v)),
    ("sequence_id", lambda v: setattr(batch, "sequence_id", v)),
    ("TokenBatch index", lambda v: quill.TokenBatch()[v]),
]


@pytest.mark.parametrize("value", [2**31, 2**64, 2**200, -(2**200)])
@pytest.mark.parametrize(
    ("name", "call"), INTEGERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(INTEGERS)]
)
def test_every_integer_argument_out_of_range_is_named(
    name: str, call: Callable[[Any], object], value: int
) -> None:
    if value == 2**31 and not name.startswith("layers"):
        value = 2**64  # in range for most: a u32 or u64 argument
    e = raises(lambda: call(value), quill.OutOfRangeError)
    assert isinstance(e, quill.InvalidArgumentError) and isinstance(e, OverflowError)
    assert name in str(e), str(e)


def test_layers_take_the_whole_int32_range() -> None:
    # Past the argument checks: the call itself fails (nothing listens).
    for layers in ([2**31 - 1], [-(2**31)], [-1, -2], []):
        raises(lambda layers=layers: c.embed([1], layers=layers), quill.QuillConnectionError)
    e = raises(lambda: c.embed([1], layers=[-(2**31) - 1]), quill.OutOfRangeError)
    assert "-2147483648..=2147483647" in str(e)
    raises(lambda: c.embed([1], layers=["x"]), TypeError)
    raises(lambda: c.embed([1], layers="-1"), TypeError)
    raises(lambda: c.embed([1], layers=np.array([-1, -2], np.int64)), quill.QuillConnectionError)


def test_an_unknown_wire_number_of_any_size_is_an_unsupported_dtype() -> None:
    for value in (0, 10, -1, 2**64, 2**200):
        e = raises(lambda v=value: quill.DType.from_wire_value(v), quill.UnsupportedDTypeError)
        assert "unknown dtype number" in str(e)
    assert quill.DType.from_wire_value(1) == quill.DType.float32()


def tensor() -> quill.Tensor:
    return quill.Tensor.zeros([2], quill.DType.uint8())


S = LONE
# (argument named in the message, call with a lone surrogate in that argument)
STRINGS: list[tuple[str, Callable[[], object]]] = [
    ("base_url", lambda: quill.QuillClient("http://h/" + S)),
    ("tls_server_name", lambda: quill.QuillClient(URL, tls_server_name=S)),
    ("user_agent", lambda: quill.QuillClient(URL, user_agent="ua" + S)),
    ("http_version", lambda: quill.QuillClient(URL, http_version=S)),
    ("base_url", lambda: quill.QuillClient.from_config({"base_url": S})),
    ("user_agent", lambda: quill.QuillClient.from_config({"base_url": URL, "user_agent": S})),
    ("http_version", lambda: quill.QuillClient.from_config({"base_url": URL, "http_version": S})),
    ("setting", lambda: quill.QuillClient.from_config({"base_url": URL, S: 1})),  # type: ignore[misc]
    (
        "header",
        lambda: quill.QuillClient.from_config(
            {"base_url": URL, "headers": [{"name": S, "value": "v", "secret": False}]}
        ),
    ),
    (
        "header X-Key",
        lambda: quill.QuillClient.from_config(
            {"base_url": URL, "headers": [{"name": "X-Key", "value": SECRET + S, "secret": True}]}
        ),
    ),
    ("token", lambda: c.set_bearer_token(SECRET + S)),
    ("key", lambda: c.set_api_key(SECRET + S)),
    ("header_name", lambda: c.set_api_key(SECRET, header_name=S)),
    ("name", lambda: c.set_header("X-" + S, "v")),
    ("value", lambda: c.set_header("X-Custom", SECRET + S)),
    ("name", lambda: c.remove_header(S)),
    ("service", lambda: c.call(S, "M", b"")),
    ("method", lambda: c.call("s.S", S, b"")),
    ("service", lambda: c.call_json(S, "M", {})),
    ("method", lambda: c.call_async("s.S", S)),
    ("method", lambda: c.call_json_async("s.S", S)),
    ("service", lambda: c.stream(S, "M")),
    ("method", lambda: c.stream_tokens("s.S", S)),
    ("service", lambda: c.stream_async(S, "M")),
    ("service", lambda: c.stream_tokens_async(S, "M")),
    ("method", lambda: c.bidi_stream("s.S", S, [])),
    ("method", lambda: c.client_stream("s.S", S, [])),
    ("service", lambda: c.send_tensor(S, "M", tensor())),
    ("service", lambda: c.call_tensor(S, "M")),
    ("a str request", lambda: c.call_json("s.S", "M", S)),
    ("header X-Custom", lambda: c.call("s.S", "M", b"", headers={"X-Custom": SECRET + S})),
    ("header name", lambda: c.call("s.S", "M", b"", headers=[(S, "v")])),
    ("header X-Custom", lambda: c.generate([1], headers={"X-Custom": SECRET + S})),
    ("pool_strategy", lambda: c.embed([1], pool_strategy=S)),
    ("pool_strategy", lambda: c.embed_async([1], pool_strategy=S)),
    ("name", lambda: quill.Tensor.zeros([1], quill.DType.uint8(), name=S)),
    ("name", lambda: quill.Tensor.from_numpy(np.zeros(2), name=S)),
    ("name", lambda: quill.Tensor.from_bytes(b"ab", [2], quill.DType.uint8(), name=S)),
    ("name", lambda: quill.Tensor.from_dlpack(np.zeros(2), name=S)),
    ("name", lambda: tensor().with_name(S)),
    ("name", lambda: quill.TensorMeta([1], quill.DType.uint8(), name=S)),
    ("name", lambda: quill.DType.from_name(S)),
    ("text", lambda: quill.Token(1, text=S)),
    ("text", lambda: quill.Token.with_text(1, S)),
    ("text", lambda: quill.Token.from_dict({"id": 1, "text": S})),
    ("key", lambda: quill.TokenBatch().set_metadata(S, "v")),
    ("value", lambda: quill.TokenBatch().set_metadata("k", S)),
    ("key", lambda: quill.TokenBatch().get_metadata(S)),
    ("default", lambda: quill.TokenBatch().get_metadata("k", S)),
]


@pytest.mark.parametrize(
    ("name", "call"), STRINGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(STRINGS)]
)
def test_every_str_argument_with_a_lone_surrogate_is_invalid(
    name: str, call: Callable[[], object]
) -> None:
    e = raises(call, quill.InvalidArgumentError)
    assert isinstance(e, ValueError) and not isinstance(e, UnicodeError)
    assert name in str(e) and "lone surrogate" in str(e), str(e)
    # Nothing of the value travels with the error: not the text, not a cause.
    assert e.__cause__ is None and e.__context__ is None
    seen = [str(e), repr(e), repr(e.args), repr(vars(e)), repr(pickle.dumps(e))]
    assert not any(SECRET in s or "\\ud800" in s or LONE in s for s in seen), seen


def test_the_key_of_a_failed_set_api_key_is_nowhere_in_the_error() -> None:
    client = closed_client()
    try:
        client.set_api_key(SECRET + LONE)
    except quill.InvalidArgumentError as e:
        err = e
    else:
        pytest.fail("no error")
    attrs = {k: getattr(err, k) for k in dir(err) if not k.startswith("__")}
    assert not any(SECRET in repr(v) for v in attrs.values()), attrs
    assert not hasattr(err, "object")  # UnicodeEncodeError's copy of the whole string
    assert SECRET not in repr(pickle.loads(pickle.dumps(err)).args)
    # Nothing was set.
    assert client.get_headers() == {}


def test_text_arguments_of_the_wrong_type_are_type_errors() -> None:
    for call in (
        lambda: c.set_header(b"X-A", "v"),  # type: ignore[arg-type]
        lambda: c.set_api_key(123),  # type: ignore[arg-type]
        lambda: c.call_json(1, "M", {}),  # type: ignore[arg-type]
        lambda: quill.Tensor.zeros([1], quill.DType.uint8(), name=1),  # type: ignore[arg-type]
    ):
        e = raises(call, TypeError)
        assert "must be str" in str(e), str(e)
