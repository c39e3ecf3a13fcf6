//! Storage accounting, all from metadata (no walk of the blob store): bytes stored once,
//! bytes as if nothing were shared, and per repository what deleting it would free; tags
//! with their image sizes and push and pull times.
//!
//! Pull times are noted in memory by manifest GETs (a write per pull would cost the hottest
//! request a database transaction) and written in one batch by [`Registry::flush_pulls`],
//! which the server calls every few seconds and before every report.

use crate::{Error, Registry, Result};
use berth_meta::{ManifestInfo, RepoContents, RepoUsage, Usage};
use berth_oci::{Digest, RepoName};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;

/// Pulls noted and not yet written, at most this many manifests (beyond that, new ones wait
/// for the next flush; the times of those already noted still advance).
const PULLS_MAX: usize = 65_536;

#[derive(Default)]
pub(crate) struct PullLog {
    // A std Mutex: held for a map operation only, never across an await.
    map: Mutex<HashMap<(RepoName, Digest), i64>>,
}

impl PullLog {
    pub(crate) fn note(&self, repo: &RepoName, digest: &Digest) {
        let now = berth_meta::now_millis();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let full = map.len() >= PULLS_MAX;
        let key = (repo.clone(), digest.clone());
        match map.get_mut(&key) {
            Some(at) => *at = now,
            None if !full => {
                map.insert(key, now);
            }
            None => {}
        }
    }

    fn take(&self) -> Vec<(RepoName, Digest, i64)> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.drain().map(|((r, d), t)| (r, d, t)).collect()
    }
}

/// `GET /api/v1/usage`.
#[derive(Debug, Clone, Serialize)]
pub struct UsageReport {
    /// Bytes stored, each blob once: what the blob directory holds.
    pub physical_bytes: u64,
    /// Bytes of every image as if nothing were shared.
    pub logical_bytes: u64,
    /// `logical_bytes / physical_bytes` (1 when nothing is stored).
    pub dedup_ratio: f64,
    pub blobs: u64,
    pub repository_count: u64,
    pub repositories: Vec<RepoFigures>,
}

/// One repository's figures, times in RFC 3339.
#[derive(Debug, Clone, Serialize)]
pub struct RepoFigures {
    #[serde(flatten)]
    pub figures: RepoUsage,
    pub created_at: String,
    pub last_push: Option<String>,
    pub last_pull: Option<String>,
}

/// A tag as `GET /api/v1/repositories/NAME/tags` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct TagFigures {
    pub name: String,
    pub digest: Digest,
    pub media_type: String,
    /// The manifest with everything it references (an index with its images).
    pub size: u64,
    pub pushed_at: String,
    pub last_pull: Option<String>,
}

/// One page of a sorted list, and how many there are in all.
#[derive(Debug, Clone, Serialize)]
pub struct Paged<T> {
    pub total: u64,
    pub page: u64,
    pub per_page: u64,
    pub items: Vec<T>,
}

/// How to sort and page a list.
#[derive(Debug, Clone, Copy)]
pub struct ListRequest {
    pub sort: SortKey,
    pub descending: bool,
    /// From 1.
    pub page: u64,
    pub per_page: u64,
}

/// What a list is sorted by; each list accepts those that make sense for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Name,
    UniqueBytes,
    SharedBytes,
    LogicalBytes,
    Size,
    Tags,
    Manifests,
    Pushed,
    Pulled,
}

impl SortKey {
    pub fn parse(s: &str) -> Option<SortKey> {
        Some(match s {
            "name" => SortKey::Name,
            "unique_bytes" => SortKey::UniqueBytes,
            "shared_bytes" => SortKey::SharedBytes,
            "logical_bytes" => SortKey::LogicalBytes,
            "size" => SortKey::Size,
            "tags" => SortKey::Tags,
            "manifests" => SortKey::Manifests,
            "pushed" | "last_push" | "pushed_at" => SortKey::Pushed,
            "pulled" | "last_pull" | "pulled_at" => SortKey::Pulled,
            _ => return None,
        })
    }
}

/// Milliseconds since the epoch as RFC 3339 (UTC, milliseconds).
pub fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Sorts rows (item, name, key) by key, names breaking ties so that pages are stable, and
/// cuts the page asked for.
fn sorted_page<T>(mut rows: Vec<(T, String, (u64, i64))>, req: ListRequest) -> Paged<T> {
    rows.sort_by(|(_, na, ka), (_, nb, kb)| {
        let by_key = if req.descending {
            kb.cmp(ka)
        } else {
            ka.cmp(kb)
        };
        // Ties in a figure read best in name order, whichever way the figure goes.
        let by_name = if req.descending && req.sort == SortKey::Name {
            nb.cmp(na)
        } else {
            na.cmp(nb)
        };
        by_key.then(by_name)
    });
    page_of(rows.into_iter().map(|(t, _, _)| t).collect(), req)
}

fn page_of<T>(mut items: Vec<T>, req: ListRequest) -> Paged<T> {
    let total = items.len() as u64;
    let per_page = req.per_page.max(1);
    let start = (req.page.max(1) - 1).saturating_mul(per_page);
    let items = if start >= total {
        Vec::new()
    } else {
        let end = (start + per_page).min(total);
        items.truncate(end as usize);
        items.split_off(start as usize)
    };
    Paged {
        total,
        page: req.page.max(1),
        per_page,
        items,
    }
}

fn bad_sort(key: SortKey, what: &str) -> Error {
    Error::Unsupported(format!("{what} cannot be sorted by {key:?}"))
}

