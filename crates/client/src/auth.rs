//! Credentials and the registry authentication dance.
//!
//! Credentials live where docker keeps them: `$DOCKER_CONFIG/config.json` (default
//! `~/.docker/config.json`), either inline (`auths.<host>.auth`, base64 of `user:password`) or
//! in a credential helper (`credHelpers.<host>`, else `credsStore`) that speaks docker's
//! `docker-credential-<name> get|store|erase` protocol. Docker Hub's key is
//! `https://index.docker.io/v1/`, as docker writes it. The file is rewritten whole through a
//! temporary file and a rename, keeping every key we do not know.
//!
//! A registry asks for credentials with `401` and a `WWW-Authenticate` challenge: `Basic`
//! (send them on every request) or `Bearer realm=…,service=…,scope=…` (trade them at the realm
//! for a token scoped to the repository and actions).

use crate::error::{io_err, one_line, Error, Result};
use crate::reference::DOCKER_HUB;
use base64::Engine;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The user name credential helpers and docker give an identity (refresh) token.
pub const IDENTITY_TOKEN_USER: &str = "<token>";

/// A user name and its password or token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, …)", self.username)
    }
}

/// The docker configuration file, read once per command.
pub struct DockerConfig {
    path: PathBuf,
    doc: Map<String, Value>,
}

/// The key a registry's credentials are stored under.
pub fn config_key(registry: &str) -> String {
    if registry == DOCKER_HUB {
        "https://index.docker.io/v1/".to_owned()
    } else {
        registry.to_owned()
    }
}

