//! `QuillClient` and its streams for Kotlin and Swift. Every async method is a uniffi
//! future (Kotlin `suspend`, Swift `async`); the call itself runs on the client's own
//! runtime, whatever executor polls it. Each call takes an optional `CancelToken`
//! (`cancel.rs`), which the Swift extras fire on `Task` cancellation.

use std::sync::Arc;

use super::cancel::{unless_cancelled, CancelToken};
use super::types::HeaderEntry;
use crate::client::{Body, Call, ClientConfig, MessageStream, QuillClient, Reply, TokenStream};
use crate::error::{QuillError, Result};
use crate::tensor::Tensor;
use crate::token::TokenBatch;

/// A client of one Quill server; share it between coroutines and tasks.
#[uniffi::remote(Object)]
pub struct QuillClient;

/// A server-streaming call's messages.
#[uniffi::remote(Object)]
pub struct MessageStream;

/// A server stream of token batches.
#[uniffi::remote(Object)]
pub struct TokenStream;

#[uniffi::export(async_runtime = "tokio")]
impl QuillClient {
    /// A client of `base_url` with a whole-call timeout (0 = none) and optional zstd
    /// compression; other settings take their defaults.
    #[uniffi::constructor(name = "new", default(timeout_ms = 30000, enable_compression = false))]
    fn ffi_new(base_url: String, timeout_ms: u64, enable_compression: bool) -> Result<Arc<Self>> {
        let mut config = ClientConfig::new(base_url);
        config.timeout_ms = timeout_ms;
        config.enable_compression = enable_compression;
        QuillClient::with_config(config).map(Arc::new)
    }

    /// A client with every setting of `config`.
    #[uniffi::constructor(name = "from_config")]
    fn ffi_from_config(config: ClientConfig) -> Result<Arc<Self>> {
        QuillClient::with_config(config).map(Arc::new)
    }

    /// Sets `Authorization: Bearer <token>`.
    #[uniffi::method(name = "set_bearer_token")]
    fn ffi_set_bearer_token(&self, token: &str) -> Result<()> {
        self.set_bearer_token(token)
    }

    /// Sets an API key under `header_name` (default `X-API-Key`); other headers stay.
    #[uniffi::method(name = "set_api_key", default(header_name = None))]
    fn ffi_set_api_key(&self, key: &str, header_name: Option<String>) -> Result<()> {
        self.set_api_key(key, header_name.as_deref())
    }

    /// Sets a header sent on every call; CR/LF and reserved names are refused.
    #[uniffi::method(name = "set_header")]
    fn ffi_set_header(&self, name: &str, value: &str) -> Result<()> {
        self.set_header(name, value)
    }

    /// `set_header` for a value that must always be redacted.
    #[uniffi::method(name = "set_secret_header")]
    fn ffi_set_secret_header(&self, name: &str, value: &str) -> Result<()> {
        self.set_secret_header(name, value)
    }

    /// Removes a configured header (any case); whether it was set.
    #[uniffi::method(name = "remove_header")]
    fn ffi_remove_header(&self, name: &str) -> bool {
        self.remove_header(name)
    }

    /// The configured headers in insertion order, secret values as `<redacted>`.
    #[uniffi::method(name = "headers")]
    fn ffi_headers(&self) -> Vec<HeaderEntry> {
        self.headers()
            .into_iter()
            .map(|(name, value)| HeaderEntry { name, value })
            .collect()
    }

    /// The base URL as it is sent (no trailing `/`).
    #[uniffi::method(name = "base_url")]
    fn ffi_base_url(&self) -> String {
        self.base_url()
    }

    #[uniffi::method(name = "timeout_ms")]
    fn ffi_timeout_ms(&self) -> u64 {
        self.timeout_ms()
    }

    #[uniffi::method(name = "compression_enabled")]
    fn ffi_compression_enabled(&self) -> bool {
        self.compression_enabled()
    }

    /// The transport profile the server last named in `Selected-Prism` (`"classic"`,
    /// `"turbo"`, `"hyper"`), or null until one does.
    #[uniffi::method(name = "selected_prism")]
    fn ffi_selected_prism(&self) -> Option<String> {
        self.selected_prism()
    }

    /// Moves the HTTP/3 connection to a new local UDP socket after a network change
    /// (Android `ConnectivityManager.NetworkCallback`, Apple `NWPathMonitor`); open
    /// streams continue. False when there is nothing to move (not HTTP/3 or no call yet).
    #[uniffi::method(name = "rebind")]
    fn ffi_rebind(&self) -> Result<bool, QuillError> {
        self.rebind()
    }

    /// Tasks alive on the client's runtime (calls, stream readers, one per open
    /// connection): a leak check for cancellation.
    #[uniffi::method(name = "live_tasks")]
    fn ffi_live_tasks(&self) -> u64 {
        self.live_tasks() as u64
    }

