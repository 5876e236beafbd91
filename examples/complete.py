"""The seed's Complete Example, pointed at a running Quill server.

The server URL comes from $QUILL_URL (scripts/demo sets it); otherwise the seed's
http://localhost:8080.
"""

import os

import numpy as np

import quill

URL = os.environ.get("QUILL_URL", "http://localhost:8080")

# Create input tensor
input_data = np.random.randn(1, 768).astype(np.float32)
input_tensor = quill.Tensor.from_numpy(input_data, name="embedding")

# Create client
client = quill.QuillClient(URL, timeout_ms=60000, enable_compression=True)
client.set_bearer_token("my-token")

# Make inference request
request = {
    "embedding": list(input_tensor.to_numpy().flatten()),
    "max_tokens": 50,
    "temperature": 0.7,
}

try:
    response = client.call_json("inference.v1.LLMService", "Generate", request)

    # Process token response
    for token_data in response.get("tokens", []):
        print(token_data.get("text", ""), end="")
    print()

except Exception as e:
    print(f"Error: {e}")
