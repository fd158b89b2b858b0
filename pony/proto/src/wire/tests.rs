//! Hand-written cases: round trips, corruption and truncation of a sample of every kind,
//! error names, versions and sizes (the generated ones are in `proptests.rs`).

use super::*;

const PAYLOAD: &[u8] = b"hello, pony";
/// Indices in [`samples`].
const DATA: usize = 4;
const ACK: usize = 5;

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
            service: 0xC0FF_EE01,
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
            reason: RejectReason::NoListener,
        },
        Repr::Reject {
            dst_flow: 7,
            versions: VersionRange { min: 2, max: 5 },
            reason: RejectReason::Other(200),
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

pub(super) fn emit_vec(repr: &Repr<'_>) -> Vec<u8> {
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
    let data = emit_vec(&samples()[DATA]);
    let mut bad = data.clone();
    bad[0] = b'X';
    assert_eq!(Repr::parse(&bad), Err(WireError::BadMagic));
    let mut bad = data.clone();
    bad[2] = 1; // a version 1 Data packet: nothing speaks version 1 any more
    assert_eq!(Repr::parse(&bad), Err(WireError::UnsupportedVersion { found: 1 }));
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
fn reject_reasons() {
    for code in 0..=255u8 {
        match RejectReason::from_byte(code) {
            Some(reason) => assert_eq!(reason.to_byte(), code),
            None => assert_eq!(code, 0),
        }
    }
    // A Reject of reason 0 is malformed, a code this version does not know is kept.
    for (code, expected) in [
        (0, Err(WireError::Malformed("reject reason 0"))),
        (77, Ok(RejectReason::Other(77))),
    ] {
        let mut bytes = emit_vec(&samples()[2]);
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        p.set_reject_reason(code);
        p.fill_checksum();
        let reason = Repr::parse(&bytes).map(|r| match r {
            Repr::Reject { reason, .. } => reason,
            other => panic!("{other:?}"),
        });
        assert_eq!(reason, expected);
    }
}

#[test]
fn version_1_connect_is_not_spoken() {
    // Version 1's Connect: 32 bytes, no service. Its header length is wrong for version 2's
    // layout, so it is dropped as malformed (the version 1 initiator times out).
    let mut bytes = emit_vec(&samples()[0]);
    bytes.truncate(32);
    let mut p = Packet::new_unchecked(&mut bytes[..]);
    p.set_version(1);
    p.set_header_len(32);
    p.fill_checksum();
    assert_eq!(
        Repr::parse(&bytes),
        Err(WireError::Malformed("header length too short for the kind"))
    );
}

#[test]
fn emit_refuses_what_parse_would_reject() {
    let bad = [
        Repr::Connect {
            versions: VersionRange { min: 2, max: 1 },
            src_flow: 0,
            credit: 0,
            service: 0,
        },
        Repr::Reject {
            dst_flow: 0,
            versions: VersionRange { min: 0, max: 1 },
            reason: RejectReason::NoCommonVersion,
        },
        Repr::Reject {
            dst_flow: 0,
            versions: VersionRange { min: 1, max: 1 },
            reason: RejectReason::Other(2),
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
    let repr = &samples()[DATA];
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
    let mut bytes = emit_vec(&samples()[ACK]);
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

/// The checksum folded into the payload's copy (block by block) equals the one computed
/// over the finished packet in one go, for payloads that end inside, at and across the
/// copy's block boundaries and are gathered from parts of awkward sizes.
#[test]
fn checksum_folded_into_the_copy_matches_a_separate_pass() {
    for len in [0, 1, 4095, 4096, 4097, 8972, 3 * 4096 + 17] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let repr = Repr::OpResponse {
            dst_flow: 4,
            seq: 9,
            op: 77,
            total_len: len as u32,
            payload_offset: 0,
            payload: &[],
        };
        let cuts = [0, len / 3, (len / 3 + 1).min(len), len - len / 4, len];
        let parts: Vec<&[u8]> = cuts.windows(2).map(|w| &payload[w[0]..w[1]]).collect();
        let mut buf = vec![0u8; repr.buffer_len() + len];
        let n = repr.emit_gather(&parts, &mut buf).unwrap();
        assert_eq!(n, buf.len());
        let packet = Packet::new_unchecked(&buf[..]);
        assert_eq!(packet.checksum(), packet.compute_checksum(), "{len} bytes");
        let Ok(Repr::OpResponse { payload: got, .. }) = Repr::parse(&buf) else {
            panic!("{len} bytes: does not parse back");
        };
        assert_eq!(got, &payload[..]);
    }
}
