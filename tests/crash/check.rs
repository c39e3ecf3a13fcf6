//! What must hold after every restart, checked against the ledger before the next workload
//! starts: acknowledged blobs and manifests served whole (GET hashes to the digest, HEAD
//! gives the size); what was in flight at the kill absent or whole, never partial; each tag
//! on its last acknowledged manifest or on the one a cut PUT named; every interrupted session
//! reporting an offset the registry may hold (the last acknowledged PATCH's end, or that plus
//! the whole chunk in flight), then finished from that offset into a blob that verifies;
//! records and blob files in agreement (reconciliation reports nothing missing or of another
//! size) and every blob file on disk hashing to its name.

use crate::crash::ledger::{
    location_path, range_offset, sha256, with_digest, Answer, Blob, Ctx, Manifest, Pending, Repo,
    Rng, Session, Step, Stop, Tally, ACCEPT,
};
use crate::crash::workload::whole;
use reqwest::Method;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Acknowledged blobs and manifests of earlier cycles re-read per repository and restart
/// (all of them at the end): re-reading everything every time would grow with the run.
const SAMPLE: usize = 2;

/// Checks every repository (concurrently), the shared pool, the reconciliation report and
/// the blob files. Returns the broken promises.
pub async fn after_restart(
    ctx: &Ctx,
    repos: &mut [Repo],
    rng: &mut Rng,
    all: bool,
    disk: &mut DiskWalk,
    data: &Path,
) -> Vec<String> {
    let checks = repos.iter_mut().map(|repo| {
        let mut rng = Rng::new(rng.next());
        async move {
            check_repo(ctx, repo, &mut rng, all)
                .await
                .err()
                .map(|e| match e {
                    Stop::Fail(e) => format!("{}: {e}", repo.name),
                    Stop::Cut => format!("{}: request cut while checking", repo.name),
                })
        }
    });
    let mut failures: Vec<String> = futures::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect();
    for step in [
        check_pool(ctx, rng, all).await,
        reconcile(ctx).await,
        disk.walk(data),
    ] {
        if let Err(Stop::Fail(e)) = step {
            failures.push(e);
        }
    }
    failures
}

async fn get(ctx: &Ctx, path: &str) -> Step<Answer> {
    ctx.fetch(ctx.client.get(ctx.url(path)).header("accept", ACCEPT))
        .await
}

/// An acknowledged blob: GET whole, HEAD with its size.
async fn blob_whole(ctx: &Ctx, repo: &str, b: &Blob) -> Step {
    let path = format!("/v2/{repo}/blobs/{}", b.digest);
    let a = get(ctx, &path).await?;
    a.expect(200, &format!("GET {path} (acknowledged)"))?;
    whole(&a.body, &b.digest, &path)?;
    let a = ctx.fetch(ctx.client.head(ctx.url(&path))).await?;
    a.expect(200, &format!("HEAD {path} (acknowledged)"))?;
    if a.header("content-length") != b.len.to_string() {
        return Err(Stop::Fail(format!(
            "HEAD {path}: Content-Length {:?}, expected {}",
            a.header("content-length"),
            b.len
        )));
    }
    Tally::add(&ctx.tally.checked, 1);
    Ok(())
}

/// An acknowledged manifest: GET by digest, whole, with its digest and media type.
async fn manifest_whole(ctx: &Ctx, repo: &str, m: &Manifest) -> Step {
    let path = format!("/v2/{repo}/manifests/{}", m.digest);
    let a = get(ctx, &path).await?;
    a.expect(200, &format!("GET {path} (acknowledged)"))?;
    whole(&a.body, &m.digest, &path)?;
    if a.header("docker-content-digest") != m.digest || a.header("content-type") != m.media_type {
        return Err(Stop::Fail(format!(
            "GET {path}: Docker-Content-Digest {:?}, Content-Type {:?}",
            a.header("docker-content-digest"),
            a.header("content-type")
        )));
    }
    Tally::add(&ctx.tally.checked, 1);
    Ok(())
}

/// Absent (404) or whole: what a request cut by the kill may have left. Whether it is there.
async fn absent_or_whole(ctx: &Ctx, path: &str, digest: &str) -> Step<bool> {
    let a = get(ctx, path).await?;
    match a.status.as_u16() {
        404 => Ok(false),
        200 => whole(&a.body, digest, path).map(|()| true),
        _ => a
            .expect(200, &format!("GET {path} (in flight at the kill)"))
            .map(|()| false),
    }
}

fn sample<T: Clone>(items: &[T], rng: &mut Rng, all: bool) -> Vec<T> {
    if all {
        return items.to_vec();
    }
    (0..SAMPLE.min(items.len()))
        .filter_map(|_| rng.pick(items).cloned())
        .collect()
}

