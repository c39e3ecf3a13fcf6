//! The local image store: an OCI image layout directory, so every blob — a layer shared by
//! many images included — is stored once, under its digest.
//!
//! ```text
//! <root>/oci-layout                  {"imageLayoutVersion":"1.0.0"}
//! <root>/index.json                  one entry per name: the manifest (or index) descriptor,
//!                                    its name in `org.opencontainers.image.ref.name`
//! <root>/blobs/sha256/<hex>          complete, verified blobs only
//! <root>/ingest/<hex>.partial        downloads under way: a pull resumes from their length
//! <root>/ingest/<hex>.lock           held exclusive by whoever downloads <hex>, so two pulls
//!                                    of one layer never write one partial file at once;
//!                                    deleted by its holder when the download ends
//! <root>/ingest/push-<key>           the upload URL of an unfinished push, to resume it
//! <root>/lock                        shared by writers of content, exclusive for deletion
//! ```
//!
//! A blob appears under `blobs/` only through [`LocalStore::commit`]: written in `ingest/`,
//! verified, flushed to disk, renamed into place and the directory flushed, so a crash never
//! leaves a partial blob behind a digest. `index.json` is rewritten the same way under an
//! exclusive lock of `index.lock`. Commands that add content hold `lock` shared for their whole
//! run; `rmi` and `prune` hold it exclusive, so they never delete a blob a pull has just
//! written but not yet named.

use crate::error::{io_err, Error, Result};
use berth_oci::manifest::{Descriptor, Platform};
use berth_oci::{media, Digest, DigestHasher};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The annotation naming an index entry.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub struct LocalStore {
    root: PathBuf,
}

