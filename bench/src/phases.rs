//! One run of one registry, phase by phase: the pushes always (the other phases read what
//! they wrote), then the workloads asked for. Each phase adds its figures to the run's.

use crate::server::{Kind, Server};
use crate::workloads::{self, hammer, manifest, numbered_manifest, parallel, walk, Ctx};
use crate::{gb, leak, mbps, median, start, Args, Data, Figures, Sizes, LIST_REPEATS};
use anyhow::{Context, Result};
use reqwest::Method;
use std::time::{Duration, Instant};

/// What every phase of a run works with.
struct Run<'a> {
    srv: &'a Server,
    ctx: Ctx,
    sizes: &'a Sizes,
    data: &'a Data,
    f: Figures,
}

impl Run<'_> {
    /// Server CPU seconds spent by `phase`, and its result.
    async fn cpu_of<T>(&self, phase: impl std::future::Future<Output = T>) -> (f64, T) {
        let cpu = self.srv.cpu_seconds();
        let out = phase.await;
        (self.srv.cpu_seconds() - cpu, out)
    }

    fn big_bytes(&self) -> u64 {
        (self.sizes.big_count * self.sizes.big_size) as u64
    }

    /// The manifest tagged `v0` in `bench/mono`, over the first eight big blobs.
    fn first_manifest(&self) -> bytes::Bytes {
        let layers = &self.data.big[..8.min(self.data.big.len())];
        manifest(&self.data.config, layers)
    }
}

