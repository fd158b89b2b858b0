//! The app command protocol fuzz target's body (`pony/express/fuzz`, target
//! `app_command`), also run by the stable tests on a checked-in corpus and generated inputs
//! (`tests/fuzz_corpus.rs`): arbitrary bytes decoded as the engine decodes a command slot
//! from a hostile app's ring (and as an app decodes a completion).
//!
//! Whatever the bytes: no panic, a [`DecodeError`] for what does not decode, and for what
//! does, `decode(encode(x)) == x`.

use super::{Command, Completion};

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
        assert_eq!(Command::decode(&cmd.encode()), Ok(cmd.clone()), "{cmd:?}");
        out.command = true;
    }
    if let Ok(c) = Completion::decode(data) {
        assert_eq!(Completion::decode(&c.encode()), Ok(c.clone()), "{c:?}");
        out.completion = true;
    }
    out
}
