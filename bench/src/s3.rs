//! The S3 mode: both registries on one S3 server (`moto_server`, from PyPI), each behind a
//! proxy that counts the requests it sends there and the bytes it uploads, since people pay
//! per request. Pushes go as docker sends them (a HEAD, then POST, one PATCH and PUT per
//! blob, then the manifest); pulls as docker reads them (the manifest, then every blob,
//! following redirects, which the proxy also sees).

use crate::server::{free_port, Kind, Server, Storage};
use crate::workloads::{blobs, manifest, Blob, Ctx};
use crate::{Args, Figures, Runs};
use anyhow::{bail, Context, Result};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use futures::TryStreamExt;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a proxy saw go to the S3 server.
#[derive(Default)]
pub struct Counter {
    requests: AtomicU64,
    bytes_up: AtomicU64,
    by_kind: Mutex<BTreeMap<String, u64>>,
}

impl Counter {
    /// Requests and uploaded bytes since the last call, by kind of request too.
    fn take(&self) -> (u64, u64, BTreeMap<String, u64>) {
        let kinds = std::mem::take(&mut *self.by_kind.lock().unwrap_or_else(|e| e.into_inner()));
        (
            self.requests.swap(0, Ordering::Relaxed),
            self.bytes_up.swap(0, Ordering::Relaxed),
            kinds,
        )
    }
}

/// The S3 operation a request is, from its method and query: enough to see what a registry
/// spends its requests on.
fn kind_of(method: &str, query: &str) -> String {
    let has = |k: &str| {
        query
            .split('&')
            .any(|p| p == k || p.starts_with(&format!("{k}=")))
    };
    let op = if has("uploadId") && has("partNumber") {
        "part"
    } else if has("uploads") || has("uploadId") {
        "multipart"
    } else if has("delete") {
        "bulk-delete"
    } else if has("list-type") || method == "GET" && query.contains("prefix") {
        "list"
    } else {
        "object"
    };
    format!("{method} {op}")
}

struct Proxy {
    target: String,
    client: reqwest::Client,
    counter: Arc<Counter>,
}

/// Forwards one request to the S3 server, counting it and its body's bytes.
async fn forward(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or("");
    let kind = kind_of(parts.method.as_str(), query);
    p.counter.requests.fetch_add(1, Ordering::Relaxed);
    *p.counter
        .by_kind
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(kind)
        .or_default() += 1;
    let counter = Arc::clone(&p.counter);
    let body = body.into_data_stream().inspect_ok(move |b| {
        counter
            .bytes_up
            .fetch_add(b.len() as u64, Ordering::Relaxed);
    });
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut out = p
        .client
        .request(parts.method, format!("{}{path_and_query}", p.target))
        .body(reqwest::Body::wrap_stream(body));
    for (name, value) in &parts.headers {
        if name != "host" && name != "transfer-encoding" {
            out = out.header(name, value);
        }
    }
    match out.send().await {
        Ok(r) => {
            let mut resp = Response::builder().status(r.status());
            for (name, value) in r.headers() {
                if name != "transfer-encoding" {
                    resp = resp.header(name, value);
                }
            }
            let body = Body::from_stream(r.bytes_stream());
            resp.body(body)
                .unwrap_or_else(|_| Response::new(Body::empty()))
        }
        Err(e) => {
            let mut r = Response::new(Body::from(e.to_string()));
            *r.status_mut() = axum::http::StatusCode::BAD_GATEWAY;
            r
        }
    }
}

/// A counting proxy to `target` on a free loopback port: its address and its counter.
async fn proxy(target: &str) -> Result<(String, Arc<Counter>)> {
    let counter = Arc::new(Counter::default());
    let state = Arc::new(Proxy {
        target: target.to_owned(),
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?,
        counter: Arc::clone(&counter),
    });
    let app = axum::Router::new().fallback(forward).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}"), counter))
}

/// `moto_server` on a free loopback port, killed on drop.
struct Moto(Child, String);