    /// A copy of the configuration.
    #[uniffi::method(name = "config")]
    fn ffi_config(&self) -> ClientConfig {
        self.config()
    }

    /// A unary `application/proto` call: raw message in, raw message out.
    #[uniffi::method(name = "call", default(idempotent = false, cancel = None))]
    async fn ffi_call(
        &self,
        service: String,
        method: String,
        body: Vec<u8>,
        idempotent: bool,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<Vec<u8>> {
        let call = Call::proto(service, method, body).idempotent(idempotent);
        let reply: Reply = unless_cancelled(cancel, self.run(call)).await?;
        Ok(Vec::from(reply.body))
    }

    /// `call` driven on the calling thread, which blocks until the reply: no future to
    /// poll, so the lowest latency (Swift: from a thread of your own or a
    /// `DispatchQueue`, never the cooperative pool of `Task`s; Kotlin: `callBlocking`
    /// of the extras, the JNI path, is faster still). Ends at the client's timeout.
    #[uniffi::method(name = "call_sync", default(idempotent = false))]
    fn ffi_call_sync(
        &self,
        service: String,
        method: String,
        body: Vec<u8>,
        idempotent: bool,
    ) -> Result<Vec<u8>> {
        let call = Call::proto(service, method, body).idempotent(idempotent);
        let reply: Reply = self.run_blocking(call)?;
        Ok(Vec::from(reply.body))
    }

    /// A unary JSON call; the response must be UTF-8.
    #[uniffi::method(name = "call_json", default(idempotent = false, cancel = None))]
    async fn ffi_call_json(
        &self,
        service: String,
        method: String,
        json: String,
        idempotent: bool,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<String> {
        let call = Call::json(service, method, json).idempotent(idempotent);
        let path = call.path();
        let reply: Reply = unless_cancelled(cancel, self.run(call)).await?;
        String::from_utf8(Vec::from(reply.body))
            .map_err(|e| QuillError::protocol(format!("JSON response of {path} is not UTF-8: {e}")))
    }

    /// Opens a server stream (JSON request when `content_type_json`).
    #[uniffi::method(name = "server_stream", default(content_type_json = false, cancel = None))]
    async fn ffi_server_stream(
        &self,
        service: String,
        method: String,
        body: Vec<u8>,
        content_type_json: bool,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<Arc<MessageStream>> {
        let call = Call::new(service, method, bytes_body(body, content_type_json));
        unless_cancelled(cancel, self.run(call)).await.map(Arc::new)
    }

    /// Opens a server stream of token batches.
    #[uniffi::method(name = "token_stream", default(content_type_json = false, cancel = None))]
    async fn ffi_token_stream(
        &self,
        service: String,
        method: String,
        body: Vec<u8>,
        content_type_json: bool,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<Arc<TokenStream>> {
        let call = Call::new(service, method, bytes_body(body, content_type_json));
        unless_cancelled(cancel, self.run(call)).await.map(Arc::new)
    }

    /// Uploads a tensor as tensor frames (its bytes are not copied); the raw reply.
    #[uniffi::method(name = "send_tensor", default(cancel = None))]
    async fn ffi_send_tensor(
        &self,
        service: String,
        method: String,
        tensor: Arc<Tensor>,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<Vec<u8>> {
        let call = Call::tensor(service, method, Tensor::clone(&tensor));
        let reply: Reply = unless_cancelled(cancel, self.run(call)).await?;
        Ok(Vec::from(reply.body))
    }

    /// A call answered with one tensor in tensor frames.
    #[uniffi::method(name = "call_tensor", default(content_type_json = false, cancel = None))]
    async fn ffi_call_tensor(
        &self,
        service: String,
        method: String,
        body: Vec<u8>,
        content_type_json: bool,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<Arc<Tensor>> {
        let call = Call::new(service, method, bytes_body(body, content_type_json));
        unless_cancelled(cancel, self.run(call)).await.map(Arc::new)
    }
}

/// The foreign API's `(bytes, content_type_json)` pair as a call body.
fn bytes_body(body: Vec<u8>, json: bool) -> Body {
    if json {
        Body::Json(body.into())
    } else {
        Body::Proto(body.into())
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl MessageStream {
    /// The next message, `None` after END_STREAM.
    #[uniffi::method(name = "next")]
    async fn ffi_next(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.next_message().await?.map(Vec::from))
    }

    /// Stops the stream: the connection is closed, so the server sees the client go.
    /// Idempotent; a stream that already ended keeps its outcome.
    #[uniffi::method(name = "cancel")]
    fn ffi_cancel(&self) {
        self.cancel();
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl TokenStream {
    /// The next batch, `None` after END_STREAM.
    #[uniffi::method(name = "next")]
    async fn ffi_next(&self) -> Result<Option<TokenBatch>> {
        self.next_batch().await
    }

    /// Stops the stream; see `MessageStream.cancel`.
    #[uniffi::method(name = "cancel")]
    fn ffi_cancel(&self) {
        self.messages().cancel();
    }
}
