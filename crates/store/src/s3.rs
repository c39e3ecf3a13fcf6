//! The S3-compatible blob store, on `object_store`: for several nodes sharing one bucket.
//!
//! Keys under the configured prefix:
//!
//! ```text
//! blobs/<algorithm>/<hex>         committed blobs, immutable
//! uploads/<id>/data               the multipart upload of a session (complete only at commit)
//! uploads/<id>/tail-<length>-<n>  the bytes past the last full part (a new name per append)
//! ```
//!
//! An upload maps onto an S3 multipart upload. S3 wants parts of at least 5 MiB (but the
//! last), and a PATCH may be smaller: the bytes past the last full part are kept in the
//! bucket as a tail object, never in a node's memory across requests, and the next append
//! starts its next part with them. The token holds the multipart id, the parts' ETags and
//! the tail's name, unique to the append that wrote it, so a new tail never overwrites the
//! one an older token names (an append is all or nothing: until the caller saves its
//! token, the previous one still describes the upload). Tails superseded by a saved token
//! are deleted by the next append. A commit completes the multipart
//! upload (its tail copied into the last part inside S3) and copies the object under its
//! digest inside S3: a blob's bytes go up once, whatever the sizes of its chunks.

use crate::{
    BlobEntry, BlobRead, BlobStore, ByteStream, Durability, ReadAs, Result, StoreError, UploadToken,
};
use async_trait::async_trait;
use berth_oci::{Digest, ErrorKind, UploadId};
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Bytes in each part but the last: above S3's floor of 5 MiB, and 10,000 parts make 80 GB.
const PART: usize = 8 << 20;
/// S3's smallest part but the last.
pub const MIN_PART: usize = 5 << 20;
/// The largest part the store makes: a part is held in memory while it is sent.
const MAX_PART: usize = 64 << 20;
/// How long a presigned blob URL stays good.
const URL_LIFETIME: Duration = Duration::from_secs(20 * 60);

/// Where the store is and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub bucket: String,
    /// A key prefix under which everything is kept (none: the bucket's root).
    pub prefix: Option<String>,
    pub region: Option<String>,
    /// Any S3-compatible server; `None`: AWS.
    pub endpoint: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as most S3-compatible servers want.
    pub path_style: bool,
    /// Credentials; `None`: the usual AWS environment, profile or role.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Whether blob reads may answer a presigned URL instead of the bytes.
    pub redirect: bool,
    /// Bytes in each part but the last (`None`: 8 MiB; at least [`MIN_PART`]).
    pub part_size: Option<usize>,
}

#[derive(Debug)]
pub struct S3Store {
    s3: Arc<AmazonS3>,
    /// For the one request `object_store` does not make: a part copied from an object.
    http: reqwest::Client,
    bucket: String,
    prefix: Path,
    redirect: bool,
    part: usize,
}

/// The backend's own progress of an upload, the opaque part of its token.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Progress {
    /// The multipart upload, once a first part went up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    multipart: Option<String>,
    /// The ETags of the full parts, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    parts: Vec<String>,
    /// Bytes in each full part (a session keeps the size it started with).
    #[serde(default)]
    part: u64,
    /// Bytes in the tail object (past the last full part), and its name.
    #[serde(default)]
    tail: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    tail_name: String,
    /// Tails this token superseded, which an older token still named: deleted once a
    /// token naming none of them is saved (the next append), or with the upload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    old_tails: Vec<String>,
}

impl Progress {
    /// The progress `at` carries, checked against its length; a new upload's parts are
    /// `part` bytes.
    fn of(at: &UploadToken, part: usize) -> Result<Progress> {
        if at.progress.is_empty() {
            let p = Progress {
                part: part as u64,
                ..Progress::default()
            };
            return p.holding(at.len);
        }
        Progress::parse(at)?.holding(at.len)
    }

