//! Commands (app → engine) and completions (engine → app): small fixed-layout records,
//! little-endian, one per ring message.
//!
//! ```text
//! byte 0      kind (see the `kind` constants; commands and completions are numbered apart)
//! bytes 1..   the variant's fields in declaration order: u16/u32/u64 little-endian;
//!             a status u16 (0 = ok, else an OpErrorCode) precedes fields valid only on ok;
//!             OpenFlow's peer is a u8 length then that many UTF-8 bytes (then its service)
//! ```
//!
//! Records are written with no padding and decoded with every length checked: a record
//! that is short, has trailing bytes, an unknown kind, status or close reason, a value
//! after an error status, or a peer that is not UTF-8 is a [`DecodeError`]; so every
//! record has exactly one encoding. Decoding reads only the slice it is given and never panics
//! (a proptest below feeds it arbitrary bytes), because the other side may be hostile.
//! A decoded command is only well-formed: buffer indices, region keys and bounds in it
//! are checked later against the pool and the region registry. The field writer and the
//! checked reader are in `proto_codec.rs`.

use super::OpErrorCode;
use codec::{reader, W};

mod codec;
mod fuzz;

/// Longest peer address an OpenFlow may carry.
pub const MAX_PEER_LEN: usize = 255;
/// Longest encoded record (OpenFlow with the longest peer); ring slots must hold this.
pub const MAX_RECORD_LEN: usize = 1 + 8 + 1 + MAX_PEER_LEN + 4;

/// Identifies a flow to a peer engine (assigned by the engine).
pub type FlowId = u64;
/// Chooses the app's request in completions; opaque to the engine.
pub type Cookie = u64;
/// A service on an engine, named by Listen and OpenFlow (it travels in the wire's Connect).
pub use fuzz::{fuzz_decode, AppCommandFuzzOutcome};
pub use pony_proto::wire::ServiceId;

/// A request from the app to its engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Connect to `service` at a peer (`host:port` or an address the NIC backend
    /// understands). Fails with [`OpErrorCode::NoListener`] if nobody listens on it there.
    OpenFlow {
        cookie: Cookie,
        peer: String,
        service: ServiceId,
    },
    /// Close a flow; in-flight operations on it complete with [`OpErrorCode::FlowClosed`].
    CloseFlow { flow: FlowId },
    /// Send the message in the pool chain at `head` (`len` bytes) on `stream`. The chain's
    /// reference moves to the engine, which releases it once the peer has it.
    Send {
        flow: FlowId,
        stream: u32,
        head: u32,
        len: u32,
        cookie: Cookie,
    },
    /// Read `len` bytes at `offset` of the peer's `region` into the local chain `local`
    /// (whose reference moves to the engine and comes back with `ReadDone`).
    Read {
        flow: FlowId,
        region: u32,
        key: u64,
        offset: u64,
        len: u32,
        local: u32,
        cookie: Cookie,
    },
    /// Write the chain at `head` (`len` bytes) to `offset` of the peer's `region`.
    Write {
        flow: FlowId,
        region: u32,
        key: u64,
        offset: u64,
        head: u32,
        len: u32,
        cookie: Cookie,
    },
    /// Read entry `index` of the peer's `table` region (offset u64, len u32: 16-byte
    /// entries), then that many bytes at that offset of the peer's `region` into `local`.
    IndirectRead {
        flow: FlowId,
        table: u32,
        table_key: u64,
        index: u64,
        region: u32,
        key: u64,
        local: u32,
        cookie: Cookie,
    },
    /// Register the memfd sent alongside (over the control socket) as a region of `len`
    /// bytes that peers may read and write with the key the engine returns.
    RegisterRegion { cookie: Cookie, len: u64 },
    /// Withdraw a region; later operations on it are refused.
    UnregisterRegion { cookie: Cookie, region: u32 },
    /// Accept the flows peers open to `service` of this engine: each one is announced with
    /// [`Completion::FlowAccepted`] carrying this cookie. One listener per service: if
    /// another (of any app) holds it, the answer is an `Error` with
    /// [`OpErrorCode::ServiceTaken`] and the service as detail. Held until Unlisten or
    /// until the app detaches.
    Listen { cookie: Cookie, service: ServiceId },
    /// Stop accepting flows to `service` (flows already accepted stay the app's). Not this
    /// app's listener: an `Error` with [`OpErrorCode::NoListener`] and the service as detail.
    Unlisten { cookie: Cookie, service: ServiceId },
}

