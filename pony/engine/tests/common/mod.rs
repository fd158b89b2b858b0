//! Helpers shared by the integration tests that run Pony engines in their own engine
//! runtimes (as a Snap host does) and attach apps through the real attach path minus the
//! control socket. Each test crate uses some of them, hence `dead_code`.

#![allow(dead_code)]

use pony_engine::nic::Nic;
use std::time::Duration;

use pony_engine::{PonyConfig, PonyEngine, PonyStats};
use pony_express::app::{AppSession, Completion};
use snap_runtime::{
    AttachReply, AttachRequest, CompactingParams, EngineHandle, GroupSpec, Mode, Runtime, RuntimeOptions,
};

/// One Pony engine in a spreading runtime of its own.
pub struct Host {
    /// The runtime (shut down when dropped).
    pub rt: Runtime,
    /// The engine `name`'s handle.
    pub h: EngineHandle,
}

/// Starts engine `name` on `nic` with `cfg`, in a spreading group, without MicroQuanta.
pub fn host_with(name: &str, nic: impl Nic + 'static, cfg: PonyConfig) -> Host {
    let engine = PonyEngine::new(name, Box::new(nic), cfg);
    let spec = GroupSpec {
        name: name.into(),
        mode: Mode::Spreading,
        cores: vec![],
        engines: vec![Box::new(engine)],
        compacting: CompactingParams::default(),
        idle_poll: snap_runtime::DEFAULT_IDLE_POLL,
        microquanta_group: None,
    };
    let options = RuntimeOptions {
        microquanta: false,
        ..Default::default()
    };
    let rt = Runtime::start(vec![spec], options).unwrap();
    let h = rt.engine(name).unwrap();
    Host { rt, h }
}

/// Attaches a polling app to the engine behind `h`: its session id, its app end and the
/// engine's reply details.
pub fn attach(h: &EngineHandle) -> (u64, AppSession, serde_json::Value) {
    let reply: AttachReply = h
        .control_dyn(|e| {
            let req = AttachRequest {
                notify: false,
                fds: vec![],
                pid: std::process::id() as i32,
                uid: 0,
            };
            e.app_facing().expect("app-facing").attach_app(req)
        })
        .unwrap()
        .unwrap();
    (
        reply.id,
        AppSession::from_fds(reply.fds, None).unwrap(),
        reply.details,
    )
}

/// The engine's counters, read on its own thread.
pub fn stats(h: &EngineHandle) -> PonyStats {
    h.control::<PonyEngine, _>(|e| e.stats()).unwrap()
}

/// The app's next completion, failing the test after `deadline` without one.
pub fn wait_for(app: &mut AppSession, deadline: Duration, what: &str) -> Completion {
    match app.wait_completion(deadline).unwrap() {
        Some(c) => c,
        None => panic!("no completion while waiting for {what}"),
    }
}
