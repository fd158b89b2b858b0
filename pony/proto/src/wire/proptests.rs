//! Property tests of the codec: generated `Repr`s of every kind round trip, and the fuzz
//! target's body on random bytes, random bodies behind a valid header, and mutated packets
//! (the hand-written cases are in `tests.rs`).

use super::tests::emit_vec;
use super::*;
use proptest::prelude::*;

/// `repr` with its payload replaced by `new`.
fn with_payload<'a>(repr: &Repr<'a>, new: &'a [u8]) -> Repr<'a> {
    let mut r = repr.clone();
    match &mut r {
        Repr::Data { payload, .. }
        | Repr::WriteRequest { payload, .. }
        | Repr::OpResponse { payload, .. } => *payload = new,
        _ => {}
    }
    r
}

/// Random field values for any kind; [`Fields::repr`] bends them into a valid [`Repr`].
#[derive(Debug, Clone)]
struct Fields {
    kind: Kind,
    words: [u64; 6],
    small: [u32; 6],
    bytes: [u8; 3],
    sacks: Vec<(u64, u64)>,
    payload: Vec<u8>,
}

fn fields() -> impl Strategy<Value = Fields> {
    (
        proptest::sample::select(Kind::ALL.to_vec()),
        any::<[u64; 6]>(),
        any::<[u32; 6]>(),
        any::<[u8; 3]>(),
        proptest::collection::vec(any::<(u64, u64)>(), 0..=MAX_SACK_BLOCKS),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(kind, words, small, bytes, sacks, payload)| Fields {
            kind,
            words,
            small,
            bytes,
            sacks,
            payload,
        })
}

/// `offset, total` with `offset + len <= total`, from two random words.
fn segment(len: usize, a: u32, b: u32) -> (u32, u32) {
    let len = len as u64;
    let offset = u64::from(a) % (u64::from(u32::MAX) - len + 1);
    let total = offset + len + u64::from(b) % (u64::from(u32::MAX) - offset - len + 1);
    (offset as u32, total as u32)
}