/// A result from the engine to the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// Answer to OpenFlow.
    FlowOpened {
        cookie: Cookie,
        result: Result<FlowId, OpErrorCode>,
    },
    /// The flow is gone, for `reason`. Operations still waiting on it completed before
    /// this (with [`OpErrorCode::FlowClosed`] or the failure's code).
    FlowClosed { flow: FlowId, reason: CloseReason },
    /// The message of a Send reached the peer; its chain is released.
    Sent { cookie: Cookie },
    /// A message arrived: `len` bytes in the chain at `head`, whose reference is now the
    /// app's (release it when done).
    Received {
        flow: FlowId,
        stream: u32,
        head: u32,
        len: u32,
    },
    /// A Read or IndirectRead finished; on success `len` bytes are in its local chain.
    ReadDone {
        cookie: Cookie,
        result: Result<u32, OpErrorCode>,
    },
    /// A Write finished.
    WriteDone {
        cookie: Cookie,
        result: Result<(), OpErrorCode>,
    },
    /// A region was registered: peers address it with (`region`, `key`).
    RegionRegistered {
        cookie: Cookie,
        region: u32,
        key: u64,
        len: u64,
    },
    /// A region was unregistered.
    RegionUnregistered { cookie: Cookie, region: u32 },
    /// Answer to Listen: peers' flows to the service will be accepted for this app from now on.
    Listening { cookie: Cookie },
    /// Answer to Unlisten: no more flows to the service for this app.
    Unlistened { cookie: Cookie },
    /// A peer opened a flow that this app now owns (`cookie` is its Listen's).
    FlowAccepted { cookie: Cookie, flow: FlowId },
    /// A command failed before it could start (bad chain, unknown flow, ...). `detail` is
    /// code-specific (e.g. the offending buffer index).
    Error {
        cookie: Cookie,
        code: OpErrorCode,
        detail: u64,
    },
}

/// Why a flow closed ([`Completion::FlowClosed`]); one byte in the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(u8)]
pub enum CloseReason {
    /// This app's CloseFlow finished: everything sent before it was delivered.
    #[error("closed locally")]
    LocalClose = 1,
    /// The peer closed the flow: its app closed it, or its app exited or crashed and its
    /// host closed the app's flows.
    #[error("closed by the peer")]
    PeerClosed = 2,
    /// The peer stopped answering (no packet for the idle timeout, or retransmissions
    /// unacknowledged): its host or the path to it is gone.
    #[error("peer timed out")]
    PeerTimeout = 3,
    /// The flow was torn down without a graceful close, for a failure other than a
    /// timeout. The engine maps every other flow failure here, but in this wire version
    /// none happens once a flow is up (a Reject or a bad Accept only ends a flow still
    /// connecting, which its opener hears as `FlowOpened`'s error), so it is not sent yet.
    #[error("flow reset")]
    Reset = 4,
}

