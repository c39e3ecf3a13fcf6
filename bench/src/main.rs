//! `berth-bench`: runs Berth and the reference registry (CNCF Distribution) side by side on
//! this machine, alternating them run by run, and writes BENCHMARKS.md and a JSON record.
//!
//! Every workload is bounded in count and time and talks to loopback only.

mod phases;
mod s3;
mod scaling;
mod server;
mod workloads;

use anyhow::{Context, Result};
use clap::Parser;
use server::{Kind, Server, Storage};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use workloads::{blobs, Blob, Ctx};

#[derive(Parser)]
#[command(about = "Benchmark Berth against the reference registry")]
struct Args {
    /// The berth binary (build it with --release).
    #[arg(long, default_value = "target/release/berth")]
    berth: PathBuf,
    /// The reference registry binary (Debian package docker-registry).
    #[arg(long, default_value = "/usr/bin/docker-registry")]
    distribution: PathBuf,
    /// Runs of each registry (medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// A tiny version of every workload: checks that the benchmark works, measures nothing.
    #[arg(long)]
    quick: bool,
    /// Measure how cost grows instead: listing pages at 10k, 100k and 1M tags and
    /// repositories (Berth; Distribution pages no tag list), push and pull at 1 to 256 clients.
    #[arg(long)]
    scaling: bool,
    /// Both registries on one S3 server (moto_server, from PyPI) instead of the local disk:
    /// pushes and pulls, and the S3 requests and bytes each spends on them.
    #[arg(long)]
    s3: bool,
    /// Where to write the Markdown report (not written in --quick mode).
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Where to write every figure of every run as JSON.
    #[arg(long, default_value = "bench/results.json")]
    json: PathBuf,
    /// Put the registries' data directories here and leave them when done (for inspection,
    /// or to keep deletions from slowing the next benchmark's file creation).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run only this registry (for profiling one side); the report needs both.
    #[arg(long, value_enum)]
    only: Option<Kind>,
    /// Run only these workloads (comma-separated: push, small, pull, manifest, tags, catalog,
    /// mounts; the big-blob push always runs, the others read what it wrote; with --scaling:
    /// clients, listings).
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
}

impl Args {
    fn wants(&self, workload: &str) -> bool {
        self.workloads.is_empty() || self.workloads.iter().any(|w| w == workload)
    }
}

/// Whole tag lists read to take the median of.
const LIST_REPEATS: usize = 5;

/// Workload sizes.
struct Sizes {
    big_count: usize,
    big_size: usize,
    chunk: usize,
    small_count: usize,
    push_parallel: usize,
    pulls: Vec<usize>,
    /// Times the parallel pulls read the whole set (the single-client pull reads it once).
    pull_rounds: usize,
    hammer: Duration,
    hammer_parallel: usize,
    tags: usize,
    tag_page: usize,
    repos: usize,
    mounts: usize,
    /// Distinct manifests pushed.
    manifests: usize,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            big_count: 64,
            big_size: 16 << 20,
            chunk: 5 << 20,
            small_count: 2000,
            push_parallel: 8,
            pulls: vec![1, 8, 64],
            pull_rounds: 4,
            hammer: Duration::from_secs(10),
            hammer_parallel: 64,
            tags: 10_000,
            tag_page: 100,
            repos: 1000,
            mounts: 1000,
            manifests: 2000,
        }
    }

    fn quick() -> Sizes {
        Sizes {
            big_count: 8,
            big_size: 1 << 20,
            chunk: 300 << 10,
            small_count: 50,
            push_parallel: 4,
            pulls: vec![1, 8],
            pull_rounds: 2,
            hammer: Duration::from_millis(500),
            hammer_parallel: 8,
            tags: 120,
            tag_page: 50,
            repos: 30,
            mounts: 30,
            manifests: 40,
        }
    }
}

/// The inputs, generated once and shared by every run of both registries.
struct Data {
    big: Vec<Blob>,
    small: Vec<Blob>,
    config: Blob,
}