async fn check_repo(ctx: &Ctx, repo: &mut Repo, rng: &mut Rng, all: bool) -> Step {
    let name = repo.name.clone();
    for b in sample(&repo.blobs, rng, all) {
        blob_whole(ctx, &name, &b).await?;
    }
    for b in std::mem::take(&mut repo.fresh_blobs) {
        blob_whole(ctx, &name, &b).await?;
        repo.blobs.push(b);
    }
    for b in std::mem::take(&mut repo.unsure_blobs) {
        let path = format!("/v2/{name}/blobs/{}", b.digest);
        if absent_or_whole(ctx, &path, &b.digest).await? {
            // Served whole: it may be used from now on like an acknowledged one.
            repo.blobs.push(b);
        }
    }
    for m in sample(&repo.manifests, rng, all) {
        manifest_whole(ctx, &name, &m).await?;
    }
    for m in std::mem::take(&mut repo.fresh_manifests) {
        manifest_whole(ctx, &name, &m).await?;
        repo.manifests.push(m);
    }
    for m in std::mem::take(&mut repo.unsure_manifests) {
        let path = format!("/v2/{name}/manifests/{}", m.digest);
        let known = repo.manifests.iter().any(|k| k.digest == m.digest);
        if absent_or_whole(ctx, &path, &m.digest).await? && !known {
            repo.manifests.push(m);
        } else if known {
            // Pushed again while the registry died: it was there before and must still be.
            manifest_whole(ctx, &name, &m).await?;
        }
    }
    for (tag, state) in repo.tags.iter_mut() {
        let path = format!("/v2/{name}/manifests/{tag}");
        let a = get(ctx, &path).await?;
        let allowed: Vec<&String> = state.acked.iter().chain(&state.in_flight).collect();
        let now = match a.status.as_u16() {
            404 if state.acked.is_none() => None,
            200 => {
                let d = sha256(&a.body);
                if !allowed.contains(&&d) || a.header("docker-content-digest") != d {
                    return Err(Stop::Fail(format!(
                        "{path} serves {d} (header {:?}); acknowledged {:?}, in flight {:?}",
                        a.header("docker-content-digest"),
                        state.acked,
                        state.in_flight
                    )));
                }
                Some(d)
            }
            s => {
                return Err(Stop::Fail(format!(
                    "{path}: {s}; acknowledged {:?}, in flight {:?}",
                    state.acked, state.in_flight
                )))
            }
        };
        if state.acked.is_some() {
            Tally::add(&ctx.tally.checked, 1);
        }
        // What the registry serves after a restart is durable: the next cycle starts there.
        state.acked = now;
        state.in_flight = None;
    }
    for s in std::mem::take(&mut repo.sessions) {
        if let Some(b) = resume(ctx, &name, &s).await? {
            repo.blobs.push(b);
        }
    }
    Ok(())
}

/// An interrupted session: its offset must be one the registry may hold, and finishing it
/// from there must give a blob that verifies. `None` if the session was finished by the
/// PUT the kill cut (and the blob is whole).
async fn resume(ctx: &Ctx, repo: &str, s: &Session) -> Step<Option<Blob>> {
    let blob = Blob {
        digest: s.digest.clone(),
        len: s.data.len() as u64,
    };
    let a = get(ctx, &s.location).await?;
    if a.status.as_u16() == 404 {
        // Only the final PUT may end a session (or take its bytes away for the commit it
        // never acknowledged): then the blob is linked whole, or not at all and a new
        // upload of it must succeed.
        if s.pending != Pending::Finish {
            return Err(Stop::Fail(format!(
                "session {} is unknown after a restart ({:?}; acknowledged to {})",
                s.location,
                String::from_utf8_lossy(&a.body),
                s.acked
            )));
        }
        let path = format!("/v2/{repo}/blobs/{}", blob.digest);
        if !absent_or_whole(ctx, &path, &blob.digest).await? {
            let uploads = ctx.url(&format!("/v2/{repo}/blobs/uploads/"));
            let a = ctx
                .fetch(
                    ctx.client
                        .post(with_digest(&uploads, &blob.digest))
                        .body(s.data.to_vec()),
                )
                .await?;
            a.expect(
                201,
                &format!("pushing {} again after its session ended", blob.digest),
            )?;
        }
        blob_whole(ctx, repo, &blob).await?;
        return Ok(Some(blob));
    }
    a.expect(204, &format!("GET {} (upload status)", s.location))?;
    let range = a.header("range");
    let offset = range_offset(&range);
    let allowed = match s.pending {
        Pending::Nothing | Pending::Finish => vec![s.acked],
        Pending::Patch(n) => vec![s.acked, s.acked + n],
    };
    let Some(mut offset) = offset.filter(|o| allowed.contains(o)) else {
        return Err(Stop::Fail(format!(
            "session {} reports Range {range:?} after a restart; acknowledged to {}, \
             in flight {:?} (the registry may hold only {allowed:?})",
            s.location, s.acked, s.pending
        )));
    };
    if s.acked > 0 {
        Tally::add(&ctx.tally.checked, 1);
    }
    let loc = match a.header("location") {
        l if l.is_empty() => s.location.clone(),
        l => location_path(&l),
    };
    let len = s.data.len() as u64;
    // Half the time a PATCH from the reported offset first, half the time the rest in the PUT.
    if offset < len && offset % 2 == 0 {
        let a = ctx
            .fetch(
                ctx.client
                    .request(Method::PATCH, ctx.url(&loc))
                    .header("content-range", format!("{offset}-{}", len - 1))
                    .body(s.data[offset as usize..].to_vec()),
            )
            .await?;
        a.expect(
            202,
            &format!("PATCH {loc} from the reported offset {offset}"),
        )?;
        offset = len;
    }
    let mut put = ctx.client.put(ctx.url(&with_digest(&loc, &s.digest)));
    if offset < len {
        put = put
            .header("content-range", format!("{offset}-{}", len - 1))
            .body(s.data[offset as usize..].to_vec());
    }
    let a = ctx.fetch(put).await?;
    a.expect(201, &format!("PUT {loc} finishing a resumed session"))?;
    blob_whole(ctx, repo, &blob).await?;
    Tally::add(&ctx.tally.resumed, 1);
    Ok(Some(blob))
}

