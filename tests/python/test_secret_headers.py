"""Secret headers: names that carry credentials are recognised by the core's one
pattern, `set_secret_header` marks any header secret, and a secret value is sent but
never shown (get_headers, repr, pickles, to_config, errors)."""

from __future__ import annotations

import copy
import pickle

import pytest
from quilltest import Server

import quill

CREDENTIAL_NAMES = [
    "Ocp-Apim-Subscription-Key",
    "x-functions-key",
    "X-Access-Key",
    "X-Key",
    "X-API-Key",
    "X-Amz-Security-Token",
    "X-Client-Secret",
    "X-Hub-Signature-256",
    "Cookie",
]


def shown(client: quill.QuillClient) -> str:
    """Everything a client shows without being asked for its secrets."""
    return " ".join(
        [
            repr(client),
            str(client.get_headers()),
            repr(client.to_config()),
            repr(pickle.dumps(client)),
            repr(pickle.loads(pickle.dumps(client)).get_headers()),
        ]
    )


@pytest.mark.parametrize("name", CREDENTIAL_NAMES)
def test_credential_header_names_are_secret(server: Server, name: str) -> None:
    value = f"v-{name.lower()}-9d2e"
    client = quill.QuillClient(server.url, timeout_ms=10_000)
    client.set_header(name, value)
    client.set_header("X-Request-ID", "r-1")
    assert client.get_headers() == {name: "<redacted>", "X-Request-ID": "r-1"}
    assert value not in shown(client)
    # Still sent as given.
    seen = client.call_json("echo.v1.EchoService", "Headers", {})
    assert seen[name.lower()] == value and seen["x-request-id"] == "r-1"
    # Only the explicit way carries it, flagged secret.
    full = client.to_config(include_secrets=True)
    assert {"name": name, "value": value, "secret": True} in full["headers"]
    assert quill.QuillClient.from_config(full).get_headers()[name] == "<redacted>"


def test_set_secret_header_marks_any_name_secret(server: Server) -> None:
    value = "opaque-7c41"
    client = quill.QuillClient(server.url, timeout_ms=10_000)
    client.set_secret_header("X-Tenant", value)
    assert client.get_headers() == {"X-Tenant": "<redacted>"}
    assert value not in shown(client)
    assert client.call_json("echo.v1.EchoService", "Headers", {})["x-tenant"] == value
    # Overwritten with set_header it stays secret; a copy keeps it, secret.
    client.set_header("x-tenant", value + "-2")
    assert client.get_headers() == {"x-tenant": "<redacted>"}
    dup = copy.copy(client)
    assert dup.get_headers() == {"x-tenant": "<redacted>"}
    assert dup.call_json("echo.v1.EchoService", "Headers", {})["x-tenant"] == value + "-2"
    # Rebuilt from an explicit config, still secret.
    full = client.to_config(include_secrets=True)
    assert full["headers"] == [{"name": "x-tenant", "value": value + "-2", "secret": True}]
    assert client.to_config()["headers"] == []
    assert client.remove_header("X-TENANT") and client.get_headers() == {}


def test_a_bad_secret_header_is_refused_without_its_value() -> None:
    client = quill.QuillClient("http://127.0.0.1:1")
    value = "hunter2-secret"
    for bad in (value + "\r\nX-Injected: 1", value + "\x00", value + "é"):
        with pytest.raises(quill.InvalidArgumentError) as info:
            client.set_secret_header("X-Tenant", bad)
        e = info.value
        assert "X-Tenant" in str(e)
        assert value not in str(e) + repr(e.args) + repr(vars(e))
    for reserved in ("Content-Type", "Prefer", "Host"):
        with pytest.raises(quill.InvalidArgumentError, match="set by the client"):
            client.set_secret_header(reserved, value)
    assert client.get_headers() == {}
