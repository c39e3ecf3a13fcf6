//! What the crash test knows: every operation the registry acknowledged, every one it was
//! still answering when it was killed, and the sessions left open; plus the seeded random
//! source and the HTTP helpers that tell a request cut by the kill from a real failure.
//!
//! The ledger lives in the test's memory, never on the registry's disk, so that what the
//! registry promised can be compared with what it serves after a restart.

use reqwest::header::HeaderMap;
use reqwest::{Client, RequestBuilder, StatusCode};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// What a manifest GET accepts: both kinds this test pushes.
pub const ACCEPT: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// splitmix64: small, seedable, and the same on every machine, so a failing run's choices can
/// be replayed from its seed (the interleaving of threads, of course, cannot).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator for one part of the run (a task in a cycle), independent of the others.
    pub fn derive(seed: u64, a: u64, b: u64) -> Rng {
        let mut r = Rng(seed
            ^ a.wrapping_mul(0xA076_1D64_78BD_642F)
            ^ b.wrapping_mul(0xE703_7ED1_A0B4_28DB));
        r.next();
        r
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            Some(&items[self.range(0, items.len() as u64 - 1) as usize])
        }
    }

    /// A blob size: mostly small, some medium (large enough for direct I/O), a few of up to
    /// 2 MiB, so that kills land in the middle of bodies and writes while the whole run
    /// stays within a few hundred MB of disk.
    pub fn blob_size(&mut self) -> usize {
        match self.range(0, 99) {
            0..=54 => self.range(100, 8 << 10),
            55..=91 => self.range(8 << 10, 160 << 10),
            _ => self.range(160 << 10, 2 << 20),
        }
        .try_into()
        .expect("size fits")
    }
}

/// A blob the registry acknowledged (201) in a repository.
#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: String,
    pub len: u64,
}

/// A manifest the registry acknowledged, with its bytes (small) so that a tag can be moved
/// back to it.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: String,
    pub media_type: &'static str,
    pub body: Arc<Vec<u8>>,
}

/// The request a session was waiting on when the registry died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// No request in flight: the session was between requests, or abandoned on purpose.
    Nothing,
    /// A PATCH of this many bytes: all or none of them may have been kept.
    Patch(u64),
    /// The final PUT: the blob may have been committed (session gone, blob whole) or not
    /// (session where the last acknowledged PATCH left it).
    Finish,
}

/// An upload session left open: interrupted by a kill, or abandoned on purpose.
#[derive(Debug, Clone)]
pub struct Session {
    /// The upload URL's path, as the last response gave it.
    pub location: String,
    pub data: Arc<Vec<u8>>,
    pub digest: String,
    /// The end of the last acknowledged PATCH (the `Range` it answered, plus one).
    pub acked: u64,
    pub pending: Pending,
}

/// A tag: the manifest its last acknowledged PUT named, and the one a PUT in flight at the
/// kill named (which may or may not have landed).
#[derive(Debug, Clone, Default)]
pub struct TagState {
    pub acked: Option<String>,
    pub in_flight: Option<String>,
}

/// One task's repository: only that task writes to it, so every write to it is ordered.
#[derive(Debug, Default)]
pub struct Repo {
    pub name: String,
    /// Acknowledged and seen whole after at least one restart.
    pub blobs: Vec<Blob>,
    /// Acknowledged since the last restart.
    pub fresh_blobs: Vec<Blob>,
    /// Pushed while the registry died, the answer never seen: absent or whole afterwards.
    pub unsure_blobs: Vec<Blob>,
    pub manifests: Vec<Manifest>,
    pub fresh_manifests: Vec<Manifest>,
    pub unsure_manifests: Vec<Manifest>,
    pub tags: BTreeMap<String, TagState>,
    pub sessions: Vec<Session>,
    /// Makes every manifest of the repository unique.
    pub counter: u64,
}

impl Repo {
    pub fn new(name: String) -> Repo {
        Repo {
            name,
            ..Repo::default()
        }
    }

    /// Every blob acknowledged so far.
    pub fn acked_blobs(&self) -> Vec<Blob> {
        self.blobs
            .iter()
            .chain(&self.fresh_blobs)
            .cloned()
            .collect()
    }

    pub fn acked_manifests(&self) -> Vec<Manifest> {
        self.manifests
            .iter()
            .chain(&self.fresh_manifests)
            .cloned()
            .collect()
    }
}

/// Blobs with the same bytes pushed by every task, so that commits of one digest race each
/// other, and a shared repository they are all pushed into.
pub struct Pool {
    pub data: Vec<Arc<Vec<u8>>>,
    pub digests: Vec<String>,
    pub repo: String,
    /// Indexes of the pool blobs acknowledged in the shared repository.
    pub acked: Mutex<BTreeSet<usize>>,
}

/// Figures for the summary line.
#[derive(Debug, Default)]
pub struct Tally {
    pub acked_ops: AtomicUsize,
    pub checked: AtomicUsize,
    pub resumed: AtomicUsize,
}

impl Tally {
    pub fn add(counter: &AtomicUsize, n: usize) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What the tasks of one cycle share.
pub struct Ctx {
    pub client: Client,
    pub base: String,
    /// Set just before the SIGKILL: a transport error after it is the kill's doing, before
    /// it a failure of the registry.
    pub killed: AtomicBool,
    /// Requests sent and not yet fully answered.
    pub in_flight: AtomicUsize,
    pub pool: Arc<Pool>,
    pub tally: Arc<Tally>,
}

/// Why a task stopped early.
#[derive(Debug)]
pub enum Stop {
    /// A request was cut by the kill.
    Cut,
    /// The registry broke a promise.
    Fail(String),
}

pub type Step<T = ()> = Result<T, Stop>;

/// A whole answer: status, headers, body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    /// Fails unless the status is `want`.
    pub fn expect(&self, want: u16, what: &str) -> Step {
        if self.status.as_u16() == want {
            Ok(())
        } else {
            Err(Stop::Fail(format!(
                "{what}: expected {want}, got {} {}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(400)])
            )))
        }
    }
}

impl Ctx {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request and reads the whole answer. A transport error is the kill's doing
    /// once the kill has begun, and a failure before.
    pub async fn fetch(&self, req: RequestBuilder) -> Step<Answer> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let result = async {
            let r = req.send().await?;
            let (status, headers) = (r.status(), r.headers().clone());
            let body = r.bytes().await?;
            Ok::<_, reqwest::Error>(Answer {
                status,
                headers,
                body,
            })
        }
        .await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        result.map_err(|e| {
            if self.killed.load(Ordering::SeqCst) {
                Stop::Cut
            } else {
                Stop::Fail(format!("transport error before the kill: {e:?}"))
            }
        })
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// The offset a `Range: 0-N` header reports: N + 1, and 0 for `0-0` (what an empty session
/// answers; the test never leaves a session at one byte, so the two cannot be confused).
pub fn range_offset(range: &str) -> Option<u64> {
    let end: u64 = range.strip_prefix("0-")?.parse().ok()?;
    Some(if end == 0 { 0 } else { end + 1 })
}

/// `path` with `?digest=` (or `&digest=`) appended.
pub fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// The path part of a `Location` header, which may be absolute.
pub fn location_path(location: &str) -> String {
    match location.split_once("://") {
        Some((_, rest)) => rest
            .find('/')
            .map(|i| rest[i..].to_owned())
            .unwrap_or_default(),
        None => location.to_owned(),
    }
}