    /// The progress `at` carries, unchecked but for its part size.
    fn parse(at: &UploadToken) -> Result<Progress> {
        let corrupt = |message: String| StoreError::Backend {
            kind: ErrorKind::Corrupt,
            message,
        };
        let p: Progress = serde_json::from_slice(&at.progress)
            .map_err(|e| corrupt(format!("upload progress: {e}")))?;
        if p.part < MIN_PART as u64 {
            return Err(corrupt(format!(
                "upload progress: parts of {} bytes",
                p.part
            )));
        }
        Ok(p)
    }

    /// This progress if its parts and tail hold `len` bytes, else `Offset`.
    fn holding(self, len: u64) -> Result<Progress> {
        let held = self.parts.len() as u64 * self.part + self.tail;
        if held != len {
            return Err(StoreError::Offset {
                expected: len,
                actual: held,
            });
        }
        Ok(self)
    }

    fn token(&self, len: u64) -> UploadToken {
        UploadToken {
            len,
            progress: serde_json::to_vec(self).unwrap_or_default(),
        }
    }

    fn part_ids(&self) -> Vec<PartId> {
        let id = |e: &String| PartId {
            content_id: e.clone(),
        };
        self.parts.iter().map(id).collect()
    }
}

/// What S3 answers to an `UploadPartCopy`.
#[derive(serde::Deserialize)]
struct CopyPartResult {
    #[serde(rename = "ETag")]
    e_tag: String,
}

/// An `object_store` failure as a store error of the right kind.
fn failed(e: object_store::Error) -> StoreError {
    use object_store::Error as E;
    let kind = match &e {
        E::NotFound { .. } => return StoreError::NotFound,
        E::AlreadyExists { .. } => ErrorKind::AlreadyExists,
        E::Precondition { .. } | E::NotModified { .. } => ErrorKind::Conflict,
        // `object_store` retried what a retry may cure and names no status here but in its
        // message: a 4xx the server answered is for good, anything else (the server out of
        // reach, a 5xx) may pass.
        E::Generic { source, .. } if source.to_string().contains("status code: 4") => {
            ErrorKind::Other
        }
        E::Generic { .. } => ErrorKind::Unavailable,
        _ => ErrorKind::Other,
    };
    StoreError::Backend {
        kind,
        message: e.to_string(),
    }
}

