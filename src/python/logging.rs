//! The core's client events (`crate::client::events`) as records of the `quill` logger.
//!
//! Events happen on threads that do not hold the GIL (a caller blocking in a call, the
//! client's workers), and taking the GIL there would stall calls behind Python code. So
//! the listener only queues them, and Python threads that come back from a call
//! ([`tick`]) turn them into records: at the end of every call, stream step and close,
//! and every 50 ms during a long blocking wait.
//!
//! The core is told which levels the `quill` logger wants ([`refresh_level`]): when a
//! client is made, and at most every 100 ms at a call boundary (warnings until the
//! first client). With logging left unconfigured that is warnings only, and the
//! `NullHandler` given to the `quill` logger keeps even those off stderr, as a library
//! should. `import quill` does not import `logging`: the first client does.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

use crate::client::events::{self, Event, EventKind, Level};
use crate::fork::PerProcess;

/// Events kept while no Python thread comes by; beyond it the oldest are dropped (and
/// counted in the next record).
const CAPACITY: usize = 10_000;
/// How stale the core's idea of the logger's level may get.
const LEVEL_REFRESH: Duration = Duration::from_millis(100);

/// Per process: a fork while an I/O thread queues an event must leave the child a lock
/// nobody holds (`fork.rs`); the parent writes its own records.
static QUEUE: PerProcess<Mutex<VecDeque<Event>>> = PerProcess::empty();
static DROPPED: AtomicU64 = AtomicU64::new(0);
static LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static EPOCH: OnceLock<Instant> = OnceLock::new();
/// When the level was last read, in ns since `EPOCH`.
static REFRESHED_NS: AtomicU64 = AtomicU64::new(0);

fn queue() -> std::sync::MutexGuard<'static, VecDeque<Event>> {
    QUEUE
        .get_or(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn push(event: &Event) {
    let mut q = queue();
    if q.len() >= CAPACITY {
        q.pop_front();
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
    q.push_back(event.clone());
}

/// `logging.getLogger("quill")`, given a `NullHandler` the first time.
fn logger(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    LOGGER
        .get_or_try_init(py, || {
            let logging = py.import("logging")?;
            let logger = logging.call_method1("getLogger", ("quill",))?;
            logger.call_method1("addHandler", (logging.getattr("NullHandler")?.call0()?,))?;
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

/// At a call boundary, with the GIL: the queued events become log records, and the
/// level is read again when it is due. Errors from logging handlers are Python's
/// business (`logging` reports them itself), never the call's. But a signal that
/// arrives while the logging code runs has its handler run there: a KeyboardInterrupt
/// (or any exception that is not an `Exception`) raised so is the program's, and is
/// returned for the caller to raise instead of being lost.
pub(crate) fn tick(py: Python<'_>) -> PyResult<()> {
    let _inside = super::exit::enter(py);
    let due = now_ns().saturating_sub(REFRESHED_NS.load(Ordering::Relaxed))
        >= LEVEL_REFRESH.as_nanos() as u64;
    if due {
        interrupts_only(py, refresh_level(py))?;
    }
    let events: Vec<Event> = {
        let mut q = queue();
        if q.is_empty() {
            return Ok(());
        }
        q.drain(..).collect()
    };
    interrupts_only(py, emit(py, events))
}

/// Keeps only the errors that must not be swallowed: those that are not `Exception`s.
fn interrupts_only(py: Python<'_>, result: PyResult<()>) -> PyResult<()> {
    match result {
        Err(e) if !e.is_instance_of::<pyo3::exceptions::PyException>(py) => Err(e),
        _ => Ok(()),
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

fn emit(py: Python<'_>, events: Vec<Event>) -> PyResult<()> {
    let logger = logger(py)?;
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        logger.call_method1(
            "warning",
            (
                "%d client events were dropped: no Python thread came back from a call to log them",
                dropped,
            ),
        )?;
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
        let kwargs = PyDict::new(py);
        kwargs.set_item("extra", extra)?;
        logger.call_method("log", (level, "%s", &e.message), Some(&kwargs))?;
    }
    Ok(())
}
