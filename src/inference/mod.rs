//! The typed API of `quill.inference.v1.InferenceService` (protocol.md §9): `generate`
//! (a server stream of [`GenerateResponse`]s), `embed` (tensors) and `chat`
//! (bidirectional), with [`StreamTiming`] on every stream. The requests are the
//! protobuf messages themselves ([`GenerateRequest`], [`EmbedRequest`]); responses are
//! converted to the core types and checked. Each call is an ordinary [`Call`]
//! ([`generate_call`], [`embed_call`], [`chat_call`]) run by the client, so timeouts,
//! headers, compression, retries and cancellation work as for raw calls.
//!
//! ```no_run
//! # async fn demo(client: &quill::QuillClient) -> quill::Result<()> {
//! use quill::inference::GenerateRequest;
//! let request = GenerateRequest {
//!     input_ids: vec![101, 2023],
//!     max_new_tokens: Some(64),
//!     temperature: Some(0.7),
//!     ..Default::default()
//! };
//! let stream = client.generate(&request, Default::default()).await?;
//! while let Some(batch) = stream.next_batch().await? {
//!     print!("{}", batch.text());
//! }
//! let t = stream.timing();
//! println!("\nTTFT {:?} ms, {:?} tokens/s", t.time_to_first_token_ms, t.tokens_per_second);
//! # Ok(()) }
//! ```
//!
//! [`Call`]: crate::client::Call

mod calls;
mod response;
mod stream;
mod timing;

#[cfg(feature = "python")]
pub(crate) use calls::tracker_for;
pub use calls::{
    chat_call, chat_requests, embed_call, embeddings_from_reply, expected_embeddings,
    generate_call, ChatSender,
};
pub use response::GenerateResponse;
#[cfg(feature = "python")]
pub(crate) use response::GenerateTracker;
pub use stream::GenerateStream;
pub use timing::{StreamTimer, StreamTiming};

pub use crate::proto::inference::v1::{EmbedRequest, GenerateRequest};

/// The service's name in call paths.
pub const SERVICE: &str = "quill.inference.v1.InferenceService";
