//! Moving images: pull (registry → local store), push (local store → registry) and copy
//! (registry → registry). Blobs move in parallel, each with its own progress bar, and every
//! one is verified against its digest before it becomes visible.
//!
//! Resuming: a pull writes into `ingest/<hex>.partial` and, after a cut connection (or a new
//! run), continues with `Range: bytes=<have>-`. A push sends blobs larger than one chunk as
//! `PATCH`es of `chunk_size` bytes; after a failure it asks the registry where the session
//! stands (`GET` on the upload URL) and continues from the offset it reports. The session URL
//! is kept in `ingest/push-<key>` so that a new `berth push` continues it too.

use crate::auth::DockerConfig;
use crate::error::{io_err, Error, Result};
use crate::progress::{short, Progress, Task};
use crate::reference::ImageRef;
use crate::registry::{http_client, Fetched, Options, Registry, Started};
use crate::store::{annotations, host_platform, pick_platform, LocalStore};
use berth_oci::manifest::{Descriptor, Kind, Manifest, Platform};
use berth_oci::{Digest, DigestHasher, RepoName};
use futures::{StreamExt, TryStreamExt};
use std::collections::{HashMap, HashSet};
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Annotation on a local entry pulled through an index: the digest the registry serves the
/// name under (docker's RepoDigest), when it is not the stored manifest's own.
pub const REPO_DIGEST: &str = "io.berth.repo.digest";

/// What every transfer command shares: the HTTP client, credentials, progress, options.
pub struct Ctx {
    pub progress: Progress,
    pub opts: Options,
    /// Blobs moved at once.
    pub parallel: usize,
    http: reqwest::Client,
    config_path: PathBuf,
    registries: tokio::sync::Mutex<HashMap<String, Arc<Registry>>>,
}

