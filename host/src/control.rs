//! The control server: the host side of `snap_ipc::control`'s protocol, with a listener
//! thread and one thread per connection (control traffic is rare, so threads are simpler
//! than an event loop and cost nothing on the data path).
//!
//! Every resource is bounded. At most [`ServerOptions::max_connections`] connections are
//! open at once (so at most that many connection threads, each with a small stack); the
//! listener answers any connection beyond that with an `error` saying so and closes it, and
//! counts it (`refused` in the status). A connection that holds no channel is closed after
//! [`ServerOptions::idle_timeout`] without a request (counted as `timed_out`, told why), so
//! idle connections cannot fill the cap for long; one with an attached channel stays open
//! for the channel's life, since its hang-up is how the app learns the host is gone. A
//! reply the peer does not take within [`ServerOptions::request_timeout`] closes the
//! connection too (its channels are detached): a peer that stops reading cannot pin a
//! thread. A request is one seqpacket message, so there are no partial requests to wait
//! for.
//!
//! Every channel is tied to the connection that attached it. When the connection closes,
//! whether the app exited, crashed or was killed (the kernel closes its sockets in all
//! cases), the connection's thread detaches its channels through the engines' mailboxes,
//! so the rings are unmapped and nothing leaks.
//!
//! Access: `SO_PEERCRED` gives the peer's uid at accept; root, the host's own user and the
//! configured `allowed_uids` are served, anyone else gets an `error` and is disconnected.
//! The socket file itself is world-connectable for that reason. The operator's requests,
//! which change the running engines (`operator`), are served to root and the host's own
//! user only: `allowed_uids` run apps, they do not reconfigure the host.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags};
use rustix::net::{accept_with, bind, listen, sockopt, Shutdown, SocketAddrUnix, SocketFlags};

use snap_ipc::control::protocol::{self, ChannelInfo, ControlStats, HostStatus, Request, Response};
use snap_runtime::{AttachRequest, EngineHandle, Runtime};

use crate::config::Config;

/// Settings of a [`ControlServer`].
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Users served besides root and the host's own user.
    pub allowed_uids: Vec<u32>,
    /// Connections open at once; more are refused with an error.
    pub max_connections: usize,
    /// A connection with no channel attached is closed after this long without a request.
    pub idle_timeout: Duration,
    /// A reply the peer has not taken after this long closes the connection.
    pub request_timeout: Duration,
    /// Each engine's kind by engine name, reported in `status` (the runtime knows engines,
    /// not kinds).
    pub engine_kinds: BTreeMap<String, String>,
    /// The configuration the runtime was started from. The operator's changes are checked
    /// against it and recorded in it; without it they are refused.
    pub config: Option<Config>,
    /// The binary an upgrade starts unless the operator names another: the host's own,
    /// resolved when it started (`None`: the operator must name one).
    pub binary: Option<PathBuf>,
    /// Told once this host has handed everything over to a new process (an upgrade): the
    /// host then exits without detaching apps or removing the socket.
    pub handed_off: Option<std::sync::mpsc::Sender<()>>,
    /// The MicroQuanta class groups of the engine groups: made before a group added at run
    /// time starts, removed with a group removed at run time if this host made them.
    pub class_groups: crate::class_groups::ClassGroups,
}

/// Default of [`ServerOptions::max_connections`]: far more than the apps of one host, few
/// enough threads (with [`CONNECTION_STACK`] each) to be harmless.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default of [`ServerOptions::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ServerOptions::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Stack of a connection thread: a request needs a few KiB (JSON, one mailbox round trip).
const CONNECTION_STACK: usize = 256 * 1024;

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            allowed_uids: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            engine_kinds: BTreeMap::new(),
            config: None,
            binary: None,
            handed_off: None,
            class_groups: crate::class_groups::ClassGroups::default(),
        }
    }
}