impl S3Store {
    /// A store on the bucket `opts` names. Nothing is sent until it is used.
    pub fn open(opts: &S3Options) -> Result<S3Store> {
        let prefix = opts.prefix.clone().unwrap_or_default();
        let plain = |c: char| c.is_ascii_alphanumeric() || "._-/".contains(c);
        if !prefix.chars().all(plain) {
            // Keys travel unencoded in a copy's source header.
            return Err(StoreError::Backend {
                kind: ErrorKind::Other,
                message: format!("prefix {prefix:?}: letters, digits, '.', '_', '-' and '/' only"),
            });
        }
        // A client waits on the request meanwhile, and retries the whole of it anyway: a few
        // quick retries here, not `object_store`'s three minutes.
        let retry = object_store::RetryConfig {
            max_retries: 4,
            retry_timeout: Duration::from_secs(15),
            ..object_store::RetryConfig::default()
        };
        let mut b = AmazonS3Builder::from_env()
            .with_retry(retry)
            .with_bucket_name(&opts.bucket)
            .with_virtual_hosted_style_request(!opts.path_style);
        if let Some(region) = &opts.region {
            b = b.with_region(region);
        }
        if let Some(endpoint) = &opts.endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let (Some(id), Some(secret)) = (&opts.access_key_id, &opts.secret_access_key) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        let s3 = b.build().map_err(failed)?;
        Ok(S3Store {
            s3: Arc::new(s3),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(120))
                .build()
                .map_err(|e| StoreError::Backend {
                    kind: ErrorKind::Other,
                    message: format!("an HTTP client: {e}"),
                })?,
            bucket: opts.bucket.clone(),
            prefix: Path::from(prefix),
            redirect: opts.redirect,
            part: opts.part_size.unwrap_or(PART).clamp(MIN_PART, MAX_PART),
        })
    }

    fn key(&self, parts: &[&str]) -> Path {
        let mut p = self.prefix.clone();
        for part in parts {
            p = p.join(*part);
        }
        p
    }

    fn blob_key(&self, d: &Digest) -> Path {
        self.key(&["blobs", d.algorithm().as_str(), d.hex()])
    }

    fn data_key(&self, id: &UploadId) -> Path {
        self.key(&["uploads", id.as_str(), "data"])
    }

    fn tail_key(&self, id: &UploadId, name: &str) -> Path {
        self.key(&["uploads", id.as_str(), name])
    }

    /// The bytes of the tail of the upload standing at `at` (none when it has none).
    async fn tail(&self, id: &UploadId, at: &UploadToken, p: &Progress) -> Result<Bytes> {
        if p.tail == 0 {
            return Ok(Bytes::new());
        }
        let got = self
            .s3
            .get(&self.tail_key(id, &p.tail_name))
            .await
            .map_err(failed)?;
        let bytes = got.bytes().await.map_err(failed)?;
        if bytes.len() as u64 != p.tail {
            return Err(StoreError::Offset {
                expected: at.len,
                actual: at.len - p.tail + bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    /// Sends one full part, starting the multipart upload with the first.
    async fn send_part(&self, id: &UploadId, p: &mut Progress, part: Bytes) -> Result<()> {
        let key = self.data_key(id);
        let multipart = match &p.multipart {
            Some(m) => m.clone(),
            None => {
                let m = self.s3.create_multipart(&key).await.map_err(failed)?;
                p.multipart = Some(m.clone());
                m
            }
        };
        let idx = p.parts.len();
        let sent = self
            .s3
            .put_part(&key, &multipart, idx, PutPayload::from(part));
        p.parts.push(sent.await.map_err(failed)?.content_id);
        Ok(())
    }

    /// Streams `body` after the tail `buf` into full parts; returns what is left (less than
    /// a part) and the body's length.
    async fn fill_parts(
        &self,
        id: &UploadId,
        p: &mut Progress,
        mut buf: BytesMut,
        mut body: ByteStream<'_>,
    ) -> Result<(BytesMut, u64)> {
        let mut received = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(StoreError::Body)?;
            received += chunk.len() as u64;
            buf.extend_from_slice(&chunk);
            let size = p.part as usize;
            while buf.len() >= size {
                let part = buf.split_to(size).freeze();
                self.send_part(id, p, part).await?;
            }
        }
        Ok((buf, received))
    }

    /// The multipart upload completed into the object under `data_key` (the tail sent as its
    /// last part), or the tail alone when the upload never filled a part.
    async fn complete(&self, id: &UploadId, p: &Progress) -> Result<Path> {
        let Some(multipart) = &p.multipart else {
            return Ok(self.tail_key(id, &p.tail_name));
        };
        let mut p = p.clone();
        if p.tail > 0 {
            self.copy_tail_as_part(id, &mut p, multipart).await?;
        }
        let key = self.data_key(id);
        let parts = p.part_ids();
        self.s3
            .complete_multipart(&key, multipart, parts)
            .await
            .map_err(failed)?;
        Ok(key)
    }

    /// Adds the tail object as the upload's last part, copied inside S3 (`UploadPartCopy`,
    /// by a presigned request: `object_store` has no call for it), so that a commit sends
    /// none of the blob's bytes again.
    async fn copy_tail_as_part(
        &self,
        id: &UploadId,
        p: &mut Progress,
        multipart: &str,
    ) -> Result<()> {
        use object_store::signer::{HeaderName, HeaderValue, Method, SignedUrlOptions};
        let source = format!("{}/{}", self.bucket, self.tail_key(id, &p.tail_name));
        let header = HeaderValue::from_str(&source).map_err(|e| StoreError::Backend {
            kind: ErrorKind::Other,
            message: format!("copy source {source:?}: {e}"),
        })?;
        let part = (p.parts.len() + 1).to_string();
        let opts = SignedUrlOptions::new()
            .with_query([("partNumber", part.as_str()), ("uploadId", multipart)])
            .with_signed_header(HeaderName::from_static("x-amz-copy-source"), header);
        let key = self.data_key(id);
        let url = self
            .s3
            .signed_url_opts(Method::PUT, &key, URL_LIFETIME, &opts);
        let url = url.await.map_err(failed)?;
        let sent = self
            .http
            .put(url.as_str())
            .header("x-amz-copy-source", &source);
        let unavailable = |message: String| StoreError::Backend {
            kind: ErrorKind::Unavailable,
            message,
        };
        let r = sent.send().await.map_err(|e| unavailable(e.to_string()))?;
        let status = r.status();
        let body = r.text().await.map_err(|e| unavailable(e.to_string()))?;
        if !status.is_success() {
            return Err(unavailable(format!(
                "copying a tail into a part: {status}: {body}"
            )));
        }
        let copied: CopyPartResult = quick_xml::de::from_str(&body)
            .map_err(|e| unavailable(format!("copying a tail into a part: {e}: {body}")))?;
        p.parts.push(copied.e_tag);
        Ok(())
    }

    /// Stores `rest` (less than a part) as the tail of the upload now `len` bytes long, under
    /// a name of its own; returns `len`.
    async fn put_tail(
        &self,
        id: &UploadId,
        p: &mut Progress,
        rest: BytesMut,
        len: u64,
    ) -> Result<u64> {
        p.tail = rest.len() as u64;
        p.tail_name.clear();
        if p.tail > 0 {
            let name = format!("tail-{len}-{}", uuid::Uuid::new_v4().simple());
            let payload = PutPayload::from(rest.freeze());
            self.s3
                .put(&self.tail_key(id, &name), payload)
                .await
                .map_err(failed)?;
            p.tail_name = name;
        }
        Ok(len)
    }

    /// Deletes `keys` (absent ones are fine), in one request when there are several.
    async fn delete_keys(&self, keys: Vec<Path>) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys = futures::stream::iter(keys.into_iter().map(Ok)).boxed();
        let mut deleted = self.s3.delete_stream(keys);
        while let Some(r) = deleted.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(failed(e)),
            }
        }
        Ok(())
    }

    /// Removes every object under `uploads/<id>/`.
    async fn remove_upload_objects(&self, id: &UploadId) -> Result<()> {
        let prefix = self.key(&["uploads", id.as_str()]);
        let keys: Vec<Path> = self
            .s3
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(failed)?;
        self.delete_keys(keys).await
    }
}

