//! The `berth serve` command as an operator meets it: defaults, bad configuration, a port in
//! use, signals, metrics and log formats.

use crate::e2e::harness::TestRegistry;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn berth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_berth"))
}

/// Runs `berth` to completion and returns (success, stderr).
fn run_to_end(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run berth");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        (
            "unknown.toml",
            "[server]\nlisten = \"127.0.0.1:0\"\nbogus = true\n",
        ),
        ("syntax.toml", "[server\n"),
        ("addr.toml", "[server]\nlisten = \"not-an-address\"\n"),
        ("db.toml", "[database]\nurl = \"mysql://x\"\n"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let (ok, err) = run_to_end(berth().arg("serve").arg("--config").arg(&path));
        assert!(!ok, "{name} accepted");
        assert!(err.starts_with("berth: "), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
    let (ok, err) = run_to_end(berth().args(["serve", "--config", "/nonexistent/berth.toml"]));
    assert!(!ok);
    assert!(err.contains("/nonexistent/berth.toml"), "{err}");
}

#[test]
fn port_in_use_is_one_clear_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = run_to_end(
        berth()
            .args(["serve", "--listen", &addr, "--data"])
            .arg(dir.path()),
    );
    assert!(!ok);
    assert!(err.starts_with("berth: cannot listen on"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// Leases of one process are everyone's only if no other process serves the same database:
/// a second server on a data directory in use refuses to start, in one line.
#[tokio::test]
async fn a_second_server_on_the_same_data_refuses_to_start() {
    let first = crate::e2e::harness::TestRegistry::spawn();
    let (ok, err) = run_to_end(
        berth()
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(&first.data),
    );
    assert!(!ok);
    assert!(err.contains("in use by another process"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(first.get("/v2/").await.status(), 200, "the first goes on");
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = berth()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("127.0.0.1:"));
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn zero_config_serves_on_5000_under_berth_data() {
    if std::net::TcpListener::bind("127.0.0.1:5000").is_err() {
        eprintln!("skipped: port 5000 is in use on this machine");
        return;
    }
    let cwd = tempfile::tempdir().unwrap();
    let mut child = berth()
        .arg("serve")
        .current_dir(cwd.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(line.trim(), "berth listening on http://127.0.0.1:5000");
    assert!(cwd.path().join("berth-data/meta.db").exists());
    assert!(err.contains("no authentication is configured"), "{err}");
}

#[tokio::test]
async fn metrics_count_requests_and_bytes() {
    let reg = TestRegistry::spawn();
    reg.push_blob("m", &[7u8; 1000]).await;
    reg.get("/v2/").await;
    let text = reg.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains("berth_http_requests_total{route=\"base\",method=\"GET\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("berth_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("berth_bytes_received_total 1000"), "{text}");
    assert!(text.contains("berth_uploads_in_flight 0"), "{text}");
}

#[test]
fn json_logs_one_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = berth()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_owned();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    use std::io::Write;
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let access: Vec<serde_json::Value> = err
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("not JSON: {l}: {e}"))
        })
        .filter(|v| v["target"] == "berth::access")
        .collect();
    assert_eq!(access.len(), 1, "{err}");
    assert_eq!(access[0]["status"], 200);
    assert_eq!(access[0]["path"], "/v2/");
}
