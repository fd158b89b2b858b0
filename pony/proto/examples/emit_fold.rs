//! Measures what folding the CRC32C into the payload's copy buys on one core: emitting
//! 8972-byte `OpResponse` packets whose payload comes from a 256 MiB source (so reads come
//! from memory, as from an app's pool or region) with [`Repr::emit_gather`] (copy and CRC
//! in one pass, block by block) against the two-pass baseline in the same run (copy the
//! whole payload, then checksum the whole packet, as `emit` did before). Prints each one's
//! GB/s and the ratio; rounds alternate to share the machine's noise.
//!
//! `cargo run --release -p pony-proto --example emit_fold`

use std::time::Instant;

use pony_proto::wire::{Packet, PayloadPart, Repr};

const SOURCE: usize = 256 << 20;
const PAYLOAD: usize = 8972 - 64;
const PACKETS: usize = SOURCE / PAYLOAD;

fn repr() -> Repr<'static> {
    Repr::OpResponse {
        dst_flow: 1,
        seq: 1,
        op: 1,
        total_len: PAYLOAD as u32,
        payload_offset: 0,
        payload: &[],
    }
}

/// Copy and CRC in one pass (the library's emit).
fn folded(src: &[u8], buf: &mut [u8]) -> u32 {
    let mut acc = 0;
    for i in 0..PACKETS {
        let part = &src[i * PAYLOAD..(i + 1) * PAYLOAD];
        let n = repr().emit_gather(&[part], buf).unwrap();
        acc ^= Packet::new_unchecked(&buf[..n]).checksum();
    }
    acc
}

/// Copy the payload, then checksum the finished packet in a second pass.
fn two_pass(src: &[u8], buf: &mut [u8]) -> u32 {
    let header = repr().buffer_len();
    let mut acc = 0;
    for i in 0..PACKETS {
        let part = &src[i * PAYLOAD..(i + 1) * PAYLOAD];
        // The header (the library writes it; its cost is the same in both).
        let n = repr().emit(buf).unwrap();
        debug_assert_eq!(n, header);
        PayloadPart::copy_to(part, 0, &mut buf[header..header + PAYLOAD]);
        let mut p = Packet::new_unchecked(&mut buf[..header + PAYLOAD]);
        p.fill_checksum();
        acc ^= p.checksum();
    }
    acc
}

fn main() {
    let src: Vec<u8> = (0..SOURCE).map(|i| (i * 31 + i / 4099) as u8).collect();
    let mut buf = vec![0u8; 9000];
    let gb = (PACKETS * PAYLOAD) as f64 / 1e9;
    let (mut f, mut t) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let s = Instant::now();
        std::hint::black_box(two_pass(&src, &mut buf));
        t.push(gb / s.elapsed().as_secs_f64());
        let s = Instant::now();
        std::hint::black_box(folded(&src, &mut buf));
        f.push(gb / s.elapsed().as_secs_f64());
    }
    f.sort_by(f64::total_cmp);
    t.sort_by(f64::total_cmp);
    let (f, t) = (f[2], t[2]);
    println!("two-pass (copy, then CRC): {t:.2} GB/s");
    println!("folded (CRC per block as copied): {f:.2} GB/s");
    println!("folded / two-pass: {:.2}", f / t);
}
