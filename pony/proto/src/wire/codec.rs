//! [`Repr::parse`], [`Repr::emit`] and the invariants both keep, over the [`Packet`] view.

use super::packet;
use super::{
    heapless_sacks, FlowId, Kind, OpErrorCode, Packet, PayloadPart, RejectReason, Repr, VersionRange,
    WireError, MAGIC, VERSION,
};

/// `Ok` when a payload segment of `len` bytes at `offset` lies within `total`.
fn check_segment(offset: u32, len: usize, total: u32, what: &'static str) -> Result<(), WireError> {
    match u64::try_from(len) {
        Ok(len) if u64::from(offset) + len <= u64::from(total) => Ok(()),
        _ => Err(WireError::Malformed(what)),
    }
}

impl<'a> Repr<'a> {
    /// Parses and validates one packet (exactly `bytes`, no trailing bytes). Never panics.
    pub fn parse(bytes: &'a [u8]) -> Result<Repr<'a>, WireError> {
        let packet = Packet::new_checked(bytes)?;
        if !packet.verify_checksum() {
            return Err(WireError::BadChecksum);
        }
        Repr::from_packet(&packet)
    }

    /// Builds the [`Repr`] of a packet that passed [`Packet::new_checked`] (the checksum is
    /// not looked at: [`Repr::parse`] does that) and checks every field's invariants.
    pub fn from_packet<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&'a T>) -> Result<Repr<'a>, WireError> {
        packet.check_len()?;
        let kind = packet.kind().ok_or(WireError::UnknownKind(packet.kind_byte()))?;
        let bytes = packet.as_ref();
        for range in packet::reserved_ranges(kind) {
            if bytes.get(range.clone()).is_none_or(|r| r.iter().any(|&b| b != 0)) {
                return Err(WireError::Malformed("reserved bytes not zero"));
            }
        }
        let repr = match kind {
            Kind::Connect => Repr::Connect {
                versions: VersionRange {
                    min: packet.connect_version_min(),
                    max: packet.connect_version_max(),
                },
                src_flow: packet.connect_src_flow(),
                credit: packet.connect_credit(),
                service: packet.connect_service(),
            },
            Kind::Accept => Repr::Accept {
                dst_flow: packet.dst_flow(),
                version: packet.accept_version(),
                src_flow: packet.accept_src_flow(),
                credit: packet.accept_credit(),
            },
            Kind::Reject => Repr::Reject {
                dst_flow: packet.dst_flow(),
                versions: VersionRange {
                    min: packet.reject_version_min(),
                    max: packet.reject_version_max(),
                },
                reason: RejectReason::from_byte(packet.reject_reason())
                    .ok_or(WireError::Malformed("reject reason 0"))?,
            },
            Kind::Data => Repr::Data {
                dst_flow: packet.dst_flow(),
                seq: packet.seq(),
                timestamp_ns: packet.data_timestamp(),
                stream: packet.data_stream(),
                message: packet.data_message(),
                message_len: packet.data_message_len(),
                offset: packet.data_offset(),
                payload: packet.payload(),
            },
            Kind::Ack => {
                let mut sacks = heapless_sacks::Sacks::default();
                for index in 0..usize::from(packet.ack_sack_count()) {
                    if !sacks.push(packet.ack_sack(index)) {
                        return Err(WireError::Malformed("too many SACK blocks"));
                    }
                }
                Repr::Ack {
                    dst_flow: packet.dst_flow(),
                    cumulative: packet.seq(),
                    sacks,
                    credit: packet.ack_credit(),
                    echo_timestamp_ns: packet.ack_echo_timestamp(),
                }
            }
            Kind::Close => Repr::Close {
                dst_flow: packet.dst_flow(),
            },
            Kind::ReadRequest => Repr::ReadRequest {
                dst_flow: packet.dst_flow(),
                seq: packet.seq(),
                op: packet.op(),
                region: packet.region(),
                key: packet.key(),
                offset: packet.region_offset(),
                len: packet.read_len(),
            },
            Kind::IndirectReadRequest => Repr::IndirectReadRequest {
                dst_flow: packet.dst_flow(),
                seq: packet.seq(),
                op: packet.op(),
                table: packet.indirect_table(),
                table_key: packet.indirect_table_key(),
                index: packet.indirect_index(),
                region: packet.indirect_region(),
                key: packet.indirect_key(),
            },
            Kind::WriteRequest => Repr::WriteRequest {
                dst_flow: packet.dst_flow(),
                seq: packet.seq(),
                op: packet.op(),
                region: packet.region(),
                key: packet.key(),
                offset: packet.region_offset(),
                total_len: packet.write_total_len(),
                payload_offset: packet.write_payload_offset(),
                payload: packet.payload(),
            },
            Kind::OpResponse => Repr::OpResponse {
                dst_flow: packet.dst_flow(),
                seq: packet.seq(),
                op: packet.op(),
                total_len: packet.response_total_len(),
                payload_offset: packet.response_payload_offset(),
                payload: packet.payload(),
            },
            Kind::OpError => Repr::OpError {
                dst_flow: packet.dst_flow(),
                seq: packet.seq(),
                op: packet.op(),
                code: OpErrorCode::from_byte(packet.error_code())
                    .ok_or(WireError::Malformed("unknown op error code"))?,
            },
        };
        repr.check(repr.payload().len())?;
        Ok(repr)
    }

    /// The packet's kind.
    pub const fn kind(&self) -> Kind {
        match self {
            Repr::Connect { .. } => Kind::Connect,
            Repr::Accept { .. } => Kind::Accept,
            Repr::Reject { .. } => Kind::Reject,
            Repr::Data { .. } => Kind::Data,
            Repr::Ack { .. } => Kind::Ack,
            Repr::Close { .. } => Kind::Close,
            Repr::ReadRequest { .. } => Kind::ReadRequest,
            Repr::IndirectReadRequest { .. } => Kind::IndirectReadRequest,
            Repr::WriteRequest { .. } => Kind::WriteRequest,
            Repr::OpResponse { .. } => Kind::OpResponse,
            Repr::OpError { .. } => Kind::OpError,
        }
    }

    /// The receiver's flow id (what the flow mapper demultiplexes on); `None` for Connect.
    pub const fn dst_flow(&self) -> Option<FlowId> {
        match *self {
            Repr::Connect { .. } => None,
            Repr::Accept { dst_flow, .. }
            | Repr::Reject { dst_flow, .. }
            | Repr::Data { dst_flow, .. }
            | Repr::Ack { dst_flow, .. }
            | Repr::Close { dst_flow }
            | Repr::ReadRequest { dst_flow, .. }
            | Repr::IndirectReadRequest { dst_flow, .. }
            | Repr::WriteRequest { dst_flow, .. }
            | Repr::OpResponse { dst_flow, .. }
            | Repr::OpError { dst_flow, .. } => Some(dst_flow),
        }
    }

    /// The payload (empty for kinds without one).
    pub const fn payload(&self) -> &'a [u8] {
        match *self {
            Repr::Data { payload, .. }
            | Repr::WriteRequest { payload, .. }
            | Repr::OpResponse { payload, .. } => payload,
            _ => &[],
        }
    }

