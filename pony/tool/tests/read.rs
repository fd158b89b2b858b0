//! `pony region serve` and `pony read` between two real hosts on loopback: the bytes read
//! are the file's slice, across several reads for a long one; a wrong key is refused.

mod common;

use common::{random_bytes, spawn, stderr, test_dir, Host, Running};

/// Host B serves `file` as a region on service 5: the server and its (id, key, len).
fn serve(b: &Host, file: &std::path::Path) -> (Running, u32, u64, u64) {
    let mut server = spawn(b.pony(&[
        "region",
        "serve",
        "--service",
        "5",
        "--file",
        file.to_str().unwrap(),
    ]));
    let line = first_stdout_line(&mut server);
    // "region ID key KEY len LEN"
    let w: Vec<&str> = line.split_whitespace().collect();
    assert!(
        w.len() == 6 && w[0] == "region" && w[2] == "key" && w[4] == "len",
        "{line}"
    );
    (
        server,
        w[1].parse().unwrap(),
        w[3].parse().unwrap(),
        w[5].parse().unwrap(),
    )
}

fn first_stdout_line(child: &mut Running) -> String {
    use std::io::BufRead;
    let mut stdout = std::io::BufReader::new(child.child().stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(!line.is_empty(), "region serve printed nothing");
    line
}

#[test]
fn read_returns_the_files_slice() {
    let a = Host::start();
    let b = Host::start();
    let dir = test_dir("pony-read");
    let file = dir.join("region.bin");
    let data = random_bytes(3 << 20);
    std::fs::write(&file, &data).unwrap();
    let (_server, id, key, len) = serve(&b, &file);
    assert_eq!(len, data.len() as u64);
    // Crosses the tool's 1 MiB step twice, from an odd offset.
    let (offset, n) = (12_345usize, 2_500_000usize);
    let (id, key, o, l) = (id.to_string(), key.to_string(), offset.to_string(), n.to_string());
    let args = [
        "read",
        "--peer",
        &b.addr,
        "--service",
        "5",
        "--region",
        &id,
        "--key",
        &key,
        "--offset",
        &o,
        "--len",
        &l,
    ];
    let out = spawn(a.pony(&args)).finish();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), n);
    assert!(
        out.stdout == data[offset..offset + n],
        "the bytes read differ from the file's"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_wrong_key_or_a_read_past_the_end_is_a_clear_error() {
    let a = Host::start();
    let b = Host::start();
    let dir = test_dir("pony-read-key");
    let file = dir.join("region.bin");
    std::fs::write(&file, random_bytes(4096)).unwrap();
    let (_server, id, key, _) = serve(&b, &file);
    let id = id.to_string();
    let read = |key: String, offset: &str, len: &str| {
        let args = [
            "read",
            "--peer",
            &b.addr,
            "--service",
            "5",
            "--region",
            &id,
            "--key",
            &key,
            "--offset",
            offset,
            "--len",
            len,
        ];
        spawn(a.pony(&args)).finish()
    };
    let out = read(key.wrapping_add(1).to_string(), "0", "16");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with("pony: ") && err.contains("wrong --key"), "{err}");
    assert!(out.stdout.is_empty());
    let out = read(key.to_string(), "4000", "200");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("outside region"), "{}", stderr(&out));
    std::fs::remove_dir_all(dir).unwrap();
}
