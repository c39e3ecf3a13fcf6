//! The client's one error type. Every variant prints as one line a person can act on: the
//! command-line front end prints it after `berth: ` and exits non-zero.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach {registry}: {reason}")]
    Connect { registry: String, reason: String },
    #[error("unauthorized: {registry} refused the credentials{}", suffix(.message))]
    Unauthorized { registry: String, message: String },
    #[error("denied: {message}")]
    Denied { message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{registry} answered {status}{}", suffix(.message))]
    Registry {
        registry: String,
        status: u16,
        message: String,
    },
    #[error("disk full: {0}")]
    DiskFull(String),
    // `cause`, not `source`: the cause is printed here, so it must not print again in a chain.
    #[error("{what}: {cause}")]
    Io { what: String, cause: io::Error },
    #[error("{0}")]
    Invalid(String),
    #[error("digest mismatch for {expected}: received content hashes to {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("transfer from {registry} failed: {reason}")]
    Transfer { registry: String, reason: String },
}

fn suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an I/O error with what was being done; a full disk gets its own message.
pub fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    move |cause| {
        let what = what.into();
        if cause.kind() == io::ErrorKind::StorageFull {
            Error::DiskFull(what)
        } else {
            Error::Io { what, cause }
        }
    }
}

impl Error {
    /// Whether trying again may help: the network or the registry failed, not the request.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Transfer { .. } => true,
            Error::Registry { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }
}

/// Text from elsewhere (a registry, a helper) folded onto one line, and kept short.
pub fn one_line(text: &str) -> String {
    let mut out = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.len() > 300 {
        let mut end = 300;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

/// The innermost cause of a transport error: "connection refused", not the URL wrapper.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let text = cur.to_string();
    // io errors print "Connection refused (os error 111)"; people need the first part.
    match text.split_once(" (os error") {
        Some((head, _)) => head.to_lowercase(),
        None => text,
    }
}
