//! The workloads. Every request's status is checked, and the headers and bodies that carry
//! meaning (digests, lengths, tag lists) are verified: a fast wrong answer is a failure.

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use reqwest::{Client, Method, Response, StatusCode};
use sha2::Digest as _;
use std::borrow::Cow;
use std::time::{Duration, Instant};

/// Deterministic pseudo-random bytes (splitmix64): the same inputs for both registries.
pub fn bytes(seed: u64, len: usize) -> Bytes {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

/// A blob with its digest, computed once before any timing.
#[derive(Clone)]
pub struct Blob {
    pub data: Bytes,
    pub digest: String,
}

pub fn blobs(seed: u64, count: usize, size: usize) -> Vec<Blob> {
    (0..count)
        .map(|i| {
            let data = bytes(seed * 1_000_000 + i as u64, size);
            let digest = sha256(&data);
            Blob { data, digest }
        })
        .collect()
}

#[derive(Clone)]
pub struct Ctx {
    pub client: Client,
    pub base: String,
}

async fn expect(r: Response, status: StatusCode, what: &str) -> Result<Response> {
    if r.status() != status {
        let got = r.status();
        let body = r.text().await.unwrap_or_default();
        bail!(
            "{what}: expected {status}, got {got}: {}",
            body.chars().take(300).collect::<String>()
        );
    }
    Ok(r)
}

fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

impl Ctx {
    fn url(&self, location: &str) -> String {
        if location.starts_with("http") {
            location.to_owned()
        } else {
            format!("{}{location}", self.base)
        }
    }

    fn with_digest(location: &str, digest: &str) -> String {
        let sep = if location.contains('?') { '&' } else { '?' };
        format!("{location}{sep}digest={digest}")
    }

    async fn start_upload(&self, repo: &str) -> Result<String> {
        let r = self
            .client
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .send()
            .await?;
        let r = expect(r, StatusCode::ACCEPTED, "POST upload").await?;
        Ok(self.url(&header(&r, "location")))
    }

    /// POST, then PUT with the whole body.
    pub async fn push_monolithic(&self, repo: &str, blob: &Blob) -> Result<()> {
        let loc = self.start_upload(repo).await?;
        let r = self
            .client
            .put(Ctx::with_digest(&loc, &blob.digest))
            .header("content-type", "application/octet-stream")
            .body(blob.data.clone())
            .send()
            .await?;
        let r = expect(r, StatusCode::CREATED, "PUT blob").await?;
        ensure!(
            header(&r, "docker-content-digest") == blob.digest,
            "PUT blob: wrong Docker-Content-Digest"
        );
        Ok(())
    }

    /// POST, PATCHes of `chunk` bytes with `Content-Range`, then an empty PUT.
    pub async fn push_chunked(&self, repo: &str, blob: &Blob, chunk: usize) -> Result<()> {
        let mut loc = self.start_upload(repo).await?;
        let mut start = 0;
        while start < blob.data.len() {
            let end = (start + chunk).min(blob.data.len());
            let r = self
                .client
                .patch(&loc)
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("{start}-{}", end - 1))
                .body(blob.data.slice(start..end))
                .send()
                .await?;
            let r = expect(r, StatusCode::ACCEPTED, "PATCH").await?;
            ensure!(
                header(&r, "range") == format!("0-{}", end - 1),
                "PATCH: wrong Range {}",
                header(&r, "range")
            );
            loc = self.url(&header(&r, "location"));
            start = end;
        }
        let r = self
            .client
            .put(Ctx::with_digest(&loc, &blob.digest))
            .send()
            .await?;
        expect(r, StatusCode::CREATED, "PUT chunked").await?;
        Ok(())
    }

    pub async fn put_manifest(&self, repo: &str, reference: &str, body: &Bytes) -> Result<String> {
        let r = self
            .client
            .put(format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body.clone())
            .send()
            .await?;
        let r = expect(r, StatusCode::CREATED, "PUT manifest").await?;
        Ok(header(&r, "docker-content-digest"))
    }

    /// HEADs a blob, as a client does before pushing it: there or not, either is fine.
    pub async fn head_blob(&self, repo: &str, blob: &Blob) -> Result<bool> {
        let r = self
            .client
            .head(format!("{}/v2/{repo}/blobs/{}", self.base, blob.digest))
            .send()
            .await?;
        match r.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            other => anyhow::bail!("HEAD blob: {other}"),
        }
    }

    /// GETs a manifest by tag or digest, as an OCI image manifest.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Bytes> {
        let r = self
            .client
            .get(format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await?;
        let r = expect(r, StatusCode::OK, "GET manifest").await?;
        Ok(r.bytes().await?)
    }

    /// GETs a blob and checks its length, and its digest when `verify`.
    pub async fn pull(&self, repo: &str, blob: &Blob, verify: bool) -> Result<u64> {
        let r = self
            .client
            .get(format!("{}/v2/{repo}/blobs/{}", self.base, blob.digest))
            .send()
            .await?;
        let r = expect(r, StatusCode::OK, "GET blob").await?;
        let mut stream = r.bytes_stream();
        let mut n = 0u64;
        let mut h = sha2::Sha256::new();
        while let Some(c) = stream.next().await {
            let c = c?;
            n += c.len() as u64;
            if verify {
                h.update(&c);
            }
        }
        ensure!(
            n == blob.data.len() as u64,
            "GET blob: {n} bytes, expected {}",
            blob.data.len()
        );
        if verify {
            ensure!(
                format!("sha256:{}", hex::encode(h.finalize())) == blob.digest,
                "GET blob: digest mismatch"
            );
        }
        Ok(n)
    }

    pub async fn mount(&self, repo: &str, from: &str, digest: &str) -> Result<()> {
        let r = self
            .client
            .post(format!(
                "{}/v2/{repo}/blobs/uploads/?mount={digest}&from={from}",
                self.base
            ))
            .send()
            .await?;
        expect(r, StatusCode::CREATED, "mount").await?;
        Ok(())
    }
}

