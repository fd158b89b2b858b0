//! The soak's two apps, threads of the test attached to their hosts through the control
//! sockets with `pony_express::client`: the sender on host A opens one flow per stream to
//! the receiver's service on host B and sends the round's messages; the receiver on host B
//! listens and checks each message as it arrives (`traffic::Checker`).

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pony_express::app::{Completion, Completions};
use pony_express::client::{ClientError, PonyClient};

use crate::traffic::{since, Checker, Plan};

/// The Pony engine's name in both hosts.
pub const ENGINE: &str = "pony0";
/// Longest the apps wait without progress before they call the run failed.
pub const STALL: Duration = Duration::from_secs(60);

/// What the sender saw.
#[derive(Debug, Default)]
pub struct Sent {
    /// Messages whose `Sent` completion (the peer has them) arrived.
    pub messages: u64,
}

/// Takes the completions waiting, counting `Sent`; any error or closed flow fails the run.
fn drain(client: &mut PonyClient, sent: &mut Sent) -> Result<(), String> {
    while let Some(c) = client.poll_completion().map_err(|e| format!("sender: {e}"))? {
        account(c, sent)?;
    }
    Ok(())
}

fn account(c: Completion, sent: &mut Sent) -> Result<(), String> {
    match c {
        Completion::Sent { .. } => {
            sent.messages += 1;
            Ok(())
        }
        other => Err(format!("sender: unexpected completion {other:?}")),
    }
}

fn err(what: &'static str) -> impl Fn(ClientError) -> String {
    move |e| format!("sender: {what}: {e}")
}

/// Sends the round's messages from host A (`socket`) to `service` at `peer`, one flow per
/// stream, and waits until the peer has them all.
pub fn send(socket: &Path, peer: &str, service: u32, plan: Plan, epoch: Instant) -> Result<Sent, String> {
    let mut client = PonyClient::connect(socket, ENGINE, Completions::Block).map_err(err("attach"))?;
    let flows = (0..plan.streams)
        .map(|_| client.open_flow(peer, service))
        .collect::<Result<Vec<_>, _>>()
        .map_err(err("open_flow"))?;
    let mut sent = Sent::default();
    for i in 0..plan.messages {
        let (stream, seq) = plan.at(i);
        let m = plan.message(stream, seq, since(epoch));
        client
            .send(flows[stream as usize], stream, &m)
            .map_err(err("send"))?;
        drain(&mut client, &mut sent)?;
    }
    let mut last = Instant::now();
    while sent.messages < u64::from(plan.messages) {
        match client
            .wait_completion(Duration::from_millis(100))
            .map_err(err("wait"))?
        {
            Some(c) => {
                account(c, &mut sent)?;
                last = Instant::now();
            }
            None if last.elapsed() > STALL => {
                return Err(format!(
                    "sender: {} of {} messages confirmed, none for {STALL:?}",
                    sent.messages, plan.messages
                ))
            }
            None => {}
        }
    }
    Ok(sent)
}

/// Listens on `service` of host B (`socket`), says so on `ready`, and checks messages
/// until every stream is complete; the first wrong message fails the run. The client comes
/// back too: dropping it closes the flows, and the sender may still be waiting for the
/// acknowledgements of the last messages, so it lives until the sender is done.
pub fn receive(
    socket: &Path,
    service: u32,
    plan: Plan,
    epoch: Instant,
    ready: mpsc::Sender<()>,
) -> Result<(Checker, PonyClient), String> {
    let mut client = PonyClient::connect(socket, ENGINE, Completions::Block)
        .map_err(|e| format!("receiver: attach: {e}"))?;
    client
        .listen(service)
        .map_err(|e| format!("receiver: listen: {e}"))?;
    let _ = ready.send(());
    let mut checker = Checker::new(&plan);
    while !checker.complete(&plan) {
        match client.recv(STALL) {
            Ok(m) => checker.check(&plan, m.stream, &m.data, since(epoch))?,
            Err(ClientError::Timeout(_)) => {
                return Err(format!(
                    "receiver: nothing for {STALL:?}; streams short: {:?}",
                    checker.missing(&plan)
                ))
            }
            Err(e) => return Err(format!("receiver: {e}")),
        }
    }
    Ok((checker, client))
}
