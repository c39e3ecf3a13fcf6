//! The domain error. Each variant knows the spec's error code and status it answers with;
//! the server turns it into a response in one place.

use berth_oci::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error the spec defines, for the client.
    #[error("{code}: {message}")]
    Spec {
        code: ErrorCode,
        status: u16,
        message: String,
        detail: Option<serde_json::Value>,
    },
    /// A chunk that does not start where the upload stands (416, with the upload's state).
    #[error("chunk out of order: the upload holds {offset} bytes")]
    ChunkOutOfOrder {
        repo: berth_oci::RepoName,
        id: berth_oci::UploadId,
        offset: u64,
    },
    /// A read range outside the blob (416, with the blob's size).
    #[error("range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    /// A failure of ours (storage, database): logged in full, answered as a bare 500.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A spec error with the code's usual status.
    pub fn spec(code: ErrorCode, message: impl Into<String>) -> Error {
        Error::Spec {
            code,
            status: code.status(),
            message: message.into(),
            detail: None,
        }
    }

    pub fn with_status(self, status: u16) -> Error {
        match self {
            Error::Spec {
                code,
                message,
                detail,
                ..
            } => Error::Spec {
                code,
                status,
                message,
                detail,
            },
            other => other,
        }
    }

    pub fn with_detail(self, detail: serde_json::Value) -> Error {
        match self {
            Error::Spec {
                code,
                status,
                message,
                ..
            } => Error::Spec {
                code,
                status,
                message,
                detail: Some(detail),
            },
            other => other,
        }
    }

    pub fn blob_unknown(d: &berth_oci::Digest) -> Error {
        Error::spec(ErrorCode::BlobUnknown, "blob unknown to registry")
            .with_detail(serde_json::json!({ "digest": d }))
    }

    pub fn upload_unknown() -> Error {
        Error::spec(
            ErrorCode::BlobUploadUnknown,
            "blob upload unknown to registry",
        )
    }

    pub fn manifest_unknown(reference: &impl std::fmt::Display) -> Error {
        Error::spec(ErrorCode::ManifestUnknown, "manifest unknown")
            .with_detail(serde_json::json!({ "reference": reference.to_string() }))
    }

    pub fn name_unknown(repo: &berth_oci::RepoName) -> Error {
        Error::spec(
            ErrorCode::NameUnknown,
            "repository name not known to registry",
        )
        .with_detail(serde_json::json!({ "name": repo.as_str() }))
    }
}

impl From<berth_store::StoreError> for Error {
    fn from(e: berth_store::StoreError) -> Error {
        match e {
            // The client stopped sending or sent something unreadable: not our failure.
            berth_store::StoreError::Body(e) => Error::spec(
                ErrorCode::BlobUploadInvalid,
                format!("reading the request body failed: {e}"),
            ),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<berth_meta::MetaError> for Error {
    fn from(e: berth_meta::MetaError) -> Error {
        Error::Internal(e.to_string())
    }
}
