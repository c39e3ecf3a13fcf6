//! Who may do what to which repository: the access policy. The server authenticates a caller
//! (Basic credentials, a token) and asks the policy; the policy knows users, groups and
//! rules, and nothing of HTTP.
//!
//! A rule grants actions on the repositories its globs match to the callers it names: users,
//! groups, `*` (every authenticated user) or the anonymous caller. Grants add up; there is no
//! deny. Globs follow path rules: `*` stays within one path segment (`team-a/*` matches
//! `team-a/app`, not `team-a/app/cache`), `**` crosses segments (`team-a/**`, or `**` for
//! everything).

use globset::{GlobBuilder, GlobMatcher};
use std::collections::HashMap;
use std::fmt;

/// What a caller does to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    /// An action as scopes and configuration spell it; `*` is handled by [`Actions::parse`].
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Action::Pull => 1,
            Action::Push => 2,
            Action::Delete => 4,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const ALL: Actions = Actions(7);

    pub fn of(actions: impl IntoIterator<Item = Action>) -> Actions {
        Actions(actions.into_iter().fold(0, |m, a| m | a.bit()))
    }

    /// A comma-separated list as a token scope carries it (`pull,push`, `*` for all);
    /// unknown actions are ignored, as the token specification asks.
    pub fn parse(list: &str) -> Actions {
        if list.split(',').any(|a| a.trim() == "*") {
            return Actions::ALL;
        }
        Actions::of(list.split(',').filter_map(|a| Action::parse(a.trim())))
    }

    /// The union of several lists (a rule's or a token grant's `actions`).
    pub fn parse_each<S: AsRef<str>>(lists: &[S]) -> Actions {
        lists
            .iter()
            .fold(Actions::NONE, |a, l| a.or(Actions::parse(l.as_ref())))
    }

    pub fn has(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn and(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    pub fn or(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.has(*a))
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Action::as_str).collect();
        f.write_str(&names.join(","))
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Anonymous,
    User(String),
}

impl Identity {
    /// The name to log and to put in a token's `sub` (empty for the anonymous caller).
    pub fn name(&self) -> &str {
        match self {
            Identity::Anonymous => "",
            Identity::User(u) => u,
        }
    }
}

/// A rule as the configuration states it.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    /// The anonymous caller gets these grants too.
    pub anonymous: bool,
    /// User names; `*` is every authenticated user.
    pub users: Vec<String>,
    pub groups: Vec<String>,
    /// Repository globs.
    pub repositories: Vec<String>,
    pub actions: Actions,
}

struct Compiled {
    rule: Rule,
    globs: Vec<RepoGlob>,
}

/// The access policy.
pub struct Policy {
    rules: Vec<Compiled>,
    /// user → the groups they belong to.
    member_of: HashMap<String, Vec<String>>,
    admins: Vec<String>,
    admin_groups: Vec<String>,
}

/// A repository glob: `*` stays within one path component, `**` crosses them.
#[derive(Debug, Clone)]
pub(crate) enum RepoGlob {
    /// `**`, every repository: the default rules' pattern, matched without compiling a glob
    /// (whose regular expression engine would be most of the idle server's code in memory).
    Every,
    Glob(GlobMatcher),
}

impl RepoGlob {
    pub(crate) fn is_match(&self, repo: &str) -> bool {
        match self {
            RepoGlob::Every => true,
            RepoGlob::Glob(g) => g.is_match(repo),
        }
    }
}

pub(crate) fn repo_glob(pattern: &str) -> Result<RepoGlob, String> {
    if pattern == "**" {
        return Ok(RepoGlob::Every);
    }
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| RepoGlob::Glob(g.compile_matcher()))
        .map_err(|e| format!("repository glob {pattern:?}: {e}"))
}

impl Policy {
    /// A policy from rules, groups (group → members) and the admins (users and groups).
    /// Fails on an invalid glob, naming it.
    pub fn new(
        rules: Vec<Rule>,
        groups: &HashMap<String, Vec<String>>,
        admins: Vec<String>,
        admin_groups: Vec<String>,
    ) -> Result<Policy, String> {
        let mut compiled = Vec::with_capacity(rules.len());
        for rule in rules {
            let globs = rule
                .repositories
                .iter()
                .map(|g| repo_glob(g))
                .collect::<Result<_, _>>()?;
            compiled.push(Compiled { rule, globs });
        }
        let mut member_of: HashMap<String, Vec<String>> = HashMap::new();
        for (group, members) in groups {
            for m in members {
                member_of.entry(m.clone()).or_default().push(group.clone());
            }
        }
        Ok(Policy {
            rules: compiled,
            member_of,
            admins,
            admin_groups,
        })
    }

    /// Every caller may do everything: authentication is off.
    pub fn open() -> Policy {
        let rule = Rule {
            anonymous: true,
            users: vec!["*".into()],
            repositories: vec!["**".into()],
            actions: Actions::ALL,
            ..Rule::default()
        };
        Policy::new(vec![rule], &HashMap::new(), vec!["*".into()], vec![])
            .unwrap_or_else(|_| unreachable!("the open policy's glob is valid"))
    }

