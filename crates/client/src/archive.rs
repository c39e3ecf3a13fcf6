//! `berth save` and `berth load`: image archives as tar files.
//!
//! A saved archive is an OCI image layout *and* a docker archive at once, as `docker save`
//! writes since docker 25: `oci-layout`, `index.json` and `blobs/sha256/<hex>` for OCI tools
//! (`skopeo copy oci-archive:…`), plus docker's `manifest.json` (`Config`, `RepoTags`,
//! `Layers` as paths to the same blob files) for `docker load` and `skopeo copy
//! docker-archive:…`. Each blob is written once however many images share it.
//!
//! Loading reads either kind. Every regular file is hashed as it streams out of the tar and
//! stored under its digest (so the order of entries does not matter and nothing is held in
//! memory but the small JSON files); then `index.json` (keeping manifest digests) or, for a
//! docker archive alone, `manifest.json` (building an OCI manifest over the config and layer
//! files) says what the images are and how they are named.

use crate::error::{io_err, Error, Result};
use crate::reference::ImageRef;
use crate::store::{
    annotations, children, host_platform, pick_platform, Entry, LocalStore, REF_NAME,
};
use crate::transfer::REPO_DIGEST;
use berth_oci::manifest::{Descriptor, Kind, Manifest};
use berth_oci::{media, Digest, DigestHasher};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::Path;

/// The name containerd and docker give an index entry: the full reference.
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// One image to save: its names (familiar form) and its image manifest.
pub struct SaveItem {
    pub names: Vec<String>,
    pub full_names: Vec<String>,
    pub manifest: Descriptor,
    pub config: Digest,
    pub layers: Vec<Digest>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

fn header(size: u64, dir: bool) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_mtime(0);
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h
}

/// Writes the archive of `items` to `out`.
pub fn save(store: &LocalStore, items: &[SaveItem], out: impl Write) -> Result<()> {
    let err = |e: std::io::Error| io_err("writing the archive")(e);
    let mut tar = tar::Builder::new(out);
    let add = |tar: &mut tar::Builder<_>, path: &str, data: &[u8]| {
        tar.append_data(&mut header(data.len() as u64, false), path, data)
            .map_err(err)
    };
    add(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    for dir in ["blobs/", "blobs/sha256/"] {
        tar.append_data(&mut header(0, true), dir, std::io::empty())
            .map_err(err)?;
    }
    let mut written = HashSet::new();
    let mut index = Vec::new();
    let mut docker = Vec::new();
    for item in items {
        let mut blobs = vec![item.manifest.digest.clone(), item.config.clone()];
        blobs.extend(item.layers.iter().cloned());
        for d in blobs {
            if !written.insert(d.clone()) {
                continue;
            }
            let path = store.blob_path(&d);
            let mut f = std::fs::File::open(&path)
                .map_err(io_err(format!("reading {}", path.display())))?;
            let size = f.metadata().map_err(err)?.len();
            tar.append_data(&mut header(size, false), blob_path(&d), &mut f)
                .map_err(err)?;
        }
        let names: Vec<_> = if item.full_names.is_empty() {
            vec![None]
        } else {
            item.full_names.iter().map(Some).collect()
        };
        for full in names {
            let mut d = item.manifest.clone();
            d.annotations = full.map(|n| {
                let tag = n.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
                BTreeMap::from([
                    (CONTAINERD_NAME.to_owned(), n.clone()),
                    (REF_NAME.to_owned(), tag.to_owned()),
                ])
            });
            index.push(d);
        }
        docker.push(DockerEntry {
            config: blob_path(&item.config),
            repo_tags: Some(item.names.clone()),
            layers: item.layers.iter().map(blob_path).collect(),
        });
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": index,
    });
    let to_vec =
        |v: &serde_json::Value| serde_json::to_vec(v).map_err(|e| Error::Invalid(e.to_string()));
    add(&mut tar, "index.json", &to_vec(&index)?)?;
    let docker = serde_json::to_value(&docker).map_err(|e| Error::Invalid(e.to_string()))?;
    add(&mut tar, "manifest.json", &to_vec(&docker)?)?;
    tar.into_inner().map_err(err)?.flush().map_err(err)
}

/// What a load found: the named images it stored.
pub struct Loaded {
    pub entries: Vec<Entry>,
}

/// Files small enough to read whole that describe the archive.
const META_FILES: &[&str] = &["manifest.json", "index.json", "oci-layout", "repositories"];

