//! The last large receive buffer freed, kept for a moment for the next large reply.
//!
//! A fresh 64 MiB receive buffer costs the kernel's zeroing of every page before a byte
//! can land in it: on this project's benchmarks that was a third of a tensor download's
//! CPU time, on a machine whose two cores the server also needs (docs/performance.md).
//! A client that downloads tensors in a loop frees one as the next arrives, so the
//! buffer of a dropped tensor is parked here, and the next [`ReceiveBuffer`] of a
//! similar size takes it instead of asking the allocator for new pages.
//!
//! What it holds is bounded: one buffer (of 4 MiB to 64 MiB, see `buffer.rs`), for at
//! most about two [`IDLE`] periods after buffers stop being parked: a helper thread then
//! frees it, and ends. Parking and taking are single atomic swaps, so a thread that forks
//! while another parks leaves the child no held lock; a child whose parent's helper does
//! not exist starts its own.
//!
//! [`ReceiveBuffer`]: super::ReceiveBuffer

use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;

/// How long no buffer must be parked before the helper frees the one parked last (it
/// looks once per period, so a buffer goes within two).
pub(crate) const IDLE: Duration = Duration::from_secs(1);

/// The process's spare, used by every [`ReceiveBuffer`](super::ReceiveBuffer).
pub(crate) static SPARE: Spare = Spare::new(IDLE);

/// One slot for a freed buffer.
///
/// ```ignore
/// static S: Spare = Spare::new(IDLE);
/// S.park(BytesMut::with_capacity(8 << 20));
/// assert!(S.take(8 << 20).is_some()); // empty, with its 8 MiB of pages
/// ```
pub(crate) struct Spare {
    slot: AtomicPtr<Parked>,
    /// The process whose helper watches the slot (0: none); a forked child sees its
    /// parent's id, and starts a helper of its own.
    helper_pid: AtomicU32,
    /// Buffers parked so far: the helper frees a buffer once this stood still for a
    /// whole `idle` period.
    parks: AtomicU64,
    idle: Duration,
}

struct Parked {
    buf: BytesMut,
    /// Its number among all buffers parked (`parks` once it was counted).
    number: u64,
}

impl Spare {
    pub(crate) const fn new(idle: Duration) -> Spare {
        Spare {
            slot: AtomicPtr::new(ptr::null_mut()),
            helper_pid: AtomicU32::new(0),
            parks: AtomicU64::new(0),
            idle,
        }
    }

    /// The parked buffer, emptied, when it holds at least `expected` bytes and at most
    /// twice that (a small reply does not pin a large buffer); otherwise it stays.
    pub(crate) fn take(&self, expected: usize) -> Option<BytesMut> {
        if self.slot.load(Ordering::SeqCst).is_null() {
            return None;
        }
        let parked = self.swap(ptr::null_mut())?;
        let capacity = parked.buf.capacity();
        if capacity >= expected && capacity / 2 <= expected {
            return Some(parked.buf);
        }
        self.put_back(parked);
        None
    }

    /// Parks `buf` (emptied) for the next taker; a buffer parked before it is freed.
    pub(crate) fn park(&'static self, mut buf: BytesMut) {
        buf.clear();
        // Counted before it lands, so a helper that finds the count unchanged has not
        // yet been able to see this buffer in the slot.
        let number = self.parks.fetch_add(1, Ordering::SeqCst) + 1;
        drop(self.swap(Box::into_raw(Box::new(Parked { buf, number }))));
        self.watch();
    }

    /// Puts `ptr` (null or from `Box::into_raw`) in the slot and returns what was there.
    fn swap(&self, new: *mut Parked) -> Option<Box<Parked>> {
        let old = self.slot.swap(new, Ordering::SeqCst);
        // SAFETY: the slot only ever holds null or a pointer from `Box::into_raw`, and
        // the swap gave this thread the only copy of `old`.
        (!old.is_null()).then(|| unsafe { Box::from_raw(old) })
    }

    /// Back into the slot only if it is still empty: a buffer parked meanwhile is newer.
    fn put_back(&self, parked: Box<Parked>) {
        let ptr = Box::into_raw(parked);
        let empty = ptr::null_mut();
        if self
            .slot
            .compare_exchange(empty, ptr, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            // SAFETY: `ptr` came from `Box::into_raw` above and was not stored.
            drop(unsafe { Box::from_raw(ptr) });
        }
    }

    /// Makes sure a helper of this process watches the slot.
    fn watch(&'static self) {
        let pid = std::process::id();
        let current = self.helper_pid.load(Ordering::SeqCst);
        if current == pid
            || self
                .helper_pid
                .compare_exchange(current, pid, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return;
        }
        let started = std::thread::Builder::new()
            .name("quill-spare".to_owned())
            .spawn(move || self.helper(pid));
        if started.is_err() {
            // No thread to free it later: keep nothing.
            self.helper_pid.store(0, Ordering::SeqCst);
            drop(self.swap(ptr::null_mut()));
        }
    }