    /// The default once users exist: every authenticated user may pull, push and delete
    /// everywhere and is an admin; the anonymous caller gets nothing, or pulls everywhere
    /// with `anonymous_pull`.
    pub fn authenticated_only(anonymous_pull: bool) -> Policy {
        let mut rules = vec![Rule {
            users: vec!["*".into()],
            repositories: vec!["**".into()],
            actions: Actions::ALL,
            ..Rule::default()
        }];
        if anonymous_pull {
            rules.push(Rule {
                anonymous: true,
                repositories: vec!["**".into()],
                actions: Actions::of([Action::Pull]),
                ..Rule::default()
            });
        }
        Policy::new(rules, &HashMap::new(), vec!["*".into()], vec![])
            .unwrap_or_else(|_| unreachable!("the default policy's globs are valid"))
    }

    fn names(&self, rule: &Rule, who: &Identity) -> bool {
        match who {
            Identity::Anonymous => rule.anonymous,
            Identity::User(u) => {
                rule.users.iter().any(|x| x == "*" || x == u)
                    || self
                        .member_of
                        .get(u)
                        .is_some_and(|gs| gs.iter().any(|g| rule.groups.contains(g)))
            }
        }
    }

    /// What `who` may do to `repo`.
    pub fn allowed(&self, who: &Identity, repo: &str) -> Actions {
        self.rules
            .iter()
            .filter(|c| self.names(&c.rule, who))
            .filter(|c| c.globs.iter().any(|g| g.is_match(repo)))
            .fold(Actions::NONE, |a, c| a.or(c.rule.actions))
    }

    /// Whether `who` may do anything at all somewhere: decides between "log in" and
    /// "you may not" for requests that name no repository.
    pub fn grants_anything(&self, who: &Identity) -> bool {
        self.rules
            .iter()
            .any(|c| self.names(&c.rule, who) && !c.rule.actions.is_empty())
    }

    /// Whether `who` may use Berth's own administration API.
    pub fn is_admin(&self, who: &Identity) -> bool {
        let Identity::User(u) = who else {
            return false;
        };
        self.admins.iter().any(|a| a == "*" || a == u)
            || self
                .member_of
                .get(u)
                .is_some_and(|gs| gs.iter().any(|g| self.admin_groups.contains(g)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(u: &str) -> Identity {
        Identity::User(u.into())
    }

    #[test]
    fn rules_add_up_by_user_group_glob_and_anonymous() {
        let groups = HashMap::from([("team-a".to_string(), vec!["alice".to_string()])]);
        let rules = vec![
            Rule {
                groups: vec!["team-a".into()],
                repositories: vec!["team-a/*".into()],
                actions: Actions::ALL,
                ..Rule::default()
            },
            Rule {
                users: vec!["*".into()],
                repositories: vec!["public/**".into()],
                actions: Actions::of([Action::Pull]),
                ..Rule::default()
            },
            Rule {
                users: vec!["bob".into()],
                repositories: vec!["public/**".into()],
                actions: Actions::of([Action::Push]),
                ..Rule::default()
            },
            Rule {
                anonymous: true,
                repositories: vec!["public/open".into()],
                actions: Actions::of([Action::Pull]),
                ..Rule::default()
            },
        ];
        let p = Policy::new(rules, &groups, vec![], vec!["team-a".into()]).unwrap();
        let pull = Actions::of([Action::Pull]);
        let pull_push = Actions::of([Action::Pull, Action::Push]);
        for (who, repo, want) in [
            (user("alice"), "team-a/app", Actions::ALL),
            (user("alice"), "team-a/app/sub", pull.and(Actions::NONE)),
            (user("alice"), "team-a", Actions::NONE),
            (user("alice"), "public/x/y", pull),
            (user("bob"), "team-a/app", Actions::NONE),
            (user("bob"), "public/x/y", pull_push),
            (Identity::Anonymous, "public/open", pull),
            (Identity::Anonymous, "public/x", Actions::NONE),
            (Identity::Anonymous, "team-a/app", Actions::NONE),
        ] {
            assert_eq!(p.allowed(&who, repo), want, "{who:?} on {repo}");
        }
        assert!(p.is_admin(&user("alice")));
        assert!(!p.is_admin(&user("bob")));
        assert!(!p.is_admin(&Identity::Anonymous));
        assert!(p.grants_anything(&Identity::Anonymous));
    }

    #[test]
    fn defaults_and_scopes() {
        let open = Policy::open();
        assert_eq!(open.allowed(&Identity::Anonymous, "a/b/c"), Actions::ALL);
        let closed = Policy::authenticated_only(false);
        assert_eq!(closed.allowed(&Identity::Anonymous, "a"), Actions::NONE);
        assert!(!closed.grants_anything(&Identity::Anonymous));
        assert_eq!(closed.allowed(&user("x"), "a/b/c"), Actions::ALL);
        let public = Policy::authenticated_only(true);
        assert_eq!(
            public.allowed(&Identity::Anonymous, "a/b"),
            Actions::of([Action::Pull])
        );
        assert_eq!(
            Actions::parse("pull,push"),
            Actions::of([Action::Pull, Action::Push])
        );
        assert_eq!(Actions::parse("*"), Actions::ALL);
        assert_eq!(Actions::parse("pull,bogus"), Actions::of([Action::Pull]));
        assert_eq!(Actions::ALL.to_string(), "pull,push,delete");
        assert!(Policy::new(
            vec![Rule {
                repositories: vec!["a/[".into()],
                ..Rule::default()
            }],
            &HashMap::new(),
            vec![],
            vec![]
        )
        .is_err());
    }
}