impl Ctx {
    pub fn new(opts: Options, quiet: bool) -> Result<Ctx> {
        Ok(Ctx {
            progress: Progress::new(quiet),
            http: http_client(opts.insecure)?,
            opts,
            parallel: 3,
            config_path: DockerConfig::default_path(),
            registries: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// After a failure: waits out the backoff and returns `Ok` when another attempt may
    /// help, else gives the error back.
    async fn retry(&self, failures: &mut u32, e: Error, task: &Task, then: &str) -> Result<()> {
        if !e.is_transient() || *failures + 1 >= self.opts.attempts {
            return Err(e);
        }
        *failures += 1;
        task.say(&format!("{e}; {then}"));
        tokio::time::sleep(self.opts.backoff * 2u32.pow(*failures - 1)).await;
        Ok(())
    }

    /// Runs `f` once on every distinct blob an image manifest needs, `parallel` at a time.
    /// (An artifact may name one blob twice, the empty descriptor as config and layer.)
    async fn each_blob<'a, F, Fut>(&self, m: &'a Manifest, f: F) -> Result<()>
    where
        F: FnMut(&'a Descriptor) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let mut seen = HashSet::new();
        let blobs: Vec<&Descriptor> = m
            .required_blobs()
            .filter(|d| seen.insert(&d.digest))
            .collect();
        futures::stream::iter(blobs)
            .map(f)
            .buffer_unordered(self.parallel)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The client for `r`'s registry, with the stored credentials, made once per command.
    pub async fn registry(&self, r: &ImageRef) -> Result<Arc<Registry>> {
        let mut map = self.registries.lock().await;
        if let Some(reg) = map.get(&r.registry) {
            return Ok(reg.clone());
        }
        let creds = DockerConfig::load(&self.config_path)?.credentials(&r.registry)?;
        let reg = Arc::new(
            Registry::connect(
                self.http.clone(),
                &r.registry,
                r.api_host(),
                r.is_local(),
                creds,
                self.opts.clone(),
            )
            .await?,
        );
        map.insert(r.registry.clone(), reg.clone());
        Ok(reg)
    }
}

/// The image an index resolves to for `platform` (the host's when `None`).
fn choose<'a>(
    index: &'a Manifest,
    platform: Option<&Platform>,
    what: &ImageRef,
) -> Result<&'a Descriptor> {
    let wanted = platform.cloned().unwrap_or_else(host_platform);
    pick_platform(&index.manifests, &wanted).ok_or_else(|| {
        let have: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
            .collect();
        Error::NotFound(format!(
            "no image for {wanted} in {what} (it has: {})",
            if have.is_empty() {
                "none".to_owned()
            } else {
                have.join(", ")
            }
        ))
    })
}

/// The name a pulled or pushed reference is stored under.
pub fn local_name(r: &ImageRef) -> String {
    match (&r.tag, &r.digest) {
        (Some(t), _) => format!("{}:{t}", r.repository()),
        (None, Some(d)) => format!("{}@{d}", r.repository()),
        (None, None) => format!("{}:latest", r.repository()),
    }
}

/// Pulls `r` into the store and names it; returns the stored descriptor.
pub async fn pull(
    ctx: &Ctx,
    store: &LocalStore,
    r: &ImageRef,
    platform: Option<&Platform>,
    all_platforms: bool,
) -> Result<Descriptor> {
    let reg = ctx.registry(r).await?;
    let top = reg.manifest(&r.repo, &r.reference()).await?;
    let manifest = top.parse()?;
    let desc = match manifest.kind {
        Kind::Image => {
            pull_image(ctx, store, &reg, &r.repo, &top, &manifest).await?;
            top.descriptor(None)
        }
        Kind::Index if all_platforms => {
            for child in &manifest.manifests {
                let f = reg.manifest(&r.repo, &child.digest.to_string()).await?;
                let m = f.parse()?;
                if m.kind == Kind::Image {
                    ctx.progress.note(&format!(
                        "{}: {}",
                        child
                            .platform
                            .as_ref()
                            .map_or("unknown".into(), |p| p.to_string()),
                        f.digest
                    ));
                    pull_image(ctx, store, &reg, &r.repo, &f, &m).await?;
                }
            }
            store.put_bytes(&top.bytes)?;
            top.descriptor(None)
        }
        Kind::Index => {
            let child = choose(&manifest, platform, r)?;
            let f = reg.manifest(&r.repo, &child.digest.to_string()).await?;
            let m = f.parse()?;
            pull_image(ctx, store, &reg, &r.repo, &f, &m).await?;
            store.put_bytes(&top.bytes)?;
            let mut d = f.descriptor(child.platform.clone());
            d.annotations = annotations(&[(REPO_DIGEST, &top.digest.to_string())]);
            d
        }
    };
    store.set(&local_name(r), desc.clone())?;
    Ok(desc)
}

/// Fetches an image manifest's blobs, then stores the manifest itself.
async fn pull_image(
    ctx: &Ctx,
    store: &LocalStore,
    reg: &Registry,
    repo: &RepoName,
    f: &Fetched,
    m: &Manifest,
) -> Result<()> {
    ctx.each_blob(m, |d| fetch_blob(ctx, store, reg, repo, d))
        .await?;
    store.put_bytes(&f.bytes)?;
    Ok(())
}

/// Downloads one blob into the store, resuming a partial download with `Range`.
async fn fetch_blob(
    ctx: &Ctx,
    store: &LocalStore,
    reg: &Registry,
    repo: &RepoName,
    d: &Descriptor,
) -> Result<()> {
    let task = ctx.progress.task(&short(&d.digest), d.size);
    if store.blob_size(&d.digest).is_some() {
        task.finish("already here");
        return Ok(());
    }
    let _writer = store.lock_ingest(&d.digest).await?;
    if store.blob_size(&d.digest).is_some() {
        task.finish("already here");
        return Ok(());
    }
    let partial = store.partial_path(&d.digest);
    let mut failures = 0;
    loop {
        match download(reg, repo, d, &partial, &task).await {
            Ok(hasher) => {
                let actual = hasher.finish();
                if actual != d.digest {
                    let _ = tokio::fs::remove_file(&partial).await;
                    return Err(Error::DigestMismatch {
                        expected: d.digest.to_string(),
                        actual: actual.to_string(),
                    });
                }
                store.commit_verified(&partial, &d.digest)?;
                task.finish("done");
                return Ok(());
            }
            Err(e) => ctx.retry(&mut failures, e, &task, "resuming").await?,
        }
    }
}

/// Appends to the partial file from where it ends; returns the hasher over all its bytes.
async fn download(
    reg: &Registry,
    repo: &RepoName,
    d: &Descriptor,
    partial: &Path,
    task: &Task,
) -> Result<DigestHasher> {
    let what = || format!("writing {}", partial.display());
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(partial)
        .await
        .map_err(io_err(what()))?;
    // Hash what an earlier attempt left, so the digest covers the whole blob.
    let mut hasher = DigestHasher::new(d.digest.algorithm());
    let mut have = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await.map_err(io_err(what()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        have += n as u64;
    }
    if have == d.size && have > 0 {
        return Ok(hasher);
    }
    let (resp, ranged) = if have > d.size {
        (reg.blob(repo, &d.digest, 0).await?.0, false)
    } else {
        reg.blob(repo, &d.digest, have).await?
    };
    if !ranged && have > 0 {
        // Longer than the blob, or the registry sends the whole blob again: start over.
        file.set_len(0).await.map_err(io_err(what()))?;
        file.seek(SeekFrom::Start(0))
            .await
            .map_err(io_err(what()))?;
        hasher = DigestHasher::new(d.digest.algorithm());
        have = 0;
    }
    task.set_position(have);
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::Transfer {
            registry: reg.name.clone(),
            reason: crate::error::root_cause(&e),
        })?;
        have += chunk.len() as u64;
        if have > d.size {
            let _ = tokio::fs::remove_file(partial).await;
            return Err(Error::Invalid(format!(
                "{} sent more than the {} bytes of {}",
                reg.name, d.size, d.digest
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(io_err(what()))?;
        task.inc(chunk.len() as u64);
    }
    file.flush().await.map_err(io_err(what()))?;
    if have < d.size {
        return Err(Error::Transfer {
            registry: reg.name.clone(),
            reason: format!("connection closed after {have} of {} bytes", d.size),
        });
    }
    Ok(hasher)
}

/// Pushes the stored image `desc` to `r`; returns the digest of the pushed manifest.
pub async fn push(
    ctx: &Ctx,
    store: &LocalStore,
    desc: &Descriptor,
    r: &ImageRef,
) -> Result<Digest> {
    let reg = ctx.registry(r).await?;
    let reference = r
        .tag
        .as_ref()
        .map_or(desc.digest.to_string(), |t| t.to_string());
    push_tree(ctx, store, &reg, &r.repo, desc, &reference).await?;
    Ok(desc.digest.clone())
}

async fn push_tree(
    ctx: &Ctx,
    store: &LocalStore,
    reg: &Registry,
    repo: &RepoName,
    desc: &Descriptor,
    reference: &str,
) -> Result<()> {
    let bytes = store.read_blob(&desc.digest)?;
    let m = Manifest::parse(&bytes, Some(&desc.media_type))
        .map_err(|e| Error::Invalid(format!("stored manifest {}: {e}", desc.digest)))?;
    match m.kind {
        Kind::Index => {
            for child in &m.manifests {
                if store.blob_size(&child.digest).is_none() {
                    return Err(Error::NotFound(format!(
                        "{} of the index {} is not in the local store: pull it with --all-platforms",
                        child.digest, desc.digest
                    )));
                }
                Box::pin(push_tree(
                    ctx,
                    store,
                    reg,
                    repo,
                    child,
                    &child.digest.to_string(),
                ))
                .await?;
            }
        }
        Kind::Image => {
            ctx.each_blob(&m, |d| upload_blob(ctx, store, reg, repo, d))
                .await?;
        }
    }
    reg.put_manifest(repo, reference, &bytes, &desc.media_type)
        .await?;
    Ok(())
}

/// A body of `len` bytes of the file at `path` from `offset`, counted on `task`.
fn file_body(path: &Path, offset: u64, len: u64, task: &Task) -> reqwest::Body {
    let path = path.to_owned();
    let task = task.clone();
    task.set_position(offset);
    let open = async move {
        let mut f = tokio::fs::File::open(&path).await?;
        f.seek(SeekFrom::Start(offset)).await?;
        Ok::<_, std::io::Error>(tokio_util::io::ReaderStream::with_capacity(
            f.take(len),
            256 << 10,
        ))
    };
    let stream = futures::stream::once(open)
        .map(|r| match r {
            Ok(s) => s.left_stream(),
            Err(e) => futures::stream::once(async { Err(e) }).right_stream(),
        })
        .flatten()
        .inspect_ok(move |b| task.inc(b.len() as u64));
    reqwest::Body::wrap_stream(stream)
}

/// A name for the saved session of a push of `digest` to `repo` on `reg`.
fn push_key(reg: &Registry, repo: &RepoName, digest: &Digest) -> String {
    let d = Digest::sha256(format!("{} {repo} {digest}", reg.base()).as_bytes());
    d.hex()[..32].to_owned()
}

/// The session an earlier run saved for this push, with where the registry says it stands,
/// if the registry still has it; a session it lost is forgotten.
async fn saved_session(
    reg: &Registry,
    repo: &RepoName,
    state: &Path,
    size: u64,
    task: &Task,
) -> Option<(u64, String)> {
    let saved = tokio::fs::read_to_string(state).await.ok()?;
    match reg.upload_status(repo, saved.trim()).await {
        Ok(Some((offset, loc))) if offset <= size => {
            // "0-0" is what an empty session reports too: one byte is not worth the doubt.
            let offset = if offset <= 1 { 0 } else { offset };
            task.say(&format!("resuming at {offset} bytes"));
            Some((offset, loc))
        }
        _ => {
            let _ = tokio::fs::remove_file(state).await;
            None
        }
    }
}

/// A blob sent in chunks to one upload session, which is saved in `state` after each.
struct Chunks<'a> {
    reg: &'a Registry,
    repo: &'a RepoName,
    digest: &'a Digest,
    path: &'a Path,
    size: u64,
    task: &'a Task,
    state: &'a Path,
}

impl Chunks<'_> {
    /// Sends the bytes from `offset` on; after a failure, asks the registry where the
    /// session stands and goes on from there. Returns the session's last location.
    async fn send(
        &self,
        ctx: &Ctx,
        mut offset: u64,
        mut loc: String,
        failures: &mut u32,
    ) -> Result<String> {
        let chunk = ctx.opts.chunk_size.max(1);
        let _ = tokio::fs::write(self.state, &loc).await;
        let mut acked = offset;
        while offset < self.size {
            let len = chunk.min(self.size - offset);
            let body = || file_body(self.path, offset, len, self.task);
            match self.reg.patch(self.repo, &loc, offset, body, len).await {
                Ok((end, next)) => {
                    (offset, acked, loc) = (end, end, next);
                    let _ = tokio::fs::write(self.state, &loc).await;
                }
                Err(e) => {
                    ctx.retry(failures, e, self.task, "resuming").await?;
                    let (reported, next) = self.status(&loc).await?;
                    // "0-0" is what an empty session reports too.
                    offset = if reported <= 1 && acked == 0 {
                        0
                    } else {
                        reported
                    };
                    loc = next;
                }
            }
        }
        Ok(loc)
    }

    /// [`Chunks::send`], then the finishing PUT with no body.
    async fn send_and_finish(
        &self,
        ctx: &Ctx,
        offset: u64,
        loc: String,
        failures: &mut u32,
    ) -> Result<()> {
        let loc = self.send(ctx, offset, loc, failures).await?;
        let empty = reqwest::Body::default;
        self.reg
            .finish_upload(self.repo, &loc, self.digest, empty, 0, true)
            .await
    }

    /// Where the session stands, by the registry's word.
    async fn status(&self, loc: &str) -> Result<(u64, String)> {
        match self.reg.upload_status(self.repo, loc).await {
            Ok(Some((reported, next))) if reported <= self.size => Ok((reported, next)),
            _ => Err(Error::Transfer {
                registry: self.reg.name.clone(),
                reason: "the registry lost the upload session".into(),
            }),
        }
    }
}

/// Uploads one stored blob unless the repository has it (see the module doc for resuming).
async fn upload_blob(
    ctx: &Ctx,
    store: &LocalStore,
    reg: &Registry,
    repo: &RepoName,
    d: &Descriptor,
) -> Result<()> {
    let task = ctx.progress.task(&short(&d.digest), d.size);
    if reg.blob_size(repo, &d.digest).await?.is_some() {
        task.finish("exists");
        return Ok(());
    }
    let path = store.blob_path(&d.digest);
    let size = store.blob_size(&d.digest).ok_or_else(|| {
        Error::NotFound(format!("blob {} is missing from the local store", d.digest))
    })?;
    let state = store.push_state_path(&push_key(reg, repo, &d.digest));
    let mut session = saved_session(reg, repo, &state, size, &task).await;
    // A session saved by an earlier run gets one chance; if the registry refuses to go on
    // with it, a fresh session starts without counting as a failure.
    let mut resumed = session.is_some();
    let chunk = ctx.opts.chunk_size.max(1);
    let mut failures = 0u32;
    loop {
        let (offset, loc) = match session.take() {
            Some(s) => s,
            None => match reg.start_upload(repo, None).await? {
                Started::Session(loc) => (0, loc),
                // Only a mount request is answered so; none was made.
                Started::Mounted => {
                    task.finish("exists");
                    return Ok(());
                }
            },
        };
        let result = if offset == 0 && size <= chunk {
            reg.finish_upload(
                repo,
                &loc,
                &d.digest,
                || file_body(&path, 0, size, &task),
                size,
                false,
            )
            .await
        } else {
            let chunks = Chunks {
                reg,
                repo,
                digest: &d.digest,
                path: &path,
                size,
                task: &task,
                state: &state,
            };
            chunks
                .send_and_finish(ctx, offset, loc, &mut failures)
                .await
        };
        let result = match result {
            // The answer to a finishing PUT may be lost after the registry stored the blob;
            // the retried PUT then finds no session. The registry's own word settles it.
            Err(_) if reg.blob_size(repo, &d.digest).await.ok().flatten() == Some(size) => Ok(()),
            r => r,
        };
        let _ = tokio::fs::remove_file(&state).await;
        match result {
            Ok(()) => {
                task.finish("pushed");
                return Ok(());
            }
            Err(e) if std::mem::take(&mut resumed) => {
                task.say(&format!("{e}; starting a new session"));
            }
            Err(e) => ctx.retry(&mut failures, e, &task, "starting over").await?,
        }
    }
}

/// Copies `src` to `dst` between registries; returns the digest of the copied manifest.
pub async fn copy(
    ctx: &Ctx,
    src: &ImageRef,
    dst: &ImageRef,
    platform: Option<&Platform>,
    all_platforms: bool,
) -> Result<Digest> {
    let from = ctx.registry(src).await?;
    let to = ctx.registry(dst).await?;
    let mut top = from.manifest(&src.repo, &src.reference()).await?;
    let m = top.parse()?;
    if m.kind == Kind::Index && !all_platforms {
        let child = choose(&m, platform, src)?;
        top = from.manifest(&src.repo, &child.digest.to_string()).await?;
    }
    let reference = dst
        .tag
        .as_ref()
        .map_or(top.digest.to_string(), |t| t.to_string());
    let link = Link {
        from: &from,
        to: &to,
        src: &src.repo,
        dst: &dst.repo,
    };
    let mut seen = HashSet::new();
    copy_tree(ctx, &link, top.clone(), &reference, &mut seen).await?;
    Ok(top.digest)
}

/// The two ends of a copy.
struct Link<'a> {
    from: &'a Registry,
    to: &'a Registry,
    src: &'a RepoName,
    dst: &'a RepoName,
}

/// Copies one manifest, what it references, and its referrers.
async fn copy_tree(
    ctx: &Ctx,
    link: &Link<'_>,
    f: Fetched,
    reference: &str,
    seen: &mut HashSet<Digest>,
) -> Result<()> {
    seen.insert(f.digest.clone());
    let m = f.parse()?;
    match m.kind {
        Kind::Index => {
            for child in &m.manifests {
                let cf = link
                    .from
                    .manifest(link.src, &child.digest.to_string())
                    .await?;
                Box::pin(copy_tree(ctx, link, cf, &child.digest.to_string(), seen)).await?;
            }
        }
        Kind::Image => {
            ctx.each_blob(&m, |d| copy_blob(ctx, link, d)).await?;
        }
    }
    link.to
        .put_manifest(link.dst, reference, &f.bytes, &f.media_type)
        .await?;
    for r in link.from.referrers(link.src, &f.digest).await? {
        if seen.contains(&r.digest) {
            continue;
        }
        let rf = link.from.manifest(link.src, &r.digest.to_string()).await?;
        ctx.progress.note(&format!("referrer {}", r.digest));
        Box::pin(copy_tree(ctx, link, rf, &r.digest.to_string(), seen)).await?;
    }
    Ok(())
}

/// Copies one blob unless the destination has it: a mount on the same registry, else a
/// stream from one to the other (the destination verifies the digest).
async fn copy_blob(ctx: &Ctx, link: &Link<'_>, d: &Descriptor) -> Result<()> {
    let task = ctx.progress.task(&short(&d.digest), d.size);
    if link.to.blob_size(link.dst, &d.digest).await?.is_some() {
        task.finish("exists");
        return Ok(());
    }
    let same = link.from.base() == link.to.base();
    let mut failures = 0;
    let mut reauthorized = false;
    loop {
        let mount = same.then_some((&d.digest, link.src));
        let loc = match link.to.start_upload(link.dst, mount).await? {
            Started::Mounted => {
                task.finish("mounted");
                return Ok(());
            }
            Started::Session(loc) => loc,
        };
        let (resp, _) = link.from.blob(link.src, &d.digest, 0).await?;
        let counted = task.clone();
        counted.set_position(0);
        let stream = resp
            .bytes_stream()
            .inspect_ok(move |b| counted.inc(b.len() as u64));
        // The body streams from the source once. Asked for again (the destination wanted
        // fresh credentials first), it is empty, the PUT fails, and the loop starts over
        // with the credentials now in hand.
        let body = std::sync::Mutex::new(Some(reqwest::Body::wrap_stream(stream)));
        let asked = std::sync::atomic::AtomicU32::new(0);
        let take = || {
            asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            body.lock()
                .ok()
                .and_then(|mut b| b.take())
                .unwrap_or_default()
        };
        match link
            .to
            .finish_upload(link.dst, &loc, &d.digest, take, d.size, false)
            .await
        {
            Ok(()) => {
                task.finish("copied");
                return Ok(());
            }
            Err(_) if asked.into_inner() > 1 && !std::mem::replace(&mut reauthorized, true) => {}
            Err(e) => ctx.retry(&mut failures, e, &task, "retrying").await?,
        }
    }
}
