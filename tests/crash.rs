//! Crash safety, as a test target of its own: many cycles of concurrent pushes against the
//! real `berth serve`, each cycle ended by SIGKILL at a random moment and followed by a
//! restart on the same data directory, where everything the registry acknowledged must be
//! whole, nothing partial may be served, interrupted upload sessions must report an offset
//! they really hold and resume from it, and records and blob files must agree.
//!
//! Bounded in time: up to `BERTH_CRASH_CYCLES` cycles (200) or `BERTH_CRASH_SECS` seconds
//! (90), whichever comes first. The seed of the random choices (kill delays, operations,
//! sizes) is printed; `BERTH_CRASH_SEED` repeats them (the threads' interleaving differs).
//!
//! A SIGKILL leaves the kernel's page cache alone, so this finds what the process gets wrong
//! (an answer sent before the write it promises, a visible half-written file, a record and a
//! file out of step), not a missing fsync, which only a power cut would reveal.

// The e2e harness and image helpers, shared with tests/e2e.rs (this target uses a part),
// under the paths they name each other by.
#[allow(dead_code)]
#[path = "e2e/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "e2e/images.rs"]
mod images;
mod e2e {
    pub(crate) use super::{harness, images};
}

mod crash {
    pub mod check;
    pub mod ledger;
    pub mod workload;
}

use crash::check::{after_restart, DiskWalk};
use crash::ledger::{sha256, Ctx, Pool, Repo, Rng, Tally};
use e2e::harness::TestRegistry;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Concurrent client tasks, each with its own repository.
const TASKS: usize = 8;
/// Blobs whose digests every task pushes.
const POOL: usize = 24;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// Writes past the test harness's capture, so that the seed and the summary show in CI logs
/// whether the test passes or fails.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The run's directory, kept (and named) when the test fails, for the server's log and data.
struct Keep(Option<tempfile::TempDir>);

impl Drop for Keep {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.0.take() {
                say(&format!("crash: data kept in {}", dir.keep().display()));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_pushes_survive_sigkill() {
    let seed = env_u64("BERTH_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let max_cycles = env_u64("BERTH_CRASH_CYCLES").unwrap_or(200);
    let max_time = Duration::from_secs(env_u64("BERTH_CRASH_SECS").unwrap_or(90));
    say(&format!(
        "crash: seed {seed} (BERTH_CRASH_SEED={seed} repeats its choices), \
         up to {max_cycles} cycles or {}s",
        max_time.as_secs()
    ));
    let dir = Keep(Some(tempfile::tempdir().expect("tempdir")));
    let data = dir.0.as_ref().expect("dir").path().join("data");

    let mut rng = Rng::new(seed);
    let pool_data: Vec<Arc<Vec<u8>>> = (0..POOL)
        .map(|_| {
            let len = rng.range(1 << 10, 512 << 10) as usize;
            Arc::new(e2e::images::bytes(rng.next(), len))
        })
        .collect();
    let pool = Arc::new(Pool {
        digests: pool_data.iter().map(|d| sha256(d)).collect(),
        data: pool_data,
        repo: "crash/shared".into(),
        acked: Mutex::default(),
    });
    let tally = Arc::new(Tally::default());
    let mut repos: Vec<Repo> = (0..TASKS)
        .map(|i| Repo::new(format!("crash/r{i}")))
        .collect();
    let mut disk = DiskWalk::default();
    let (mut kills_mid_request, mut requests_cut) = (0, 0);
    let started = Instant::now();
    let mut cycle = 0;
    let client = || {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client")
    };
    let fail = |cycle: u64, what: &str, failures: &[String]| -> ! {
        panic!(
            "crash: seed {seed}, cycle {cycle}: {what}:\n  {}\n(server log: {})",
            failures.join("\n  "),
            data.join("server.log").display()
        )
    };

    // The clients' shared state for one server process.
    let fresh = |reg: &TestRegistry| Ctx {
        client: client(),
        base: reg.url(""),
        killed: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
        pool: Arc::clone(&pool),
        tally: Arc::clone(&tally),
    };

    while cycle < max_cycles && started.elapsed() < max_time {
        cycle += 1;
        let mut reg = TestRegistry::spawn_with(&data, &[]);
        let ctx = Arc::new(fresh(&reg));
        // What the previous cycle's kill left, before anything new is pushed.
        let failures = after_restart(&ctx, &mut repos, &mut rng, false, &mut disk, &data).await;
        if !failures.is_empty() {
            fail(cycle, "after the restart", &failures);
        }

        let tasks: Vec<_> = repos
            .drain(..)
            .enumerate()
            .map(|(i, repo)| {
                let task_rng = Rng::derive(seed, cycle, i as u64);
                tokio::spawn(crash::workload::task(Arc::clone(&ctx), repo, task_rng))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.range(5, 200))).await;
        ctx.killed.store(true, Ordering::SeqCst);
        let cut = ctx.in_flight.load(Ordering::SeqCst);
        reg.kill();
        if cut > 0 {
            kills_mid_request += 1;
            requests_cut += cut;
        }
        let mut failures = Vec::new();
        for t in tasks {
            match tokio::time::timeout(Duration::from_secs(60), t).await {
                Ok(Ok((repo, failure))) => {
                    repos.push(repo);
                    failures.extend(failure);
                }
                Ok(Err(e)) => failures.push(format!("a task panicked: {e}")),
                Err(_) => failures.push("a task still runs 60 s after the kill".into()),
            }
        }
        if !failures.is_empty() {
            fail(cycle, "before the kill", &failures);
        }
    }

    // A last restart, and everything ever acknowledged read back.
    let mut reg = TestRegistry::spawn_with(&data, &[]);
    let ctx = fresh(&reg);
    let failures = after_restart(&ctx, &mut repos, &mut rng, true, &mut disk, &data).await;
    if !failures.is_empty() {
        fail(cycle + 1, "in the final check", &failures);
    }
    reg.kill();
    say(&format!(
        "crash: seed {seed}: {cycle} cycles in {:.1}s, {} operations acknowledged, {} \
         acknowledgements checked after restarts, {kills_mid_request} kills mid-request \
         ({requests_cut} requests cut), {} sessions resumed, {} blob files verified",
        started.elapsed().as_secs_f64(),
        tally.acked_ops.load(Ordering::Relaxed),
        tally.checked.load(Ordering::Relaxed),
        tally.resumed.load(Ordering::Relaxed),
        disk.files,
    ));
}
