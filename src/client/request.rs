//! The one way to describe a call: [`Call`] = where it goes, what it sends ([`Body`])
//! and how ([`CallOptions`]). Every face builds one and hands it to
//! [`QuillClient::run`](super::QuillClient::run) or
//! [`run_blocking`](super::QuillClient::run_blocking).

use std::mem::ManuallyDrop;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::call::ContentKind;
use crate::error::{QuillError, Result};
use crate::fork::{inherited, Mark};
use crate::protocol::MAX_TIMEOUT_MS;
use crate::tensor::Tensor;

/// What a call sends.
#[derive(Debug)]
pub enum Body {
    /// A binary message (`Content-Type: application/proto`), zstd-compressed when the
    /// client's compression is on and it is at least 1 KiB.
    Proto(Bytes),
    /// JSON text (`Content-Type: application/json`), compressed as `Proto`.
    Json(Bytes),
    /// A tensor as tensor frames, streamed from slices of its own buffer (never
    /// copied, never compressed).
    Tensor(Tensor),
    /// Request messages framed as they are sent: client and bidirectional streaming.
    Messages(RequestStream),
}

impl Body {
    pub(crate) fn content_kind(&self) -> ContentKind {
        match self {
            Body::Json(_) => ContentKind::Json,
            _ => ContentKind::Proto,
        }
    }
}

/// Per-call settings; each field left unset takes the client's configuration.
///
/// The place later per-call settings join (headers, cancellation, HTTP version), so it
/// is built with [`Default`] and the [`Call`] builder methods, never by listing fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallOptions {
    /// The call may be repeated after a transport error or a 408/425/429/5xx answer, up
    /// to the client's `max_retries` (only calls whose body can be sent again).
    pub idempotent: bool,
    /// Deadline of this call in milliseconds instead of the client's `timeout_ms`
    /// (0 = none); at most [`MAX_TIMEOUT_MS`].
    pub timeout_ms: Option<u64>,
    /// Headers of this call only, validated like the client's own (`set_header`) and
    /// sent after them, so a name set on both takes this value.
    pub headers: Vec<(String, String)>,
}

impl CallOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(ms) = self.timeout_ms.filter(|&ms| ms > MAX_TIMEOUT_MS) {
            return Err(QuillError::invalid(format!(
                "timeout_ms is {ms}; at most {MAX_TIMEOUT_MS} (30 days) is accepted, 0 means none"
            )));
        }
        Ok(())
    }
}

/// One call: `POST {base_url}/{service}/{method}` with a body and options. What comes
/// back is chosen by the type [`run`](super::QuillClient::run) is asked for: a
/// [`Reply`](super::Reply), a [`Tensor`], a [`MessageStream`](super::MessageStream) or
/// a [`TokenStream`](super::TokenStream).
///
/// ```
/// use quill::client::{Call, CallOptions};
/// let call = Call::json("inference.v1.LLMService", "Generate", r#"{"max_tokens": 8}"#)
///     .idempotent(true)
///     .timeout_ms(2_000);
/// assert_eq!(call.options().timeout_ms, Some(2_000));
/// ```
#[derive(Debug)]
pub struct Call {
    pub(crate) service: String,
    pub(crate) method: String,
    pub(crate) body: Body,
    pub(crate) options: CallOptions,
}

impl Call {
    pub fn new(service: impl Into<String>, method: impl Into<String>, body: Body) -> Call {
        Call {
            service: service.into(),
            method: method.into(),
            body,
            options: CallOptions::default(),
        }
    }

    /// A call sending one binary message.
    pub fn proto(
        service: impl Into<String>,
        method: impl Into<String>,
        message: impl Into<Bytes>,
    ) -> Call {
        Call::new(service, method, Body::Proto(message.into()))
    }

    /// A call sending JSON text.
    pub fn json(
        service: impl Into<String>,
        method: impl Into<String>,
        json: impl Into<Bytes>,
    ) -> Call {
        Call::new(service, method, Body::Json(json.into()))
    }

    /// A call sending a tensor as tensor frames.
    pub fn tensor(service: impl Into<String>, method: impl Into<String>, tensor: Tensor) -> Call {
        Call::new(service, method, Body::Tensor(tensor))
    }

    /// A client- or bidirectional-streaming call fed by `requests`.
    pub fn messages(
        service: impl Into<String>,
        method: impl Into<String>,
        requests: RequestStream,
    ) -> Call {
        Call::new(service, method, Body::Messages(requests))
    }

    /// Marks the call as safe to repeat; see [`CallOptions::idempotent`].
    pub fn idempotent(mut self, yes: bool) -> Call {
        self.options.idempotent = yes;
        self
    }

    /// This call's deadline; see [`CallOptions::timeout_ms`].
    pub fn timeout_ms(mut self, ms: u64) -> Call {
        self.options.timeout_ms = Some(ms);
        self
    }

    /// Adds a header to this call only; see [`CallOptions::headers`]. An invalid name
    /// or value fails the call with [`QuillError::InvalidArgument`] before it is sent.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Call {
        self.options.headers.push((name.into(), value.into()));
        self
    }

    /// `err` from the client's runtime, naming this call when it says the client is
    /// closed (the only `Cancelled` the runtime returns).
    pub(crate) fn unless_closed(&self, err: QuillError) -> QuillError {
        match err {
            QuillError::Cancelled { .. } => {
                super::closer::closed_error(&format!("{}/{}", self.service, self.method))
            }
            other => other,
        }
    }

    /// Replaces all options at once.
    pub fn with_options(mut self, options: CallOptions) -> Call {
        self.options = options;
        self
    }

    pub fn options(&self) -> &CallOptions {
        &self.options
    }

    /// `service/method`.
    pub fn path(&self) -> String {
        format!("{}/{}", self.service, self.method)
    }
}

