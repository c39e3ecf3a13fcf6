//! The `berth` binary: command-line parsing, then the registry server (`berth serve`) or a
//! client command (`berth pull`, `push`, `images`, …).

use anyhow::Context;
use berth_server::config::{Config, LogFormat, StorageConfig};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A container image registry (berth serve) and a daemonless image client"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry server.
    Serve {
        /// Address to listen on (default 127.0.0.1:5000).
        #[arg(long)]
        listen: Option<String>,
        /// Data directory (default ./berth-data).
        #[arg(long)]
        data: Option<PathBuf>,
        /// TOML configuration file (see config.example.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log format: text or json.
        #[arg(long, value_parser = ["text", "json"])]
        log_format: Option<String>,
        /// Users from this htpasswd file (bcrypt, `htpasswd -B`): authentication on, with the
        /// default rules unless the configuration has its own.
        #[arg(long)]
        htpasswd: Option<PathBuf>,
        /// TLS certificate chain (PEM); needs --tls-key.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM); needs --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    #[command(flatten)]
    Client(berth_client::cli::ClientCommand),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            listen,
            data,
            config,
            log_format,
            htpasswd,
            tls_cert,
            tls_key,
        } => serve(Flags {
            listen,
            data,
            config,
            log_format,
            htpasswd,
            tls: tls_cert.zip(tls_key),
        }),
        Command::Client(cmd) => berth_client::cli::run(cmd),
    };
    if let Err(e) = result {
        eprintln!("berth: {e:#}");
        std::process::exit(1);
    }
}

/// `berth serve`'s options; each overrides the configuration file.
struct Flags {
    listen: Option<String>,
    data: Option<PathBuf>,
    config: Option<PathBuf>,
    log_format: Option<String>,
    htpasswd: Option<PathBuf>,
    tls: Option<(PathBuf, PathBuf)>,
}

fn serve(flags: Flags) -> anyhow::Result<()> {
    let mut cfg = match &flags.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(l) = flags.listen {
        cfg.server.listen = l;
    }
    if let Some(d) = flags.data {
        cfg.storage = StorageConfig::Fs { path: d };
    }
    if let Some(h) = flags.htpasswd {
        cfg.auth.htpasswd = Some(h);
    }
    if let Some((cert, key)) = flags.tls {
        cfg.tls = Some(berth_server::config::TlsConfig { cert, key });
    }
    if let Some(f) = flags.log_format {
        cfg.log.format = if f == "json" {
            LogFormat::Json
        } else {
            LogFormat::Text
        };
    }
    cfg.validate()?;
    berth_server::init_logging(&cfg);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let registry = berth_server::open_registry(&cfg).await?;
        let shutdown = berth_server::shutdown_signal()?;
        let addr = cfg.listen_addr()?;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        if cfg.auth.enabled() {
            tracing::info!(addr = %bound, data = %cfg.data_dir().display(), "serving");
        } else {
            tracing::info!(
                addr = %bound,
                data = %cfg.data_dir().display(),
                "serving; no authentication is configured: anyone who can reach this address may pull and push"
            );
        }
        // The first line on stdout is the bound address, printed once the server is ready:
        // tests that bind port 0 read it.
        let scheme = if cfg.tls.is_some() { "https" } else { "http" };
        println!("berth listening on {scheme}://{bound}");
        berth_server::serve(&cfg, registry, listener, shutdown).await
    })
}
