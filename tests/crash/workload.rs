//! The pushes of one cycle: a task per repository doing a random mix of monolithic and
//! chunked uploads (with `Content-Range`, streamed without it, finished with or without a
//! last chunk), manifest and index pushes by tag and by digest, tag moves, and reads that
//! verify what they get, until the registry is killed under it.
//!
//! Each request is entered in the ledger before it is sent (as in flight) and after its
//! answer (as acknowledged), so that whatever the moment of the kill, the ledger says what
//! the registry promised and what it may or may not have done.

use crate::crash::ledger::{
    location_path, range_offset, sha256, with_digest, Blob, Ctx, Manifest, Pending, Repo, Rng,
    Session, Step, Stop, Tally, ACCEPT, OCI_INDEX, OCI_MANIFEST,
};
use crate::e2e::images::bytes;
use futures::StreamExt;
use reqwest::Method;
use std::sync::Arc;
use std::time::Duration;

/// Tags every repository moves around.
const TAGS: [&str; 3] = ["latest", "stable", "edge"];

/// Runs one task until the registry dies (or breaks a promise). Returns the repository's
/// ledger and the failure, if any.
pub async fn task(ctx: Arc<Ctx>, mut repo: Repo, mut rng: Rng) -> (Repo, Option<String>) {
    loop {
        let step = match rng.range(0, 99) {
            0..=24 => monolithic(&ctx, &mut repo, &mut rng).await,
            25..=49 => chunked(&ctx, &mut repo, &mut rng).await,
            50..=69 => push_manifest(&ctx, &mut repo, &mut rng).await,
            70..=74 => push_index(&ctx, &mut repo, &mut rng).await,
            75..=84 => shared(&ctx, &mut rng).await,
            _ => read_back(&ctx, &repo, &mut rng).await,
        };
        match step {
            Ok(()) => {}
            Err(Stop::Cut) => return (repo, None),
            Err(Stop::Fail(e)) => {
                let failure = format!("{}: {e}", repo.name);
                return (repo, Some(failure));
            }
        }
    }
}

/// Either a pool blob (whose digest other tasks push at the same time) or fresh bytes.
fn blob_data(ctx: &Ctx, rng: &mut Rng) -> Arc<Vec<u8>> {
    if rng.chance(25) {
        let i = rng.range(0, ctx.pool.data.len() as u64 - 1) as usize;
        Arc::clone(&ctx.pool.data[i])
    } else {
        let len = rng.blob_size();
        Arc::new(bytes(rng.next(), len))
    }
}

/// Notes an acknowledged blob.
fn acked_blob(ctx: &Ctx, repo: &mut Repo, blob: Blob) {
    repo.unsure_blobs.retain(|b| b.digest != blob.digest);
    repo.fresh_blobs.push(blob);
    Tally::add(&ctx.tally.acked_ops, 1);
}

/// A blob in one request (POST `?digest=`) or two (POST, then PUT with the body).
async fn monolithic(ctx: &Ctx, repo: &mut Repo, rng: &mut Rng) -> Step {
    let data = blob_data(ctx, rng);
    let blob = Blob {
        digest: sha256(&data),
        len: data.len() as u64,
    };
    let uploads = ctx.url(&format!("/v2/{}/blobs/uploads/", repo.name));
    let put = if rng.chance(40) {
        ctx.client
            .post(with_digest(&uploads, &blob.digest))
            .body(data.to_vec())
    } else {
        let a = ctx.fetch(ctx.client.post(&uploads)).await?;
        a.expect(202, "POST upload")?;
        let loc = location_path(&a.header("location"));
        ctx.client
            .put(ctx.url(&with_digest(&loc, &blob.digest)))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
    };
    repo.unsure_blobs.push(blob.clone());
    let a = ctx.fetch(put).await?;
    a.expect(201, "monolithic blob push")?;
    check_digest_header(&a.header("docker-content-digest"), &blob.digest)?;
    acked_blob(ctx, repo, blob);
    Ok(())
}

