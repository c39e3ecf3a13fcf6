//! How cost grows: the time of one listing page as a repository's tags and the registry's
//! repositories grow (10k, 100k, 1M), and push and pull throughput at 1, 8, 64 and 256
//! clients. A page must cost the same whatever the size of the list it comes from.

use crate::workloads::{blobs, manifest, parallel, Ctx};
use crate::{mbps, Figures};
use anyhow::{ensure, Context, Result};
use std::time::{Duration, Instant};

/// Entries per listing page.
const PAGE: usize = 100;
/// Samples of each page position; the median is reported.
const SAMPLES: usize = 15;

/// Sizes of a scaling run.
pub struct Scale {
    /// List sizes at which pages are timed, ascending.
    pub levels: Vec<usize>,
    /// Client counts for push and pull.
    pub clients: Vec<usize>,
    /// Blobs pushed and pulled at each client count, and their size.
    pub blobs: usize,
    pub blob_size: usize,
}

/// Median time of a GET of `path`, which must answer 200 with `expect` entries under `key`.
async fn page_ms(ctx: &Ctx, path: &str, key: &str, expect: usize) -> Result<f64> {
    let mut times = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let t0 = Instant::now();
        let r = ctx.client.get(format!("{}{path}", ctx.base)).send().await?;
        ensure!(r.status() == 200, "GET {path}: {}", r.status());
        let v: serde_json::Value = r.json().await?;
        let n = v[key].as_array().map_or(0, |a| a.len());
        ensure!(n == expect, "GET {path}: {n} entries, expected {expect}");
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() / 2])
}

/// Times the first, a middle and the last full page of a list named `name(i)`, i < `len`.
async fn pages(
    ctx: &Ctx,
    f: &mut Figures,
    what: &str,
    base: &str,
    key: &str,
    len: usize,
    name: impl Fn(usize) -> String,
) -> Result<()> {
    let sep = if base.contains('?') { '&' } else { '?' };
    for (pos, last) in [
        ("first", None),
        ("middle", Some(len / 2)),
        ("last", Some(len - PAGE - 1)),
    ] {
        let path = match last {
            None => format!("{base}{sep}n={PAGE}"),
            Some(i) => format!("{base}{sep}n={PAGE}&last={}", name(i)),
        };
        let ms = page_ms(ctx, &path, key, PAGE).await?;
        f.insert(crate::leak(format!("{what}_{len}_page_{pos}_ms")), ms);
    }
    Ok(())
}

/// Grows one repository's tags and the registry's repositories level by level, timing pages.
pub async fn listings(ctx: &Ctx, scale: &Scale, f: &mut Figures) -> Result<()> {
    let config = blobs(7, 1, 512).remove(0);
    let layer = blobs(8, 1, 4096).remove(0);
    ctx.push_monolithic("scale/tags", &config).await?;
    ctx.push_monolithic("scale/tags", &layer).await?;
    let m = manifest(&config, std::slice::from_ref(&layer));
    let tag = |i: usize| format!("t{i:07}");
    let repo = |i: usize| format!("scale/r{i:07}");
    let mut have = 0;
    for &level in &scale.levels {
        let t0 = Instant::now();
        parallel((have..level).collect(), 64, |i| {
            let (ctx, m, tag) = (ctx.clone(), m.clone(), tag(i));
            async move { ctx.put_manifest("scale/tags", &tag, &m).await.map(|_| ()) }
        })
        .await
        .context("creating tags")?;
        let d = t0.elapsed();
        f.insert(
            crate::leak(format!("tags_{level}_create_per_s")),
            (level - have) as f64 / d.as_secs_f64(),
        );
        let t0 = Instant::now();
        parallel((have..level).collect(), 64, |i| {
            let (ctx, d, repo) = (ctx.clone(), config.digest.clone(), repo(i));
            async move { ctx.mount(&repo, "scale/tags", &d).await }
        })
        .await
        .context("creating repositories")?;
        f.insert(
            crate::leak(format!("repos_{level}_create_per_s")),
            (level - have) as f64 / t0.elapsed().as_secs_f64(),
        );
        have = level;
        eprintln!("  {level} tags and repositories");
        pages(
            ctx,
            f,
            "tags",
            "/v2/scale/tags/tags/list",
            "tags",
            level,
            tag,
        )
        .await?;
        // The catalog also holds scale/tags, which sorts before every scale/r….
        pages(
            ctx,
            f,
            "catalog",
            "/v2/_catalog",
            "repositories",
            level,
            repo,
        )
        .await?;
    }
    Ok(())
}

/// Pushes fresh blobs, then pulls them (length-checked), at each client count.
pub async fn clients(
    ctx: &Ctx,
    scale: &Scale,
    cpu: impl Fn() -> f64,
    f: &mut Figures,
) -> Result<()> {
    for (k, &c) in scale.clients.iter().enumerate() {
        // New bytes at every level: a second push of the same blob would be deduplicated.
        let data = blobs(100 + k as u64, scale.blobs, scale.blob_size);
        let bytes = (scale.blobs * scale.blob_size) as u64;
        let repo = format!("scale/push{c}");
        let c0 = cpu();
        let d = parallel(data.clone(), c, |b| {
            let (ctx, repo) = (ctx.clone(), repo.clone());
            async move { ctx.push_monolithic(&repo, &b).await }
        })
        .await
        .with_context(|| format!("push with {c} clients"))?;
        f.insert(
            crate::leak(format!("push_{c}_clients_MBps")),
            mbps(bytes, d),
        );
        f.insert(
            crate::leak(format!("push_{c}_clients_cpu_s_per_GB")),
            (cpu() - c0) / crate::gb(bytes),
        );
        let c0 = cpu();
        let d = parallel(data, c, |b| {
            let (ctx, repo) = (ctx.clone(), repo.clone());
            async move { ctx.pull(&repo, &b, false).await.map(|_| ()) }
        })
        .await
        .with_context(|| format!("pull with {c} clients"))?;
        f.insert(
            crate::leak(format!("pull_{c}_clients_MBps")),
            mbps(bytes, d),
        );
        f.insert(
            crate::leak(format!("pull_{c}_clients_cpu_s_per_GB")),
            (cpu() - c0) / crate::gb(bytes),
        );
    }
    Ok(())
}

/// Bounds a scaling step: a registry that cannot keep up is reported, not waited for.
pub async fn bounded<T>(
    what: &str,
    limit: Duration,
    f: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, f)
        .await
        .with_context(|| format!("{what}: still running after {} s", limit.as_secs()))?
}
