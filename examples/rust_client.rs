//! Using `quill` as a Rust crate: tensors, tokens, a unary JSON call, a token stream and
//! a tensor download against a running Quill server.
//!
//! `cargo run --example rust_client -- http://127.0.0.1:PORT` (scripts/test runs it
//! against the bundled server).

use quill::client::{Call, Reply, TokenStream};
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
    // One way to describe a call (`Call`), one way to run it: `run_blocking` drives it
    // on this thread, `run` is the async twin; the type asked for picks the answer.
    let request = r#"{"prompt": "Alice", "max_tokens": 8, "seed": 1}"#;
    let reply: Reply =
        client.run_blocking(Call::json("inference.v1.LLMService", "Generate", request))?;
    let reply: serde_json::Value = serde_json::from_slice(&reply.body)?;
    println!("generated: {}", reply["text"]);

    // A token stream, decoded incrementally as the server produces it; streams are
    // futures, run here with block_on.
    let call = Call::json("inference.v1.LLMService", "GenerateStream", request);
    let stream: TokenStream = client.block_on(client.run(call))?;
    let mut streamed = String::new();
    while let Some(batch) = client.block_on(stream.next_batch())? {
        streamed.push_str(&batch.text());
    }
    assert_eq!(serde_json::Value::String(streamed.clone()), reply["text"]);
    println!("streamed:  {streamed:?}");

    // A tensor as a response body.
    let download = r#"{"shape": [4, 4], "dtype": "uint8"}"#;
    let t: Tensor =
        client.run_blocking(Call::json("tensor.v1.TensorService", "Download", download))?;
    println!(
        "downloaded tensor {:?} {:?}: {:?}",
        t.shape(),
        t.dtype(),
        &t.data()[..8]
    );
    Ok(())
}
