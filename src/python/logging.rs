//! The core's client events (`crate::client::events`) as records of the `quill` logger.
//!
//! A logging handler is user code: it may be slow, raise, or call the client itself. So
//! it never runs on the client's I/O threads, nor while a call holds a connection or a
//! lane, where it could hold up calls of other threads. The listener only queues each
//! event under its caller (the thread that made the call, `Event::caller`), and Python
//! threads write them at call boundaries ([`tick`]), with the GIL and nothing else held:
//! - a blocking call's records, by the thread that made it, when the call returns;
//! - an async call's, by the event loop's thread, when its awaitable completes there;
//! - records of no caller (a connection's own task), and those of a thread that ended,
//!   by the next Python thread that returns from a call, at most [`SHARED_BATCH`] each.
//!
//! So a slow handler holds up only the thread whose call it logs, and a handler's own
//! calls write nothing while it runs (their records wait for the next boundary): a
//! handler that uses the client does not recurse.
//!
//! The core is told which levels the `quill` logger wants ([`refresh_level`]): when a
//! client is made, and at most every 100 ms at a call boundary (warnings until the
//! first client). With logging left unconfigured that is warnings only, and the
//! `NullHandler` given to the `quill` logger keeps even those off stderr, as a library
//! should. `import quill` does not import `logging`: the first client does.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList};

use crate::client::events::{self, Event, EventKind, Level};
use crate::fork::PerProcess;

/// Events kept per caller while no Python thread comes by; beyond it the oldest are
/// dropped (and counted in the next record).
const CAPACITY: usize = 10_000;
/// Records of no caller written at one boundary at most, so that one thread never pays
/// for a backlog of others'.
pub(crate) const SHARED_BATCH: usize = 64;
/// How stale the core's idea of the logger's level may get.
const LEVEL_REFRESH: Duration = Duration::from_millis(100);
/// The key of records that no living thread will come back for.
const NO_CALLER: u64 = 0;

/// The queued events by caller. Per process: a fork while an I/O thread queues one must
/// leave the child a lock nobody holds (`fork.rs`); the parent writes its own records.
static QUEUE: PerProcess<Mutex<HashMap<u64, VecDeque<Event>>>> = PerProcess::empty();
static DROPPED: AtomicU64 = AtomicU64::new(0);
static LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static EPOCH: OnceLock<Instant> = OnceLock::new();
/// When the level was last read, in ns since `EPOCH`.
static REFRESHED_NS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set while this thread writes records: a handler's own calls write none.
    static WRITING: Cell<bool> = const { Cell::new(false) };
    /// Hands this thread's unwritten records to the others when it ends.
    static WRITER: Writer = const { Writer };
}

fn queue() -> MutexGuard<'static, HashMap<u64, VecDeque<Event>>> {
    let queue = QUEUE.get_or(Mutex::default);
    queue.lock().unwrap_or_else(|p| p.into_inner())
}