    /// Bytes [`Repr::emit`] writes: header plus payload.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload().len()
    }

    fn header_len(&self) -> usize {
        let sacks = match self {
            Repr::Ack { sacks, .. } => sacks.len(),
            _ => 0,
        };
        self.kind().header_len(sacks)
    }

    /// The invariants `parse` enforces and `emit` keeps, for a payload of `payload_len` bytes.
    fn check(&self, payload_len: usize) -> Result<(), WireError> {
        match *self {
            Repr::Connect { versions, .. } | Repr::Reject { versions, .. } if !versions.is_valid() => {
                Err(WireError::Malformed("empty version range"))
            }
            Repr::Accept { version: 0, .. } => Err(WireError::Malformed("version 0")),
            // Other(1) would be written as 1 and read back as NoCommonVersion: not canonical.
            Repr::Reject {
                reason: RejectReason::Other(0..=3),
                ..
            } => Err(WireError::Malformed("reject reason that has a name or is 0")),
            Repr::Data {
                message_len, offset, ..
            } => check_segment(offset, payload_len, message_len, "segment outside its message"),
            Repr::Ack { ref sacks, .. } if sacks.iter().any(|b| b.start >= b.end) => {
                Err(WireError::Malformed("empty SACK block"))
            }
            Repr::ReadRequest { offset, len, .. } if offset.checked_add(u64::from(len)).is_none() => {
                Err(WireError::Malformed("read past the end of the address space"))
            }
            Repr::WriteRequest {
                offset,
                total_len,
                payload_offset,
                ..
            } => {
                if offset.checked_add(u64::from(total_len)).is_none() {
                    return Err(WireError::Malformed("write past the end of the address space"));
                }
                check_segment(
                    payload_offset,
                    payload_len,
                    total_len,
                    "segment outside its write",
                )
            }
            Repr::OpResponse {
                total_len,
                payload_offset,
                ..
            } => check_segment(
                payload_offset,
                payload_len,
                total_len,
                "segment outside its response",
            ),
            _ => Ok(()),
        }
    }

    /// Writes the packet at the start of `buf`, checksum included, and returns its length
    /// ([`Repr::buffer_len`]). Fails, writing nothing, if the repr breaks an invariant
    /// `parse` enforces or `buf` is too short. Never allocates.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        self.emit_gather::<&[u8]>(&[], buf)
    }

    /// [`Repr::emit`] with a scattered payload: the packet's payload is the Repr's own
    /// payload followed by `parts`, gathered straight into `buf`. This is how a message
    /// held as pieces of an app's pool buffers reaches the NIC with its one copy (the
    /// gather into the packet) and no contiguous staging copy before it. The offsets and
    /// lengths the Repr states must describe the whole gathered payload. Each part copies
    /// itself in ([`PayloadPart`]): a part in memory someone else can write is never
    /// borrowed, and the checksum is computed over each copied block of the packet as it lands
    /// (one pass over the payload), never over the parts.
    pub fn emit_gather<B: PayloadPart>(&self, parts: &[B], buf: &mut [u8]) -> Result<usize, WireError> {
        let payload_len = self.payload().len() + parts.iter().map(PayloadPart::part_len).sum::<usize>();
        self.check(payload_len)?;
        let len = self.header_len() + payload_len;
        let Some(buf) = buf.get_mut(..len) else {
            return Err(WireError::BufferTooSmall {
                needed: len,
                got: buf.len(),
            });
        };
        let kind = self.kind();
        let header_len = len - payload_len;
        let mut p = Packet::new_unchecked(buf);
        p.clear_header(header_len);
        p.set_magic(MAGIC);
        p.set_kind_byte(kind as u8);
        p.set_version(VERSION);
        p.set_header_len(header_len as u16);
        p.set_payload_len(payload_len as u32);
        match *self {
            Repr::Connect {
                versions,
                src_flow,
                credit,
                service,
            } => {
                p.set_version(versions.max);
                p.set_connect_src_flow(src_flow);
                p.set_connect_version_min(versions.min);
                p.set_connect_version_max(versions.max);
                p.set_connect_credit(credit);
                p.set_connect_service(service);
            }
            Repr::Accept {
                dst_flow,
                version,
                src_flow,
                credit,
            } => {
                p.set_version(version);
                p.set_dst_flow(dst_flow);
                p.set_accept_src_flow(src_flow);
                p.set_accept_credit(credit);
                p.set_accept_version(version);
            }
            Repr::Reject {
                dst_flow,
                versions,
                reason,
            } => {
                p.set_version(versions.max);
                p.set_dst_flow(dst_flow);
                p.set_reject_version_min(versions.min);
                p.set_reject_version_max(versions.max);
                p.set_reject_reason(reason.to_byte());
            }
            Repr::Data {
                dst_flow,
                seq,
                timestamp_ns,
                stream,
                message,
                message_len,
                offset,
                ..
            } => {
                p.set_dst_flow(dst_flow);
                p.set_seq(seq);
                p.set_data_timestamp(timestamp_ns);
                p.set_data_stream(stream);
                p.set_data_message(message);
                p.set_data_message_len(message_len);
                p.set_data_offset(offset);
            }
            Repr::Ack {
                dst_flow,
                cumulative,
                ref sacks,
                credit,
                echo_timestamp_ns,
            } => {
                p.set_dst_flow(dst_flow);
                p.set_seq(cumulative);
                p.set_ack_sack_count(sacks.len() as u8);
                p.set_ack_credit(credit);
                p.set_ack_echo_timestamp(echo_timestamp_ns);
                for (index, block) in sacks.iter().enumerate() {
                    p.set_ack_sack(index, block);
                }
            }
            Repr::Close { dst_flow } => p.set_dst_flow(dst_flow),
            Repr::ReadRequest {
                dst_flow,
                seq,
                op,
                region,
                key,
                offset,
                len,
            } => {
                p.set_dst_flow(dst_flow);
                p.set_seq(seq);
                p.set_op(op);
                p.set_region(region);
                p.set_key(key);
                p.set_region_offset(offset);
                p.set_read_len(len);
            }
            Repr::IndirectReadRequest {
                dst_flow,
                seq,
                op,
                table,
                table_key,
                index,
                region,
                key,
            } => {
                p.set_dst_flow(dst_flow);
                p.set_seq(seq);
                p.set_op(op);
                p.set_indirect_table(table);
                p.set_indirect_table_key(table_key);
                p.set_indirect_index(index);
                p.set_indirect_region(region);
                p.set_indirect_key(key);
            }
            Repr::WriteRequest {
                dst_flow,
                seq,
                op,
                region,
                key,
                offset,
                total_len,
                payload_offset,
                ..
            } => {
                p.set_dst_flow(dst_flow);
                p.set_seq(seq);
                p.set_op(op);
                p.set_region(region);
                p.set_key(key);
                p.set_region_offset(offset);
                p.set_write_total_len(total_len);
                p.set_write_payload_offset(payload_offset);
            }
            Repr::OpResponse {
                dst_flow,
                seq,
                op,
                total_len,
                payload_offset,
                ..
            } => {
                p.set_dst_flow(dst_flow);
                p.set_seq(seq);
                p.set_op(op);
                p.set_response_total_len(total_len);
                p.set_response_payload_offset(payload_offset);
            }
            Repr::OpError {
                dst_flow,
                seq,
                op,
                code,
            } => {
                p.set_dst_flow(dst_flow);
                p.set_seq(seq);
                p.set_op(op);
                p.set_error_code(code as u8);
            }
        }
        // The checksum is folded into the payload's copy: each block is summed right after
        // it lands, while it is still in L1, so the payload is read from its source once
        // and the packet is not read again from memory (the header is ours and small).
        let mut crc = p.header_checksum(header_len);
        let out = p.payload_mut();
        let mut at = copy_summing(self.payload(), out, 0, &mut crc);
        for part in parts {
            at = copy_summing(part, out, at, &mut crc);
        }
        debug_assert_eq!(at, payload_len);
        p.set_checksum(crc);
        Ok(len)
    }
}