/// One named image of the store.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The full reference (`registry/repository:tag` or `…@digest`); `None` for an image
    /// loaded without a name.
    pub name: Option<String>,
    pub descriptor: Descriptor,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexFile {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// A held file lock, released on drop.
pub struct Lock(#[allow(dead_code)] File);

/// The right to download one blob ([`LocalStore::lock_ingest`]); its file is deleted on drop,
/// while still locked, so no other process can hold a lock on it that a newcomer would miss.
pub struct IngestLock {
    file: File,
    path: PathBuf,
}

impl Drop for IngestLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// Whether `path` still names the open file `f` (and not a deleted one, or a newer one).
fn same_file(f: &File, path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let held = f.metadata()?;
    match fs::metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

impl LocalStore {
    /// `$BERTH_STORE`, else `$XDG_DATA_HOME/berth`, else `~/.local/share/berth`.
    pub fn default_root() -> PathBuf {
        if let Some(p) = std::env::var_os("BERTH_STORE") {
            return PathBuf::from(p);
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::auth::home_dir().join(".local").join("share"));
        data.join("berth")
    }

    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<LocalStore> {
        let what = || format!("creating the image store at {}", root.display());
        fs::create_dir_all(root.join("blobs").join("sha256")).map_err(io_err(what()))?;
        fs::create_dir_all(root.join("ingest")).map_err(io_err(what()))?;
        let layout = root.join("oci-layout");
        if !layout.exists() {
            fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_err(what()))?;
        }
        Ok(LocalStore {
            root: root.to_owned(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens (creating) a file that exists to be locked.
    fn lock_file(path: &Path) -> Result<File> {
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err(format!("opening {}", path.display())))
    }

    fn lock(&self, file: &str, exclusive: bool) -> Result<Lock> {
        let path = self.root.join(file);
        let f = Self::lock_file(&path)?;
        let locked = if exclusive { f.lock() } else { f.lock_shared() };
        locked.map_err(io_err(format!("locking {}", path.display())))?;
        Ok(Lock(f))
    }

    /// Held by commands that add content.
    pub fn lock_shared(&self) -> Result<Lock> {
        self.lock("lock", false)
    }

    /// Held by commands that delete content.
    pub fn lock_exclusive(&self) -> Result<Lock> {
        self.lock("lock", true)
    }

    /// Waits for the right to download `d`: one writer per partial file, across processes.
    /// The caller checks [`LocalStore::blob_size`] again once it holds the lock, since the
    /// writer it waited for may have finished the blob.
    ///
    /// The lock file exists only while held: its holder deletes it before letting go, so
    /// `ingest/` is empty once every transfer has ended. A waiter that then gets the lock
    /// of the deleted file finds the path gone (or another file there) and tries again.
    pub async fn lock_ingest(&self, d: &Digest) -> Result<IngestLock> {
        let path = self.root.join("ingest").join(format!("{}.lock", d.hex()));
        let locking = || io_err(format!("locking {}", path.display()));
        loop {
            let f = Self::lock_file(&path)?;
            // Polled rather than blocking, so a waiting task never holds a runtime thread.
            loop {
                match f.try_lock() {
                    Ok(()) => break,
                    Err(fs::TryLockError::WouldBlock) => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await
                    }
                    Err(fs::TryLockError::Error(e)) => return Err(locking()(e)),
                }
            }
            if same_file(&f, &path).map_err(locking())? {
                return Ok(IngestLock { file: f, path });
            }
        }
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    /// The size of a stored blob, or `None`.
    pub fn blob_size(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(d)).ok().map(|m| m.len())
    }

    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(d);
        fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::NotFound(format!("blob {d} is missing from the local store"))
            }
            _ => io_err(format!("reading {}", path.display()))(e),
        })
    }

    /// Where a download of `d` accumulates until it is complete.
    pub fn partial_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("ingest")
            .join(format!("{}.partial", d.hex()))
    }

    /// A file in `ingest/` for the state of an unfinished push.
    pub fn push_state_path(&self, key: &str) -> PathBuf {
        self.root.join("ingest").join(format!("push-{key}"))
    }

    /// A fresh scratch file in `ingest/`.
    pub fn scratch(&self, hint: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.root
            .join("ingest")
            .join(format!("{hint}-{}-{n}.tmp", std::process::id()))
    }

    /// Verifies that the file at `from` hashes to `d`, then makes it the blob `d` (see the
    /// module doc). The file is consumed either way.
    pub fn commit(&self, from: &Path, d: &Digest) -> Result<u64> {
        let mut hasher = DigestHasher::new(d.algorithm());
        let mut f = File::open(from).map_err(io_err(format!("reading {}", from.display())))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(io_err(format!("reading {}", from.display())))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let size = hasher.len();
        let actual = hasher.finish();
        if &actual != d {
            let _ = fs::remove_file(from);
            return Err(Error::DigestMismatch {
                expected: d.to_string(),
                actual: actual.to_string(),
            });
        }
        self.commit_verified(from, d)?;
        Ok(size)
    }

    /// Makes `from`, already hashed to `d` by the caller, the blob `d`.
    pub fn commit_verified(&self, from: &Path, d: &Digest) -> Result<()> {
        let what = || format!("storing blob {d}");
        File::open(from)
            .and_then(|f| f.sync_all())
            .map_err(io_err(what()))?;
        let to = self.blob_path(d);
        let dir = to.parent().unwrap_or(&self.root).to_owned();
        fs::create_dir_all(&dir).map_err(io_err(what()))?;
        if let Err(e) = fs::rename(from, &to) {
            // Another writer committed the same content first: the blob is there, whole.
            let done = e.kind() == std::io::ErrorKind::NotFound && self.blob_size(d).is_some();
            if !done {
                return Err(io_err(what())(e));
            }
        }
        File::open(&dir)
            .and_then(|f| f.sync_all())
            .map_err(io_err(what()))
    }

    /// Stores a small blob held in memory (a manifest, a config).
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::sha256(bytes);
        if self.blob_size(&d) == Some(bytes.len() as u64) {
            return Ok(d);
        }
        let tmp = self.scratch("put");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)
        };
        write().map_err(io_err(format!("writing {}", tmp.display())))?;
        self.commit_verified(&tmp, &d)?;
        Ok(d)
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Every named (and unnamed) image, in index order.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let path = self.index_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(format!("reading {}", path.display()))(e)),
        };
        let index: IndexFile = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Invalid(format!("{} is damaged: {e}", path.display())))?;
        Ok(index
            .manifests
            .into_iter()
            .map(|d| Entry {
                name: d
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .cloned(),
                descriptor: d,
            })
            .collect())
    }

    /// Rewrites the index with `change` applied, under the index lock.
    pub fn update(&self, change: impl FnOnce(&mut Vec<Entry>)) -> Result<()> {
        let _guard = self.lock("index.lock", true)?;
        let mut entries = self.entries()?;
        change(&mut entries);
        let manifests = entries
            .into_iter()
            .map(|e| {
                let mut d = e.descriptor;
                let mut ann = d.annotations.take().unwrap_or_default();
                ann.remove(REF_NAME);
                if let Some(n) = e.name {
                    ann.insert(REF_NAME.to_owned(), n);
                }
                d.annotations = (!ann.is_empty()).then_some(ann);
                d
            })
            .collect();
        let index = IndexFile {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.to_owned()),
            manifests,
        };
        let body = serde_json::to_vec_pretty(&index).map_err(|e| Error::Invalid(e.to_string()))?;
        let tmp = self.scratch("index");
        let path = self.index_path();
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(io_err(format!("writing {}", path.display())))
    }

    /// Names `descriptor` `name`, replacing what the name pointed at.
    pub fn set(&self, name: &str, descriptor: Descriptor) -> Result<()> {
        self.update(|entries| {
            entries.retain(|e| e.name.as_deref() != Some(name));
            entries.push(Entry {
                name: Some(name.to_owned()),
                descriptor,
            });
        })
    }

    /// Blobs some image of the store uses: manifests, configs, layers, index children that are
    /// present, and the images that refer to them (signatures and other referrers kept with
    /// an image are entries of their own).
    pub fn used_blobs(&self) -> Result<HashSet<Digest>> {
        let mut used = HashSet::new();
        let mut todo: Vec<Digest> = self
            .entries()?
            .into_iter()
            .map(|e| e.descriptor.digest)
            .collect();
        while let Some(d) = todo.pop() {
            if !used.insert(d.clone()) {
                continue;
            }
            let Ok(bytes) = fs::read(self.blob_path(&d)) else {
                continue;
            };
            for child in children(&bytes) {
                todo.push(child);
            }
        }
        Ok(used)
    }

    /// Every complete blob with its size.
    pub fn blobs(&self) -> Result<Vec<(Digest, u64)>> {
        let mut out = Vec::new();
        for alg in ["sha256", "sha512"] {
            let dir = self.root.join("blobs").join(alg);
            let Ok(rd) = fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(hex) = name.to_str() else { continue };
                if let Ok(d) = format!("{alg}:{hex}").parse::<Digest>() {
                    out.push((d, e.metadata().map(|m| m.len()).unwrap_or(0)));
                }
            }
        }
        Ok(out)
    }

    /// Deletes every blob no image uses and every leftover of interrupted transfers; returns
    /// the blobs deleted with their sizes, and the bytes of the leftovers. Call with the
    /// exclusive lock held.
    pub fn sweep(&self, keep_partials: bool) -> Result<(Vec<(Digest, u64)>, u64)> {
        let used = self.used_blobs()?;
        let mut deleted = Vec::new();
        for (d, size) in self.blobs()? {
            if !used.contains(&d) {
                let path = self.blob_path(&d);
                fs::remove_file(&path).map_err(io_err(format!("deleting {}", path.display())))?;
                deleted.push((d, size));
            }
        }
        let mut scratch = 0;
        if let Ok(rd) = fs::read_dir(self.root.join("ingest")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                // Lock files are only left by interrupted or older versions: no download
                // runs while the caller holds the store exclusive.
                if keep_partials && !name.ends_with(".tmp") && !name.ends_with(".lock") {
                    continue;
                }
                scratch += e.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = fs::remove_file(e.path());
            }
        }
        Ok((deleted, scratch))
    }
}