/// Reads an archive from `input` into the store and names its images.
pub fn load(store: &LocalStore, input: impl Read) -> Result<Loaded> {
    let contents = Contents::read(store, input)?;
    let docker: Vec<DockerEntry> = match contents.meta.get("manifest.json") {
        Some(b) => serde_json::from_slice(b)
            .map_err(|e| Error::Invalid(format!("the archive's manifest.json: {e}")))?,
        None => Vec::new(),
    };
    let entries = if let Some(index) = contents.meta.get("index.json") {
        oci_entries(store, index)?
    } else if !docker.is_empty() {
        let mut entries = Vec::new();
        for item in &docker {
            entries.extend(docker_entries(store, &contents, item)?);
        }
        entries
    } else {
        return Err(Error::Invalid(
            "not an image archive: it has neither index.json nor manifest.json".into(),
        ));
    };
    let named = entries.clone();
    store.update(|all| {
        for e in named {
            // A name moves to the loaded image; an unnamed image is kept once.
            all.retain(|old| match &old.name {
                Some(_) => old.name != e.name,
                None => old.descriptor.digest != e.descriptor.digest,
            });
            all.push(e);
        }
    })?;
    Ok(Loaded { entries })
}

/// What an archive holds: its files staged into the store (by path), its links, and the
/// small files that describe it.
struct Contents {
    files: HashMap<String, Digest>,
    links: HashMap<String, String>,
    meta: HashMap<String, Vec<u8>>,
}

impl Contents {
    fn read(store: &LocalStore, input: impl Read) -> Result<Contents> {
        let err = |e: std::io::Error| io_err("reading the archive")(e);
        let mut c = Contents {
            files: HashMap::new(),
            links: HashMap::new(),
            meta: HashMap::new(),
        };
        let mut archive = tar::Archive::new(input);
        for entry in archive.entries().map_err(err)? {
            let mut entry = entry.map_err(err)?;
            let path = normalize(&entry.path().map_err(err)?.to_string_lossy());
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    if META_FILES.contains(&path.as_str()) {
                        let mut buf = Vec::new();
                        (&mut entry)
                            .take(64 << 20)
                            .read_to_end(&mut buf)
                            .map_err(err)?;
                        c.meta.insert(path, buf);
                    } else {
                        c.files.insert(path, stage(store, &mut entry)?);
                    }
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Some(target) = link_target(&entry, &path).map_err(err)? {
                        c.links.insert(path, target);
                    }
                }
                _ => {}
            }
        }
        Ok(c)
    }

    /// The digest of the file at `path`, following links (a few hops at most).
    fn resolve(&self, path: &str) -> Result<Digest> {
        let mut p = normalize(path);
        for _ in 0..8 {
            if let Some(d) = self.files.get(&p) {
                return Ok(d.clone());
            }
            match self.links.get(&p) {
                Some(next) => p = next.clone(),
                None => break,
            }
        }
        Err(Error::Invalid(format!("the archive has no file {path}")))
    }
}

/// Where a link entry at `path` points, as a path in the archive.
fn link_target<R: Read>(entry: &tar::Entry<'_, R>, path: &str) -> std::io::Result<Option<String>> {
    let Some(target) = entry.link_name()? else {
        return Ok(None);
    };
    let target = target.to_string_lossy().into_owned();
    Ok(Some(
        if entry.header().entry_type() == tar::EntryType::Symlink {
            let dir = Path::new(path).parent().unwrap_or(Path::new(""));
            normalize(&dir.join(&target).to_string_lossy())
        } else {
            normalize(&target)
        },
    ))
}

/// The images an OCI archive's `index.json` lists, named by their annotations.
fn oci_entries(store: &LocalStore, index: &[u8]) -> Result<Vec<Entry>> {
    #[derive(Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Descriptor>,
    }
    let index: Index = serde_json::from_slice(index)
        .map_err(|e| Error::Invalid(format!("the archive's index.json: {e}")))?;
    let mut entries = Vec::new();
    for d in index.manifests {
        let ann = d.annotations.clone().unwrap_or_default();
        let name = ann
            .get(CONTAINERD_NAME)
            .or_else(|| {
                ann.get(REF_NAME)
                    .filter(|n| n.contains(':') || n.contains('/'))
            })
            .and_then(|n| ImageRef::parse(n, true).ok())
            .map(|r| crate::transfer::local_name(&r));
        let descriptor = loadable(store, &d)?;
        entries.push(Entry { name, descriptor });
    }
    Ok(entries)
}

