//! `quill.Stream`: a server, bidirectional or token stream, as a Python iterator, an
//! async iterator and a context manager. Leaving the loop early or `close()` cancels
//! the HTTP request, so the server sees the connection go.

use std::mem::ManuallyDrop;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use pyo3::exceptions::{PyStopAsyncIteration, PyStopIteration};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyBytes;

use super::client::{request_bytes, PyQuillClient};
use super::inference::PyGenerateResponse;
use super::token::PyTokenBatch;
use super::{exit, wait};
use crate::client::{
    request_stream, Call, MessageStream, QuillClient, RequestSender, RequestStream,
};
use crate::error::QuillError;
use crate::fork::{inherited, Mark};
use crate::inference::{tracker_for, GenerateResponse, GenerateTracker, StreamTiming};
use crate::token::TokenBatch;

/// What each message of a stream is decoded into.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamKind {
    Messages,
    Tokens,
    /// `GenerateResponse`s of `quill.inference.v1` (`chat`: of a Chat call), checked
    /// and timed by the core's tracker.
    Generate {
        chat: bool,
    },
}

/// How a stream's messages are decoded: a [`StreamKind`] with its state.
enum Decode {
    Messages,
    Tokens,
    Generate(Mutex<GenerateTracker>),
}

impl From<StreamKind> for Decode {
    fn from(kind: StreamKind) -> Decode {
        match kind {
            StreamKind::Messages => Decode::Messages,
            StreamKind::Tokens => Decode::Tokens,
            StreamKind::Generate { chat } => Decode::Generate(Mutex::new(tracker_for(chat))),
        }
    }
}

/// Queue depth between the Python thread producing requests and the HTTP body.
const REQUEST_QUEUE: usize = 16;

static PUMP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Feeds the items of a Python iterable into a request stream. The iteration runs in a
/// daemon Python thread (`quill._pump.start`) that calls into Rust only to hand over
/// each item: a user's generator (which may sleep between requests) then never runs
/// beneath Rust frames, which interpreter exit could not unwind (see `exit.rs`).
/// Exhausting the iterable finishes the request stream (END_STREAM); a bad item or an
/// exception from the iterable aborts it, so the server never takes the partial stream
/// for a whole one and the call fails with `CallCancelledError` naming the exception.
pub(crate) fn pump_requests(
    py: Python<'_>,
    requests: &Bound<'_, PyAny>,
) -> PyResult<RequestStream> {
    pump_encoded(py, requests, request_bytes)
}

/// How the pump turns one item of the iterable into a request message.
pub(crate) type Encode = fn(Python<'_>, &Bound<'_, PyAny>) -> PyResult<Bytes>;

/// [`pump_requests`] with each item encoded by `encode`.
pub(crate) fn pump_encoded(
    py: Python<'_>,
    requests: &Bound<'_, PyAny>,
    encode: Encode,
) -> PyResult<RequestStream> {
    let iter = requests.try_iter()?;
    let (tx, rx) = request_stream(REQUEST_QUEUE);
    let sink = Bound::new(
        py,
        PyRequestSink {
            tx: Mutex::new(Some(tx)),
            encode,
        },
    )?;
    PUMP.import(py, "quill._pump", "start")?
        .call1((iter, sink))?;
    Ok(rx)
}

/// The sending end of a request stream, fed by `quill._pump`.
#[pyclass(name = "_RequestSink", module = "quill._quill", frozen)]
pub(crate) struct PyRequestSink {
    tx: Mutex<Option<RequestSender>>,
    encode: Encode,
}

