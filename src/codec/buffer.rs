//! Receive buffers for large decoded values (a tensor's element bytes).
//!
//! A fresh 64 MiB buffer costs 16,384 page faults in 4 KiB pages, which on this project's
//! benchmarks took more time than moving the bytes through the socket. Like numpy, which
//! asks for transparent huge pages on its large arrays, buffers of 4 MiB and more are
//! advised `MADV_HUGEPAGE` on Linux and Android (a hint: the kernel may ignore it).
//! A [`ReceiveBuffer`], filled as a body arrives, also has its pages faulted in ahead of
//! the bytes by a helper thread (`prefault.rs`); once the value made of it is dropped,
//! its memory goes to the next large reply instead of back to the allocator
//! (`spare.rs`).

use bytes::{Bytes, BytesMut};

use super::prefault::Prefault;
use super::spare::SPARE;

/// Never reserve more than this up front: the size comes from the peer, and a buffer
/// beyond it grows as bytes really arrive.
const MAX_PREALLOC: usize = 64 * 1024 * 1024;

/// Buffers at least this large are advised to use huge pages (numpy's threshold).
const HUGE_PAGE_HINT_FROM: usize = 4 * 1024 * 1024;

/// An empty buffer with room for `expected` bytes (at most 64 MiB reserved); the tests
/// below show its use.
pub(crate) fn receive_buffer(expected: usize) -> BytesMut {
    let buf = BytesMut::with_capacity(expected.min(MAX_PREALLOC));
    if buf.capacity() >= HUGE_PAGE_HINT_FROM {
        advise_huge_pages(buf.as_ptr(), buf.capacity());
    }
    buf
}

/// A buffer filled piece by piece as a body arrives (a tensor's element bytes): a
/// [`receive_buffer`] whose pages, when it is large, a helper thread faults in ahead
/// of the bytes copied into it.
///
/// ```ignore
/// let mut buf = ReceiveBuffer::new(8 << 20);
/// buf.extend_from_slice(&[1, 2, 3]);
/// assert_eq!(buf.into_bytes().as_ref(), &[1, 2, 3]);
/// ```
#[derive(Debug)]
pub(crate) struct ReceiveBuffer {
    buf: BytesMut,
    /// Stopped before `buf` can move: when it would grow past its capacity, and when it
    /// is handed out or dropped.
    ahead: Option<Prefault>,
}

impl ReceiveBuffer {
    /// An empty buffer with room for `expected` bytes, as [`receive_buffer`]: the
    /// memory of a dropped large reply when there is one of a similar size (its pages
    /// are already there), else fresh memory.
    pub(crate) fn new(expected: usize) -> ReceiveBuffer {
        if expected >= HUGE_PAGE_HINT_FROM {
            if let Some(buf) = SPARE.take(expected.min(MAX_PREALLOC)) {
                return ReceiveBuffer { buf, ahead: None };
            }
        }
        let buf = receive_buffer(expected);
        let ahead = if buf.capacity() >= HUGE_PAGE_HINT_FROM {
            // SAFETY: `buf`'s allocation stays in place until `ahead` is stopped: it is
            // stopped before `buf` could reallocate (extend_from_slice), before `buf` is
            // handed out (into_bytes), and before it is freed (Drop below); stopping
            // waits for the helper's step in progress.
            unsafe { Prefault::start(buf.as_ptr(), buf.capacity()) }
        } else {
            None
        };
        ReceiveBuffer { buf, ahead }
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn extend_from_slice(&mut self, bytes: &[u8]) {
        let written = self.buf.len() + bytes.len();
        if written > self.buf.capacity() {
            // Growing moves the bytes to a new allocation.
            self.ahead = None;
        }
        self.buf.extend_from_slice(bytes);
        if let Some(ahead) = &mut self.ahead {
            ahead.advance(written);
        }
    }

    /// The bytes received, once the helper has let go of them. A large buffer's memory
    /// is parked for the next large reply when the last `Bytes` of it is dropped.
    pub(crate) fn into_bytes(mut self) -> Bytes {
        self.ahead = None;
        let buf = std::mem::take(&mut self.buf);
        if (HUGE_PAGE_HINT_FROM..=MAX_PREALLOC).contains(&buf.capacity()) {
            Bytes::from_owner(Recycled(buf))
        } else {
            buf.freeze()
        }
    }
}

/// A received buffer handed out as `Bytes`; parked in [`SPARE`] when dropped.
struct Recycled(BytesMut);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        SPARE.park(std::mem::take(&mut self.0));
    }
}