impl CloseReason {
    /// The reason numbered `v`, if any.
    pub fn from_u8(v: u8) -> Option<Self> {
        use CloseReason::*;
        Some(match v {
            1 => LocalClose,
            2 => PeerClosed,
            3 => PeerTimeout,
            4 => Reset,
            _ => return None,
        })
    }
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Zero-length record.
    #[error("empty record")]
    Empty,
    /// First byte is not a known kind.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// Fewer bytes than the kind needs.
    #[error("record of kind {kind} is truncated")]
    Truncated { kind: u8 },
    /// More bytes than the kind needs.
    #[error("record of kind {kind} has {extra} trailing bytes")]
    Trailing { kind: u8, extra: usize },
    /// A status or error code that does not exist.
    #[error("unknown status code {0}")]
    BadCode(u16),
    /// OpenFlow's peer is not UTF-8.
    #[error("peer address is not UTF-8")]
    BadPeer,
    /// An error status followed by a non-zero value (the value is zero on errors, so that
    /// every record has one encoding).
    #[error("record of kind {kind} has a value after an error status")]
    ValueOnError { kind: u8 },
    /// A close reason that does not exist.
    #[error("unknown close reason {0}")]
    BadReason(u8),
}

/// The result of a status and the value after it, which must be zero on an error.
fn with_value<T: Default + PartialEq>(
    status: Result<(), OpErrorCode>,
    value: T,
    kind: u8,
) -> Result<Result<T, OpErrorCode>, DecodeError> {
    match status {
        Ok(()) => Ok(Ok(value)),
        Err(_) if value != T::default() => Err(DecodeError::ValueOnError { kind }),
        Err(code) => Ok(Err(code)),
    }
}

mod kind {
    pub const OPEN_FLOW: u8 = 1;
    pub const CLOSE_FLOW: u8 = 2;
    pub const SEND: u8 = 3;
    pub const READ: u8 = 4;
    pub const WRITE: u8 = 5;
    pub const INDIRECT_READ: u8 = 6;
    pub const REGISTER: u8 = 7;
    pub const UNREGISTER: u8 = 8;
    pub const LISTEN: u8 = 9;
    pub const UNLISTEN: u8 = 10;

    pub const FLOW_OPENED: u8 = 0x81;
    pub const FLOW_CLOSED: u8 = 0x82;
    pub const SENT: u8 = 0x83;
    pub const RECEIVED: u8 = 0x84;
    pub const READ_DONE: u8 = 0x85;
    pub const WRITE_DONE: u8 = 0x86;
    pub const REGISTERED: u8 = 0x87;
    pub const UNREGISTERED: u8 = 0x88;
    pub const ERROR: u8 = 0x89;
    pub const LISTENING: u8 = 0x8a;
    pub const FLOW_ACCEPTED: u8 = 0x8b;
    pub const UNLISTENED: u8 = 0x8c;
}

