//! Starting the two registries under test on fresh data directories, and reading their CPU
//! time and memory from /proc.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
pub enum Kind {
    Berth,
    Distribution,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Berth => "berth",
            Kind::Distribution => "distribution",
        }
    }
}

pub struct Server {
    pub base: String,
    child: Child,
    /// The data directory, removed only when the whole benchmark ends (see `into_dir`).
    dir: Option<tempfile::TempDir>,
    /// Time from spawn to the first 200 on /v2/.
    pub startup: Duration,
}

/// Where a registry under test keeps its blobs.
#[derive(Debug, Clone)]
pub enum Storage {
    /// Its data directory.
    Fs,
    /// A bucket (which must exist) on the S3 server at `endpoint`.
    S3 { endpoint: String, bucket: String },
}

/// The credentials both registries present to the S3 server under test.
const S3_KEY: (&str, &str) = ("berth-bench", "berth-bench-secret");

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts Berth on `dir`/data (or its bucket, with SQLite in `dir`) and an ephemeral port;
/// the address it printed.
fn spawn_berth(berth: &Path, dir: &Path, storage: &Storage) -> Result<(Child, String)> {
    let mut command = Command::new(berth);
    command.args(["serve", "--listen", "127.0.0.1:0"]);
    match storage {
        Storage::Fs => command.arg("--data").arg(dir.join("data")),
        Storage::S3 { endpoint, bucket } => {
            let config = format!(
                "[storage]\ntype = \"s3\"\nbucket = \"{bucket}\"\nregion = \"us-east-1\"\n\
                 endpoint = \"{endpoint}\"\npath_style = true\naccess_key_id = \"{}\"\n\
                 secret_access_key = \"{}\"\n[database]\nurl = \"sqlite://{}/meta.db\"\n",
                S3_KEY.0,
                S3_KEY.1,
                dir.display()
            );
            std::fs::write(dir.join("berth.toml"), config)?;
            command.arg("--config").arg(dir.join("berth.toml"))
        }
    };
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", berth.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .unwrap_or("")
        .to_owned();
    Ok((child, addr))
}

/// Starts Distribution on `dir`/data (or its bucket), with deletes enabled, and a free port.
fn spawn_distribution(
    distribution: &Path,
    dir: &Path,
    storage: &Storage,
) -> Result<(Child, String)> {
    let port = free_port()?;
    let driver = match storage {
        Storage::Fs => format!(
            "  filesystem:\n    rootdirectory: {}\n",
            dir.join("data").display()
        ),
        Storage::S3 { endpoint, bucket } => format!(
            "  s3:\n    accesskey: {}\n    secretkey: {}\n    region: us-east-1\n    \
             regionendpoint: {endpoint}\n    bucket: {bucket}\n    secure: false\n    \
             v4auth: true\n",
            S3_KEY.0, S3_KEY.1
        ),
    };
    let config = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n{driver}  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
    );
    let cfg = dir.join("config.yml");
    std::fs::write(&cfg, config)?;
    let child = Command::new(distribution)
        // Its AWS SDK refuses to start with a CA bundle set and its own HTTP transport.
        .env_remove("AWS_CA_BUNDLE")
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", distribution.display()))?;
    Ok((child, format!("127.0.0.1:{port}")))
}

impl Server {
    /// Starts `kind` on a fresh data directory under `parent` (the system's temporary
    /// directory when `None`).
    pub async fn start(
        kind: Kind,
        berth: &Path,
        distribution: &Path,
        parent: Option<&Path>,
        storage: &Storage,
    ) -> Result<Server> {
        let dir = match parent {
            Some(p) => tempfile::tempdir_in(p)?,
            None => tempfile::tempdir()?,
        };
        // Made before the clock starts: building a client (its TLS roots) is the harness's
        // cost, not the registry's.
        let client = reqwest::Client::new();
        // Start-up is measured with the binary in the page cache, as when a service restarts:
        // the gigabytes a run writes push it out, and reading it back from the disk would
        // be measured instead.
        let binary = match kind {
            Kind::Berth => berth,
            Kind::Distribution => distribution,
        };
        let _ = std::fs::read(binary);
        // And with the disk idle: the previous run's gigabytes are otherwise still being
        // written back, and a registry that syncs a file while it starts (a database must)
        // would be measured waiting behind another run's writes.
        let _ = Command::new("sync").status();
        let t0 = Instant::now();
        let (mut child, addr) = match kind {
            Kind::Berth => spawn_berth(berth, dir.path(), storage)?,
            Kind::Distribution => spawn_distribution(distribution, dir.path(), storage)?,
        };
        let base = format!("http://{addr}");
        loop {
            if let Ok(r) = client.get(format!("{base}/v2/")).send().await {
                if r.status() == 200 {
                    break;
                }
            }
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                bail!("{} did not answer /v2/ within 20 s", kind.name());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let startup = t0.elapsed();
        Ok(Server {
            base,
            child,
            dir: Some(dir),
            startup,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User plus system CPU seconds the server has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name, which is in parentheses and may contain spaces.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (ticks(11) + ticks(12)) / hz
    }

    /// A `VmRSS`/`VmHWM`-style field of /proc/<pid>/status, in MiB.
    fn status_mib(&self, field: &str) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    }

    pub fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS:")
    }

    pub fn peak_rss_mib(&self) -> f64 {
        self.status_mib("VmHWM:")
    }
}

impl Server {
    /// Stops the server and hands its data directory over. The benchmark keeps every run's
    /// directory until it ends: on ext4 without a journal, the inode allocator skips inodes
    /// freed in the last minutes one by one, so deleting a run's files would slow file
    /// creation in the runs that follow.
    pub fn into_dir(mut self) -> Option<tempfile::TempDir> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.take()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
