//! The contract every [`MetaStore`] backend passes: one test per promise in the trait's
//! method docs, each on an empty store. A backend runs them all with
//! [`meta_contract_tests!`](crate::meta_contract_tests), which makes one `#[tokio::test]`
//! per promise, so a failure names the promise and the backend.

use crate::{
    ManifestRecord, MetaStore, NewManifest, Page, PutRefusal, Stored, UploadRecord, UploadState,
};
use berth_oci::{Digest, Reference, RepoName, Tag, UploadId};

/// One `#[tokio::test]` per promise of the [`MetaStore`] contract, each on a fresh store:
/// `$open` is an async expression giving `(store, guard)`, the guard kept for the test's
/// length (a temporary directory, say).
#[macro_export]
macro_rules! meta_contract_tests {
    ($open:expr) => {
        $crate::meta_contract_tests!(@each $open; links_are_idempotent_and_per_repository, put_manifest_checks_references_in_one_transaction, a_tag_moves_to_the_last_manifest_put_under_it, tags_are_in_byte_order_and_paged, deletes_take_tags_with_their_manifest, repositories_are_in_byte_order_and_paged, referrers_are_by_subject_and_artifact_type, uploads_advance_by_compare_and_set_and_end_for_good, an_unrecorded_session_can_end, finish_upload_links_and_ends_together, concurrent_writes_all_land, the_first_secret_stays, collection_marks_only_garbage_and_expires_uploads, retention_deletes_only_what_stands_as_read, usage_counts_each_blob_once_and_per_repository, lists_and_the_generation_follow_writes, marks_refuse_links_of_bytes_not_stored_again);
    };
    (@each $open:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $open.await;
                $crate::testsuite::$name(&*store).await;
            }
        )*
    };
}

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

/// What several promises start from: `team/a` holds a config (7 bytes), a layer (5) and
/// the manifest `m1` referencing both, tagged `v1`; `team/b` exists, empty.
struct Image {
    a: RepoName,
    b: RepoName,
    layer: Digest,
    m1: Digest,
    nm: NewManifest,
}

async fn image_in_a(meta: &dyn MetaStore) -> Image {
    let (a, b) = (repo("team/a"), repo("team/b"));
    let (layer, config) = (Digest::sha256(b"layer"), Digest::sha256(b"config"));
    meta.link_blob(&a, &layer, 5).await.expect("link");
    meta.link_blob(&a, &config, 7).await.expect("link");
    meta.link_blob(&b, &layer, 5).await.expect("link");
    let m1 = Digest::sha256(b"manifest-1");
    let nm = NewManifest {
        repo: a.clone(),
        record: record(&m1, None, None),
        blobs: vec![(config, 7), (layer.clone(), 5)],
        children: vec![],
        tag: Some(tag("v1")),
        stored: Stored::Anew,
    };
    meta.put_manifest(&nm)
        .await
        .expect("put")
        .expect("accepted");
    Image {
        a,
        b,
        layer,
        m1,
        nm,
    }
}

/// `nm` as manifest `d` under tag `t`.
fn retagged(nm: &NewManifest, d: &Digest, t: &str) -> NewManifest {
    NewManifest {
        record: record(d, None, None),
        tag: Some(tag(t)),
        ..nm.clone()
    }
}

async fn accepted(meta: &dyn MetaStore, m: &NewManifest) {
    meta.put_manifest(m).await.expect("put").expect("accepted");
}

/// link_blob / linked_blob / unlink_blob: idempotent, per repository.
pub async fn links_are_idempotent_and_per_repository(meta: &dyn MetaStore) {
    let a = repo("team/a");
    let b = repo("team/b");
    let layer = Digest::sha256(b"layer");
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
}

