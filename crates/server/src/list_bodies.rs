//! Bodies of whole tag lists served recently, each kept with the identity of the shared list
//! it was written from.
//!
//! The metadata store hands back the same shared list (one allocation, see
//! `berth_meta::Names`) for a repository until a write changes its tags, so a list seen again
//! is answered with the bytes already written for it: polling a long tag list, as CI jobs
//! and update bots do, costs neither a database read nor a serialization. The identity
//! (`berth_meta::NamesId`) keeps the list's allocation but not its names, so no other list
//! can be mistaken for it and a dropped list costs nothing here. Bodies, with a fixed cost
//! per entry, are kept up to [`MAX_BYTES`]; entries whose list nobody holds any more (it
//! cannot come back) go first, then the oldest.

use berth_meta::{Names, NamesId};
use berth_oci::RepoName;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Bytes of bodies (and entries) kept at most.
pub const MAX_BYTES: usize = 4 << 20;

/// What an entry costs besides its body: the repository name twice, the list's header and
/// the map's slot, rounded up.
const ENTRY: usize = 256;

#[derive(Default)]
pub struct ListBodies(Mutex<Kept>);

#[derive(Default)]
struct Kept {
    bodies: HashMap<RepoName, (NamesId, Bytes)>,
    /// Repositories in the order their bodies were kept, oldest first.
    order: VecDeque<RepoName>,
    bytes: usize,
}

impl ListBodies {
    /// The body of `repo`'s whole tag list `names`: the kept one if it was written from the
    /// same list, else `write`'s, which is then kept.
    pub fn body(&self, repo: &RepoName, names: &Names, write: impl FnOnce() -> Vec<u8>) -> Bytes {
        if let Some((id, body)) = self.lock().bodies.get(repo) {
            if id.is(names) {
                return body.clone();
            }
        }
        let body = Bytes::from(write());
        if cost(repo, &body) <= MAX_BYTES {
            self.lock().keep(repo, names.id(), body.clone());
        }
        body
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn cost(repo: &RepoName, body: &Bytes) -> usize {
    ENTRY + repo.as_str().len() + body.len()
}

impl Kept {
    /// Keeps `body` for `repo`. Runs only when a list is written, not when one is reused, so
    /// its walks over the entries are paid once per change of a list.
    fn keep(&mut self, repo: &RepoName, id: NamesId, body: Bytes) {
        self.forget(|r, (old, _)| r == repo || !old.alive());
        let need = cost(repo, &body);
        while self.bytes + need > MAX_BYTES {
            let Some(oldest) = self.order.front().cloned() else {
                break;
            };
            self.forget(|r, _| *r == oldest);
        }
        self.bytes += need;
        self.order.push_back(repo.clone());
        self.bodies.insert(repo.clone(), (id, body));
    }

    /// Drops the entries `which` picks.
    fn forget(&mut self, which: impl Fn(&RepoName, &(NamesId, Bytes)) -> bool) {
        let mut freed = 0;
        self.bodies.retain(|r, entry| {
            let drop = which(r, entry);
            if drop {
                freed += cost(r, &entry.1);
            }
            !drop
        });
        self.bytes -= freed;
        let bodies = &self.bodies;
        self.order.retain(|r| bodies.contains_key(r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn names(v: &[&str]) -> Names {
        v.iter().map(|s| s.to_string()).collect::<Vec<_>>().into()
    }

    #[test]
    fn a_body_is_reused_only_for_the_same_list() {
        let bodies = ListBodies::default();
        let repo: RepoName = "r".parse().unwrap();
        let list = names(&["a", "b"]);
        let written = std::cell::Cell::new(0);
        let write = |text: &str| {
            written.set(written.get() + 1);
            text.as_bytes().to_vec()
        };
        assert_eq!(bodies.body(&repo, &list, || write("one")), "one");
        assert_eq!(bodies.body(&repo, &list.clone(), || write("two")), "one");
        assert_eq!(written.get(), 1);
        // Equal names in another list (as after a write that changed nothing visible) are
        // written again: only the very same list is known to be unchanged.
        assert_eq!(
            bodies.body(&repo, &names(&["a", "b"]), || write("three")),
            "three"
        );
        // A page of the same list is another body.
        let shared = Arc::new(vec!["a".to_owned(), "b".to_owned()]);
        let whole = Names::slice(shared.clone(), 0, 2);
        assert_eq!(bodies.body(&repo, &whole, || write("whole")), "whole");
        let page = Names::slice(shared, 0, 1);
        assert_eq!(bodies.body(&repo, &page, || write("page")), "page");
        assert_eq!(written.get(), 4);
    }

    #[test]
    fn kept_bodies_stay_under_the_bound() {
        let bodies = ListBodies::default();
        let big = MAX_BYTES / 3 + 1;
        let lists: Vec<(RepoName, Names)> = (0..4)
            .map(|i| (format!("r{i}").parse().unwrap(), names(&["t"])))
            .collect();
        for (repo, list) in &lists {
            bodies.body(repo, list, || vec![b'x'; big]);
        }
        let kept = bodies.lock();
        assert!(kept.bytes <= MAX_BYTES, "{}", kept.bytes);
        assert_eq!(kept.bytes, 2 * (big + ENTRY + 2));
        // The oldest went first.
        assert!(!kept.bodies.contains_key(&lists[0].0));
        assert!(!kept.bodies.contains_key(&lists[1].0));
        assert!(kept.bodies.contains_key(&lists[3].0));
        drop(kept);
        // Too big to keep at all: answered, not kept.
        let huge = bodies.body(&lists[0].0, &lists[0].1, || vec![b'x'; MAX_BYTES + 1]);
        assert_eq!(huge.len(), MAX_BYTES + 1);
        assert_eq!(bodies.lock().bytes, 2 * (big + ENTRY + 2));
    }

    #[test]
    fn bodies_of_lists_nobody_holds_go_first() {
        let bodies = ListBodies::default();
        let (a, b): (RepoName, RepoName) = ("a".parse().unwrap(), "b".parse().unwrap());
        let held = names(&["t"]);
        bodies.body(&a, &held, || b"kept".to_vec());
        // A list handed out once and dropped (the metadata store did not keep it).
        bodies.body(&b, &names(&["t"]), || b"gone".to_vec());
        assert!(bodies.lock().bodies.contains_key(&b));
        let other: RepoName = "c".parse().unwrap();
        bodies.body(&other, &held, || b"more".to_vec());
        let kept = bodies.lock();
        assert!(!kept.bodies.contains_key(&b));
        assert!(kept.bodies.contains_key(&a) && kept.bodies.contains_key(&other));
        assert_eq!(kept.bytes, 2 * (ENTRY + 1 + 4));
        assert_eq!(kept.order.len(), 2);
    }
}
