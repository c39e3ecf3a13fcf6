//! Whole tag lists of recently listed repositories, kept in memory by a backend that is the
//! only writer of its database (the embedded SQLite one), so that listing a repository's
//! tags again — what CI jobs, update bots and `skopeo list-tags` do all day — reads no table.
//!
//! Coherence rests on one generation number. Every write that can change a tag list or
//! make a repository vanish bumps it once its transaction is committed, from the database's
//! writer task (so a caller that gives up waiting cannot skip it). A list is stored with the
//! generation read *before* its query ran, and served only while that is still the current
//! one: a list read across a commit is stale the moment the commit is announced, and nothing
//! acknowledged to a client is ever missing from a list served after it.
//!
//! The memory is bounded: lists above [`MAX_BYTES`] are not kept, and the whole set is
//! dropped when it would outgrow that; a miss costs one query, as without the cache.

use crate::Names;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Bytes of names (plus a word each) kept across all lists: ten thousand tags of a dozen
/// characters take about 300 KiB.
pub const MAX_BYTES: usize = 4 << 20;

#[derive(Default)]
pub struct TagLists {
    generation: AtomicU64,
    lists: Mutex<Lists>,
}

#[derive(Default)]
struct Lists {
    by_repo: HashMap<String, (u64, Arc<Vec<String>>)>,
    bytes: usize,
}

/// What a list of these names costs to keep.
fn cost(names: &[String]) -> usize {
    names
        .iter()
        .map(|n| n.len() + std::mem::size_of::<String>())
        .sum()
}

impl TagLists {
    /// The generation to pass to [`TagLists::keep`] for a list about to be read.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Announces a committed write that may have changed any tag list.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut lists) = self.lists.lock() {
            *lists = Lists::default();
        }
    }

    /// All tags of `repo`, in order, if a list read since the last write is kept.
    pub fn get(&self, repo: &str) -> Option<Arc<Vec<String>>> {
        let lists = self.lists.lock().ok()?;
        let (generation, names) = lists.by_repo.get(repo)?;
        (*generation == self.generation()).then(|| names.clone())
    }

    /// Keeps `names`, all tags of `repo` as read by a query that began at `generation`.
    pub fn keep(&self, repo: &str, generation: u64, names: Arc<Vec<String>>) {
        let cost = cost(&names);
        if cost > MAX_BYTES {
            return;
        }
        let Ok(mut lists) = self.lists.lock() else {
            return;
        };
        // Checked under the lock that `invalidate` also takes: a write announced after this
        // check finds the list in the map and drops it.
        if generation != self.generation() {
            return;
        }
        if lists.bytes + cost > MAX_BYTES {
            *lists = Lists::default();
        }
        if let Some((_, old)) = lists.by_repo.insert(repo.to_owned(), (generation, names)) {
            lists.bytes -= self::cost(&old);
        }
        lists.bytes += cost;
    }
}

/// The page of `all` (sorted) after `after`, at most `limit` names: shared, not copied.
pub fn page(all: Arc<Vec<String>>, after: Option<&str>, limit: Option<u64>) -> Names {
    let start = after.map_or(0, |a| all.partition_point(|n| n.as_str() <= a));
    let end = limit.map_or(all.len(), |l| {
        start.saturating_add(l.min(usize::MAX as u64) as usize)
    });
    Names::slice(all, start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(k: usize) -> Arc<Vec<String>> {
        Arc::new((0..k).map(|i| format!("t{i:04}")).collect())
    }

    #[test]
    fn a_list_read_across_a_write_is_never_served() {
        let c = TagLists::default();
        let g = c.generation();
        c.invalidate();
        c.keep("r", g, names(3));
        assert!(c.get("r").is_none());
        let g = c.generation();
        c.keep("r", g, names(3));
        assert_eq!(c.get("r").map(|l| l.len()), Some(3));
        c.invalidate();
        assert!(c.get("r").is_none());
    }

    #[test]
    fn memory_stays_bounded() {
        let c = TagLists::default();
        let big = Arc::new(vec!["x".repeat(1024); MAX_BYTES / 1024 + 1]);
        c.keep("big", c.generation(), big);
        assert!(c.get("big").is_none());
        for r in 0..200 {
            c.keep(&format!("r{r}"), c.generation(), names(1000));
        }
        let lists = c.lists.lock().unwrap();
        assert!(lists.bytes <= MAX_BYTES);
        assert_eq!(
            lists.bytes,
            lists.by_repo.values().map(|(_, l)| cost(l)).sum::<usize>()
        );
    }

    #[test]
    fn pages_follow_last_and_n() {
        let all = names(10);
        let page = |after, limit| page(all.clone(), after, limit);
        assert_eq!(page(None, Some(3)), all[..3].to_vec());
        assert_eq!(page(Some("t0004"), Some(2)), all[5..7].to_vec());
        assert_eq!(page(Some("t0003x"), None), all[4..].to_vec());
        assert!(page(Some("u"), Some(5)).is_empty());
        assert_eq!(page(Some(""), None).len(), 10);
        assert_eq!(page(Some("t0008"), Some(u64::MAX)).len(), 1);
    }
}
