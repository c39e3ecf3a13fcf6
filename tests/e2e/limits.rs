//! Resource limits: a client that sends its headers or its body too slowly is cut off, the
//! connection over the cap gets 503 with `Retry-After`, a client opening upload sessions in
//! a loop gets 429 — and through all of it the registry keeps serving everyone else.

use crate::e2e::harness::{error_code, header, sha256, TestRegistry};
use crate::e2e::images::bytes;
use reqwest::{Method, StatusCode};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A registry with `[limits]` set as given.
fn spawn(limits: &str) -> (TestRegistry, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, format!("[limits]\n{limits}\n")).unwrap();
    let reg = TestRegistry::spawn_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    (reg, dir)
}

/// Reads until the server closes the connection; returns what it sent and how long it took.
fn read_to_close(s: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let start = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the server kept the connection open: {e}"),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
}

#[tokio::test]
async fn slow_headers_and_stalled_bodies_are_cut_off() {
    let (reg, _dir) = spawn("header_timeout_secs = 1\nbody_timeout_secs = 1");
    // Headers that never end: the connection is closed after the header timeout.
    let mut slow = TcpStream::connect(&reg.addr).unwrap();
    slow.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
        .unwrap();
    // Meanwhile everyone else is served.
    assert_eq!(reg.get("/v2/").await.status(), StatusCode::OK);
    let (_, took) = read_to_close(&mut slow, Duration::from_secs(10));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // A connection that never sends a byte, and an HTTP/2 one that goes quiet after its
    // preface: both closed once nothing has happened on them for the timeout.
    let mut mute = TcpStream::connect(&reg.addr).unwrap();
    let (_, took) = read_to_close(&mut mute, Duration::from_secs(10));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let mut h2 = TcpStream::connect(&reg.addr).unwrap();
    // The client preface and an empty SETTINGS frame.
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    let (_, took) = read_to_close(&mut h2, Duration::from_secs(10));
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // Idle connections are closed after the header timeout too: no pooling from here on,
    // so no request races that close.
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    // A PATCH that sends 3 bytes of the 1000 it announced, then nothing.
    let r = c
        .post(reg.url("/v2/slow/body/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = header(&r, "location");
    let mut s = TcpStream::connect(&reg.addr).unwrap();
    write!(
        s,
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\nabc"
    )
    .unwrap();
    let (answer, took) = read_to_close(&mut s, Duration::from_secs(10));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    // The session holds nothing of the cut request and takes the blob whole.
    let r = c.get(reg.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-0");
    let data = bytes(5, 5000);
    let r = c
        .put(reg.url(&format!("{loc}?digest={}", sha256(&data))))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn the_connection_over_the_cap_gets_503_with_retry_after() {
    let (reg, _dir) = spawn("max_connections = 4");
    // Four connections, each with a request answered, kept open.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(&reg.addr).unwrap();
        s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    let c = reqwest::Client::new();
    let r = c.get(reg.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&r, "retry-after"), "1");
    assert_eq!(error_code(r).await, "TOOMANYREQUESTS");
    // Room again once they close.
    drop(held);
    let mut ok = false;
    for _ in 0..50 {
        let c = reqwest::Client::new();
        if c.get(reg.url("/v2/")).send().await.unwrap().status() == StatusCode::OK {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "connections closed by the client were never released");
}

#[tokio::test]
async fn a_client_opening_sessions_in_a_loop_gets_429() {
    let (reg, _dir) = spawn("uploads_per_client_burst = 20\nuploads_per_client_per_sec = 0.001");
    for i in 0..20 {
        let r = reg
            .req(Method::POST, "/v2/loop/x/blobs/uploads/")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "session {i}");
    }
    let r = reg
        .req(Method::POST, "/v2/loop/x/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&r, "retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(error_code(r).await, "TOOMANYREQUESTS");
    // A monolithic push opens no session: it still goes through, and pulls are served.
    let data = bytes(6, 1000);
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/loop/x/blobs/uploads/?digest={}", sha256(&data)),
        )
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .get(&format!("/v2/loop/x/blobs/{}", sha256(&data)))
        .await;
    assert_eq!(r.bytes().await.unwrap().to_vec(), data);
}

/// Open descriptors and resident memory (KiB) of process `pid`.
fn fds_and_rss(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    (fds, rss)
}

#[tokio::test]
async fn a_flood_of_connections_and_sessions_exhausts_neither_descriptors_nor_memory() {
    let (reg, _dir) = spawn(
        "max_connections = 64\nuploads_per_client_burst = 1000\nuploads_per_client_per_sec = 0.001",
    );
    let (fds0, rss0) = fds_and_rss(reg.pid());
    // 2,000 connections opened and held, each with half a request sent: this process needs
    // the descriptors too (a default soft limit is often 1,024).
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let wanted = 2000.min(lim.rlim_cur.saturating_sub(200) as usize);
    let mut held = Vec::new();
    for _ in 0..wanted {
        if let Ok(mut s) = TcpStream::connect(&reg.addr) {
            let _ = s.write_all(b"POST /v2/flood/x/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n");
            held.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (fds, rss) = fds_and_rss(reg.pid());
    assert!(
        wanted >= 500 && held.len() == wanted,
        "only {} of {wanted} connections opened",
        held.len()
    );
    println!(
        "{} connections held: server descriptors {fds0} -> {fds}, RSS {rss0} -> {rss} KiB",
        held.len()
    );
    // The cap, plus refusals still draining, plus the server's own files.
    assert!(
        fds <= fds0 + 64 + 256 + 8,
        "{fds} descriptors open (from {fds0})"
    );
    // Thousands of upload sessions from one address: the burst, then 429.
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = reqwest::Client::new();
    let (mut opened, mut refused) = (0, 0);
    for _ in 0..3000 {
        let r = c
            .post(reg.url("/v2/flood/x/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::ACCEPTED => opened += 1,
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            s => panic!("session POST answered {s}"),
        }
    }
    assert_eq!(
        (opened, refused),
        (1000, 2000),
        "sessions opened and refused"
    );
    let (_, rss_after) = fds_and_rss(reg.pid());
    println!("3000 session POSTs: {opened} opened, {refused} refused; RSS {rss_after} KiB");
    assert!(
        rss.max(rss_after) < rss0 + 64 * 1024,
        "resident memory grew from {rss0} KiB to {} KiB",
        rss.max(rss_after)
    );
    assert_eq!(reg.get("/v2/").await.status(), StatusCode::OK);
}