type Figures = BTreeMap<&'static str, f64>;

/// The figures of each run, with the registry that ran it.
type Runs = Vec<(Kind, Figures)>;

fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

/// Starts `kind` as the arguments say, on a fresh data directory.
async fn start(kind: Kind, args: &Args) -> Result<Server> {
    let dir = args.data_dir.as_deref();
    Server::start(kind, &args.berth, &args.distribution, dir, &Storage::Fs).await
}

/// Figure names are built once per run; leaking a few short strings keeps the map simple.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Is a bigger value better for this figure?
fn higher_is_better(name: &str) -> bool {
    name.ends_with("MBps") || name.ends_with("per_s") || name.ends_with("rps")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    v[v.len() / 2]
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map(|k| k / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({model}), {mem:.0} GiB memory, Linux {}",
        kernel.trim()
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.scaling {
        return scaling_main(&args).await;
    }
    if args.s3 {
        let runs = s3::s3_main(&args).await?;
        let (b, d) = (
            medians(&runs, Kind::Berth),
            medians(&runs, Kind::Distribution),
        );
        let table = advantage_table(&b, &d);
        println!("{table}");
        if !(args.quick || args.only.is_some()) {
            let text = format!("{}{table}", s3::report(&args));
            write_scaling(&args, "s3", &runs, &text)?;
        }
        return Ok(());
    }
    let sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let data = Data {
        big: blobs(1, sizes.big_count, sizes.big_size),
        small: blobs(2, sizes.small_count, 4096),
        config: blobs(3, 1, 512).remove(0),
    };
    let runs = alternating_runs(&args, &sizes, &data).await?;
    let (b, d) = (
        medians(&runs, Kind::Berth),
        medians(&runs, Kind::Distribution),
    );
    let table = advantage_table(&b, &d);
    println!("{table}");
    if args.quick {
        println!("quick run: the benchmark works; figures at this size mean nothing.");
        return Ok(());
    }
    if args.only.is_some() || !args.workloads.is_empty() {
        println!("partial run: BENCHMARKS.md and the JSON record are left as they were.");
        return Ok(());
    }
    let json = serde_json::json!({
        "machine": machine(),
        "section": "main",
        "runs": runs.iter().map(|(k, f)| serde_json::json!({"registry": k.name(), "figures": f})).collect::<Vec<_>>(),
        "median": {"berth": b, "distribution": d},
    });
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&json)?)?;
    write_section(&args.out, "main", &main_report(&args, &sizes, &table))?;
    eprintln!("wrote {} and {}", args.out.display(), args.json.display());
    Ok(())
}

/// Every run asked for, the registries alternating run by run.
async fn alternating_runs(args: &Args, sizes: &Sizes, data: &Data) -> Result<Runs> {
    let mut runs: Runs = Vec::new();
    let mut keep: Vec<tempfile::TempDir> = Vec::new();
    for run in 0..args.runs {
        for kind in [Kind::Berth, Kind::Distribution] {
            if args.only.is_some_and(|k| k != kind) {
                continue;
            }
            eprintln!("run {}/{}: {}", run + 1, args.runs, kind.name());
            let figures = phases::run_one(kind, args, sizes, data, &mut keep)
                .await
                .with_context(|| format!("{} run {}", kind.name(), run + 1))?;
            runs.push((kind, figures));
        }
    }
    if args.data_dir.is_some() {
        for dir in keep.drain(..) {
            let _ = dir.keep();
        }
    }
    Ok(runs)
}

/// Each figure's median over the runs of `kind`.
fn medians(runs: &[(Kind, Figures)], kind: Kind) -> Figures {
    let mut names: Vec<&'static str> = runs.iter().flat_map(|(_, f)| f.keys().copied()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| {
            let of_kind = runs.iter().filter(|(k, _)| *k == kind);
            (
                n,
                median(of_kind.filter_map(|(_, f)| f.get(n).copied()).collect()),
            )
        })
        .collect()
}

