//! Packets with descriptors attached (`SCM_RIGHTS`) over a non-blocking `SOCK_SEQPACKET` unix
//! socket, polled by the runtime: the zygote's control channel.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The largest packet read; the zygote's messages are far smaller.
const MAX_PACKET: usize = 64 * 1024;
/// The most descriptors one packet may carry.
const MAX_FDS: usize = 4;

/// A connected pair of close-on-exec sockets; ours (the first) is non-blocking.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for socketpair to fill.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded, so both descriptors are open and owned by nobody else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(ours.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(ours.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((ours, theirs))
}

/// Registers `fd` with the runtime's reactor for `interest`. Must run inside a tokio runtime.
pub(crate) fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is open until dropped and always reports the same descriptor, and the
    // `AsyncFd` owns it (nobody can close or swap it underneath).
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(io::Error::from)
}

fn cmsg_space(fds: usize) -> usize {
    let bytes = u32::try_from(fds * size_of::<RawFd>()).unwrap_or(u32::MAX);
    // SAFETY: CMSG_SPACE only computes a size.
    unsafe { libc::CMSG_SPACE(bytes) as usize }
}

/// Sends `bytes` as one packet with `fds` attached (copies of them arrive on the other side).
pub(crate) async fn send_packet(socket: &AsyncFd<OwnedFd>, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors for one packet"));
    }
    // u64 words keep the control buffer aligned for `cmsghdr`.
    let mut control = vec![0u64; cmsg_space(MAX_FDS).div_ceil(8)];
    socket
        .async_io(Interest::WRITABLE, |fd| {
            let mut iov = libc::iovec { iov_base: bytes.as_ptr().cast_mut().cast(), iov_len: bytes.len() };
            // SAFETY: an all-zero msghdr is valid (no name, no iovecs, no control data).
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            if !fds.is_empty() {
                msg.msg_control = control.as_mut_ptr().cast();
                msg.msg_controllen = cmsg_space(fds.len()) as _;
                // SAFETY: the control buffer holds CMSG_SPACE(fds) bytes, aligned; CMSG_FIRSTHDR
                // points into it and CMSG_DATA has room for `fds.len()` descriptors.
                unsafe {
                    let header = libc::CMSG_FIRSTHDR(&msg);
                    (*header).cmsg_level = libc::SOL_SOCKET;
                    (*header).cmsg_type = libc::SCM_RIGHTS;
                    (*header).cmsg_len = libc::CMSG_LEN(u32::try_from(size_of_val(fds)).unwrap_or(0)) as _;
                    std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(header).cast::<RawFd>(), fds.len());
                }
            }
            // SAFETY: `msg` points at live buffers; MSG_NOSIGNAL: a gone peer is EPIPE, not SIGPIPE.
            let sent = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
            match usize::try_from(sent) {
                Ok(n) if n == bytes.len() => Ok(()),
                Ok(_) => Err(io::Error::other("a packet was cut short")),
                Err(_) => Err(io::Error::last_os_error()),
            }
        })
        .await
}

/// Receives one packet and the descriptors attached to it (close-on-exec); `None` at EOF.
/// A packet cut short, or with more descriptors than expected, is an error (the descriptors
/// that did arrive are closed).
pub(crate) async fn recv_packet(socket: &AsyncFd<OwnedFd>) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut bytes = vec![0u8; MAX_PACKET];
    let mut control = vec![0u64; cmsg_space(MAX_FDS).div_ceil(8)];
    let (len, flags, fds) = socket
        .async_io(Interest::READABLE, |fd| {
            let mut iov = libc::iovec { iov_base: bytes.as_mut_ptr().cast(), iov_len: bytes.len() };
            // SAFETY: an all-zero msghdr is valid (no name, no iovecs, no control data).
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = (control.len() * 8) as _;
            // SAFETY: `msg` points at live buffers of the sizes it states.
            let got = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
            let len = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
            let mut fds = Vec::new();
            // SAFETY: the kernel filled `control` up to msg_controllen; the CMSG macros walk it.
            unsafe {
                let mut header = libc::CMSG_FIRSTHDR(&msg);
                while !header.is_null() {
                    if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                        let data = libc::CMSG_DATA(header).cast::<RawFd>();
                        let payload = (*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                        for i in 0..payload / size_of::<RawFd>() {
                            // Each received descriptor is new in this process and ours alone.
                            fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                        }
                    }
                    header = libc::CMSG_NXTHDR(&msg, header);
                }
            }
            Ok((len, msg.msg_flags, fds))
        })
        .await?;
    if flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "a packet or its descriptors were cut short"));
    }
    if len == 0 && fds.is_empty() {
        return Ok(None);
    }
    bytes.truncate(len);
    Ok(Some((bytes, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(fd: OwnedFd) -> AsyncFd<OwnedFd> {
        // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        register(fd, Interest::READABLE | Interest::WRITABLE).unwrap()
    }

    #[tokio::test]
    async fn packets_carry_descriptors_and_eof_ends_the_stream() {
        let (ours, theirs) = seqpacket_pair().unwrap();
        let (a, b) = seqpacket_pair().unwrap();
        let (ours, theirs) = (both(ours), both(theirs));
        send_packet(&ours, b"hello", &[a.as_raw_fd()]).await.unwrap();
        let (bytes, fds) = recv_packet(&theirs).await.unwrap().unwrap();
        assert_eq!(bytes, b"hello");
        assert_eq!(fds.len(), 1);
        // The received descriptor is the same socket: what goes in one end comes out of `b`.
        let sent = both(fds.into_iter().next().unwrap());
        let b = both(b);
        send_packet(&sent, b"via copy", &[]).await.unwrap();
        assert_eq!(recv_packet(&b).await.unwrap().unwrap().0, b"via copy");
        drop((ours, a));
        assert!(recv_packet(&theirs).await.unwrap().is_none(), "EOF once the peer closed");
    }
}
