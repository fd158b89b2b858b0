//! The configuration fuzz target's body (`host/fuzz`, target `config`), also run by the
//! stable tests on a checked-in corpus and generated inputs (`tests/fuzz_corpus.rs`):
//! arbitrary bytes parsed as a host configuration, for machines of several sizes.
//!
//! The operator is trusted, but a typo must still be a [`ConfigError`] naming the problem,
//! never a panic or an engine built from half-checked options. Whatever the bytes: no
//! panic; a file that is not UTF-8 is not parsed (`Config::load` refuses it first).

use super::{Config, ConfigError};

/// How the input parsed, on a 1-CPU machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFuzzOutcome {
    /// Not UTF-8.
    NotText,
    /// Not TOML, or not the configuration's shape.
    Syntax,
    /// The right shape, refused by validation.
    Invalid,
    /// A valid configuration.
    Valid,
}

/// Parses `data` as a configuration for 1, 2 and 64 CPUs.
pub fn fuzz_parse(data: &[u8]) -> ConfigFuzzOutcome {
    let Ok(text) = std::str::from_utf8(data) else {
        return ConfigFuzzOutcome::NotText;
    };
    let outcome = match Config::parse(text, 1) {
        Ok(_) => ConfigFuzzOutcome::Valid,
        Err(ConfigError::Syntax(_)) => ConfigFuzzOutcome::Syntax,
        Err(ConfigError::Invalid { .. }) => ConfigFuzzOutcome::Invalid,
        Err(e @ ConfigError::Read { .. }) => panic!("parsing read a file: {e}"),
    };
    for cpus in [2, 64] {
        let _ = Config::parse(text, cpus);
    }
    outcome
}
