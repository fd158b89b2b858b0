//! `pony region serve`: the bytes of a file (or stdin) as a region peers may read with
//! `pony read`. The region is copied once into shared memory at start (a later change of
//! the file is not seen), registered with the engine, and its id, key and length printed
//! on one line of stdout; the tool then listens on `--service`, because a peer's one-sided
//! reads ride a flow, and the engine checks them against the regions of the app that
//! accepted that flow. It serves until interrupted, then unregisters the region.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};
use pony_express::app::{Completion, ServiceId};
use snap_ipc::SharedMem;

use crate::host::Engine;
use crate::interrupt::{self, SLICE};
use crate::HostOpts;

/// Bytes copied per step while loading the region.
const STEP: usize = 1 << 20;

/// `pony region serve`.
pub fn serve(host: &HostOpts, file: Option<&Path>, service: ServiceId) -> anyhow::Result<()> {
    let engine = Engine::find(host)?;
    let (mem, what) = match file {
        Some(path) => {
            let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            (
                load(f).with_context(|| format!("reading {}", path.display()))?,
                path.display().to_string(),
            )
        }
        None => (
            load(std::io::stdin().lock()).context("reading stdin")?,
            "stdin".into(),
        ),
    };
    let mut client = engine.attach()?;
    client
        .listen(service)
        .with_context(|| format!("listening on service {service}"))?;
    let region = client.register_region(&mem).context("registering the region")?;
    println!("region {} key {} len {}", region.region, region.key, region.len);
    eprintln!(
        "pony region serve: {what} as region {} on service {service} of engine {}; Ctrl-C ends",
        region.region, engine.name
    );
    while !interrupt::interrupted() {
        // Nothing to do but keep the session: the engine serves the reads. Completions
        // (flows accepted and closed) are taken so that none accumulate.
        if let Some(Completion::FlowAccepted { .. }) = client.wait_completion(SLICE)? {
            eprintln!("pony region serve: a reader connected");
        }
    }
    client
        .unregister_region(region.region)
        .context("unregistering the region")?;
    eprintln!("pony region serve: stopped");
    Ok(())
}

/// Copies everything `src` holds into a new shared-memory region of exactly that size.
fn load(mut src: impl Read) -> anyhow::Result<SharedMem> {
    // The length is not known ahead for a pipe, so read it all first.
    let mut bytes = Vec::new();
    src.read_to_end(&mut bytes)?;
    if bytes.is_empty() {
        bail!("it is empty (a region holds at least one byte)");
    }
    let mem = SharedMem::create("pony-region", bytes.len()).context("creating shared memory")?;
    for (i, step) in bytes.chunks(STEP).enumerate() {
        interrupt::check()?;
        mem.write_at(i * STEP, step)?;
    }
    Ok(mem)
}
