//! Retention policies: which tags and manifests a collection deletes, per repository glob.
//!
//! The first rule whose glob matches a repository applies to it. Among the tags a rule
//! considers (those `match_tags` matches, all when absent, less those `protect_tags`
//! matches), it deletes those beyond the `keep_last` most recently pushed *and* pushed
//! longer than `older_than` ago; with only one of the two, that one alone decides. An image
//! whose last tag goes is deleted with it (unless an index of the repository still uses it),
//! and with it every referrer (signatures, SBOMs) whose subject it is. `untagged_after`
//! deletes manifests that have no tag, are no child of an index and refer to no subject,
//! pushed longer ago than that. Deletes are conditional (a tag only while it still points
//! where it did, a manifest only while untagged), so a push racing the run wins.

use crate::access::repo_glob;
use crate::{millis, Registry, Result};
use berth_meta::RepoContents;
use berth_oci::{Digest, RepoName, Tag};
use regex::Regex;
use serde::Serialize;
use std::collections::HashSet;
use std::time::Duration;

/// A rule as configured.
#[derive(Debug, Clone, Default)]
pub struct RuleSpec {
    pub repositories: Vec<String>,
    pub keep_last: Option<usize>,
    pub older_than: Option<Duration>,
    pub match_tags: Option<String>,
    pub protect_tags: Option<String>,
    pub untagged_after: Option<Duration>,
    pub dry_run: bool,
}

/// A rule ready to apply.
#[derive(Debug, Clone)]
pub struct Rule {
    spec: RuleSpec,
    globs: Vec<crate::access::RepoGlob>,
    match_tags: Option<Regex>,
    protect_tags: Option<Regex>,
}

/// A whole-tag regex: `v1.*` matches `v1.2`, not `xv1.2`.
fn anchored(re: &Option<String>, what: &str) -> std::result::Result<Option<Regex>, String> {
    re.as_deref()
        .map(|r| Regex::new(&format!("^(?:{r})$")).map_err(|e| format!("{what} {r:?}: {e}")))
        .transpose()
}

impl Rule {
    /// Fails on an invalid glob or regex, naming it.
    pub fn new(spec: RuleSpec) -> std::result::Result<Rule, String> {
        if spec.repositories.is_empty() {
            return Err("a retention rule needs at least one repository glob".into());
        }
        let globs = spec
            .repositories
            .iter()
            .map(|g| repo_glob(g))
            .collect::<std::result::Result<_, _>>()?;
        Ok(Rule {
            match_tags: anchored(&spec.match_tags, "match_tags")?,
            protect_tags: anchored(&spec.protect_tags, "protect_tags")?,
            globs,
            spec,
        })
    }

    fn applies_to(&self, repo: &str) -> bool {
        self.globs.iter().any(|g| g.is_match(repo))
    }

    /// The tags this rule deletes from `contents` at time `now`, with why.
    fn doomed_tags<'c>(
        &self,
        contents: &'c RepoContents,
        now: i64,
    ) -> Vec<(&'c berth_meta::TagInfo, &'static str)> {
        let mut considered: Vec<_> = contents
            .tags
            .iter()
            .filter(|t| self.match_tags.as_ref().is_none_or(|r| r.is_match(&t.name)))
            .filter(|t| {
                !self
                    .protect_tags
                    .as_ref()
                    .is_some_and(|r| r.is_match(&t.name))
            })
            .collect();
        // Most recent first; names break ties so that the choice is stable.
        considered.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(a.name.cmp(&b.name)));
        let old =
            |t: &berth_meta::TagInfo| self.spec.older_than.map(|d| t.updated_at < now - millis(d));
        considered
            .into_iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let beyond = self.spec.keep_last.map(|n| i >= n);
                match (beyond, old(t)) {
                    (Some(true), Some(true)) | (Some(true), None) => Some((t, "keep_last")),
                    (None, Some(true)) => Some((t, "older_than")),
                    _ => None,
                }
            })
            .collect()
    }
}

/// Something a collection deleted (or, in a dry run, would delete).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Deleted {
    pub repository: String,
    pub digest: Digest,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// `keep_last`, `older_than`, `untagged`, `last tag deleted`, `subject deleted`,
    /// `subject missing`.
    pub reason: &'static str,
    /// Only reported: the rule (or the run) is a dry run.
    pub dry_run: bool,
}

impl Deleted {
    pub(crate) fn new(
        repo: &RepoName,
        digest: &Digest,
        tag: Option<&str>,
        reason: &'static str,
        dry_run: bool,
    ) -> Deleted {
        Deleted {
            repository: repo.to_string(),
            digest: digest.clone(),
            tag: tag.map(str::to_owned),
            reason,
            dry_run,
        }
    }
}

/// What retention did in one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionReport {
    pub tags_deleted: Vec<Deleted>,
    pub manifests_deleted: Vec<Deleted>,
}

