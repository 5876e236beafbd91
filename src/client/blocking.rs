//! Blocking calls, driven to completion on the calling thread.
//!
//! A call spawned onto the client's worker threads costs two thread wake-ups (caller to
//! worker, worker back to caller); on loopback that is most of a 1 KiB call. A caller
//! that blocks anyway drives the client's [`Lane`](super::runtime::Lane) instead: the
//! request is written, the socket polled and the answer read on its own thread, as a
//! single-threaded native reqwest loop does. Each lane serves one thread at a time, and
//! a client makes up to four as threads need them; a call that finds them all busy runs
//! on the shared workers. Threads sharing one client run their calls in parallel.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::time::timeout;

use super::call::CallContext;
use super::errors::panic_error;
use super::runtime::{spawn_on, LaneGuard};
use crate::error::{QuillError, Result};

/// How often a blocking wait calls its `tick` (the Python face checks signals there, so
/// Ctrl-C interrupts a long call within this time).
pub(crate) const TICK: Duration = Duration::from_millis(50);

/// Runs `job(ctx)` to completion on the calling thread — on `lane` when the caller got
/// it (`ctx` then holds the lane's pool), else on the workers of `handle` — calling
/// `tick` (when given) every [`TICK`] while it waits; an error from `tick` drops the
/// call (cancelling it) and is returned. Without a `tick` a lane call arms no timer of
/// its own: one timer less per call on the hot path of Rust and Kotlin callers. A panic
/// inside the call becomes [`QuillError::Cancelled`].
pub(crate) fn drive<T, F, E>(
    handle: Handle,
    lane: Option<LaneGuard>,
    ctx: CallContext,
    job: impl FnOnce(CallContext) -> F,
    mut tick: Option<impl FnMut() -> std::result::Result<(), E>>,
) -> std::result::Result<T, E>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
    E: From<QuillError>,
{
    // tokio forbids blocking a runtime thread; say so instead of panicking.
    if Handle::try_current().is_ok() {
        return Err(QuillError::invalid(
            "a blocking call cannot run inside an async runtime: await the async method instead",
        )
        .into());
    }
    match lane {
        Some(lane) => {
            let caught_up = catch_unwind(AssertUnwindSafe(|| lane.catch_up()));
            if let Err(panic) = caught_up {
                return Err(panic_error(panic).into());
            }
            let mut call = pin!(job(ctx));
            let Some(tick) = tick.as_mut() else {
                let done = catch_unwind(AssertUnwindSafe(|| lane.block_on(&mut call)));
                return match done {
                    Ok(result) => result.map_err(E::from),
                    Err(panic) => Err(panic_error(panic).into()),
                };
            };
            loop {
                let step = catch_unwind(AssertUnwindSafe(|| {
                    lane.block_on(async { timeout(TICK, &mut call).await })
                }));
                match step {
                    Ok(Ok(result)) => return result.map_err(E::from),
                    Ok(Err(_elapsed)) => tick()?,
                    Err(panic) => return Err(panic_error(panic).into()),
                }
            }
        }
        None => {
            let mut task = spawn_on(&handle, job(ctx));
            let Some(tick) = tick.as_mut() else {
                return handle.block_on(&mut task).and_then(|r| r).map_err(E::from);
            };
            loop {
                match handle.block_on(async { timeout(TICK, &mut task).await }) {
                    Ok(joined) => return joined.and_then(|r| r).map_err(E::from),
                    Err(_elapsed) => tick()?,
                }
            }
        }
    }
}

/// The `tick` of callers with nothing to do while they wait.
pub(crate) const NO_TICK: Option<fn() -> Result<()>> = None;