/// Why the control server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A socket call failed.
    #[error("control socket: {0}: {1}")]
    Socket(&'static str, #[source] rustix::io::Errno),
    /// A file-system operation on the socket path or its directory failed.
    #[error("control socket {0}: {1}")]
    Path(PathBuf, #[source] std::io::Error),
    /// Something that is not a socket is in the way.
    #[error("control socket {0}: exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// A descriptor handed over by the host this one takes over is not what it should be.
    #[error("control socket handed over: {0}")]
    HandedOver(String),
    /// Another host is listening there.
    #[error("control socket {0}: another Snap host is listening there")]
    InUse(PathBuf),
    /// The listener thread could not be started.
    #[error("control thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A running control server. [`ControlServer::shutdown`] (or drop) stops it, detaches
/// every channel and removes the socket file.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<OwnedFd>,
    handed_off: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// State shared by the listener and connection threads.
struct Shared {
    runtime: Arc<Runtime>,
    opts: ServerOptions,
    own_uid: u32,
    /// Open connections, to shut them down when the server stops.
    conns: Mutex<HashMap<u64, Arc<OwnedFd>>>,
    /// Attached channels, each with the connection that attached it.
    channels: Mutex<Vec<(u64, ChannelInfo)>>,
    /// Each engine's kind, kept up to date by the operator's changes.
    kinds: Mutex<BTreeMap<String, String>>,
    /// The running configuration (see [`ServerOptions::pipeline`]); its lock also
    /// serialises the operator's changes.
    config: Mutex<Option<Config>>,
    next_conn: AtomicU64,
    /// Connections refused because [`ServerOptions::max_connections`] were open.
    refused: AtomicU64,
    /// Connections closed for idling or not taking a reply.
    timed_out: AtomicU64,
    /// The listening socket (an upgrade hands it over).
    listener: Arc<OwnedFd>,
    /// An upgrade is running: a second one is refused.
    upgrading: std::sync::atomic::AtomicBool,
    /// Everything was handed over to a new process: this one serves nothing more, detaches
    /// nothing and removes nothing.
    handed_off: Arc<std::sync::atomic::AtomicBool>,
}

impl ControlServer {
    /// Binds `path` and starts serving. A stale socket file (nobody listening) is replaced;
    /// a live one is an error, as is a non-socket file at `path`.
    pub fn start(path: &Path, runtime: Arc<Runtime>, opts: ServerOptions) -> Result<Self, ServerError> {
        let listener = bind_socket(path)?;
        Self::serve_on(path, listener, runtime, opts, Vec::new())
    }

    /// Serves on a listening socket and connections handed over by the host process this
    /// one takes over (an upgrade): nothing is bound, the socket file stays as it is, and
    /// each connection keeps the channels it had attached (`channels`, whose engines the
    /// runtime now runs), so its app notices nothing.
    pub fn adopt(
        path: &Path,
        listener: OwnedFd,
        runtime: Arc<Runtime>,
        opts: ServerOptions,
        conns: Vec<(OwnedFd, Vec<ChannelInfo>)>,
    ) -> Result<Self, ServerError> {
        let listening = sockopt::socket_acceptconn(&listener)
            .map_err(|e| ServerError::HandedOver(format!("SO_ACCEPTCONN: {e}")))?;
        if !listening {
            return Err(ServerError::HandedOver(
                "the listener is not a listening socket".into(),
            ));
        }
        Self::serve_on(path, listener, runtime, opts, conns)
    }

    fn serve_on(
        path: &Path,
        listener: OwnedFd,
        runtime: Arc<Runtime>,
        opts: ServerOptions,
        conns: Vec<(OwnedFd, Vec<ChannelInfo>)>,
    ) -> Result<Self, ServerError> {
        let listener = Arc::new(listener);
        let handed_off = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = Arc::new(
            eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
                .map_err(|e| ServerError::Socket("eventfd", e))?,
        );
        let shared = Arc::new(Shared {
            runtime,
            kinds: Mutex::new(opts.engine_kinds.clone()),
            config: Mutex::new(opts.config.clone()),
            opts,
            own_uid: rustix::process::getuid().as_raw(),
            conns: Mutex::new(HashMap::new()),
            channels: Mutex::new(Vec::new()),
            next_conn: AtomicU64::new(1),
            refused: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            listener: listener.clone(),
            upgrading: Default::default(),
            handed_off: handed_off.clone(),
        });
        let mut workers = Vec::new();
        for (conn, channels) in conns {
            workers.push(adopt_connection(&shared, conn, channels).map_err(ServerError::Thread)?);
        }
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("snap-control".into())
                .spawn(move || listen_loop(&listener, &stop, &shared, workers))
                .map_err(ServerError::Thread)?
        };
        log::info!("control socket listening at {}", path.display());
        Ok(Self {
            path: path.to_owned(),
            stop,
            handed_off,
            thread: Some(thread),
        })
    }

    /// Whether this host handed everything over to a new process (an upgrade): it must
    /// then exit without detaching apps (use [`std::process::exit`]; the connection threads
    /// stay blocked) and without removing the socket.
    pub fn handed_off(&self) -> bool {
        self.handed_off.load(Ordering::SeqCst)
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, closes every connection (detaching its channels), joins all
    /// threads and removes the socket file.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        let _ = rustix::io::write(&*self.stop, &1u64.to_ne_bytes());
        let _ = thread.join();
        if self.handed_off.load(Ordering::SeqCst) {
            // The socket file is the new host's.
            return;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("removing {}: {e}", self.path.display()),
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn bind_socket(path: &Path) -> Result<OwnedFd, ServerError> {
    let addr = SocketAddrUnix::new(path).map_err(|e| ServerError::Socket("socket path", e))?;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ServerError::NotASocket(path.to_owned()));
        }
        let probe = protocol::socket().map_err(|e| ServerError::Socket("socket", e))?;
        if rustix::net::connect(&probe, &addr).is_ok() {
            return Err(ServerError::InUse(path.to_owned()));
        }
        // Left behind by a host that did not shut down cleanly.
        std::fs::remove_file(path).map_err(|e| ServerError::Path(path.to_owned(), e))?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| ServerError::Path(dir.to_owned(), e))?;
    }
    let fd = protocol::socket().map_err(|e| ServerError::Socket("socket", e))?;
    bind(&fd, &addr).map_err(|e| ServerError::Socket("bind", e))?;
    // Who may talk to us is decided by SO_PEERCRED, not by the file mode.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| ServerError::Path(path.to_owned(), e))?;
    listen(&fd, 64).map_err(|e| ServerError::Socket("listen", e))?;
    Ok(fd)
}