/// Keys other tools have used for the same registry, looked up when the canonical one is absent.
fn alternative_keys(registry: &str) -> Vec<String> {
    let key = config_key(registry);
    vec![
        key.clone(),
        format!("https://{registry}"),
        format!("http://{registry}"),
        format!("https://{registry}/v1/"),
        format!("https://{registry}/v2/"),
    ]
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn default_path() -> PathBuf {
        match std::env::var_os("DOCKER_CONFIG") {
            Some(dir) => PathBuf::from(dir).join("config.json"),
            None => home_dir().join(".docker").join("config.json"),
        }
    }

    /// Reads the file; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<DockerConfig> {
        let doc = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(m)) => m,
                Ok(_) | Err(_) => {
                    return Err(Error::Invalid(format!(
                        "{} is not a JSON object",
                        path.display()
                    )))
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(e) => return Err(io_err(format!("reading {}", path.display()))(e)),
        };
        Ok(DockerConfig {
            path: path.to_owned(),
            doc,
        })
    }

    /// The credential helper for `registry`, if the configuration names one.
    fn helper(&self, registry: &str) -> Option<String> {
        let key = config_key(registry);
        self.doc
            .get("credHelpers")
            .and_then(|h| h.get(&key).or_else(|| h.get(registry)))
            .or_else(|| self.doc.get("credsStore"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }

    /// The credentials stored for `registry`, if any.
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        if let Some(helper) = self.helper(registry) {
            return helper_get(&helper, &config_key(registry));
        }
        let Some(auths) = self.doc.get("auths").and_then(Value::as_object) else {
            return Ok(None);
        };
        for key in alternative_keys(registry) {
            let Some(entry) = auths.get(&key) else {
                continue;
            };
            // An identity token wins over `auth` (which then often holds a placeholder user
            // with no password): it is exchanged for access tokens by OAuth2.
            if let Some(token) = entry.get("identitytoken").and_then(Value::as_str) {
                return Ok(Some(Credentials {
                    username: IDENTITY_TOKEN_USER.to_owned(),
                    secret: token.to_owned(),
                }));
            }
            if let Some(auth) = entry.get("auth").and_then(Value::as_str) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "the credentials for {registry} in {} are not valid base64",
                            self.path.display()
                        ))
                    })?;
                if let Some((u, p)) = decoded.split_once(':') {
                    return Ok(Some(Credentials {
                        username: u.to_owned(),
                        secret: p.to_owned(),
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Stores credentials for `registry`, in its helper when one is configured.
    pub fn store(&mut self, registry: &str, creds: &Credentials) -> Result<()> {
        let key = config_key(registry);
        if let Some(helper) = self.helper(registry) {
            let input =
                json!({"ServerURL": key, "Username": creds.username, "Secret": creds.secret});
            run_helper(&helper, "store", input.to_string().as_bytes())?;
            // Docker leaves an empty entry so `docker login` lists the registry.
            self.auths_mut().insert(key, json!({}));
        } else {
            let auth = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", creds.username, creds.secret));
            self.auths_mut().insert(key, json!({ "auth": auth }));
        }
        self.save()
    }

    /// Forgets the credentials for `registry`; `false` when there were none.
    pub fn erase(&mut self, registry: &str) -> Result<bool> {
        let key = config_key(registry);
        let mut found = false;
        if let Some(helper) = self.helper(registry) {
            found = run_helper(&helper, "erase", key.as_bytes()).is_ok();
        }
        let auths = self.auths_mut();
        for k in alternative_keys(registry) {
            found |= auths.remove(&k).is_some();
        }
        self.save()?;
        Ok(found)
    }

    fn auths_mut(&mut self) -> &mut Map<String, Value> {
        let entry = self
            .doc
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        match entry {
            Value::Object(m) => m,
            _ => unreachable!("just made an object"),
        }
    }

    /// Writes the file through a temporary file and a rename, readable by its owner only.
    fn save(&self) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let tmp = self.path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(&Value::Object(self.doc.clone()))
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let write = |path: &Path| -> std::io::Result<()> {
            let mut f = opts.open(path)?;
            f.write_all(&body)?;
            f.sync_all()
        };
        write(&tmp).map_err(io_err(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &self.path)
            .map_err(io_err(format!("writing {}", self.path.display())))
    }
}

pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Runs `docker-credential-<helper> <action>` with `input` on its standard input.
fn run_helper(helper: &str, action: &str, input: &[u8]) -> Result<Vec<u8>> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Invalid(format!("cannot run credential helper {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(io_err(format!("talking to {program}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io_err(format!("running {program}")))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(Error::Invalid(format!(
            "{program} {action} failed: {}",
            one_line(if msg.is_empty() { &err } else { &msg })
        )));
    }
    Ok(out.stdout)
}

fn helper_get(helper: &str, key: &str) -> Result<Option<Credentials>> {
    let out = match run_helper(helper, "get", key.as_bytes()) {
        Ok(out) => out,
        // Helpers answer "credentials not found" with a failure status.
        Err(Error::Invalid(msg)) if msg.contains("not found") => return Ok(None),
        Err(e) => return Err(e),
    };
    let v: Value = serde_json::from_slice(&out)
        .map_err(|e| Error::Invalid(format!("credential helper {helper} answered: {e}")))?;
    let username = v.get("Username").and_then(Value::as_str).unwrap_or("");
    let secret = v.get("Secret").and_then(Value::as_str).unwrap_or("");
    if secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: username.to_owned(),
        secret: secret.to_owned(),
    }))
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Basic realm="x"` or `Bearer realm="…",service="…",scope="…"` (values may hold
/// commas inside their quotes).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    } else {
        None
    }
}

fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key.trim().to_owned(), value.trim().to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="berth""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge("bearer realm=http://x/t, service=s"),
            Some(Challenge::Bearer {
                realm: "http://x/t".into(),
                service: Some("s".into()),
                scope: None
            })
        );
        assert_eq!(parse_challenge("Bearer service=\"x\""), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn config_round_trip_keeps_unknown_keys() {
        let dir = tempdir();
        let path = dir.join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}},"psFormat":"x"}"#,
        )
        .unwrap();
        let mut cfg = DockerConfig::load(&path).unwrap();
        assert_eq!(
            cfg.credentials("docker.io").unwrap(),
            Some(Credentials {
                username: "u".into(),
                secret: "p".into()
            })
        );
        let c = Credentials {
            username: "alice".into(),
            secret: "s:e:c".into(),
        };
        cfg.store("localhost:5000", &c).unwrap();
        let cfg = DockerConfig::load(&path).unwrap();
        assert_eq!(cfg.credentials("localhost:5000").unwrap(), Some(c));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("psFormat"), "{text}");
        let mut cfg = cfg;
        assert!(cfg.erase("localhost:5000").unwrap());
        assert!(!cfg.erase("localhost:5000").unwrap());
        assert_eq!(cfg.credentials("localhost:5000").unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-auth-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
