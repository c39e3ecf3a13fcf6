//! Image references as people type them (`nginx`, `localhost:5000/team/app:v1`,
//! `ghcr.io/o/r@sha256:…`), normalised the way docker does: a first component without a dot,
//! a colon or the name `localhost` is a Docker Hub repository, and a one-component Hub name
//! lives under `library/`.

use berth_oci::{Digest, RepoName, Tag};
use std::fmt;
use std::str::FromStr;

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker Hub's registry API answers on.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A fully qualified image reference: registry, repository, and a tag, a digest or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// `host[:port]` as written (`docker.io` for Docker Hub).
    pub registry: String,
    pub repo: RepoName,
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid reference {input:?}: {reason}")]
pub struct RefError {
    input: String,
    reason: String,
}

fn bad(input: &str, reason: impl Into<String>) -> RefError {
    RefError {
        input: input.to_owned(),
        reason: reason.into(),
    }
}

impl FromStr for ImageRef {
    type Err = RefError;

    fn from_str(input: &str) -> Result<ImageRef, RefError> {
        ImageRef::parse(input, true)
    }
}

impl ImageRef {
    /// Parses a reference; with `default_tag`, one naming neither a tag nor a digest gets
    /// `latest`.
    pub fn parse(input: &str, default_tag: bool) -> Result<ImageRef, RefError> {
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|e| bad(input, e.to_string()))?),
            ),
            None => (input, None),
        };
        // A tag follows the last colon after the last slash; a colon before it is a port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(
                    rest[last_slash + i + 1..]
                        .parse::<Tag>()
                        .map_err(|e| bad(input, e.to_string()))?,
                ),
            ),
            None => (rest, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), path.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_owned(),
            _ => registry,
        };
        let path = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if registry.is_empty() || registry.chars().any(|c| c.is_whitespace() || c == '@') {
            return Err(bad(input, "invalid registry host"));
        }
        let repo = path
            .parse::<RepoName>()
            .map_err(|e| bad(input, e.to_string()))?;
        let tag = match (tag, &digest) {
            (None, None) if default_tag => {
                Some(Tag::from_str("latest").map_err(|e| bad(input, e.to_string()))?)
            }
            (t, _) => t,
        };
        Ok(ImageRef {
            registry,
            repo,
            tag,
            digest,
        })
    }

    /// The tag or digest to ask the registry for (the digest wins when both are given).
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// The host the registry API answers on.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// `registry/repository`, no tag.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.registry, self.repo)
    }

    /// The shortest form docker would print: Docker Hub's prefixes dropped.
    pub fn familiar_repository(&self) -> String {
        if self.registry == DOCKER_HUB {
            let r = self.repo.as_str();
            r.strip_prefix("library/").unwrap_or(r).to_owned()
        } else {
            self.repository()
        }
    }

    /// The same repository with another tag or digest.
    pub fn with_digest(&self, digest: Digest) -> ImageRef {
        ImageRef {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// Whether the registry is on this machine, where plain HTTP is the default.
    pub fn is_local(&self) -> bool {
        is_local_host(&self.registry)
    }
}

/// `localhost`, `127.0.0.0/8` and `::1`, with or without a port.
pub fn is_local_host(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn full(s: &str) -> String {
        s.parse::<ImageRef>().unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(full("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(full("nginx:1.21.6"), "docker.io/library/nginx:1.21.6");
        assert_eq!(full("bitnami/redis"), "docker.io/bitnami/redis:latest");
        assert_eq!(
            full("index.docker.io/nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(
            full("localhost:5000/team/app:v1"),
            "localhost:5000/team/app:v1"
        );
        assert_eq!(full("localhost/app"), "localhost/app:latest");
        assert_eq!(full("ghcr.io/o/r"), "ghcr.io/o/r:latest");
        assert_eq!(
            full(&format!("127.0.0.1:5000/a@{D}")),
            format!("127.0.0.1:5000/a@{D}")
        );
        assert_eq!(
            full(&format!("a:v1@{D}")),
            format!("docker.io/library/a:v1@{D}")
        );
        let r: ImageRef = format!("a:v1@{D}").parse().unwrap();
        assert_eq!(r.reference(), D);
        assert_eq!(r.familiar_repository(), "a");
        assert_eq!(
            "nginx".parse::<ImageRef>().unwrap().api_host(),
            "registry-1.docker.io"
        );
    }

    #[test]
    fn refuses_bad_references() {
        for bad in [
            "",
            "UPPER",
            "a:",
            "a@sha256:xyz",
            "a/../b",
            "host:5000/",
            ":tag",
            "a b",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad:?}");
        }
        assert!(ImageRef::parse("localhost:5000/app", false)
            .unwrap()
            .tag
            .is_none());
    }

    #[test]
    fn local_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.8.0.1",
            "[::1]:5000",
        ] {
            assert!(is_local_host(h), "{h}");
        }
        for h in [
            "docker.io",
            "example.com:5000",
            "10.0.0.1:5000",
            "128.0.0.1",
        ] {
            assert!(!is_local_host(h), "{h}");
        }
    }
}
