//! The test harness: a real `berth serve` process with its own data directory, killed on
//! drop, and a few HTTP helpers that every test module shares.

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub struct TestRegistry {
    child: Child,
    pub addr: String,
    pub data: PathBuf,
    // Held so the directory outlives the process; None when the caller owns it.
    _dir: Option<tempfile::TempDir>,
    pub client: Client,
    /// `http` or `https`, as the server announced itself.
    pub scheme: String,
    /// Basic credentials every request of [`TestRegistry::req`] carries.
    pub basic: Option<(String, String)>,
}

impl TestRegistry {
    /// A fresh registry on an empty data directory.
    pub fn spawn() -> TestRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_path_buf();
        let mut r = TestRegistry::spawn_with(&data, &[]);
        r._dir = Some(dir);
        r
    }

    /// A registry on `data` with extra command-line arguments.
    pub fn spawn_with(data: &Path, args: &[&str]) -> TestRegistry {
        let mut all = vec!["--data", data.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        TestRegistry::spawn_in(data, &all)
    }

    /// A registry started with `args` (its whole configuration), logging into `dir`.
    pub fn spawn_in(data: &Path, args: &[&str]) -> TestRegistry {
        std::fs::create_dir_all(data).expect("data dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("server.log"))
            .expect("server log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start berth");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read first line");
        let url = line.trim().rsplit(' ').next().expect("address");
        let (scheme, addr) = url.split_once("://").expect("scheme://address");
        let (scheme, addr) = (scheme.to_owned(), addr.to_owned());
        assert!(
            addr.starts_with("127.0.0.1:"),
            "unexpected first line {line:?}"
        );
        TestRegistry {
            child,
            addr,
            data: data.to_path_buf(),
            _dir: None,
            client: Client::new(),
            scheme,
            basic: None,
        }
    }

    /// The server's log (its standard error).
    pub fn log_path(&self) -> PathBuf {
        self.data.join("server.log")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process at once (SIGKILL) and waits for it, keeping the data directory.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Hands over the data directory (so a restarted server can use it) and stops.
    pub fn into_data(mut self) -> tempfile::TempDir {
        self.kill();
        self._dir.take().expect("owned data dir")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let r = self.client.request(method, self.url(path));
        match &self.basic {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.req(Method::GET, path).send().await.expect("GET")
    }

    /// Pushes a blob monolithically (POST then PUT) and returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        let r = self
            .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let loc = header(&r, "location");
        let r = self
            .req(Method::PUT, &format!("{loc}?digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .expect("PUT");
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap_or_default()
        );
        digest
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("PUT manifest")
    }

    /// Sends `bytes` to the session at `location` as the chunk starting at `start`.
    pub async fn patch_chunk(&self, location: &str, start: usize, bytes: &[u8]) -> Response {
        let range = format!("{start}-{}", start + bytes.len() - 1);
        self.req(Method::PATCH, location)
            .header("content-type", "application/octet-stream")
            .header("content-range", range)
            .body(bytes.to_vec())
            .send()
            .await
            .expect("PATCH")
    }

    /// Finishes the session at `location` with `digest` and no body.
    pub async fn finish_upload(&self, location: &str, digest: &str) -> Response {
        let sep = if location.contains('?') { '&' } else { '?' };
        self.req(Method::PUT, &format!("{location}{sep}digest={digest}"))
            .send()
            .await
            .expect("PUT")
    }

    /// Pushes every blob of an image and its manifest under `reference`.
    pub async fn push_image(
        &self,
        repo: &str,
        reference: &str,
        image: &crate::e2e::images::Image,
    ) -> String {
        self.push_blob(repo, &image.config).await;
        for l in &image.layers {
            self.push_blob(repo, l).await;
        }
        let r = self
            .put_manifest(repo, reference, OCI_MANIFEST, &image.manifest)
            .await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap_or_default()
        );
        header(&r, "docker-content-digest")
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

pub fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Reads a response's JSON error body and returns its first code.
pub async fn error_code(r: Response) -> String {
    let v: serde_json::Value = r.json().await.expect("JSON error body");
    v["errors"][0]["code"]
        .as_str()
        .expect("errors[0].code")
        .to_owned()
}

/// Asserts a status and spec error code.
pub async fn expect_error(r: Response, status: u16, code: &str) {
    assert_eq!(r.status().as_u16(), status, "status for expected {code}");
    assert_eq!(
        r.headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("")),
        Some("application/json")
    );
    assert_eq!(error_code(r).await, code);
}

/// Sends one request over a raw socket, byte for byte (no client normalises the path), and
/// returns the status and body.
pub fn raw_request(addr: &str, request_line_and_headers: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let mut req = request_line_and_headers.as_bytes().to_vec();
    req.extend_from_slice(body);
    s.write_all(&req).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// The URL of a `Link: <URL>; rel="next"` header value.
pub fn link_target(link: &str) -> String {
    link.trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Regular files under `dir`, recursively.
pub fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}
