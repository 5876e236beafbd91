"""The typed quill.inference.v1 API: a generate stream printed as it arrives with its
timing line, an embedding as a numpy array, and a two-turn chat."""

from __future__ import annotations

import os
import sys

import numpy as np

import quill


def main() -> None:
    client = quill.QuillClient(os.environ.get("QUILL_URL", "http://localhost:8080"))
    prompt = [101, 2023, 2003]

    stream = client.generate(prompt, max_new_tokens=48, temperature=0.7)
    for response in stream:
        sys.stdout.write(response.tokens.text())
        sys.stdout.flush()
        if response.is_complete:
            print(f"\n[{response.total_generated} tokens, finish_reason={response.finish_reason}]")
    t = stream.timing
    assert t is not None and t.time_to_first_token_ms is not None
    print(
        f"timing: TTFT {t.time_to_first_token_ms:.2f} ms, "
        f"inter-token p50 {t.inter_token_p50_ms or 0:.3f} ms"
        f" / p99 {t.inter_token_p99_ms or 0:.3f} ms, "
        f"{t.tokens_per_second or 0:,.0f} tokens/s over {t.tokens} tokens"
    )

    (embedding,) = client.embed(prompt, pool=True)
    vector = np.asarray(embedding)  # zero-copy view of the response bytes
    print(
        f"embedding: {embedding.name} {vector.shape} {vector.dtype},"
        f" norm {np.linalg.norm(vector):.3f}"
    )

    turns: list[quill.GenerateRequest | dict[str, object]] = [
        quill.GenerateRequest(prompt, max_new_tokens=6, temperature=0.0),
        {"input_ids": [7, 8], "max_new_tokens": 6, "temperature": 0.0},
    ]
    for response in client.chat(turns):
        if response.is_complete:
            print(
                f"chat turn {response.tokens.sequence_id}: done ({response.total_generated} tokens)"
            )


if __name__ == "__main__":
    main()