/// Serves a connection handed over by the host this one takes over, with the channels it
/// had attached.
fn adopt_connection(
    shared: &Arc<Shared>,
    conn: OwnedFd,
    channels: Vec<ChannelInfo>,
) -> std::io::Result<JoinHandle<()>> {
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let conn = Arc::new(conn);
    shared
        .conns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, conn.clone());
    let mut attached = Vec::new();
    {
        let mut registry = shared.channels.lock().unwrap_or_else(|e| e.into_inner());
        for c in channels {
            // An engine that did not move leaves the channel behind: the app's calls on it
            // see no answer, as after `engine remove`.
            let Some(handle) = shared.runtime.engine(&c.engine) else {
                log::warn!(
                    "handed-over channel {} of {}: no such engine here",
                    c.channel,
                    c.engine
                );
                continue;
            };
            attached.push(Attached {
                handle,
                engine: c.engine.clone(),
                channel: c.channel,
            });
            registry.push((id, c));
        }
    }
    let shared = shared.clone();
    std::thread::Builder::new()
        .name(format!("snap-control-{id}"))
        .stack_size(CONNECTION_STACK)
        .spawn(move || {
            serve(&conn, &shared, id, attached);
            shared.conns.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        })
}

fn listen_loop(listener: &OwnedFd, stop: &OwnedFd, shared: &Arc<Shared>, mut workers: Vec<JoinHandle<()>>) {
    loop {
        let mut fds = [
            PollFd::new(listener, PollFlags::IN),
            PollFd::new(stop, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                log::error!("control socket poll: {e}; control plane stopped");
                break;
            }
        }
        if !fds[1].revents().is_empty() || shared.handed_off.load(Ordering::SeqCst) {
            break;
        }
        if fds[0].revents().is_empty() {
            continue;
        }
        let conn = match accept_with(listener, SocketFlags::CLOEXEC) {
            Ok(conn) => Arc::new(conn),
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN | rustix::io::Errno::CONNABORTED) => {
                continue
            }
            Err(e) => {
                log::warn!("control socket accept: {e}");
                continue;
            }
        };
        workers.retain(|w| !w.is_finished());
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        {
            let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
            if conns.len() >= shared.opts.max_connections {
                drop(conns);
                refuse(&conn, shared);
                continue;
            }
            conns.insert(id, conn.clone());
        }
        let worker = {
            let shared = shared.clone();
            let conn = conn.clone();
            std::thread::Builder::new()
                .name(format!("snap-control-{id}"))
                .stack_size(CONNECTION_STACK)
                .spawn(move || {
                    serve(&conn, &shared, id, Vec::new());
                    shared.conns.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                })
        };
        match worker {
            Ok(w) => workers.push(w),
            Err(e) => {
                log::warn!("control connection thread: {e}");
                shared.conns.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                refuse(&conn, shared);
            }
        }
    }
    if shared.handed_off.load(Ordering::SeqCst) {
        // The connections are the new host's now: a shutdown would hang them up for it
        // too (it acts on the socket, not on this process's descriptor). The threads stay
        // blocked until the process exits.
        return;
    }
    // Wake every connection thread out of recvmsg; each detaches its channels.
    for conn in shared.conns.lock().unwrap_or_else(|e| e.into_inner()).values() {
        let _ = rustix::net::shutdown(&**conn, Shutdown::Both);
    }
    for w in workers {
        let _ = w.join();
    }
}