fn check_digest_header(got: &str, want: &str) -> Step {
    if got == want {
        Ok(())
    } else {
        Err(Stop::Fail(format!(
            "Docker-Content-Digest {got}, expected {want}"
        )))
    }
}

/// A chunked upload: POST, PATCHes (with `Content-Range`, or streamed without it), then PUT
/// `?digest=` with or without a last chunk; now and then abandoned half-way on purpose.
async fn chunked(ctx: &Ctx, repo: &mut Repo, rng: &mut Rng) -> Step {
    let data = blob_data(ctx, rng);
    let digest = sha256(&data);
    let a = ctx
        .fetch(
            ctx.client
                .post(ctx.url(&format!("/v2/{}/blobs/uploads/", repo.name))),
        )
        .await?;
    a.expect(202, "POST upload")?;
    let s = repo.sessions.len();
    repo.sessions.push(Session {
        location: location_path(&a.header("location")),
        data: Arc::clone(&data),
        digest: digest.clone(),
        acked: 0,
        pending: Pending::Nothing,
    });
    let streamed = rng.chance(30);
    let abandon = rng.chance(10);
    // Chunks of at least 64 bytes, so that no session ever stands at one byte (`0-0`).
    let pieces = rng.range(1, 5);
    let mut cuts: Vec<u64> = (0..pieces)
        .map(|_| rng.range(64.min(data.len() as u64), data.len() as u64))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let last_in_put = rng.chance(40);
    let mut offset = 0u64;
    for (n, &end) in cuts.iter().enumerate() {
        if end <= offset || (last_in_put && n == cuts.len() - 1) {
            continue;
        }
        if abandon && n == cuts.len() / 2 && offset > 0 {
            // Left open: the check after the restart must resume it.
            return Ok(());
        }
        patch(ctx, repo, s, offset, end, streamed, rng).await?;
        offset = end;
    }
    let loc = repo.sessions[s].location.clone();
    let mut put = ctx
        .client
        .put(ctx.url(&with_digest(&loc, &digest)))
        .header("content-type", "application/octet-stream");
    if offset < data.len() as u64 {
        put = put
            .header("content-range", format!("{offset}-{}", data.len() - 1))
            .body(data[offset as usize..].to_vec());
    }
    repo.sessions[s].pending = Pending::Finish;
    let a = ctx.fetch(put).await?;
    a.expect(201, "PUT finishing a chunked upload")?;
    check_digest_header(&a.header("docker-content-digest"), &digest)?;
    repo.sessions.remove(s);
    acked_blob(
        ctx,
        repo,
        Blob {
            digest,
            len: data.len() as u64,
        },
    );
    Ok(())
}

/// One PATCH of `data[from..to]` onto session `s`; on 202 the session's acknowledged offset
/// moves to what the registry's `Range` says, which must be `to`.
async fn patch(
    ctx: &Ctx,
    repo: &mut Repo,
    s: usize,
    from: u64,
    to: u64,
    streamed: bool,
    rng: &mut Rng,
) -> Step {
    let session = &repo.sessions[s];
    let chunk = session.data[from as usize..to as usize].to_vec();
    let mut req = ctx
        .client
        .request(Method::PATCH, ctx.url(&session.location))
        .header("content-type", "application/octet-stream");
    req = if streamed {
        // Pieces with pauses between them, without Content-Range or Content-Length: a kill
        // lands in the middle of the body, which the registry must drop whole.
        let pause = rng.range(0, 3);
        let pieces: Vec<Vec<u8>> = chunk.chunks(32 << 10).map(<[u8]>::to_vec).collect();
        let body = futures::stream::iter(pieces).then(move |p| async move {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            Ok::<_, std::io::Error>(p)
        });
        req.body(reqwest::Body::wrap_stream(body))
    } else {
        req.header("content-range", format!("{from}-{}", to - 1))
            .body(chunk)
    };
    repo.sessions[s].pending = Pending::Patch(to - from);
    let a = ctx.fetch(req).await?;
    a.expect(202, "PATCH")?;
    let range = a.header("range");
    if range_offset(&range) != Some(to) {
        return Err(Stop::Fail(format!(
            "PATCH of {from}..{to} answered Range {range:?}"
        )));
    }
    let session = &mut repo.sessions[s];
    session.acked = to;
    session.pending = Pending::Nothing;
    let loc = a.header("location");
    if !loc.is_empty() {
        session.location = location_path(&loc);
    }
    Tally::add(&ctx.tally.acked_ops, 1);
    Ok(())
}

