//! The control protocol fuzz target's body (`engines/ipc/fuzz`, target `control`), also run
//! by the stable tests on a checked-in corpus and generated inputs (`tests/fuzz_corpus.rs`):
//! arbitrary bytes arrive as one packet on a control socket, as a hostile app could send
//! them, and the host's side [`recv`]s a [`Request`] (and a client's side a [`Response`]).
//!
//! Whatever the bytes: no panic; more than [`MAX_MESSAGE`] bytes is
//! [`ProtocolError::TooLarge`], never a larger buffer (the receive buffer is fixed, so the
//! allocation is bounded by it and by what `serde_json` builds from at most that much
//! input); what decodes re-encodes and decodes to the same request.

use std::os::fd::AsFd;

use rustix::net::{socketpair, AddressFamily, SendFlags, SocketFlags, SocketType};

use super::protocol::{recv, ProtocolError, Request, Response, MAX_MESSAGE};

/// How `recv` took the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlFuzzOutcome {
    /// A request decoded (and round-tripped).
    Request,
    /// Not a request: malformed JSON or an unknown message.
    Malformed,
    /// Longer than [`MAX_MESSAGE`].
    TooLarge,
    /// The kernel refused the packet itself (larger than the socket buffer).
    NotSent,
}

/// Sends `data` as one packet and receives it as the host and as a client would.
pub fn fuzz_recv(data: &[u8]) -> ControlFuzzOutcome {
    let (app, host) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .expect("socketpair");
    for _ in 0..2 {
        if rustix::net::send(&app, data, SendFlags::empty()).is_err() {
            return ControlFuzzOutcome::NotSent;
        }
    }
    let mut buf = Vec::new();
    let outcome = match recv::<Request>(host.as_fd(), &mut buf) {
        Ok(Some(got)) => {
            assert!(data.len() <= MAX_MESSAGE && got.fds.is_empty());
            let again = serde_json::to_vec(&got.msg).expect("a request serialises");
            let back: Request = serde_json::from_slice(&again).expect("and parses back");
            assert_eq!(back, got.msg);
            ControlFuzzOutcome::Request
        }
        // An empty packet reads as the peer's hang-up, which is what it means on a
        // seqpacket socket.
        Ok(None) => {
            assert!(data.is_empty());
            ControlFuzzOutcome::Malformed
        }
        Err(ProtocolError::TooLarge) => {
            assert!(data.len() > MAX_MESSAGE);
            ControlFuzzOutcome::TooLarge
        }
        Err(ProtocolError::Json(_)) => ControlFuzzOutcome::Malformed,
        Err(ProtocolError::Io(e)) => panic!("receiving a packet that was sent: {e}"),
    };
    assert_eq!(buf.len(), MAX_MESSAGE + 1, "the receive buffer stays fixed");
    // The same bytes as a host's answer, as a client reads them: no panic either way.
    let _ = recv::<Response>(host.as_fd(), &mut buf);
    outcome
}