/// The Markdown table of both registries' medians and Berth's advantage in each figure.
fn advantage_table(b: &Figures, d: &Figures) -> String {
    let mut table = String::from(
        "| figure | Berth | Distribution 2.8.2 | Berth's advantage |\n|---|---:|---:|---:|\n",
    );
    for (name, bv) in b {
        let dv = d.get(name).copied().unwrap_or(0.0);
        let adv = if *bv == 0.0 || dv == 0.0 {
            "–".to_owned()
        } else if higher_is_better(name) {
            format!("{:.2}×", bv / dv)
        } else {
            format!("{:.2}×", dv / bv)
        };
        table.push_str(&format!("| {name} | {bv:.3} | {dv:.3} | {adv} |\n"));
    }
    table
}

/// The generated main section of BENCHMARKS.md: how it was measured, then the table.
fn main_report(args: &Args, sizes: &Sizes, table: &str) -> String {
    format!(
        "Berth against CNCF Distribution 2.8.2 (Debian `docker-registry`), both on the local filesystem in a fresh \
         temporary directory, delete enabled, no auth, on the same machine, alternating runs; medians of {} runs.\n\n\
         Machine: {}.\n\nRegenerate with `cargo build --release -p berth -p berth-bench && target/release/berth-bench`.\n\n\
         Workloads: {} × {} MiB blobs pushed {} in parallel (monolithic; chunked in {} MiB PATCHes), {} distinct \
         manifests pushed {} in parallel, {} × 4 KiB blobs, pulls at {:?} in parallel (sha256-verified, then \
         length-only; one client reads the set once, more read it {} times), manifest GET/HEAD by tag and digest with \
         {} clients for {} s each, {} tags walked {} per page, {} repositories walked in the catalog, {} \
         cross-repository mounts.\n\n{table}",
        args.runs,
        machine(),
        sizes.big_count,
        sizes.big_size >> 20,
        sizes.push_parallel,
        sizes.chunk >> 20,
        sizes.manifests,
        sizes.push_parallel,
        sizes.small_count,
        sizes.pulls,
        sizes.pull_rounds,
        sizes.hammer_parallel,
        sizes.hammer.as_secs(),
        sizes.tags,
        sizes.tag_page,
        sizes.repos,
        sizes.mounts,
    )
}

/// Replaces the generated section `name` of the Markdown report (between its markers),
/// leaving the rest of the file, such as hand-written notes, as it is.
fn write_section(path: &std::path::Path, name: &str, body: &str) -> Result<()> {
    let (begin, end) = (
        format!("<!-- begin {name}: generated by berth-bench -->"),
        format!("<!-- end {name} -->"),
    );
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
    let section = format!("{begin}\n{body}{end}");
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if b < e => format!("{}{section}{}", &old[..b], &old[e + end.len()..]),
        _ => format!("{}\n{section}\n", old.trim_end()),
    };
    std::fs::write(path, new)?;
    Ok(())
}

/// The scaling run: each registry once, on its own data directory.
async fn scaling_main(args: &Args) -> Result<()> {
    let scale = if args.quick {
        scaling::Scale {
            levels: vec![300, 600],
            clients: vec![1, 8],
            blobs: 16,
            blob_size: 64 << 10,
        }
    } else {
        scaling::Scale {
            levels: vec![10_000, 100_000, 1_000_000],
            clients: vec![1, 8, 64, 256],
            blobs: 256,
            blob_size: 2 << 20,
        }
    };
    let (clients, listings) = scaling_runs(args, &scale).await?;
    let write = !(args.quick || args.only.is_some());
    let clients_text = format!(
        "## How cost grows with clients\n\nOne run of each registry: {} fresh blobs of {} MiB pushed (monolithic) and \
         pulled (length-checked) at each client count. Regenerate with `target/release/berth-bench --scaling \
         --workloads clients`.\n\n",
        scale.blobs,
        scale.blob_size >> 20,
    );
    let listings_text = format!(
        "## How cost grows with list sizes\n\nListing pages (100 entries, median of 15 requests) at the first, a middle \
         and the last page of one repository's tags and of the catalog, as both grow to {:?}; Berth only: \
         Distribution 2.8 answers a tag list in one page whatever `n` says, and creating a million tags in its \
         directory tree would take hours. Regenerate with `target/release/berth-bench --scaling --workloads \
         listings`.\n\n",
        scale.levels,
    );
    for (name, results, text) in [
        ("scaling-clients", clients, clients_text),
        ("scaling-listings", listings, listings_text),
    ] {
        if results.is_empty() {
            continue;
        }
        let table = side_by_side(&results);
        println!("{table}");
        if write {
            write_scaling(args, name, &results, &format!("{text}{table}"))?;
        }
    }
    if !write {
        println!("quick or partial run: the report is left as it was.");
    }
    Ok(())
}