/// An image manifest over acknowledged blobs, pushed by tag (a tag move when the tag exists)
/// or by digest; now and then an older manifest pushed again under a tag.
async fn push_manifest(ctx: &Ctx, repo: &mut Repo, rng: &mut Rng) -> Step {
    let old = repo.acked_manifests();
    let m = if !old.is_empty() && rng.chance(15) {
        rng.pick(&old).cloned().expect("not empty")
    } else {
        let blobs = repo.acked_blobs();
        if blobs.len() < 2 {
            return monolithic(ctx, repo, rng).await;
        }
        let config = rng.pick(&blobs).cloned().expect("not empty");
        let layers: Vec<Blob> = (0..rng.range(1, 3))
            .map(|_| rng.pick(&blobs).cloned().expect("not empty"))
            .collect();
        repo.counter += 1;
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config.digest, "size": config.len},
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": l.digest, "size": l.len})).collect::<Vec<_>>(),
            "annotations": {"org.example.crash": format!("{} {}", repo.name, repo.counter)},
        });
        let body = serde_json::to_vec(&body).expect("json");
        Manifest {
            digest: sha256(&body),
            media_type: OCI_MANIFEST,
            body: Arc::new(body),
        }
    };
    put_manifest(ctx, repo, rng, m).await
}

/// An index over acknowledged manifests.
async fn push_index(ctx: &Ctx, repo: &mut Repo, rng: &mut Rng) -> Step {
    let images: Vec<Manifest> = repo
        .acked_manifests()
        .into_iter()
        .filter(|m| m.media_type == OCI_MANIFEST)
        .collect();
    if images.is_empty() {
        return push_manifest(ctx, repo, rng).await;
    }
    let children: Vec<Manifest> = (0..rng.range(1, 3))
        .map(|_| rng.pick(&images).cloned().expect("not empty"))
        .collect();
    repo.counter += 1;
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|c| serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": c.digest, "size": c.body.len(),
            "platform": {"os": "linux", "architecture": "amd64"}})).collect::<Vec<_>>(),
        "annotations": {"org.example.crash": format!("{} {}", repo.name, repo.counter)},
    });
    let body = serde_json::to_vec(&body).expect("json");
    let m = Manifest {
        digest: sha256(&body),
        media_type: OCI_INDEX,
        body: Arc::new(body),
    };
    put_manifest(ctx, repo, rng, m).await
}

/// PUTs `m` by a tag (70%) or by its digest, entering it as in flight first.
async fn put_manifest(ctx: &Ctx, repo: &mut Repo, rng: &mut Rng, m: Manifest) -> Step {
    let tag = rng.chance(70).then(|| *rng.pick(&TAGS).expect("tags"));
    let reference = tag.unwrap_or(&m.digest).to_owned();
    repo.unsure_manifests.push(m.clone());
    if let Some(t) = tag {
        repo.tags.entry(t.to_owned()).or_default().in_flight = Some(m.digest.clone());
    }
    let a = ctx
        .fetch(
            ctx.client
                .put(ctx.url(&format!("/v2/{}/manifests/{reference}", repo.name)))
                .header("content-type", m.media_type)
                .body(m.body.to_vec()),
        )
        .await?;
    a.expect(201, "manifest PUT")?;
    check_digest_header(&a.header("docker-content-digest"), &m.digest)?;
    repo.unsure_manifests.retain(|u| u.digest != m.digest);
    if let Some(t) = tag {
        let state = repo.tags.get_mut(t).expect("entered above");
        state.acked = Some(m.digest.clone());
        state.in_flight = None;
    }
    if !repo.acked_manifests().iter().any(|a| a.digest == m.digest) {
        repo.fresh_manifests.push(m);
    }
    Tally::add(&ctx.tally.acked_ops, 1);
    Ok(())
}

