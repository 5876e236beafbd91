//! What clients report as they work: connections opened and reused, calls finished or
//! failed, retries scheduled, timeouts, cancelled streams, decompression limits hit.
//!
//! One listener per process receives them (each face installs its own: the Python face
//! forwards them to the `quill` logger). Nothing is built while no listener wants an
//! event's level: [`enabled`] is one relaxed atomic load, and the text of an event is
//! made only after it passed, so a client that nobody listens to pays nothing more.
//!
//! An event never holds a header value, a request or a response body: only the call's
//! `service/method`, the server's address, a status, the time taken and a message
//! written here (error texts of the core, which never include headers either).
//!
//! ```
//! use quill::client::events::{self, Level};
//! use std::sync::{Arc, Mutex};
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let sink = seen.clone();
//! events::set_listener(Some(Arc::new(move |e: &events::Event| {
//!     sink.lock().unwrap().push(e.kind);
//! })), Level::Debug);
//! assert!(events::enabled(Level::Info));
//! events::set_listener(None, Level::Debug);
//! assert!(!events::enabled(Level::Warning));
//! ```

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use std::time::Duration;

/// How much an event matters, as logging frameworks grade it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Level {
    /// Routine detail: connections, each finished call.
    Debug = 1,
    /// Worth knowing in normal operation: retries, failed calls, cancelled streams.
    Info = 2,
    /// Something a user likely wants to act on: timeouts, size limits hit.
    Warning = 3,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// A new connection to the server is up (`elapsed`: the time to connect).
    ConnectionOpened,
    /// A call went out on a connection an earlier call of the client used.
    ConnectionReused,
    /// A call got its 2xx answer (`elapsed` since the call began; for a stream, the
    /// time to its response headers).
    CallFinished,
    /// A call ended with an error (`status` when the server answered).
    CallFailed,
    /// A failed attempt of an idempotent call will be repeated (`elapsed`: the wait).
    RetryScheduled,
    /// A call or stream ran past its timeout or idle timeout.
    Timeout,
    /// A stream was cancelled by its consumer (cancel, close or drop before the end).
    StreamCancelled,
    /// A response was refused for exceeding `max_decoded_size`.
    DecodeLimit,
}

/// One event, as the listener receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    pub level: Level,
    pub kind: EventKind,
    /// The call's `service/method`, or the server's `host:port` for connection events.
    pub target: String,
    /// The HTTP status, when there is one.
    pub status: Option<u16>,
    pub elapsed: Duration,
    /// One line for a log; never a header value or a body.
    pub message: String,
    /// Who made the call: the [`this_thread`] id of the thread that started it (an
    /// async call's, too, wherever it runs), or 0 for events of no caller's call.
    pub caller: u64,
}

/// Receives every event at or above the level it was installed with. Called on the
/// thread where the event happened (a client worker, or a thread blocking in a call):
/// it must be quick and must not call back into the client.
pub type Listener = Arc<dyn Fn(&Event) + Send + Sync>;

const OFF: u8 = u8::MAX;

static THRESHOLD: AtomicU8 = AtomicU8::new(OFF);
/// Lock-free: events are delivered on any thread, and a fork while one is delivered
/// must leave the child nothing locked (`fork.rs`).
static LISTENER: ArcSwapOption<Listener> = ArcSwapOption::const_empty();

/// Installs `listener` for events at `level` and above (or removes it with `None`).
pub fn set_listener(listener: Option<Listener>, level: Level) {
    let on = listener.is_some();
    LISTENER.store(listener.map(Arc::new));
    THRESHOLD.store(if on { level as u8 } else { OFF }, Ordering::Relaxed);
}

/// Changes the level of the installed listener (`None`: stop events without removing
/// it). A face whose logging levels change at run time calls this as they change.
pub fn set_level(level: Option<Level>) {
    let has_listener = LISTENER.load().is_some();
    let value = match level {
        Some(l) if has_listener => l as u8,
        _ => OFF,
    };
    THRESHOLD.store(value, Ordering::Relaxed);
}

/// Whether an event at `level` would reach a listener.
#[inline]
pub fn enabled(level: Level) -> bool {
    level as u8 >= THRESHOLD.load(Ordering::Relaxed)
}

/// Reports an event of `kind` at `level`; `describe` fills in the details and runs
/// only when the event is wanted.
#[inline]
pub(crate) fn emit(level: Level, kind: EventKind, describe: impl FnOnce(&mut Event)) {
    if enabled(level) {
        deliver(level, kind, describe);
    }
}