/// Tells a connection beyond the cap why it is closed, and counts it. Never blocks the
/// listener: the reply goes into an empty socket buffer, with a short send timeout anyway.
fn refuse(conn: &OwnedFd, shared: &Shared) {
    let n = shared.refused.fetch_add(1, Ordering::Relaxed) + 1;
    let cap = shared.opts.max_connections;
    // A flood must not flood the log too: the first refusal and every 1000th.
    if n == 1 || n.is_multiple_of(1000) {
        log::warn!("control connection refused: {cap} connections open (the cap); {n} refused so far");
    }
    let _ = sockopt::set_socket_timeout(conn, sockopt::Timeout::Send, Some(Duration::from_millis(10)));
    let message = format!(
        "too many control connections: this Snap host serves at most {cap} at once \
         ([control] max_connections); try again later"
    );
    let _ = protocol::send(conn.as_fd(), &Response::Error { message }, &[]);
}

/// Root, the host's own user, and the configured ones.
pub(super) fn is_allowed(uid: u32, own_uid: u32, allowed: &[u32]) -> bool {
    uid == 0 || uid == own_uid || allowed.contains(&uid)
}

/// A channel this connection attached, with the engine to detach it from.
struct Attached {
    handle: EngineHandle,
    engine: String,
    channel: u64,
}