/// A pool blob pushed into the shared repository, where every task pushes the same digests.
async fn shared(ctx: &Ctx, rng: &mut Rng) -> Step {
    let i = rng.range(0, ctx.pool.data.len() as u64 - 1) as usize;
    let (data, digest) = (&ctx.pool.data[i], &ctx.pool.digests[i]);
    let uploads = ctx.url(&format!("/v2/{}/blobs/uploads/", ctx.pool.repo));
    let a = ctx
        .fetch(
            ctx.client
                .post(with_digest(&uploads, digest))
                .body(data.to_vec()),
        )
        .await?;
    a.expect(201, "shared blob push")?;
    ctx.pool.acked.lock().expect("pool lock").insert(i);
    Tally::add(&ctx.tally.acked_ops, 1);
    Ok(())
}

/// Reads that must be whole: an acknowledged blob (GET, or HEAD for its size), an
/// acknowledged manifest by digest, a tag (which only this task moves, so it must name the
/// last acknowledged manifest unless a PUT was cut), and a pool digest in the shared
/// repository (absent or whole, never partial, while other tasks push it).
async fn read_back(ctx: &Ctx, repo: &Repo, rng: &mut Rng) -> Step {
    let blobs = repo.acked_blobs();
    if let Some(b) = rng.pick(&blobs) {
        let path = format!("/v2/{}/blobs/{}", repo.name, b.digest);
        if rng.chance(30) {
            let a = ctx.fetch(ctx.client.head(ctx.url(&path))).await?;
            a.expect(200, "HEAD of an acknowledged blob")?;
            if a.header("content-length") != b.len.to_string() {
                return Err(Stop::Fail(format!(
                    "HEAD {path}: Content-Length {:?}, expected {}",
                    a.header("content-length"),
                    b.len
                )));
            }
        } else {
            let a = ctx.fetch(ctx.client.get(ctx.url(&path))).await?;
            a.expect(200, "GET of an acknowledged blob")?;
            whole(&a.body, &b.digest, &path)?;
        }
    }
    let manifests = repo.acked_manifests();
    if let Some(m) = rng.pick(&manifests) {
        let path = format!("/v2/{}/manifests/{}", repo.name, m.digest);
        let a = ctx
            .fetch(ctx.client.get(ctx.url(&path)).header("accept", ACCEPT))
            .await?;
        a.expect(200, "GET of an acknowledged manifest")?;
        whole(&a.body, &m.digest, &path)?;
    }
    let tagged: Vec<(&String, &String)> = repo
        .tags
        .iter()
        .filter(|(_, t)| t.in_flight.is_none())
        .filter_map(|(name, t)| t.acked.as_ref().map(|d| (name, d)))
        .collect();
    if let Some((tag, digest)) = rng.pick(&tagged) {
        let path = format!("/v2/{}/manifests/{tag}", repo.name);
        let a = ctx
            .fetch(ctx.client.get(ctx.url(&path)).header("accept", ACCEPT))
            .await?;
        a.expect(200, "GET of a tag")?;
        whole(&a.body, digest, &path)?;
    }
    let i = rng.range(0, ctx.pool.data.len() as u64 - 1) as usize;
    let path = format!("/v2/{}/blobs/{}", ctx.pool.repo, ctx.pool.digests[i]);
    let acked = ctx.pool.acked.lock().expect("pool lock").contains(&i);
    let a = ctx.fetch(ctx.client.get(ctx.url(&path))).await?;
    match a.status.as_u16() {
        404 if !acked => Ok(()),
        200 => whole(&a.body, &ctx.pool.digests[i], &path),
        _ => a.expect(200, "GET of a shared blob"),
    }
}

/// Fails unless `body` is exactly the content of `digest`.
pub fn whole(body: &[u8], digest: &str, what: &str) -> Step {
    let got = sha256(body);
    if got == digest {
        Ok(())
    } else {
        Err(Stop::Fail(format!(
            "{what}: {} bytes hashing to {got}, not the content of {digest}",
            body.len()
        )))
    }
}
