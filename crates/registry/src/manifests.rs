//! Manifest push, pull and delete.
//!
//! A push is validated (media type, schema, descriptors), its bytes stored as a blob, and then
//! its row, references and tag written in one metadata transaction that also checks every
//! referenced blob and child manifest is present in the repository. A `subject` need not
//! exist: referrers may be pushed before what they refer to.

use crate::cache::{Key, Value};
use crate::{ByteStream, Error, Registry, Result};
use berth_meta::{LeaseMode, ManifestRecord, NewManifest, PutRefusal, Stored};
use berth_oci::manifest::Manifest;
use berth_oci::{media, Digest, Reference, RepoName};
use bytes::Bytes;
use futures::StreamExt;

/// A manifest ready to be sent.
#[derive(Debug)]
pub struct StoredManifest {
    pub record: ManifestRecord,
    pub body: Bytes,
}

/// What a successful push tells the client.
#[derive(Debug)]
pub struct Pushed {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

impl Registry {
    /// Reads a manifest's body, at most the configured limit: the one place a manifest's
    /// size is checked (`SIZE_INVALID`, 413, past it, with the rest of the body unread).
    pub async fn read_manifest(&self, mut body: ByteStream<'_>) -> Result<Bytes> {
        let max = self.opts.max_manifest_bytes;
        let mut out = bytes::BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                Error::manifest_invalid(format!("reading the manifest failed: {e}"))
            })?;
            if out.len() + chunk.len() > max {
                return Err(Error::ManifestTooLarge { limit: max });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }

    /// Stores a manifest under a tag or digest; its body was read by
    /// [`Registry::read_manifest`].
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Pushed> {
        let manifest =
            Manifest::parse(&body, content_type).map_err(|e| Error::manifest_invalid(e.0))?;
        let (digest, tag) = match reference {
            Reference::Digest(d) => {
                let actual = Digest::of(d.algorithm(), &body);
                if &actual != d {
                    return Err(Error::DigestMismatch {
                        what: "manifest",
                        expected: d.clone(),
                        actual,
                    });
                }
                (actual, None)
            }
            Reference::Tag(t) => (Digest::sha256(&body), Some(t.clone())),
        };
        let record = ManifestRecord {
            digest: digest.clone(),
            media_type: manifest.media_type.clone(),
            size: body.len() as u64,
            artifact_type: manifest.listed_artifact_type().map(str::to_owned),
            subject: manifest.subject.as_ref().map(|s| s.digest.clone()),
            config_media_type: manifest.config.as_ref().map(|c| c.media_type.clone()),
            annotations: manifest
                .annotations
                .as_ref()
                .and_then(|a| serde_json::to_string(a).ok()),
            pushed_at: berth_meta::now_millis(),
        };
        let mut new = NewManifest {
            repo: repo.clone(),
            record,
            blobs: manifest
                .required_blobs()
                .map(|d| (d.digest.clone(), d.size))
                .collect(),
            children: manifest
                .manifests
                .iter()
                .map(|d| d.digest.clone())
                .collect(),
            tag,
            stored: Stored::Anew,
        };
        self.store_and_record(&mut new, body)
            .await?
            .map_err(refused)?;
        Ok(Pushed {
            digest,
            subject: new.record.subject,
        })
    }

    /// Stores the manifest's bytes durably, then its facts, under the digest's lease: a
    /// crash in between leaves only an orphan blob, and a collection never deletes the bytes
    /// between the two. Bytes stored and live already (a new tag of a manifest, the same
    /// manifest in another repository) are not written again and the lease is only shared,
    /// so such puts commit together; should a collection have marked them meanwhile, the
    /// transaction refuses, and they are written anew under the whole lease. The file is
    /// looked at first: for a new manifest, the common case, one stat is all that costs.
    async fn store_and_record(
        &self,
        new: &mut NewManifest,
        body: Bytes,
    ) -> Result<Result<(), PutRefusal>> {
        let digest = new.record.digest.clone();
        {
            let _shared = self.meta.digest(&digest, LeaseMode::Shared).await?;
            // The transaction checks the record is live (else `BytesGone`).
            if self.blobs.stat(&digest).await? == Some(new.record.size) {
                new.stored = Stored::Already;
                match self.meta.put_manifest(new).await? {
                    Err(PutRefusal::BytesGone) => {}
                    put => return Ok(put),
                }
            }
        }
        let _whole = self.install_lease(&digest).await?;
        self.blobs.put(&digest, body).await?;
        new.stored = Stored::Anew;
        let put = self.meta.put_manifest(new).await;
        if !matches!(put, Ok(Ok(()))) {
            // Refused (or failed): bytes nothing records would stay on disk until a
            // reconciliation; take them back now, unless the same manifest is stored already.
            if let Ok(None) = self.meta.blob_record(&digest).await {
                self.blobs.delete(&digest).await.ok();
            }
        }
        Ok(put?)
    }

