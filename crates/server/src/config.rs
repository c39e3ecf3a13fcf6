//! Configuration: a TOML file (every option documented in `config.example.toml`), defaults
//! that need no file at all, and command-line overrides. Validated once, at start.

use anyhow::{bail, Context};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// What a connection may cost (from `[limits]`).
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Open connections at most; the next one is refused with `503`.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, and the longest a connection may sit
    /// with no request being handled and no byte moving either way.
    pub header_timeout: std::time::Duration,
}

/// A log filter: levels per target, comma-separated (`info`, `berth_server=debug,warn`).
pub fn log_filter(
    spec: &str,
) -> Result<tracing_subscriber::filter::Targets, tracing_subscriber::filter::ParseError> {
    spec.parse()
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub database: DatabaseConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub tls: Option<TlsConfig>,
    pub gc: GcConfig,
    pub retention: Vec<RetentionConfig>,
}

/// A duration as seconds or in humantime's notation (`90s`, `1h 30m`, `2d`).
pub fn duration(s: &str) -> Option<std::time::Duration> {
    s.parse::<u64>()
        .map(std::time::Duration::from_secs)
        .ok()
        .or_else(|| humantime::parse_duration(s).ok())
}

/// A duration: seconds, or text like `90s`, `1h 30m`, `7d`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum DurationText {
    Secs(u64),
    Text(String),
}

impl DurationText {
    pub fn get(&self) -> anyhow::Result<std::time::Duration> {
        match self {
            DurationText::Secs(s) => Ok(std::time::Duration::from_secs(*s)),
            DurationText::Text(t) => duration(t).with_context(|| {
                format!("{t:?} is not a duration like 3600, \"90s\", \"1h\" or \"7d\"")
            }),
        }
    }
}

/// Garbage collection and reconciliation schedules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcConfig {
    /// Time between scheduled collections; 0 turns them off (`POST /api/v1/gc` still works).
    pub interval: DurationText,
    /// How long unreferenced blobs (and referrers whose subject is gone) are spared,
    /// counted from their last link or push.
    pub grace_period: DurationText,
    /// Time between scheduled reconciliations of records and blob files; 0 turns them off.
    pub reconcile_interval: DurationText,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            interval: DurationText::Text("1h".into()),
            grace_period: DurationText::Text("24h".into()),
            reconcile_interval: DurationText::Text("24h".into()),
        }
    }
}

/// A retention rule: what collections delete in the repositories its globs match (the first
/// matching rule applies).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    pub repositories: Vec<String>,
    /// Keep the N most recently pushed tags (of those the rule considers).
    pub keep_last: Option<usize>,
    /// Delete tags pushed longer ago than this (with `keep_last`: only beyond the N kept).
    pub older_than: Option<DurationText>,
    /// Only tags this regex matches (whole tag) are considered.
    pub match_tags: Option<String>,
    /// Tags this regex matches (whole tag) are never deleted.
    pub protect_tags: Option<String>,
    /// Delete manifests with no tag (no child of an index, no referrer) pushed this long ago.
    pub untagged_after: Option<DurationText>,
    /// Report what the rule would delete, delete nothing.
    pub dry_run: bool,
}