    /// Frees the parked buffer unless it came after the `seen`-th park (parked between
    /// the helper's count and this call: not idle), which is put back; returns whether
    /// it was.
    fn free_unless_parked_after(&self, seen: u64) -> bool {
        match self.swap(ptr::null_mut()) {
            Some(parked) if parked.number > seen => {
                self.put_back(parked);
                true
            }
            _ => false,
        }
    }

    /// Frees the parked buffer once a whole `idle` period has passed without a buffer
    /// parked; ends when the slot is empty.
    fn helper(&self, pid: u32) {
        let mut seen = self.parks.load(Ordering::SeqCst);
        loop {
            std::thread::sleep(self.idle);
            let parks = self.parks.load(Ordering::SeqCst);
            if parks != seen {
                seen = parks;
                continue;
            }
            if self.free_unless_parked_after(seen) {
                continue;
            }
            self.helper_pid.store(0, Ordering::SeqCst);
            // A buffer parked after that swap saw this helper still registered and
            // started none: carry on for it, unless another helper has started since.
            let parked_since = !self.slot.load(Ordering::SeqCst).is_null();
            if !parked_since
                || self
                    .helper_pid
                    .compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const MIB: usize = 1 << 20;

    fn spare(idle: Duration) -> &'static Spare {
        Box::leak(Box::new(Spare::new(idle)))
    }

    #[test]
    fn a_parked_buffer_goes_to_the_next_reply_of_a_similar_size_once() {
        let s = spare(Duration::from_secs(60));
        let mut buf = BytesMut::with_capacity(8 * MIB);
        buf.extend_from_slice(&[1; 100]);
        let at = buf.as_ptr();
        s.park(buf);
        // Too large a reply for it, and too small: it stays parked.
        assert!(s.take(8 * MIB + 1).is_none());
        assert!(s.take(4 * MIB - 1).is_none());
        let reused = s.take(5 * MIB).expect("a fitting buffer is taken");
        assert_eq!(reused.as_ptr(), at, "the same memory");
        assert!(reused.is_empty() && reused.capacity() >= 8 * MIB);
        assert!(s.take(5 * MIB).is_none(), "taken only once");
    }

    #[test]
    fn a_newer_buffer_replaces_the_parked_one() {
        let s = spare(Duration::from_secs(60));
        s.park(BytesMut::with_capacity(8 * MIB));
        let newer = BytesMut::with_capacity(32 * MIB);
        let at = newer.as_ptr();
        s.park(newer);
        assert!(s.take(8 * MIB).is_none(), "the 8 MiB one is gone");
        assert_eq!(s.take(32 * MIB).map(|b| b.as_ptr()), Some(at));
    }

    #[test]
    fn a_buffer_nobody_takes_is_freed_and_the_helper_ends() {
        let idle = Duration::from_millis(30);
        let s = spare(idle);
        s.park(BytesMut::with_capacity(8 * MIB));
        assert_eq!(s.helper_pid.load(Ordering::SeqCst), std::process::id());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !s.slot.load(Ordering::SeqCst).is_null() || s.helper_pid.load(Ordering::SeqCst) != 0 {
            assert!(
                Instant::now() < deadline,
                "the parked buffer was never freed"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // A later buffer starts a new helper, which frees it in turn.
        s.park(BytesMut::with_capacity(8 * MIB));
        assert_eq!(s.helper_pid.load(Ordering::SeqCst), std::process::id());
        while !s.slot.load(Ordering::SeqCst).is_null() {
            assert!(
                Instant::now() < deadline,
                "the second buffer was never freed"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_buffer_parked_while_the_helper_looks_is_put_back_not_freed() {
        let s = spare(Duration::from_secs(60));
        s.park(BytesMut::with_capacity(8 * MIB));
        // The helper counts the parks and finds no new one...
        let seen = s.parks.load(Ordering::SeqCst);
        // ...then a buffer is parked before it swaps the slot out: that one stays.
        let newer = BytesMut::with_capacity(8 * MIB);
        let at = newer.as_ptr();
        s.park(newer);
        assert!(s.free_unless_parked_after(seen));
        assert_eq!(s.take(8 * MIB).map(|b| b.as_ptr()), Some(at));
        // One parked no later than the count is freed.
        s.park(BytesMut::with_capacity(8 * MIB));
        let seen = s.parks.load(Ordering::SeqCst);
        assert!(!s.free_unless_parked_after(seen));
        assert!(s.take(8 * MIB).is_none());
    }

    #[test]
    fn a_buffer_kept_busy_stays_while_it_is_reused() {
        let idle = Duration::from_millis(200);
        let s = spare(idle);
        let first = BytesMut::with_capacity(8 * MIB);
        let at = first.as_ptr();
        s.park(first);
        // Taken and parked again well within `idle`: the helper never frees it.
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(10));
            let buf = s.take(8 * MIB).expect("still parked");
            assert_eq!(buf.as_ptr(), at);
            s.park(buf);
        }
    }
}
