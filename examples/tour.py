"""A short tour of quill: a tensor round trip, a token batch, and a caught error."""

from __future__ import annotations

import numpy as np

import quill


def main() -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    tensor = quill.Tensor.from_numpy(arr, name="input")
    wire = tensor.encode()
    back = quill.Tensor.decode(wire)
    print(f"tensor: {tensor!r}, {len(wire)} bytes as tensor frames")
    print(f"round trip equal: {np.array_equal(back.to_numpy(), arr)}")
    print(f"zero-copy view: {np.asarray(back)[2].tolist()}")

    batch = quill.TokenBatch.from_tokens(
        [
            quill.Token.with_text(i, w, i, logprob=-0.1 * i)
            for i, w in enumerate(["Hello", ",", " world"])
        ],
        sequence_id=1,
        is_final=True,
    )
    encoded = batch.encode()
    print(f"token batch: {batch.text()!r} -> {encoded.hex()}")
    print(f"decoded ids: {quill.TokenBatch.decode(encoded).token_ids()}")

    try:
        quill.Tensor.from_bytes(bytes(10), [2, 3], quill.DType.float32())
    except ValueError as e:  # quill.InvalidArgumentError is also a ValueError
        print(f"caught {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
