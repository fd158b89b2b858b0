//! [`FlowEntry`]: one flow and everything the engine keeps about it: the peer, the owning
//! session (none once it detached: the flow is then closing), how the flow came to be, the
//! [`Outbox`] of what waits to be handed to it, the cookies of the Sends it carries, and
//! the [`Target`] serving the peer's one-sided requests on it.
//!
//! `CloseFlow` closes like a socket: Sends posted before it are still delivered (the flow
//! closes once the outbox is drained into it), Sends posted after it are refused.

use std::collections::HashMap;

use super::outbox::{Out, Outbox};
use super::target::{Served, Step, Target};
use crate::nic::PeerAddr;
use crate::regions::Regions;
use crate::session::SessionBuffers;
use pony_express::app::{CloseReason, Completion, Cookie, OpErrorCode};
use pony_proto::flow::{Flow, FlowError, OneSided};

/// How a flow came to be, i.e. which completion announces it.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(super) enum Origin {
    /// Opened by the owner's OpenFlow with this cookie.
    Opened(Cookie),
    /// Accepted for the owner's Listen with this cookie.
    Accepted(Cookie),
}

/// One flow and everything the engine keeps about it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct FlowEntry {
    pub(super) flow: Flow<SessionBuffers>,
    #[serde(with = "super::upgrade::peer_addr")]
    pub(super) peer: PeerAddr,
    /// The peer's id, for accepted flows (to recognise a retransmitted Connect).
    pub(super) peer_key: Option<u32>,
    /// Owning session; `None` once it detached (the flow is closing).
    pub(super) owner: Option<u64>,
    origin: Origin,
    connected: bool,
    outbox: Outbox,
    /// The owner asked to close: the flow closes once the outbox is drained into it, so
    /// Sends posted before the CloseFlow are delivered, as with a socket's close.
    close_when_drained: bool,
    /// Cookies of messages handed to the flow, by (stream, message id).
    sends: HashMap<(u32, u64), Cookie>,
    target: Target,
}

impl FlowEntry {
    /// A flow of session `owner` to or from `peer`.
    pub(super) fn new(flow: Flow<SessionBuffers>, peer: PeerAddr, owner: u64, origin: Origin) -> Box<Self> {
        Box::new(Self {
            flow,
            peer,
            peer_key: None,
            owner: Some(owner),
            origin,
            connected: false,
            outbox: Outbox::default(),
            close_when_drained: false,
            sends: HashMap::new(),
            target: Target::default(),
        })
    }

    /// Whether the owner asked to close (later Sends are refused).
    pub(super) fn is_closing(&self) -> bool {
        self.close_when_drained
    }

    /// The owner's CloseFlow: the flow closes once everything queued before is in it.
    pub(super) fn close_when_drained(&mut self) {
        self.close_when_drained = true;
    }

    /// The queue of what waits to be handed to the flow.
    pub(super) fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// The handshake finished: the owner's announcement of flow `id`, or, without an
    /// owner, nothing (the flow is closed).
    pub(super) fn on_connected(&mut self, id: u32) -> Option<(u64, Completion)> {
        self.connected = true;
        let Some(owner) = self.owner else {
            self.flow.close();
            return None;
        };
        let flow = u64::from(id);
        let c = match self.origin {
            Origin::Opened(cookie) => Completion::FlowOpened {
                cookie,
                result: Ok(flow),
            },
            Origin::Accepted(cookie) => Completion::FlowAccepted { cookie, flow },
        };
        Some((owner, c))
    }

    /// Message `message` on `stream` was acknowledged: the owner's `Sent`.
    pub(super) fn on_sent(&mut self, stream: u32, message: u64) -> Option<(u64, Completion)> {
        let cookie = self.sends.remove(&(stream, message))?;
        Some((self.owner?, Completion::Sent { cookie }))
    }

    /// Flow `id` closed or failed: the owner's completions, every Send still waiting
    /// failing with `code` (the only `Error`s among them), then `FlowClosed` with `reason`
    /// (or `FlowOpened` with why it never opened).
    pub(super) fn on_end(
        &mut self,
        id: u32,
        code: OpErrorCode,
        reason: CloseReason,
    ) -> Option<(u64, Vec<Completion>)> {
        let owner = self.owner?;
        let detail = u64::from(id);
        let mut cookies: Vec<_> = self.sends.drain().map(|(_, c)| c).collect();
        cookies.extend(self.outbox.drain_messages());
        let mut done: Vec<_> = cookies
            .into_iter()
            .map(|cookie| Completion::Error { cookie, code, detail })
            .collect();
        done.push(match (self.connected, self.origin) {
            // Why it never opened (NoListener, …); closed before it connected stays Unreachable.
            (false, Origin::Opened(cookie)) => Completion::FlowOpened {
                cookie,
                result: Err(match code {
                    OpErrorCode::FlowClosed => OpErrorCode::Unreachable,
                    code => code,
                }),
            },
            _ => Completion::FlowClosed { flow: detail, reason },
        });
        Some((owner, done))
    }

    /// The owner detached: the flow closes gracefully, ownerless; the Sends it held are
    /// dropped, responses owed to the peer still go.
    pub(super) fn disown(&mut self) {
        self.owner = None;
        self.sends.clear();
        self.outbox.drop_messages();
        self.flow.close();
    }

    /// Hands queued messages and one-sided packets to the flow until it is full; closes
    /// the flow once all of them are in, if the owner asked to. An item the flow can never
    /// take (closed, too large) goes to `refused` with the code to fail it with.
    pub(super) fn drain_outbox(&mut self, regions: &Regions, mut refused: impl FnMut(Out, OpErrorCode)) {
        while let Some(out) = self.outbox.pop_front() {
            if let Out::Serve(mut serving) = out {
                match serving.step(&mut self.flow, regions) {
                    Step::Done | Step::Closed => continue,
                    Step::Wait => {
                        self.outbox.push_front(Out::Serve(serving));
                        break;
                    }
                }
            }
            let result = match &out {
                Out::Message { stream, data, cookie } => {
                    self.flow.send_message(*stream, data.clone()).map(|m| {
                        self.sends.insert((*stream, m), *cookie);
                    })
                }
                Out::OneSided(op) => self.flow.send_one_sided(op.clone()),
                Out::Serve(_) => continue,
            };
            match result {
                Ok(()) => {}
                Err(FlowError::Busy) => {
                    self.outbox.push_front(out);
                    break;
                }
                Err(err) => {
                    let code = match err {
                        FlowError::TooLarge { .. } => OpErrorCode::TooLarge,
                        _ => OpErrorCode::FlowClosed,
                    };
                    refused(out, code);
                }
            }
        }
        if self.close_when_drained && self.outbox.is_empty() {
            self.flow.close();
        }
    }

    /// Serves the peer's one-sided request `req` (payload `payload`) from `regions`.
    /// `limits` are the MTU and `max_onesided_bytes`.
    pub(super) fn serve(
        &mut self,
        req: OneSided,
        payload: &[u8],
        regions: &Regions,
        limits: (usize, u32),
    ) -> Served {
        self.target.serve(req, payload, regions, limits, &mut self.outbox)
    }
}
