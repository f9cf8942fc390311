//! A shared-memory segment of atomic words: an anonymous `memfd` mapped `MAP_SHARED`.
//!
//! The creating process keeps the descriptor (close-on-exec, so children do not inherit it); any
//! process of the same user maps the same memory by opening `/proc/<creator pid>/fd/<fd>`. The
//! memory has no name in `/dev/shm`: it is freed by the kernel when the last descriptor and the
//! last mapping are gone, whether the processes exit or are killed.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

/// A mapped segment of `len` atomic 64-bit words.
#[derive(Debug)]
pub struct Segment {
    /// The start of the mapping (page aligned, so aligned for `AtomicU64`).
    ptr: NonNull<AtomicU64>,
    /// How many words are mapped.
    len: usize,
    /// The memfd (in the creator) or the re-opened file (in an attached process).
    fd: OwnedFd,
}

// SAFETY: the mapping is only ever accessed through `&AtomicU64`, which is `Sync`; the pointer
// stays valid until `Drop`, which needs exclusive ownership.
unsafe impl Send for Segment {}
// SAFETY: as above, shared access only hands out `&[AtomicU64]`.
unsafe impl Sync for Segment {}

impl Segment {
    /// Creates a zeroed segment of `words` words backed by a new memfd named `name`.
    ///
    /// # Errors
    /// When the kernel refuses the memfd, its size or the mapping.
    pub fn create(name: &str, words: usize) -> io::Result<Self> {
        let cname = CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "nul in name"))?;
        // SAFETY: `cname` is a valid NUL-terminated string; the flags are valid memfd flags.
        let raw = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let bytes = words.max(1) * size_of::<AtomicU64>();
        let size = libc::off_t::try_from(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `fd` is a valid memfd owned by us.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Self::map(fd, words.max(1))
    }

    /// Maps the segment another process created, through `/proc/<pid>/fd/<fd>`.
    ///
    /// # Errors
    /// When the creator is gone, the descriptor is not readable, or the mapping fails.
    pub fn attach(pid: u32, fd: RawFd) -> io::Result<Self> {
        let path = CString::new(format!("/proc/{pid}/fd/{fd}")).expect("no nul in a formatted path");
        // SAFETY: `path` is a valid NUL-terminated string.
        let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is valid and `st` is writable.
        if unsafe { libc::fstat(fd.as_raw_fd(), &raw mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let bytes = usize::try_from(st.st_size).unwrap_or(0);
        if bytes < size_of::<AtomicU64>() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the segment is empty"));
        }
        Self::map(fd, bytes / size_of::<AtomicU64>())
    }

    fn map(fd: OwnedFd, words: usize) -> io::Result<Self> {
        let bytes = words * size_of::<AtomicU64>();
        // SAFETY: a fresh shared mapping of a descriptor we own, of a length the file has; the
        // kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<AtomicU64>()).expect("mmap does not return null on success");
        Ok(Self { ptr, len: words, fd })
    }

    /// The words of the segment.
    #[must_use]
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping holds `len` page-aligned, initialised (zero-filled or written)
        // 64-bit words for as long as `self` lives; other processes only touch them atomically.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The descriptor another process opens through `/proc/<pid>/fd/<fd>`.
    #[must_use]
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe exactly the mapping made in `map`, unmapped only here.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len * size_of::<AtomicU64>());
        }
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
