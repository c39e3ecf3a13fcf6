//! The contract every [`MetaStore`] backend passes: one check per promise in the trait's
//! method docs. Backends call [`run`] from their own tests on an empty store.

use crate::{ManifestRecord, MetaStore, NewManifest, Page, PutRefusal, UploadRecord, UploadState};
use berth_oci::{Digest, Reference, RepoName, Tag, UploadId};

fn repo(s: &str) -> RepoName {
    s.parse().expect("repo")
}

fn tag(s: &str) -> Tag {
    s.parse().expect("tag")
}

fn record(d: &Digest, subject: Option<&Digest>, artifact_type: Option<&str>) -> ManifestRecord {
    ManifestRecord {
        digest: d.clone(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        size: 123,
        artifact_type: artifact_type.map(str::to_owned),
        subject: subject.cloned(),
        config_media_type: Some("application/vnd.oci.image.config.v1+json".into()),
        annotations: None,
        pushed_at: 1,
    }
}

pub async fn run(meta: &dyn MetaStore) {
    let a = repo("team/a");
    let b = repo("team/b");
    let layer = Digest::sha256(b"layer");
    let config = Digest::sha256(b"config");

    // link_blob / linked_blob / unlink_blob.
    assert_eq!(meta.linked_blob(&a, &layer).await.expect("linked"), None);
    meta.link_blob(&a, &layer, 5).await.expect("link");
    meta.link_blob(&a, &layer, 5)
        .await
        .expect("link is idempotent");
    assert_eq!(meta.linked_blob(&a, &layer).await.expect("linked"), Some(5));
    assert_eq!(
        meta.linked_blob(&b, &layer).await.expect("linked"),
        None,
        "links are per repository"
    );
    assert!(meta.unlink_blob(&a, &layer).await.expect("unlink"));
    assert!(!meta.unlink_blob(&a, &layer).await.expect("unlink absent"));
    meta.link_blob(&a, &layer, 5).await.expect("link");

    // put_manifest refuses missing blobs, wrong sizes, missing children; nothing changes.
    let m1 = Digest::sha256(b"manifest-1");
    let mut nm = NewManifest {
        repo: a.clone(),
        record: record(&m1, None, None),
        blobs: vec![(config.clone(), 6), (layer.clone(), 5)],
        children: vec![],
        tag: Some(tag("v1")),
    };
    assert_eq!(
        meta.put_manifest(&nm).await.expect("put"),
        Err(PutRefusal::BlobUnknown(config.clone()))
    );
    meta.link_blob(&a, &config, 7).await.expect("link");
    assert_eq!(
        meta.put_manifest(&nm).await.expect("put"),
        Err(PutRefusal::SizeMismatch {
            digest: config.clone(),
            stored: 7,
            declared: 6
        })
    );
    nm.blobs[0].1 = 7;
    assert!(meta
        .manifest(&a, &Reference::Tag(tag("v1")))
        .await
        .expect("get")
        .is_none());
    meta.put_manifest(&nm)
        .await
        .expect("put")
        .expect("accepted");
    let got = meta
        .manifest(&a, &Reference::Tag(tag("v1")))
        .await
        .expect("get")
        .expect("by tag");
    assert_eq!(got, nm.record);
    assert_eq!(
        meta.manifest(&a, &Reference::Digest(m1.clone()))
            .await
            .expect("get"),
        Some(nm.record.clone())
    );
    assert_eq!(
        meta.linked_blob(&a, &m1).await.expect("linked"),
        Some(123),
        "manifest blob linked"
    );
    assert!(meta
        .manifest(&b, &Reference::Digest(m1.clone()))
        .await
        .expect("get")
        .is_none());

    let index = Digest::sha256(b"index");
    let missing_child = Digest::sha256(b"nope");
    let ni = NewManifest {
        repo: a.clone(),
        record: record(&index, None, None),
        blobs: vec![],
        children: vec![m1.clone(), missing_child.clone()],
        tag: Some(tag("multi")),
    };
    assert_eq!(
        meta.put_manifest(&ni).await.expect("put"),
        Err(PutRefusal::ManifestUnknown(missing_child))
    );
    let ni = NewManifest {
        children: vec![m1.clone()],
        ..ni
    };
    meta.put_manifest(&ni)
        .await
        .expect("put")
        .expect("index accepted");

    // tag moves.
    let m2 = Digest::sha256(b"manifest-2");
    let nm2 = NewManifest {
        record: record(&m2, None, None),
        tag: Some(tag("v1")),
        ..nm.clone()
    };
    meta.put_manifest(&nm2)
        .await
        .expect("put")
        .expect("accepted");
    let got = meta
        .manifest(&a, &Reference::Tag(tag("v1")))
        .await
        .expect("get")
        .expect("moved");
    assert_eq!(got.digest, m2);

    // tags: byte order, paging, None for unknown repository.
    for t in ["b", "a", "Z", "a-1", "latest"] {
        let n = NewManifest {
            tag: Some(tag(t)),
            ..nm2.clone()
        };
        meta.put_manifest(&n).await.expect("put").expect("accepted");
    }
    let all = meta
        .tags(&a, Page::default())
        .await
        .expect("tags")
        .expect("repo exists");
    assert_eq!(all, vec!["Z", "a", "a-1", "b", "latest", "multi", "v1"]);
    let p = meta
        .tags(
            &a,
            Page {
                after: Some("a"),
                limit: Some(2),
            },
        )
        .await
        .expect("tags")
        .expect("exists");
    assert_eq!(p, vec!["a-1", "b"]);
    assert_eq!(
        meta.tags(&repo("nope"), Page::default())
            .await
            .expect("tags"),
        None
    );
    meta.link_blob(&b, &layer, 5).await.expect("link");
    assert_eq!(
        meta.tags(&b, Page::default()).await.expect("tags"),
        Some(vec![])
    );

    // delete_tag leaves the manifest; delete_manifest takes its tags.
    assert!(meta.delete_tag(&a, &tag("a")).await.expect("delete tag"));
    assert!(!meta
        .delete_tag(&a, &tag("a"))
        .await
        .expect("delete tag again"));
    assert!(meta
        .manifest(&a, &Reference::Digest(m2.clone()))
        .await
        .expect("get")
        .is_some());
    assert!(meta.delete_manifest(&a, &m2).await.expect("delete"));
    assert!(!meta.delete_manifest(&a, &m2).await.expect("delete again"));
    assert!(meta
        .manifest(&a, &Reference::Tag(tag("v1")))
        .await
        .expect("get")
        .is_none());
    let left = meta
        .tags(&a, Page::default())
        .await
        .expect("tags")
        .expect("exists");
    assert_eq!(left, vec!["multi"]);

    // repositories: byte order, paging.
    assert_eq!(
        meta.repositories(Page::default()).await.expect("repos"),
        vec!["team/a", "team/b"]
    );
    assert_eq!(
        meta.repositories(Page {
            after: Some("team/a"),
            limit: Some(5)
        })
        .await
        .expect("repos"),
        vec!["team/b"]
    );
    assert_eq!(
        meta.repositories(Page {
            after: None,
            limit: Some(1)
        })
        .await
        .expect("repos"),
        vec!["team/a"]
    );

    // referrers: by subject, filtered by artifact type, digest order.
    let sig = Digest::sha256(b"sig");
    let sbom = Digest::sha256(b"sbom");
    for (d, t) in [(&sig, "application/x.sig"), (&sbom, "application/x.sbom")] {
        let n = NewManifest {
            record: record(d, Some(&m1), Some(t)),
            tag: None,
            ..nm.clone()
        };
        meta.put_manifest(&n).await.expect("put").expect("accepted");
    }
    let mut expected = vec![sig.clone(), sbom.clone()];
    expected.sort();
    let all: Vec<Digest> = meta
        .referrers(&a, &m1, None)
        .await
        .expect("referrers")
        .into_iter()
        .map(|r| r.digest)
        .collect();
    assert_eq!(all, expected);
    let sigs = meta
        .referrers(&a, &m1, Some("application/x.sig"))
        .await
        .expect("referrers");
    assert_eq!(sigs.len(), 1);
    assert_eq!(sigs[0].digest, sig);
    assert!(meta
        .referrers(&b, &m1, None)
        .await
        .expect("referrers")
        .is_empty());

    // uploads: unrecorded until the first advance, compare-and-set, ended with a tombstone.
    let id: UploadId = "u1".parse().expect("id");
    assert_eq!(meta.upload(&id).await.expect("upload"), None);
    let u = UploadRecord {
        id: id.clone(),
        repo: a.clone(),
        offset: 0,
        hash_state: None,
        created_at: 1,
        updated_at: 1,
    };
    assert!(meta
        .advance_upload(&u, 10, Some("state"))
        .await
        .expect("first advance records the session"));
    assert!(!meta
        .advance_upload(&u, 20, Some("other"))
        .await
        .expect("stale advance refused"));
    let Some(UploadState::Open(got)) = meta.upload(&id).await.expect("upload") else {
        panic!("session recorded by its first advance");
    };
    assert_eq!(
        (
            &got.repo,
            got.offset,
            got.hash_state.as_deref(),
            got.created_at
        ),
        (&a, 10, Some("state"), 1)
    );
    assert!(meta
        .advance_upload(&got, 25, None)
        .await
        .expect("advance from where it stands"));
    let at_25 = UploadRecord {
        offset: 25,
        ..got.clone()
    };
    assert!(meta.end_upload(&at_25).await.expect("end"));
    assert!(!meta.end_upload(&at_25).await.expect("end again"));
    assert_eq!(
        meta.upload(&id).await.expect("upload"),
        Some(UploadState::Ended)
    );
    assert!(!meta
        .advance_upload(&at_25, 30, None)
        .await
        .expect("an ended session does not move"));
    assert!(!meta
        .advance_upload(&u, 5, None)
        .await
        .expect("an ended session is not recorded again"));

    // A session never recorded can end too, and is then unknown for good.
    let fresh = UploadRecord {
        id: "u2".parse().expect("id"),
        ..u.clone()
    };
    assert!(meta.end_upload(&fresh).await.expect("end unrecorded"));
    assert_eq!(
        meta.upload(&fresh.id).await.expect("upload"),
        Some(UploadState::Ended)
    );

    // finish_upload: links the blob and ends the session, together.
    let finishing = UploadRecord {
        id: "u3".parse().expect("id"),
        repo: b.clone(),
        ..u.clone()
    };
    let finished = Digest::sha256(b"finished upload");
    meta.finish_upload(&finishing, &finished, 15)
        .await
        .expect("finish");
    assert_eq!(
        meta.upload(&finishing.id).await.expect("upload"),
        Some(UploadState::Ended)
    );
    assert_eq!(
        meta.linked_blob(&b, &finished).await.expect("linked"),
        Some(15)
    );

    // Concurrent writes all land.
    let digests: Vec<Digest> = (0..64u32)
        .map(|n| Digest::sha256(&n.to_be_bytes()))
        .collect();
    let links = futures::future::join_all(digests.iter().map(|d| meta.link_blob(&b, d, 4)));
    for (d, r) in digests.iter().zip(links.await) {
        r.expect("concurrent link");
        assert_eq!(meta.linked_blob(&b, d).await.expect("linked"), Some(4));
    }

    // Secrets: the first candidate stays.
    let first = meta.secret("test-key", "one").await.expect("secret");
    assert_eq!(first, "one");
    assert_eq!(meta.secret("test-key", "two").await.expect("secret"), "one");
}
