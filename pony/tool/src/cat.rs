//! `pony cat`: stdin to one stream to a peer's service, or (`--listen`) one incoming
//! stream to stdout, like `nc`. The stream is one flow of the socket layer; stdin is cut
//! into messages of at most [`CHUNK`] bytes on stream 0 (in order, so the receiver
//! concatenates them), so a stream has no length limit. The sender exits once the peer's
//! engine acknowledged every byte and the flow is closed (`PonyStream::close`); the
//! receiver exits at the end of the stream, which is the sender's close.
//!
//! The end mark: a flow whose sender crashed or was interrupted is closed by its host, and
//! the wire's Close does not say why, so the receiver cannot tell it from a finished
//! stream. The sender therefore ends with one message on stream [`END_STREAM`] holding the
//! number of bytes it sent (u64, little-endian); a stream that ends without it, or with a
//! different count, is an error at the receiver rather than a silently short copy.

use std::io::{Read, Write};
use std::sync::mpsc;

use anyhow::{anyhow, bail, Context};
use pony_express::app::ServiceId;
use pony_express::socket::{PonyListener, PonyStream, SocketError};

use crate::host::Engine;
use crate::interrupt::{self, SLICE};
use crate::progress::Progress;
use crate::{fail, HostOpts};

/// Bytes per message: large enough that completions cost little per byte, small enough
/// that several are in flight within a default pool (16 MiB).
const CHUNK: usize = 1 << 20;

/// The stream of the end mark (data goes on stream 0).
const END_STREAM: u32 = 1;

/// Chunks read ahead of the flow.
const READ_AHEAD: usize = 4;

/// `pony cat --peer ADDR --service N`.
pub fn send(host: &HostOpts, peer: &str, service: ServiceId) -> anyhow::Result<()> {
    let engine = Engine::find(host)?;
    let total = stdin_len();
    let chunks = read_stdin_chunks();
    let stream = PonyStream::connect(&engine.socket, &engine.name, peer, service)
        .map_err(|e| fail::connect(e, peer, service))?;
    let chunk = CHUNK.min(stream.max_message_len());
    // Sends and the final flush wait in slices, to notice Ctrl-C.
    stream.set_write_timeout(Some(SLICE));
    let mut progress = Progress::new("sent", total);
    let mut sent = 0u64;
    loop {
        interrupt::check()?;
        let data = match chunks.recv_timeout(SLICE) {
            Ok(Ok(data)) => data,
            Ok(Err(e)) => return Err(anyhow!(e).context("reading stdin")),
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        for piece in data.chunks(chunk) {
            retry_timeouts(|| stream.send(piece)).context("sending")?;
            sent += piece.len() as u64;
            progress.add(piece.len() as u64);
        }
    }
    retry_timeouts(|| stream.send_on(END_STREAM, &sent.to_le_bytes())).context("sending the end mark")?;
    retry_timeouts(|| stream.flush()).context("waiting for the peer to acknowledge")?;
    stream.set_write_timeout(None);
    stream.close().context("closing the stream")?;
    progress.finish();
    Ok(())
}

/// Runs `op` until it does not time out, returning `Interrupted` once Ctrl-C is pressed.
fn retry_timeouts(mut op: impl FnMut() -> Result<(), SocketError>) -> anyhow::Result<()> {
    loop {
        match op() {
            Err(SocketError::TimedOut) => interrupt::check()?,
            other => return Ok(other?),
        }
    }
}

/// The size of stdin if it is a regular file (for the progress meter's share).
fn stdin_len() -> Option<u64> {
    let meta = std::fs::metadata("/dev/stdin").ok()?;
    meta.is_file().then_some(meta.len())
}

/// Reads stdin on a thread of its own, so that the main thread can notice Ctrl-C while a
/// read blocks; the channel ends at end of file (or after an error).
fn read_stdin_chunks() -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::sync_channel(READ_AHEAD);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut buf = vec![0; CHUNK];
            let mut filled = 0;
            // Fill whole chunks where stdin allows: fewer, larger messages.
            while filled < CHUNK {
                match stdin.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
            if filled == 0 {
                return;
            }
            buf.truncate(filled);
            let last = filled < CHUNK;
            if tx.send(Ok(buf)).is_err() || last {
                return;
            }
        }
    });
    rx
}

/// `pony cat --listen --service N`.
pub fn listen(host: &HostOpts, service: ServiceId) -> anyhow::Result<()> {
    let engine = Engine::find(host)?;
    let listener = PonyListener::bind(&engine.socket, &engine.name, service)
        .map_err(|e| anyhow!(e))
        .with_context(|| format!("listening on service {service}"))?;
    eprintln!(
        "pony cat: listening on service {service} of engine {}",
        engine.name
    );
    let stream = loop {
        interrupt::check()?;
        match listener.accept_timeout(SLICE) {
            Ok(stream) => break stream,
            Err(SocketError::TimedOut) => {}
            Err(e) => return Err(anyhow!(e).context("waiting for a stream")),
        }
    };
    // One stream only: later ones are refused as if nobody listened.
    drop(listener);
    stream.set_read_timeout(Some(SLICE));
    // Each message is written out and flushed as it arrives, so a consumer downstream sees
    // the stream as it comes (messages are large: a flush each costs nothing).
    let mut out = std::io::stdout().lock();
    let mut progress = Progress::new("received", None);
    let mut received = 0u64;
    let mut end = None;
    loop {
        match stream.recv_with_stream() {
            Ok(Some((END_STREAM, mark))) => {
                let mark: [u8; 8] = mark
                    .try_into()
                    .map_err(|_| anyhow!("the sender's end mark is malformed (is it `pony cat`?)"))?;
                end = Some(u64::from_le_bytes(mark));
            }
            Ok(Some((_, data))) => {
                out.write_all(&data)
                    .and_then(|()| out.flush())
                    .context("writing stdout")?;
                received += data.len() as u64;
                progress.add(data.len() as u64);
            }
            Ok(None) => break,
            Err(SocketError::TimedOut) => interrupt::check()?,
            Err(e) => return Err(anyhow!(e).context("receiving the stream")),
        }
    }
    out.flush().context("writing stdout")?;
    progress.finish();
    check_end(end, received)
}

/// Whether the stream ended as the sender meant it to.
fn check_end(end: Option<u64>, received: u64) -> anyhow::Result<()> {
    match end {
        Some(sent) if sent == received => Ok(()),
        Some(sent) => bail!("the sender sent {sent} bytes but {received} arrived"),
        None => bail!(
            "the stream ended without the sender's end mark after {received} bytes: \
             the sender stopped early (interrupted, or it or its host died)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_stream_with_a_matching_end_mark_is_complete() {
        assert!(check_end(Some(5), 5).is_ok());
        assert!(check_end(Some(0), 0).is_ok());
        let e = check_end(Some(6), 5).unwrap_err().to_string();
        assert!(e.contains("sent 6 bytes but 5 arrived"), "{e}");
        let e = check_end(None, 5).unwrap_err().to_string();
        assert!(e.contains("without the sender's end mark after 5 bytes"), "{e}");
    }
}
