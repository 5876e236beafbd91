"""Secrets never leak: every printed thing of a session that uses a token and an API key
in successful and failing calls, with quill's debug logging on, is grepped for them."""

from __future__ import annotations

import os
import subprocess
import sys

from quilltest import ROOT, TOKEN, Server

SCRIPT = r"""
import asyncio, json, logging, sys, quill
log = logging.StreamHandler(sys.stdout)
log.setFormatter(logging.Formatter(
    "%(levelname)s %(name)s %(message)s %(method)s %(status)s %(quill_event)s"
))
logging.getLogger("quill").addHandler(log)
logging.getLogger("quill").setLevel(logging.DEBUG)
url, token, key = sys.argv[1], sys.argv[2], sys.argv[3]
def show(x):
    print(repr(x)); print(str(x))
c = quill.QuillClient(url, timeout_ms=300)
c.set_bearer_token(token)
c.set_api_key(key)
c.set_api_key(key, header_name="X-Custom-Key")
show(c); show(c.get_headers())
print(c.call_json("test.v1.FaultService", "Auth", {}))
wrong = quill.QuillClient(url); wrong.set_bearer_token("x" + token)
for fn in (
    lambda: wrong.call("test.v1.FaultService", "Auth", b""),
    lambda: c.call_json("test.v1.FaultService", "Slow", {"ms": 2000}),
    lambda: c.call("echo.v1.EchoService", "Echo", b"", headers={"X-Api-Token": token}),
    lambda: c.call("echo.v1.EchoService", "Echo", b"", headers={"X-Bad": token + "\n"}),
    lambda: c.call_json("test.v1.FaultService", "Error", {"status": 500, "detail": "boom"}),
    lambda: list(c.stream("test.v1.FaultService", "StreamCut", {"messages": 1})),
    lambda: c.set_header("Authorization", token + "\r\nX: y"),
    lambda: c.set_bearer_token(token + "\n"),
    lambda: quill.QuillClient("http://127.0.0.1:1").call("a.B", "C", b""),
):
    try:
        fn()
    except Exception as e:
        show(e); show(e.args); show(getattr(e, "problem", None)); show(getattr(e, "body", None))
async def main():
    try:
        await c.call_json_async("test.v1.FaultService", "Slow", {"ms": 2000})
    except Exception as e:
        show(e)
asyncio.run(main())
print("done")
"""


def test_token_and_api_key_never_appear_in_any_output(server: Server) -> None:
    key = "apikey-9c1d4e7f"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, server.url, TOKEN, key],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "RUST_LOG": "trace", "RUST_BACKTRACE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert out.rstrip().endswith("done")
    assert "{'ok': True}" in out  # the token really was used
    assert TOKEN not in out
    assert key not in out
    assert "<redacted>" in out
    # Logging was on, so the calls above were logged (and nothing of them leaked).
    assert "DEBUG quill POST echo.v1.EchoService/Echo -> 200" in out, out
    assert "WARNING quill timed out" in out, out
