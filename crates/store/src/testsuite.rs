//! The contract every [`BlobStore`] backend passes: one test per promise of the trait's
//! method docs, named after it. A backend runs them all with [`store_contract_tests!`], given
//! an async expression that opens a fresh store (and a guard that keeps it alive), or `None`
//! when the server it needs is not there (see [`crate::s3`]'s tests).

use crate::Durability::{Durable, UntilCommit};
use crate::{BlobRead, BlobStore, ByteStream, ReadAs, StoreError, UploadToken};
use berth_oci::{Digest, UploadId};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::io;
use std::time::{Duration, SystemTime};

/// One `#[tokio::test]` per promise, each on a store that `$open` makes afresh.
#[macro_export]
macro_rules! store_contract_tests {
    ($open:expr) => {
        $crate::store_contract_tests!(@each $open; stat_sees_committed_blobs_only, read_answers_whole_blobs_and_ranges_as_stream_or_file, read_of_an_absent_blob_is_not_found, put_stores_and_stores_anew, delete_is_idempotent, delete_many_removes_each_and_ignores_absent_ones, list_shows_committed_blobs_with_sizes_and_times, uploads_lists_scratch_spaces_with_when_they_grew, purge_temporary_leaves_what_is_newer, append_grows_an_upload_from_its_token, append_ignores_bytes_past_its_token, a_failed_append_leaves_the_upload_at_its_token, append_refuses_a_token_the_upload_cannot_stand_at, large_bodies_arrive_byte_for_byte_in_frames_of_any_size, holds_until_commit_or_abort, read_upload_answers_what_the_token_counts, commit_makes_the_upload_a_blob_and_removes_it, commit_takes_exactly_what_the_token_counts, commit_stores_an_existing_blob_anew, abort_is_idempotent_and_an_empty_token_starts_again);
    };
    (@each $open:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some((store, _guard)) = $open.await else {
                    return;
                };
                $crate::testsuite::$name(&store).await;
            }
        )*
    };
}

fn body(parts: &[&'static [u8]]) -> ByteStream<'static> {
    let v: Vec<io::Result<Bytes>> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
    futures::stream::iter(v).boxed()
}

fn failing(prefix: &'static [u8]) -> ByteStream<'static> {
    let v: Vec<io::Result<Bytes>> = vec![
        Ok(Bytes::from_static(prefix)),
        Err(io::Error::other("client went away")),
    ];
    futures::stream::iter(v).boxed()
}

fn upload(name: &str) -> UploadId {
    name.parse().expect("id")
}

fn empty() -> UploadToken {
    UploadToken::default()
}

/// The bytes of a blob (or a range of it), read as `read_as` allows: a stream is collected,
/// a file read at the range.
async fn read(
    store: &dyn BlobStore,
    d: &Digest,
    range: Option<(u64, u64)>,
    read_as: ReadAs,
) -> Vec<u8> {
    match store.read(d, range, read_as).await.expect("read") {
        BlobRead::Stream(s) => collect(s).await,
        BlobRead::Redirect(url) => panic!("a redirect ({url}) where none was allowed"),
        BlobRead::File(f) => {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = f.into_std();
            let (start, end) =
                range.unwrap_or((0, f.metadata().expect("len").len().saturating_sub(1)));
            f.seek(SeekFrom::Start(start)).expect("seek");
            let mut out = vec![0; (end + 1 - start) as usize];
            f.read_exact(&mut out).expect("read");
            out
        }
    }
}

/// The endpoint of the S3 server that tests of the S3 backend run on (`BERTH_TEST_S3`,
/// bucket `berth-test`, which CI starts); `None` skips them, except under CI, where a missing
/// server fails the test instead.
pub fn s3_test_server() -> Option<String> {
    let Ok(endpoint) = std::env::var("BERTH_TEST_S3") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must start an S3 server and set BERTH_TEST_S3"
        );
        eprintln!("BERTH_TEST_S3 is not set: S3 tests skipped");
        return None;
    };
    Some(endpoint)
}

/// A committed blob's bytes, whole, as a stream.
pub async fn read_all_bytes(store: &dyn BlobStore, d: &Digest) -> Vec<u8> {
    read(store, d, None, ReadAs::STREAM).await
}

async fn collect(s: ByteStream<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut s = s;
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.expect("read"));
    }
    out
}