/// put_manifest refuses missing blobs, wrong sizes and missing children, and nothing
/// changes; an accepted one is found by tag and digest, with its own blob linked.
pub async fn put_manifest_checks_references_in_one_transaction(meta: &dyn MetaStore) {
    let a = repo("team/a");
    let b = repo("team/b");
    let layer = Digest::sha256(b"layer");
    let config = Digest::sha256(b"config");
    meta.link_blob(&a, &layer, 5).await.expect("link");
    let m1 = Digest::sha256(b"manifest-1");
    let mut nm = NewManifest {
        repo: a.clone(),
        record: record(&m1, None, None),
        blobs: vec![(config.clone(), 6), (layer.clone(), 5)],
        children: vec![],
        tag: Some(tag("v1")),
        stored: Stored::Anew,
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
        stored: Stored::Anew,
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
}

/// A tag moves to the last manifest put under it.
pub async fn a_tag_moves_to_the_last_manifest_put_under_it(meta: &dyn MetaStore) {
    let Image { a, nm, .. } = image_in_a(meta).await;
    let m2 = Digest::sha256(b"manifest-2");
    accepted(meta, &retagged(&nm, &m2, "v1")).await;
    let got = meta
        .manifest(&a, &Reference::Tag(tag("v1")))
        .await
        .expect("get")
        .expect("moved");
    assert_eq!(got.digest, m2);
}

/// tags: byte order, paging, `None` for an unknown repository, empty for a known one.
pub async fn tags_are_in_byte_order_and_paged(meta: &dyn MetaStore) {
    let Image {
        a, b, layer, nm, ..
    } = image_in_a(meta).await;
    let index = NewManifest {
        blobs: vec![],
        ..retagged(&nm, &Digest::sha256(b"index"), "multi")
    };
    accepted(meta, &index).await;
    for t in ["b", "a", "Z", "a-1", "latest"] {
        accepted(meta, &retagged(&nm, &nm.record.digest, t)).await;
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
        Some(Vec::new())
    );
}

/// delete_tag leaves the manifest; delete_manifest takes its tags.
pub async fn deletes_take_tags_with_their_manifest(meta: &dyn MetaStore) {
    let Image { a, nm, .. } = image_in_a(meta).await;
    let m2 = Digest::sha256(b"manifest-2");
    for t in ["a", "v1"] {
        accepted(meta, &retagged(&nm, &m2, t)).await;
    }
    accepted(meta, &retagged(&nm, &nm.record.digest, "multi")).await;
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
}

/// repositories: byte order, paging.
pub async fn repositories_are_in_byte_order_and_paged(meta: &dyn MetaStore) {
    image_in_a(meta).await;
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
}

/// referrers: by subject, filtered by artifact type, in digest order, per repository.
pub async fn referrers_are_by_subject_and_artifact_type(meta: &dyn MetaStore) {
    let Image { a, b, m1, nm, .. } = image_in_a(meta).await;
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
}

/// An upload is unrecorded until its first advance, moves by compare-and-set with its hash
/// state and the blob store's progress, and ends with a tombstone.
pub async fn uploads_advance_by_compare_and_set_and_end_for_good(meta: &dyn MetaStore) {
    let a = repo("team/a");
    let id: UploadId = "u1".parse().expect("id");
    assert_eq!(meta.upload(&id).await.expect("upload"), None);
    let u = UploadRecord {
        id: id.clone(),
        repo: a.clone(),
        offset: 0,
        hash_state: None,
        progress: Vec::new(),
        created_at: 1,
        updated_at: 1,
    };
    assert!(meta
        .advance_upload(&u, 10, Some("state"), b"part-1")
        .await
        .expect("first advance records the session"));
    assert!(!meta
        .advance_upload(&u, 20, Some("other"), b"")
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
            &got.progress[..],
            got.created_at
        ),
        (&a, 10, Some("state"), &b"part-1"[..], 1)
    );
    assert!(meta
        .advance_upload(&got, 25, None, b"part-2")
        .await
        .expect("advance from where it stands"));
    let Some(UploadState::Open(got)) = meta.upload(&id).await.expect("upload") else {
        panic!("session still open");
    };
    assert_eq!((got.offset, &got.progress[..]), (25, &b"part-2"[..]));
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
        .advance_upload(&at_25, 30, None, b"")
        .await
        .expect("an ended session does not move"));
    assert!(!meta
        .advance_upload(&u, 5, None, b"")
        .await
        .expect("an ended session is not recorded again"));
}