impl PyRequestSink {
    fn take(&self) -> Option<RequestSender> {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[pymethods]
impl PyRequestSink {
    /// Queues one request (bytes-like), waiting with the GIL released while the queue is
    /// full. Returns False once the call is over, so the pump stops pulling.
    fn send(&self, py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<bool> {
        let _inside = exit::enter(py);
        let body = (self.encode)(py, item)?;
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = guard.as_ref() else {
            return Ok(false);
        };
        // The pump thread is the only sender; the lock only guards against close().
        Ok(exit::detach(py, || tx.blocking_send(body).is_ok()))
    }

    /// Ends the request stream with END_STREAM once the queue drains.
    fn close(&self, py: Python<'_>) {
        if let Some(tx) = self.take() {
            let _ = exit::detach(py, move || tx.blocking_finish());
        }
    }

    /// Breaks the request stream off: the call fails with `reason`.
    fn abort(&self, #[pyo3(from_py_with = super::text::reason)] reason: String) {
        if let Some(tx) = self.take() {
            tx.abort(reason);
        }
    }
}

type Opener = BoxFuture<'static, Result<MessageStream, QuillError>>;

/// Shared state: opened lazily (async iteration) or eagerly (sync API).
struct Core {
    /// Dropped only in the process that made it (see `Drop`).
    opener: ManuallyDrop<tokio::sync::Mutex<Option<Opener>>>,
    stream: OnceLock<Arc<MessageStream>>,
    closed: Mutex<bool>,
    decode: Decode,
    path: String,
    /// In a forked child the stream is the parent's: its locks may be held by threads
    /// the child does not have, so none is touched there (`fork.rs`).
    born: Mark,
}

enum Item {
    Message(Bytes),
    Batch(TokenBatch),
    Generated(GenerateResponse),
}

impl Core {
    async fn opened(&self) -> Result<Arc<MessageStream>, QuillError> {
        if let Some(s) = self.stream.get() {
            return Ok(s.clone());
        }
        let mut opener = self.opener.lock().await;
        if let Some(s) = self.stream.get() {
            return Ok(s.clone());
        }
        let Some(fut) = opener.take() else {
            return Err(QuillError::Cancelled {
                reason: "stream was closed".into(),
            });
        };
        // Timing starts when the call does, not when the stream object was made.
        if let Some(mut tracker) = self.tracker() {
            tracker.restart();
        }
        let s = Arc::new(fut.await?);
        let s = self.stream.get_or_init(|| s).clone();
        if *self.closed.lock().unwrap_or_else(|p| p.into_inner()) {
            s.cancel();
        }
        Ok(s)
    }

    fn tracker(&self) -> Option<std::sync::MutexGuard<'_, GenerateTracker>> {
        match &self.decode {
            Decode::Generate(t) => Some(t.lock().unwrap_or_else(|p| p.into_inner())),
            _ => None,
        }
    }

    async fn next(&self) -> Result<Option<Item>, QuillError> {
        if !self.born.is_here() {
            return Err(inherited(&format!("stream {}", self.path)));
        }
        let s = self.opened().await?;
        let Some(msg) = s.next_message().await? else {
            if let Some(tracker) = self.tracker() {
                tracker.end(&self.path)?;
            }
            return Ok(None);
        };
        Ok(Some(match &self.decode {
            Decode::Messages => Item::Message(msg),
            Decode::Tokens => {
                Item::Batch(TokenBatch::decode(&msg).map_err(|e| QuillError::Protocol {
                    reason: format!("stream message is not a valid TokenBatch: {e}"),
                })?)
            }
            Decode::Generate(tracker) => Item::Generated(
                tracker
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .message(msg)?,
            ),
        }))
    }

    fn close(&self) {
        if !self.born.is_here() {
            return;
        }
        *self.closed.lock().unwrap_or_else(|p| p.into_inner()) = true;
        if let Some(s) = self.stream.get() {
            s.cancel();
        } else if let Ok(mut opener) = self.opener.try_lock() {
            opener.take();
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if self.born.is_here() {
            // SAFETY: dropped once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.opener) };
        }
        // In a forked child an opening the parent had begun is leaked: dropping it
        // would abort the parent's task on a runtime with no threads here.
    }
}

/// What iteration yields of each item.
#[derive(Clone, Copy, PartialEq, Eq)]
enum View {
    Whole,
    /// Only the `TokenBatch` of each `GenerateResponse` (`GenerateStream.batches()`).
    Batches,
}

fn item_to_py(py: Python<'_>, item: Item, view: View) -> PyResult<Bound<'_, PyAny>> {
    match item {
        Item::Message(b) => Ok(PyBytes::new(py, &b).into_any()),
        Item::Batch(b) => Ok(Bound::new(py, PyTokenBatch(b))?.into_any()),
        Item::Generated(r) if view == View::Batches => {
            Ok(Bound::new(py, PyTokenBatch(r.tokens))?.into_any())
        }
        Item::Generated(r) => Ok(Bound::new(py, PyGenerateResponse::wrap(py, r)?)?.into_any()),
    }
}

/// A response stream: `for m in stream`, `async for m in stream`, `with stream:`.
#[pyclass(name = "Stream", module = "quill", frozen, subclass)]
pub struct PyStream {
    core: Arc<Core>,
    /// Shared by the views of one stream (`batches()`): the last one dropped cancels.
    _owner: Arc<CloseOnDrop>,
    client: Arc<QuillClient>,
    view: View,
}

impl PyStream {
    fn new(client: &PyQuillClient, path: String, kind: StreamKind, opener: Opener) -> PyStream {
        let core = Arc::new(Core {
            opener: ManuallyDrop::new(tokio::sync::Mutex::new(Some(opener))),
            stream: OnceLock::new(),
            closed: Mutex::new(false),
            decode: kind.into(),
            path,
            born: Mark::here(),
        });
        PyStream {
            _owner: Arc::new(CloseOnDrop(core.clone())),
            core,
            client: client.inner.clone(),
            view: View::Whole,
        }
    }

    /// Timing of a `Generate` or `Chat` stream so far.
    pub(crate) fn timing(&self) -> Option<StreamTiming> {
        self.core.tracker().map(|t| t.timing())
    }

    /// The same stream, iterated as token batches only.
    pub(crate) fn batches(&self) -> PyStream {
        PyStream {
            core: self.core.clone(),
            _owner: self._owner.clone(),
            client: self.client.clone(),
            view: View::Batches,
        }
    }

    /// The text of every remaining token, once the stream ended: a future for
    /// `wait::block_on` or `wait::to_asyncio`.
    pub(crate) fn text_future(
        &self,
    ) -> impl std::future::Future<Output = Result<String, QuillError>> + Send + 'static {
        let core = self.core.clone();
        // The stream object may be gone before the future is awaited
        // (`await client.generate_async(...).text_async()`): keep the call alive.
        let owner = self._owner.clone();
        async move {
            let _owner = owner;
            let mut text = String::new();
            while let Some(item) = core.next().await? {
                match item {
                    Item::Generated(r) => text.push_str(&r.tokens.text()),
                    Item::Batch(b) => text.push_str(&b.text()),
                    Item::Message(_) => {}
                }
            }
            Ok(text)
        }
    }

    pub(crate) fn path(&self) -> &str {
        &self.core.path
    }

    pub(crate) fn handle(&self) -> PyResult<tokio::runtime::Handle> {
        use super::errors::IntoPyResult;
        self.client.try_runtime_handle().py()
    }

    /// A stream of `call`, opened now (`eager`, so a status error is raised at once) or
    /// on the first asynchronous iteration.
    pub(crate) fn open(
        py: Python<'_>,
        client: &PyQuillClient,
        call: Call,
        kind: StreamKind,
        eager: bool,
    ) -> PyResult<PyStream> {
        let c = client.inner.clone();
        let path = call.path();
        let opener: Opener = Box::pin(async move { c.run::<MessageStream>(call).await });
        let s = PyStream::new(client, path, kind, opener);
        if eager {
            s.open_now(py)?;
        }
        Ok(s)
    }

    fn open_now(&self, py: Python<'_>) -> PyResult<()> {
        let core = self.core.clone();
        wait::block_on(
            py,
            &self.handle()?,
            async move { core.opened().await.map(drop) },
        )
    }
}

#[pymethods]
impl PyStream {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let _inside = exit::enter(py);
        let core = self.core.clone();
        match wait::block_on(py, &self.handle()?, async move { core.next().await })? {
            Some(item) => item_to_py(py, item, self.view),
            None => Err(PyStopIteration::new_err(())),
        }
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let _inside = exit::enter(py);
        let core = self.core.clone();
        let view = self.view;
        wait::to_asyncio(
            py,
            &self.handle()?,
            async move { core.next().await },
            move |py, item| match item {
                Some(item) => item_to_py(py, item, view),
                None => Err(PyStopAsyncIteration::new_err(())),
            },
        )
    }

    /// Cancels the call: the connection is closed and further iteration ends.
    fn close(&self) {
        self.core.close();
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&self, _t: &Bound<'_, PyAny>, _v: &Bound<'_, PyAny>, _tb: &Bound<'_, PyAny>) {
        self.close();
    }

    fn __aenter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, PyAny>> {
        let py = slf.py();
        wait::ready(py, slf.into_any())
    }

    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _t: &Bound<'py, PyAny>,
        _v: &Bound<'py, PyAny>,
        _tb: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.close();
        wait::ready(py, py.None().into_bound(py))
    }

    fn __repr__(&self) -> String {
        format!("Stream('{}')", self.path())
    }
}

/// Dropping the Python objects of a stream (e.g. `break` out of a loop) cancels the
/// call.
struct CloseOnDrop(Arc<Core>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}