/// Authentication and access rules. Off (everybody may do everything) until users exist:
/// an htpasswd file, or a trusted external token issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Users and their bcrypt password hashes, as `htpasswd -B` writes them. Re-read when it
    /// changes.
    pub htpasswd: Option<PathBuf>,
    /// With the default rules (no `rules` given): anonymous callers may pull everything.
    pub anonymous_pull: bool,
    /// The service name in challenges and the audience of the tokens Berth issues.
    pub service: String,
    /// The token endpoint's URL in challenges; default: this server's `/token`, as the
    /// client addressed it.
    pub realm: Option<String>,
    /// Lifetime of an access token, in seconds.
    pub token_ttl_secs: u64,
    /// Lifetime of a refresh token (`offline_token=true`), in seconds.
    pub refresh_ttl_secs: u64,
    /// PKCS#8 PEM file of the Ed25519 key tokens are signed with; default
    /// `<storage.path>/token-key.pem`, made at the first start.
    pub token_key: Option<PathBuf>,
    /// Failed logins allowed per client address (and twice that per user name) in a burst
    /// before further attempts get 429; one more is allowed every `login_refill_secs`.
    pub login_burst: u32,
    pub login_refill_secs: u64,
    /// Users and groups that may use Berth's own administration API.
    pub admins: Vec<String>,
    pub admin_groups: Vec<String>,
    /// Groups: name → member user names.
    pub groups: std::collections::HashMap<String, Vec<String>>,
    /// Access rules; when none are given, every authenticated user may pull, push and
    /// delete everything (and is an admin).
    pub rules: Vec<RuleConfig>,
    /// External token issuers whose tokens are accepted.
    pub issuers: Vec<IssuerConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            htpasswd: None,
            anonymous_pull: false,
            service: "berth".into(),
            realm: None,
            token_ttl_secs: 300,
            refresh_ttl_secs: 30 * 24 * 3600,
            token_key: None,
            login_burst: 10,
            login_refill_secs: 6,
            admins: Vec::new(),
            admin_groups: Vec::new(),
            groups: Default::default(),
            rules: Vec::new(),
            issuers: Vec::new(),
        }
    }
}

impl AuthConfig {
    /// Whether any caller can authenticate, which turns access control on.
    pub fn enabled(&self) -> bool {
        self.htpasswd.is_some() || !self.issuers.is_empty()
    }
}

/// One access rule: these callers may do these actions to the repositories these globs
/// match.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    pub anonymous: bool,
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub repositories: Vec<String>,
    pub actions: Vec<String>,
}

/// A token issuer trusted besides Berth itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// The `aud` its tokens must carry.
    pub audience: String,
    /// A PEM public key (EC P-256, Ed25519 or RSA)...
    pub public_key: Option<PathBuf>,
    /// ...or a JWKS file.
    pub jwks: Option<PathBuf>,
}

/// TLS: the certificate chain and key, PEM, re-read when either file changes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Seconds in-flight requests get to finish after SIGTERM or SIGINT.
    pub shutdown_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:5000".into(),
            shutdown_timeout_secs: 30,
        }
    }
}

/// Where blobs live, by `type`: `"fs"`, a local directory (the default), or `"s3"`, a
/// bucket of any S3-compatible server. A `[storage]` table without a `type` is an `fs` one.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum StorageConfig {
    Fs {
        /// Data directory: blobs, upload scratch space, and the default database.
        #[serde(default = "default_data_dir")]
        path: PathBuf,
    },
    S3 {
        bucket: String,
        /// A key prefix for everything Berth keeps there.
        #[serde(default)]
        prefix: Option<String>,
        #[serde(default)]
        region: Option<String>,
        /// An S3-compatible server; unset: AWS.
        #[serde(default)]
        endpoint: Option<String>,
        #[serde(default)]
        path_style: bool,
        /// Unset: the usual AWS environment, profile or role.
        #[serde(default)]
        access_key_id: Option<String>,
        #[serde(default)]
        secret_access_key: Option<String>,
        /// Blob GETs answer 307 to a presigned URL (else the node streams the bytes).
        #[serde(default = "yes")]
        redirect: bool,
    },
}

fn yes() -> bool {
    true
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./berth-data")
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig::Fs {
            path: default_data_dir(),
        }
    }
}

/// The metadata database, by the scheme of its URL: `sqlite://PATH`, a file of the embedded
/// SQLite (the default: `<storage.path>/meta.db`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
}

impl TryFrom<String> for DatabaseUrl {
    type Error = String;

