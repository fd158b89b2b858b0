//! A real `snap-host` whose TOML puts two Pony engines in one dedicated group with one
//! core (two "hosts" sharing one polling thread, as on a 2-CPU machine), with an app on
//! each attached through `PonyClient::connect_with` (blocking waits after a completion spin):
//! messages go from one engine to the other over UDP on loopback and are echoed back, and
//! the host's status shows both engines on the same thread.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{message, Host};
use pony_express::app::Completions;
use pony_express::client::{ClientOptions, PonyClient};

fn free_udp_addr() -> String {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

#[test]
fn two_pony_engines_on_one_dedicated_core_echo_through_their_apps() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (addr_a, addr_b) = (free_udp_addr(), free_udp_addr());
    let config = format!(
        "microquanta = false\n\
         [[group]]\nname = \"shared\"\nmode = \"dedicated\"\ncores = [{core}]\n\
         [[group.engine]]\nname = \"pony-a\"\nkind = \"pony\"\n\
         [group.engine.options]\nnic = \"udp\"\nbind = \"{addr_a}\"\n\
         [[group.engine]]\nname = \"pony-b\"\nkind = \"pony\"\n\
         [group.engine.options]\nnic = \"udp\"\nbind = \"{addr_b}\"\n",
        core = cpus - 1
    );
    let host = Host::with_config(&config);
    let options = ClientOptions {
        completions: Completions::Block,
        completion_spin: Duration::from_micros(50),
    };
    let mut b = PonyClient::connect_with(&host.socket, "pony-b", &options).unwrap();
    b.listen(5).unwrap();
    let mut a = PonyClient::connect_with(&host.socket, "pony-a", &options).unwrap();
    assert_eq!(a.session().completion_spin(), Duration::from_micros(50));
    let flow = a.open_flow(&addr_b, 5).unwrap();
    let echo = std::thread::spawn(move || {
        for _ in 0..40 {
            let m = b.recv(Duration::from_secs(10)).unwrap();
            b.send(m.flow, m.stream, &m.data).unwrap();
        }
        b
    });
    for seq in 0..40u32 {
        let len = [1, 100, 9000, 70_000][seq as usize % 4];
        let data = message(0, seq, len);
        a.send(flow, 0, &data).unwrap();
        let back = a.recv(Duration::from_secs(10)).unwrap();
        assert_eq!(back.flow, flow);
        assert!(back.data == data, "echo {seq} of {len} bytes differs");
    }
    let _b = echo.join().unwrap();
    let status = a.control().status().unwrap();
    let threads: Vec<_> = status.runtime.groups.iter().flat_map(|g| &g.threads).collect();
    assert_eq!(threads.len(), 1, "{status:#?}");
    assert_eq!(threads[0].engines, ["pony-a", "pony-b"]);
    assert_eq!(threads[0].cores, [cpus - 1]);
    drop(a);
    assert!(host.terminate().success());
}
