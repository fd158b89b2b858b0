//! The app library's socket layer (`pony_express::socket`), in process: two Pony engines
//! joined by a shared-memory wire in one engine `Runtime`, behind a control server on a
//! temporary socket (what `snap-host` runs), with apps on both through the real attach path.
//! Deadlines only bound hangs. `pony_sockets.rs` runs the same layer against real hosts.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pony_engine::nic::{ShmWire, ShmWireConfig};
use pony_engine::{PonyConfig, PonyEngine};
use pony_express::app::{OpErrorCode, SessionShape};
use pony_express::client::ClientError;
use pony_express::pool::PoolShape;
use pony_express::socket::{PonyListener, PonyStream, SocketError};
use snap_host::control::{ControlServer, ServerOptions};
use snap_runtime::{CompactingParams, Engine, GroupSpec, Mode, Runtime, RuntimeOptions};

const LONG: Duration = Duration::from_secs(10);

/// Engines `a` and `b`, each other's peer `shm`, behind one control socket.
struct Hosts {
    server: Option<ControlServer>,
    socket: PathBuf,
    _rt: Arc<Runtime>,
}

fn hosts() -> Hosts {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let socket = std::env::temp_dir()
        .join(format!("pony-socket-{}-{n}", std::process::id()))
        .join("snap.sock");
    let (wa, wb) = ShmWire::pair(ShmWireConfig::default()).unwrap();
    let cfg = PonyConfig {
        session: SessionShape {
            ring_capacity: 64,
            pool: PoolShape {
                buffers: 1024,
                buf_size: 2048,
            },
        },
        ..PonyConfig::default()
    };
    let engines: Vec<Box<dyn Engine>> = vec![
        Box::new(PonyEngine::new("a", Box::new(wa), cfg.clone())),
        Box::new(PonyEngine::new("b", Box::new(wb), cfg)),
    ];
    let group = GroupSpec {
        name: "pony".into(),
        mode: Mode::Spreading,
        cores: Vec::new(),
        engines,
        compacting: CompactingParams::default(),
        idle_poll: snap_runtime::DEFAULT_IDLE_POLL,
        microquanta_group: None,
    };
    let options = RuntimeOptions {
        microquanta: false,
        ..Default::default()
    };
    let rt = Arc::new(Runtime::start(vec![group], options).unwrap());
    let server = ControlServer::start(&socket, rt.clone(), ServerOptions::default()).unwrap();
    Hosts {
        server: Some(server),
        socket,
        _rt: rt,
    }
}

fn message(tag: u32, i: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (k as u32 ^ tag.wrapping_mul(7) ^ i.wrapping_mul(31)) as u8)
        .collect()
}

#[test]
fn types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<PonyStream>();
    check::<PonyListener>();
}