/// A session of `team/a` at offset 0, as `start_upload` makes it.
fn session(id: &str) -> UploadRecord {
    UploadRecord {
        id: id.parse().expect("id"),
        repo: repo("team/a"),
        offset: 0,
        hash_state: None,
        progress: Vec::new(),
        created_at: 1,
        updated_at: 1,
    }
}

/// A session never recorded can end too, and is then unknown for good.
pub async fn an_unrecorded_session_can_end(meta: &dyn MetaStore) {
    let u = session("u1");
    let fresh = UploadRecord {
        id: "u2".parse().expect("id"),
        ..u.clone()
    };
    assert!(meta.end_upload(&fresh).await.expect("end unrecorded"));
    assert_eq!(
        meta.upload(&fresh.id).await.expect("upload"),
        Some(UploadState::Ended)
    );
}

/// finish_upload links the blob and ends the session, together.
pub async fn finish_upload_links_and_ends_together(meta: &dyn MetaStore) {
    let b = repo("team/b");
    let u = session("u1");
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
}

/// Concurrent writes all land.
pub async fn concurrent_writes_all_land(meta: &dyn MetaStore) {
    let b = repo("team/b");
    let digests: Vec<Digest> = (0..64u32)
        .map(|n| Digest::sha256(&n.to_be_bytes()))
        .collect();
    let links = futures::future::join_all(digests.iter().map(|d| meta.link_blob(&b, d, 4)));
    for (d, r) in digests.iter().zip(links.await) {
        r.expect("concurrent link");
        assert_eq!(meta.linked_blob(&b, d).await.expect("linked"), Some(4));
    }
}

/// secret: the first candidate stays.
pub async fn the_first_secret_stays(meta: &dyn MetaStore) {
    let first = meta.secret("test-key", "one").await.expect("secret");
    assert_eq!(first, "one");
    assert_eq!(meta.secret("test-key", "two").await.expect("secret"), "one");
}

/// A collection's mark: mounts and puts of bytes found stored are refused from then on;
/// whoever stores the bytes again links them and clears it. Mounts copy a live link.
pub async fn marks_refuse_links_of_bytes_not_stored_again(meta: &dyn MetaStore) {
    let (x, y) = (repo("marks/x"), repo("marks/y"));
    let (layer, doomed, m) = (
        Digest::sha256(b"marks layer"),
        Digest::sha256(b"marks doomed"),
        Digest::sha256(b"marks manifest"),
    );
    assert_eq!(meta.mount_blob(&y, &x, &layer).await.expect("mount"), None);
    meta.link_blob(&x, &layer, 4).await.expect("link");
    assert_eq!(
        meta.mount_blob(&y, &x, &layer).await.expect("mount"),
        Some(4)
    );
    assert_eq!(meta.linked_blob(&y, &layer).await.expect("linked"), Some(4));

    for d in [&doomed, &m] {
        meta.link_blob(&x, d, 9).await.expect("link");
    }
    let marked = meta
        .mark_deleting(&[doomed.clone(), m.clone()], i64::MAX)
        .await
        .expect("mark");
    assert_eq!(marked.len(), 2);
    assert_eq!(meta.mount_blob(&y, &x, &doomed).await.expect("mount"), None);
    let mut put = image(&x, &m, &[], Some("t"));
    put.record.size = 9;
    put.stored = Stored::Already;
    assert_eq!(
        meta.put_manifest(&put).await.expect("put"),
        Err(PutRefusal::BytesGone)
    );
    assert!(
        !meta.blob_live(&m).await.expect("live"),
        "a refusal changes nothing"
    );
    put.stored = Stored::Anew;
    meta.put_manifest(&put)
        .await
        .expect("put")
        .expect("accepted");
    assert!(
        meta.blob_live(&m).await.expect("live"),
        "stored anew clears the mark"
    );
    meta.link_blob(&y, &doomed, 9).await.expect("link");
    assert!(meta.blob_live(&doomed).await.expect("live"));
}