/// Starts `kind` on a fresh data directory, runs every phase asked for, and stops it
/// (keeping its directory in `keep`).
pub async fn run_one(
    kind: Kind,
    args: &Args,
    sizes: &Sizes,
    data: &Data,
    keep: &mut Vec<tempfile::TempDir>,
) -> Result<Figures> {
    let srv = start(kind, args).await?;
    let mut f = Figures::new();
    f.insert("startup_ms", srv.startup.as_secs_f64() * 1000.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.insert("idle_rss_mib", srv.rss_mib());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let ctx = Ctx {
        client,
        base: srv.base.clone(),
    };
    let mut run = Run {
        srv: &srv,
        ctx,
        sizes,
        data,
        f,
    };
    push(&mut run).await?;
    manifests(&mut run).await?;
    if args.wants("small") || args.wants("catalog") {
        small(&mut run).await?;
    }
    if args.wants("pull") {
        pull(&mut run).await?;
    }
    if args.wants("manifest") {
        manifest_reads(&mut run).await?;
    }
    if args.wants("tags") {
        tags(&mut run).await?;
    }
    if args.wants("catalog") {
        catalog(&mut run).await?;
    }
    if args.wants("mounts") {
        mounts(&mut run).await?;
    }
    let mut f = run.f;
    f.insert("peak_rss_mib", srv.peak_rss_mib());
    keep.extend(srv.into_dir());
    Ok(f)
}

/// The big blobs pushed monolithic into `bench/mono`, then chunked into `bench/chunked`.
async fn push(r: &mut Run<'_>) -> Result<()> {
    let (parallelism, chunk) = (r.sizes.push_parallel, r.sizes.chunk);
    let ctx = r.ctx.clone();
    let (cpu, d) = r
        .cpu_of(parallel(r.data.big.clone(), parallelism, |b| {
            let ctx = ctx.clone();
            async move { ctx.push_monolithic("bench/mono", &b).await }
        }))
        .await;
    let d = d.context("push monolithic")?;
    r.f.insert("push_mono_MBps", mbps(r.big_bytes(), d));
    r.f.insert("push_mono_cpu_s_per_GB", cpu / gb(r.big_bytes()));

    let (cpu, d) = r
        .cpu_of(parallel(r.data.big.clone(), parallelism, |b| {
            let ctx = ctx.clone();
            async move { ctx.push_chunked("bench/chunked", &b, chunk).await }
        }))
        .await;
    let d = d.context("push chunked")?;
    r.f.insert("push_chunked_MBps", mbps(r.big_bytes(), d));
    r.f.insert("push_chunked_cpu_s_per_GB", cpu / gb(r.big_bytes()));
    Ok(())
}

/// Manifests: one per eight big blobs tagged `v<i>` in `bench/mono` (what the read phases
/// use), then `sizes.manifests` distinct ones, each under its own tag in `bench/manifests`,
/// from `push_parallel` clients: the figure is those puts per second.
async fn manifests(r: &mut Run<'_>) -> Result<()> {
    r.ctx.push_monolithic("bench/mono", &r.data.config).await?;
    let tagged: Vec<_> = r
        .data
        .big
        .chunks(8)
        .map(|ls| manifest(&r.data.config, ls))
        .collect();
    let ctx = r.ctx.clone();
    parallel(tagged.into_iter().enumerate().collect(), 8, |(i, m)| {
        let ctx = ctx.clone();
        async move {
            let tag = format!("v{i}");
            ctx.put_manifest("bench/mono", &tag, &m).await.map(drop)
        }
    })
    .await
    .context("tag manifests")?;

    let (config, layers) = (&r.data.config, &r.data.big[..8.min(r.data.big.len())]);
    let distinct: Vec<_> = (0..r.sizes.manifests)
        .map(|i| numbered_manifest(config, layers, i))
        .collect();
    ctx.push_monolithic("bench/manifests", config).await?;
    for l in layers {
        ctx.mount("bench/manifests", "bench/mono", &l.digest)
            .await?;
    }
    let d = parallel(
        distinct.into_iter().enumerate().collect(),
        r.sizes.push_parallel,
        |(i, m)| {
            let ctx = ctx.clone();
            async move {
                let tag = format!("m{i}");
                ctx.put_manifest("bench/manifests", &tag, &m)
                    .await
                    .map(drop)
            }
        },
    )
    .await
    .context("push manifests")?;
    r.f.insert(
        "manifest_push_per_s",
        r.sizes.manifests as f64 / d.as_secs_f64(),
    );
    Ok(())
}

/// Small (4 KiB) blobs pushed monolithic into `bench/small`.
async fn small(r: &mut Run<'_>) -> Result<()> {
    let ctx = r.ctx.clone();
    let (cpu, d) = r
        .cpu_of(parallel(r.data.small.clone(), r.sizes.push_parallel, |b| {
            let ctx = ctx.clone();
            async move { ctx.push_monolithic("bench/small", &b).await }
        }))
        .await;
    let d = d.context("push small")?;
    let n = r.data.small.len() as f64;
    r.f.insert("push_4KiB_per_s", n / d.as_secs_f64());
    r.f.insert("push_4KiB_cpu_s_per_1000", cpu / n * 1000.0);
    Ok(())
}

/// The big blobs pulled, digest-verified at each parallelism, then length-only at the
/// largest. A single client reads each blob once: its figure is the first pull after the
/// push. The parallel pulls read the set several times over, so that each lasts seconds
/// rather than a fraction of one, and start-up and tail weigh little.
async fn pull(r: &mut Run<'_>) -> Result<()> {
    let cpu = r.srv.cpu_seconds();
    let mut pulled = 0u64;
    for &p in &r.sizes.pulls {
        let (bytes, d) = pull_all(r, p, true).await.context("pull")?;
        pulled += bytes;
        r.f.insert(leak(format!("pull_verified_{p}_MBps")), mbps(bytes, d));
    }
    let top = *r.sizes.pulls.last().unwrap_or(&1);
    let (bytes, d) = pull_all(r, top, false).await.context("pull")?;
    pulled += bytes;
    r.f.insert(leak(format!("pull_length_{top}_MBps")), mbps(bytes, d));
    r.f.insert(
        "pull_cpu_s_per_GB",
        (r.srv.cpu_seconds() - cpu) / gb(pulled),
    );
    Ok(())
}

/// The bytes a pull of the big blobs at parallelism `p` moves, and how long it took.
async fn pull_all(r: &Run<'_>, p: usize, verify: bool) -> Result<(u64, Duration)> {
    let rounds = if p > 1 { r.sizes.pull_rounds } else { 1 };
    let set: Vec<_> = (0..rounds)
        .flat_map(|_| r.data.big.iter().cloned())
        .collect();
    let ctx = r.ctx.clone();
    let d = parallel(set, p, move |b| {
        let ctx = ctx.clone();
        async move { ctx.pull("bench/mono", &b, verify).await.map(|_| ()) }
    })
    .await?;
    Ok((r.big_bytes() * rounds as u64, d))
}

/// Manifest GET and HEAD, by tag and by digest, from many clients for a while each.
async fn manifest_reads(r: &mut Run<'_>) -> Result<()> {
    let digest = workloads::sha256(&r.first_manifest());
    let cpu = r.srv.cpu_seconds();
    let mut requests = 0;
    for (name, method, reference) in [
        ("get_tag", Method::GET, "v0".to_owned()),
        ("get_digest", Method::GET, digest.clone()),
        ("head_tag", Method::HEAD, "v0".to_owned()),
        ("head_digest", Method::HEAD, digest.clone()),
    ] {
        let path = format!("/v2/bench/mono/manifests/{reference}");
        let (clients, time) = (r.sizes.hammer_parallel, r.sizes.hammer);
        let rate = hammer(&r.ctx, method, &path, &digest, clients, time)
            .await
            .context(name)?;
        requests += rate.requests;
        r.f.insert(leak(format!("manifest_{name}_rps")), rate.per_second);
        r.f.insert(leak(format!("manifest_{name}_p50_ms")), rate.p50_ms);
        r.f.insert(leak(format!("manifest_{name}_p99_ms")), rate.p99_ms);
    }
    let per_1000 = (r.srv.cpu_seconds() - cpu) / requests as f64 * 1000.0;
    r.f.insert("manifest_cpu_s_per_1000_req", per_1000);
    Ok(())
}

/// Tags: many created on one manifest, then the whole list read (the first time after the
/// writes, then the median of repeated reads, as CI jobs and update bots poll a
/// repository), then walked page by page (Distribution 2.8 ignores `n` on tags and answers
/// in one page).
async fn tags(r: &mut Run<'_>) -> Result<()> {
    let m0 = r.first_manifest();
    let ctx = r.ctx.clone();
    let d = parallel((0..r.sizes.tags).collect(), r.sizes.push_parallel, |i| {
        let (ctx, m0) = (ctx.clone(), m0.clone());
        async move {
            let tag = format!("t{i:06}");
            ctx.put_manifest("bench/mono", &tag, &m0).await.map(drop)
        }
    })
    .await
    .context("create tags")?;
    r.f.insert("tag_create_per_s", r.sizes.tags as f64 / d.as_secs_f64());
    let expected = r.sizes.tags + r.data.big.chunks(8).len();
    let mut times = Vec::new();
    for _ in 0..LIST_REPEATS {
        let t0 = Instant::now();
        let (tags, _) = walk(&ctx, "/v2/bench/mono/tags/list", "tags", |_| true).await?;
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(tags == expected, "tag list found {tags} tags");
    }
    r.f.insert("tag_list_first_ms", times[0]);
    r.f.insert("tag_list_all_ms", median(times));
    let t0 = Instant::now();
    let first = format!("/v2/bench/mono/tags/list?n={}", r.sizes.tag_page);
    let (tags, pages) = walk(&ctx, &first, "tags", |_| true).await?;
    let took = t0.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(tags == expected, "tag walk found {tags} tags");
    r.f.insert("tag_walk_paged_ms", took);
    r.f.insert("tag_page_ms", took / pages as f64);
    Ok(())
}

/// Repositories: each gets an image by mounting its blobs, then the catalog is walked.
async fn catalog(r: &mut Run<'_>) -> Result<()> {
    let small_layer = r.data.small[0].clone();
    let tiny = manifest(&r.data.config, std::slice::from_ref(&small_layer));
    let ctx = r.ctx.clone();
    let (cfg, layer) = (r.data.config.digest.clone(), small_layer.digest);
    let d = parallel((0..r.sizes.repos).collect(), r.sizes.push_parallel, |i| {
        let (ctx, tiny, cfg, layer) = (ctx.clone(), tiny.clone(), cfg.clone(), layer.clone());
        async move {
            let repo = format!("cat/r{i:05}");
            ctx.mount(&repo, "bench/mono", &cfg).await?;
            ctx.mount(&repo, "bench/small", &layer).await?;
            ctx.put_manifest(&repo, "latest", &tiny).await.map(drop)
        }
    })
    .await
    .context("create repositories")?;
    r.f.insert("repo_create_per_s", r.sizes.repos as f64 / d.as_secs_f64());
    let t0 = Instant::now();
    let first = format!("/v2/_catalog?n={}", r.sizes.tag_page);
    let (repos, pages) = walk(&ctx, &first, "repositories", |r| r.starts_with("cat/")).await?;
    let took = t0.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        repos == r.sizes.repos,
        "catalog walk found {repos} of the {} repositories",
        r.sizes.repos
    );
    r.f.insert("catalog_walk_ms", took);
    r.f.insert("catalog_page_ms", took / pages as f64);
    Ok(())
}

/// Cross-repository mounts of the big blobs.
async fn mounts(r: &mut Run<'_>) -> Result<()> {
    let ctx = r.ctx.clone();
    let big = r.data.big.clone();
    let d = parallel((0..r.sizes.mounts).collect(), r.sizes.push_parallel, |i| {
        let ctx = ctx.clone();
        let n = big.len();
        let digest = big[i % n].digest.clone();
        async move {
            ctx.mount(&format!("mnt/m{}", i / n), "bench/mono", &digest)
                .await
        }
    })
    .await
    .context("mounts")?;
    r.f.insert("mount_per_s", r.sizes.mounts as f64 / d.as_secs_f64());
    Ok(())
}
