//! Response streams: [`MessageStream`] and [`TokenStream`].
//!
//! Once the response headers are in, a reader task on the client's runtime decodes the
//! body as it arrives (`Content-Encoding` first, then frames with `MessageReader`) and
//! hands messages over a small bounded channel. The channel is the backpressure: while
//! the consumer does not take messages, the task stops reading and TCP flow control
//! slows the server. The task also enforces the call deadline and the idle timeout, so
//! `next_message` needs no timer and works from any executor.

use std::fmt;
use std::mem::ManuallyDrop;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::body::ErrorSlot;
use super::call::CallContext;
use super::closer::{closed_error, Closed};
use super::compression::decoder_for;
use super::errors::{decode_as_protocol, BodyKind, CallLabel};
use super::events::{self, EventKind, Level};
use super::runtime::ClientRuntime;
use super::transport::Response;
use crate::codec::stream::{Event, MessageReader};
use crate::error::{QuillError, Result};
use crate::fork::{inherited, Mark};
use crate::token::TokenBatch;

/// Messages decoded ahead of the consumer. Small: each may be up to 4 MiB.
const READ_AHEAD: usize = 2;
/// After END_STREAM, how long the reader waits for the end of the HTTP body so the
/// connection can go back to the pool; a server still holding the body open after
/// END_STREAM just loses its keep-alive.
const DRAIN_GRACE: Duration = Duration::from_millis(250);

type Item = Result<Option<Bytes>>;

#[derive(Debug, Clone)]
enum State {
    Open,
    Ended,
    // Boxed: an error with Problem Details is far larger than the other states.
    Failed(Box<QuillError>),
    Cancelled,
}

/// The response side of a server-streaming or bidirectional call: its messages in order.
///
/// `next_message` returns `Ok(Some(message))` per DATA payload and `Ok(None)` after
/// END_STREAM. Errors: [`QuillError::Stream`] when the body ends or the connection
/// drops before END_STREAM, or on a CANCEL frame (opening the stream fails with it too
/// when the connection closes or the stream is reset before the response headers, on
/// every HTTP version; [`QuillError::Connection`] only when the server cannot be
/// reached); [`QuillError::Protocol`] for malformed or oversized frames (or a message
/// over `max_decoded_size`); [`QuillError::Timeout`] when the call deadline or the
/// idle timeout passes. A non-2xx answer fails the
/// `open_*` call itself with [`QuillError::Status`]. Errors are sticky: once the stream
/// failed, every later call returns the same error.
///
/// Dropping the stream, or [`cancel`](Self::cancel), closes the connection at once, so
/// the server sees the client go.
///
/// ```no_run
/// # async fn demo(client: &quill::QuillClient) -> quill::Result<()> {
/// use quill::client::{Call, MessageStream};
/// let call = Call::json("inference.v1.LLMService", "GenerateStream", "{}");
/// let stream: MessageStream = client.run(call).await?;
/// while let Some(message) = stream.next_message().await? {
///     println!("{} bytes", message.len());
/// }
/// # Ok(()) }
/// ```
pub struct MessageStream {
    /// Dropped only in the process that opened the stream (see `Drop`).
    rx: ManuallyDrop<tokio::sync::Mutex<mpsc::Receiver<Item>>>,
    state: Mutex<State>,
    reader: AbortHandle,
    path: String,
    /// In a forked child the stream is the parent's: nothing of it is touched there.
    born: Mark,
    /// The reader runs on the client's runtime; keep it alive as long as the stream.
    _runtime: Arc<ClientRuntime>,
}

impl fmt::Debug for MessageStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageStream")
            .field("path", &self.path)
            .field("state", &*self.state())
            .finish_non_exhaustive()
    }
}

/// A stream whose reader task runs; the client wraps it into a [`MessageStream`].
pub(crate) struct Opened {
    rx: mpsc::Receiver<Item>,
    reader: AbortHandle,
    path: String,
}

