//! Users from an htpasswd file. Only bcrypt hashes (`htpasswd -B`) are accepted: the other
//! formats htpasswd can write (MD5-crypt, SHA-1, crypt) are too weak to keep passwords.
//!
//! bcrypt is slow on purpose (milliseconds per check), and clients send Basic credentials
//! with every request, so a successful check is remembered for a few minutes: as a keyed
//! hash of the password (the key is random, made at start), never the password itself. An
//! unknown user costs a bcrypt check too, so that timing does not tell which names exist.
//! The file is re-read when it changes (checked at most once a second), which also forgets
//! every remembered check.

use crate::config::{file_stamp, FileStamp};
use anyhow::{bail, Context};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// How long a successful check is remembered.
const REMEMBER: Duration = Duration::from_secs(300);
/// How often the file's modification time is looked at.
const RECHECK: Duration = Duration::from_secs(1);

pub struct Htpasswd {
    path: PathBuf,
    key: Hmac<Sha256>,
    // A std Mutex: held for map operations only; bcrypt runs outside it.
    state: Mutex<State>,
}

struct State {
    users: Arc<HashMap<String, String>>,
    stamp: FileStamp,
    checked: Instant,
    remembered: HashMap<String, ([u8; 32], Instant)>,
    /// A hash of the same cost as the file's, to spend the same time on unknown users.
    decoy: Option<String>,
}

/// Parses the file: `user:hash` lines, `#` comments and blank lines ignored.
fn parse(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading htpasswd file {}", path.display()))?;
    let mut users = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            bail!("{} line {}: not user:hash", path.display(), n + 1);
        };
        if !["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
            bail!(
                "{} line {}: user {user:?} has no bcrypt hash (make it with htpasswd -B)",
                path.display(),
                n + 1
            );
        }
        users.insert(user.to_owned(), hash.to_owned());
    }
    Ok(users)
}

impl Htpasswd {
    /// Reads the file; fails when it is missing or holds anything but bcrypt entries.
    pub fn open(path: &Path) -> anyhow::Result<Htpasswd> {
        let users = parse(path)?;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("random key: {e}"))?;
        Ok(Htpasswd {
            path: path.to_owned(),
            key: Hmac::<Sha256>::new_from_slice(&key).context("hmac key")?,
            state: Mutex::new(State {
                users: Arc::new(users),
                stamp: file_stamp(path),
                checked: Instant::now(),
                remembered: HashMap::new(),
                decoy: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The users, re-read first if the file changed. A file that no longer parses is
    /// reported and the users read before are kept.
    fn users(&self) -> Arc<HashMap<String, String>> {
        let mut st = self.lock();
        if st.checked.elapsed() >= RECHECK {
            st.checked = Instant::now();
            let now = file_stamp(&self.path);
            if now != st.stamp {
                st.stamp = now;
                match parse(&self.path) {
                    Ok(users) => {
                        tracing::info!(users = users.len(), "htpasswd file re-read");
                        st.users = Arc::new(users);
                        st.remembered.clear();
                    }
                    Err(e) => tracing::error!("keeping the previous users: {e:#}"),
                }
            }
        }
        Arc::clone(&st.users)
    }

    pub fn exists(&self, user: &str) -> bool {
        self.users().contains_key(user)
    }

    fn fingerprint(&self, user: &str, password: &str) -> [u8; 32] {
        let mut mac = self.key.clone();
        mac.update(user.as_bytes());
        mac.update(&[0]);
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `password` is `user`'s.
    pub async fn verify(&self, user: &str, password: &str) -> bool {
        let users = self.users();
        let fp = self.fingerprint(user, password);
        {
            let st = self.lock();
            if let Some((known, at)) = st.remembered.get(user) {
                if at.elapsed() < REMEMBER && bool::from(known.ct_eq(&fp)) {
                    return true;
                }
            }
        }
        let (hash, real) = match users.get(user) {
            Some(h) => (h.clone(), true),
            None => (self.decoy(&users), false),
        };
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if ok && real {
            self.lock()
                .remembered
                .insert(user.to_owned(), (fp, Instant::now()));
        }
        ok && real
    }

    /// A bcrypt hash of a random password, of the cost the file's first entry uses.
    fn decoy(&self, users: &HashMap<String, String>) -> String {
        if let Some(d) = &self.lock().decoy {
            return d.clone();
        }
        let cost = users
            .values()
            .next()
            .and_then(|h| h.get(4..6))
            .and_then(|c| c.parse().ok())
            .unwrap_or(bcrypt::DEFAULT_COST);
        let d =
            bcrypt::hash(hex::encode(self.fingerprint("", "decoy")), cost).unwrap_or_else(|_| {
                "$2y$04$invalidinvalidinvalidinvalidinvalidinvalidinvalidinv".into()
            });
        self.lock().decoy = Some(d.clone());
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bcrypt_users_are_checked_and_the_file_is_re_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(&path, format!("# users\nalice:{hash}\n\n")).unwrap();
        let h = Htpasswd::open(&path).unwrap();
        assert!(h.verify("alice", "s3cret").await);
        assert!(h.verify("alice", "s3cret").await, "remembered");
        assert!(!h.verify("alice", "wrong").await);
        assert!(!h.verify("bob", "s3cret").await);
        assert!(h.exists("alice") && !h.exists("bob"));

        // Replaced: alice's password changes, bob appears.
        let hash2 = bcrypt::hash("other", 4).unwrap();
        std::fs::write(&path, format!("alice:{hash2}\nbob:{hash2}\n")).unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        assert!(
            !h.verify("alice", "s3cret").await,
            "the old password is forgotten"
        );
        assert!(h.verify("bob", "other").await);

        std::fs::write(&path, "carol:{SHA}abc\n").unwrap();
        assert!(
            Htpasswd::open(&path).is_err(),
            "non-bcrypt entries are refused"
        );
    }
}