#[async_trait]
impl BlobStore for S3Store {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        match self.s3.head(&self.blob_key(digest)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(failed(e)),
        }
    }

    async fn read(
        &self,
        digest: &Digest,
        range: Option<(u64, u64)>,
        read_as: ReadAs,
    ) -> Result<BlobRead> {
        let key = self.blob_key(digest);
        if read_as.redirect && self.redirect {
            let get = object_store::signer::Method::GET;
            let url = self.s3.signed_url(get, &key, URL_LIFETIME).await;
            return Ok(BlobRead::Redirect(url.map_err(failed)?.to_string()));
        }
        let opts = GetOptions {
            range: range.map(|(start, end)| GetRange::Bounded(start..end + 1)),
            ..GetOptions::default()
        };
        let got = self.s3.get_opts(&key, opts).await.map_err(failed)?;
        let stream = got.into_stream().map_err(std::io::Error::other).boxed();
        Ok(BlobRead::Stream(stream))
    }

    async fn put(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        let key = self.blob_key(digest);
        self.s3
            .put(&key, PutPayload::from(bytes))
            .await
            .map_err(failed)?;
        Ok(())
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        match self.s3.delete(&self.blob_key(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(failed(e)),
        }
    }

    async fn delete_many(&self, digests: &[Digest]) -> Result<Vec<Digest>> {
        // `object_store` sends the keys a thousand to a request (DeleteObjects).
        let keys: Vec<_> = digests.iter().map(|d| Ok(self.blob_key(d))).collect();
        let mut results = self.s3.delete_stream(futures::stream::iter(keys).boxed());
        let mut done = std::collections::HashSet::new();
        while let Some(r) = results.next().await {
            match r {
                Ok(path) => done.insert(path.to_string()),
                Err(object_store::Error::NotFound { path, .. }) => done.insert(path),
                Err(e) => {
                    tracing::warn!(error = %e, "deleting blobs");
                    false
                }
            };
        }
        let kept = |d: &&Digest| !done.contains(&self.blob_key(d).to_string());
        Ok(digests.iter().filter(kept).cloned().collect())
    }

    fn list(&self) -> BoxStream<'_, Result<BlobEntry>> {
        let prefix = self.key(&["blobs"]);
        self.s3
            .list(Some(&prefix))
            .map_err(failed)
            .try_filter_map(|m| async move {
                let mut parts = m.location.parts().collect::<Vec<_>>().into_iter().rev();
                let (Some(hex), Some(alg)) = (parts.next(), parts.next()) else {
                    return Ok(None);
                };
                // Anything else in there is not ours to count (or to delete).
                let digest = format!("{}:{}", alg.as_ref(), hex.as_ref()).parse::<Digest>();
                Ok(digest.ok().map(|digest| BlobEntry {
                    digest,
                    size: m.size,
                    modified: SystemTime::from(m.last_modified),
                }))
            })
            .boxed()
    }

    fn uploads(&self) -> BoxStream<'_, Result<(UploadId, SystemTime)>> {
        // Tails only: a multipart upload is not listed, and ends with its session record.
        let prefix = self.key(&["uploads"]);
        self.s3
            .list(Some(&prefix))
            .map_err(failed)
            .try_filter_map(|m| async move {
                let mut parts = m.location.parts().collect::<Vec<_>>().into_iter().rev();
                let (_, id) = (parts.next(), parts.next());
                let id = id.and_then(|id| id.as_ref().parse::<UploadId>().ok());
                Ok(id.map(|id| (id, SystemTime::from(m.last_modified))))
            })
            .boxed()
    }

    async fn append(
        &self,
        id: &UploadId,
        at: &UploadToken,
        body: ByteStream<'_>,
        _: Durability,
    ) -> Result<UploadToken> {
        let mut p = Progress::of(at, self.part)?;
        let started = p.multipart.is_none();
        // `at` is saved: the tails it superseded are named by no saved token any more.
        let stale: Vec<Path> = p
            .old_tails
            .drain(..)
            .map(|n| self.tail_key(id, &n))
            .collect();
        if let Err(e) = self.delete_keys(stale).await {
            tracing::warn!(upload = %id, error = %e, "deleting superseded tails");
        }
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&self.tail(id, at, &p).await?);
        if p.tail > 0 {
            // Kept: `at` names it until the caller saves the new token.
            p.old_tails.push(std::mem::take(&mut p.tail_name));
        }
        let stored = match self.fill_parts(id, &mut p, buf, body).await {
            Ok((rest, received)) => self.put_tail(id, &mut p, rest, at.len + received).await,
            Err(e) => Err(e),
        };
        match stored {
            Ok(len) => Ok(p.token(len)),
            Err(e) => {
                if let (true, Some(m)) = (started, &p.multipart) {
                    // Started here and named by no saved token: nobody else would end it.
                    self.s3.abort_multipart(&self.data_key(id), m).await.ok();
                }
                Err(e)
            }
        }
    }

    async fn holds(&self, id: &UploadId, at: &UploadToken) -> Result<bool> {
        let p = Progress::of(at, self.part)?;
        if p.multipart.is_some() {
            // Only a completed upload has its object: a commit was cut after completing it.
            match self.s3.head(&self.data_key(id)).await {
                Ok(_) => return Ok(false),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(failed(e)),
            }
        }
        if p.tail == 0 {
            // Parts cannot be looked at before the upload completes: a gone upload shows
            // itself at the next append or commit.
            return Ok(true);
        }
        match self.s3.head(&self.tail_key(id, &p.tail_name)).await {
            Ok(m) if m.size == p.tail => Ok(true),
            Ok(m) => Err(StoreError::Offset {
                expected: at.len,
                actual: at.len - p.tail + m.size,
            }),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(failed(e)),
        }
    }

    async fn commit(&self, id: &UploadId, at: &UploadToken, digest: &Digest) -> Result<u64> {
        let p = Progress::of(at, self.part)?;
        let target = self.blob_key(digest);
        if at.len == 0 {
            self.s3
                .put(&target, PutPayload::default())
                .await
                .map_err(failed)?;
            return Ok(0);
        }
        let source = self.complete(id, &p).await?;
        // Inside S3: the bytes do not come back through this node.
        self.s3.copy(&source, &target).await.map_err(failed)?;
        // The blob is in place. The objects the token names go in one request, and a failure
        // here leaves them to the session's expiry, as it does what an append whose token was
        // never saved left.
        let mut known = vec![source.clone()];
        if p.multipart.is_some() && p.tail > 0 {
            known.push(self.tail_key(id, &p.tail_name));
        }
        known.extend(p.old_tails.iter().map(|n| self.tail_key(id, n)));
        if let Err(e) = self.delete_keys(known).await {
            tracing::warn!(upload = %id, error = %e, "deleting a committed upload's objects");
        }
        Ok(at.len)
    }

    async fn abort(&self, id: &UploadId, at: Option<&UploadToken>) -> Result<()> {
        // The multipart upload it names, whatever else the token says.
        let named = at.filter(|at| !at.progress.is_empty()).map(Progress::parse);
        if let Some(m) = named.transpose()?.and_then(|p| p.multipart) {
            match self.s3.abort_multipart(&self.data_key(id), &m).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(failed(e)),
            }
        }
        self.remove_upload_objects(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::{S3Options, S3Store, MIN_PART};
    use crate::{BlobRead, BlobStore, Durability, ReadAs, UploadToken};
    use berth_oci::{Digest, UploadId};
    use bytes::Bytes;
    use futures::StreamExt;

    /// Options for a fresh prefix of the bucket `berth-test` on the S3 server at
    /// `BERTH_TEST_S3`, which CI starts (parts at S3's floor, so that small tests make
    /// several). Without it the tests are skipped, except under CI, where that fails.
    fn options() -> Option<S3Options> {
        let endpoint = crate::testsuite::s3_test_server()?;
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Some(S3Options {
            bucket: "berth-test".into(),
            prefix: Some(format!("t{t}-{}-{n}", std::process::id())),
            region: Some("us-east-1".into()),
            endpoint: Some(endpoint),
            path_style: true,
            access_key_id: Some("berth-test".into()),
            secret_access_key: Some("berth-test-secret".into()),
            redirect: false,
            part_size: Some(MIN_PART),
        })
    }

    fn open() -> Option<(S3Store, ())> {
        options().map(|o| (S3Store::open(&o).expect("open"), ()))
    }

    /// The contract, one test per promise, each under a new prefix.
    mod contract {
        crate::store_contract_tests!(async { super::open() });
    }

    fn pattern(len: usize) -> Bytes {
        let v: Vec<u8> = (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        Bytes::from(v)
    }

    fn body(b: Bytes) -> crate::ByteStream<'static> {
        futures::stream::iter(
            b.chunks(64 << 10)
                .map(Bytes::copy_from_slice)
                .map(Ok)
                .collect::<Vec<_>>(),
        )
        .boxed()
    }

    /// A token is checked before anything is sent: parts below S3's floor (which would
    /// never fill) or a length its parts and tail do not hold are refused.
    #[test]
    fn tokens_are_checked_before_use() {
        use crate::StoreError;
        use berth_oci::ErrorKind;
        let token = |len: u64, json: String| UploadToken {
            len,
            progress: json.into_bytes(),
        };
        let no_part = token(5, r#"{"tail":5}"#.into());
        assert!(matches!(
            super::Progress::of(&no_part, MIN_PART),
            Err(StoreError::Backend {
                kind: ErrorKind::Corrupt,
                ..
            })
        ));
        let one_part = format!(r#"{{"multipart":"m","parts":["e"],"part":{MIN_PART},"tail":5}}"#);
        let held = MIN_PART as u64 + 5;
        assert!(super::Progress::of(&token(held, one_part.clone()), MIN_PART).is_ok());
        assert!(matches!(
            super::Progress::of(&token(held + 1, one_part), MIN_PART),
            Err(StoreError::Offset { .. })
        ));
    }

    /// An upload larger than a part: appends of 3, 6 and 4 MiB (one ends inside a part, one
    /// fills it and more), one of them retried from the previous token after its first try's
    /// token was never saved, then committed whole.
    #[tokio::test]
    async fn uploads_span_parts_and_tails_and_retries_from_a_saved_token() {
        let Some((store, ())) = open() else { return };
        let data = pattern(13 << 20);
        let id: UploadId = "multipart-1".parse().unwrap();
        let mut at = UploadToken::default();
        for (i, (from, to)) in [(0, 3 << 20), (3 << 20, 9 << 20), (9 << 20, 13 << 20)]
            .into_iter()
            .enumerate()
        {
            if i == 1 {
                // A first try whose token nobody saved.
                let lost = data.slice(from..to - 1000);
                store
                    .append(&id, &at, body(lost), Durability::Durable)
                    .await
                    .unwrap();
            }
            let chunk = data.slice(from..to);
            at = store
                .append(&id, &at, body(chunk), Durability::Durable)
                .await
                .unwrap();
            assert_eq!(at.len, to as u64);
        }
        assert!(store.holds(&id, &at).await.unwrap());
        let d = Digest::sha256(&data);
        assert_eq!(store.commit(&id, &at, &d).await.unwrap(), data.len() as u64);
        let got = crate::testsuite::read_all_bytes(&store, &d).await;
        assert!(got == data, "the committed blob differs");
        // The lost try's tail stays until the session is aborted (expiry does that).
        let left: Vec<_> = store.uploads().collect().await;
        assert_eq!(left.len(), 1, "{left:?}");
        store.abort(&id, None).await.unwrap();
        let left: Vec<_> = store.uploads().collect().await;
        assert!(left.is_empty(), "{left:?}");
    }

    /// Two appends from one token that end at the same length (two writers that should
    /// never have met) leave what the first one's token names intact: each tail has a
    /// name of its own.
    #[tokio::test]
    async fn an_append_from_an_old_token_leaves_a_newer_token_intact() {
        let Some((store, ())) = open() else { return };
        let id: UploadId = "siblings".parse().unwrap();
        let start = store
            .append(
                &id,
                &UploadToken::default(),
                body(Bytes::from_static(b"head ")),
                Durability::Durable,
            )
            .await
            .unwrap();
        let kept = store
            .append(
                &id,
                &start,
                body(Bytes::from_static(b"right")),
                Durability::Durable,
            )
            .await
            .unwrap();
        store
            .append(
                &id,
                &start,
                body(Bytes::from_static(b"wrong")),
                Durability::Durable,
            )
            .await
            .unwrap();
        let d = Digest::sha256(b"head right");
        store.commit(&id, &kept, &d).await.unwrap();
        assert_eq!(
            crate::testsuite::read_all_bytes(&store, &d).await,
            b"head right"
        );
    }

    /// With redirects on, a reader that takes one gets a presigned URL that serves the blob
    /// and honours `Range`; a reader that takes none still gets the bytes.
    #[tokio::test]
    async fn reads_redirect_to_a_presigned_url_that_honours_range() {
        let Some(mut opts) = options() else { return };
        opts.redirect = true;
        let store = S3Store::open(&opts).unwrap();
        let d = Digest::sha256(b"redirected content");
        store
            .put(&d, Bytes::from_static(b"redirected content"))
            .await
            .unwrap();
        let read_as = ReadAs {
            file: false,
            redirect: true,
        };
        let BlobRead::Redirect(url) = store.read(&d, None, read_as).await.unwrap() else {
            panic!("no redirect");
        };
        let client = reqwest::Client::new();
        let whole = client.get(&url).send().await.unwrap();
        assert_eq!(whole.bytes().await.unwrap(), &b"redirected content"[..]);
        let part = client
            .get(&url)
            .header("range", "bytes=11-17")
            .send()
            .await
            .unwrap();
        assert_eq!(part.status(), 206);
        assert_eq!(part.bytes().await.unwrap(), &b"content"[..]);
        let streamed = crate::testsuite::read_all_bytes(&store, &d).await;
        assert_eq!(streamed, b"redirected content");
    }
}
