//! Property tests: the header's round trip and corruption detection, and isolation across
//! random worlds of hosts, tenants with overlapping virtual addresses, partial mapping
//! tables and corrupted, misdelivered or hostile packets.

use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;

use super::wire::{Packet, Repr, HEADER_LEN};
use super::*;

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u16; 8]>()
            .prop_map(IpAddr::from)
            .prop_filter("not IPv4-mapped", |ip| match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().is_none(),
                IpAddr::V4(_) => true,
            }),
    ]
}

fn endpoint() -> impl Strategy<Value = SocketAddr> {
    (ip(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

fn packet_bytes(repr: &Repr, inner: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0; HEADER_LEN + inner.len()];
    let header: &mut [u8; HEADER_LEN] = (&mut bytes[..HEADER_LEN]).try_into().unwrap();
    repr.emit(header);
    bytes[HEADER_LEN..].copy_from_slice(inner);
    bytes
}

const HOSTS: usize = 3;
const TENANTS: usize = 3;

fn physical(host: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, host as u8 + 1], 7000))
}

fn vni(tenant: usize) -> u32 {
    100 + tenant as u32
}

/// A world: which host carries which tenant, each tenant's virtual addresses (a
/// permutation per tenant, so tenants reuse each other's addresses), and which mappings
/// each host's table holds.
#[derive(Debug, Clone)]
struct World {
    present: [[bool; TENANTS]; HOSTS],
    shift: [usize; TENANTS],
    known: [[[bool; TENANTS]; HOSTS]; HOSTS],
}

impl World {
    fn virtual_of(&self, host: usize, tenant: usize) -> SocketAddr {
        SocketAddr::from((
            [192, 168, 0, ((host + self.shift[tenant]) % HOSTS) as u8 + 1],
            9000,
        ))
    }

    fn overlay(&self, host: usize) -> Overlay {
        let tenants = (0..TENANTS)
            .filter(|&t| self.present[host][t])
            .map(|t| LocalTenant {
                tenant: t as u32 + 1,
                vni: vni(t),
                endpoint: self.virtual_of(host, t),
            })
            .collect();
        let mut mappings = vec![];
        for other in 0..HOSTS {
            for t in 0..TENANTS {
                if self.present[other][t] && self.known[host][other][t] {
                    mappings.push(Mapping {
                        vni: vni(t),
                        endpoint: self.virtual_of(other, t),
                        physical: physical(other),
                    });
                }
            }
        }
        Overlay::new(Tables::new(OverlayConfig { tenants, mappings }).unwrap())
    }
}

fn world() -> impl Strategy<Value = World> {
    (
        any::<[[bool; TENANTS]; HOSTS]>(),
        any::<[u8; TENANTS]>(),
        proptest::collection::vec(proptest::bool::weighted(0.8), HOSTS * HOSTS * TENANTS),
    )
        .prop_map(|(present, shift, known_flat)| {
            let mut known = [[[false; TENANTS]; HOSTS]; HOSTS];
            for (i, k) in known_flat.into_iter().enumerate() {
                known[i / (HOSTS * TENANTS)][(i / TENANTS) % HOSTS][i % TENANTS] = k;
            }
            World {
                present,
                shift: shift.map(|s| s as usize % HOSTS),
                known,
            }
        })
}

#[derive(Debug, Clone)]
enum Tamper {
    None,
    /// Flip one bit of the header.
    Flip(usize, u8),
    /// Delivered to another host than the mapping says.
    Misdeliver(usize),
    /// The sending host rewrites VNI and virtual source, with a valid checksum.
    Hostile(usize, usize),
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        Just(Tamper::None),
        (0..HEADER_LEN, 0u8..8).prop_map(|(at, bit)| Tamper::Flip(at, bit)),
        (0..HOSTS).prop_map(Tamper::Misdeliver),
        (0..TENANTS, 0..HOSTS).prop_map(|(t, h)| Tamper::Hostile(t, h)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn header_round_trips_and_any_flipped_bit_is_caught(
        vni in 1u32..,
        src in endpoint(),
        dst in endpoint(),
        inner in proptest::collection::vec(any::<u8>(), 0..64),
        at in 0..HEADER_LEN,
        bit in 0u8..8,
    ) {
        let repr = Repr { vni, src, dst, inner_len: inner.len() as u32 };
        let mut bytes = packet_bytes(&repr, &inner);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        prop_assert_eq!(Repr::parse(&packet), Ok(repr));
        prop_assert_eq!(packet.inner(), &inner[..]);
        bytes[at] ^= 1 << bit;
        prop_assert!(Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).is_err());
        // Cut short or lengthened: refused too.
        bytes[at] ^= 1 << bit;
        bytes.push(0);
        prop_assert!(Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).is_err());
        prop_assert!(Packet::new_checked(&bytes[..HEADER_LEN - 1]).is_err());
    }

    /// Every packet sent by tenant `t` on one host and decapsulated anywhere reaches `t`
    /// or nobody; a hostile host reaches only tenants it carries, as the endpoint it
    /// carries. Untampered packets with every mapping in place are all delivered.
    #[test]
    fn no_packet_crosses_tenants(
        world in world(),
        sends in proptest::collection::vec((0..HOSTS, 0..TENANTS, 0..HOSTS, tamper()), 1..40),
    ) {
        let mut overlays: Vec<Overlay> = (0..HOSTS).map(|h| world.overlay(h)).collect();
        for (from, t, to, tamper) in sends {
            let tenant = t as u32 + 1;
            let dst = world.virtual_of(to, t);
            let encap = overlays[from].encap(tenant, dst, 4);
            if !world.present[from][t] {
                prop_assert_eq!(encap, Err(EncapDrop::UnknownTenant));
                continue;
            }
            let mapped = world.present[to][t] && world.known[from][to][t];
            let Ok((repr, phys)) = encap else {
                prop_assert!(!mapped);
                continue;
            };
            prop_assert!(mapped);
            prop_assert_eq!(phys, physical(to));
            let mut bytes = packet_bytes(&repr, b"pony");
            let mut receiver = to;
            match tamper {
                Tamper::None => {}
                Tamper::Flip(at, bit) => bytes[at] ^= 1 << bit,
                Tamper::Misdeliver(host) => receiver = host,
                Tamper::Hostile(t2, h2) => {
                    let mut packet = Packet::new_unchecked(&mut bytes[..]);
                    packet.set_vni(vni(t2));
                    packet.set_src(world.virtual_of(h2, t2));
                    packet.fill_checksum();
                }
            }
            let result = overlays[receiver].decap(physical(from), &bytes);
            if let Ok(delivery) = result {
                let got = delivery.tenant as usize - 1;
                // The sending host carries the tenant it reached, as the source it named.
                prop_assert!(world.present[from][got]);
                prop_assert_eq!(delivery.src, world.virtual_of(from, got));
                if !matches!(tamper, Tamper::Hostile(..)) {
                    prop_assert_eq!(got, t, "tenant {} reached tenant {}", t, got);
                }
            }
            if matches!(tamper, Tamper::None) {
                prop_assert_eq!(result.is_ok(), world.known[to][from][t]);
            }
            if matches!(tamper, Tamper::Flip(..)) {
                prop_assert!(result.is_err());
            }
        }
    }
}