/// The shared repository: acknowledged pool blobs whole (a quarter of them, all at the
/// end), the others absent or whole.
async fn check_pool(ctx: &Ctx, rng: &mut Rng, all: bool) -> Step {
    let acked = ctx.pool.acked.lock().expect("pool lock").clone();
    for (i, digest) in ctx.pool.digests.iter().enumerate() {
        let path = format!("/v2/{}/blobs/{digest}", ctx.pool.repo);
        if acked.contains(&i) {
            if all || rng.chance(25) {
                let b = Blob {
                    digest: digest.clone(),
                    len: ctx.pool.data[i].len() as u64,
                };
                blob_whole(ctx, &ctx.pool.repo, &b).await?;
            }
        } else if absent_or_whole(ctx, &path, digest).await? {
            ctx.pool.acked.lock().expect("pool lock").insert(i);
        }
    }
    Ok(())
}

/// The registry's own comparison of records and blob files (a dry run: nothing repaired):
/// no record may lack its file or disagree with its size.
async fn reconcile(ctx: &Ctx) -> Step {
    let a = ctx
        .fetch(ctx.client.post(ctx.url("/api/v1/reconcile?dry_run=true")))
        .await?;
    a.expect(200, "POST /api/v1/reconcile")?;
    let report: serde_json::Value = serde_json::from_slice(&a.body)
        .map_err(|e| Stop::Fail(format!("reconcile report: {e}")))?;
    let empty = |k: &str| report[k].as_array().is_some_and(Vec::is_empty);
    if !empty("missing") || !empty("size_mismatches") {
        return Err(Stop::Fail(format!(
            "metadata and blob store disagree after a restart: {report}"
        )));
    }
    Ok(())
}

/// The blob files under `<data>/blobs/sha256/`, each hashed once (again if its size or time
/// changes): every one must hash to its name, whatever the moment of the kill.
#[derive(Default)]
pub struct DiskWalk {
    seen: HashMap<PathBuf, (u64, SystemTime)>,
    pub files: usize,
}

impl DiskWalk {
    pub fn walk(&mut self, data: &Path) -> Step {
        let root = data.join("blobs").join("sha256");
        let fail = |e: std::io::Error| Stop::Fail(format!("walking {}: {e}", root.display()));
        let mut files = 0;
        for prefix in std::fs::read_dir(&root).map_err(fail)? {
            let prefix = prefix.map_err(fail)?.path();
            for entry in std::fs::read_dir(&prefix).map_err(fail)? {
                let path = entry.map_err(fail)?.path();
                let meta = std::fs::metadata(&path).map_err(fail)?;
                files += 1;
                let stamp = (meta.len(), meta.modified().map_err(fail)?);
                if self.seen.get(&path) == Some(&stamp) {
                    continue;
                }
                let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
                let mut f = std::fs::File::open(&path).map_err(fail)?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = f.read(&mut buf).map_err(fail)?;
                    if n == 0 {
                        break;
                    }
                    sha2::Digest::update(&mut hasher, &buf[..n]);
                }
                let got = hex::encode(sha2::Digest::finalize(hasher));
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if got != name {
                    return Err(Stop::Fail(format!(
                        "blob file {} ({} bytes) hashes to {got}",
                        path.display(),
                        stamp.0
                    )));
                }
                self.seen.insert(path, stamp);
            }
        }
        self.files = files;
        Ok(())
    }
}