impl Moto {
    async fn start() -> Result<Moto> {
        let port = free_port()?;
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting moto_server (pip install 'moto[server]')")?;
        let moto = Moto(child, format!("http://127.0.0.1:{port}"));
        let client = reqwest::Client::new();
        let t0 = Instant::now();
        while client.get(&moto.1).send().await.is_err() {
            if t0.elapsed() > Duration::from_secs(20) {
                bail!("moto_server did not answer within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(moto)
    }

    async fn bucket(&self, name: &str) -> Result<()> {
        let r = reqwest::Client::new()
            .put(format!("{}/{name}", self.1))
            .send()
            .await?;
        anyhow::ensure!(
            r.status().is_success(),
            "creating bucket {name}: {}",
            r.status()
        );
        Ok(())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The images pushed: each a config and `layers` distinct layers of `size` bytes.
struct Images {
    configs: Vec<Blob>,
    layers: Vec<Vec<Blob>>,
}

fn images(count: usize, layers: usize, size: usize) -> Images {
    Images {
        configs: blobs(7, count, 700),
        layers: (0..count)
            .map(|i| blobs(100 + i as u64, layers, size))
            .collect(),
    }
}

/// Images pushed, layers in each and bytes in each layer.
fn sizes(quick: bool) -> (usize, usize, usize) {
    if quick {
        (2, 2, 1 << 20)
    } else {
        (8, 3, 12 << 20)
    }
}

/// The S3 section of the report: how it was measured (the table follows).
pub fn report(args: &Args) -> String {
    let (count, layers, size) = sizes(args.quick);
    format!(
        "## On S3-compatible storage\n\nBoth registries on one `moto_server` (from PyPI, on \
         loopback; Distribution 2.8.2 with its `s3` driver), each behind a proxy that counts the \
         requests it sends there and the bytes it uploads; medians of {} alternating runs. {count} \
         images of a config and {layers} layers of {} MiB, pushed as docker does (HEAD, POST, one \
         PATCH, PUT per blob, then the manifest), then pulled (the manifest, then each blob, \
         following redirects). The request counts are per image. Throughput is moto's more than \
         either registry's. Regenerate with `target/release/berth-bench --s3`.\n\n",
        args.runs,
        size >> 20
    )
}

/// Every run of the S3 mode, the registries alternating; the table is printed.
pub async fn s3_main(args: &Args) -> Result<Runs> {
    let moto = Moto::start().await?;
    let (count, layers, size) = sizes(args.quick);
    let set = images(count, layers, size);
    let mut runs: Runs = Vec::new();
    for run in 0..args.runs {
        for kind in [Kind::Berth, Kind::Distribution] {
            if args.only.is_some_and(|k| k != kind) {
                continue;
            }
            let bucket = format!("{}-{run}", kind.name());
            moto.bucket(&bucket).await?;
            let (endpoint, counter) = proxy(&moto.1).await?;
            eprintln!("s3 run {}/{}: {}", run + 1, args.runs, kind.name());
            let storage = Storage::S3 { endpoint, bucket };
            let srv = Server::start(kind, &args.berth, &args.distribution, None, &storage).await?;
            let f = one_run(&srv, &set, &counter).await.context(kind.name())?;
            runs.push((kind, f));
        }
    }
    Ok(runs)
}

/// Pushes then pulls every image of `set`, counting what reaches S3 in each phase.
async fn one_run(srv: &Server, set: &Images, counter: &Counter) -> Result<Figures> {
    let ctx = Ctx {
        client: reqwest::Client::new(),
        base: srv.base.clone(),
    };
    let n = set.configs.len() as f64;
    let pushed: u64 = set
        .layers
        .iter()
        .flatten()
        .map(|b| b.data.len() as u64)
        .sum();
    counter.take();
    let t0 = Instant::now();
    for (i, (config, layers)) in set.configs.iter().zip(&set.layers).enumerate() {
        let repo = format!("s3/app{i}");
        for b in std::iter::once(config).chain(layers) {
            ctx.head_blob(&repo, b).await?;
            ctx.push_chunked(&repo, b, b.data.len()).await?;
        }
        ctx.put_manifest(&repo, "latest", &manifest(config, layers))
            .await?;
    }
    let push_time = t0.elapsed();
    let (push_requests, bytes_up, push_kinds) = counter.take();
    let t0 = Instant::now();
    for (i, (config, layers)) in set.configs.iter().zip(&set.layers).enumerate() {
        let repo = format!("s3/app{i}");
        ctx.get_manifest(&repo, "latest").await?;
        for b in std::iter::once(config).chain(layers) {
            ctx.pull(&repo, b, false).await?;
        }
    }
    let pull_time = t0.elapsed();
    let (pull_requests, _, pull_kinds) = counter.take();
    eprintln!("  push: {push_kinds:?}\n  pull: {pull_kinds:?}");
    let mut f = Figures::new();
    f.insert("s3_requests_per_push", push_requests as f64 / n);
    f.insert("s3_requests_per_pull", pull_requests as f64 / n);
    f.insert(
        "s3_bytes_up_per_pushed_byte",
        bytes_up as f64 / pushed as f64,
    );
    f.insert(
        "s3_push_MBps",
        pushed as f64 / 1e6 / push_time.as_secs_f64(),
    );
    f.insert(
        "s3_pull_MBps",
        pushed as f64 / 1e6 / pull_time.as_secs_f64(),
    );
    Ok(f)
}
