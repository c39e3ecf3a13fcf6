//! Bodies of whole tag lists served recently, each kept with the shared list it was written
//! from.
//!
//! The metadata store hands back the same shared list (one allocation, see
//! `berth_meta::Names`) for a repository until a write changes its tags, so a list seen again
//! is answered with the bytes already written for it: polling a long tag list, as CI jobs
//! and update bots do, costs neither a database read nor a serialization. Holding the list
//! keeps its allocation alive, so no other list can be mistaken for it. At most
//! [`MAX_BYTES`] of bodies are kept; past that, the oldest go first.

use berth_meta::Names;
use berth_oci::RepoName;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Bytes of bodies kept at most.
pub const MAX_BYTES: usize = 4 << 20;

#[derive(Default)]
pub struct ListBodies(Mutex<Kept>);

#[derive(Default)]
struct Kept {
    bodies: HashMap<RepoName, (Names, Bytes)>,
    /// Repositories in the order their bodies were kept, oldest first.
    order: VecDeque<RepoName>,
    bytes: usize,
}

impl ListBodies {
    /// The body of `repo`'s whole tag list `names`: the kept one if it was written from the
    /// same list, else `write`'s, which is then kept.
    pub fn body(&self, repo: &RepoName, names: &Names, write: impl FnOnce() -> Vec<u8>) -> Bytes {
        if let Some((kept, body)) = self.lock().bodies.get(repo) {
            if kept.same(names) {
                return body.clone();
            }
        }
        let body = Bytes::from(write());
        if body.len() <= MAX_BYTES {
            self.lock().keep(repo, names, body.clone());
        }
        body
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Kept {
    fn keep(&mut self, repo: &RepoName, names: &Names, body: Bytes) {
        if let Some((_, old)) = self.bodies.remove(repo) {
            self.bytes -= old.len();
            self.order.retain(|r| r != repo);
        }
        while self.bytes + body.len() > MAX_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some((_, old)) = self.bodies.remove(&oldest) {
                self.bytes -= old.len();
            }
        }
        self.bytes += body.len();
        self.order.push_back(repo.clone());
        self.bodies.insert(repo.clone(), (names.clone(), body));
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
        assert_eq!(kept.bytes, 2 * big);
        // The oldest went first.
        assert!(!kept.bodies.contains_key(&lists[0].0));
        assert!(!kept.bodies.contains_key(&lists[1].0));
        assert!(kept.bodies.contains_key(&lists[3].0));
        drop(kept);
        // Too big to keep at all: answered, not kept.
        let huge = bodies.body(&lists[0].0, &lists[0].1, || vec![b'x'; MAX_BYTES + 1]);
        assert_eq!(huge.len(), MAX_BYTES + 1);
        assert_eq!(bodies.lock().bytes, 2 * big);
    }
}