/// Bytes copied per step of [`copy_summing`]: small enough that a block is still in L1 when
/// the CRC reads it back, large enough that the CRC runs at its full (3-way) speed.
const FOLD_BLOCK: usize = 4096;

/// Copies `part` into `out` at `at`, a block at a time, continuing `crc` over each block as
/// soon as it is copied; returns where the part ends in `out`.
fn copy_summing<P: PayloadPart + ?Sized>(part: &P, out: &mut [u8], at: usize, crc: &mut u32) -> usize {
    let n = part.part_len();
    let mut done = 0;
    while done < n {
        let take = (n - done).min(FOLD_BLOCK);
        let dst = &mut out[at + done..at + done + take];
        part.copy_to(done, dst);
        *crc = crc32c::crc32c_append(*crc, dst);
        done += take;
    }
    at + n
}

/// The fuzz target's body (`pony/fuzz`, target `parse`), also run by the stable tests:
/// [`check_parse_roundtrip`] on `data` as given, which exercises the checks before the
/// checksum, then on a copy whose checksum field is made right, so the field checks behind
/// the checksum get explored too (random bytes almost never carry a valid CRC).
pub fn fuzz_parse(data: &[u8]) {
    check_parse_roundtrip(data);
    if data.len() >= packet::COMMON_HEADER_LEN {
        let mut fixed = data.to_vec();
        Packet::new_unchecked(&mut fixed[..]).fill_checksum();
        check_parse_roundtrip(&fixed);
    }
}

/// The property: parsing `data` never panics, and if it succeeds, emitting the [`Repr`]
/// gives a packet that parses to the same [`Repr`] and has the same bytes (the version byte
/// and checksum of handshake packets aside). Panics when the property fails.
pub fn check_parse_roundtrip(data: &[u8]) {
    let Ok(repr) = Repr::parse(data) else { return };
    let mut out = vec![0u8; repr.buffer_len()];
    let len = repr.emit(&mut out).expect("a parsed Repr must emit");
    assert_eq!(len, data.len(), "emit changed the length");
    assert_eq!(
        Repr::parse(&out),
        Ok(repr.clone()),
        "emit then parse changed the Repr"
    );
    let same_version = out.get(2) == data.get(2);
    for (i, (a, b)) in out.iter().zip(data).enumerate() {
        let may_differ = repr.kind().is_handshake() && !same_version && (i == 2 || (4..8).contains(&i));
        assert!(
            a == b || may_differ,
            "byte {i} differs after re-emitting {repr:?}"
        );
    }
}
