//! The berth image client: a daemonless `pull`/`push`/`copy` client for any OCI registry
//! with a local content-addressed image store. It depends on the `oci` crate only (and
//! reqwest), never on the server's crates.
//!
//! - [`reference`]: image references normalised as docker does.
//! - [`auth`]: docker's credential file and helpers, `WWW-Authenticate` challenges.
//! - [`registry`]: one registry's `/v2/` API: auth dance, retries, uploads.
//! - [`store`]: the local store, an OCI image layout.
//! - [`transfer`]: pull, push and copy, in parallel and resumable.
//! - [`image`]: an image's manifest and config as `images` and `inspect` show them.
//! - [`archive`]: `save` and `load` (docker and OCI archives).
//! - [`progress`]: progress bars or lines.
//! - [`cli`]: the commands.
//! - [`error`]: the one error type.

pub mod archive;
pub mod auth;
pub mod cli;
pub mod error;
pub mod image;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod store;
pub mod transfer;
