//! The OCI wire vocabulary shared by every other crate: no I/O lives here.
//!
//! - [`digest`]: content digests (sha256, sha512) and a streaming hasher whose state can be saved.
//! - [`name`]: repository names, tags and the `<reference>` of manifest URLs.
//! - [`range`]: the `Content-Range` of chunked uploads and the `Range` of blob reads.
//! - [`media`]: media type constants.
//! - [`manifest`]: manifest and index parsing and validation.
//! - [`error`]: the error codes of the distribution spec.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod media;
pub mod name;
pub mod range;

pub use digest::{Algorithm, Digest, DigestError, DigestHasher};
pub use error::{ErrorCode, ErrorKind};
pub use name::{NameError, Reference, RepoName, Tag, UploadId};
