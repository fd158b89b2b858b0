//! The socket layer (`pony_express::socket`) between two real `snap-host` processes over
//! UDP on loopback: an echo server (a thread per accepted stream) and clients written with
//! `PonyListener` / `PonyStream` as one would with TCP, then the ends of a stream: the
//! client closing (the server reads the end), the server closing (the client reads the end
//! and can no longer send), and the server's host dying (its app gets an error, not a
//! hang).

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{message, Host, TIMEOUT};
use pony_express::app::OpErrorCode;
use pony_express::client::ClientError;
use pony_express::socket::{PonyListener, PonyStream, SocketError};

const ECHO: u32 = 7;
const SIZES: [usize; 6] = [1, 100, 1500, 9000, 100_000, 1 << 20];

/// Echoes every message on the stream it came on until the peer closes; returns how many.
fn echo(stream: PonyStream) -> Result<usize, SocketError> {
    let mut n = 0;
    while let Some((s, m)) = stream.recv_with_stream()? {
        stream.send_on(s, &m)?;
        n += 1;
    }
    Ok(n)
}

#[test]
fn echo_server_and_clients() {
    let host_a = Host::start();
    let host_b = Host::start();
    let listener = PonyListener::bind(&host_b.socket, "pony0", ECHO).unwrap();
    let server = thread::spawn(move || {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let stream = listener.accept_timeout(TIMEOUT).unwrap();
                thread::spawn(move || echo(stream).unwrap())
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum::<usize>()
    });
    let clients: Vec<_> = (0..2u32)
        .map(|c| {
            let (socket, addr) = (host_a.socket.clone(), host_b.addr.clone());
            thread::spawn(move || {
                let stream = PonyStream::connect(&socket, "pony0", &addr, ECHO).unwrap();
                stream.set_read_timeout(Some(TIMEOUT));
                // All sent first, on two streams, then all read back: in order per stream.
                for (i, &len) in SIZES.iter().enumerate() {
                    stream.send_on(i as u32 % 2, &message(c, i as u32, len)).unwrap();
                }
                let mut next = [0, 1];
                for _ in SIZES {
                    let (s, m) = stream.recv_with_stream().unwrap().expect("an echo");
                    let i = next[s as usize];
                    assert!(
                        m == message(c, i as u32, SIZES[i]),
                        "client {c}: echo {i} differs"
                    );
                    next[s as usize] += 2;
                }
                stream.close().unwrap();
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(server.join().unwrap(), 2 * SIZES.len());
}

#[test]
fn ends_of_a_stream() {
    let host_a = Host::start();
    let mut host_b = Host::start();
    let listener = PonyListener::bind(&host_b.socket, "pony0", ECHO).unwrap();
    let other = PonyStream::connect(&host_a.socket, "pony0", &host_b.addr, ECHO + 1);
    assert!(
        matches!(other, Err(SocketError::Op(OpErrorCode::NoListener))),
        "{other:?}"
    );

    // The client sends and drops its stream: the server still gets it all, then the end.
    let client = PonyStream::connect(&host_a.socket, "pony0", &host_b.addr, ECHO).unwrap();
    client.send(&message(9, 0, 300_000)).unwrap();
    client.send(b"last").unwrap();
    drop(client);
    let server = listener.accept_timeout(TIMEOUT).unwrap();
    server.set_read_timeout(Some(TIMEOUT));
    assert_eq!(server.recv().unwrap(), Some(message(9, 0, 300_000)));
    assert_eq!(server.recv().unwrap().as_deref(), Some(&b"last"[..]));
    assert_eq!(server.recv().unwrap(), None);
    assert!(matches!(
        server.send(b"too late"),
        Err(SocketError::Closed { .. })
    ));

    // The server closes: the client reads what came before, then the end.
    let client = PonyStream::connect(&host_a.socket, "pony0", &host_b.addr, ECHO).unwrap();
    client.set_read_timeout(Some(TIMEOUT));
    let server = listener.accept_timeout(TIMEOUT).unwrap();
    server.send(b"bye").unwrap();
    server.close().unwrap();
    assert_eq!(client.recv().unwrap().as_deref(), Some(&b"bye"[..]));
    assert_eq!(client.recv().unwrap(), None);
    assert!(matches!(client.send(b"hello?"), Err(SocketError::Closed { .. })));

    // The server's host dies: its app hears so at once rather than waiting for ever.
    let client = PonyStream::connect(&host_a.socket, "pony0", &host_b.addr, ECHO).unwrap();
    let server = listener.accept_timeout(TIMEOUT).unwrap();
    host_b.kill();
    let start = Instant::now();
    let r = server.recv();
    assert!(
        matches!(r, Err(SocketError::Client(ClientError::HostGone))),
        "{r:?}"
    );
    assert!(matches!(
        listener.accept(),
        Err(SocketError::Client(ClientError::HostGone))
    ));
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    // The client's flow fails once it has something to send and the peer does not answer
    // (an idle flow would notice too, within its idle timeout); the failed send is why its
    // stream ends.
    client.send(b"anyone?").unwrap();
    client.set_read_timeout(Some(TIMEOUT));
    let r = client.recv();
    assert!(
        matches!(r, Err(SocketError::Op(OpErrorCode::Unreachable))),
        "{r:?}"
    );
    assert!(matches!(client.send(b"again"), Err(SocketError::Closed { .. })));
}
