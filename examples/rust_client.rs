//! Using `quill` as a Rust crate: tensors, tokens, a unary JSON call, a token stream and
//! a tensor download against a running Quill server.
//!
//! `cargo run --example rust_client -- http://127.0.0.1:PORT` (scripts/test runs it
//! against the bundled server).

use quill::{ClientConfig, DType, QuillClient, Tensor, Token, TokenBatch};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());

    // Tensors: bytes + shape + dtype, encoded as tensor frames and back.
    let t = Tensor::from_bytes(&[0u8; 24], vec![2, 3], DType::Float32, Some("x".into()))?;
    let back = Tensor::decode(&t.encode())?;
    assert_eq!(back, t);
    println!(
        "tensor {:?} round-tripped through {} bytes",
        back.shape(),
        t.encode().len()
    );

    // Tokens: the binary encoding of protocol §8.
    let batch = TokenBatch {
        tokens: vec![
            Token::with_text(1, "Hello", 0, Some(-0.5)),
            Token::with_text(2, " world", 1, None),
        ],
        sequence_id: Some(1),
        is_final: true,
        ..Default::default()
    };
    let decoded = TokenBatch::decode(&batch.encode()?)?;
    println!("token batch: {:?}", decoded.text());

    // The client: runtime and connection pools built once, shared by every call.
    let mut config = ClientConfig::new(url);
    config.timeout_ms = 10_000;
    let client = QuillClient::with_config(config)?;
    // A blocking call: this thread drives it itself.
    let request = br#"{"prompt": "Alice", "max_tokens": 8, "seed": 1}"#.to_vec();
    let reply = client.call_json_bytes_blocking(
        "inference.v1.LLMService",
        "Generate",
        request.clone().into(),
        false,
    )?;
    let reply: serde_json::Value = serde_json::from_slice(&reply)?;
    println!("generated: {}", reply["text"]);

    // A token stream, decoded incrementally as the server produces it; streams are
    // futures, run here with block_on.
    let stream = client.block_on(client.open_token_stream(
        "inference.v1.LLMService",
        "GenerateStream",
        request.into(),
        true,
    ))?;
    let mut streamed = String::new();
    while let Some(batch) = client.block_on(stream.next_batch())? {
        streamed.push_str(&batch.text());
    }
    assert_eq!(serde_json::Value::String(streamed.clone()), reply["text"]);
    println!("streamed:  {streamed:?}");

    // A tensor as a response body.
    let t = client.call_tensor_blocking(
        "tensor.v1.TensorService",
        "Download",
        br#"{"shape": [4, 4], "dtype": "uint8"}"#.to_vec().into(),
        true,
    )?;
    println!(
        "downloaded tensor {:?} {:?}: {:?}",
        t.shape(),
        t.dtype(),
        &t.data()[..8]
    );
    Ok(())
}