impl Command {
    /// Appends the record to `out` (at most [`MAX_RECORD_LEN`] bytes; a peer longer than
    /// [`MAX_PEER_LEN`] is cut at a character boundary below it).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut w = W(out);
        match self {
            Command::OpenFlow {
                cookie,
                peer,
                service,
            } => {
                let mut end = peer.len().min(MAX_PEER_LEN);
                while !peer.is_char_boundary(end) {
                    end -= 1;
                }
                w.u8(kind::OPEN_FLOW).u64(*cookie).u8(end as u8);
                w.0.extend_from_slice(&peer.as_bytes()[..end]);
                w.u32(*service);
            }
            Command::CloseFlow { flow } => {
                w.u8(kind::CLOSE_FLOW).u64(*flow);
            }
            Command::Send {
                flow,
                stream,
                head,
                len,
                cookie,
            } => {
                w.u8(kind::SEND)
                    .u64(*flow)
                    .u32(*stream)
                    .u32(*head)
                    .u32(*len)
                    .u64(*cookie);
            }
            Command::Read {
                flow,
                region,
                key,
                offset,
                len,
                local,
                cookie,
            } => {
                w.u8(kind::READ).u64(*flow).u32(*region).u64(*key).u64(*offset);
                w.u32(*len).u32(*local).u64(*cookie);
            }
            Command::Write {
                flow,
                region,
                key,
                offset,
                head,
                len,
                cookie,
            } => {
                w.u8(kind::WRITE).u64(*flow).u32(*region).u64(*key).u64(*offset);
                w.u32(*head).u32(*len).u64(*cookie);
            }
            Command::IndirectRead {
                flow,
                table,
                table_key,
                index,
                region,
                key,
                local,
                cookie,
            } => {
                w.u8(kind::INDIRECT_READ)
                    .u64(*flow)
                    .u32(*table)
                    .u64(*table_key)
                    .u64(*index);
                w.u32(*region).u64(*key).u32(*local).u64(*cookie);
            }
            Command::RegisterRegion { cookie, len } => {
                w.u8(kind::REGISTER).u64(*cookie).u64(*len);
            }
            Command::UnregisterRegion { cookie, region } => {
                w.u8(kind::UNREGISTER).u64(*cookie).u32(*region);
            }
            Command::Listen { cookie, service } => {
                w.u8(kind::LISTEN).u64(*cookie).u32(*service);
            }
            Command::Unlisten { cookie, service } => {
                w.u8(kind::UNLISTEN).u64(*cookie).u32(*service);
            }
        }
    }

    /// The record as a new vector.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64);
        self.encode_into(&mut v);
        v
    }

    /// Parses one record, checking everything.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = reader(buf)?;
        let cmd = match r.kind {
            kind::OPEN_FLOW => {
                let cookie = r.u64()?;
                let n = r.u8()? as usize;
                let peer = std::str::from_utf8(r.bytes(n)?).map_err(|_| DecodeError::BadPeer)?;
                Command::OpenFlow {
                    cookie,
                    peer: peer.to_owned(),
                    service: r.u32()?,
                }
            }
            kind::CLOSE_FLOW => Command::CloseFlow { flow: r.u64()? },
            kind::SEND => Command::Send {
                flow: r.u64()?,
                stream: r.u32()?,
                head: r.u32()?,
                len: r.u32()?,
                cookie: r.u64()?,
            },
            kind::READ => Command::Read {
                flow: r.u64()?,
                region: r.u32()?,
                key: r.u64()?,
                offset: r.u64()?,
                len: r.u32()?,
                local: r.u32()?,
                cookie: r.u64()?,
            },
            kind::WRITE => Command::Write {
                flow: r.u64()?,
                region: r.u32()?,
                key: r.u64()?,
                offset: r.u64()?,
                head: r.u32()?,
                len: r.u32()?,
                cookie: r.u64()?,
            },
            kind::INDIRECT_READ => Command::IndirectRead {
                flow: r.u64()?,
                table: r.u32()?,
                table_key: r.u64()?,
                index: r.u64()?,
                region: r.u32()?,
                key: r.u64()?,
                local: r.u32()?,
                cookie: r.u64()?,
            },
            kind::REGISTER => Command::RegisterRegion {
                cookie: r.u64()?,
                len: r.u64()?,
            },
            kind::UNREGISTER => Command::UnregisterRegion {
                cookie: r.u64()?,
                region: r.u32()?,
            },
            kind::LISTEN => Command::Listen {
                cookie: r.u64()?,
                service: r.u32()?,
            },
            kind::UNLISTEN => Command::Unlisten {
                cookie: r.u64()?,
                service: r.u32()?,
            },
            k => return Err(DecodeError::UnknownKind(k)),
        };
        r.finish(cmd)
    }

    /// The cookie completions of this command carry (CloseFlow has none: 0).
    pub fn cookie(&self) -> Cookie {
        match self {
            Command::CloseFlow { .. } => 0,
            Command::OpenFlow { cookie, .. }
            | Command::Send { cookie, .. }
            | Command::Read { cookie, .. }
            | Command::Write { cookie, .. }
            | Command::IndirectRead { cookie, .. }
            | Command::RegisterRegion { cookie, .. }
            | Command::UnregisterRegion { cookie, .. }
            | Command::Listen { cookie, .. }
            | Command::Unlisten { cookie, .. } => *cookie,
        }
    }
}

