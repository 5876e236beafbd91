//! The typed `quill.inference.v1` API for Kotlin and Swift: `generate`, `embed` and a
//! chat call object, over the core's `inference` module. The Kotlin and Swift extras
//! wrap `GenerateStream` into a `Flow` / `AsyncSequence`.

use std::sync::Arc;

use prost::Message;

use super::cancel::{unless_cancelled, CancelToken};
use super::request_stream::{request_methods, Requests};
use super::types::HeaderEntry;
use crate::client::{CallOptions, QuillClient};
use crate::error::Result;
use crate::inference::{
    EmbedRequest, GenerateRequest, GenerateResponse, GenerateStream, StreamTiming, SERVICE,
};
use crate::tensor::Tensor;
use crate::token::TokenBatch;

/// The responses of a `generate` or chat call, decoded, checked and timed.
#[uniffi::remote(Object)]
pub struct GenerateStream;

/// A chat: `send` generate requests as the conversation goes while reading
/// `responses()`, then `finish()` (or `abort`).
#[derive(uniffi::Object)]
pub struct ChatCall(Requests);

#[uniffi::export(async_runtime = "tokio")]
impl QuillClient {
    /// `quill.inference.v1.InferenceService/Generate`: a stream of responses, timed
    /// from now; `headers` go on this call only.
    #[uniffi::method(name = "generate", default(headers = [], cancel = None))]
    async fn ffi_generate(
        &self,
        request: GenerateRequest,
        headers: Vec<HeaderEntry>,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<Arc<GenerateStream>> {
        unless_cancelled(cancel, self.generate(&request, with_headers(headers)))
            .await
            .map(Arc::new)
    }

    /// `quill.inference.v1.InferenceService/Embed`: one tensor per layer asked for;
    /// `headers` go on this call only.
    #[uniffi::method(name = "embed", default(headers = [], cancel = None))]
    async fn ffi_embed(
        &self,
        request: EmbedRequest,
        headers: Vec<HeaderEntry>,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<Vec<Arc<Tensor>>> {
        let tensors = unless_cancelled(cancel, self.embed(&request, with_headers(headers))).await?;
        Ok(tensors.into_iter().map(Arc::new).collect())
    }

    /// A chat call (`quill.inference.v1.InferenceService/Chat`); nothing is sent before
    /// `responses()` is awaited.
    #[uniffi::method(name = "open_chat")]
    fn ffi_open_chat(self: Arc<Self>) -> Arc<ChatCall> {
        Arc::new(ChatCall(Requests::open(
            self,
            SERVICE.into(),
            "Chat".into(),
        )))
    }
}

fn with_headers(headers: Vec<HeaderEntry>) -> CallOptions {
    CallOptions {
        headers: headers.into_iter().map(|h| (h.name, h.value)).collect(),
        ..CallOptions::default()
    }
}

request_methods!(ChatCall, request: GenerateRequest, |r: GenerateRequest| r.encode_to_vec());

#[uniffi::export(async_runtime = "tokio")]
impl ChatCall {
    /// Starts the call and returns its response stream (once), timed from now.
    #[uniffi::method(default(cancel = None))]
    async fn responses(&self, cancel: Option<Arc<CancelToken>>) -> Result<Arc<GenerateStream>> {
        let (client, call) = self.0.start()?;
        unless_cancelled(cancel, client.typed_stream(call, true))
            .await
            .map(Arc::new)
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl GenerateStream {
    /// The next response, null after the stream ended complete.
    #[uniffi::method(name = "next")]
    async fn ffi_next(&self) -> Result<Option<GenerateResponse>> {
        self.next_response().await
    }

    /// The tokens of the next response, null after the end.
    #[uniffi::method(name = "next_batch")]
    async fn ffi_next_batch(&self) -> Result<Option<TokenBatch>> {
        self.next_batch().await
    }

    /// The text of every remaining token, once the stream ended complete.
    #[uniffi::method(name = "text")]
    async fn ffi_text(&self) -> Result<String> {
        self.text().await
    }

    /// Time to first token, inter-token p50/p99 and tokens/s so far.
    #[uniffi::method(name = "timing")]
    fn ffi_timing(&self) -> StreamTiming {
        self.timing()
    }

    /// Stops the call: the server sees the client go. Idempotent.
    #[uniffi::method(name = "cancel")]
    fn ffi_cancel(&self) {
        self.cancel();
    }
}
