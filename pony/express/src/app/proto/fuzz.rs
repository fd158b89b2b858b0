//! The app command protocol fuzz target's body (`pony/express/fuzz`, target
//! `app_command`), also run by the stable tests on a checked-in corpus and generated inputs
//! (`tests/fuzz_corpus.rs`): arbitrary bytes decoded as the engine decodes a command slot
//! from a hostile app's ring (and as an app decodes a completion).
//!
//! Whatever the bytes: no panic, a [`DecodeError`] for what does not decode, and for what
//! does, the record is canonical: it encodes back to the same bytes (one encoding per
//! record) and decodes to the same value.

use super::{Command, Completion, MAX_RECORD_LEN};

/// What the input decoded as.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppCommandFuzzOutcome {
    /// It decoded as a command (and round-tripped).
    pub command: bool,
    /// It decoded as a completion (and round-tripped).
    pub completion: bool,
}

/// Decodes `data` as a command and as a completion; checks the round trip of each.
pub fn fuzz_decode(data: &[u8]) -> AppCommandFuzzOutcome {
    let mut out = AppCommandFuzzOutcome::default();
    if let Ok(cmd) = Command::decode(data) {
        let bytes = cmd.encode();
        assert_eq!(bytes, data, "command {cmd:?} re-encodes differently");
        assert!(bytes.len() <= MAX_RECORD_LEN);
        assert_eq!(Command::decode(&bytes), Ok(cmd.clone()), "{cmd:?}");
        out.command = true;
    }
    if let Ok(c) = Completion::decode(data) {
        let bytes = c.encode();
        assert_eq!(bytes, data, "completion {c:?} re-encodes differently");
        assert_eq!(Completion::decode(&bytes), Ok(c.clone()), "{c:?}");
        out.completion = true;
    }
    out
}
