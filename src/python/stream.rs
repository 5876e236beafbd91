//! `quill.Stream`: a server, bidirectional or token stream, as a Python iterator, an
//! async iterator and a context manager. Leaving the loop early or `close()` cancels
//! the HTTP request, so the server sees the connection go.

use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use pyo3::exceptions::{PyStopAsyncIteration, PyStopIteration};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyBytes;

use super::client::{request_bytes, PyQuillClient};
use super::token::PyTokenBatch;
use super::{exit, wait};
use crate::client::{
    request_stream, Call, MessageStream, QuillClient, RequestSender, RequestStream,
};
use crate::error::QuillError;
use crate::token::TokenBatch;

/// What each message of a stream is decoded into.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamKind {
    Messages,
    Tokens,
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
    let iter = requests.try_iter()?;
    let (tx, rx) = request_stream(REQUEST_QUEUE);
    let sink = Bound::new(
        py,
        PyRequestSink {
            tx: Mutex::new(Some(tx)),
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
        let body = request_bytes(py, item)?;
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
    fn abort(&self, reason: String) {
        if let Some(tx) = self.take() {
            tx.abort(reason);
        }
    }
}

type Opener = BoxFuture<'static, Result<MessageStream, QuillError>>;

/// Shared state: opened lazily (async iteration) or eagerly (sync API).
struct Core {
    opener: tokio::sync::Mutex<Option<Opener>>,
    stream: OnceLock<Arc<MessageStream>>,
    closed: Mutex<bool>,
    kind: StreamKind,
}

enum Item {
    Message(Bytes),
    Batch(TokenBatch),
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
        let s = Arc::new(fut.await?);
        let s = self.stream.get_or_init(|| s).clone();
        if *self.closed.lock().unwrap_or_else(|p| p.into_inner()) {
            s.cancel();
        }
        Ok(s)
    }

    async fn next(&self) -> Result<Option<Item>, QuillError> {
        let s = self.opened().await?;
        let Some(msg) = s.next_message().await? else {
            return Ok(None);
        };
        Ok(Some(match self.kind {
            StreamKind::Messages => Item::Message(msg),
            StreamKind::Tokens => {
                Item::Batch(TokenBatch::decode(&msg).map_err(|e| QuillError::Protocol {
                    reason: format!("stream message is not a valid TokenBatch: {e}"),
                })?)
            }
        }))
    }

    fn close(&self) {
        *self.closed.lock().unwrap_or_else(|p| p.into_inner()) = true;
        if let Some(s) = self.stream.get() {
            s.cancel();
        } else if let Ok(mut opener) = self.opener.try_lock() {
            opener.take();
        }
    }
}

fn item_to_py(py: Python<'_>, item: Item) -> PyResult<Bound<'_, PyAny>> {
    match item {
        Item::Message(b) => Ok(PyBytes::new(py, &b).into_any()),
        Item::Batch(b) => Ok(Bound::new(py, PyTokenBatch(b))?.into_any()),
    }
}

/// A response stream: `for m in stream`, `async for m in stream`, `with stream:`.
#[pyclass(name = "Stream", module = "quill", frozen)]
pub struct PyStream {
    core: Arc<Core>,
    client: Arc<QuillClient>,
    path: String,
}

impl PyStream {
    fn new(client: &PyQuillClient, path: String, kind: StreamKind, opener: Opener) -> PyStream {
        PyStream {
            core: Arc::new(Core {
                opener: tokio::sync::Mutex::new(Some(opener)),
                stream: OnceLock::new(),
                closed: Mutex::new(false),
                kind,
            }),
            client: client.inner.clone(),
            path,
        }
    }

    fn handle(&self) -> PyResult<tokio::runtime::Handle> {
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
            Some(item) => item_to_py(py, item),
            None => Err(PyStopIteration::new_err(())),
        }
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let _inside = exit::enter(py);
        let core = self.core.clone();
        wait::to_asyncio(
            py,
            &self.handle()?,
            async move { core.next().await },
            |py, item| match item {
                Some(item) => item_to_py(py, item),
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
        format!("Stream('{}')", self.path)
    }
}

impl Drop for PyStream {
    fn drop(&mut self) {
        // Dropping the Python object (e.g. `break` out of a loop) cancels the call.
        self.core.close();
    }
}