    /// The record of a manifest (HEAD), checked against the client's `Accept` values.
    pub async fn manifest_record(
        &self,
        repo: &RepoName,
        reference: &Reference,
        accept: &[&str],
    ) -> Result<ManifestRecord> {
        let key = Key::Manifest(repo.clone(), reference.clone());
        let generation = self.meta.generation().await?;
        let record = match self.resolutions.get(&key, generation) {
            Some(Value::Manifest(r)) => r,
            _ => {
                let Some(r) = self.meta.manifest(repo, reference).await? else {
                    return Err(self.missing(repo, reference).await);
                };
                self.resolutions
                    .keep(key, generation, Value::Manifest(r.clone()));
                r
            }
        };
        if !media::accepts(accept, &record.media_type) {
            return Err(Error::ManifestNotAccepted {
                reference: reference.to_string(),
                media_type: record.media_type,
            });
        }
        Ok(record)
    }

    /// A manifest with its bytes (GET).
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        accept: &[&str],
    ) -> Result<StoredManifest> {
        let record = self.manifest_record(repo, reference, accept).await?;
        self.pulls.note(repo, &record.digest);
        if let Some(body) = self.manifests.get(&record.digest) {
            return Ok(StoredManifest { record, body });
        }
        let mut stream = self.blobs.read_all(&record.digest).await.map_err(|e| {
            Error::Internal(format!(
                "manifest {} of {repo} unreadable: {e}",
                record.digest
            ))
        })?;
        let mut body = Vec::with_capacity(record.size as usize);
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(
                &chunk.map_err(|e| Error::Internal(format!("reading manifest: {e}")))?,
            );
        }
        let body = Bytes::from(body);
        self.manifests.insert(record.digest.clone(), body.clone());
        Ok(StoredManifest { record, body })
    }

    /// Deletes a manifest by digest (with its tags) or just one tag.
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        let deleted = match reference {
            Reference::Digest(d) => self.meta.delete_manifest(repo, d).await,
            Reference::Tag(t) => self.meta.delete_tag(repo, t).await,
        };
        let deleted = deleted?;
        if deleted {
            Ok(())
        } else {
            Err(self.missing(repo, reference).await)
        }
    }

    /// `NAME_UNKNOWN` for a repository that does not exist, else `MANIFEST_UNKNOWN`.
    async fn missing(&self, repo: &RepoName, reference: &Reference) -> Error {
        match self
            .meta
            .tags(
                repo,
                berth_meta::Page {
                    after: None,
                    limit: Some(0),
                },
            )
            .await
        {
            Ok(None) => Error::NameUnknown(repo.clone()),
            Ok(Some(_)) => Error::manifest_unknown(reference),
            Err(e) => e.into(),
        }
    }
}