#[cold]
fn deliver(level: Level, kind: EventKind, describe: impl FnOnce(&mut Event)) {
    let mut event = Event {
        level,
        kind,
        target: String::new(),
        status: None,
        elapsed: Duration::ZERO,
        message: String::new(),
        caller: current_caller(),
    };
    describe(&mut event);
    if let Some(listener) = LISTENER.load_full() {
        // A panicking listener must not take the call down with it.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| listener(&event)));
    }
}

tokio::task_local! {
    /// The caller a task works for, when it was spawned for one.
    static CALLER: u64;
}

thread_local! {
    static THREAD_ID: Cell<u64> = const { Cell::new(0) };
    /// Set on a client's worker threads, whose own id belongs to no caller.
    static ON_WORKER: Cell<bool> = const { Cell::new(false) };
}

static NEXT_THREAD_ID: AtomicU64 = AtomicU64::new(1);

/// This thread's caller id: never 0, the same for every call it makes, and not reused
/// by another thread of the process.
///
/// ```
/// let id = quill::client::events::this_thread();
/// assert_eq!(id, quill::client::events::this_thread());
/// assert_ne!(id, std::thread::spawn(quill::client::events::this_thread).join().unwrap());
/// ```
pub fn this_thread() -> u64 {
    THREAD_ID.with(|id| {
        if id.get() == 0 {
            id.set(NEXT_THREAD_ID.fetch_add(1, Ordering::Relaxed));
        }
        id.get()
    })
}

/// Marks this thread as a client worker (from the runtime's thread start hook).
pub(crate) fn mark_worker() {
    ON_WORKER.with(|w| w.set(true));
}

/// The caller that work running here is for: the task's when it was spawned for one,
/// else this thread's (0 on a worker: there the work is no caller's).
pub(crate) fn current_caller() -> u64 {
    CALLER.try_with(|caller| *caller).unwrap_or_else(|_| {
        if ON_WORKER.with(Cell::get) {
            0
        } else {
            this_thread()
        }
    })
}

/// `fut`, attributed to `caller` wherever it is polled (a task spawned for a call
/// carries its caller with it).
pub(crate) fn for_caller<F: std::future::Future>(
    caller: u64,
    fut: F,
) -> impl std::future::Future<Output = F::Output> {
    CALLER.scope(caller, fut)
}

/// `1.234 ms` or `2.5 s`: elapsed times in event messages.
pub(crate) fn millis(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1000.0 {
        format!("{ms:.3} ms")
    } else {
        format!("{:.3} s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    // The listener is process-wide and other tests' calls may emit meanwhile: only
    // events with this test's target are counted.
    #[test]
    fn levels_filter_and_details_are_built_lazily() {
        let seen: Arc<Mutex<Vec<Event>>> = Arc::default();
        let sink = seen.clone();
        set_listener(
            Some(Arc::new(move |e: &Event| {
                sink.lock().unwrap().push(e.clone())
            })),
            Level::Info,
        );
        let mut built = false;
        emit(Level::Debug, EventKind::CallFinished, |_| built = true);
        assert!(!built, "a debug event is not even described at info level");
        emit(Level::Warning, EventKind::Timeout, |e| {
            e.target = "events.test/M".into();
            e.elapsed = Duration::from_millis(5);
        });
        set_level(Some(Level::Debug));
        emit(Level::Debug, EventKind::CallFinished, |e| {
            e.target = "events.test/M".into();
            e.status = Some(200);
        });
        set_level(None);
        emit(Level::Warning, EventKind::Timeout, |_| {
            panic!("not delivered")
        });
        set_listener(
            Some(Arc::new(|_: &Event| panic!("a listener that panics"))),
            Level::Debug,
        );
        emit(Level::Info, EventKind::RetryScheduled, |_| {});
        set_listener(None, Level::Debug);
        let seen: Vec<Event> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.target == "events.test/M")
            .cloned()
            .collect();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            (seen[0].kind, seen[0].target.as_str(), seen[0].level),
            (EventKind::Timeout, "events.test/M", Level::Warning)
        );
        assert_eq!(
            (seen[1].kind, seen[1].status),
            (EventKind::CallFinished, Some(200))
        );
        assert_eq!(millis(Duration::from_micros(1500)), "1.500 ms");
        assert_eq!(millis(Duration::from_millis(2500)), "2.500 s");
    }

    #[test]
    fn callers_are_threads_and_travel_with_their_tasks() {
        let me = this_thread();
        assert_ne!(me, 0);
        assert_eq!(current_caller(), me);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .on_thread_start(mark_worker)
            .build()
            .unwrap();
        let on_worker = rt.block_on(async { tokio::spawn(async { current_caller() }).await });
        assert_eq!(on_worker.unwrap(), 0, "a worker's own work is no caller's");
        let carried =
            rt.block_on(async { tokio::spawn(for_caller(me, async { current_caller() })).await });
        assert_eq!(carried.unwrap(), me);
    }
}