fn serve(conn: &OwnedFd, shared: &Shared, id: u64, mut attached: Vec<Attached>) {
    let cred = match sockopt::socket_peercred(conn) {
        Ok(cred) => cred,
        Err(e) => {
            log::warn!("control connection: SO_PEERCRED: {e}; closing it");
            return;
        }
    };
    let (pid, uid) = (cred.pid.as_raw_nonzero().get(), cred.uid.as_raw());
    if !is_allowed(uid, shared.own_uid, &shared.opts.allowed_uids) {
        log::warn!("control connection from pid {pid} uid {uid} refused: uid not allowed");
        let message = format!(
            "uid {uid} is not allowed to use this Snap host (allowed: root, uid {}{})",
            shared.own_uid,
            shared
                .opts
                .allowed_uids
                .iter()
                .map(|u| format!(", uid {u}"))
                .collect::<String>()
        );
        let _ = protocol::send(conn.as_fd(), &Response::Error { message }, &[]);
        return;
    }
    log::debug!("control connection from pid {pid} uid {uid}");
    let opts = &shared.opts;
    if let Err(e) = sockopt::set_socket_timeout(conn, sockopt::Timeout::Send, Some(opts.request_timeout)) {
        log::warn!("control connection from pid {pid}: SO_SNDTIMEO: {e}; closing it");
        return;
    }
    let mut buf = Vec::new();
    // Whether the receive timeout is set: only while no channel is attached.
    let mut idle_timer = false;
    loop {
        if attached.is_empty() != idle_timer {
            idle_timer = attached.is_empty();
            let timeout = idle_timer.then_some(opts.idle_timeout);
            if let Err(e) = sockopt::set_socket_timeout(conn, sockopt::Timeout::Recv, timeout) {
                log::warn!("control connection from pid {pid}: SO_RCVTIMEO: {e}; closing it");
                break;
            }
        }
        let received = protocol::recv::<Request>(conn.as_fd(), &mut buf);
        if shared.handed_off.load(Ordering::SeqCst) {
            // A request read after the hand-over belongs to the new host, which cannot see
            // it now: say so rather than serve it here (or drop it silently).
            if let Ok(Some(_)) = received {
                let message = "this Snap host was just upgraded; send the request again".to_owned();
                let _ = protocol::send(conn.as_fd(), &Response::Error { message }, &[]);
            }
            return;
        }
        let received = match received {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(protocol::ProtocolError::Io(rustix::io::Errno::AGAIN)) if idle_timer => {
                shared.timed_out.fetch_add(1, Ordering::Relaxed);
                log::debug!("control connection from pid {pid}: idle with no channel; closing it");
                let message = format!(
                    "closing an idle control connection: no request for {} ms and no channel \
                     attached ([control] idle_timeout_ms)",
                    opts.idle_timeout.as_millis()
                );
                let _ = protocol::send(conn.as_fd(), &Response::Error { message }, &[]);
                break;
            }
            Err(protocol::ProtocolError::Json(e)) => {
                let message = format!("malformed request: {e}");
                if protocol::send(conn.as_fd(), &Response::Error { message }, &[]).is_err() {
                    break;
                }
                continue;
            }
            Err(e) => {
                log::debug!("control connection from pid {pid}: {e}");
                break;
            }
        };
        let mut upgraded = false;
        let result = match received.msg {
            Request::Upgrade { binary } => {
                let r = upgrade::serve(shared, binary, (pid, uid), id);
                upgraded = r.is_ok();
                r
            }
            request if request.is_operator() => operator::serve(shared, request, (pid, uid)),
            Request::Attach { engine, notify } => attach(
                shared,
                &mut attached,
                engine,
                notify,
                received.fds,
                (pid, uid),
                id,
            ),
            Request::Detach { channel } => detach(shared, &mut attached, channel),
            Request::StageFd { engine, channel } => stage_fd(&attached, &engine, channel, received.fds),
            Request::Status => Ok((status(shared), Vec::new())),
            Request::EngineAdd { .. }
            | Request::EngineRemove { .. }
            | Request::GroupAdd { .. }
            | Request::GroupRemove { .. }
            | Request::StageUpdate { .. } => unreachable!("operator requests are served above"),
        };
        let (response, fds) = result.unwrap_or_else(|message| (Response::Error { message }, Vec::new()));
        let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
        if let Err(e) = protocol::send(conn.as_fd(), &response, &borrowed) {
            if matches!(e, protocol::ProtocolError::Io(rustix::io::Errno::AGAIN)) {
                shared.timed_out.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "control connection from pid {pid}: reply not taken within {} ms; closing it",
                    opts.request_timeout.as_millis()
                );
            } else {
                log::debug!("control connection from pid {pid}: {e}");
            }
            break;
        }
        if upgraded {
            // The report is sent: this process is done (`main` exits without detaching).
            if let Some(tx) = &shared.opts.handed_off {
                let _ = tx.send(());
            }
            return;
        }
    }
    if shared.handed_off.load(Ordering::SeqCst) {
        return;
    }
    for a in attached {
        log::info!(
            "pid {pid} disconnected: detaching channel {} of {}",
            a.channel,
            a.engine
        );
        detach_from_engine(shared, &a);
    }
}

type Reply = Result<(Response, Vec<OwnedFd>), String>;

fn attach(
    shared: &Shared,
    attached: &mut Vec<Attached>,
    engine: String,
    notify: bool,
    fds: Vec<OwnedFd>,
    (pid, uid): (i32, u32),
    conn: u64,
) -> Reply {
    let handle = shared
        .runtime
        .engine(&engine)
        .ok_or_else(|| format!("no engine named {engine:?}"))?;
    // Every attach collects what was quarantined since the last: the engines' pending
    // lists stay as short as the channels attached at once, even if nobody reads status.
    collect_quarantined(shared);
    let request = AttachRequest {
        notify,
        fds,
        pid,
        uid,
    };
    // The engine makes its side of the connection on its own thread and hands back the
    // app's descriptors: each app-facing engine type owns its shared-memory layout.
    let reply = handle
        .control_dyn(move |e| e.app_facing().map(|app| app.attach_app(request)))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("engine {engine:?} is not an app-facing engine"))??;
    let id = reply.id;
    // Recorded before replying: if the reply cannot be sent, the connection's cleanup
    // still detaches it.
    attached.push(Attached {
        handle,
        engine: engine.clone(),
        channel: id,
    });
    shared.channels.lock().unwrap_or_else(|e| e.into_inner()).push((
        conn,
        ChannelInfo {
            engine: engine.clone(),
            channel: id,
            pid,
            uid,
            notify,
        },
    ));
    log::info!("pid {pid} uid {uid} attached channel {id} to {engine} (notify: {notify})");
    let response = Response::Attached {
        channel: id,
        details: reply.details,
    };
    Ok((response, reply.fds))
}