/// Image sizes in one repository: each manifest with everything it references, children
/// of an index included (each counted once per parent, as a pull would fetch them).
struct Sizes<'c> {
    manifests: HashMap<&'c Digest, &'c ManifestInfo>,
    refs: HashMap<&'c Digest, Vec<(&'c Digest, Option<u64>)>>,
    memo: HashMap<&'c Digest, u64>,
}

impl<'c> Sizes<'c> {
    fn new(contents: &'c RepoContents) -> Sizes<'c> {
        let mut refs: HashMap<&Digest, Vec<_>> = HashMap::new();
        for (m, target, size) in &contents.refs {
            refs.entry(m).or_default().push((target, *size));
        }
        Sizes {
            manifests: contents.manifests.iter().map(|m| (&m.digest, m)).collect(),
            refs,
            memo: HashMap::new(),
        }
    }

    fn of(&mut self, digest: &'c Digest, depth: u8) -> u64 {
        if let Some(s) = self.memo.get(digest) {
            return *s;
        }
        let mut total = self.manifests.get(digest).map(|m| m.size).unwrap_or(0);
        for (target, size) in self.refs.get(digest).cloned().unwrap_or_default() {
            total += if self.manifests.contains_key(target) && depth < 8 {
                self.of(target, depth + 1)
            } else {
                size.unwrap_or(0)
            };
        }
        self.memo.insert(digest, total);
        total
    }
}

impl Registry {
    /// Writes the pull times noted since the last flush.
    pub async fn flush_pulls(&self) -> Result<()> {
        let pulls = self.pulls.take();
        Ok(self.meta.record_pulls(&pulls).await?)
    }

    /// The figures [`Registry::usage`] reports, as the metadata store computes them: no
    /// times formatted for each repository. What the storage gauges read every 30 s; with a
    /// million repositories, the report's formatted times held at once tripled the memory.
    pub async fn usage_figures(&self) -> Result<Usage> {
        self.flush_pulls().await?;
        Ok(self.meta.usage().await?)
    }

    /// Storage figures for the whole registry and each repository.
    pub async fn usage(&self) -> Result<UsageReport> {
        let u = self.usage_figures().await?;
        Ok(UsageReport {
            physical_bytes: u.physical_bytes,
            logical_bytes: u.logical_bytes,
            dedup_ratio: dedup_ratio(&u),
            blobs: u.blobs,
            repository_count: u.repositories.len() as u64,
            repositories: u.repositories.into_iter().map(figures).collect(),
        })
    }

    /// Repositories with their figures, sorted and paged.
    pub async fn repositories_page(&self, req: ListRequest) -> Result<Paged<RepoFigures>> {
        self.flush_pulls().await?;
        let rows = self
            .meta
            .usage()
            .await?
            .repositories
            .into_iter()
            .map(|r| {
                let key = match req.sort {
                    SortKey::Name => (0, 0),
                    SortKey::UniqueBytes | SortKey::Size => (r.unique_bytes, 0),
                    SortKey::SharedBytes => (r.shared_bytes, 0),
                    SortKey::LogicalBytes => (r.logical_bytes, 0),
                    SortKey::Tags => (r.tags, 0),
                    SortKey::Manifests => (r.manifests, 0),
                    SortKey::Pushed => (0, r.last_push.unwrap_or(i64::MIN)),
                    SortKey::Pulled => (0, r.last_pull.unwrap_or(i64::MIN)),
                };
                let name = r.name.clone();
                (figures(r), name, key)
            })
            .collect();
        Ok(sorted_page(rows, req))
    }

    /// The tags of `repo` with digest, image size, push and last pull times, sorted and
    /// paged; `NAME_UNKNOWN` for a repository that does not exist.
    pub async fn tags_page(&self, repo: &RepoName, req: ListRequest) -> Result<Paged<TagFigures>> {
        if !matches!(
            req.sort,
            SortKey::Name | SortKey::Pushed | SortKey::Pulled | SortKey::Size
        ) {
            return Err(bad_sort(req.sort, "tags"));
        }
        self.flush_pulls().await?;
        let contents = self
            .meta
            .repository(repo)
            .await?
            .ok_or_else(|| Error::NameUnknown(repo.clone()))?;
        let mut sizes = Sizes::new(&contents);
        let rows = contents
            .tags
            .iter()
            .map(|t| {
                let m = sizes.manifests.get(&t.digest).copied();
                let size = sizes.of(&t.digest, 0);
                let pulled = m.and_then(|m| m.pulled_at);
                let key = match req.sort {
                    SortKey::Size => (size, 0),
                    SortKey::Pushed => (0, t.updated_at),
                    SortKey::Pulled => (0, pulled.unwrap_or(i64::MIN)),
                    _ => (0, 0),
                };
                let fig = TagFigures {
                    name: t.name.clone(),
                    digest: t.digest.clone(),
                    media_type: m.map(|m| m.media_type.clone()).unwrap_or_default(),
                    size,
                    pushed_at: rfc3339(t.updated_at),
                    last_pull: pulled.map(rfc3339),
                };
                (fig, t.name.clone(), key)
            })
            .collect();
        Ok(sorted_page(rows, req))
    }
}

/// Logical bytes over physical bytes (1 when nothing is stored).
pub fn dedup_ratio(u: &Usage) -> f64 {
    match u.physical_bytes {
        0 => 1.0,
        p => u.logical_bytes as f64 / p as f64,
    }
}

fn figures(r: RepoUsage) -> RepoFigures {
    RepoFigures {
        created_at: rfc3339(r.created_at),
        last_push: r.last_push.map(rfc3339),
        last_pull: r.last_pull.map(rfc3339),
        figures: r,
    }
}
