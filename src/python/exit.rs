//! Exit safety: once the interpreter begins to finalize, no thread with quill's Rust
//! frames on its stack takes the GIL again.
//!
//! Why: CPython 3.9–3.13 end every thread but the finalizing one that waits for the GIL
//! after finalization began, with `pthread_exit`. The forced unwind that follows aborts
//! the process (SIGABRT) as soon as it reaches a Rust `extern "C"` boundary or a
//! `catch_unwind`, and every PyO3 method has both. A daemon thread inside a quill call is
//! exactly such a thread: it released the GIL for the network wait and takes it back when
//! the answer, or a signal-check tick, arrives. (3.14 parks such threads instead.)
//!
//! The rule, kept by every place in the face that takes or holds the GIL from Rust:
//! - A thread counts itself in [`ACTIVE`] while it may hold or take the GIL inside
//!   quill's frames: [`enter`] at the top of methods that run Python code or wait,
//!   [`detach`] to leave the count for a wait and come back, [`attach`] for a brief
//!   visit from a detached wait, [`from_foreign_thread`] for runtime threads, and
//!   [`attach_from_any_thread`] for drops that may happen on either kind of thread.
//! - quill's `atexit` hook ([`_mark_shutdown`]) raises [`SHUTTING_DOWN`] and waits, with
//!   the GIL released, until no other thread is counted. CPython runs atexit hooks before
//!   it marks itself finalizing, so the handshake completes while the GIL still moves
//!   freely.
//! - From then on, a thread that would take the GIL from quill's frames does not: a
//!   runtime thread gives up (nobody is left to read its result) and a Python thread parks
//!   for good, detached, as 3.14 does; the process exit ends it. The finalizing thread (the
//!   one that ran the hook) is never stopped, so later atexit hooks and `__del__` methods
//!   may still use quill.
//!
//! Counting happens before the flag is read, and the hook sets the flag before it reads
//! the count (both `SeqCst`): either the thread sees the flag or the hook sees the thread.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// Raised by the atexit hook; never lowered in this process.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// Threads counted as possibly holding or taking the GIL inside quill's frames.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Longest wait at exit for counted threads to leave: Python code running inside a quill
/// frame (a user's iterator, a JSON `default` hook) normally returns in microseconds; one
/// that blocks longer must not hang the exit.
const EXIT_DRAIN: Duration = Duration::from_secs(2);

thread_local! {
    /// Whether this thread is counted in [`ACTIVE`] right now.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
    /// Set on the thread that ran the atexit hook: it finalizes, so it is never stopped.
    static FINALIZER: Cell<bool> = const { Cell::new(false) };
}

/// Counts this thread in; `false` (and not counted) once it must stay out of Python.
fn arrive() -> bool {
    ACTIVE.fetch_add(1, SeqCst);
    if SHUTTING_DOWN.load(SeqCst) && !FINALIZER.get() {
        ACTIVE.fetch_sub(1, SeqCst);
        return false;
    }
    COUNTED.set(true);
    true
}

fn depart() {
    COUNTED.set(false);
    ACTIVE.fetch_sub(1, SeqCst);
}

/// Where a Python thread ends up when it may not take the GIL back. Must be called with
/// the GIL released.
fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

/// Proof that this thread is counted; see the module docs. Not `Send`: it describes the
/// thread that made it. Only the outermost one (`owns`) uncounts the thread on drop, so
/// Python → quill → Python → quill nests.
pub(crate) struct Inside {
    owns: bool,
    _thread_bound: PhantomData<*const ()>,
}

impl Inside {
    fn counted(owns: bool) -> Inside {
        Inside {
            owns,
            _thread_bound: PhantomData,
        }
    }
}

/// Counts this (attached) thread in for the rest of the current method. After the exit
/// hook ran, a thread other than the finalizing one releases the GIL and parks instead.
pub(crate) fn enter(py: Python<'_>) -> Inside {
    if COUNTED.get() {
        return Inside::counted(false);
    }
    if !arrive() {
        let () = py.detach(|| park_forever());
    }
    Inside::counted(true)
}

impl Drop for Inside {
    fn drop(&mut self) {
        if self.owns {
            depart();
        }
    }
}

/// Leaves the count for a detached stretch; on drop comes back, or parks if the exit
/// hook ran meanwhile (the GIL is not held then, so parking blocks nobody).
struct Away;

impl Away {
    fn new() -> Away {
        if COUNTED.get() {
            depart();
        }
        Away
    }
}

impl Drop for Away {
    fn drop(&mut self) {
        if !arrive() {
            park_forever();
        }
    }
}

