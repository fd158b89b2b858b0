//! Codec tests: round trips, truncation and trailing bytes, arbitrary input never panics.

use super::*;
use proptest::prelude::*;

fn command() -> impl Strategy<Value = Command> {
    let a = any::<u64>;
    prop_oneof![
        (a(), "[a-z0-9.:]{0,40}", any::<u32>()).prop_map(|(cookie, peer, service)| Command::OpenFlow {
            cookie,
            peer,
            service
        }),
        a().prop_map(|flow| Command::CloseFlow { flow }),
        (a(), any::<u32>(), any::<u32>(), any::<u32>(), a()).prop_map(|(flow, stream, head, len, cookie)| {
            Command::Send {
                flow,
                stream,
                head,
                len,
                cookie,
            }
        }),
        (a(), any::<u32>(), a(), a(), any::<u32>(), any::<u32>(), a()).prop_map(
            |(flow, region, key, offset, len, local, cookie)| Command::Read {
                flow,
                region,
                key,
                offset,
                len,
                local,
                cookie
            }
        ),
        (a(), any::<u32>(), a(), a(), any::<u32>(), any::<u32>(), a()).prop_map(
            |(flow, region, key, offset, head, len, cookie)| Command::Write {
                flow,
                region,
                key,
                offset,
                head,
                len,
                cookie
            }
        ),
        (a(), any::<u32>(), a(), a(), any::<u32>(), a(), any::<u32>(), a()).prop_map(
            |(flow, table, table_key, index, region, key, local, cookie)| Command::IndirectRead {
                flow,
                table,
                table_key,
                index,
                region,
                key,
                local,
                cookie
            }
        ),
        (a(), a()).prop_map(|(cookie, len)| Command::RegisterRegion { cookie, len }),
        (a(), any::<u32>()).prop_map(|(cookie, region)| Command::UnregisterRegion { cookie, region }),
        (a(), any::<u32>()).prop_map(|(cookie, service)| Command::Listen { cookie, service }),
        (a(), any::<u32>()).prop_map(|(cookie, service)| Command::Unlisten { cookie, service }),
    ]
}

fn code() -> impl Strategy<Value = OpErrorCode> {
    (1u16..=OpErrorCode::LAST as u16).prop_map(|c| OpErrorCode::from_u16(c).unwrap())
}

fn reason() -> impl Strategy<Value = CloseReason> {
    (1u8..=4).prop_map(|v| CloseReason::from_u8(v).unwrap())
}