/// The digests a manifest or index names: config, layers, children, subject excluded.
pub fn children(bytes: &[u8]) -> Vec<Digest> {
    #[derive(Deserialize)]
    struct Shape {
        config: Option<Descriptor>,
        #[serde(default)]
        layers: Vec<Descriptor>,
        #[serde(default)]
        manifests: Vec<Descriptor>,
    }
    match serde_json::from_slice::<Shape>(bytes) {
        Ok(s) => s
            .config
            .into_iter()
            .chain(s.layers)
            .chain(s.manifests)
            .map(|d| d.digest)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The platform this machine runs, in OCI terms.
pub fn host_platform() -> Platform {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    };
    Platform {
        os: std::env::consts::OS.to_owned(),
        architecture: architecture.to_owned(),
        variant: (architecture == "arm64").then(|| "v8".to_owned()),
        os_version: None,
    }
}

/// Picks the entry of an index for `wanted`: an exact match, else (for arm64) one without a
/// variant.
pub fn pick_platform<'a>(manifests: &'a [Descriptor], wanted: &Platform) -> Option<&'a Descriptor> {
    let relaxed = Platform {
        variant: None,
        ..wanted.clone()
    };
    manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| p.satisfies(wanted)))
        .or_else(|| {
            manifests.iter().find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.satisfies(&relaxed) && p.variant.is_none())
            })
        })
}

