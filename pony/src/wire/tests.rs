//! Round trips, corruption and truncation of every kind, and the fuzz property on stable.

use super::*;
use proptest::prelude::*;

const PAYLOAD: &[u8] = b"hello, pony";

fn sacks(blocks: &[(u64, u64)]) -> heapless_sacks::Sacks {
    let mut sacks = heapless_sacks::Sacks::default();
    for &(start, end) in blocks {
        assert!(sacks.push(SackBlock { start, end }));
    }
    sacks
}

/// One hand-written packet of every kind.
fn samples() -> Vec<Repr<'static>> {
    vec![
        Repr::Connect {
            versions: VersionRange { min: 1, max: 3 },
            src_flow: 7,
            credit: 1 << 20,
        },
        Repr::Accept {
            dst_flow: 7,
            version: 1,
            src_flow: 9,
            credit: u64::MAX,
        },
        Repr::Reject {
            dst_flow: 7,
            versions: VersionRange { min: 2, max: 2 },
        },
        Repr::Data {
            dst_flow: 9,
            seq: 42,
            timestamp_ns: 123_456_789,
            stream: 3,
            message: 5,
            message_len: 100,
            offset: 20,
            payload: PAYLOAD,
        },
        Repr::Ack {
            dst_flow: 7,
            cumulative: 40,
            sacks: sacks(&[(42, 43), (45, 50), (60, 61), (u64::MAX - 1, u64::MAX)]),
            credit: 4096,
            echo_timestamp_ns: 123_456_789,
        },
        Repr::Ack {
            dst_flow: 7,
            cumulative: 0,
            sacks: sacks(&[]),
            credit: 0,
            echo_timestamp_ns: 0,
        },
        Repr::Close { dst_flow: 9 },
        Repr::ReadRequest {
            dst_flow: 9,
            seq: 1,
            op: 2,
            region: 3,
            key: 4,
            offset: 5,
            len: 6,
        },
        Repr::IndirectReadRequest {
            dst_flow: 9,
            seq: 1,
            op: 2,
            table: 3,
            table_key: 4,
            index: 5,
            region: 6,
            key: 7,
        },
        Repr::WriteRequest {
            dst_flow: 9,
            seq: 1,
            op: 2,
            region: 3,
            key: 4,
            offset: 5,
            total_len: 11,
            payload_offset: 0,
            payload: PAYLOAD,
        },
        Repr::OpResponse {
            dst_flow: 9,
            seq: 1,
            op: 2,
            total_len: 0,
            payload_offset: 0,
            payload: &[],
        },
        Repr::OpResponse {
            dst_flow: 9,
            seq: 1,
            op: 2,
            total_len: 30,
            payload_offset: 19,
            payload: PAYLOAD,
        },
        Repr::OpError {
            dst_flow: 9,
            seq: 1,
            op: 2,
            code: OpErrorCode::OutOfBounds,
        },
    ]
}

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

fn emit_vec(repr: &Repr<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; repr.buffer_len()];
    assert_eq!(repr.emit(&mut buf), Ok(buf.len()));
    buf
}

#[test]
fn every_sample_round_trips() {
    let mut kinds = std::collections::HashSet::new();
    for repr in samples() {
        let bytes = emit_vec(&repr);
        assert_eq!(Repr::parse(&bytes), Ok(repr.clone()));
        assert_eq!(
            bytes.len(),
            repr.kind().header_len(0) + repr.payload().len() + {
                if let Repr::Ack { sacks, .. } = &repr {
                    16 * sacks.len()
                } else {
                    0
                }
            }
        );
        check_parse_roundtrip(&bytes);
        kinds.insert(repr.kind());
    }
    assert_eq!(kinds.len(), Kind::ALL.len(), "a kind has no sample");
}

#[test]
fn every_single_bit_flip_is_an_error() {
    for repr in samples() {
        let bytes = emit_vec(&repr);
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                Repr::parse(&bad).is_err(),
                "flip of bit {bit} of {repr:?} went unnoticed"
            );
        }
    }
}