/// Three clients at once, each echoed by its own server thread on streams accepted from
/// one listener (so the server threads share a session and take turns leading it).
#[test]
fn echo_with_a_thread_per_accepted_stream() {
    let h = hosts();
    let listener = PonyListener::bind(&h.socket, "b", 7).unwrap();
    let server = thread::spawn(move || {
        let echoers: Vec<_> = (0..3)
            .map(|_| {
                let stream = listener.accept_timeout(LONG).unwrap();
                thread::spawn(move || {
                    stream.set_read_timeout(Some(LONG));
                    let mut echoed = 0;
                    while let Some((s, m)) = stream.recv_with_stream().unwrap() {
                        stream.send_on(s, &m).unwrap();
                        echoed += 1;
                    }
                    echoed
                })
            })
            .collect();
        echoers.into_iter().map(|t| t.join().unwrap()).sum::<u32>()
    });
    let sizes = [1, 100, 2000, 5000, 70_000];
    let clients: Vec<_> = (0..3u32)
        .map(|tag| {
            let socket = h.socket.clone();
            thread::spawn(move || {
                let stream = PonyStream::connect(&socket, "a", "shm", 7).unwrap();
                stream.set_read_timeout(Some(LONG));
                for (i, &len) in sizes.iter().enumerate() {
                    let m = message(tag, i as u32, len);
                    stream.send_on(i as u32 % 2, &m).unwrap();
                    assert_eq!(stream.recv_with_stream().unwrap(), Some((i as u32 % 2, m)));
                }
                stream.flush().unwrap();
                stream.close().unwrap();
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(server.join().unwrap(), 3 * sizes.len() as u32);
}

#[test]
fn peer_close_is_the_end_of_the_stream() {
    let h = hosts();
    let listener = PonyListener::bind(&h.socket, "b", 1).unwrap();
    let client = PonyStream::connect(&h.socket, "a", "shm", 1).unwrap();
    let server = listener.accept_timeout(LONG).unwrap();
    server.set_read_timeout(Some(LONG));
    client.send(b"one").unwrap();
    client.send_on(3, b"two").unwrap();
    client.close().unwrap();
    // What was sent before the close is read first, then the end, for good.
    assert_eq!(server.recv().unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(server.recv_with_stream().unwrap(), Some((3, b"two".to_vec())));
    assert_eq!(server.recv().unwrap(), None);
    assert_eq!(server.recv().unwrap(), None);
    assert!(matches!(server.send(b"late"), Err(SocketError::Closed { .. })));
}

/// Far more sends than the rings hold, without reading a completion in between: the
/// sender must take completions while it waits for room.
#[test]
fn many_sends_in_a_row() {
    let h = hosts();
    let listener = PonyListener::bind(&h.socket, "b", 1).unwrap();
    let client = PonyStream::connect(&h.socket, "a", "shm", 1).unwrap();
    let server = listener.accept_timeout(LONG).unwrap();
    let reader = thread::spawn(move || {
        server.set_read_timeout(Some(LONG));
        (0..2000u32).all(|i| server.recv().unwrap() == Some(message(2, i, 100 + i as usize % 900)))
    });
    for i in 0..2000u32 {
        client.send(&message(2, i, 100 + i as usize % 900)).unwrap();
    }
    client.flush().unwrap();
    assert!(reader.join().unwrap());
}

#[test]
fn dropping_a_stream_closes_its_flow_after_delivering() {
    let h = hosts();
    let listener = PonyListener::bind(&h.socket, "b", 1).unwrap();
    let client = PonyStream::connect(&h.socket, "a", "shm", 1).unwrap();
    let big = message(1, 1, 300_000);
    client.send(&big).unwrap();
    drop(client);
    let server = listener.accept_timeout(LONG).unwrap();
    server.set_read_timeout(Some(LONG));
    assert_eq!(server.recv().unwrap(), Some(big));
    assert_eq!(server.recv().unwrap(), None);
}

#[test]
fn refusals_and_timeouts() {
    let h = hosts();
    let err = PonyStream::connect(&h.socket, "a", "shm", 9).unwrap_err();
    assert!(matches!(err, SocketError::Op(OpErrorCode::NoListener)), "{err}");

    let listener = PonyListener::bind(&h.socket, "b", 9).unwrap();
    let err = PonyListener::bind(&h.socket, "b", 9).unwrap_err();
    assert!(matches!(err, SocketError::Op(OpErrorCode::ServiceTaken)), "{err}");
    let err = listener.accept_timeout(Duration::from_millis(30)).unwrap_err();
    assert!(matches!(err, SocketError::TimedOut), "{err}");

    let client = PonyStream::connect(&h.socket, "a", "shm", 9).unwrap();
    let server = listener.accept_timeout(LONG).unwrap();
    for timeout in [Duration::ZERO, Duration::from_millis(30)] {
        client.set_read_timeout(Some(timeout));
        assert_eq!(client.read_timeout(), Some(timeout));
        let start = Instant::now();
        assert!(matches!(client.recv(), Err(SocketError::TimedOut)));
        assert!(start.elapsed() >= timeout);
    }
    let max = client.max_message_len();
    let err = client.send(&vec![0; max + 1]).unwrap_err();
    assert!(
        matches!(err, SocketError::TooLarge { len, .. } if len == max + 1),
        "{err}"
    );
    server.send(b"after the timeouts").unwrap();
    client.set_read_timeout(Some(LONG));
    assert_eq!(
        client.recv().unwrap().as_deref(),
        Some(&b"after the timeouts"[..])
    );

    // Dropping the listener gives the service up at once; its accepted stream lives on.
    drop(listener);
    let again = PonyListener::bind(&h.socket, "b", 9).unwrap();
    server.send(b"still here").unwrap();
    assert_eq!(client.recv().unwrap().as_deref(), Some(&b"still here"[..]));
    drop(again);
}

/// The control server going away is what apps see of a host's death. Here it detaches the
/// sessions first, so a stream may instead see its flow closed; either way, no hang.
#[test]
fn host_gone_is_an_error_not_a_hang() {
    let mut h = hosts();
    let listener = PonyListener::bind(&h.socket, "b", 2).unwrap();
    let client = PonyStream::connect(&h.socket, "a", "shm", 2).unwrap();
    let server = listener.accept_timeout(LONG).unwrap();
    h.server.take().unwrap().shutdown();
    let start = Instant::now();
    assert!(matches!(
        listener.accept(),
        Err(SocketError::Client(ClientError::HostGone))
    ));
    for stream in [&client, &server] {
        let r = stream.recv();
        assert!(
            matches!(r, Ok(None) | Err(SocketError::Client(ClientError::HostGone))),
            "{r:?}"
        );
    }
    assert!(start.elapsed() < LONG);
}