/// Appends `parts` durably at `at`, which must succeed.
async fn grow(
    store: &dyn BlobStore,
    id: &UploadId,
    at: &UploadToken,
    parts: &[&'static [u8]],
) -> UploadToken {
    store
        .append(id, at, body(parts), Durable)
        .await
        .expect("append")
}

/// What the upload standing at `at` holds, learned the way every backend allows: committed
/// under the digest of `expected`, read back whole, and deleted again.
async fn committed_content(
    store: &dyn BlobStore,
    id: &UploadId,
    at: &UploadToken,
    expected: &[u8],
) -> Vec<u8> {
    let digest = Digest::sha256(expected);
    assert_eq!(store.commit(id, at, &digest).await.expect("commit"), at.len);
    let content = read(store, &digest, None, ReadAs::STREAM).await;
    store.delete(&digest).await.expect("delete");
    content
}

/// A committed blob holding `data`.
async fn blob(store: &dyn BlobStore, name: &str, data: &'static [u8]) -> Digest {
    let id = upload(name);
    let at = grow(store, &id, &empty(), &[data]).await;
    let digest = Digest::sha256(data);
    store.commit(&id, &at, &digest).await.expect("commit");
    digest
}

/// `stat`: the size of a committed blob, `None` for an absent one, and upload scratch space
/// is never visible.
pub async fn stat_sees_committed_blobs_only(store: &dyn BlobStore) {
    let data: &[u8] = b"hello, content-addressed world";
    let digest = Digest::sha256(data);
    assert_eq!(store.stat(&digest).await.expect("stat"), None);
    let id = upload("stat-1");
    let at = grow(store, &id, &empty(), &[data]).await;
    assert_eq!(
        store.stat(&digest).await.expect("stat"),
        None,
        "scratch visible"
    );
    store.commit(&id, &at, &digest).await.expect("commit");
    assert_eq!(store.stat(&digest).await.expect("stat"), Some(30));
}

/// `read`: a whole blob or an inclusive range, the same bytes whether a stream or a file.
pub async fn read_answers_whole_blobs_and_ranges_as_stream_or_file(store: &dyn BlobStore) {
    let data: &[u8] = b"hello, content-addressed world";
    let digest = blob(store, "read-1", b"hello, content-addressed world").await;
    assert_eq!(read(store, &digest, None, ReadAs::STREAM).await, data);
    assert_eq!(
        read(store, &digest, None, ReadAs::STREAM_OR_FILE).await,
        data
    );
    for read_as in [ReadAs::STREAM, ReadAs::STREAM_OR_FILE] {
        assert_eq!(
            read(store, &digest, Some((7, 13)), read_as).await,
            b"content"
        );
        assert_eq!(read(store, &digest, Some((29, 29)), read_as).await, b"d");
    }
    assert_eq!(
        collect(store.read_all(&digest).await.expect("read_all")).await,
        data
    );
}

/// `read`: `NotFound` when absent.
pub async fn read_of_an_absent_blob_is_not_found(store: &dyn BlobStore) {
    let absent = Digest::sha256(b"absent");
    for read_as in [ReadAs::STREAM, ReadAs::STREAM_OR_FILE] {
        assert!(matches!(
            store.read(&absent, None, read_as).await,
            Err(StoreError::NotFound)
        ));
    }
}

/// `put`: small content stored under its digest, and stored anew when already there.
pub async fn put_stores_and_stores_anew(store: &dyn BlobStore) {
    let small = Bytes::from_static(b"{\"schemaVersion\":2}");
    let digest = Digest::sha256(&small);
    store.put(&digest, small.clone()).await.expect("put");
    store.put(&digest, small.clone()).await.expect("put again");
    assert_eq!(store.stat(&digest).await.expect("stat"), Some(19));
    assert_eq!(read(store, &digest, None, ReadAs::STREAM).await, small);
}

/// `delete`: removes a committed blob; deleting an absent one is not an error.
pub async fn delete_is_idempotent(store: &dyn BlobStore) {
    let digest = blob(store, "delete-1", b"short-lived").await;
    store.delete(&digest).await.expect("delete");
    assert_eq!(store.stat(&digest).await.expect("stat"), None);
    store.delete(&digest).await.expect("delete again");
}

/// `delete_many`: every blob named is gone, absent ones are no failure, others stay.
pub async fn delete_many_removes_each_and_ignores_absent_ones(store: &dyn BlobStore) {
    let a = blob(store, "many-1", b"first of many").await;
    let b = blob(store, "many-2", b"second of many").await;
    let kept = blob(store, "many-3", b"not named").await;
    let absent = Digest::sha256(b"never stored");
    let failed = store
        .delete_many(&[a.clone(), absent, b.clone()])
        .await
        .expect("delete_many");
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(store.stat(&a).await.expect("stat"), None);
    assert_eq!(store.stat(&b).await.expect("stat"), None);
    assert_eq!(store.stat(&kept).await.expect("stat"), Some(9));
    assert!(store.delete_many(&[]).await.expect("nothing").is_empty());
}

/// `list`: every committed blob with its size and when it was written; no upload.
pub async fn list_shows_committed_blobs_with_sizes_and_times(store: &dyn BlobStore) {
    let before = SystemTime::now() - Duration::from_secs(1);
    let a = blob(store, "list-1", b"first blob").await;
    let small = Bytes::from_static(b"{}");
    let b = Digest::sha256(&small);
    store.put(&b, small).await.expect("put");
    grow(store, &upload("list-2"), &empty(), &[b"in progress"]).await;
    let mut listed: Vec<(Digest, u64)> = store
        .list()
        .try_collect::<Vec<_>>()
        .await
        .expect("list")
        .into_iter()
        .map(|e| {
            assert!(e.modified >= before && e.modified <= SystemTime::now());
            (e.digest, e.size)
        })
        .collect();
    listed.sort();
    let mut expected = vec![(a, 10), (b, 2)];
    expected.sort();
    assert_eq!(listed, expected);
}

/// `uploads`: every upload's scratch space with when it last received bytes; no blob.
pub async fn uploads_lists_scratch_spaces_with_when_they_grew(store: &dyn BlobStore) {
    let before = SystemTime::now() - Duration::from_secs(1);
    blob(store, "uploads-0", b"a blob").await;
    let id = upload("uploads-1");
    grow(store, &id, &empty(), &[b"x"]).await;
    let scratch: Vec<_> = store.uploads().try_collect().await.expect("uploads");
    assert_eq!(scratch.len(), 1, "{scratch:?}");
    assert_eq!(scratch[0].0, id);
    assert!(scratch[0].1 >= before);
    store.abort(&id, None).await.expect("abort");
    let left: Vec<_> = store.uploads().try_collect().await.expect("uploads");
    assert!(left.is_empty(), "{left:?}");
}

/// `purge_temporary`: nothing modified after `before` is removed.
pub async fn purge_temporary_leaves_what_is_newer(store: &dyn BlobStore) {
    let before = SystemTime::now() - Duration::from_secs(1);
    let digest = blob(store, "purge-1", b"kept").await;
    let id = upload("purge-2");
    let at = grow(store, &id, &empty(), &[b"kept too"]).await;
    assert_eq!(store.purge_temporary(before).await.expect("purge"), 0);
    assert_eq!(store.stat(&digest).await.expect("stat"), Some(4));
    assert!(store.holds(&id, &at).await.expect("holds"));
}

/// `append`: an empty token creates the upload; each append returns where it now stands,
/// from which the next one goes on.
pub async fn append_grows_an_upload_from_its_token(store: &dyn BlobStore) {
    let id = upload("grow-1");
    let at = grow(store, &id, &empty(), &[b"hello, ", b"content"]).await;
    assert_eq!(at.len, 14);
    let at = grow(store, &id, &at, &[b"-addressed", b" world"]).await;
    assert_eq!(at.len, 30);
    let content = committed_content(store, &id, &at, b"hello, content-addressed world").await;
    assert_eq!(content, b"hello, content-addressed world");
}

/// `append`: bytes past the token (an append whose token was never saved) are not part of
/// the upload.
pub async fn append_ignores_bytes_past_its_token(store: &dyn BlobStore) {
    let id = upload("past-1");
    let saved = grow(store, &id, &empty(), &[b"hello, "]).await;
    grow(store, &id, &saved, &[b"never recorded"]).await;
    let at = grow(store, &id, &saved, &[b"world"]).await;
    assert_eq!(at.len, 12);
    assert_eq!(
        committed_content(store, &id, &at, b"hello, world").await,
        b"hello, world"
    );
}

/// `append`: all or nothing; after a failing body the upload still stands at the token.
pub async fn a_failed_append_leaves_the_upload_at_its_token(store: &dyn BlobStore) {
    let id = upload("fail-1");
    let at = grow(store, &id, &empty(), &[b"hello"]).await;
    for durability in [Durable, UntilCommit] {
        assert!(matches!(
            store
                .append(&id, &at, failing(b"-garbage"), durability)
                .await,
            Err(StoreError::Body(_))
        ));
    }
    assert!(store.holds(&id, &at).await.expect("holds"));
    let at = grow(store, &id, &at, &[b"!"]).await;
    assert_eq!(
        committed_content(store, &id, &at, b"hello!").await,
        b"hello!"
    );
    // After a failed first append, the upload starts afresh.
    let fresh = upload("fail-2");
    assert!(store
        .append(&fresh, &empty(), failing(b"x"), Durable)
        .await
        .is_err());
    let at = grow(store, &fresh, &empty(), &[b"ok"]).await;
    assert_eq!(committed_content(store, &fresh, &at, b"ok").await, b"ok");
}

/// `append` and `holds`: an upload holding fewer bytes than the token counts is `Offset`;
/// `append` to one that is gone is `NotFound`.
pub async fn append_refuses_a_token_the_upload_cannot_stand_at(store: &dyn BlobStore) {
    let id = upload("refuse-1");
    let at = grow(store, &id, &empty(), &[b"hello"]).await;
    let beyond = UploadToken {
        len: at.len + 6,
        ..at.clone()
    };
    assert!(matches!(
        store.append(&id, &beyond, body(&[b"x"]), Durable).await,
        Err(StoreError::Offset { .. })
    ));
    assert!(matches!(
        store.holds(&id, &beyond).await,
        Err(StoreError::Offset { .. })
    ));
    store.abort(&id, Some(&at)).await.expect("abort");
    assert!(matches!(
        store.append(&id, &at, body(&[b"x"]), Durable).await,
        Err(StoreError::NotFound)
    ));
}

/// `append`: large bodies in frames of any size, at aligned and unaligned offsets, arrive
/// byte for byte; a body failing after megabytes leaves the upload as it was.
pub async fn large_bodies_arrive_byte_for_byte_in_frames_of_any_size(store: &dyn BlobStore) {
    let big: Vec<u8> = (0..3_000_011u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let big = Bytes::from(big);
    let frames = |from: usize, to: usize, fail: bool| -> ByteStream<'static> {
        let mut v: Vec<io::Result<Bytes>> = Vec::new();
        let (mut at, mut k) = (from, 0usize);
        while at < to {
            let n = [1, 4095, 70_001, 1_048_577, 4096, 333][k % 6].min(to - at);
            v.push(Ok(big.slice(at..at + n)));
            at += n;
            k += 1;
        }
        if fail {
            v.push(Err(io::Error::other("client went away")));
        }
        futures::stream::iter(v).boxed()
    };
    let id = upload("large-1");
    let mut at = empty();
    for (from, to) in [
        (0, 1_234_567),
        (1_234_567, 1_234_570),
        (1_234_570, big.len()),
    ] {
        let failed = store
            .append(&id, &at, frames(0, 2_500_000, true), Durable)
            .await;
        assert!(matches!(failed, Err(StoreError::Body(_))));
        at = store
            .append(&id, &at, frames(from, to, false), Durable)
            .await
            .expect("append");
        assert_eq!(at.len, to as u64);
    }
    assert_eq!(committed_content(store, &id, &at, &big).await, big);
}

/// `holds`: true while the upload holds what the token counts, false once committed or
/// aborted; an empty token is always held.
pub async fn holds_until_commit_or_abort(store: &dyn BlobStore) {
    let (a, b) = (upload("holds-1"), upload("holds-2"));
    assert!(store.holds(&a, &empty()).await.expect("holds"));
    let at = grow(store, &a, &empty(), &[b"abc"]).await;
    assert!(store.holds(&a, &at).await.expect("holds"));
    store
        .commit(&a, &at, &Digest::sha256(b"abc"))
        .await
        .expect("commit");
    assert!(!store.holds(&a, &at).await.expect("holds"));
    let at = grow(store, &b, &empty(), &[b"abc"]).await;
    store.abort(&b, Some(&at)).await.expect("abort");
    assert!(!store.holds(&b, &at).await.expect("holds"));
}

/// `read_upload`: the bytes the token counts (none past it), or `None` from a backend that
/// cannot read an upload before its commit.
pub async fn read_upload_answers_what_the_token_counts(store: &dyn BlobStore) {
    let id = upload("reread-1");
    let at = grow(store, &id, &empty(), &[b"hello"]).await;
    grow(store, &id, &at, &[b" and more"]).await;
    if let Some(s) = store.read_upload(&id, &at).await.expect("read_upload") {
        assert_eq!(collect(s).await, b"hello");
    }
    if let Some(s) = store.read_upload(&id, &empty()).await.expect("read_upload") {
        assert_eq!(collect(s).await, b"");
    }
}

/// `commit`: the upload becomes readable under the digest, its scratch space is removed,
/// and the size is returned.
pub async fn commit_makes_the_upload_a_blob_and_removes_it(store: &dyn BlobStore) {
    let id = upload("commit-1");
    let at = grow(store, &id, &empty(), &[b"hello"]).await;
    let digest = Digest::sha256(b"hello");
    assert_eq!(store.commit(&id, &at, &digest).await.expect("commit"), 5);
    assert_eq!(read(store, &digest, None, ReadAs::STREAM).await, b"hello");
    assert!(!store.holds(&id, &at).await.expect("holds"));
    let scratch: Vec<_> = store.uploads().try_collect().await.expect("uploads");
    assert!(scratch.is_empty(), "{scratch:?}");
    assert!(matches!(
        store.commit(&id, &at, &digest).await,
        Err(StoreError::NotFound)
    ));
}

/// `commit`: bytes past the token never become part of the blob; an upload holding fewer
/// than it counts is `Offset`.
pub async fn commit_takes_exactly_what_the_token_counts(store: &dyn BlobStore) {
    let id = upload("exact-1");
    let at = grow(store, &id, &empty(), &[b"hello"]).await;
    grow(store, &id, &at, &[b" plus bytes never recorded"]).await;
    let beyond = UploadToken {
        len: 99,
        ..at.clone()
    };
    let short = Digest::sha256(b"hello");
    assert!(matches!(
        store.commit(&id, &beyond, &short).await,
        Err(StoreError::Offset { .. })
    ));
    assert_eq!(store.commit(&id, &at, &short).await.expect("commit"), 5);
    assert_eq!(read(store, &short, None, ReadAs::STREAM).await, b"hello");
}

/// `commit`: a blob already there is stored anew from the upload; bytes appended
/// `UntilCommit` reach it.
pub async fn commit_stores_an_existing_blob_anew(store: &dyn BlobStore) {
    let data: &'static [u8] = b"the same content twice";
    let digest = blob(store, "anew-1", data).await;
    let id = upload("anew-2");
    let at = store
        .append(&id, &empty(), body(&[data]), UntilCommit)
        .await
        .expect("append");
    assert_eq!(store.commit(&id, &at, &digest).await.expect("commit"), 22);
    assert!(!store.holds(&id, &at).await.expect("holds"));
    assert_eq!(read(store, &digest, None, ReadAs::STREAM).await, data);
}

/// `abort`: removes the scratch space; an absent upload is fine; an empty token then starts
/// the upload afresh.
pub async fn abort_is_idempotent_and_an_empty_token_starts_again(store: &dyn BlobStore) {
    let id = upload("abort-1");
    let at = grow(store, &id, &empty(), &[b"abc"]).await;
    store.abort(&id, Some(&at)).await.expect("abort");
    store.abort(&id, Some(&at)).await.expect("abort again");
    store.abort(&id, None).await.expect("abort without a token");
    assert!(!store.holds(&id, &at).await.expect("holds"));
    let at = grow(store, &id, &empty(), &[b"x"]).await;
    assert_eq!(at.len, 1);
    assert_eq!(committed_content(store, &id, &at, b"x").await, b"x");
}
