//! A one-line progress meter on stderr for long transfers (`cat`, `read`): bytes so far,
//! the share of the total when it is known, and the rate, redrawn in place at most four
//! times a second, and only when stderr is a terminal (a script's stderr gets nothing).
//!
//! Hand-written rather than `indicatif`: one line with `\r` is all it needs, and the crate
//! would bring four more into an app that otherwise links only the Pony library.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the line is redrawn.
const EVERY: Duration = Duration::from_millis(250);
/// Transfers shorter than this show nothing.
const AFTER: Duration = Duration::from_millis(500);

/// The meter of one transfer.
#[derive(Debug)]
pub struct Progress {
    verb: &'static str,
    total: Option<u64>,
    done: u64,
    start: Instant,
    drawn: Option<Instant>,
    enabled: bool,
}

impl Progress {
    /// A meter for `total` bytes (if known), shown only if stderr is a terminal.
    pub fn new(verb: &'static str, total: Option<u64>) -> Self {
        Self {
            verb,
            total,
            done: 0,
            start: Instant::now(),
            drawn: None,
            enabled: std::io::stderr().is_terminal(),
        }
    }

    /// `n` more bytes went through.
    pub fn add(&mut self, n: u64) {
        self.done += n;
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let due = match self.drawn {
            None => now.duration_since(self.start) >= AFTER,
            Some(at) => now.duration_since(at) >= EVERY,
        };
        if due {
            self.drawn = Some(now);
            let line = line(self.verb, self.done, self.total, now.duration_since(self.start));
            let _ = write!(std::io::stderr(), "\r{line}\x1b[K");
        }
    }

    /// Ends the line, if one was drawn.
    pub fn finish(&mut self) {
        if self.drawn.take().is_some() {
            let line = line(self.verb, self.done, self.total, self.start.elapsed());
            let _ = writeln!(std::io::stderr(), "\r{line}\x1b[K");
        }
    }
}

fn line(verb: &str, done: u64, total: Option<u64>, elapsed: Duration) -> String {
    const MIB: f64 = (1 << 20) as f64;
    let rate = done as f64 / MIB / elapsed.as_secs_f64().max(1e-9);
    let done_mib = done as f64 / MIB;
    match total.filter(|&t| t > 0) {
        Some(t) => format!(
            "{verb} {done_mib:.1} / {:.1} MiB ({:.0} %), {rate:.1} MiB/s",
            t as f64 / MIB,
            done as f64 * 100.0 / t as f64
        ),
        None => format!("{verb} {done_mib:.1} MiB, {rate:.1} MiB/s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_bytes_share_and_rate() {
        let l = line("sent", 3 << 20, Some(4 << 20), Duration::from_secs(2));
        assert_eq!(l, "sent 3.0 / 4.0 MiB (75 %), 1.5 MiB/s");
        let l = line("received", 1 << 20, None, Duration::from_secs(1));
        assert_eq!(l, "received 1.0 MiB, 1.0 MiB/s");
    }
}
