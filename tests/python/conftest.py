"""Shared fixtures: one real bundled Quill server process per test session."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from quilltest import TOKEN, Server, start_server

import quill


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: soak and many-subprocess tests (scripts/check-wheel skips them)"
    )
    config.addinivalue_line(
        "markers", "ray: batch inference on a local Ray cluster (needs requirements-ray.txt)"
    )


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """The bundled server, started with a bearer token for the Auth route."""
    s = start_server("--token", TOKEN)
    yield s
    s.process.terminate()
    s.process.wait(timeout=10)
    if s.process.stdout is not None:
        s.process.stdout.close()


@pytest.fixture(scope="session")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The bundled server over TLS with a throwaway certificate (`server.ca_cert`):
    HTTPS on TCP and HTTP/3 on UDP, same port."""
    cert_dir = tmp_path_factory.mktemp("tls")
    s = start_server("--token", TOKEN, "--tls-self-signed", str(cert_dir))
    s.ca_cert = (cert_dir / "cert.pem").read_bytes()
    yield s
    s.process.terminate()
    s.process.wait(timeout=10)
    if s.process.stdout is not None:
        s.process.stdout.close()


@pytest.fixture(params=["http1", "http2", "http3"])
def client(server: Server, request: pytest.FixtureRequest) -> quill.QuillClient:
    """A client of the bundled server; every test using it runs over HTTP/1.1, over
    HTTP/2 (h2c) and over HTTP/3 (QUIC, against the TLS server)."""
    if request.param == "http3":
        tls: Server = request.getfixturevalue("tls_server")
        return quill.QuillClient(
            tls.url, timeout_ms=10_000, http_version="http3", ca_cert=tls.ca_cert
        )
    return quill.QuillClient(server.url, timeout_ms=10_000, http_version=request.param)


@pytest.fixture
def arr() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
