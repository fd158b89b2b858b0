//! The Pony engine between two host processes ([`snap_runtime::Movable`]): the exports of
//! [`super::upgrade`], and its objects handed over as descriptors in the order of the
//! state's fd table ([`FdUse`]), one group per entry: the NIC's descriptors (a UDP
//! socket; an AF_XDP socket with its UMEM, program and state), each session's
//! channel (its ring memfds and doorbell descriptors) and pool memfd, each region's memfd,
//! each staged memfd. [`Handover::from_fds`] rebuilds the objects on the other side.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use pony_express::pool::{Owner, Pool};
use snap_ipc::channel::ChannelEngineEnd;
use snap_ipc::SharedMem;
use snap_runtime::Movable;

use super::upgrade::{FdUse, Handover, StateError};
use super::PonyEngine;

impl Movable for PonyEngine {
    fn export_full(&mut self) -> Result<Vec<u8>, String> {
        PonyEngine::export_full(self).map_err(|e| e.to_string())
    }

    fn export_delta(&mut self) -> Result<Vec<u8>, String> {
        PonyEngine::export_delta(self).map_err(|e| e.to_string())
    }

    fn freeze(&mut self) -> Result<Vec<u8>, String> {
        PonyEngine::freeze(self).map_err(|e| e.to_string())
    }

    fn thaw(&mut self) {
        PonyEngine::thaw(self)
    }

    fn hand_over(&mut self) -> Result<Vec<Vec<OwnedFd>>, String> {
        if !self.is_frozen() {
            return Err("hand_over before freeze".into());
        }
        let table = self.fd_table();
        // Everything that can fail comes before anything is given up.
        let nic = self
            .link
            .nic()
            .dup_for_handover()
            .ok_or("this engine's NIC does not move")?
            .map_err(|e| format!("the NIC's descriptors: {e}"))?;
        let mut nic = Some(nic);
        let mut h = self.take_objects();
        let mut groups = Vec::with_capacity(table.len());
        let mut missing = Vec::new();
        for u in &table {
            let group = match *u {
                FdUse::Nic => nic
                    .take()
                    .ok_or_else(|| "a second NIC in the fd table".to_owned()),
                FdUse::SessionChannel(s) => match h.sessions.get(&s) {
                    Some((chan, _)) => chan.dup_fds().map_err(|e| e.to_string()),
                    None => Err(format!("{u:?}")),
                },
                FdUse::SessionPool(s) => match h.sessions.get(&s) {
                    Some((_, pool)) => dup(pool.shared_mem()),
                    None => Err(format!("{u:?}")),
                },
                FdUse::Region(r) => match h.regions.get(&r) {
                    Some(mem) => dup(&**mem),
                    None => Err(format!("{u:?}")),
                },
                FdUse::Staged(s, c) => match h.staged.iter().position(|(k, _)| *k == (s, c)) {
                    Some(i) => Ok(vec![h.staged.swap_remove(i).1]),
                    None => Err(format!("{u:?}")),
                },
            };
            match group {
                Ok(g) => groups.push(g),
                Err(e) => missing.push(e),
            }
        }
        if !missing.is_empty() {
            // Given up already: the objects go with the process (not released, see
            // `upgrade`'s module documentation), and the upgrade fails for this engine.
            std::mem::forget(h);
            return Err(format!("objects missing at hand-over: {}", missing.join(", ")));
        }
        // The channels and pools are now the new host's: forgetting our handles keeps the
        // pools' references as they are (the mappings go with the process).
        std::mem::forget(h);
        Ok(groups)
    }
}

fn dup(fd: &impl std::os::fd::AsFd) -> Result<Vec<OwnedFd>, String> {
    Ok(vec![fd
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| e.to_string())?])
}

impl Handover {
    /// The objects of a hand-over between processes: `table` is the state's fd table
    /// without its first entry (the NIC, which the caller rebuilds), `groups` the
    /// descriptors received, one group per entry. Every object is validated (ring headers,
    /// sealed memfds, doorbell pages, pool layout).
    pub fn from_fds(table: &[FdUse], groups: Vec<Vec<OwnedFd>>) -> Result<Self, StateError> {
        if table.len() != groups.len() {
            return Err(StateError::MissingHandle(format!(
                "{} descriptor groups for {} objects",
                groups.len(),
                table.len()
            )));
        }
        let mut channels = HashMap::new();
        let mut pools = HashMap::new();
        let mut regions = HashMap::new();
        let mut staged = Vec::new();
        let one = |mut g: Vec<OwnedFd>, u: &FdUse| match g.len() {
            1 => Ok(g.remove(0)),
            n => Err(StateError::Invalid(format!("{u:?}: {n} descriptors, expected 1"))),
        };
        for (u, g) in table.iter().zip(groups) {
            let bad = |e: String| StateError::Invalid(format!("{u:?}: {e}"));
            match *u {
                FdUse::Nic => return Err(StateError::Invalid("a second NIC in the fd table".into())),
                FdUse::SessionChannel(s) => {
                    let chan = ChannelEngineEnd::from_fds(g).map_err(|e| bad(e.to_string()))?;
                    channels.insert(s, chan);
                }
                FdUse::SessionPool(s) => {
                    let mem = SharedMem::from_fd(one(g, u)?).map_err(|e| bad(e.to_string()))?;
                    let pool = Pool::attach(mem).map_err(|e| bad(e.to_string()))?;
                    pools.insert(s, Arc::new(pool.with_owner(Owner::Engine)));
                }
                FdUse::Region(r) => {
                    let mem = SharedMem::from_fd(one(g, u)?).map_err(|e| bad(e.to_string()))?;
                    regions.insert(r, Arc::new(mem));
                }
                FdUse::Staged(s, c) => staged.push(((s, c), one(g, u)?)),
            }
        }
        let mut sessions = BTreeMap::new();
        for (s, chan) in channels {
            let pool = pools
                .remove(&s)
                .ok_or_else(|| StateError::MissingHandle(format!("session {s}'s pool")))?;
            sessions.insert(s, (chan, pool));
        }
        if let Some(s) = pools.keys().next() {
            return Err(StateError::MissingHandle(format!("session {s}'s channel")));
        }
        Ok(Self {
            sessions,
            regions,
            staged,
        })
    }
}
