//! `pony read`: a one-sided read of a peer's region to stdout. The peer's engine serves it
//! from the region without its app taking part; the flow it rides goes to the service the
//! region's owner listens on (`pony region serve --service`). Long reads are cut into reads
//! of at most [`STEP`] bytes, each landing in this session's pool, so any length works
//! within the engine's one-sided limit per read.

use std::io::Write;

use anyhow::Context;

use crate::host::Engine;
use crate::interrupt;
use crate::progress::Progress;
use crate::{fail, HostOpts, PeerOpts};
use pony_express::client::Region;

/// The most bytes asked for in one read: a fraction of a default pool (16 MiB), far below
/// the engine's one-sided limit.
const STEP: u64 = 1 << 20;

/// `pony read`.
pub fn run(
    host: &HostOpts,
    peer: &PeerOpts,
    region: u32,
    key: u64,
    offset: u64,
    len: u64,
) -> anyhow::Result<()> {
    let engine = Engine::find(host)?;
    let mut client = engine.attach()?;
    let flow = client
        .open_flow(&peer.peer, peer.service)
        .map_err(|e| fail::open_flow(e, &peer.peer, peer.service))?;
    // The read only needs the id and the key; the length is the peer's to check.
    let target = Region { region, key, len: 0 };
    let mut out = std::io::stdout().lock();
    let mut progress = Progress::new("read", Some(len));
    let mut done = 0;
    while done < len {
        interrupt::check()?;
        let n = (len - done).min(STEP) as u32;
        let at = offset.checked_add(done).context("--offset + --len overflows")?;
        let bytes = client
            .read(flow, target, at, n)
            .map_err(|e| fail::read(e, region))?;
        if bytes.is_empty() {
            anyhow::bail!("the peer returned no bytes at offset {at}");
        }
        out.write_all(&bytes).context("writing stdout")?;
        done += bytes.len() as u64;
        progress.add(bytes.len() as u64);
    }
    out.flush().context("writing stdout")?;
    progress.finish();
    let _ = client.close_flow(flow);
    Ok(())
}
