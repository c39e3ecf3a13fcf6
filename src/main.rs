//! The `berth` binary: command-line parsing, then the registry server (`berth serve`).

use anyhow::Context;
use berth_server::config::{Config, LogFormat};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "berth", version, about = "A container image registry")]
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
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            listen,
            data,
            config,
            log_format,
        } => serve(listen, data, config, log_format),
    };
    if let Err(e) = result {
        eprintln!("berth: {e:#}");
        std::process::exit(1);
    }
}

fn serve(
    listen: Option<String>,
    data: Option<PathBuf>,
    config: Option<PathBuf>,
    log_format: Option<String>,
) -> anyhow::Result<()> {
    let mut cfg = match &config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(l) = listen {
        cfg.server.listen = l;
    }
    if let Some(d) = data {
        cfg.storage.path = d;
    }
    if let Some(f) = log_format {
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
        tracing::info!(
            addr = %bound,
            data = %cfg.storage.path.display(),
            "serving; no authentication is configured: anyone who can reach this address may pull and push"
        );
        // The first line on stdout is the bound address, printed once the server is ready:
        // tests that bind port 0 read it.
        println!("berth listening on http://{bound}");
        berth_server::serve(&cfg, registry, listener, shutdown).await
    })
}
