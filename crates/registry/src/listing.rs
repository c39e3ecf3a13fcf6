//! Listings: tags of a repository, the catalog of repositories, and referrers of a manifest.
//! Pages are keyset-paged (`last` is the key to continue after), so a page costs the same at
//! the millionth entry as at the first.

use crate::cache::{Key, Value};
use crate::{Error, Registry, Result};
use berth_meta::Page;
use berth_oci::{Digest, RepoName};
use bytes::Bytes;
use serde::Serialize;
use std::collections::BTreeMap;

/// One page of names as the spec's JSON body, and whether more follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// `{"name":…,"tags":[…]}` or `{"repositories":[…]}`.
    pub body: Bytes,
    /// The page was cut at `n`: a `Link` to the next one is due.
    pub more: bool,
    /// The page size used, for the `Link` to the next page.
    pub n: u64,
    /// Where the next page starts after (its `last`): the last name of this page, or, when
    /// names were hidden from the caller, the last one looked at.
    pub last: Option<String>,
}

/// Names a filtered catalog page looks at, at most, before it answers with what it found:
/// a caller who may see few repositories among millions still gets an answer quickly.
const SCAN_MAX: usize = 100_000;

/// A referrer as the referrers index lists it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Referrer {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The body of a tag list page.
#[derive(Serialize)]
struct TagList<'a> {
    name: &'a str,
    tags: &'a [String],
}

/// The body of a catalog page.
#[derive(Serialize)]
struct Catalog<'a> {
    repositories: &'a [String],
}

fn json(value: &impl Serialize) -> Bytes {
    // Names and strings only: serialization cannot fail.
    serde_json::to_vec(value).unwrap_or_default().into()
}

impl Registry {
    /// Tags of `repo` in lexical order after `last`: all of them when `n` is not given,
    /// else at most `n` (capped at the configured page limit). A whole list, what CI jobs
    /// and update bots poll, is kept while no write changes it, and pages are cut from it.
    pub async fn list_tags(
        &self,
        repo: &RepoName,
        n: Option<u64>,
        last: Option<&str>,
    ) -> Result<Listing> {
        let n = n.map(|n| n.min(self.opts.max_page));
        let key = Key::TagList(repo.clone());
        let generation = self.meta.generation().await?;
        let whole = n.is_none() && last.is_none();
        if let Some(Value::TagList { names, body }) = self.resolutions.get(&key, generation) {
            if whole {
                return Ok(Listing::whole(body));
            }
            let from = last.map_or(0, |l| names.partition_point(|t| t.as_str() <= l));
            let to = n.map_or(names.len(), |n| names.len().min(from + n as usize + 1));
            return Ok(cut(names[from..to].to_vec(), n, tag_body(repo)));
        }
        let page = Page {
            after: last,
            limit: n.map(|n| n + 1),
        };
        let names = self
            .meta
            .tags(repo, page)
            .await?
            .ok_or_else(|| Error::NameUnknown(repo.clone()))?;
        if !whole {
            return Ok(cut(names, n, tag_body(repo)));
        }
        let names = std::sync::Arc::new(names);
        let body = tag_body(repo)(&names);
        let value = Value::TagList {
            names,
            body: body.clone(),
        };
        self.resolutions.keep(key, generation, value);
        Ok(Listing::whole(body))
    }

    /// Repository names in lexical order after `last` that `visible` keeps, at most `n` (a
    /// default page when not given, capped at the configured page limit).
    pub async fn catalog(
        &self,
        n: Option<u64>,
        last: Option<&str>,
        visible: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Listing> {
        let n = n
            .unwrap_or(self.opts.default_catalog_page)
            .min(self.opts.max_page);
        let batch = n + 1;
        let mut kept = Vec::new();
        let mut cursor = last.map(str::to_owned);
        let mut scanned = 0usize;
        loop {
            let names = self
                .meta
                .repositories(Page {
                    after: cursor.as_deref(),
                    limit: Some(batch),
                })
                .await?;
            let exhausted = (names.len() as u64) < batch;
            scanned += names.len();
            // Read only once the whole batch is consumed (a cut page returns first).
            cursor = names.last().cloned();
            for name in names {
                if kept.len() as u64 > n {
                    break;
                }
                if visible(&name) {
                    kept.push(name);
                }
            }
            if kept.len() as u64 > n || exhausted {
                return Ok(cut(kept, Some(n), catalog_body));
            }
            if scanned >= SCAN_MAX {
                // Hidden names only so far: answer with what was found, and a `Link` that
                // continues after the last name looked at.
                return Ok(Listing {
                    body: catalog_body(&kept),
                    more: true,
                    n,
                    last: cursor,
                });
            }
        }
    }

    /// Manifests in `repo` whose subject is `subject`, optionally of one artifact type. An
    /// unknown subject or repository has no referrers: an empty list, never a 404.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let records = self.meta.referrers(repo, subject, artifact_type).await?;
        Ok(records
            .into_iter()
            .map(|r| Referrer {
                media_type: r.media_type,
                digest: r.digest,
                size: r.size,
                artifact_type: r.artifact_type,
                annotations: r.annotations.and_then(|a| serde_json::from_str(&a).ok()),
            })
            .collect())
    }
}

/// What writes the body of a page of `repo`'s tags.
fn tag_body(repo: &RepoName) -> impl FnOnce(&[String]) -> Bytes + '_ {
    move |tags| {
        json(&TagList {
            name: repo.as_str(),
            tags,
        })
    }
}

fn catalog_body(repositories: &[String]) -> Bytes {
    json(&Catalog { repositories })
}

impl Listing {
    fn whole(body: Bytes) -> Listing {
        Listing {
            body,
            more: false,
            n: 0,
            last: None,
        }
    }
}

/// Trims the one-extra entry fetched to learn whether another page follows, and writes the
/// page's body with `body`.
fn cut(mut names: Vec<String>, n: Option<u64>, body: impl FnOnce(&[String]) -> Bytes) -> Listing {
    let more = matches!(n, Some(n) if names.len() as u64 > n);
    if let Some(n) = n {
        names.truncate(n as usize);
    }
    Listing {
        body: body(&names),
        more,
        n: n.unwrap_or(0),
        last: names.last().cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn cut_pages() {
        let v = |k: usize| (0..k).map(|i| i.to_string()).collect::<Vec<_>>();
        let page = |k, n| cut(v(k), n, super::catalog_body);
        assert!(page(3, Some(2)).more);
        assert_eq!(page(3, Some(2)).body, &br#"{"repositories":["0","1"]}"#[..]);
        assert_eq!(page(3, Some(2)).last.as_deref(), Some("1"));
        assert!(!page(2, Some(2)).more);
        assert!(!page(5, None).more);
        assert_eq!(page(1, Some(0)).body, &br#"{"repositories":[]}"#[..]);
    }
}