/// One image of a docker archive's `manifest.json`: an OCI manifest written for it, under
/// each of its tags (or none).
fn docker_entries(store: &LocalStore, c: &Contents, item: &DockerEntry) -> Result<Vec<Entry>> {
    let config = c.resolve(&item.config)?;
    let mut layers = Vec::new();
    for l in &item.layers {
        let d = c.resolve(l)?;
        let size = store.blob_size(&d).unwrap_or(0);
        layers.push(serde_json::json!({
            "mediaType": layer_type(&store.blob_path(&d)),
            "digest": d,
            "size": size,
        }));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config,
            "size": store.blob_size(&config).unwrap_or(0),
        },
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&manifest).map_err(|e| Error::Invalid(e.to_string()))?;
    let descriptor = Descriptor {
        media_type: media::OCI_MANIFEST.to_owned(),
        digest: store.put_bytes(&bytes)?,
        size: bytes.len() as u64,
        artifact_type: None,
        annotations: None,
        urls: None,
        platform: None,
    };
    let tags = item.repo_tags.clone().unwrap_or_default();
    if tags.is_empty() {
        return Ok(vec![Entry {
            name: None,
            descriptor,
        }]);
    }
    let mut entries = Vec::new();
    for t in tags {
        let r = ImageRef::parse(&t, true).map_err(|e| Error::Invalid(e.to_string()))?;
        entries.push(Entry {
            name: Some(crate::transfer::local_name(&r)),
            descriptor: descriptor.clone(),
        });
    }
    Ok(entries)
}

/// Whether a loaded manifest and what it references reached the store.
fn complete(store: &LocalStore, d: &Digest) -> Result<()> {
    let bytes = store
        .read_blob(d)
        .map_err(|_| Error::Invalid(format!("the archive lacks manifest {d}")))?;
    if let Some(child) = children(&bytes)
        .into_iter()
        .find(|c| store.blob_size(c).is_none())
    {
        return Err(Error::Invalid(format!(
            "the archive lacks {child}, which {d} needs"
        )));
    }
    Ok(())
}

/// What to name for the archive's entry `d`: `d` itself when everything it references came
/// with it; for an index that carries only some platforms (what `docker save` writes from
/// containerd's store), the host's image among them — or the first complete one — marked
/// with the index digest, as a pull of one platform would store it.
fn loadable(store: &LocalStore, d: &Descriptor) -> Result<Descriptor> {
    let plain = Descriptor {
        annotations: None,
        ..d.clone()
    };
    let bytes = store
        .read_blob(&d.digest)
        .map_err(|_| Error::Invalid(format!("the archive lacks manifest {}", d.digest)))?;
    let index = match Manifest::parse(&bytes, Some(&d.media_type)) {
        Ok(m) if m.kind == Kind::Index => m,
        _ => return complete(store, &d.digest).map(|()| plain),
    };
    let whole: Vec<Descriptor> = index
        .manifests
        .iter()
        .filter(|c| complete(store, &c.digest).is_ok())
        .cloned()
        .collect();
    if whole.len() == index.manifests.len() {
        return Ok(plain);
    }
    let chosen = pick_platform(&whole, &host_platform())
        .or(whole.first())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "the archive holds none of the images of index {}",
                d.digest
            ))
        })?;
    Ok(Descriptor {
        annotations: annotations(&[(REPO_DIGEST, &d.digest.to_string())]),
        ..chosen.clone()
    })
}

/// Stores one archive member under its digest.
fn stage(store: &LocalStore, from: &mut impl Read) -> Result<Digest> {
    let tmp = store.scratch("load");
    let what = || format!("writing {}", tmp.display());
    let mut f = std::fs::File::create(&tmp).map_err(io_err(what()))?;
    let mut hasher = DigestHasher::new(berth_oci::Algorithm::Sha256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = from.read(&mut buf).map_err(io_err("reading the archive"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        f.write_all(&buf[..n]).map_err(io_err(what()))?;
    }
    drop(f);
    let d = hasher.finish();
    store.commit_verified(&tmp, &d)?;
    Ok(d)
}

/// `./a/../b` → `b`: archive paths compared as docker writes and reads them.
fn normalize(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// The OCI media type of a layer file, from its first bytes.
fn layer_type(path: &Path) -> &'static str {
    let mut magic = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut magic))
        .unwrap_or(0);
    match &magic[..n] {
        [0x1f, 0x8b, ..] => "application/vnd.oci.image.layer.v1.tar+gzip",
        [0x28, 0xb5, 0x2f, 0xfd] => "application/vnd.oci.image.layer.v1.tar+zstd",
        _ => "application/vnd.oci.image.layer.v1.tar",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_normalize() {
        assert_eq!(super::normalize("./blobs/sha256/x"), "blobs/sha256/x");
        assert_eq!(super::normalize("a/b/../c.tar"), "a/c.tar");
    }
}