impl MessageStream {
    pub(crate) fn new(opened: Opened, runtime: Arc<ClientRuntime>) -> MessageStream {
        MessageStream {
            rx: ManuallyDrop::new(tokio::sync::Mutex::new(opened.rx)),
            state: Mutex::new(State::Open),
            reader: opened.reader,
            path: opened.path,
            born: Mark::here(),
            _runtime: runtime,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cancelled_error(&self) -> QuillError {
        QuillError::Cancelled {
            reason: format!("stream {} was cancelled", self.path),
        }
    }

    fn settled(&self) -> Option<Item> {
        match &*self.state() {
            State::Open => None,
            State::Ended => Some(Ok(None)),
            State::Failed(e) => Some(Err((**e).clone())),
            State::Cancelled => Some(Err(self.cancelled_error())),
        }
    }

    /// The next message; `Ok(None)` once the stream ended normally (see the type docs
    /// for the errors). Safe to call from several tasks: they take turns.
    pub async fn next_message(&self) -> Result<Option<Bytes>> {
        if !self.born.is_here() {
            return Err(inherited(&format!("stream {}", self.path)));
        }
        if let Some(done) = self.settled() {
            return done;
        }
        let mut rx = self.rx.lock().await;
        if let Some(done) = self.settled() {
            return done;
        }
        let item = rx.recv().await;
        let mut state = self.state();
        if matches!(*state, State::Cancelled) {
            return Err(self.cancelled_error());
        }
        match item {
            Some(Ok(Some(message))) => Ok(Some(message)),
            Some(Ok(None)) => {
                *state = State::Ended;
                Ok(None)
            }
            Some(Err(e)) => {
                *state = State::Failed(Box::new(e.clone()));
                Err(e)
            }
            None => {
                let e =
                    QuillError::stream(format!("stream {} stopped before END_STREAM", self.path));
                *state = State::Failed(Box::new(e.clone()));
                Err(e)
            }
        }
    }

    /// Whether the stream is over: ended, failed or cancelled (or, in a forked child,
    /// the parent's).
    pub fn is_finished(&self) -> bool {
        !self.born.is_here() || !matches!(*self.state(), State::Open)
    }
}

impl MessageStream {
    /// Stops the stream: the response body is dropped and the connection closed, so
    /// the server sees the client go. Afterwards `next_message` returns
    /// [`QuillError::Cancelled`] (messages already buffered are discarded), except on a
    /// stream that had already ended or failed, which keeps its outcome. Idempotent.
    pub fn cancel(&self) {
        if !self.born.is_here() {
            return; // the parent's stream: its reader runs (or ran) there
        }
        let was_open = {
            let mut state = self.state();
            let open = matches!(*state, State::Open);
            if open {
                *state = State::Cancelled;
            }
            open
        };
        self.reader.abort();
        if was_open {
            cancelled_event(&self.path, "cancelled by its consumer");
        }
    }
}

impl Drop for MessageStream {
    fn drop(&mut self) {
        if self.born.is_here() {
            self.reader.abort();
            // SAFETY: dropped once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.rx) };
        }
        // In a forked child the receiver is leaked: closing it would wake the parent's
        // reader task on a runtime that has no threads here (`fork.rs`).
    }
}

/// A stream of [`TokenBatch`]es: each DATA payload decoded with [`TokenBatch::decode`].
///
/// A payload that is not a valid batch is a [`QuillError::Protocol`] error for that
/// message; the stream itself goes on.
#[derive(Debug)]
pub struct TokenStream {
    inner: MessageStream,
}

impl TokenStream {
    pub(crate) fn new(inner: MessageStream) -> TokenStream {
        TokenStream { inner }
    }

    /// The next batch, `None` after END_STREAM.
    pub async fn next_batch(&self) -> Result<Option<TokenBatch>> {
        match self.inner.next_message().await? {
            None => Ok(None),
            Some(payload) => TokenBatch::decode(&payload)
                .map(Some)
                .map_err(decode_as_protocol),
        }
    }

    /// The underlying message stream.
    pub fn messages(&self) -> &MessageStream {
        &self.inner
    }
}

impl TokenStream {
    /// Stops the stream; see [`MessageStream::cancel`].
    pub fn cancel(&self) {
        self.inner.cancel();
    }
}

struct ReaderSpec {
    label: CallLabel,
    deadline: Option<Instant>,
    idle: Option<Duration>,
    max_message: u64,
    request_error: Option<ErrorSlot>,
    closed: Closed,
}

fn cancelled_event(path: &str, how: &str) {
    events::emit(Level::Info, EventKind::StreamCancelled, |e| {
        e.target = path.to_owned();
        e.message = format!("stream {path} {how}");
    });
}

enum Outcome {
    End,
    ConsumerGone,
}

/// Sends `body` and, once 2xx headers are in, starts the reader task. Must run on the
/// client's runtime.
pub(crate) async fn open(
    mut ctx: CallContext,
    body: reqwest::Body,
    zstd: bool,
    request_error: Option<ErrorSlot>,
) -> Result<Opened> {
    ctx.label.streamed = true;
    let sent = ctx
        .within_deadline(async {
            let slot = ctx.connection_slot().await;
            ctx.send(body, zstd).await.map(|r| (r, slot))
        })
        .await;
    let (resp, slot) = sent.map_err(|e| match &request_error {
        Some(slot) => slot.or(e),
        None => e,
    })?;
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let spec = ReaderSpec {
        label: ctx.label.clone(),
        deadline: ctx.deadline,
        idle: ctx.idle_timeout,
        max_message: ctx.max_decoded_size,
        request_error,
        closed: ctx.closed.clone(),
    };
    // The connection slot goes with the reader: the connection is busy until it ends.
    // Its events are those of the caller that opened the stream.
    let caller = super::events::current_caller();
    let task = tokio::spawn(super::events::for_caller(caller, async move {
        let _slot = slot;
        pump(resp, spec, tx).await
    }));
    Ok(Opened {
        rx,
        reader: task.abort_handle(),
        path: ctx.label.path,
    })
}

async fn pump(mut resp: Response, spec: ReaderSpec, tx: mpsc::Sender<Item>) {
    let work = async {
        let work = read_messages(&mut resp, &spec, &tx);
        match spec.deadline {
            Some(d) => tokio::time::timeout_at(d, work)
                .await
                .unwrap_or_else(|_| Err(spec.label.timeout())),
            None => work.await,
        }
    };
    let outcome = tokio::select! {
        biased;
        outcome = work => spec.closed.or_closed(&spec.label.path, outcome),
        () = spec.closed.fired() => Err(closed_error(&spec.label.path)),
    };
    match outcome {
        Ok(Outcome::End) => {
            if tx.send(Ok(None)).await.is_ok() {
                drain(&mut resp, &spec.label).await;
            }
        }
        Ok(Outcome::ConsumerGone) => {
            cancelled_event(&spec.label.path, "dropped by its consumer before the end");
        }
        Err(e) => {
            // Close the connection before reporting, so the server is released first.
            drop(resp);
            let e = match &spec.request_error {
                Some(slot) => slot.or(e),
                None => e,
            };
            let _ = tx.send(Err(e)).await;
        }
    }
}

async fn drain(resp: &mut Response, label: &CallLabel) {
    let _ = tokio::time::timeout(DRAIN_GRACE, async {
        while let Ok(Some(_)) = resp.chunk(label, BodyKind::Stream).await {}
    })
    .await;
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn read_messages(
    resp: &mut Response,
    spec: &ReaderSpec,
    tx: &mpsc::Sender<Item>,
) -> Result<Outcome> {
    // Per message, not per stream: a long stream may carry any total, and memory stays
    // bounded by one frame anyway because decoding is incremental.
    let mut decoder = decoder_for(resp.headers(), None)?;
    let mut reader = MessageReader::new();
    let idle_from_now = || spec.idle.map(|d| Instant::now() + d);
    let mut idle_at = idle_from_now();
    loop {
        while let Some(event) = reader.next_event()? {
            match event {
                Event::Message(message) => {
                    if message.len() as u64 > spec.max_message {
                        let err = QuillError::protocol(format!(
                            "stream message of {} bytes exceeds the {}-byte limit (max_decoded_size)",
                            message.len(),
                            spec.max_message
                        ));
                        events::emit(Level::Warning, EventKind::DecodeLimit, |e| {
                            e.target = spec.label.path.clone();
                            e.message = err.to_string();
                        });
                        return Err(err);
                    }
                    if tx.send(Ok(Some(message))).await.is_err() {
                        return Ok(Outcome::ConsumerGone);
                    }
                    idle_at = idle_from_now();
                }
                // Existing servers neither send nor enforce credit; accepting it is enough.
                Event::Credit(_) => {}
                Event::End => return Ok(Outcome::End),
            }
        }
        if let Some(piece) = decoder.next_output()? {
            reader.push(&piece);
            // One small compressed chunk can decode to any amount of output that holds
            // no message (a zstd bomb of ignored frames). Without an await here the task
            // would spin through all of it: yield between the 64 KiB pieces so the call
            // deadline and cancellation take effect, and check the idle timeout.
            tokio::task::yield_now().await;
            if idle_at.is_some_and(|at| Instant::now() >= at) {
                return Err(spec.label.idle_timeout(spec.idle.unwrap_or_default()));
            }
            continue;
        }
        let chunk = tokio::select! {
            biased;
            _ = tx.closed() => return Ok(Outcome::ConsumerGone),
            _ = sleep_until(idle_at) => {
                return Err(spec.label.idle_timeout(spec.idle.unwrap_or_default()));
            }
            chunk = resp.chunk(&spec.label, BodyKind::Stream) => chunk?,
        };
        match chunk {
            Some(chunk) => decoder.push(chunk),
            None => {
                decoder.finish()?;
                // Every event was taken above and END_STREAM returns early, so this
                // reports the truncation (inside a frame or between frames).
                reader.finish()?;
                return Err(QuillError::stream(format!(
                    "stream {} ended before END_STREAM (truncated)",
                    spec.label.path
                )));
            }
        }
    }
}