/// Tag lists show every kind of write that changes them, and each such write makes the
/// change generation larger.
pub async fn lists_and_the_generation_follow_writes(meta: &dyn MetaStore) {
    let generation = || async { meta.generation().await.expect("generation") };
    let r = repo("lists/r");
    let layer = Digest::sha256(b"lists layer");
    let (m1, m2) = (Digest::sha256(b"lists m1"), Digest::sha256(b"lists m2"));
    meta.link_blob(&r, &layer, 3).await.expect("link");
    let all = || async {
        meta.tags(&r, Page::default())
            .await
            .expect("tags")
            .expect("exists")
    };
    let after_a = || async {
        meta.tags(
            &r,
            Page {
                after: Some("a"),
                limit: Some(10),
            },
        )
        .await
        .expect("tags")
        .expect("exists")
    };
    assert!(all().await.is_empty());
    let mut seen = generation().await;
    let mut grew = |now: u64, what: &str| {
        assert!(now > seen, "{what} left the generation at {seen}");
        seen = now;
    };
    let put = |d: Digest, t: &'static str| {
        let m = image(&r, &d, &[(&layer, 3)], Some(t));
        async move { meta.put_manifest(&m).await }
    };
    put(m1.clone(), "b").await.expect("put").expect("accepted");
    grew(generation().await, "put_manifest");
    assert_eq!(all().await, vec!["b"], "a new tag");
    put(m1.clone(), "c").await.expect("put").expect("accepted");
    put(m2.clone(), "d").await.expect("put").expect("accepted");
    assert_eq!(all().await, vec!["b", "c", "d"]);
    assert_eq!(after_a().await, vec!["b", "c", "d"]);
    assert!(meta.delete_tag(&r, &tag("c")).await.expect("delete tag"));
    grew(generation().await, "delete_tag");
    assert_eq!(all().await, vec!["b", "d"], "delete_tag");
    assert_eq!(after_a().await, vec!["b", "d"], "delete_tag, paged");
    assert!(meta
        .delete_tag_at(&r, &tag("d"), &m2)
        .await
        .expect("delete tag at"));
    grew(generation().await, "delete_tag_at");
    assert_eq!(all().await, vec!["b"], "delete_tag_at");
    assert!(meta.delete_manifest(&r, &m1).await.expect("delete"));
    grew(generation().await, "delete_manifest");
    assert!(all().await.is_empty(), "delete_manifest takes its tags");

    // A repository that prune_links removes is unknown, not listed as empty.
    let gone = repo("lists/gone");
    meta.link_blob(&gone, &layer, 3).await.expect("link");
    assert_eq!(
        meta.tags(&gone, Page::default()).await.expect("tags"),
        Some(Vec::new())
    );
    assert!(meta.unlink_blob(&gone, &layer).await.expect("unlink"));
    meta.prune_links(i64::MAX).await.expect("prune");
    grew(generation().await, "prune_links");
    assert_eq!(meta.tags(&gone, Page::default()).await.expect("tags"), None);
}

fn image(repo: &RepoName, d: &Digest, blobs: &[(&Digest, u64)], t: Option<&str>) -> NewManifest {
    NewManifest {
        repo: repo.clone(),
        record: record(d, None, None),
        blobs: blobs.iter().map(|(d, n)| ((*d).clone(), *n)).collect(),
        children: vec![],
        tag: t.map(tag),
        stored: Stored::Anew,
    }
}