/// The annotations map of a fresh descriptor.
pub fn annotations(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    (!pairs.is_empty()).then(|| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::env::temp_dir().join(format!("berth-store-{}-{n}", std::process::id()))
    }

    #[test]
    fn blobs_are_verified_and_shared_ones_survive_a_sweep() {
        let root = temp();
        let store = LocalStore::open(&root).unwrap();
        let layer = store.put_bytes(b"shared layer").unwrap();
        let loose = store.put_bytes(b"loose").unwrap();
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x/y","digest":"{layer}","size":12}},"layers":[{{"mediaType":"x/y","digest":"{layer}","size":12}}]}}"#
        );
        let m = store.put_bytes(manifest.as_bytes()).unwrap();
        let desc = Descriptor {
            media_type: media::OCI_MANIFEST.into(),
            digest: m.clone(),
            size: manifest.len() as u64,
            artifact_type: None,
            annotations: None,
            urls: None,
            platform: None,
        };
        store.set("localhost/a:1", desc.clone()).unwrap();
        store.set("localhost/b:1", desc).unwrap();
        assert_eq!(store.entries().unwrap().len(), 2);
        let (deleted, _) = store.sweep(false).unwrap();
        assert_eq!(deleted, vec![(loose, 5)]);
        assert!(store.blob_size(&layer).is_some() && store.blob_size(&m).is_some());

        let bad = store.scratch("t");
        fs::write(&bad, b"not what it says").unwrap();
        assert!(matches!(
            store.commit(&bad, &layer),
            Err(Error::DigestMismatch { .. })
        ));
        assert!(!bad.exists());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn platforms_are_picked_like_docker() {
        let d = |p: &str| Descriptor {
            media_type: media::OCI_MANIFEST.into(),
            digest: Digest::sha256(p.as_bytes()),
            size: 1,
            artifact_type: None,
            annotations: None,
            urls: None,
            platform: Platform::parse(p),
        };
        let list = [d("linux/amd64"), d("linux/arm64"), d("linux/arm/v7")];
        let pick = |w: &str| {
            pick_platform(&list, &Platform::parse(w).unwrap())
                .map(|x| x.platform.clone().unwrap().to_string())
        };
        assert_eq!(pick("linux/arm64/v8").as_deref(), Some("linux/arm64"));
        assert_eq!(pick("linux/arm/v7").as_deref(), Some("linux/arm/v7"));
        assert_eq!(pick("linux/arm").as_deref(), Some("linux/arm/v7"));
        assert_eq!(pick("linux/s390x"), None);
    }
}