fn completion() -> impl Strategy<Value = Completion> {
    let a = any::<u64>;
    prop_oneof![
        (a(), prop::result::maybe_ok(a(), code()))
            .prop_map(|(cookie, result)| Completion::FlowOpened { cookie, result }),
        (a(), reason()).prop_map(|(flow, reason)| Completion::FlowClosed { flow, reason }),
        a().prop_map(|cookie| Completion::Sent { cookie }),
        (a(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(flow, stream, head, len)| {
            Completion::Received {
                flow,
                stream,
                head,
                len,
            }
        }),
        (a(), prop::result::maybe_ok(any::<u32>(), code()))
            .prop_map(|(cookie, result)| Completion::ReadDone { cookie, result }),
        (a(), prop::result::maybe_ok(Just(()), code()))
            .prop_map(|(cookie, result)| Completion::WriteDone { cookie, result }),
        (a(), any::<u32>(), a(), a()).prop_map(|(cookie, region, key, len)| {
            Completion::RegionRegistered {
                cookie,
                region,
                key,
                len,
            }
        }),
        (a(), any::<u32>()).prop_map(|(cookie, region)| Completion::RegionUnregistered { cookie, region }),
        (a(), code(), a()).prop_map(|(cookie, code, detail)| Completion::Error { cookie, code, detail }),
        a().prop_map(|cookie| Completion::Listening { cookie }),
        (a(), a()).prop_map(|(cookie, flow)| Completion::FlowAccepted { cookie, flow }),
        a().prop_map(|cookie| Completion::Unlistened { cookie }),
    ]
}

proptest! {
    #[test]
    fn commands_round_trip(c in command()) {
        let bytes = c.encode();
        prop_assert!(bytes.len() <= MAX_RECORD_LEN);
        prop_assert_eq!(Command::decode(&bytes), Ok(c));
        // Every strict prefix is truncated, one more byte is trailing.
        for n in 0..bytes.len() {
            prop_assert!(Command::decode(&bytes[..n]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(
            matches!(Command::decode(&longer), Err(DecodeError::Trailing { extra: 1, .. })),
            "{:?}", Command::decode(&longer)
        );
    }

    #[test]
    fn completions_round_trip(c in completion()) {
        let bytes = c.encode();
        prop_assert_eq!(Completion::decode(&bytes), Ok(c));
        for n in 0..bytes.len() {
            prop_assert!(Completion::decode(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn decoded_records_are_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        fuzz_decode(&bytes);
    }

    #[test]
    fn mutated_records_are_canonical_when_they_decode(
        c in completion(),
        cmd in command(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        for mut bytes in [c.encode(), cmd.encode()] {
            let i = at.index(bytes.len());
            bytes[i] = byte;
            fuzz_decode(&bytes);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Command::decode(&bytes);
        let _ = Completion::decode(&bytes);
    }
}

#[test]
fn bad_records_are_specific_errors() {
    assert_eq!(Command::decode(&[]), Err(DecodeError::Empty));
    assert_eq!(Command::decode(&[0x81]), Err(DecodeError::UnknownKind(0x81)));
    assert_eq!(Completion::decode(&[3]), Err(DecodeError::UnknownKind(3)));
    let mut bad_utf8 = vec![kind::OPEN_FLOW];
    bad_utf8.extend_from_slice(&7u64.to_le_bytes());
    bad_utf8.extend_from_slice(&[2, 0xff, 0xfe, 0, 0, 0, 0]);
    assert_eq!(Command::decode(&bad_utf8), Err(DecodeError::BadPeer));
    let mut bad_code = Completion::WriteDone {
        cookie: 1,
        result: Ok(()),
    }
    .encode();
    bad_code[9] = 0xee;
    assert_eq!(Completion::decode(&bad_code), Err(DecodeError::BadCode(0xee)));
}

#[test]
fn long_peer_is_cut_on_a_char_boundary() {
    let peer = "é".repeat(200); // 400 bytes
    let bytes = Command::OpenFlow {
        cookie: 1,
        peer,
        service: u32::MAX,
    }
    .encode();
    assert!(bytes.len() <= MAX_RECORD_LEN);
    let Ok(Command::OpenFlow { peer, service, .. }) = Command::decode(&bytes) else {
        panic!()
    };
    assert_eq!((peer.len(), service), (254, u32::MAX));
}

#[test]
fn close_reasons_round_trip() {
    for v in 0..=255u8 {
        match CloseReason::from_u8(v) {
            Some(r) => {
                assert_eq!(r as u8, v);
                let c = Completion::FlowClosed { flow: 7, reason: r };
                assert_eq!(Completion::decode(&c.encode()), Ok(c));
            }
            None => assert!(v == 0 || v > CloseReason::Reset as u8, "{v}"),
        }
    }
    let mut bad = Completion::FlowClosed {
        flow: 7,
        reason: CloseReason::PeerTimeout,
    }
    .encode();
    *bad.last_mut().unwrap() = 9;
    assert_eq!(Completion::decode(&bad), Err(DecodeError::BadReason(9)));
}

#[test]
fn a_value_after_an_error_status_is_refused() {
    // Found by the fuzz target: the value was ignored, so one record had many encodings.
    let mut bytes = Completion::FlowOpened {
        cookie: 1,
        result: Err(OpErrorCode::NoBuffers),
    }
    .encode();
    *bytes.last_mut().unwrap() = 88;
    assert_eq!(
        Completion::decode(&bytes),
        Err(DecodeError::ValueOnError {
            kind: kind::FLOW_OPENED
        })
    );
    let mut bytes = Completion::ReadDone {
        cookie: 1,
        result: Err(OpErrorCode::TooLarge),
    }
    .encode();
    bytes[12] = 1;
    assert_eq!(
        Completion::decode(&bytes),
        Err(DecodeError::ValueOnError {
            kind: kind::READ_DONE
        })
    );
}
