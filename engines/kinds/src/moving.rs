//! The state of the built-in kinds (echo, UDP echo) as it moves to a new host process
//! ([`snap_runtime::Movable`]): a small JSON object whose `format` is read first, so that a
//! host that does not know the format refuses before anything moves. These engines' state
//! is their descriptors (channels, socket) and their counters, so every export is whole:
//! there are no deltas worth computing.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The format this build writes and reads.
pub const STATE_FORMAT: u16 = 1;

/// The format a state declares, read before anything else.
pub fn state_format(bytes: &[u8]) -> Result<u16, String> {
    #[derive(Deserialize)]
    struct Head {
        format: u16,
    }
    serde_json::from_slice::<Head>(bytes)
        .map(|h| h.format)
        .map_err(|e| format!("not an engine state: {e}"))
}

/// `state` written with its format.
pub(crate) fn encode<T: Serialize>(state: &T) -> Result<Vec<u8>, String> {
    #[derive(Serialize)]
    struct Envelope<'a, T> {
        format: u16,
        #[serde(flatten)]
        state: &'a T,
    }
    serde_json::to_vec(&Envelope {
        format: STATE_FORMAT,
        state,
    })
    .map_err(|e| e.to_string())
}

/// A state written by [`encode`]; an unknown format is refused before the body is read.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let format = state_format(bytes)?;
    if format != STATE_FORMAT {
        return Err(format!(
            "state format {format} is not supported (this build reads format {STATE_FORMAT})"
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("invalid engine state: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct S {
        a: u32,
    }

    #[test]
    fn round_trip_and_unknown_format() {
        let bytes = encode(&S { a: 7 }).unwrap();
        assert_eq!(state_format(&bytes).unwrap(), STATE_FORMAT);
        assert_eq!(decode::<S>(&bytes).unwrap(), S { a: 7 });
        let future = br#"{"format":2,"a":7}"#;
        assert!(decode::<S>(future).unwrap_err().contains("format 2"));
        assert!(decode::<S>(b"\xff").is_err());
    }
}