    fn try_from(url: String) -> Result<DatabaseUrl, String> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"));
        match path {
            Some(p) if !p.is_empty() => Ok(DatabaseUrl::Sqlite(PathBuf::from(p))),
            _ => Err(format!(
                "database.url {url:?} is not supported: use sqlite://PATH"
            )),
        }
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Defaults to `sqlite://<storage.path>/meta.db`.
    pub url: Option<DatabaseUrl>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: usize,
    /// Most entries in one tags or catalog page.
    pub max_page: u64,
    /// Catalog page size when the client gives no `n`.
    pub default_catalog_page: u64,
    /// Bytes of manifests kept in memory to answer GETs.
    pub manifest_cache_bytes: usize,
    /// Seconds after which an upload session that received nothing is unknown.
    pub upload_expiry_secs: u64,
    /// Open connections at most; one more is answered 503 with `Retry-After` and closed.
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (also how long an idle keep-alive
    /// connection stays open).
    pub header_timeout_secs: u64,
    /// Seconds a request body may send nothing before the request fails.
    pub body_timeout_secs: u64,
    /// Upload sessions one client address may open in a burst; beyond it, 429 with
    /// `Retry-After`.
    pub uploads_per_client_burst: u32,
    /// Upload sessions per second a client address regains after a burst (0.01: one
    /// every 100 s).
    pub uploads_per_client_per_sec: f64,
    /// Repositories given per-repository gauges on `/metrics`, the largest by unique bytes.
    pub repository_gauges: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = berth_registry::Options::default();
        LimitsConfig {
            max_manifest_bytes: d.max_manifest_bytes,
            max_page: d.max_page,
            default_catalog_page: d.default_catalog_page,
            manifest_cache_bytes: d.manifest_cache_bytes,
            upload_expiry_secs: d.upload_expiry.as_secs(),
            max_connections: 4096,
            header_timeout_secs: 60,
            body_timeout_secs: 60,
            uploads_per_client_burst: 10_000,
            uploads_per_client_per_sec: 100.0,
            repository_gauges: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// Levels per target (`info`, `berth_server=debug,warn`, …); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// What tells that a file the configuration names (htpasswd, TLS certificate and key) has
/// changed and must be read again: its modification time and length; `None` when it cannot
/// be read.
pub type FileStamp = Option<(std::time::SystemTime, u64)>;

pub fn file_stamp(path: &Path) -> FileStamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("config {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let mut table: toml::Table = toml::from_str(text)?;
        // `type` tags the storage table; one without it is the default kind.
        if let Some(toml::Value::Table(storage)) = table.get_mut("storage") {
            storage
                .entry("type")
                .or_insert_with(|| toml::Value::String("fs".into()));
        }
        let c: Config = table.try_into()?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.listen_addr()?;
        if matches!(self.storage, StorageConfig::S3 { .. }) && self.database.url.is_none() {
            bail!("storage type \"s3\" needs a [database] url, such as sqlite:///var/lib/berth/meta.db");
        }
        log_filter(&self.log.level).with_context(|| {
            format!(
                "log.level {:?}: levels per target, like \"info\" or \"berth_server=debug,warn\"",
                self.log.level
            )
        })?;
        let l = &self.limits;
        if self.limits.max_manifest_bytes < 1024 {
            bail!("limits.max_manifest_bytes must be at least 1024");
        }
        if self.limits.max_page == 0 || self.limits.default_catalog_page == 0 {
            bail!("limits.max_page and limits.default_catalog_page must be positive");
        }
        if self.limits.upload_expiry_secs == 0 {
            bail!("limits.upload_expiry_secs must be positive");
        }
        const DAY: u64 = 86_400;
        for (name, v) in [
            ("header_timeout_secs", l.header_timeout_secs),
            ("body_timeout_secs", l.body_timeout_secs),
        ] {
            if !(1..=DAY).contains(&v) {
                bail!("limits.{name} must be between 1 and {DAY} seconds");
            }
        }
        if !(1..=1_000_000).contains(&l.max_connections) {
            bail!("limits.max_connections must be between 1 and 1000000");
        }
        if l.uploads_per_client_burst == 0
            || !(l.uploads_per_client_per_sec.is_finite() && l.uploads_per_client_per_sec > 0.0)
        {
            bail!(
                "limits.uploads_per_client_burst and uploads_per_client_per_sec must be positive"
            );
        }
        for rule in &self.auth.rules {
            for a in &rule.actions {
                if a != "*" && berth_registry::access::Action::parse(a).is_none() {
                    bail!("auth.rules: unknown action {a:?} (pull, push, delete or *)");
                }
            }
        }
        for i in &self.auth.issuers {
            if i.public_key.is_some() == i.jwks.is_some() {
                bail!(
                    "auth.issuers: {:?} needs exactly one of public_key and jwks",
                    i.issuer
                );
            }
        }
        if self.auth.token_ttl_secs == 0 || self.auth.login_refill_secs == 0 {
            bail!("auth.token_ttl_secs and auth.login_refill_secs must be positive");
        }
        self.registry_options()?;
        self.schedules()?;
        Ok(())
    }

    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.server.listen.parse().with_context(|| {
            format!(
                "server.listen {:?} is not an address like 127.0.0.1:5000",
                self.server.listen
            )
        })
    }

    /// The database: the configured one, else SQLite in the data directory.
    pub fn database_url(&self) -> DatabaseUrl {
        match &self.database.url {
            Some(u) => u.clone(),
            None => DatabaseUrl::Sqlite(self.data_dir().join("meta.db")),
        }
    }

    /// The local directory Berth keeps its own files in (the default database, the token
    /// key): the filesystem store's data directory; with object storage, the directory of
    /// the SQLite database, else `./berth-data`.
    pub fn data_dir(&self) -> PathBuf {
        match (&self.storage, &self.database.url) {
            (StorageConfig::Fs { path }, _) => path.clone(),
            (StorageConfig::S3 { .. }, Some(DatabaseUrl::Sqlite(db))) => {
                db.parent().map_or_else(default_data_dir, Path::to_path_buf)
            }
            (StorageConfig::S3 { .. }, None) => default_data_dir(),
        }
    }

    /// What one connection may cost, for the accept loop.
    pub fn conn_limits(&self) -> ConnLimits {
        ConnLimits {
            max_connections: self.limits.max_connections,
            header_timeout: std::time::Duration::from_secs(self.limits.header_timeout_secs.max(1)),
        }
    }

    /// The domain's options; fails on an invalid duration, glob or regex, naming it.
    pub fn registry_options(&self) -> anyhow::Result<berth_registry::Options> {
        let mut retention = Vec::new();
        for (i, r) in self.retention.iter().enumerate() {
            let d = |d: &Option<DurationText>, what: &str| {
                d.as_ref()
                    .map(|d| {
                        d.get()
                            .with_context(|| format!("retention rule {}: {what}", i + 1))
                    })
                    .transpose()
            };
            let spec = berth_registry::retention::RuleSpec {
                repositories: r.repositories.clone(),
                keep_last: r.keep_last,
                older_than: d(&r.older_than, "older_than")?,
                match_tags: r.match_tags.clone(),
                protect_tags: r.protect_tags.clone(),
                untagged_after: d(&r.untagged_after, "untagged_after")?,
                dry_run: r.dry_run,
            };
            retention.push(
                berth_registry::retention::Rule::new(spec)
                    .map_err(|e| anyhow::anyhow!("retention rule {}: {e}", i + 1))?,
            );
        }
        Ok(berth_registry::Options {
            max_manifest_bytes: self.limits.max_manifest_bytes,
            max_page: self.limits.max_page,
            default_catalog_page: self.limits.default_catalog_page,
            manifest_cache_bytes: self.limits.manifest_cache_bytes,
            upload_expiry: std::time::Duration::from_secs(self.limits.upload_expiry_secs),
            gc_grace: self.gc.grace_period.get().context("gc.grace_period")?,
            retention,
        })
    }

    /// Time between scheduled collections and between reconciliations (`None`: off).
    pub fn schedules(
        &self,
    ) -> anyhow::Result<(Option<std::time::Duration>, Option<std::time::Duration>)> {
        let on = |d: std::time::Duration| (!d.is_zero()).then_some(d);
        Ok((
            on(self.gc.interval.get().context("gc.interval")?),
            on(self
                .gc
                .reconcile_interval
                .get()
                .context("gc.reconcile_interval")?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_matches_defaults() {
        let text = include_str!("../../../config.example.toml");
        let c = Config::parse(text).expect("config.example.toml parses");
        let d = Config::default();
        assert_eq!(c.server.listen, d.server.listen);
        assert_eq!(c.limits.max_manifest_bytes, d.limits.max_manifest_bytes);
        assert_eq!(c.storage, d.storage);
        assert_eq!(c.limits.manifest_cache_bytes, d.limits.manifest_cache_bytes);
        assert_eq!(c.auth.service, d.auth.service);
        assert_eq!(c.auth.token_ttl_secs, d.auth.token_ttl_secs);
        assert_eq!(c.auth.login_burst, d.auth.login_burst);
        assert!(!c.auth.enabled() && c.tls.is_none());
        // The S3 table, commented out there, parses too.
        let s3: String = text
            .split("# [storage]\n")
            .nth(1)
            .and_then(|t| t.split("\n\n").next())
            .expect("the commented S3 table")
            .lines()
            .map(|l| format!("{}\n", l.trim_start_matches("# ")))
            .collect();
        let c = Config::parse(&format!(
            "[storage]\n{s3}[database]\nurl = \"sqlite:///m.db\"\n"
        ))
        .expect("the S3 table parses");
        assert!(matches!(
            c.storage,
            StorageConfig::S3 { redirect: true, .. }
        ));
        assert_eq!(c.data_dir(), PathBuf::from("/"));
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(Config::parse("[server]\nlisten = \"nope\"").is_err());
        assert!(Config::parse("[server]\nunknown = 1").is_err());
        assert!(Config::parse("[storage]\ntype = \"tape\"").is_err());
        assert!(Config::parse("[database]\nurl = \"mysql://x\"").is_err());
        assert!(Config::parse("[limits]\nmax_page = 0").is_err());
        assert!(Config::parse("[[auth.rules]]\nactions = [\"fly\"]").is_err());
        assert!(Config::parse("[[auth.issuers]]\nissuer = \"x\"\naudience = \"y\"").is_err());
        assert!(Config::parse("[tls]\ncert = \"c\"").is_err());
        assert!(Config::parse("[gc]\ninterval = \"soon\"").is_err());
        assert!(Config::parse("[log]\nlevel = \"x[{a=1}]=debug\"").is_err());
        assert!(Config::parse("[log]\nlevel = \"berth_server=debug,warn\"").is_ok());
        assert!(
            Config::parse("[[retention]]\nkeep_last = 3").is_err(),
            "no repositories"
        );
        assert!(
            Config::parse("[[retention]]\nrepositories = [\"a\"]\nmatch_tags = \"(\"").is_err()
        );
        assert!(
            Config::parse("[[retention]]\nrepositories = [\"a\"]\nolder_than = \"a while\"")
                .is_err()
        );
        let c = Config::parse("[gc]\ninterval = 0\ngrace_period = \"90s\"\n[[retention]]\nrepositories = [\"ci/**\"]\nkeep_last = 3\nolder_than = \"7d\"").unwrap();
        assert_eq!(c.schedules().unwrap().0, None);
        assert_eq!(c.registry_options().unwrap().gc_grace.as_secs(), 90);
        assert!(Config::parse("").is_ok());
    }

    #[test]
    fn storage_and_database_are_chosen_by_their_tags() {
        let c = Config::parse("[storage]\npath = \"/srv/b\"").unwrap();
        assert_eq!(
            c.storage,
            StorageConfig::Fs {
                path: "/srv/b".into()
            }
        );
        assert_eq!(
            c.database_url(),
            DatabaseUrl::Sqlite("/srv/b/meta.db".into())
        );
        let c = Config::parse("[storage]\ntype = \"fs\"\n[database]\nurl = \"sqlite:///m.db\"")
            .unwrap();
        assert_eq!(c.database_url(), DatabaseUrl::Sqlite("/m.db".into()));
        assert_eq!(c.database_url().to_string(), "sqlite:///m.db");
        let e = Config::parse("[database]\nurl = \"mysql://x\"").unwrap_err();
        assert!(format!("{e:#}").contains("use sqlite://PATH"), "{e:#}");
        assert!(Config::parse("[storage]\ntype = \"fs\"\nbucket = \"b\"").is_err());
        let e = Config::parse("[storage]\ntype = \"s3\"\nbucket = \"b\"").unwrap_err();
        assert!(format!("{e:#}").contains("needs a [database] url"), "{e:#}");
    }
}