#[test]
fn every_truncation_and_extension_is_an_error() {
    for repr in samples() {
        let bytes = emit_vec(&repr);
        for len in 0..bytes.len() {
            assert!(
                Repr::parse(&bytes[..len]).is_err(),
                "{repr:?} cut to {len} bytes parsed"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Repr::parse(&longer).is_err());
    }
}

#[test]
fn errors_name_the_problem() {
    let data = emit_vec(&samples()[3]);
    let mut bad = data.clone();
    bad[0] = b'X';
    assert_eq!(Repr::parse(&bad), Err(WireError::BadMagic));
    let mut bad = data.clone();
    bad[2] = 2;
    assert_eq!(Repr::parse(&bad), Err(WireError::UnsupportedVersion { found: 2 }));
    let mut bad = data.clone();
    bad[3] = 200;
    assert_eq!(Repr::parse(&bad), Err(WireError::UnknownKind(200)));
    let mut bad = data.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert_eq!(Repr::parse(&bad), Err(WireError::BadChecksum));
    assert_eq!(Repr::parse(&data[..10]), Err(WireError::Truncated));
    assert_eq!(Repr::parse(&data[..data.len() - 1]), Err(WireError::Truncated));
    // A field invariant broken under a valid checksum.
    let mut bad = data.clone();
    let mut p = Packet::new_unchecked(&mut bad[..]);
    p.set_data_offset(95);
    p.fill_checksum();
    assert!(matches!(Repr::parse(&bad), Err(WireError::Malformed(_))));
    let mut bad = data;
    let mut p = Packet::new_unchecked(&mut bad[..]);
    p.set_reserved(1);
    p.fill_checksum();
    assert_eq!(
        Repr::parse(&bad),
        Err(WireError::Malformed("reserved bytes not zero"))
    );
}

#[test]
fn handshake_packets_parse_in_any_version() {
    for repr in samples().into_iter().filter(|r| r.kind().is_handshake()) {
        let mut bytes = emit_vec(&repr);
        for version in [0, 2, 9, 255] {
            let mut p = Packet::new_unchecked(&mut bytes[..]);
            p.set_version(version);
            p.fill_checksum();
            assert_eq!(Repr::parse(&bytes), Ok(repr.clone()));
            check_parse_roundtrip(&bytes);
        }
    }
}

#[test]
fn emit_refuses_what_parse_would_reject() {
    let bad = [
        Repr::Connect {
            versions: VersionRange { min: 2, max: 1 },
            src_flow: 0,
            credit: 0,
        },
        Repr::Reject {
            dst_flow: 0,
            versions: VersionRange { min: 0, max: 1 },
        },
        Repr::Accept {
            dst_flow: 0,
            version: 0,
            src_flow: 0,
            credit: 0,
        },
        Repr::Ack {
            dst_flow: 0,
            cumulative: 0,
            sacks: sacks(&[(5, 5)]),
            credit: 0,
            echo_timestamp_ns: 0,
        },
        Repr::Data {
            dst_flow: 0,
            seq: 0,
            timestamp_ns: 0,
            stream: 0,
            message: 0,
            message_len: 10,
            offset: 0,
            payload: PAYLOAD,
        },
        Repr::ReadRequest {
            dst_flow: 0,
            seq: 0,
            op: 0,
            region: 0,
            key: 0,
            offset: u64::MAX,
            len: 1,
        },
        Repr::OpResponse {
            dst_flow: 0,
            seq: 0,
            op: 0,
            total_len: 11,
            payload_offset: 1,
            payload: PAYLOAD,
        },
    ];
    let mut buf = [0u8; 256];
    for repr in bad {
        assert!(
            matches!(repr.emit(&mut buf), Err(WireError::Malformed(_))),
            "{repr:?}"
        );
    }
    let repr = &samples()[3];
    let mut short = vec![0u8; repr.buffer_len() - 1];
    assert_eq!(
        repr.emit(&mut short),
        Err(WireError::BufferTooSmall {
            needed: repr.buffer_len(),
            got: short.len()
        })
    );
}

#[test]
fn too_many_sack_blocks_are_rejected() {
    let mut bytes = emit_vec(&samples()[4]);
    let mut p = Packet::new_unchecked(&mut bytes[..]);
    p.set_ack_sack_count(MAX_SACK_BLOCKS as u8 + 1);
    p.set_header_len(Kind::Ack.header_len(MAX_SACK_BLOCKS + 1) as u16);
    bytes.extend_from_slice(&[0; 16]);
    let mut p = Packet::new_unchecked(&mut bytes[..]);
    p.fill_checksum();
    assert_eq!(
        Repr::parse(&bytes),
        Err(WireError::Malformed("too many SACK blocks"))
    );
}

#[test]
fn sizes() {
    assert_eq!(MAX_HEADER_LEN, 112);
    for kind in Kind::ALL {
        assert_eq!(Kind::from_byte(kind as u8), Some(kind));
        assert_eq!(kind.header_len(0) % 8, 0);
        assert!(kind.header_len(0) <= MAX_HEADER_LEN);
    }
    assert_eq!(Kind::from_byte(0), None);
    assert_eq!(Kind::from_byte(12), None);
    assert_eq!(max_payload(1500, Kind::Data), 1500 - 56);
    assert_eq!(max_payload(1500, Kind::WriteRequest), 1500 - 64);
    assert_eq!(max_payload(1500, Kind::Ack), 0);
    assert_eq!(max_payload(40, Kind::Data), 0);
    // A full-size segment fits the MTU exactly.
    let payload = vec![0xAB; max_payload(1500, Kind::Data)];
    let repr = Repr::Data {
        dst_flow: 1,
        seq: 1,
        timestamp_ns: 1,
        stream: 1,
        message: 1,
        message_len: payload.len() as u32,
        offset: 0,
        payload: &payload,
    };
    assert_eq!(repr.buffer_len(), 1500);
}

#[test]
fn negotiation() {
    let r = |min, max| VersionRange { min, max };
    assert_eq!(negotiate(r(1, 1), r(1, 1)), Some(1));
    assert_eq!(negotiate(r(1, 3), r(2, 5)), Some(3));
    assert_eq!(negotiate(r(2, 5), r(1, 3)), Some(3));
    assert_eq!(negotiate(r(1, 2), r(3, 4)), None);
    assert_eq!(negotiate(r(3, 1), r(1, 3)), None);
    assert_eq!(negotiate(r(0, 1), r(0, 1)), None);
    assert_eq!(negotiate(SUPPORTED_VERSIONS, SUPPORTED_VERSIONS), Some(VERSION));
}

#[test]
fn drop_counters() {
    let mut counters = DropCounters::default();
    for bytes in [
        &[][..],
        b"XX\x01\x04aaaaaaaaaaaaaaaaaaaaa",
        &emit_vec(&samples()[0])[..31],
    ] {
        counters.record(&Repr::parse(bytes).unwrap_err());
    }
    assert_eq!(counters.truncated, 2);
    assert_eq!(counters.bad_magic, 1);
    assert_eq!(counters.total(), 3);
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
                code: OpErrorCode::from_byte(self.bytes[2] % 4 + 1).unwrap(),
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
