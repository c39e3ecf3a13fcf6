//! The contract every [`BlobStore`] backend passes: one check per sentence of the trait's
//! method docs. Backends call [`run`] from their own tests.

use crate::Durability::{Durable, UntilCommit};
use crate::{BlobRead, BlobStore, ByteStream, ReadAs, SavedProgress, StoreError};
use berth_oci::{Digest, UploadId};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::io;
use std::time::{Duration, SystemTime};

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

async fn collect(s: ByteStream<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut s = s;
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.expect("read"));
    }
    out
}

fn saved(from: u64, len: u64, check: &[u8]) -> Option<SavedProgress> {
    Some(SavedProgress {
        from,
        len,
        check: check.to_vec(),
    })
}

/// An upload's saved progress, which must be readable.
async fn progress_of(store: &dyn BlobStore, id: &UploadId) -> Option<SavedProgress> {
    store.progress(id).await.expect("progress")
}

/// The progress promises of `append_saving` and `progress`.
async fn saving(store: &dyn BlobStore) {
    let id: UploadId = "contract-progress".parse().expect("id");
    let check = |c: &'static [u8]| -> crate::CheckFn<'static> { Box::new(move || c.to_vec()) };
    // A durable append in any case.
    assert_eq!(
        store
            .append_saving(&id, 0, body(&[b"hello "]), check(b"c6"))
            .await
            .expect("append_saving"),
        6
    );
    assert_eq!(store.upload_len(&id).await.expect("len"), 6);
    if !store.keeps_progress() {
        assert_eq!(progress_of(store, &id).await, None);
        store.abort(&id).await.expect("abort");
        return;
    }
    // Saved with the bytes: where the append started and ended, and the check.
    assert_eq!(progress_of(store, &id).await, saved(0, 6, b"c6"));
    store
        .append_saving(&id, 6, body(&[b"world"]), check(b"c11"))
        .await
        .expect("append_saving");
    assert_eq!(progress_of(store, &id).await, saved(6, 11, b"c11"));
    // A plain append after its end leaves it (still true of the bytes it counts).
    store
        .append(&id, 11, body(&[b"!"]), Durable)
        .await
        .expect("append");
    assert_eq!(progress_of(store, &id).await, saved(6, 11, b"c11"));
    // An append that replaces bytes it counts cuts it back to where it started (at most
    // the append's offset), with no check: only that much stays vouched for.
    store
        .append(&id, 8, body(&[b"x"]), Durable)
        .await
        .expect("append");
    assert_eq!(progress_of(store, &id).await, saved(6, 6, b""));
    store
        .append(&id, 4, body(&[b"o world"]), Durable)
        .await
        .expect("append");
    assert_eq!(progress_of(store, &id).await, saved(4, 4, b""));
    // A failed append saves nothing.
    store
        .append_saving(&id, 9, body(&[b"y"]), check(b"c10"))
        .await
        .expect("append_saving");
    assert!(matches!(
        store
            .append_saving(&id, 10, failing(b"zz"), check(b"never"))
            .await,
        Err(StoreError::Body(_))
    ));
    assert_eq!(store.upload_len(&id).await.expect("len"), 10);
    assert_eq!(progress_of(store, &id).await, saved(9, 10, b"c10"));
    store.abort(&id).await.expect("abort");
    assert!(matches!(
        store.progress(&id).await,
        Err(StoreError::NotFound)
    ));
}