/// Runs `f` over `items` with `parallel` in flight; fails on the first error. Each request is
/// a task of its own, so the clients' work (receiving, hashing) spreads over the runtime's
/// threads as independent clients' would: polled together in one task, 64 clients shared one
/// core and their hashing, not the registry, set the pace.
pub async fn parallel<T, F, Fut>(items: Vec<T>, parallel: usize, f: F) -> Result<Duration>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let t0 = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for item in items {
        if running.len() >= parallel.max(1) {
            if let Some(done) = running.join_next().await {
                done.context("task")??;
            }
        }
        running.spawn(f(item));
    }
    while let Some(done) = running.join_next().await {
        done.context("task")??;
    }
    Ok(t0.elapsed())
}

/// An OCI manifest over a config and layers, as bytes.
pub fn manifest(config: &Blob, layers: &[Blob]) -> Bytes {
    image_manifest(config, layers, None)
}

/// An image manifest over `config` and `layers` made distinct by the annotation `n`.
pub fn numbered_manifest(config: &Blob, layers: &[Blob], n: usize) -> Bytes {
    image_manifest(config, layers, Some(n))
}

fn image_manifest(config: &Blob, layers: &[Blob], n: Option<usize>) -> Bytes {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| serde_json::json!({"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":l.digest,"size":l.data.len()}))
        .collect();
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType":"application/vnd.oci.image.config.v1+json","digest":config.digest,"size":config.data.len()},
        "layers": layers,
    });
    if let Some(n) = n {
        m["annotations"] = serde_json::json!({"org.example.n": n.to_string()});
    }
    Bytes::from(serde_json::to_vec(&m).unwrap_or_default())
}

/// Latency figures of a request loop.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Rate {
    pub requests: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// `parallel` tasks send `method` to `path` for `duration`, checking status and digest.
pub async fn hammer(
    ctx: &Ctx,
    method: Method,
    path: &str,
    digest: &str,
    parallel: usize,
    duration: Duration,
) -> Result<Rate> {
    let url = format!("{}{path}", ctx.base);
    let t0 = Instant::now();
    let tasks = (0..parallel).map(|_| {
        let client = ctx.client.clone();
        let url = url.clone();
        let method = method.clone();
        let digest = digest.to_owned();
        tokio::spawn(async move {
            let mut lat = Vec::new();
            while t0.elapsed() < duration {
                let s = Instant::now();
                let r = client
                    .request(method.clone(), &url)
                    .header("accept", "application/vnd.oci.image.manifest.v1+json")
                    .send()
                    .await?;
                ensure!(
                    r.status() == StatusCode::OK,
                    "{method} manifest: {}",
                    r.status()
                );
                ensure!(
                    header(&r, "docker-content-digest") == digest,
                    "{method} manifest: wrong digest"
                );
                let body = r.bytes().await?;
                if method == Method::GET {
                    ensure!(
                        sha256(&body) == digest,
                        "GET manifest: body does not match its digest"
                    );
                }
                lat.push(s.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, anyhow::Error>(lat)
        })
    });
    let mut all = Vec::new();
    for t in futures::future::join_all(tasks).await {
        all.extend(t.context("task")??);
    }
    let secs = t0.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok(Rate {
        requests: all.len() as u64,
        per_second: all.len() as f64 / secs,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    })
}

/// A tag list's or the catalog's body. The names are borrowed from the body (a name with
/// escapes in it is the rare one copied): the harness's own parsing of a 10,000-tag list
/// would otherwise be half of what reading it measures.
#[derive(serde::Deserialize)]
struct ListBody<'a> {
    #[serde(borrow)]
    tags: Option<Vec<Name<'a>>>,
    #[serde(borrow)]
    repositories: Option<Vec<Name<'a>>>,
}

/// One listed name. A newtype, because serde borrows a `Cow` only where the attribute is on
/// the `Cow` itself: inside a `Vec` it would copy every name.
#[derive(serde::Deserialize)]
struct Name<'a>(#[serde(borrow)] Cow<'a, str>);

/// Follows `Link` headers from `first` until the last page; returns how many of the names
/// listed under `key` satisfy `keep`, and the pages.
pub async fn walk(
    ctx: &Ctx,
    first: &str,
    key: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<(usize, usize)> {
    let mut next = Some(format!("{}{first}", ctx.base));
    let mut kept = 0;
    let mut pages = 0;
    while let Some(url) = next.take() {
        let r = ctx.client.get(&url).send().await?;
        let r = expect(r, StatusCode::OK, "list").await?;
        let link = header(&r, "link");
        let body = r.bytes().await?;
        let v: ListBody = serde_json::from_slice(&body).context("list body")?;
        let names = match key {
            "tags" => v.tags,
            _ => v.repositories,
        };
        kept += names
            .context("list body")?
            .iter()
            .filter(|n| keep(&n.0))
            .count();
        pages += 1;
        if let Some(target) = link.strip_prefix('<').and_then(|l| l.split('>').next()) {
            next = Some(ctx.url(target));
        }
    }
    Ok((kept, pages))
}