/// Garbage collection: what is garbage, the mark that closes the race with a push, links,
/// upload expiry.
pub async fn collection_marks_only_garbage_and_expires_uploads(meta: &dyn MetaStore) {
    let r = repo("gc/r");
    let (kept, loose, shared) = (
        Digest::sha256(b"gc kept layer"),
        Digest::sha256(b"gc loose layer"),
        Digest::sha256(b"gc shared layer"),
    );
    let m = Digest::sha256(b"gc manifest");
    for d in [&kept, &loose, &shared] {
        meta.link_blob(&r, d, 7).await.expect("link");
    }
    meta.put_manifest(&image(&r, &m, &[(&kept, 7), (&shared, 7)], Some("t")))
        .await
        .expect("put")
        .expect("accepted");
    let past = crate::now_millis() - 60_000;
    let future = crate::now_millis() + 60_000;
    let is_garbage = |list: &[(Digest, u64)], d: &Digest| list.iter().any(|(g, _)| g == d);

    // Garbage: unreferenced and last linked before the cutoff; links renew the grace.
    let g = meta.garbage_blobs(past).await.expect("garbage");
    assert!(
        !is_garbage(&g, &loose),
        "linked after the cutoff: protected"
    );
    let g = meta.garbage_blobs(future).await.expect("garbage");
    assert!(is_garbage(&g, &loose) && !is_garbage(&g, &kept) && !is_garbage(&g, &m));
    assert!(g.contains(&(loose.clone(), 7)), "with its size");
    assert!(
        meta.blob_live(&loose).await.expect("live"),
        "garbage, not yet marked: live"
    );
    assert!(!meta
        .blob_live(&Digest::sha256(b"never stored"))
        .await
        .expect("live"));

    // mark_deleting re-checks, so a blob referenced meanwhile is not marked.
    meta.put_manifest(&image(
        &r,
        &Digest::sha256(b"gc manifest 2"),
        &[(&loose, 7)],
        None,
    ))
    .await
    .expect("put")
    .expect("accepted");
    assert!(meta
        .mark_deleting(std::slice::from_ref(&loose), future)
        .await
        .expect("mark")
        .is_empty());
    assert!(meta
        .delete_manifest(&r, &Digest::sha256(b"gc manifest 2"))
        .await
        .expect("delete"));
    // Marked: unlinked everywhere, so no manifest can take it any more.
    let marked = meta
        .mark_deleting(&[loose.clone(), kept.clone()], future)
        .await
        .expect("mark");
    assert_eq!(marked, vec![loose.clone()]);
    assert_eq!(meta.linked_blob(&r, &loose).await.expect("linked"), None);
    assert_eq!(
        meta.put_manifest(&image(&r, &Digest::sha256(b"gc m3"), &[(&loose, 7)], None))
            .await
            .expect("put"),
        Err(PutRefusal::BlobUnknown(loose.clone()))
    );
    assert!(meta
        .deleting_blobs()
        .await
        .expect("deleting")
        .iter()
        .any(|(d, _)| d == &loose));
    assert!(!is_garbage(
        &meta.garbage_blobs(future).await.expect("garbage"),
        &loose
    ));
    assert_eq!(meta.blob_record(&loose).await.expect("record"), Some(7));
    assert!(
        !meta.blob_live(&loose).await.expect("live"),
        "marked: not live"
    );
    assert!(!meta
        .blob_records()
        .await
        .expect("records")
        .iter()
        .any(|(d, _)| d == &loose));
    // Linking it again clears the mark; forgetting then spares it.
    meta.link_blob(&r, &loose, 7).await.expect("link");
    assert!(
        meta.blob_live(&loose).await.expect("live"),
        "linked again: live"
    );
    assert!(!meta
        .deleting_blobs()
        .await
        .expect("deleting")
        .iter()
        .any(|(d, _)| d == &loose));
    assert_eq!(
        meta.forget_blobs(std::slice::from_ref(&loose))
            .await
            .expect("forget"),
        0
    );
    assert_eq!(meta.linked_blob(&r, &loose).await.expect("linked"), Some(7));
    // Forgetting a marked blob removes its record.
    assert!(meta.unlink_blob(&r, &loose).await.expect("unlink"));
    let marked = meta
        .mark_deleting(std::slice::from_ref(&loose), future)
        .await
        .expect("mark");
    assert_eq!(marked.len(), 1);
    assert_eq!(meta.forget_blobs(&marked).await.expect("forget"), 1);
    assert_eq!(meta.blob_record(&loose).await.expect("record"), None);
    assert!(
        !meta.blob_live(&loose).await.expect("live"),
        "forgotten: not live"
    );

    // prune_links: links of blobs nothing in their repository references, made before the
    // cutoff; links that a manifest of the repository uses stay.
    let other = repo("gc/other");
    meta.link_blob(&other, &shared, 7).await.expect("link");
    assert_eq!(meta.prune_links(past).await.expect("prune"), 0);
    assert!(meta.prune_links(future).await.expect("prune") >= 1);
    assert_eq!(meta.linked_blob(&other, &shared).await.expect("l"), None);
    assert_eq!(meta.linked_blob(&r, &shared).await.expect("l"), Some(7));
    assert_eq!(meta.linked_blob(&r, &m).await.expect("l"), Some(123));
    // ...and a repository left with nothing goes with its last link.
    assert!(!meta
        .repositories(Page::default())
        .await
        .expect("repos")
        .contains(&"gc/other".to_owned()));
    assert!(meta
        .repositories(Page::default())
        .await
        .expect("repos")
        .contains(&"gc/r".to_owned()));

    // Uploads: open sessions idle since before the cutoff; tombstones forgotten by age.
    let idle = UploadRecord {
        id: "gc-idle".parse().expect("id"),
        repo: r.clone(),
        offset: 0,
        hash_state: None,
        progress: Vec::new(),
        created_at: 5,
        updated_at: 5,
    };
    assert!(meta
        .advance_upload(&idle, 3, None, b"")
        .await
        .expect("advance"));
    let stale = meta.stale_uploads(future).await.expect("stale");
    assert!(stale.iter().any(|u| u.id == idle.id && u.offset == 3));
    assert!(!meta
        .stale_uploads(past)
        .await
        .expect("stale")
        .iter()
        .any(|u| u.id == idle.id));
    assert!(meta
        .end_upload(&UploadRecord {
            offset: 3,
            ..idle.clone()
        })
        .await
        .expect("end"));
    assert!(
        !meta
            .stale_uploads(future)
            .await
            .expect("stale")
            .iter()
            .any(|u| u.id == idle.id),
        "ended sessions are not stale"
    );
    assert!(meta.forget_ended_uploads(6).await.expect("forget") >= 1);
    assert_eq!(meta.upload(&idle.id).await.expect("upload"), None);
}