impl Fields {
    fn repr(&self) -> Repr<'_> {
        let [w0, w1, w2, w3, w4, w5] = self.words;
        let [s0, s1, s2, s3, s4, s5] = self.small;
        let (lo, hi) = (self.bytes[0].max(1), self.bytes[1].max(1));
        let versions = VersionRange {
            min: lo.min(hi),
            max: lo.max(hi),
        };
        let payload = &self.payload[..];
        match self.kind {
            Kind::Connect => Repr::Connect {
                versions,
                src_flow: s0,
                credit: w0,
                service: s1,
            },
            Kind::Accept => Repr::Accept {
                dst_flow: s0,
                version: lo,
                src_flow: s1,
                credit: w0,
            },
            Kind::Reject => Repr::Reject {
                dst_flow: s0,
                versions,
                // Every valid code, named or not (0 is invalid: it becomes 1).
                reason: RejectReason::from_byte(self.bytes[2].max(1)).unwrap(),
            },
            Kind::Data => {
                let (offset, message_len) = segment(payload.len(), s2, s3);
                Repr::Data {
                    dst_flow: s0,
                    seq: w0,
                    timestamp_ns: w1,
                    stream: s1,
                    message: w2,
                    message_len,
                    offset,
                    payload,
                }
            }
            Kind::Ack => {
                let mut sacks = heapless_sacks::Sacks::default();
                for &(a, b) in &self.sacks {
                    let (start, end) = (a.min(b), a.max(b));
                    let (start, end) = if start == end {
                        (start.min(u64::MAX - 1), start.min(u64::MAX - 1) + 1)
                    } else {
                        (start, end)
                    };
                    sacks.push(SackBlock { start, end });
                }
                Repr::Ack {
                    dst_flow: s0,
                    cumulative: w0,
                    sacks,
                    credit: w1,
                    echo_timestamp_ns: w2,
                }
            }
            Kind::Close => Repr::Close { dst_flow: s0 },
            Kind::ReadRequest => Repr::ReadRequest {
                dst_flow: s0,
                seq: w0,
                op: w1,
                region: s1,
                key: w2,
                offset: w3.min(u64::MAX - u64::from(s2)),
                len: s2,
            },
            Kind::IndirectReadRequest => Repr::IndirectReadRequest {
                dst_flow: s0,
                seq: w0,
                op: w1,
                table: s1,
                table_key: w2,
                index: s2,
                region: s3,
                key: w3,
            },
            Kind::WriteRequest => {
                let (payload_offset, total_len) = segment(payload.len(), s2, s3);
                Repr::WriteRequest {
                    dst_flow: s0,
                    seq: w0,
                    op: w1,
                    region: s1,
                    key: w2,
                    offset: w3.min(u64::MAX - u64::from(total_len)),
                    total_len,
                    payload_offset,
                    payload,
                }
            }
            Kind::OpResponse => {
                let (payload_offset, total_len) = segment(payload.len(), s4, s5);
                Repr::OpResponse {
                    dst_flow: s0,
                    seq: w4,
                    op: w5,
                    total_len,
                    payload_offset,
                    payload,
                }
            }
            Kind::OpError => Repr::OpError {
                dst_flow: s0,
                seq: w0,
                op: w1,
                code: OpErrorCode::from_byte(self.bytes[2] % 3 + 2).unwrap(),
            },
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn generated_reprs_round_trip(fields in fields()) {
        let repr = fields.repr();
        let bytes = emit_vec(&repr);
        prop_assert_eq!(Repr::parse(&bytes), Ok(repr));
        check_parse_roundtrip(&bytes);
    }

    /// A payload gathered from pieces (part in the Repr, the rest in parts) makes the same
    /// packet as the contiguous payload.
    #[test]
    fn gathered_payloads_emit_the_same_bytes(
        fields in fields(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let repr = fields.repr();
        let payload = repr.payload();
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(payload.len() + 1)).collect();
        at.sort_unstable();
        let head = &payload[..at.first().copied().unwrap_or(payload.len())];
        let mut parts = Vec::new();
        for (i, &start) in at.iter().enumerate() {
            parts.push(&payload[start..at.get(i + 1).copied().unwrap_or(payload.len())]);
        }
        let mut gathered = vec![0u8; repr.buffer_len()];
        let n = with_payload(&repr, head).emit_gather(&parts, &mut gathered);
        prop_assert_eq!(n, Ok(gathered.len()));
        prop_assert_eq!(gathered, emit_vec(&repr));
    }

    /// The same with every piece held elsewhere ([`crate::flow::Piece::held`], copied,
    /// never borrowed) and an empty Repr payload, as the engine's send path emits pool
    /// buffers: byte-identical packets, checksum included.
    #[test]
    fn gathered_held_pieces_emit_the_same_bytes(
        fields in fields(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        use crate::flow::{HeldBytes, Piece};
        struct Held(Vec<u8>);
        impl HeldBytes for Held {
            fn len(&self) -> usize {
                self.0.len()
            }
            fn copy_to(&self, offset: usize, dst: &mut [u8]) {
                dst.copy_from_slice(&self.0[offset..offset + dst.len()]);
            }
        }
        let repr = fields.repr();
        let payload = repr.payload();
        let mut whole = Piece::held(std::sync::Arc::new(Held(payload.to_vec())));
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(payload.len() + 1)).collect();
        at.sort_unstable();
        let mut parts = Vec::new();
        let mut taken = 0;
        for &cut in &at {
            parts.push(whole.split_to(cut - taken));
            taken = cut;
        }
        parts.push(whole);
        let mut gathered = vec![0u8; repr.buffer_len()];
        let n = with_payload(&repr, &[]).emit_gather(&parts, &mut gathered);
        prop_assert_eq!(n, Ok(gathered.len()));
        prop_assert_eq!(gathered, emit_vec(&repr));
    }

    /// The fuzz target's body on random bytes (almost all rejected early).
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        fuzz_parse(&data);
    }

    /// The fuzz target's body on random bytes behind a valid common header and checksum,
    /// so the field checks after the checksum get exercised too.
    #[test]
    fn random_bodies_never_panic(
        kind in 0u8..14,
        sacks in 0u8..6,
        body in proptest::collection::vec(any::<u8>(), 0..150),
    ) {
        let mut data = vec![0u8; 16];
        data.extend_from_slice(&body);
        let header_len = Kind::from_byte(kind).map_or(16, |k| k.header_len(usize::from(sacks)));
        let header_len = header_len.min(data.len());
        let mut p = Packet::new_unchecked(&mut data[..]);
        p.set_magic(MAGIC);
        p.set_version(VERSION);
        p.set_kind_byte(kind);
        p.set_header_len(header_len as u16);
        p.set_payload_len((p.as_ref().len() - header_len) as u32);
        if header_len > 20 && kind == Kind::Ack as u8 {
            p.set_ack_sack_count(sacks);
        }
        p.fill_checksum();
        check_parse_roundtrip(&data);
    }

    /// The fuzz target's body on valid packets with a few bytes changed, with and without a
    /// fixed-up checksum.
    #[test]
    fn mutated_packets_never_panic(
        fields in fields(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        fix_checksum: bool,
    ) {
        let mut bytes = emit_vec(&fields.repr());
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if fix_checksum {
            Packet::new_unchecked(&mut bytes[..]).fill_checksum();
        }
        fuzz_parse(&bytes);
    }
}
