//! One message and its descriptors over a Unix socket (`SCM_RIGHTS`): the system calls under
//! the control protocol ([`crate::control::protocol`]) and snap-host's takeover wire, each of
//! which frames its own messages on top.
//!
//! Both ends retry on `EINTR`; sending never raises `SIGPIPE` (a peer that went away is an
//! error, not a signal that kills the host); received descriptors are close-on-exec and are
//! taken out of the control buffer before anything else, so every error path closes them
//! rather than leaking them.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Sends the bytes of `iov` as one message with `fds` attached. `Errno::TOOBIG` if more than
/// `max_fds` descriptors are given (the receiver would truncate them).
pub fn send(
    socket: BorrowedFd<'_>,
    iov: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
    max_fds: usize,
) -> Result<(), Errno> {
    if fds.len() > max_fds {
        return Err(Errno::TOOBIG);
    }
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len().max(1)))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(Errno::TOOBIG);
    }
    loop {
        match sendmsg(socket, iov, &mut control, SendFlags::NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One received message: how many bytes landed in the caller's buffer, whether the kernel
/// cut the message or its descriptors short, and the descriptors.
#[derive(Debug)]
pub struct Received {
    /// Bytes of the message in the buffer.
    pub bytes: usize,
    /// The message was longer than the buffer, or carried more than `max_fds` descriptors.
    pub truncated: bool,
    /// The descriptors, in the order sent, close-on-exec.
    pub fds: Vec<OwnedFd>,
}

impl Received {
    /// The peer closed the connection (an empty message with no descriptors).
    pub fn is_end(&self) -> bool {
        self.bytes == 0 && self.fds.is_empty()
    }
}

/// Receives one message into `buf`, with room for `max_fds` descriptors.
pub fn recv(socket: BorrowedFd<'_>, buf: &mut [u8], max_fds: usize) -> Result<Received, Errno> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(max_fds.max(1)))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        match recvmsg(
            socket,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(got) => break got,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    };
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    Ok(Received {
        bytes: got.bytes,
        truncated: got.flags.intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC),
        fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    use std::os::fd::AsFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap()
    }

    #[test]
    fn bytes_and_descriptors_arrive_together() {
        let (a, b) = pair();
        let (x, _y) = pair();
        send(
            a.as_fd(),
            &[IoSlice::new(b"he"), IoSlice::new(b"llo")],
            &[x.as_fd()],
            4,
        )
        .unwrap();
        let mut buf = [0u8; 16];
        let got = recv(b.as_fd(), &mut buf, 4).unwrap();
        assert_eq!(&buf[..got.bytes], b"hello");
        assert_eq!(got.fds.len(), 1);
        assert!(!got.truncated && !got.is_end());
    }

    #[test]
    fn too_many_descriptors_or_bytes_are_refused_or_flagged() {
        let (a, b) = pair();
        let (x, y) = pair();
        assert_eq!(
            send(a.as_fd(), &[IoSlice::new(b"m")], &[x.as_fd(), y.as_fd()], 1),
            Err(Errno::TOOBIG)
        );
        send(
            a.as_fd(),
            &[IoSlice::new(b"a longer message")],
            &[x.as_fd(), y.as_fd()],
            2,
        )
        .unwrap();
        let mut buf = [0u8; 4];
        let got = recv(b.as_fd(), &mut buf, 1).unwrap();
        assert!(got.truncated, "{got:?}");
        drop(a);
        let end = recv(b.as_fd(), &mut buf, 1).unwrap();
        assert!(end.is_end());
    }
}