fn detach(shared: &Shared, attached: &mut Vec<Attached>, channel: u64) -> Reply {
    let i = attached
        .iter()
        .position(|a| a.channel == channel)
        .ok_or_else(|| format!("channel {channel} was not attached on this connection"))?;
    let a = attached.swap_remove(i);
    detach_from_engine(shared, &a);
    Ok((Response::Detached { channel }, Vec::new()))
}

/// Hands one descriptor to the engine for a channel of this connection only: an app
/// cannot stage descriptors on another app's channel.
fn stage_fd(attached: &[Attached], engine: &str, channel: u64, mut fds: Vec<OwnedFd>) -> Reply {
    let a = attached
        .iter()
        .find(|a| a.engine == engine && a.channel == channel)
        .ok_or_else(|| format!("channel {channel} of {engine:?} was not attached on this connection"))?;
    if fds.len() != 1 {
        return Err(format!("stage_fd needs exactly 1 descriptor, got {}", fds.len()));
    }
    let fd = fds.remove(0);
    let cookie = a
        .handle
        .control_dyn(move |e| e.app_facing().map(|app| app.stage_fd(channel, fd)))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("engine {engine:?} is not an app-facing engine"))??;
    Ok((Response::Staged { cookie }, Vec::new()))
}

fn detach_from_engine(shared: &Shared, a: &Attached) {
    let id = a.channel;
    if let Err(e) = a
        .handle
        .control_dyn(move |e| e.app_facing().map(|app| app.detach(id)))
    {
        // The engine is gone (runtime stopping, engine failed): its channels went with it.
        log::warn!("detaching channel {id} of {}: {e}", a.engine);
    }
    shared
        .channels
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(_, c)| !(c.engine == a.engine && c.channel == id));
}

/// Drops from the registry the channels engines quarantined and detached on their own.
/// Called by `status` (the registry's only reader, so it reads true) and by `attach`.
fn collect_quarantined(shared: &Shared) {
    let mut gone = Vec::new();
    for name in shared.runtime.engine_names() {
        if let Some(handle) = shared.runtime.engine(&name) {
            for q in handle.take_quarantined() {
                log::warn!("channel {} of {name} quarantined: {}", q.channel, q.reason);
                gone.push((name.clone(), q.channel));
            }
        }
    }
    if !gone.is_empty() {
        shared
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(_, c)| !gone.iter().any(|(e, id)| *e == c.engine && *id == c.channel));
    }
}

fn status(shared: &Shared) -> Response {
    collect_quarantined(shared);
    let channels = shared
        .channels
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(_, c)| c.clone())
        .collect();
    let control = ControlStats {
        connections: shared.conns.lock().unwrap_or_else(|e| e.into_inner()).len(),
        max_connections: shared.opts.max_connections,
        refused: shared.refused.load(Ordering::Relaxed),
        timed_out: shared.timed_out.load(Ordering::Relaxed),
    };
    let runtime = shared.runtime.status();
    let mut counters = BTreeMap::new();
    // Healthy engines only: a stuck one would hold the answer for the control timeout.
    let engines = runtime.groups.iter().flat_map(|g| &g.engines);
    for e in engines.filter(|e| e.health == snap_ipc::control::EngineHealth::Ok) {
        // An engine that cannot answer (stopping) just has no counters here.
        let Some(handle) = shared.runtime.engine(&e.name) else {
            continue;
        };
        if let Ok(Some(c)) = handle.control_dyn(|e| e.counters()) {
            counters.insert(e.name.clone(), c);
        }
    }
    Response::Status {
        status: Box::new(HostStatus {
            runtime,
            channels,
            counters,
            control,
            kinds: shared.kinds.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }),
    }
}

mod operator;
#[cfg(test)]
mod tests;
mod upgrade;