fn push(event: &Event) {
    let mut q = queue();
    let mine = q.entry(event.caller).or_default();
    if mine.len() >= CAPACITY {
        mine.pop_front();
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
    mine.push_back(event.clone());
}

/// A thread that writes records; when it ends, what is left of its own goes to
/// [`NO_CALLER`].
struct Writer;

impl Drop for Writer {
    fn drop(&mut self) {
        let me = events::this_thread();
        let mut q = queue();
        if let Some(left) = q.remove(&me) {
            q.entry(NO_CALLER).or_default().extend(left);
        }
    }
}

/// Leaves [`WRITING`] on drop, also when a handler raised.
struct Writing;

impl Writing {
    fn enter() -> Option<Writing> {
        (!WRITING.replace(true)).then_some(Writing)
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        WRITING.set(false);
    }
}

/// `logging.getLogger("quill")`, given a `NullHandler` the first time.
fn logger(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    LOGGER
        .get_or_try_init(py, || {
            let logging = py.import("logging")?;
            let logger = logging.call_method1("getLogger", ("quill",))?;
            logger.call_method1("addHandler", (logging.getattr("NullHandler")?.call0()?,))?;
            // After `logging` registered its exit hook, so this one runs first.
            py.import("atexit")?
                .call_method1("register", (wrap_pyfunction!(_stop_log_records, py)?,))?;
            Ok::<_, PyErr>(logger.unbind())
        })
        .map(|l| l.bind(py))
}

fn now_ns() -> u64 {
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Installs the listener (at import), for warnings until a client reads the level.
pub(crate) fn install() {
    events::set_listener(Some(Arc::new(push)), Level::Warning);
}

/// Tells the core which events the `quill` logger wants now.
pub(crate) fn refresh_level(py: Python<'_>) -> PyResult<()> {
    let _inside = super::exit::enter(py);
    REFRESHED_NS.store(now_ns(), Ordering::Relaxed);
    let logger = logger(py)?;
    let level = if logger.getattr("disabled")?.is_truthy()? {
        None
    } else {
        match logger.call_method0("getEffectiveLevel")?.extract::<i64>()? {
            ..=10 => Some(Level::Debug),
            11..=20 => Some(Level::Info),
            21..=30 => Some(Level::Warning),
            _ => None,
        }
    };
    events::set_level(level);
    Ok(())
}

/// At a call boundary of this Python thread (a blocking call returning), with the GIL
/// and no call's resources held: this thread's queued events, and a few of no caller,
/// become log records, and the level is read again when it is due. Does nothing inside
/// a handler (see the module docs). Errors from logging handlers are Python's business
/// (`logging` reports them itself), never the call's. But a signal that arrives while
/// the logging code runs has its handler run there: a KeyboardInterrupt (or any
/// exception that is not an `Exception`) raised so is the program's, and is returned for
/// the caller to raise instead of being lost.
pub(crate) fn tick(py: Python<'_>) -> PyResult<()> {
    let Some(writing) = Writing::enter() else {
        return Ok(());
    };
    let _inside = super::exit::enter(py);
    let records = interrupts_only(py, take(py))?.flatten();
    let Some(records) = records else {
        return Ok(());
    };
    let logger = logger(py)?;
    for record in records.iter() {
        // The handlers run under this call's native frames, which CPython 3.9-3.13
        // must not find a daemon thread in once it finalizes: from the exit hooks on,
        // what is left waits (and is lost with the process).
        if STOPPED.load(Ordering::Relaxed) {
            break;
        }
        let (level, message, extra) = record.extract::<(i64, String, Bound<'_, PyDict>)>()?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("extra", extra)?;
        interrupts_only(
            py,
            logger
                .call_method("log", (level, "%s", message), Some(&kwargs))
                .map(drop),
        )?;
    }
    drop(writing);
    Ok(())
}

/// Set by an exit hook that runs before `logging`'s own: see [`tick`].
static STOPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// This thread's queued events and a few of no caller, as `(level, message, extra)`
/// records (a warning first when events were dropped); the level is read again first
/// when it is due.
fn take(py: Python<'_>) -> PyResult<Option<Bound<'_, PyList>>> {
    let due = now_ns().saturating_sub(REFRESHED_NS.load(Ordering::Relaxed))
        >= LEVEL_REFRESH.as_nanos() as u64;
    if due {
        interrupts_only(py, refresh_level(py))?;
    }
    let me = events::this_thread();
    WRITER.with(|_| ());
    let events: Vec<Event> = {
        let mut q = queue();
        let mut batch: Vec<Event> = q.remove(&me).map(Vec::from).unwrap_or_default();
        if let Some(shared) = q.get_mut(&NO_CALLER) {
            let n = shared.len().min(SHARED_BATCH);
            batch.extend(shared.drain(..n));
        }
        batch
    };
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    if events.is_empty() && dropped == 0 {
        return Ok(None);
    }
    let records = PyList::empty(py);
    if dropped > 0 {
        let message = format!(
            "{dropped} client events were dropped: no Python thread came back from a call to log them"
        );
        records.append((30, message, PyDict::new(py)))?;
    }
    for e in events {
        let level = match e.level {
            Level::Debug => 10,
            Level::Info => 20,
            Level::Warning => 30,
        };
        let extra = PyDict::new(py);
        extra.set_item("quill_event", kind_name(e.kind))?;
        extra.set_item("method", &e.target)?;
        extra.set_item("status", e.status)?;
        extra.set_item("elapsed_ms", e.elapsed.as_secs_f64() * 1000.0)?;
        records.append((level, e.message, extra))?;
    }
    Ok(Some(records))
}

/// `quill._quill._log_records()`: this thread's records, for `quill._async` to write
/// from Python frames on the event loop's thread (a handler that blocks there at exit
/// then has no native frame under it). `None` when there are none, or when this thread
/// is inside a handler already; otherwise the thread counts as writing until
/// [`_log_records_done`].
#[pyfunction]
pub(crate) fn _log_records(py: Python<'_>) -> PyResult<Option<Bound<'_, PyList>>> {
    let Some(writing) = Writing::enter() else {
        return Ok(None);
    };
    let _inside = super::exit::enter(py);
    let records = take(py)?;
    if records.is_some() {
        std::mem::forget(writing); // left by `_log_records_done`
    }
    Ok(records)
}

/// `quill._quill._log_records_done()`: the records of `_log_records` are written.
#[pyfunction]
pub(crate) fn _log_records_done() {
    WRITING.set(false);
}

/// `quill._quill._stop_log_records()`: registered with `atexit` right after `logging` is
/// imported, so it runs before `logging.shutdown`; see [`tick`].
#[pyfunction]
pub(crate) fn _stop_log_records() {
    STOPPED.store(true, Ordering::Relaxed);
}

/// Keeps only the errors that must not be swallowed: those that are not `Exception`s.
fn interrupts_only<T>(py: Python<'_>, result: PyResult<T>) -> PyResult<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if !e.is_instance_of::<pyo3::exceptions::PyException>(py) => Err(e),
        Err(_) => Ok(None),
    }
}

fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::ConnectionOpened => "connection_opened",
        EventKind::ConnectionReused => "connection_reused",
        EventKind::CallFinished => "call_finished",
        EventKind::CallFailed => "call_failed",
        EventKind::RetryScheduled => "retry_scheduled",
        EventKind::Timeout => "timeout",
        EventKind::StreamCancelled => "stream_cancelled",
        EventKind::DecodeLimit => "decode_limit",
    }
}