/// `py.detach(f)` that never takes the GIL back during finalization: runs `f` with the
/// GIL released and uncounted, then returns to Python only if the exit hook has not run.
pub(crate) fn detach<T, F>(py: Python<'_>, f: F) -> T
where
    T: Send,
    F: Send + FnOnce() -> T,
{
    let _inside = enter(py);
    py.detach(|| {
        let _away = Away::new();
        f()
    })
}

/// Takes the GIL for `f` from inside [`detach`] (a signal check during a wait), or parks
/// for good if the exit hook has run.
pub(crate) fn attach<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
    if !arrive() {
        park_forever();
    }
    let _visit = Inside::counted(true);
    Python::attach(f)
}

/// Runs `f` attached to Python from a thread Python did not start (a runtime worker),
/// unless the exit hook has run: `None` then.
pub(crate) fn from_foreign_thread<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    if !arrive() {
        return None;
    }
    let _visit = Inside::counted(true);
    KEPT.with(KeptState::keep);
    Python::try_attach(f)
}

thread_local! {
    /// The Python thread state a runtime thread keeps for its life.
    static KEPT: KeptState = const { KeptState(Cell::new(None)) };
}

/// A runtime thread's own Python thread state, made at its first visit and kept until
/// the thread ends. Without it every visit (an async call completing) would make a
/// thread state and delete it again, and each takes the interpreter's thread list lock:
/// a fork at that moment leaves the lock held in the child, which then hangs inside
/// `os.fork()` on CPython versions without the fix for gh-112275 (3.9-3.11 before
/// 3.9.20, 3.10.15 and 3.11.10).
/// Keeping one state per thread takes that lock once per thread instead of once per
/// call.
struct KeptState(Cell<Option<pyo3::ffi::PyGILState_STATE>>);

impl KeptState {
    /// Makes this thread's state, once; the GIL is released right away. Called while
    /// counted (after `arrive`), so the exit hook has not run.
    fn keep(&self) {
        if self.0.get().is_some() || unsafe { pyo3::ffi::Py_IsInitialized() } == 0 {
            return;
        }
        // A Python thread (one with a thread state: a drop on it lands here too) has
        // its own state and may hold the GIL right now: leave it alone.
        if !unsafe { pyo3::ffi::PyGILState_GetThisThreadState() }.is_null() {
            return;
        }
        // SAFETY: the interpreter is initialized and not finalizing (counted), and this
        // thread holds no thread state: `Ensure` makes one and takes the GIL, which
        // `SaveThread` gives back at once, leaving the state kept for later visits.
        unsafe {
            let state = pyo3::ffi::PyGILState_Ensure();
            pyo3::ffi::PyEval_SaveThread();
            self.0.set(Some(state));
        }
    }
}

impl Drop for KeptState {
    /// At thread exit: deletes the kept state, unless the interpreter is shutting down
    /// (finalization then deletes it, and taking the GIL here is what must not happen).
    fn drop(&mut self) {
        let Some(state) = self.0.get() else { return };
        if !arrive() {
            return;
        }
        // SAFETY: counted, so the interpreter is alive; this thread's kept state is
        // made current again, and releasing the `Ensure` above deletes it (and the GIL).
        unsafe {
            let tstate = pyo3::ffi::PyGILState_GetThisThreadState();
            if !tstate.is_null() {
                pyo3::ffi::PyEval_RestoreThread(tstate);
                pyo3::ffi::PyGILState_Release(state);
            }
        }
        depart();
    }
}

/// Runs `f` attached to Python on whatever thread calls it, for work done where a last
/// reference happens to drop (a runtime worker, a Python thread inside or outside quill):
/// a thread already counted just attaches, any other arrives as in
/// [`from_foreign_thread`]. `None` once the exit hook has run or Python is gone.
pub(crate) fn attach_from_any_thread<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    if COUNTED.get() {
        // Arriving again would uncount the thread on the way out, under its outer guard.
        return Python::try_attach(f);
    }
    from_foreign_thread(f)
}

/// Called once at interpreter exit (registered with atexit by `quill/__init__.py`),
/// while the interpreter is still whole: stops new entries into Python from quill's
/// frames on other threads, then waits (GIL released) until those already inside left.
#[pyfunction]
pub(crate) fn _mark_shutdown(py: Python<'_>) {
    FINALIZER.set(true);
    SHUTTING_DOWN.store(true, SeqCst);
    let own = usize::from(COUNTED.get());
    py.detach(|| {
        let deadline = Instant::now() + EXIT_DRAIN;
        while ACTIVE.load(SeqCst) > own && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// Registered with `os.register_at_fork(after_in_child=...)`: the child has only the
/// forking thread, so the counts of the parent's other threads no longer mean anything.
#[pyfunction]
pub(crate) fn _after_fork_in_child() {
    ACTIVE.store(usize::from(COUNTED.get()), SeqCst);
}