impl Completion {
    /// Appends the record to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut w = W(out);
        match self {
            Completion::FlowOpened { cookie, result } => {
                w.u8(kind::FLOW_OPENED).u64(*cookie).status(*result, |w, f| {
                    w.u64(f);
                });
            }
            Completion::FlowClosed { flow, reason } => {
                w.u8(kind::FLOW_CLOSED).u64(*flow).u8(*reason as u8);
            }
            Completion::Sent { cookie } => {
                w.u8(kind::SENT).u64(*cookie);
            }
            Completion::Received {
                flow,
                stream,
                head,
                len,
            } => {
                w.u8(kind::RECEIVED).u64(*flow).u32(*stream).u32(*head).u32(*len);
            }
            Completion::ReadDone { cookie, result } => {
                w.u8(kind::READ_DONE).u64(*cookie).status(*result, |w, n| {
                    w.u32(n);
                });
            }
            Completion::WriteDone { cookie, result } => {
                w.u8(kind::WRITE_DONE).u64(*cookie).status(*result, |_, ()| {});
            }
            Completion::RegionRegistered {
                cookie,
                region,
                key,
                len,
            } => {
                w.u8(kind::REGISTERED)
                    .u64(*cookie)
                    .u32(*region)
                    .u64(*key)
                    .u64(*len);
            }
            Completion::RegionUnregistered { cookie, region } => {
                w.u8(kind::UNREGISTERED).u64(*cookie).u32(*region);
            }
            Completion::Listening { cookie } => {
                w.u8(kind::LISTENING).u64(*cookie);
            }
            Completion::FlowAccepted { cookie, flow } => {
                w.u8(kind::FLOW_ACCEPTED).u64(*cookie).u64(*flow);
            }
            Completion::Unlistened { cookie } => {
                w.u8(kind::UNLISTENED).u64(*cookie);
            }
            Completion::Error { cookie, code, detail } => {
                w.u8(kind::ERROR).u64(*cookie).u16(*code as u16).u64(*detail);
            }
        }
    }

    /// The record as a new vector.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32);
        self.encode_into(&mut v);
        v
    }

    /// Parses one record, checking everything.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = reader(buf)?;
        let c = match r.kind {
            kind::FLOW_OPENED => {
                let cookie = r.u64()?;
                let status = r.status()?;
                let flow = r.u64()?;
                Completion::FlowOpened {
                    cookie,
                    result: with_value(status, flow, r.kind)?,
                }
            }
            kind::FLOW_CLOSED => {
                let flow = r.u64()?;
                let v = r.u8()?;
                let reason = CloseReason::from_u8(v).ok_or(DecodeError::BadReason(v))?;
                Completion::FlowClosed { flow, reason }
            }
            kind::SENT => Completion::Sent { cookie: r.u64()? },
            kind::RECEIVED => Completion::Received {
                flow: r.u64()?,
                stream: r.u32()?,
                head: r.u32()?,
                len: r.u32()?,
            },
            kind::READ_DONE => {
                let cookie = r.u64()?;
                let status = r.status()?;
                let len = r.u32()?;
                Completion::ReadDone {
                    cookie,
                    result: with_value(status, len, r.kind)?,
                }
            }
            kind::WRITE_DONE => Completion::WriteDone {
                cookie: r.u64()?,
                result: r.status()?,
            },
            kind::REGISTERED => Completion::RegionRegistered {
                cookie: r.u64()?,
                region: r.u32()?,
                key: r.u64()?,
                len: r.u64()?,
            },
            kind::UNREGISTERED => Completion::RegionUnregistered {
                cookie: r.u64()?,
                region: r.u32()?,
            },
            kind::ERROR => Completion::Error {
                cookie: r.u64()?,
                code: r.code()?,
                detail: r.u64()?,
            },
            kind::LISTENING => Completion::Listening { cookie: r.u64()? },
            kind::FLOW_ACCEPTED => Completion::FlowAccepted {
                cookie: r.u64()?,
                flow: r.u64()?,
            },
            kind::UNLISTENED => Completion::Unlistened { cookie: r.u64()? },
            k => return Err(DecodeError::UnknownKind(k)),
        };
        r.finish(c)
    }
}

#[cfg(test)]
mod tests;
