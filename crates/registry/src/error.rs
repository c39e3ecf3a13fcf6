//! The domain error: one variant per way a request can fail, each with what the client needs
//! to know. Each knows its spec error code ([`Error::code`]); the server alone chooses the
//! HTTP status and writes the body, in one place.

use berth_oci::{Digest, ErrorCode, RepoName, UploadId};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The blob is not in the repository.
    #[error("blob unknown to registry")]
    BlobUnknown(Digest),
    /// No open upload session has this id (never issued, expired, finished or cancelled).
    #[error("blob upload unknown to registry")]
    UploadUnknown,
    /// Another request is writing to the session right now.
    #[error("another request is writing to this upload")]
    UploadBusy,
    /// The upload's body failed, or is not what its headers said.
    #[error("{0}")]
    UploadInvalid(String),
    /// A chunk that does not start where the upload stands, with the upload's state.
    #[error("chunk does not start at the upload's offset {offset}")]
    ChunkOutOfOrder {
        repo: RepoName,
        id: UploadId,
        offset: u64,
    },
    /// A length that contradicts another.
    #[error("{0}")]
    SizeInvalid(String),
    /// Content that does not hash to the digest it was given as.
    #[error("{what} does not match the digest")]
    DigestMismatch {
        what: &'static str,
        expected: Digest,
        actual: Digest,
    },
    /// A manifest that does not parse or does not agree with its blobs.
    #[error("{message}")]
    ManifestInvalid {
        message: String,
        digest: Option<Digest>,
    },
    /// A manifest over the configured size.
    #[error("manifest exceeds the limit of {limit} bytes")]
    ManifestTooLarge { limit: usize },
    /// A manifest referencing a blob or child manifest the repository does not hold.
    #[error("{what} references a {kind} unknown to this repository")]
    ManifestBlobUnknown {
        what: &'static str,
        kind: &'static str,
        digest: Digest,
    },
    /// No manifest under this reference.
    #[error("manifest unknown")]
    ManifestUnknown { reference: String },
    /// A manifest whose media type the client's `Accept` does not include.
    #[error("the manifest is a {media_type}, which the Accept header does not include")]
    ManifestNotAccepted {
        reference: String,
        media_type: String,
    },
    /// The repository does not exist.
    #[error("repository name not known to registry")]
    NameUnknown(RepoName),
    /// A read range outside the blob.
    #[error("range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    /// A request of a kind the registry does not serve.
    #[error("{0}")]
    Unsupported(String),
    /// A failure of ours (storage, database): logged in full, answered without details.
    #[error("internal error: {0}")]
    Internal(String),
    /// The storage or the database cannot be reached or is overloaded now: the same request
    /// may succeed later. Logged in full, answered without details.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The spec's error code for this error; `None` for a failure of ours.
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            Error::BlobUnknown(_) => ErrorCode::BlobUnknown,
            Error::UploadUnknown => ErrorCode::BlobUploadUnknown,
            Error::UploadBusy | Error::UploadInvalid(_) | Error::ChunkOutOfOrder { .. } => {
                ErrorCode::BlobUploadInvalid
            }
            Error::SizeInvalid(_)
            | Error::ManifestTooLarge { .. }
            | Error::RangeNotSatisfiable { .. } => ErrorCode::SizeInvalid,
            Error::DigestMismatch { .. } => ErrorCode::DigestInvalid,
            Error::ManifestInvalid { .. } => ErrorCode::ManifestInvalid,
            Error::ManifestBlobUnknown { .. } => ErrorCode::ManifestBlobUnknown,
            Error::ManifestUnknown { .. } | Error::ManifestNotAccepted { .. } => {
                ErrorCode::ManifestUnknown
            }
            Error::NameUnknown(_) => ErrorCode::NameUnknown,
            Error::Unsupported(_) => ErrorCode::Unsupported,
            Error::Internal(_) | Error::Unavailable(_) => return None,
        })
    }

    /// The spec's `detail` for this error, when it has one.
    pub fn detail(&self) -> Option<serde_json::Value> {
        use serde_json::json;
        match self {
            Error::BlobUnknown(d) => Some(json!({ "digest": d })),
            Error::ChunkOutOfOrder { offset, .. } => Some(json!({ "offset": offset })),
            Error::DigestMismatch {
                expected, actual, ..
            } => Some(json!({ "expected": expected, "actual": actual })),
            Error::ManifestInvalid {
                digest: Some(d), ..
            } => Some(json!({ "digest": d })),
            Error::ManifestBlobUnknown { digest, .. } => Some(json!({ "digest": digest })),
            Error::ManifestUnknown { reference } => Some(json!({ "reference": reference })),
            Error::ManifestNotAccepted {
                reference,
                media_type,
            } => Some(json!({ "reference": reference, "mediaType": media_type })),
            Error::NameUnknown(r) => Some(json!({ "name": r.as_str() })),
            Error::RangeNotSatisfiable { size } => Some(json!({ "size": size })),
            _ => None,
        }
    }

    pub fn manifest_unknown(reference: &impl std::fmt::Display) -> Error {
        Error::ManifestUnknown {
            reference: reference.to_string(),
        }
    }

    pub fn manifest_invalid(message: impl Into<String>) -> Error {
        Error::ManifestInvalid {
            message: message.into(),
            digest: None,
        }
    }
}

impl From<berth_store::StoreError> for Error {
    fn from(e: berth_store::StoreError) -> Error {
        match e {
            // The client stopped sending or sent something unreadable: not our failure.
            berth_store::StoreError::Body(e) => {
                Error::UploadInvalid(format!("reading the request body failed: {e}"))
            }
            other => Error::failure(other.kind(), other.to_string()),
        }
    }
}

impl From<berth_meta::MetaError> for Error {
    fn from(e: berth_meta::MetaError) -> Error {
        Error::failure(e.kind(), e.to_string())
    }
}

impl Error {
    /// A backend's failure: `Unavailable` when retrying may cure it, else `Internal`.
    fn failure(kind: berth_oci::ErrorKind, message: String) -> Error {
        if kind.is_retryable() {
            Error::Unavailable(message)
        } else {
            Error::Internal(message)
        }
    }
}
