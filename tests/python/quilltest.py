"""Test helpers: start the real bundled Quill server as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# The repository (for examples/ and builds); scripts/check-wheel runs a copy of these
# tests outside the tree and points this back at it.
ROOT = Path(os.environ.get("QUILL_REPO_ROOT") or Path(__file__).resolve().parents[2])
TOKEN = "s3cret-test-token-7f1e"


def rss_mib() -> float:
    """This process's resident memory in MiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def server_binary() -> Path:
    """The quill-server binary: $QUILL_SERVER_BIN, or built on demand (debug)."""
    env = os.environ.get("QUILL_SERVER_BIN")
    if env:
        return Path(env)
    subprocess.run(
        ["cargo", "build", "--quiet", "--features", "server", "--bin", "quill-server"],
        cwd=ROOT,
        check=True,
    )
    return ROOT / "target" / "debug" / "quill-server"


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]
    #: The certificate to trust, for a server started with --tls-self-signed.
    ca_cert: bytes | None = None


def start_server(*args: str) -> Server:
    proc = subprocess.Popen(
        [str(server_binary()), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"quill-server did not start: {line!r}")
    return Server(url=line.removeprefix("listening on "), process=proc)