/// What retention deletes with: conditional deletes, orphaned referrers.
pub async fn retention_deletes_only_what_stands_as_read(meta: &dyn MetaStore) {
    let r = repo("ret/r");
    let layer = Digest::sha256(b"ret layer");
    meta.link_blob(&r, &layer, 3).await.expect("link");
    let (m1, m2, child, index) = (
        Digest::sha256(b"ret m1"),
        Digest::sha256(b"ret m2"),
        Digest::sha256(b"ret child"),
        Digest::sha256(b"ret index"),
    );
    for (m, t) in [(&m1, Some("one")), (&m2, None), (&child, None)] {
        meta.put_manifest(&image(&r, m, &[(&layer, 3)], t))
            .await
            .expect("put")
            .expect("accepted");
    }
    let mut idx = image(&r, &index, &[], None);
    idx.children = vec![child.clone()];
    meta.put_manifest(&idx)
        .await
        .expect("put")
        .expect("accepted");

    // delete_tag_at: only while the tag still points there.
    assert!(!meta
        .delete_tag_at(&r, &tag("one"), &m2)
        .await
        .expect("delete tag at"));
    // delete_untagged_manifest: refused while tagged or a child, done when neither.
    assert!(!meta
        .delete_untagged_manifest(&r, &m1)
        .await
        .expect("delete untagged"));
    assert!(!meta
        .delete_untagged_manifest(&r, &child)
        .await
        .expect("delete untagged"));
    assert!(meta
        .delete_tag_at(&r, &tag("one"), &m1)
        .await
        .expect("delete tag at"));
    assert!(meta
        .delete_untagged_manifest(&r, &m1)
        .await
        .expect("delete untagged"));
    assert!(meta
        .manifest(&r, &Reference::Digest(m1.clone()))
        .await
        .expect("manifest")
        .is_none());
    assert_eq!(meta.linked_blob(&r, &m1).await.expect("linked"), None);

    // orphan_referrers: a referrer whose subject is gone, pushed before the cutoff.
    let sig = Digest::sha256(b"ret sig");
    meta.put_manifest(&NewManifest {
        record: record(&sig, Some(&m2), None),
        ..image(&r, &sig, &[], None)
    })
    .await
    .expect("put")
    .expect("accepted");
    let orphans = |before| async move { meta.orphan_referrers(before).await.expect("orphans") };
    assert!(orphans(i64::MAX).await.is_empty(), "its subject is stored");
    assert!(meta.delete_manifest(&r, &m2).await.expect("delete"));
    assert_eq!(orphans(i64::MAX).await, vec![(r.clone(), sig.clone())]);
    assert!(orphans(0).await.is_empty(), "pushed after the cutoff");
}

