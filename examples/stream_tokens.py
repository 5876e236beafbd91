"""Tokens printed as the server generates them (server streaming of TokenBatches)."""

from __future__ import annotations

import os
import sys
import time

import quill


def main() -> None:
    client = quill.QuillClient(os.environ.get("QUILL_URL", "http://localhost:8080"))
    request = {"prompt": "Alice", "max_tokens": 40, "delay_ms": 40, "batch_size": 2, "seed": 3}
    t0 = time.monotonic()
    first = None
    with client.stream_tokens("inference.v1.LLMService", "GenerateStream", request) as stream:
        for batch in stream:
            if first is None:
                first = time.monotonic() - t0
            sys.stdout.write(batch.text())
            sys.stdout.flush()
    total = time.monotonic() - t0
    print(f"\n(first tokens after {first or 0:.3f} s, all 40 after {total:.3f} s)")


if __name__ == "__main__":
    main()
