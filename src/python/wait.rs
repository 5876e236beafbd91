//! Bridges core futures to Python: blocking waits that release the GIL and stay
//! interruptible (Ctrl-C), and asyncio futures resolved from the client's runtime.

use std::future::Future;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyCFunction;
use tokio::runtime::Handle;

use super::errors::IntoPyResult;
use super::exit::{self, from_foreign_thread};
use super::logging;
use crate::client::events;
use crate::error::QuillError;
use crate::fork::Mark;

/// How often a blocking wait wakes up to let Python run signal handlers.
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// Runs `fut` to completion with the GIL released. Every 50 ms the thread re-attaches
/// to run signal handlers: a KeyboardInterrupt drops `fut` (cancelling the call) and
/// propagates.
pub(crate) fn block_on<T, F>(py: Python<'_>, handle: &Handle, fut: F) -> PyResult<T>
where
    T: Send,
    F: Future<Output = Result<T, QuillError>> + Send,
{
    let out = exit::detach(py, || {
        // The timer below needs the runtime's context.
        let _context = handle.enter();
        let mut fut = std::pin::pin!(fut);
        loop {
            match handle.block_on(tokio::time::timeout(SIGNAL_CHECK_INTERVAL, &mut fut)) {
                Ok(result) => return result.map_err(Stopped::Core),
                Err(_elapsed) => exit::attach(check).map_err(Stopped::Python)?,
            }
        }
    });
    logging::tick(py)?;
    unstop(out)
}

/// What a blocking wait does with the GIL every tick: run signal handlers (an
/// exception stops the wait). Never logging: the call still holds its connection and
/// lane, and a handler that waited on them, or on calls that need them, would wait
/// forever; records are written once the call has returned.
fn check(py: Python<'_>) -> PyResult<()> {
    py.check_signals()
}

/// Why a blocking core call stopped: the core's error, or one raised by Python while
/// it waited (a KeyboardInterrupt from a signal handler).
pub(crate) enum Stopped {
    Core(QuillError),
    Python(PyErr),
}

impl From<QuillError> for Stopped {
    fn from(e: QuillError) -> Stopped {
        Stopped::Core(e)
    }
}

/// Runs a blocking core call (`QuillClient::*_with`) with the GIL released. The call
/// runs on this thread; every tick it re-attaches to run signal handlers, and an
/// exception from them (KeyboardInterrupt) cancels the call and propagates.
pub(crate) fn blocking<T, C>(py: Python<'_>, call: C) -> PyResult<T>
where
    T: Send,
    C: FnOnce(&mut (dyn FnMut() -> Result<(), Stopped> + Send)) -> Result<T, Stopped> + Send,
{
    let out = exit::detach(py, || {
        call(&mut || exit::attach(check).map_err(Stopped::Python))
    });
    logging::tick(py)?;
    unstop(out)
}

/// Raises what stopped a wait, once the GIL is held again.
fn unstop<T>(out: Result<T, Stopped>) -> PyResult<T> {
    match out {
        Ok(v) => Ok(v),
        Err(Stopped::Core(e)) => Err(e).py(),
        Err(Stopped::Python(e)) => Err(e),
    }
}

static RESOLVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `quill._async._resolve(fut, value, error)`: writes the loop thread's log records
/// (`logging::_log_records`), then sets a result unless the future was cancelled
/// meanwhile. Run on the event loop's thread via `call_soon_threadsafe`.
fn resolver(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    RESOLVE.import(py, "quill._async", "_resolve")
}

/// Spawns `fut` on the client's runtime and returns an asyncio future of its result,
/// converted by `convert` with the GIL held. Cancelling the asyncio future aborts the
/// task (and so the HTTP request).
pub(crate) fn to_asyncio<'py, T, F, C>(
    py: Python<'py>,
    handle: &Handle,
    fut: F,
    convert: C,
) -> PyResult<Bound<'py, PyAny>>
where
    T: Send + 'static,
    F: Future<Output = Result<T, QuillError>> + Send + 'static,
    C: for<'a> FnOnce(Python<'a>, T) -> PyResult<Bound<'a, PyAny>> + Send + 'static,
{
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let py_future = event_loop.call_method0("create_future")?;
    resolver(py)?;
    let loop_ref = event_loop.unbind();
    let fut_ref = py_future.clone().unbind();
    // The call's events are this (the loop's) thread's: `_resolve` writes them there.
    let caller = events::this_thread();
    let task = handle.spawn(events::for_caller(caller, async move {
        let result = fut.await;
        let _ = from_foreign_thread(|py| -> PyResult<()> {
            // A runtime thread: no Python code of the user's runs here (no logging).
            let (value, error) = match result.py().and_then(|v| convert(py, v)) {
                Ok(v) => (v, py.None().into_bound(py)),
                Err(e) => (
                    py.None().into_bound(py),
                    e.into_value(py).into_bound(py).into_any(),
                ),
            };
            let resolve = resolver(py)?;
            // A closed loop raises RuntimeError: nobody is waiting any more.
            let _ = loop_ref.bind(py).call_method1(
                "call_soon_threadsafe",
                (resolve, fut_ref.bind(py), value, error),
            );
            Ok(())
        });
    }));
    let abort = task.abort_handle();
    let born = Mark::here();
    let on_done = PyCFunction::new_closure(py, None, None, move |args, _kwargs| -> PyResult<()> {
        let fut = args.get_item(0)?;
        // In a forked child the task is the parent's, on a runtime with no threads here.
        if fut.call_method0("cancelled")?.is_truthy()? && born.is_here() {
            abort.abort();
        }
        Ok(())
    })?;
    py_future.call_method1("add_done_callback", (on_done,))?;
    Ok(py_future)
}

/// An already-completed asyncio future holding `value` (for `__aenter__`/`__aexit__`).
pub(crate) fn ready<'py>(py: Python<'py>, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let fut = py
        .import("asyncio")?
        .call_method0("get_running_loop")?
        .call_method0("create_future")?;
    fut.call_method1("set_result", (value,))?;
    Ok(fut)
}