/// Accounting: bytes stored once, logical bytes, unique and shared per repository, counts,
/// last push and pull.
pub async fn usage_counts_each_blob_once_and_per_repository(meta: &dyn MetaStore) {
    let before = meta.usage().await.expect("usage");
    let (x, y) = (repo("acct/x"), repo("acct/y"));
    let (base, top, own) = (
        Digest::sha256(b"acct base"),
        Digest::sha256(b"acct top"),
        Digest::sha256(b"acct own"),
    );
    let (mx, my) = (Digest::sha256(b"acct mx"), Digest::sha256(b"acct my"));
    meta.link_blob(&x, &base, 1000).await.expect("link");
    meta.link_blob(&x, &top, 100).await.expect("link");
    meta.link_blob(&y, &base, 1000).await.expect("link");
    meta.link_blob(&y, &own, 10).await.expect("link");
    for (r, m, blobs, t) in [
        (&x, &mx, vec![(&base, 1000), (&top, 100)], "v1"),
        (&y, &my, vec![(&base, 1000), (&own, 10)], "v1"),
    ] {
        meta.put_manifest(&image(r, m, &blobs, Some(t)))
            .await
            .expect("put")
            .expect("accepted");
    }
    let after = meta.usage().await.expect("usage");
    // Stored once: base, top, own, and the two manifests (123 bytes each).
    assert_eq!(
        after.physical_bytes - before.physical_bytes,
        1000 + 100 + 10 + 2 * 123
    );
    assert_eq!(after.blobs - before.blobs, 5);
    // As if nothing were shared: base counted in both images.
    assert_eq!(
        after.logical_bytes - before.logical_bytes,
        (123 + 1000 + 100) + (123 + 1000 + 10)
    );
    let ux = after
        .repositories
        .iter()
        .find(|r| r.name == "acct/x")
        .expect("x listed")
        .clone();
    assert_eq!(
        (ux.unique_bytes, ux.shared_bytes, ux.logical_bytes),
        (100 + 123, 1000, 123 + 1000 + 100)
    );
    assert_eq!((ux.blobs, ux.manifests, ux.tags), (3, 1, 1));
    assert!(ux.last_push.is_some() && ux.last_pull.is_none());

    // Pulls: the latest time wins.
    meta.record_pulls(&[(x.clone(), mx.clone(), 50), (x.clone(), mx.clone(), 40)])
        .await
        .expect("pulls");
    meta.record_pulls(&[(x.clone(), mx.clone(), 45)])
        .await
        .expect("pulls");
    let contents = meta.repository(&x).await.expect("repo").expect("exists");
    assert_eq!(contents.manifests.len(), 1);
    assert_eq!(contents.manifests[0].pulled_at, Some(50));
    assert_eq!(contents.tags.len(), 1);
    assert_eq!(
        (contents.tags[0].name.as_str(), &contents.tags[0].digest),
        ("v1", &mx)
    );
    let mut refs: Vec<_> = contents
        .refs
        .iter()
        .map(|(_, t, s)| (t.clone(), *s))
        .collect();
    refs.sort();
    let mut want = vec![(base.clone(), Some(1000)), (top.clone(), Some(100))];
    want.sort();
    assert_eq!(refs, want);
    assert!(meta
        .repository(&repo("acct/none"))
        .await
        .expect("repo")
        .is_none());
    let ux = meta
        .usage()
        .await
        .expect("usage")
        .repositories
        .into_iter()
        .find(|r| r.name == "acct/x")
        .expect("x");
    assert_eq!(ux.last_pull, Some(50));
}
