//! Client-streaming and bidirectional calls for Kotlin and Swift: an object that sends
//! the request messages (with backpressure) and starts the call when its answer is
//! awaited. The Kotlin and Swift extras turn a `Flow` / `AsyncSequence` of requests into
//! `send` calls on one coroutine or task while the answer is read on another.
//!
//! The call starts on the first `responses()` / `response()`: a server may wait for the
//! first request message before it answers, so the sender must be usable before the
//! call's response headers arrive.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::cancel::{unless_cancelled, CancelToken};
use crate::client::{request_stream, Call, MessageStream, QuillClient, Reply, RequestSender};
use crate::error::{QuillError, Result};

/// Messages not yet written to the socket before `send` waits (the request's
/// backpressure), as in the Python face.
const QUEUE: usize = 16;

/// The request side shared by both objects: the sender until `finish`/`abort`, the call
/// until it is started.
pub(super) struct Requests {
    sender: Mutex<Option<RequestSender>>,
    call: Mutex<Option<(Arc<QuillClient>, Call)>>,
}

impl Requests {
    pub(super) fn open(client: Arc<QuillClient>, service: String, method: String) -> Requests {
        let (tx, rx) = request_stream(QUEUE);
        Requests {
            sender: Mutex::new(Some(tx)),
            call: Mutex::new(Some((client, Call::messages(service, method, rx)))),
        }
    }

    fn taken() -> QuillError {
        QuillError::Cancelled {
            reason: "the request stream was already finished or aborted".into(),
        }
    }

    pub(super) async fn send(&self, message: Vec<u8>) -> Result<()> {
        // The lock is never held across an await: the queue handle waits on its own.
        let queue = match &*self.sender.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(sender) => sender.queue()?,
            None => return Err(Self::taken()),
        };
        queue.send(Bytes::from(message)).await
    }

    /// Ends the request stream with END_STREAM after the queued messages.
    pub(super) async fn finish(&self) -> Result<()> {
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
        match sender {
            Some(sender) => sender.finish().await,
            None => Ok(()),
        }
    }

    pub(super) fn abort(&self, reason: String) {
        if let Some(sender) = self.sender.lock().unwrap_or_else(|p| p.into_inner()).take() {
            sender.abort(reason);
        }
    }

    pub(super) fn start(&self) -> Result<(Arc<QuillClient>, Call)> {
        self.call
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| QuillError::invalid("this call was already started"))
    }
}

/// A bidirectional streaming call: `send` request messages while reading the
/// `responses()` stream (full duplex), then `finish()` (or `abort`).
#[derive(uniffi::Object)]
pub struct BidiCall(Requests);

/// A client-streaming call: `send` request messages, `finish()`, and await the one
/// `response()` (which starts the call; await it while sending).
#[derive(uniffi::Object)]
pub struct ClientStreamCall(Requests);

#[uniffi::export]
impl QuillClient {
    /// A bidirectional streaming call of `service/method`; nothing is sent before
    /// `responses()` is awaited.
    #[uniffi::method(name = "open_bidi")]
    fn ffi_open_bidi(self: Arc<Self>, service: String, method: String) -> Arc<BidiCall> {
        Arc::new(BidiCall(Requests::open(self, service, method)))
    }

    /// A client-streaming call of `service/method`; nothing is sent before
    /// `response()` is awaited.
    #[uniffi::method(name = "open_client_stream")]
    fn ffi_open_client_stream(
        self: Arc<Self>,
        service: String,
        method: String,
    ) -> Arc<ClientStreamCall> {
        Arc::new(ClientStreamCall(Requests::open(self, service, method)))
    }
}

/// The request side every streaming call object exports: `send` (its argument `$arg` a
/// `$message`, made a request message by `$encode`), `finish` and `abort`.
macro_rules! request_methods {
    ($object:ty, $arg:ident: $message:ty, $encode:expr) => {
        #[uniffi::export(async_runtime = "tokio")]
        impl $object {
            /// Queues one request, waiting while 16 are queued (backpressure).
            async fn send(&self, $arg: $message) -> Result<()> {
                self.0.send(($encode)($arg)).await
            }

            /// Ends the request stream (END_STREAM after the queued requests).
            /// Idempotent.
            async fn finish(&self) -> Result<()> {
                self.0.finish().await
            }

            /// Breaks the request stream off: the server sees a truncated stream and the
            /// call fails with `Cancelled` giving `reason`.
            fn abort(&self, reason: String) {
                self.0.abort(reason)
            }
        }
    };
}
pub(super) use request_methods;

request_methods!(BidiCall, message: Vec<u8>, std::convert::identity);
request_methods!(ClientStreamCall, message: Vec<u8>, std::convert::identity);

#[uniffi::export(async_runtime = "tokio")]
impl BidiCall {
    /// Starts the call and returns its response stream (once).
    #[uniffi::method(default(cancel = None))]
    async fn responses(&self, cancel: Option<Arc<CancelToken>>) -> Result<Arc<MessageStream>> {
        let (client, call) = self.0.start()?;
        unless_cancelled(cancel, client.run::<MessageStream>(call))
            .await
            .map(Arc::new)
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl ClientStreamCall {
    /// Starts the call and waits for its one reply (once).
    #[uniffi::method(default(cancel = None))]
    async fn response(&self, cancel: Option<Arc<CancelToken>>) -> Result<Vec<u8>> {
        let (client, call) = self.0.start()?;
        let reply: Reply = unless_cancelled(cancel, client.run(call)).await?;
        Ok(Vec::from(reply.body))
    }
}