impl Drop for ReceiveBuffer {
    fn drop(&mut self) {
        // Before `buf`'s allocation is freed (fields drop after this).
        self.ahead = None;
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn advise_huge_pages(ptr: *const u8, len: usize) {
    // madvise needs a page-aligned start: advise the whole pages inside the allocation.
    const PAGE: usize = 4096;
    let start = (ptr as usize).next_multiple_of(PAGE);
    let end = (ptr as usize + len) & !(PAGE - 1);
    if end > start {
        // SAFETY: the range lies inside this live allocation; MADV_HUGEPAGE changes only
        // how the kernel backs the pages, never their contents, and a failure is harmless.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn advise_huge_pages(_ptr: *const u8, _len: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_what_is_expected_up_to_the_cap() {
        let small = receive_buffer(100);
        assert!(small.capacity() >= 100 && small.is_empty());
        let big = receive_buffer(8 << 20);
        assert!(big.capacity() >= 8 << 20);
        // A size from the peer never reserves more than the cap.
        assert!(receive_buffer(usize::MAX).capacity() <= MAX_PREALLOC + 4096);
    }

    /// A buffer with a helper (helpers are capped process-wide, and other tests may
    /// hold some for a moment).
    fn with_helper(expected: usize) -> ReceiveBuffer {
        for _ in 0..500 {
            let buf = ReceiveBuffer::new(expected);
            if buf.ahead.is_some() || !cfg!(target_os = "linux") {
                return buf;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        panic!("no prefault helper became free");
    }

    #[test]
    fn a_receive_buffer_keeps_every_byte_across_pieces_and_growth() {
        let data: Vec<u8> = (0..40usize << 20).map(|i| (i % 251) as u8).collect();
        let mut buf = with_helper(32 << 20);
        // Odd pieces, and past the 32 MiB expected: growing stops the helper first.
        for piece in data.chunks(1_000_003) {
            buf.extend_from_slice(piece);
        }
        assert_eq!(buf.len(), data.len());
        assert!(buf.ahead.is_none());
        assert_eq!(buf.into_bytes().as_ref(), &data[..]);
        // Dropped part-way, with its helper still running.
        let mut buf = with_helper(64 << 20);
        buf.extend_from_slice(&data[..1 << 20]);
        drop(buf);
    }

    #[test]
    fn a_dropped_replys_memory_serves_the_next_large_reply_with_only_its_bytes() {
        const MIB: usize = 1 << 20;
        let old: Vec<u8> = (0..8 * MIB).map(|i| (i % 251) as u8).collect();
        let new: Vec<u8> = (0..6 * MIB).map(|i| (i % 13) as u8 + 100).collect();
        // Other tests in this process park and take buffers too: retry until this
        // test's own buffer comes back to it.
        for _ in 0..50 {
            let mut first = ReceiveBuffer::new(8 * MIB);
            first.extend_from_slice(&old);
            let first = first.into_bytes();
            let at = first.as_ptr();
            drop(first);
            let mut second = ReceiveBuffer::new(6 * MIB);
            assert_eq!(second.len(), 0);
            let reused = second.buf.as_ptr() == at;
            assert!(
                !reused || second.ahead.is_none(),
                "its pages are there already"
            );
            second.extend_from_slice(&new);
            let second = second.into_bytes();
            assert_eq!(second.as_ref(), &new[..], "only the new reply's bytes");
            if reused {
                return;
            }
        }
        panic!("a dropped reply's memory was never reused");
    }

    /// Which of the 4 KiB pages of `range` (page-aligned offsets into `buf`) are resident.
    #[cfg(target_os = "linux")]
    fn resident_pages(buf: &ReceiveBuffer, from: usize, to: usize) -> usize {
        let base = (buf.buf.as_ptr() as usize).next_multiple_of(4096);
        let pages = (to - from) / 4096;
        let mut map = vec![0u8; pages];
        // SAFETY: the range lies inside the buffer's live allocation; mincore only
        // reports residency into `map`, which has one byte per page.
        let rc = unsafe {
            libc::mincore(
                (base + from) as *mut libc::c_void,
                to - from,
                map.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        map.iter().filter(|b| *b & 1 == 1).count()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_helper_faults_pages_in_ahead_of_the_writer_and_no_further() {
        use super::super::prefault::LEAD;
        const MIB: usize = 1 << 20;
        let mut buf = with_helper(64 * MIB);
        buf.extend_from_slice(&[7; 4096]);
        // The helper populates the first LEAD bytes without the writer touching them.
        let ahead = (8 * MIB, LEAD - 2 * MIB);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while resident_pages(&buf, ahead.0, ahead.1) < (ahead.1 - ahead.0) / 4096 {
            assert!(
                std::time::Instant::now() < deadline,
                "pages ahead were never populated"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // ...and nothing far beyond what has arrived: a stalled peer costs at most LEAD.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(resident_pages(&buf, LEAD + 8 * MIB, 60 * MIB), 0);
        // Progress lets it go further.
        buf.extend_from_slice(&vec![7; 24 * MIB]);
        let further = (LEAD + 8 * MIB, LEAD + 16 * MIB);
        while resident_pages(&buf, further.0, further.1) < (further.1 - further.0) / 4096 {
            assert!(
                std::time::Instant::now() < deadline,
                "the helper did not follow the writer"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(buf.into_bytes().iter().all(|b| *b == 7));
    }
}