/// What travels from a [`RequestSender`] to the request body.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Message(Bytes),
    /// The request stream is complete: END_STREAM follows.
    Finish,
    /// The request stream failed: the body is broken off without END_STREAM, so the
    /// server never takes a partial stream for a whole one.
    Abort(String),
}

/// The receiving end of a request stream, given to [`Call::messages`].
#[derive(Debug)]
pub struct RequestStream {
    pub(crate) rx: mpsc::Receiver<Outgoing>,
}

/// The sending end of a request stream. Messages go out as DATA frames as they are
/// sent; [`finish`](Self::finish) ends the stream with END_STREAM. Dropping the sender
/// without `finish` (or calling [`abort`](Self::abort)) breaks the request off instead:
/// the server sees a truncated stream, never a complete one, and the call fails with
/// [`QuillError::Cancelled`] giving the reason.
///
/// ```no_run
/// # async fn demo(client: &quill::QuillClient) -> quill::Result<()> {
/// use quill::client::{request_stream, Call, MessageStream};
/// let (tx, requests) = request_stream(16);
/// let replies: MessageStream = client.run(Call::messages("echo.v1.EchoService", "BidiEcho", requests)).await?;
/// tx.send("hello".into()).await?;
/// tx.finish().await?;
/// while let Some(reply) = replies.next_message().await? { /* ... */ }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RequestSender {
    /// Dropped only in the process that made it (see `Drop`).
    tx: ManuallyDrop<Option<mpsc::Sender<Outgoing>>>,
    born: Mark,
}

/// A request stream holding at most `capacity` messages not yet written to the socket
/// (at least 1): a sender waits while it is full, which is the request's backpressure.
pub fn request_stream(capacity: usize) -> (RequestSender, RequestStream) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let tx = RequestSender {
        tx: ManuallyDrop::new(Some(tx)),
        born: Mark::here(),
    };
    (tx, RequestStream { rx })
}

impl RequestSender {
    /// An error in a forked child: the stream is the parent's (`fork.rs`).
    fn here(&self) -> Result<()> {
        if self.born.is_here() {
            Ok(())
        } else {
            Err(inherited("the request stream"))
        }
    }

    fn sender(&self) -> Result<&mpsc::Sender<Outgoing>> {
        self.here()?;
        self.tx.as_ref().ok_or_else(|| QuillError::Cancelled {
            reason: "the request stream was already finished or aborted".into(),
        })
    }

    fn call_over() -> QuillError {
        QuillError::Cancelled {
            reason: "the call is over: its request stream takes no more messages".into(),
        }
    }

    /// Queues one message, waiting while the stream is full.
    pub async fn send(&self, message: Bytes) -> Result<()> {
        self.sender()?
            .send(Outgoing::Message(message))
            .await
            .map_err(|_| Self::call_over())
    }

    /// A one-shot handle that queues a message on this stream without borrowing the
    /// sender, so `send` on one task and `finish`/`abort` on another need no lock held
    /// across an await (the Kotlin and Swift faces work so). A message queued after
    /// `finish` is never sent: the call stops reading at END_STREAM.
    ///
    /// ```no_run
    /// # async fn demo(tx: quill::client::RequestSender) -> quill::Result<()> {
    /// let queue = tx.queue()?;
    /// queue.send("hello".into()).await?;
    /// tx.finish().await
    /// # }
    /// ```
    pub fn queue(&self) -> Result<MessageQueue> {
        Ok(MessageQueue(self.sender()?.clone()))
    }

    /// [`send`](Self::send) for a thread outside any async runtime.
    pub fn blocking_send(&self, message: Bytes) -> Result<()> {
        self.sender()?
            .blocking_send(Outgoing::Message(message))
            .map_err(|_| Self::call_over())
    }

    /// Ends the request stream with END_STREAM.
    pub async fn finish(mut self) -> Result<()> {
        self.here()?;
        let tx = self.tx.take();
        match tx {
            Some(tx) => tx
                .send(Outgoing::Finish)
                .await
                .map_err(|_| Self::call_over()),
            None => Ok(()),
        }
    }

    /// [`finish`](Self::finish) for a thread outside any async runtime.
    pub fn blocking_finish(mut self) -> Result<()> {
        self.here()?;
        match self.tx.take() {
            Some(tx) => tx
                .blocking_send(Outgoing::Finish)
                .map_err(|_| Self::call_over()),
            None => Ok(()),
        }
    }

    /// Breaks the request stream off (no END_STREAM): the call fails with `reason`.
    pub fn abort(mut self, reason: impl Into<String>) {
        self.abort_with(reason.into());
    }

    fn abort_with(&mut self, reason: String) {
        if !self.born.is_here() {
            return;
        }
        if let Some(tx) = self.tx.take() {
            // A full queue must not block a drop: the body then sees the channel close
            // without Finish, which aborts it just the same.
            let _ = tx.try_send(Outgoing::Abort(reason));
        }
    }
}

/// A handle from [`RequestSender::queue`].
#[derive(Debug)]
pub struct MessageQueue(mpsc::Sender<Outgoing>);

impl MessageQueue {
    /// [`RequestSender::send`] through this handle.
    pub async fn send(self, message: Bytes) -> Result<()> {
        self.0
            .send(Outgoing::Message(message))
            .await
            .map_err(|_| RequestSender::call_over())
    }
}

impl Drop for RequestSender {
    fn drop(&mut self) {
        // In a forked child the sender is leaked: closing the channel would wake the
        // parent's body task on a runtime that has no threads here (`fork.rs`).
        self.abort_with("the request sender was dropped without finish()".into());
    }
}
