//! What a forked child inherits, and what it must build again.
//!
//! `fork()` copies a process's memory but only the thread that called it. A lock that
//! another thread held at that moment stays locked in the child for good, the waiters
//! of a channel and the threads of a runtime are gone, and pooled sockets are shared
//! with the parent. A child that touched any of them could wait forever.
//!
//! So the client keeps two kinds of state:
//! - what threads share behind a lock, or what only the process that made it can drive
//!   (runtimes, pools, lanes, queues), lives in a [`PerProcess`]: the child builds its
//!   own on first use and never touches the inherited one;
//! - what must cross the fork (headers, what the server has shown it understands,
//!   whether the client is closed) is lock-free (atomics, `arc_swap`), so no thread of
//!   the parent can leave it locked.
//!
//! The process is told apart by a generation that a `pthread_atfork` handler bumps in
//! every child: one atomic load per look, where `getpid()` is a system call (150-300 ns
//! here) on every glibc since 2.25.

use std::marker::PhantomData;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Once;

/// Bumped in each forked child, before `fork()` returns there.
static GENERATION: AtomicU64 = AtomicU64::new(0);
static WATCH: Once = Once::new();

#[cfg(unix)]
unsafe extern "C" fn in_child() {
    // Only the forking thread exists here: nothing else can race this store.
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// Starts counting forks (once per process; idempotent). Every [`PerProcess`] calls it,
/// so it has run before anything that must be rebuilt after a fork exists.
pub(crate) fn watch() {
    WATCH.call_once(|| {
        #[cfg(unix)]
        // SAFETY: `in_child` is async-signal-safe (one atomic add) and lives as long as
        // the library; glibc unregisters a shared object's handlers when it is unloaded.
        unsafe {
            libc::pthread_atfork(None, None, Some(in_child));
        }
    });
}

/// This process's generation: 0 in the process that loaded the library, one more in
/// each child than in its parent.
#[inline]
pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// The process a value tied to its runtime was made in (a stream and its reader task, a
/// request stream's channel). In a forked child such a value refuses to be used, with
/// [`inherited`], and is leaked rather than dropped: waking or aborting the parent's
/// tasks would take the locks of a runtime whose threads are gone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark(u64);

impl Mark {
    pub(crate) fn here() -> Mark {
        watch();
        Mark(generation())
    }

    /// Whether this is still the process that made the value.
    #[inline]
    pub(crate) fn is_here(self) -> bool {
        self.0 == generation()
    }
}

/// The error of using, in a forked child, `what` made by its parent.
pub(crate) fn inherited(what: &str) -> crate::error::QuillError {
    crate::error::QuillError::Cancelled {
        reason: format!(
            "{what} was opened before this process forked and belongs to the parent; \
             open it again in this process"
        ),
    }
}

/// A value of one process: a forked child gets its own, built on first use, and the
/// one it inherited is leaked, never dropped (dropping a runtime would wait for threads
/// the child does not have; closing a pool would close the parent's sockets).
///
/// Lock-free: looking it up is an atomic load and a compare; the first look in a new
/// process builds the value, and if two threads race, one value wins and the other is
/// dropped unseen.
///
/// ```ignore
/// let queue: PerProcess<Mutex<Vec<u8>>> = PerProcess::new(Default::default);
/// queue.get().lock().unwrap().push(1); // a child sees a new, empty, unlocked queue
/// ```
pub(crate) struct PerProcess<T> {
    current: AtomicPtr<Owned<T>>,
    _owns: PhantomData<Box<Owned<T>>>,
}

struct Owned<T> {
    /// Atomic only so that a test can mark it as inherited while others look.
    generation: AtomicU64,
    value: T,
}

impl<T> Owned<T> {
    fn is_of(&self, generation: u64) -> bool {
        self.generation.load(Ordering::Relaxed) == generation
    }
}

// Shared like the `T` it hands out; a child never touches another process's `T`.
unsafe impl<T: Send + Sync> Sync for PerProcess<T> {}
unsafe impl<T: Send> Send for PerProcess<T> {}

impl<T> PerProcess<T> {
    /// Empty until first used (for statics).
    pub(crate) const fn empty() -> PerProcess<T> {
        PerProcess {
            current: AtomicPtr::new(ptr::null_mut()),
            _owns: PhantomData,
        }
    }

    /// Holding `value` for this process.
    pub(crate) fn new(value: T) -> PerProcess<T> {
        watch();
        let held = PerProcess::empty();
        held.current
            .store(own(generation(), value), Ordering::Release);
        held
    }

    /// This process's value, built with `build` if this process has none yet.
    #[cfg_attr(not(feature = "python"), allow(dead_code))] // the Python face's log queue
    pub(crate) fn get_or(&self, build: impl FnOnce() -> T) -> &T {
        match self.get_or_try::<std::convert::Infallible>(|| Ok(build())) {
            Ok(value) => value,
        }
    }

    /// [`get_or`](Self::get_or) with a `build` that can fail (the error is returned and
    /// the next look tries again).
    pub(crate) fn get_or_try<E>(&self, build: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
        let now = generation();
        let mut seen = self.current.load(Ordering::Acquire);
        // SAFETY (every deref below): a pointer stored here is never freed while `self`
        // lives: an inherited one is leaked, and one that lost a race was never stored.
        if !seen.is_null() && unsafe { (*seen).is_of(now) } {
            return Ok(unsafe { &(*seen).value });
        }
        watch();
        let fresh = own(now, build()?);
        loop {
            match self
                .current
                .compare_exchange(seen, fresh, Ordering::AcqRel, Ordering::Acquire)
            {
                // `seen` (null or inherited) is left to leak.
                Ok(_) => return Ok(unsafe { &(*fresh).value }),
                Err(other) if !other.is_null() && unsafe { (*other).is_of(now) } => {
                    // Another thread of this process built one first: use it.
                    drop(unsafe { Box::from_raw(fresh) });
                    return Ok(unsafe { &(*other).value });
                }
                Err(other) => seen = other,
            }
        }
    }

    /// This process's value, if it has one.
    pub(crate) fn get_if_built(&self) -> Option<&T> {
        let seen = self.current.load(Ordering::Acquire);
        (!seen.is_null() && unsafe { (*seen).is_of(generation()) })
            .then(|| unsafe { &(*seen).value })
    }

    /// Marks the value as another process's, as a fork does (for tests of the rebuild).
    #[cfg(test)]
    pub(crate) fn pretend_inherited(&self) {
        let seen = self.current.load(Ordering::Acquire);
        if !seen.is_null() {
            unsafe { (*seen).generation.store(u64::MAX, Ordering::Relaxed) };
        }
    }
}

fn own<T>(generation: u64, value: T) -> *mut Owned<T> {
    Box::into_raw(Box::new(Owned {
        generation: AtomicU64::new(generation),
        value,
    }))
}

impl<T> Drop for PerProcess<T> {
    fn drop(&mut self) {
        let seen = *self.current.get_mut();
        // An inherited value is the parent's: leaked, as above.
        if !seen.is_null() && unsafe { (*seen).is_of(generation()) } {
            drop(unsafe { Box::from_raw(seen) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};

    #[test]
    fn built_once_per_process_and_rebuilt_when_inherited() {
        let builds = AtomicUsize::new(0);
        let held: PerProcess<Mutex<Vec<u32>>> = PerProcess::empty();
        let build = || {
            builds.fetch_add(1, Ordering::SeqCst);
            Mutex::new(Vec::new())
        };
        assert!(held.get_if_built().is_none());
        held.get_or(build).lock().unwrap().push(1);
        held.get_or(build).lock().unwrap().push(2);
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        // A lock held when the process "forks" must not be seen by the child.
        let guard = held.get_or(build).lock().unwrap();
        held.pretend_inherited();
        assert!(held.get_if_built().is_none());
        let fresh = held.get_or(build).lock().unwrap();
        assert!(fresh.is_empty(), "the child's value is new");
        assert_eq!(builds.load(Ordering::SeqCst), 2);
        drop((guard, fresh));
    }

    #[test]
    fn a_failed_build_is_tried_again_and_racing_builders_agree() {
        let held: Arc<PerProcess<usize>> = Arc::new(PerProcess::empty());
        assert_eq!(held.get_or_try(|| Err("no")), Err("no"));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let held = held.clone();
                std::thread::spawn(move || *held.get_or(|| i) as *const usize as usize)
            })
            .collect();
        let seen: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(
            seen.windows(2).all(|w| w[0] == w[1]),
            "every thread got the same value"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_forked_child_has_a_new_generation() {
        watch();
        let before = generation();
        // SAFETY: the child only reads an atomic and exits without unwinding.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = if generation() == before + 1 { 0 } else { 1 };
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert_eq!(generation(), before, "the parent's generation stays");
    }
}