/// The spec's answer to a manifest the metadata store refused.
fn refused(refusal: PutRefusal) -> Error {
    match refusal {
        PutRefusal::BlobUnknown(digest) => Error::ManifestBlobUnknown {
            what: "manifest",
            kind: "blob",
            digest,
        },
        PutRefusal::ManifestUnknown(digest) => Error::ManifestBlobUnknown {
            what: "index",
            kind: "manifest",
            digest,
        },
        PutRefusal::SizeMismatch {
            digest,
            stored,
            declared,
        } => Error::ManifestInvalid {
            message: format!(
                "descriptor size {declared} of {digest} does not match the blob's {stored} bytes"
            ),
            digest: Some(digest),
        },
        // Only a put of bytes stored before is refused so, and such a put is retried.
        PutRefusal::BytesGone => Error::Internal("manifest bytes gone during a put".into()),
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::registry;
    use crate::uploads::ChunkInfo;
    use crate::{Error, Registry};
    use berth_oci::{media, Digest, ErrorCode, Reference, RepoName};
    use bytes::Bytes;
    use futures::StreamExt;

    async fn push_blob(reg: &Registry, repo: &RepoName, data: &'static [u8]) -> Digest {
        let d = Digest::sha256(data);
        let body = futures::stream::once(async move { Ok(Bytes::from_static(data)) }).boxed();
        reg.monolithic_upload(repo, &d, ChunkInfo::default(), body)
            .await
            .unwrap();
        d
    }

    fn image(config: &Digest, layer: &Digest, layer_size: u64) -> Bytes {
        Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{layer_size}}}]}}"#,
            media::OCI_MANIFEST
        ))
    }

    fn code(e: Error) -> ErrorCode {
        e.code().expect("a spec error")
    }

    /// Pages cut from a whole tag list kept in the cache are the pages the database gives,
    /// and a tag written after the list was kept shows in the next list and page.
    #[tokio::test]
    async fn tag_pages_from_the_kept_list_match_the_database_and_follow_writes() {
        let (reg, _dir) = registry().await;
        let repo: RepoName = "pages".parse().unwrap();
        let config = push_blob(&reg, &repo, b"{}").await;
        let layer = push_blob(&reg, &repo, b"layer").await;
        let put = |t: &str| {
            let t: Reference = t.parse().unwrap();
            let reg = &reg;
            let (repo, body) = (&repo, image(&config, &layer, 5));
            async move { reg.put_manifest(repo, &t, None, body).await.unwrap() }
        };
        for t in ["a", "b", "c", "d", "e"] {
            put(t).await;
        }
        let pages = |reg: Registry| async move {
            let mut out = Vec::new();
            for (n, last) in [
                (Some(2), None),
                (Some(2), Some("b")),
                (Some(9), Some("c")),
                (None, Some("a")),
            ] {
                let l = reg
                    .list_tags(&"pages".parse().unwrap(), n, last)
                    .await
                    .unwrap();
                out.push((l.body, l.more, l.last));
            }
            out
        };
        let from_db = pages(reg.clone()).await;
        reg.list_tags(&repo, None, None).await.unwrap();
        assert_eq!(
            pages(reg.clone()).await,
            from_db,
            "pages cut from the kept list"
        );
        put("bb").await;
        let whole = reg.list_tags(&repo, None, None).await.unwrap();
        assert_eq!(
            whole.body,
            &br#"{"name":"pages","tags":["a","b","bb","c","d","e"]}"#[..]
        );
        let page = reg.list_tags(&repo, Some(1), Some("b")).await.unwrap();
        assert_eq!(page.body, &br#"{"name":"pages","tags":["bb"]}"#[..]);
        assert!(page.more);
    }

    /// A new tag of a stored manifest skips writing its bytes only when they are there: a
    /// record without its file gets the file back.
    #[tokio::test]
    async fn a_new_tag_of_a_manifest_whose_bytes_are_gone_stores_them_again() {
        let (reg, _dir) = registry().await;
        let repo: RepoName = "app".parse().unwrap();
        let config = push_blob(&reg, &repo, b"{}").await;
        let layer = push_blob(&reg, &repo, b"layer-bytes").await;
        let body = image(&config, &layer, 11);
        let (a, b): (Reference, Reference) = ("a".parse().unwrap(), "b".parse().unwrap());
        let d = reg
            .put_manifest(&repo, &a, None, body.clone())
            .await
            .unwrap()
            .digest;
        reg.blobs.delete(&d).await.unwrap();
        reg.put_manifest(&repo, &b, None, body.clone())
            .await
            .unwrap();
        assert_eq!(reg.blobs.stat(&d).await.unwrap(), Some(body.len() as u64));
        assert_eq!(reg.get_manifest(&repo, &b, &[]).await.unwrap().body, body);
    }

    #[tokio::test]
    async fn push_checks_references_and_negotiates() {
        let (reg, _dir) = registry().await;
        let repo: RepoName = "app".parse().unwrap();
        let config = push_blob(&reg, &repo, b"{}").await;
        let missing = Digest::sha256(b"missing");
        let latest: Reference = "latest".parse().unwrap();

        let e = reg
            .put_manifest(&repo, &latest, None, image(&config, &missing, 7))
            .await
            .unwrap_err();
        assert_eq!(code(e), ErrorCode::ManifestBlobUnknown);
        let layer = push_blob(&reg, &repo, b"layer-bytes").await;
        let e = reg
            .put_manifest(&repo, &latest, None, image(&config, &layer, 5))
            .await
            .unwrap_err();
        assert_eq!(code(e), ErrorCode::ManifestInvalid);
        let body = image(&config, &layer, 11);
        let pushed = reg
            .put_manifest(&repo, &latest, Some(media::OCI_MANIFEST), body.clone())
            .await
            .unwrap();
        assert_eq!(pushed.digest, Digest::sha256(&body));

        let got = reg.get_manifest(&repo, &latest, &[]).await.unwrap();
        assert_eq!(got.body, body);
        let by_digest = Reference::Digest(pushed.digest.clone());
        assert!(reg
            .get_manifest(&repo, &by_digest, &[media::OCI_MANIFEST])
            .await
            .is_ok());
        let e = reg
            .get_manifest(&repo, &latest, &[media::DOCKER_MANIFEST])
            .await
            .err()
            .unwrap();
        assert_eq!(code(e), ErrorCode::ManifestUnknown);

        // Wrong digest in the URL.
        let wrong = Reference::Digest(Digest::sha256(b"other"));
        assert_eq!(
            code(
                reg.put_manifest(&repo, &wrong, None, body.clone())
                    .await
                    .err()
                    .unwrap()
            ),
            ErrorCode::DigestInvalid
        );

        // Delete by tag keeps the manifest; delete by digest removes it.
        reg.delete_manifest(&repo, &latest).await.unwrap();
        assert!(reg.get_manifest(&repo, &by_digest, &[]).await.is_ok());
        reg.delete_manifest(&repo, &by_digest).await.unwrap();
        assert_eq!(
            code(
                reg.get_manifest(&repo, &by_digest, &[])
                    .await
                    .err()
                    .unwrap()
            ),
            ErrorCode::ManifestUnknown
        );
        let nowhere: RepoName = "nowhere".parse().unwrap();
        assert_eq!(
            code(
                reg.get_manifest(&nowhere, &latest, &[])
                    .await
                    .err()
                    .unwrap()
            ),
            ErrorCode::NameUnknown
        );
    }
}