/// Runs every contract check against `store`, panicking on the first broken promise.
pub async fn run(store: &dyn BlobStore) {
    saving(store).await;
    let id: UploadId = "contract-upload-1".parse().expect("id");
    let data: &[u8] = b"hello, content-addressed world";
    let digest = Digest::sha256(data);

    // stat: absent blob is None; upload scratch space is never visible.
    assert_eq!(store.stat(&digest).await.expect("stat"), None);
    assert!(matches!(
        store.upload_len(&id).await,
        Err(StoreError::NotFound)
    ));

    // append: returns the new length; offsets beyond what is held are refused.
    assert_eq!(
        store
            .append(&id, 0, body(&[b"hello, ", b"content"]), Durable)
            .await
            .expect("append"),
        14
    );
    assert!(matches!(
        store.append(&id, 20, body(&[b"x"]), Durable).await,
        Err(StoreError::Offset {
            expected: 20,
            actual: 14
        })
    ));
    assert_eq!(
        store.stat(&digest).await.expect("stat"),
        None,
        "partial upload visible"
    );

    // append: all or nothing when the body fails.
    assert!(matches!(
        store.append(&id, 14, failing(b"-garbage"), Durable).await,
        Err(StoreError::Body(_))
    ));
    assert_eq!(store.upload_len(&id).await.expect("len"), 14);

    // append: bytes past the offset are discarded first.
    assert_eq!(
        store
            .append(&id, 7, body(&[b"content-addressed world"]), Durable)
            .await
            .expect("append"),
        30
    );
    assert_eq!(
        collect(store.read_upload(&id, 0, 30).await.expect("read_upload")).await,
        data
    );
    assert_eq!(
        collect(store.read_upload(&id, 0, 5).await.expect("read_upload")).await,
        b"hello"
    );
    assert_eq!(
        collect(store.read_upload(&id, 7, 12).await.expect("read_upload")).await,
        b"conte"
    );

    // commit: readable under the digest, scratch space removed.
    assert_eq!(store.commit(&id, &digest, 30).await.expect("commit"), 30);
    assert_eq!(store.stat(&digest).await.expect("stat"), Some(30));
    assert!(matches!(
        store.upload_len(&id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(read(store, &digest, None, ReadAs::Stream).await, data);
    assert_eq!(
        read(store, &digest, Some((7, 13)), ReadAs::Stream).await,
        b"content"
    );
    // A reader that takes files may get one: the same bytes, whichever it is.
    assert_eq!(
        read(store, &digest, Some((7, 13)), ReadAs::StreamOrFile).await,
        b"content"
    );

    // commit: bytes past `len` never become visible; fewer than `len` is refused.
    let id2: UploadId = "contract-upload-2".parse().expect("id");
    let short = Digest::sha256(b"hello");
    store
        .append(
            &id2,
            0,
            body(&[b"hello", b" plus bytes never recorded"]),
            Durable,
        )
        .await
        .expect("append");
    assert!(matches!(
        store.commit(&id2, &short, 99).await,
        Err(StoreError::Offset { expected: 99, .. })
    ));
    assert_eq!(store.commit(&id2, &short, 5).await.expect("commit"), 5);
    assert_eq!(read(store, &short, None, ReadAs::Stream).await, b"hello");
    store.delete(&short).await.expect("delete");

    // commit: an existing blob is stored anew, from the upload, which is then gone.
    // (UntilCommit: bytes committed in the same breath need not be durable on their own.)
    store
        .append(&id, 0, body(&[data]), UntilCommit)
        .await
        .expect("append");
    assert_eq!(store.commit(&id, &digest, 30).await.expect("commit"), 30);
    assert!(matches!(
        store.upload_len(&id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(read(store, &digest, None, ReadAs::Stream).await, data);

    // put: stores anew when the blob is there; list shows committed blobs with sizes.
    let small = Bytes::from_static(b"{\"schemaVersion\":2}");
    let small_digest = Digest::sha256(&small);
    store.put(&small_digest, small.clone()).await.expect("put");
    store
        .put(&small_digest, small.clone())
        .await
        .expect("put again");
    let mut listed: Vec<(Digest, u64)> = store
        .list()
        .try_collect::<Vec<_>>()
        .await
        .expect("list")
        .into_iter()
        .map(|e| {
            assert!(e.modified <= SystemTime::now(), "written in the past");
            (e.digest, e.size)
        })
        .collect();
    listed.sort();
    let mut expected = vec![
        (digest.clone(), 30),
        (small_digest.clone(), small.len() as u64),
    ];
    expected.sort();
    assert_eq!(listed, expected);

    // read of an absent blob is NotFound; delete is idempotent.
    let absent = Digest::sha256(b"absent");
    assert!(matches!(
        store.read(&absent, None, ReadAs::StreamOrFile).await,
        Err(StoreError::NotFound)
    ));
    store.delete(&small_digest).await.expect("delete");
    store.delete(&small_digest).await.expect("delete again");
    assert_eq!(store.stat(&small_digest).await.expect("stat"), None);

    // append: large bodies in frames of any size, at aligned and unaligned offsets, arrive
    // byte for byte; a body failing after megabytes still leaves the upload as it was.
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
    let id3: UploadId = "contract-upload-3".parse().expect("id");
    for (from, to) in [
        (0, 1_234_567),
        (1_234_567, 1_234_570),
        (1_234_570, big.len()),
    ] {
        assert_eq!(
            store
                .append(&id3, from as u64, frames(from, to, false), Durable)
                .await
                .expect("append"),
            to as u64
        );
        assert!(matches!(
            store
                .append(&id3, to as u64, frames(0, 2_500_000, true), Durable)
                .await,
            Err(StoreError::Body(_))
        ));
        assert_eq!(store.upload_len(&id3).await.expect("len"), to as u64);
    }
    assert_eq!(
        collect(
            store
                .read_upload(&id3, 0, big.len() as u64)
                .await
                .expect("read")
        )
        .await,
        big
    );
    store.abort(&id3).await.expect("abort");

    // abort: removes scratch space; absent upload is fine. uploads lists scratch spaces
    // (never committed blobs) with when they last received bytes.
    let before = SystemTime::now() - Duration::from_secs(1);
    store
        .append(&id, 0, body(&[b"x"]), Durable)
        .await
        .expect("append");
    let scratch: Vec<_> = store.uploads().try_collect().await.expect("uploads");
    assert_eq!(scratch.len(), 1, "{scratch:?}");
    assert_eq!(scratch[0].0, id);
    assert!(scratch[0].1 >= before);
    store.abort(&id).await.expect("abort");
    store.abort(&id).await.expect("abort again");
    assert!(matches!(
        store.upload_len(&id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.append(&id, 1, body(&[b"x"]), Durable).await,
        Err(StoreError::NotFound)
    ));
    // append at offset 0 recreates scratch space a crash took before anything was stored.
    assert_eq!(
        store
            .append(&id, 0, body(&[b"x"]), Durable)
            .await
            .expect("append"),
        1
    );
    assert_eq!(store.upload_len(&id).await.expect("len"), 1);
    store.abort(&id).await.expect("abort");
    let left: Vec<_> = store.uploads().try_collect().await.expect("uploads");
    assert!(left.is_empty());
    // purge_temporary leaves nothing newer than it is told.
    assert_eq!(store.purge_temporary(before).await.expect("purge"), 0);
}
