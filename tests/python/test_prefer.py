"""The `Prefer` header names exactly the transport profiles a client will speak
(docs/python.md, protocol.md §1), pinned per `http_version` and scheme."""

from __future__ import annotations

import pytest
from quilltest import Server

import quill

CASES = [
    # (http_version, over TLS, Prefer sent on the first call, profile that served it)
    ("auto", False, "prism=classic", "classic"),
    ("http1", False, "prism=classic", "classic"),
    ("http2", False, "prism=turbo", "turbo"),
    ("http1", True, "prism=classic", "classic"),
    ("http2", True, "prism=turbo", "turbo"),
    ("auto", True, "prism=turbo, classic", "turbo"),
    ("http3", True, "prism=hyper", "hyper"),
]


@pytest.mark.parametrize(("version", "tls", "prefer", "served"), CASES)
def test_prefer_names_the_profiles_spoken(
    request: pytest.FixtureRequest, version: str, tls: bool, prefer: str, served: str
) -> None:
    server: Server = request.getfixturevalue("tls_server" if tls else "server")
    client = quill.QuillClient(
        server.url, timeout_ms=10_000, http_version=version, ca_cert=server.ca_cert
    )
    seen = client.call_json("echo.v1.EchoService", "Headers", {})
    assert seen["prefer"] == prefer
    assert client.selected_prism == served