/// Each registry's client-scaling figures and (Berth's) listing figures.
async fn scaling_runs(args: &Args, scale: &scaling::Scale) -> Result<(Runs, Runs)> {
    let (mut clients, mut listings, mut keep) = (Vec::new(), Vec::new(), Vec::new());
    let hour = Duration::from_secs(3600);
    for kind in [Kind::Berth, Kind::Distribution] {
        if args.only.is_some_and(|k| k != kind) {
            continue;
        }
        eprintln!("scaling: {}", kind.name());
        let srv = start(kind, args).await?;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(512)
            .build()?;
        let ctx = Ctx {
            client,
            base: srv.base.clone(),
        };
        if args.wants("clients") {
            let mut f = Figures::new();
            let phase = scaling::clients(&ctx, scale, || srv.cpu_seconds(), &mut f);
            scaling::bounded("clients", hour, phase)
                .await
                .with_context(|| kind.name())?;
            f.insert("peak_rss_mib", srv.peak_rss_mib());
            clients.push((kind, f));
        }
        if kind == Kind::Berth && args.wants("listings") {
            let mut f = Figures::new();
            scaling::bounded("listings", hour, scaling::listings(&ctx, scale, &mut f))
                .await
                .with_context(|| kind.name())?;
            f.insert("peak_rss_mib", srv.peak_rss_mib());
            listings.push((kind, f));
        }
        keep.extend(srv.into_dir());
    }
    if args.data_dir.is_some() {
        for dir in keep.drain(..) {
            let _ = dir.keep();
        }
    }
    Ok((clients, listings))
}

/// Writes one scaling section of the report and its JSON record.
fn write_scaling(args: &Args, name: &str, results: &Runs, text: &str) -> Result<()> {
    let json = serde_json::json!({
        "machine": machine(),
        "section": name,
        "runs": results.iter().map(|(k, f)| serde_json::json!({"registry": k.name(), "figures": f})).collect::<Vec<_>>(),
    });
    let json_path = args.json.with_file_name(format!("{name}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)?;
    write_section(&args.out, name, text)?;
    eprintln!("wrote {} and {}", args.out.display(), json_path.display());
    Ok(())
}

/// A table of every figure of one run per registry.
fn side_by_side(results: &[(Kind, Figures)]) -> String {
    let get = |k: Kind, n: &str| {
        results
            .iter()
            .find(|(kk, _)| *kk == k)
            .and_then(|(_, f)| f.get(n).copied())
    };
    let mut names: Vec<&'static str> = results
        .iter()
        .flat_map(|(_, f)| f.keys().copied())
        .collect();
    names.sort();
    names.dedup();
    let cell = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.3}"));
    let mut table = String::from("| figure | Berth | Distribution 2.8.2 |\n|---|---:|---:|\n");
    for n in names {
        table.push_str(&format!(
            "| {n} | {} | {} |\n",
            cell(get(Kind::Berth, n)),
            cell(get(Kind::Distribution, n))
        ));
    }
    table
}
