//! Reply bodies written straight into memory a face owns.
//!
//! A face whose language has its own byte type (Python's `bytes`) would otherwise get a
//! reply in a Rust buffer and copy it into a new object of its own: for a 1 MiB reply,
//! one more copy and one more fresh megabyte for the system to fault in. When the
//! response headers give the length of an unencoded body, a blocking call can ask the
//! face for memory of exactly that length ([`Provider`]) and write the body there; the
//! reply's `Bytes` then point into it.

use std::sync::Arc;

use bytes::Bytes;

/// `len` writable bytes owned by a face's object (kept alive by `owner`).
pub(crate) struct Memory {
    ptr: *mut u8,
    len: usize,
    _owner: Box<dyn Send>,
}

// SAFETY: the memory belongs to `owner`, which is Send; `Memory::new`'s contract makes
// this value its only user.
unsafe impl Send for Memory {}

impl Memory {
    // Only the Python face provides memory so far.
    #[cfg_attr(not(any(feature = "python", test)), allow(dead_code))]
    /// # Safety
    /// `ptr` must be valid for reads and writes of `len` bytes for as long as `owner`
    /// lives, and nothing else may read or write those bytes until the reply built from
    /// this memory is handed back to the face.
    pub unsafe fn new(ptr: *mut u8, len: usize, owner: Box<dyn Send>) -> Memory {
        Memory {
            ptr,
            len,
            _owner: owner,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: see `new`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// The filled memory as `Bytes` that keep the owner alive.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Memory {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: see `new`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Asked for `len` bytes once a reply's length is known; `None` lets the body be
/// gathered into a Rust buffer as usual (small replies, or no memory to be had).
pub(crate) type Provider = Arc<dyn Fn(usize) -> Option<Memory> + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_point_into_the_owner() {
        let mut owned = vec![0u8; 4].into_boxed_slice();
        let ptr = owned.as_mut_ptr();
        // SAFETY: the box owns the 4 bytes and moves into the Memory.
        let mut mem = unsafe { Memory::new(ptr, 4, Box::new(owned)) };
        mem.as_mut_slice().copy_from_slice(b"abcd");
        let b = mem.into_bytes();
        assert_eq!(&b[..], b"abcd");
        assert_eq!(b.as_ptr(), ptr as *const u8);
    }
}
