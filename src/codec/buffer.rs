//! Receive buffers for large decoded values (a tensor's element bytes).
//!
//! A fresh 64 MiB buffer costs 16,384 page faults in 4 KiB pages, which on this project's
//! benchmarks took more time than moving the bytes through the socket. Like numpy, which
//! asks for transparent huge pages on its large arrays, buffers of 4 MiB and more are
//! advised `MADV_HUGEPAGE` on Linux and Android (a hint: the kernel may ignore it).

use bytes::BytesMut;

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
}
