//! A shared-memory segment of atomic words: an anonymous `memfd` mapped `MAP_SHARED`.
//!
//! The creating process keeps the descriptor (close-on-exec, so children do not inherit it); any
//! process of the same user maps the same memory by opening `/proc/<creator pid>/fd/<fd>`. The
//! memory has no name in `/dev/shm`: it is freed by the kernel when the last descriptor and the
//! last mapping are gone, whether the processes exit or are killed.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU64;

use crate::shm::Mapping;

/// A shared array of atomic words in a memfd.
#[derive(Debug)]
pub struct Segment {
    map: Mapping,
}

impl Segment {
    /// Creates a zeroed segment of `words` atomic words (at least one); `name` shows in
    /// `/proc/<pid>/fd`.
    ///
    /// # Errors
    /// When `name` holds a NUL byte, or memfd, ftruncate or mmap fail.
    pub fn create(name: &str, words: usize) -> io::Result<Self> {
        let cname = CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "nul in name"))?;
        Ok(Self { map: Mapping::create(&cname, words.max(1) * size_of::<AtomicU64>())? })
    }

    /// Maps the segment another process holds as descriptor `fd`, through `/proc/<pid>/fd`.
    ///
    /// # Errors
    /// When that descriptor cannot be opened or mapped, or holds no whole word.
    pub fn attach(pid: u32, fd: RawFd) -> io::Result<Self> {
        let path = CString::new(format!("/proc/{pid}/fd/{fd}")).expect("no nul in a formatted path");
        // SAFETY: a valid C path and valid flags; the result is checked.
        let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: open returned a new descriptor that nothing else owns.
        let map = Mapping::open(unsafe { OwnedFd::from_raw_fd(raw) })?;
        if map.len() < size_of::<AtomicU64>() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the segment is empty"));
        }
        Ok(Self { map })
    }

    /// The shared words.
    #[must_use]
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is page-aligned, lives as long as `self`, and holds
        // `len / 8` words; AtomicU64 is valid for any bit pattern.
        unsafe {
            std::slice::from_raw_parts(self.map.base().cast::<AtomicU64>(), self.map.len() / size_of::<AtomicU64>())
        }
    }

    /// The descriptor, for other processes to attach through `/proc/<pid>/fd`.
    #[must_use]
    pub fn raw_fd(&self) -> RawFd {
        self.map.fd().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn attached_mapping_sees_the_same_words() {
        let a = Segment::create("test", 4).unwrap();
        let b = Segment::attach(std::process::id(), a.raw_fd()).unwrap();
        a.words()[3].store(42, Ordering::SeqCst);
        assert_eq!(b.words().len(), 4);
        assert_eq!(b.words()[3].load(Ordering::SeqCst), 42);
        b.words()[0].fetch_add(7, Ordering::SeqCst);
        assert_eq!(a.words()[0].load(Ordering::SeqCst), 7);
    }

    #[test]
    fn attaching_a_missing_descriptor_fails() {
        assert!(Segment::attach(std::process::id(), 1_000_000).is_err());
    }
}