impl Registry {
    /// Applies the configured retention rules to every repository; `dry_run` makes every
    /// rule a dry run.
    pub(crate) async fn apply_retention(&self, now: i64, dry_run: bool) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        if self.opts.retention.is_empty() {
            return Ok(report);
        }
        let names = self.meta.repositories(berth_meta::Page::default()).await?;
        for name in names {
            let Some(rule) = self.opts.retention.iter().find(|r| r.applies_to(&name)) else {
                continue;
            };
            let Ok(repo) = name.parse::<RepoName>() else {
                continue;
            };
            let Some(contents) = self.meta.repository(&repo).await? else {
                continue;
            };
            let dry = dry_run || rule.spec.dry_run;
            self.retain(&repo, &contents, rule, now, dry, &mut report)
                .await?;
        }
        Ok(report)
    }

    async fn retain(
        &self,
        repo: &RepoName,
        contents: &RepoContents,
        rule: &Rule,
        now: i64,
        dry: bool,
        report: &mut RetentionReport,
    ) -> Result<()> {
        let entry = |digest, tag, reason| Deleted::new(repo, digest, tag, reason, dry);
        let mut gone_tags = HashSet::new();
        for (t, reason) in rule.doomed_tags(contents, now) {
            let Ok(tag) = t.name.parse::<Tag>() else {
                continue;
            };
            if dry || self.meta.delete_tag_at(repo, &tag, &t.digest).await? {
                gone_tags.insert(t.name.as_str());
                report
                    .tags_deleted
                    .push(entry(&t.digest, Some(&t.name), reason));
            }
        }
        let tagged: HashSet<&Digest> = contents
            .tags
            .iter()
            .filter(|t| !gone_tags.contains(t.name.as_str()))
            .map(|t| &t.digest)
            .collect();
        let children: HashSet<&Digest> = contents.refs.iter().map(|(_, t, _)| t).collect();
        let lost_last_tag: HashSet<&Digest> = contents
            .tags
            .iter()
            .filter(|t| gone_tags.contains(t.name.as_str()))
            .map(|t| &t.digest)
            .filter(|d| !tagged.contains(d))
            .collect();
        let untagged_before = rule.spec.untagged_after.map(|d| now - millis(d));
        for m in &contents.manifests {
            if tagged.contains(&m.digest) || children.contains(&m.digest) {
                continue;
            }
            let reason = if lost_last_tag.contains(&m.digest) {
                "last tag deleted"
            } else if m.subject.is_none() && untagged_before.is_some_and(|b| m.pushed_at < b) {
                "untagged"
            } else {
                continue;
            };
            if dry || self.meta.delete_untagged_manifest(repo, &m.digest).await? {
                report
                    .manifests_deleted
                    .push(entry(&m.digest, None, reason));
                self.delete_referrers(repo, contents, &m.digest, dry, report, 0)
                    .await?;
            }
        }
        Ok(())
    }

    /// Deletes the referrers of `subject` (known from `contents`), and theirs.
    async fn delete_referrers(
        &self,
        repo: &RepoName,
        contents: &RepoContents,
        subject: &Digest,
        dry: bool,
        report: &mut RetentionReport,
        depth: u8,
    ) -> Result<()> {
        if depth > 8 {
            return Ok(());
        }
        for r in contents
            .manifests
            .iter()
            .filter(|m| m.subject.as_ref() == Some(subject))
        {
            if dry || self.meta.delete_manifest(repo, &r.digest).await? {
                report.manifests_deleted.push(Deleted::new(
                    repo,
                    &r.digest,
                    None,
                    "subject deleted",
                    dry,
                ));
                Box::pin(self.delete_referrers(repo, contents, &r.digest, dry, report, depth + 1))
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Rule, RuleSpec};
    use berth_meta::{RepoContents, TagInfo};
    use berth_oci::Digest;
    use std::time::Duration;

    fn contents(tags: &[(&str, i64)]) -> RepoContents {
        RepoContents {
            tags: tags
                .iter()
                .map(|(n, t)| TagInfo {
                    name: (*n).into(),
                    digest: Digest::sha256(n.as_bytes()),
                    updated_at: *t,
                })
                .collect(),
            ..RepoContents::default()
        }
    }

    fn doomed(spec: RuleSpec, c: &RepoContents, now: i64) -> Vec<String> {
        let rule = Rule::new(RuleSpec {
            repositories: vec!["**".into()],
            ..spec
        })
        .unwrap();
        let mut v: Vec<String> = rule
            .doomed_tags(c, now)
            .into_iter()
            .map(|(t, _)| t.name.clone())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn keep_last_older_than_match_and_protect() {
        let c = contents(&[
            ("v1", 1000),
            ("v2", 2000),
            ("v3", 3000),
            ("latest", 500),
            ("dev-1", 100),
        ]);
        let keep2 = RuleSpec {
            keep_last: Some(2),
            ..RuleSpec::default()
        };
        assert_eq!(doomed(keep2.clone(), &c, 4000), ["dev-1", "latest", "v1"]);
        let protect = RuleSpec {
            protect_tags: Some("latest".into()),
            ..keep2.clone()
        };
        assert_eq!(doomed(protect, &c, 4000), ["dev-1", "v1"]);
        let only_v = RuleSpec {
            match_tags: Some("v.*".into()),
            ..keep2.clone()
        };
        assert_eq!(doomed(only_v, &c, 4000), ["v1"]);
        // Both: beyond the two most recent and old; the regex matches whole tags.
        let both = RuleSpec {
            older_than: Some(Duration::from_millis(3500)),
            ..keep2
        };
        assert_eq!(doomed(both, &c, 4000), ["dev-1"]);
        let old = RuleSpec {
            older_than: Some(Duration::from_millis(2500)),
            match_tags: Some("v".into()),
            ..RuleSpec::default()
        };
        assert!(doomed(old, &c, 4000).is_empty());
        assert!(Rule::new(RuleSpec::default()).is_err(), "no repositories");
        assert!(Rule::new(RuleSpec {
            repositories: vec!["a".into()],
            match_tags: Some("(".into()),
            ..RuleSpec::default()
        })
        .is_err());
    }
}
