//! The soak's messages: which stream and size each one has, its bytes, and the receiver's
//! check. Everything derives from (round, stream, sequence number), so the receiver
//! regenerates what it should get instead of trusting what it got.
//!
//! ```text
//!   0        4        8          12         16               24
//!   │ stream │ seq    │ body len │ crc32c   │ sent (ns since  │ body (1 B – 16 KiB) …
//!   │ u32 le │ u32 le │ u32 le   │ of body  │ the run's epoch)│
//! ```

use std::time::Instant;

/// Bytes before the body.
pub const HEADER: usize = 24;
/// Largest body.
pub const MAX_BODY: usize = 16 * 1024;

/// One round of traffic: `messages` spread round-robin over `streams`.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub streams: u32,
    pub messages: u32,
    /// Makes each round's sizes and bytes different.
    pub round: u32,
}

impl Plan {
    /// Stream and sequence number of message `i` of the round.
    pub fn at(&self, i: u32) -> (u32, u32) {
        (i % self.streams, i / self.streams)
    }

    /// How many messages stream `s` carries.
    pub fn per_stream(&self, s: u32) -> u32 {
        self.messages / self.streams + u32::from(s < self.messages % self.streams)
    }

    fn rng(&self, stream: u32, seq: u32) -> fastrand::Rng {
        let key = (u64::from(self.round) << 48) ^ (u64::from(stream) << 32) ^ u64::from(seq);
        fastrand::Rng::with_seed(key.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// Body length of a message: log-uniform over 1 B – 16 KiB, so small messages are as
    /// common as large ones (each power of two equally likely).
    pub fn body_len(&self, stream: u32, seq: u32) -> usize {
        let mut rng = self.rng(stream, seq);
        let bits = rng.u32(0..=14);
        let lo = 1usize << bits;
        rng.usize(lo..=(2 * lo).min(MAX_BODY))
    }

    /// The body of a message.
    pub fn body(&self, stream: u32, seq: u32) -> Vec<u8> {
        let len = self.body_len(stream, seq);
        let mut rng = self.rng(stream, seq);
        rng.u64(..); // a different draw than the length's
        let mut body = vec![0u8; len];
        rng.fill(&mut body);
        body
    }

    /// The whole message, stamped `sent_ns`.
    pub fn message(&self, stream: u32, seq: u32, sent_ns: u64) -> Vec<u8> {
        let body = self.body(stream, seq);
        let mut m = Vec::with_capacity(HEADER + body.len());
        m.extend_from_slice(&stream.to_le_bytes());
        m.extend_from_slice(&seq.to_le_bytes());
        m.extend_from_slice(&(body.len() as u32).to_le_bytes());
        m.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        m.extend_from_slice(&sent_ns.to_le_bytes());
        m.extend_from_slice(&body);
        m
    }
}

/// Nanoseconds since `epoch` (the sender and receiver are threads of one process).
pub fn since(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

/// What the receiver makes of one message.
#[derive(Debug, Default)]
pub struct Checker {
    next: Vec<u32>,
    /// Messages accepted.
    pub messages: u64,
    /// Body bytes accepted.
    pub bytes: u64,
    /// Delivery latency of each message (ns).
    pub latencies: Vec<u64>,
}

impl Checker {
    pub fn new(plan: &Plan) -> Self {
        Self {
            next: vec![0; plan.streams as usize],
            ..Self::default()
        }
    }

    /// Whether every stream has all its messages.
    pub fn complete(&self, plan: &Plan) -> bool {
        (0..plan.streams).all(|s| self.next[s as usize] == plan.per_stream(s))
    }

    /// Streams still short, as `stream: got/expected`.
    pub fn missing(&self, plan: &Plan) -> Vec<String> {
        (0..plan.streams)
            .filter(|&s| self.next[s as usize] != plan.per_stream(s))
            .map(|s| format!("{s}: {}/{}", self.next[s as usize], plan.per_stream(s)))
            .collect()
    }

    /// Checks one message that arrived on Pony stream `pony_stream`: exactly the next of its
    /// stream (so none lost, duplicated or reordered), the length, checksum and bytes the
    /// plan gives.
    pub fn check(&mut self, plan: &Plan, pony_stream: u32, m: &[u8], now_ns: u64) -> Result<(), String> {
        if m.len() < HEADER {
            return Err(format!("a {}-byte message is shorter than the header", m.len()));
        }
        let word = |at: usize| u32::from_le_bytes(m[at..at + 4].try_into().unwrap());
        let (stream, seq, len, crc) = (word(0), word(4), word(8) as usize, word(12));
        let sent = u64::from_le_bytes(m[16..24].try_into().unwrap());
        let body = &m[HEADER..];
        if stream >= plan.streams || stream != pony_stream {
            return Err(format!("stream {stream} arrived on Pony stream {pony_stream}"));
        }
        let want = self.next[stream as usize];
        if seq != want {
            return Err(format!("stream {stream}: got seq {seq}, expected {want}"));
        }
        if len != body.len() || len != plan.body_len(stream, seq) {
            return Err(format!(
                "stream {stream} seq {seq}: body of {} bytes, header says {len}, plan {}",
                body.len(),
                plan.body_len(stream, seq)
            ));
        }
        if crc32c::crc32c(body) != crc {
            return Err(format!("stream {stream} seq {seq}: checksum mismatch"));
        }
        if body != plan.body(stream, seq) {
            return Err(format!("stream {stream} seq {seq}: bytes differ from the plan's"));
        }
        self.next[stream as usize] += 1;
        self.messages += 1;
        self.bytes += body.len() as u64;
        self.latencies.push(now_ns.saturating_sub(sent));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: Plan = Plan {
        streams: 4,
        messages: 10,
        round: 0,
    };

    #[test]
    fn sizes_span_one_byte_to_16_kib() {
        let plan = Plan {
            streams: 64,
            messages: 100_000,
            round: 0,
        };
        let lens: Vec<usize> = (0..plan.messages)
            .map(|i| plan.at(i))
            .map(|(s, q)| plan.body_len(s, q))
            .collect();
        assert_eq!(*lens.iter().min().unwrap(), 1);
        assert_eq!(*lens.iter().max().unwrap(), MAX_BODY);
        assert_eq!((0..64).map(|s| plan.per_stream(s)).sum::<u32>(), 100_000);
    }

    #[test]
    fn the_checker_takes_each_message_once_in_order_and_exact() {
        let mut c = Checker::new(&PLAN);
        let m = |s, q| PLAN.message(s, q, 0);
        c.check(&PLAN, 1, &m(1, 0), 5).unwrap();
        assert!(c.check(&PLAN, 1, &m(1, 0), 5).unwrap_err().contains("expected 1"));
        assert!(c.check(&PLAN, 2, &m(2, 1), 5).unwrap_err().contains("expected 0"));
        assert!(c
            .check(&PLAN, 3, &m(2, 0), 5)
            .unwrap_err()
            .contains("Pony stream 3"));
        let mut bad = m(2, 0);
        *bad.last_mut().unwrap() ^= 1;
        assert!(c.check(&PLAN, 2, &bad, 5).unwrap_err().contains("checksum"));
        let mut short = m(2, 0);
        short.pop();
        assert!(c.check(&PLAN, 2, &short, 5).is_err());
        for i in 0..PLAN.messages {
            let (s, q) = PLAN.at(i);
            if (s, q) != (1, 0) {
                c.check(&PLAN, s, &m(s, q), 5).unwrap();
            }
        }
        assert!(c.complete(&PLAN), "{:?}", c.missing(&PLAN));
        assert_eq!(c.messages, 10);
    }
}
