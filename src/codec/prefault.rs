//! Faulting in a large receive buffer's pages on a helper thread, ahead of the bytes
//! being copied into it.
//!
//! A fresh 64 MiB buffer costs the thread that fills it a page fault (and the kernel's
//! zeroing of the page) per page it first touches: about a third of a tensor download's
//! CPU time on this project's benchmarks (docs/performance.md), paid on the one thread
//! that also reads the socket. [`Prefault`] moves that work to a helper thread, which
//! asks the kernel to populate the pages (`MADV_POPULATE_WRITE`, Linux 5.14+) a bounded
//! distance ahead of the writer: the two run side by side on a machine with a core to
//! spare, and the writer then finds its pages already there.
//!
//! The helper never writes to the buffer (populating a page leaves its contents as they
//! are), stays at most [`LEAD`] bytes ahead of what has arrived (a peer that declares a
//! large tensor and stalls costs no more memory than that), and is stopped, and waited
//! for, before the buffer can move or be freed: see [`Prefault::stop`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// How far ahead of the bytes received the helper populates pages.
pub(crate) const LEAD: usize = 16 * 1024 * 1024;
/// The writer asks the helper for more each time it has copied this much.
const STAGE: usize = 4 * 1024 * 1024;
/// Pages populated per `madvise` call: the longest the writer's stop waits.
const STEP: usize = 2 * 1024 * 1024;
/// Helpers running at once, process-wide; a buffer beyond them is filled as before.
const MAX_HELPERS: usize = 4;

static HELPERS: AtomicUsize = AtomicUsize::new(0);

/// The helper of one buffer; the buffer's owner reports progress with
/// [`advance`](Self::advance) and calls [`stop`](Self::stop) before the buffer moves or
/// is freed (dropping a `Prefault` stops it too).
#[derive(Debug)]
pub(crate) struct Prefault {
    job: Arc<Job>,
    /// Bytes written when the writer next asks for more.
    next_request: usize,
}

#[derive(Debug, Default)]
struct Job {
    /// How far (in bytes from the buffer's start) the helper may populate.
    target: Mutex<usize>,
    more: Condvar,
    stop: AtomicBool,
    /// Held by the helper while it populates a step, so that [`Prefault::stop`] can wait
    /// for that step to end.
    step: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these are held; a poisoned lock still guards valid data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Prefault {
    /// Starts a helper for the `len` bytes at `ptr`, or `None` where the platform has no
    /// way to populate pages, or enough helpers run already.
    ///
    /// # Safety
    /// `ptr..ptr + len` must be one live, writable allocation that neither moves nor is
    /// freed until [`stop`](Self::stop) has returned (or the `Prefault` is dropped).
    pub(crate) unsafe fn start(ptr: *const u8, len: usize) -> Option<Prefault> {
        if !cfg!(target_os = "linux") {
            return None;
        }
        if HELPERS.fetch_add(1, Ordering::AcqRel) >= MAX_HELPERS {
            HELPERS.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let job = Arc::new(Job::default());
        *lock(&job.target) = LEAD;
        let worker = job.clone();
        let (base, len) = (ptr as usize, len);
        let spawned = std::thread::Builder::new()
            .name("quill-prefault".into())
            .spawn(move || {
                worker.run(base, len);
                HELPERS.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            HELPERS.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Prefault {
            job,
            next_request: STAGE,
        })
    }

    /// The writer has filled the first `written` bytes: lets the helper go on to
    /// [`LEAD`] bytes beyond them. Cheap: it takes a lock once per [`STAGE`].
    pub(crate) fn advance(&mut self, written: usize) {
        if written < self.next_request {
            return;
        }
        self.next_request = written + STAGE;
        let mut target = lock(&self.job.target);
        *target = written.saturating_add(LEAD);
        self.job.more.notify_one();
    }

    /// Ends the helper's work on the buffer: when this returns, it touches the buffer
    /// no more (it may still be finishing a step of at most [`STEP`] bytes until then).
    pub(crate) fn stop(&self) {
        self.job.stop.store(true, Ordering::Release);
        {
            let _target = lock(&self.job.target);
            self.job.more.notify_one();
        }
        drop(lock(&self.job.step));
    }
}

impl Drop for Prefault {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Job {
    /// The helper thread: populates the whole pages of `base..base + len` in steps, up
    /// to the target the writer sets, until done or stopped.
    fn run(&self, base: usize, len: usize) {
        const PAGE: usize = 4096;
        let start = base.next_multiple_of(PAGE);
        let end = (base + len) & !(PAGE - 1);
        let mut at = start;
        while at < end {
            let limit = {
                let mut target = lock(&self.target);
                loop {
                    if self.stop.load(Ordering::Acquire) {
                        return;
                    }
                    // Whole pages only: each step must start on a page boundary.
                    let limit = ((base + *target) & !(PAGE - 1)).min(end);
                    if at < limit {
                        break limit;
                    }
                    target = self.more.wait(target).unwrap_or_else(|p| p.into_inner());
                }
            };
            let _step = lock(&self.step);
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let n = STEP.min(limit - at);
            if !populate(at, n) {
                return; // an older kernel, or no memory: the writer faults as before
            }
            at += n;
        }
    }
}

#[cfg(target_os = "linux")]
fn populate(at: usize, len: usize) -> bool {
    // SAFETY: `at..at + len` is whole pages inside the allocation `Prefault::start` was
    // given, which its owner keeps in place until `stop` (which waits for this step) has
    // returned. MADV_POPULATE_WRITE only faults pages in, as a write would, without
    // writing: bytes the owner already copied there stay as they are.
    unsafe { libc::madvise(at as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn populate(_at: usize, _len: usize) -> bool {
    false
}
