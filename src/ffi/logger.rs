//! The core's client events (`crate::client::events`) for Kotlin and Swift: a logger
//! interface the foreign side implements (the Kotlin extras adapt it to
//! `java.util.logging`, the Swift extras to a closure), installed once per process.
//!
//! The logger is called on the thread where the event happened (a client worker, or a
//! thread waiting in a call), so it must be quick. Events carry no header value and no
//! body (see `events`): a logger never sees a secret. An exception thrown by the logger
//! is dropped here; it never reaches the call.

use std::sync::Arc;

use crate::client::events::{self, Event, EventKind, Level};
use crate::error::QuillError;

/// How much an event matters.
#[uniffi::remote(Enum)]
pub enum Level {
    Debug,
    Info,
    Warning,
}

/// What happened.
#[uniffi::remote(Enum)]
pub enum EventKind {
    ConnectionOpened,
    ConnectionReused,
    CallFinished,
    CallFailed,
    RetryScheduled,
    Timeout,
    StreamCancelled,
    DecodeLimit,
}

/// One client event.
#[derive(uniffi::Record)]
pub struct LogEvent {
    pub level: Level,
    pub kind: EventKind,
    /// The call's `service/method`, or the server's `host:port` for connection events.
    pub target: String,
    /// The HTTP status, when there is one.
    pub status: Option<u16>,
    /// Time taken, in microseconds (see the kind for what was timed).
    pub elapsed_us: u64,
    /// One line for a log; never a header value or a body.
    pub message: String,
}

impl From<&Event> for LogEvent {
    fn from(e: &Event) -> Self {
        LogEvent {
            level: e.level,
            kind: e.kind,
            target: e.target.clone(),
            status: e.status,
            elapsed_us: u64::try_from(e.elapsed.as_micros()).unwrap_or(u64::MAX),
            message: e.message.clone(),
        }
    }
}

/// Receives the client events of this process at or above the level it was installed
/// with (`set_logger`).
#[uniffi::export(with_foreign)]
pub trait QuillLogger: Send + Sync {
    /// One event; called on the thread where it happened, so keep it quick.
    fn log(&self, event: LogEvent) -> Result<(), QuillError>;
}

/// Installs `logger` for events at `level` and above, replacing any earlier one; `None`
/// removes it. With no logger installed an event costs one atomic load.
#[uniffi::export]
pub fn set_logger(logger: Option<Arc<dyn QuillLogger>>, level: Level) {
    events::set_listener(
        logger.map(|logger| -> events::Listener {
            Arc::new(move |event: &Event| {
                // A failing foreign logger must not fail the call that reported.
                let _ = logger.log(LogEvent::from(event));
            })
        }),
        level,
    );
}

/// An exception thrown by a foreign logger, as uniffi reports it.
impl From<uniffi::UnexpectedUniFFICallbackError> for QuillError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        QuillError::InvalidArgument {
            reason: format!("the logger failed: {}", e.reason),
        }
    }
}