#[test]
fn each_drop_has_its_reason() {
    let here = SocketAddr::from(([10, 0, 0, 1], 7000));
    let there = SocketAddr::from(([10, 0, 0, 2], 7000));
    let a = SocketAddr::from(([192, 168, 0, 1], 9000));
    let b = SocketAddr::from(([192, 168, 0, 2], 9000));
    let tables = |mappings: Vec<Mapping>| {
        Tables::new(OverlayConfig {
            tenants: vec![LocalTenant {
                tenant: 1,
                vni: 7,
                endpoint: a,
            }],
            mappings,
        })
        .unwrap()
    };
    let mut overlay = Overlay::new(tables(vec![Mapping {
        vni: 7,
        endpoint: b,
        physical: there,
    }]));
    assert_eq!(overlay.encap(2, b, 4), Err(EncapDrop::UnknownTenant));
    assert_eq!(overlay.encap(1, a, 4), Err(EncapDrop::UnknownMapping));
    let ok = Repr {
        vni: 7,
        src: b,
        dst: a,
        inner_len: 4,
    };
    assert!(overlay.decap(there, &packet_bytes(&ok, b"pony")).is_ok());
    assert_eq!(
        overlay.decap(here, &packet_bytes(&ok, b"pony")),
        Err(DecapDrop::SourceMismatch)
    );
    let wrong_vni = Repr { vni: 8, ..ok };
    assert_eq!(
        overlay.decap(there, &packet_bytes(&wrong_vni, b"pony")),
        Err(DecapDrop::WrongVni)
    );
    let not_local = Repr { dst: b, ..ok };
    assert_eq!(
        overlay.decap(there, &packet_bytes(&not_local, b"pony")),
        Err(DecapDrop::NotLocal)
    );
    let unknown = Repr {
        src: SocketAddr::from(([192, 168, 0, 3], 9000)),
        ..ok
    };
    assert_eq!(
        overlay.decap(there, &packet_bytes(&unknown, b"pony")),
        Err(DecapDrop::UnknownMapping)
    );
    let mut bad = packet_bytes(&ok, b"pony");
    bad[5] ^= 1;
    assert_eq!(overlay.decap(there, &bad), Err(DecapDrop::BadChecksum));
    assert_eq!(overlay.decap(there, &bad[..10]), Err(DecapDrop::Malformed));
    // A mapping moved to another host: packets from the old place stop at once.
    let moved = SocketAddr::from(([10, 0, 0, 3], 7000));
    overlay.replace(tables(vec![Mapping {
        vni: 7,
        endpoint: b,
        physical: moved,
    }]));
    assert_eq!(
        overlay.decap(there, &packet_bytes(&ok, b"pony")),
        Err(DecapDrop::SourceMismatch)
    );
    assert!(overlay.decap(moved, &packet_bytes(&ok, b"pony")).is_ok());
    assert_eq!(overlay.encap(1, b, 4).map(|(_, phys)| phys), Ok(moved));
}

#[test]
fn bad_tables_are_refused_whole() {
    let a = SocketAddr::from(([192, 168, 0, 1], 9000));
    let p = SocketAddr::from(([10, 0, 0, 1], 7000));
    let twice = OverlayConfig {
        tenants: vec![],
        mappings: vec![
            Mapping {
                vni: 7,
                endpoint: a,
                physical: p
            };
            2
        ],
    };
    assert!(matches!(
        Tables::new(twice),
        Err(OverlayConfigError::DuplicateMapping { .. })
    ));
    let zero = OverlayConfig {
        tenants: vec![LocalTenant {
            tenant: 1,
            vni: 0,
            endpoint: a,
        }],
        mappings: vec![],
    };
    assert_eq!(Tables::new(zero).unwrap_err(), OverlayConfigError::ZeroVni);
    let mapped: SocketAddr = "[::ffff:192.168.0.1]:9000".parse().unwrap();
    let v4mapped = OverlayConfig {
        tenants: vec![LocalTenant {
            tenant: 1,
            vni: 7,
            endpoint: mapped,
        }],
        mappings: vec![],
    };
    assert!(matches!(
        Tables::new(v4mapped),
        Err(OverlayConfigError::MappedAddress(_))
    ));
}
