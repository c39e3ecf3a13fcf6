//! The filesystem blob store, the default backend.
//!
//! Layout under the root directory:
//!
//! ```text
//! <root>/blobs/<algorithm>/<first two hex>/<hex>   committed blobs, immutable
//! <root>/uploads/<first two of id>/<upload id>      scratch space of an upload session
//! <root>/tmp/<random>                              small puts on their way to blobs/
//! ```
//!
//! All three live on one filesystem so that a commit is a rename. The order of a commit is
//! the data-safety invariant: data fsynced (at the end of a durable append, or by the commit
//! when an `UntilCommit` append or a truncation left something unsynced) → rename into
//! `blobs/` → fsync of the directory. A reader therefore sees no blob or a whole one, and a
//! crash after the commit returns loses nothing.
//!
//! An upload's token counts its bytes and carries no progress of its own: the file is the
//! progress. An append or commit at a token shorter than the file (an append whose token the
//! caller never saved) cuts the file back to it first.

use crate::{
    BlobEntry, BlobRead, BlobStore, ByteStream, Durability, LocalFile, ReadAs, Result, StoreError,
    UploadToken,
};
use async_trait::async_trait;
use berth_oci::{Algorithm, Digest, UploadId};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::task::spawn_blocking;

/// Appends are gathered into buffers this large before a write: one blocking-pool hop per
/// MiB rather than one per network frame.
const WRITE_BUF: usize = 1 << 20;
/// Direct I/O wants the buffer address, the length and the file offset aligned to the
/// device's logical block; 4 KiB covers every common device.
const ALIGN: usize = 4096;
/// Write buffers that may exist at once, however many uploads run: memory must not grow with
/// concurrency. An append that finds none free writes its chunks as they come.
const WRITE_BUFFERS: usize = 16;
/// Bytes of a blob about to be sent that the kernel is asked to read ahead at once.
const READAHEAD: u64 = 16 << 20;
/// Reads are served in chunks this large (fewer syscalls and frames than the 8 KiB default)...
const READ_BUF: usize = 256 << 10;
/// ...as long as fewer than this many are in flight, waiting to be sent; beyond that, in
/// chunks of `READ_BUF_SMALL`, so that memory stays bounded however many clients pull.
const READ_BUFS: usize = 32;
const READ_BUF_SMALL: usize = 16 << 10;

#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
    buffers: Arc<BufferPool>,
    reads: Arc<tokio::sync::Semaphore>,
    /// Sessions that an `UntilCommit` append wrote to since their last commit or abort: their
    /// commit must sync the data. Every other session's bytes were synced by the append that
    /// wrote them (or by the rollback of a failed one), so its commit skips the sync, which
    /// costs a device flush even with nothing to write (ext4 without a journal issues one for
    /// every fsync). Held in memory only: such an append and its commit are one request, and
    /// a session whose process died between the two has its unsynced bytes beyond the
    /// recorded length, which the commit cuts off and then syncs.
    unsynced: Arc<Mutex<HashSet<UploadId>>>,
}

/// A write buffer whose start is aligned for direct I/O. It is carved out of a plain `Vec`
/// (one block larger than needed) rather than allocated with a custom layout: no unsafe code.
#[derive(Debug)]
struct AlignedBuf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new() -> AlignedBuf {
        let mem = vec![0u8; WRITE_BUF + ALIGN];
        let start = mem.as_ptr().align_offset(ALIGN).min(ALIGN);
        AlignedBuf { mem, start, len: 0 }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn as_slice(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }

    /// Copies from `data` until the buffer holds `limit` bytes; returns what did not fit.
    fn fill<'a>(&mut self, data: &'a [u8], limit: usize) -> &'a [u8] {
        let n = data.len().min(limit.saturating_sub(self.len));
        let at = self.start + self.len;
        self.mem[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        &data[n..]
    }
}

/// The write buffers: at most [`WRITE_BUFFERS`] exist; a returned one is kept for the next
/// append, which spares the page faults of fresh memory.
#[derive(Debug, Default)]
struct BufferPool(Mutex<PoolState>);

#[derive(Debug, Default)]
struct PoolState {
    free: Vec<AlignedBuf>,
    created: usize,
}

impl BufferPool {
    /// A buffer, unless all of them are lent out.
    fn try_take(self: &Arc<Self>) -> Option<Lent> {
        let mut state = self.0.lock().ok()?;
        let buf = match state.free.pop() {
            Some(b) => b,
            None if state.created < WRITE_BUFFERS => {
                state.created += 1;
                AlignedBuf::new()
            }
            None => return None,
        };
        Some(Lent {
            buf,
            pool: Arc::clone(self),
        })
    }
}

/// A buffer lent by the pool, returned (emptied) when dropped.
#[derive(Debug)]
struct Lent {
    buf: AlignedBuf,
    pool: Arc<BufferPool>,
}

impl Drop for Lent {
    fn drop(&mut self) {
        let mut buf = std::mem::replace(
            &mut self.buf,
            AlignedBuf {
                mem: Vec::new(),
                start: 0,
                len: 0,
            },
        );
        buf.len = 0;
        if let Ok(mut state) = self.pool.0.lock() {
            state.free.push(buf);
        }
    }
}

/// How many bytes the buffer starting at file offset `pos` should gather: up to the next
/// aligned offset when `pos` is unaligned (a short write through the page cache), so that
/// every later buffer starts aligned and goes out with direct I/O.
fn fill_limit(pos: u64) -> usize {
    match (pos % ALIGN as u64) as usize {
        0 => WRITE_BUF,
        r => ALIGN - r,
    }
}

/// Writes shorter than this go through the page cache: copying a few KiB costs less than a
/// second descriptor and a synchronous device write.
const DIRECT_MIN: usize = 64 << 10;

/// The descriptors of an upload file being appended to. Whole aligned blocks of large writes
/// go through `direct` (O_DIRECT, opened on first use): on the machines measured, copying
/// into the page cache cost more CPU than hashing the bytes, and the data must reach the
/// disk before the append returns anyway. Unaligned heads and tails go through `plain`.
struct Writer {
    path: PathBuf,
    plain: File,
    direct: Direct,
}

enum Direct {
    Unopened,
    Open(File),
    /// The filesystem (tmpfs) or device refuses direct I/O here: the page cache it is.
    Refused,
}

impl Writer {
    fn write_at(&mut self, buf: &[u8], at: u64) -> io::Result<()> {
        let mut direct_len = 0;
        if buf.len() >= DIRECT_MIN && at.is_multiple_of(ALIGN as u64) {
            if let Direct::Unopened = self.direct {
                self.direct = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&self.path)
                    .map_or(Direct::Refused, Direct::Open);
            }
            if let Direct::Open(d) = &self.direct {
                direct_len = buf.len() / ALIGN * ALIGN;
                match d.write_all_at(&buf[..direct_len], at) {
                    // A device with larger blocks than ALIGN.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        self.direct = Direct::Refused;
                        direct_len = 0;
                    }
                    r => r?,
                }
            }
        }
        self.plain
            .write_all_at(&buf[direct_len..], at + direct_len as u64)
    }
}

type WriteTask = tokio::task::JoinHandle<(Writer, Option<Lent>, io::Result<()>)>;

fn writer_lost() -> io::Error {
    io::Error::other("upload writer lost")
}

/// Streams an append's bytes into the file: gathered in lent aligned buffers, one written on
/// the blocking pool while the next fills; chunk by chunk when the pool has none to lend.
struct Appender {
    pool: Arc<BufferPool>,
    /// `None` while a write is in flight.
    writer: Option<Writer>,
    in_flight: Option<WriteTask>,
    /// The buffer filling, if one was lent.
    cur: Option<Lent>,
    /// The file offset of the next byte handed to a write (where `cur` starts).
    pos: u64,
}

impl Appender {
    /// Takes the next chunk of the body.
    async fn push(&mut self, data: Bytes) -> io::Result<()> {
        let mut rest: &[u8] = &data;
        while !rest.is_empty() {
            if self.cur.is_none() {
                self.cur = self.pool.try_take();
            }
            let Some(buf) = self.cur.as_mut() else {
                // Every buffer is lent out: write what is left of this chunk as it is.
                let chunk = data.slice(data.len() - rest.len()..);
                return self.write(None, Some(chunk)).await;
            };
            rest = buf.buf.fill(rest, fill_limit(self.pos));
            if buf.buf.len() == fill_limit(self.pos) {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Hands the filling buffer to a write, and keeps filling another one if there is one.
    async fn flush(&mut self) -> io::Result<()> {
        match self.cur.take() {
            Some(buf) if buf.buf.len() > 0 => self.write(Some(buf), None).await,
            other => {
                self.cur = other;
                Ok(())
            }
        }
    }

    /// Starts writing a full buffer, or a chunk as it came, once the previous write is done.
    async fn write(&mut self, buf: Option<Lent>, chunk: Option<Bytes>) -> io::Result<()> {
        let spare = self.settle().await?;
        let len = buf.as_ref().map_or(0, |b| b.buf.len()) + chunk.as_ref().map_or(0, Bytes::len);
        let at = self.pos;
        self.pos += len as u64;
        let mut w = self.writer.take().ok_or_else(writer_lost)?;
        self.in_flight = Some(spawn_blocking(move || {
            let r = match (&buf, &chunk) {
                (Some(b), _) => w.write_at(b.buf.as_slice(), at),
                (None, Some(c)) => w.plain.write_all_at(c, at),
                (None, None) => Ok(()),
            };
            (w, buf, r)
        }));
        self.cur = spare.or_else(|| self.pool.try_take());
        if self.cur.is_none() {
            // Nothing to fill meanwhile: wait for this write.
            self.cur = self.settle().await?;
        }
        Ok(())
    }

    /// Waits for the write in flight, if any; returns its buffer, emptied, for reuse.
    async fn settle(&mut self) -> io::Result<Option<Lent>> {
        let Some(task) = self.in_flight.take() else {
            return Ok(None);
        };
        let (w, mut buf, result) = task.await.map_err(io::Error::other)?;
        self.writer = Some(w);
        result?;
        if let Some(b) = buf.as_mut() {
            b.buf.len = 0;
        }
        Ok(buf)
    }

    /// Waits for the last write; returns the writer (for the fsync or the rollback), the new
    /// length, and the last write's outcome.
    async fn stop(mut self) -> (Option<Writer>, u64, io::Result<()>) {
        let r = self.settle().await.map(drop);
        (self.writer.take(), self.pos, r)
    }
}

impl FsStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<FsStore> {
        let root = root.into();
        // Prefix directories (blobs/<alg>/<2 hex>/, uploads/<2 of id>/) are made when first
        // needed, not here: making all 768 would cost start-up more than it saves.
        for dir in ["tmp", "uploads", "blobs/sha256", "blobs/sha512"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        Ok(FsStore {
            root,
            buffers: Arc::default(),
            reads: Arc::new(tokio::sync::Semaphore::new(READ_BUFS)),
            unsynced: Arc::default(),
        })
    }

    /// The set of sessions with unsynced appends. A poisoned lock still holds a usable set:
    /// an entry too many only costs a sync.
    fn unsynced_set(&self) -> std::sync::MutexGuard<'_, HashSet<UploadId>> {
        self.unsynced.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    fn upload_path(&self, id: &UploadId) -> PathBuf {
        let id = id.as_str();
        self.root
            .join("uploads")
            .join(&id[..2.min(id.len())])
            .join(id)
    }
}

fn not_found(e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::NotFound {
        StoreError::NotFound
    } else {
        StoreError::from(e)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    spawn_blocking(f).await.map_err(io::Error::other)?
}

/// Asks the kernel to read `len` bytes from `start` into the page cache in the background.
fn readahead_hint(file: &File, start: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(start), Ok(len)) = (i64::try_from(start), i64::try_from(len)) else {
        return;
    };
    // SAFETY: posix_fadvise reads no memory of ours; the descriptor is open for the call.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), start, len, libc::POSIX_FADV_WILLNEED);
    }
}

/// fsync of a directory, so that a rename or create inside it survives a crash.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates (or empties) an upload's file, and its prefix directory the first time (creating
/// it on every upload would queue concurrent uploads on the parent directory's lock).
fn create_upload_file(path: &Path) -> io::Result<File> {
    match File::create(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
                if let Some(uploads) = dir.parent() {
                    sync_dir(uploads)?;
                }
            }
            File::create(path)
        }
        other => other,
    }
}

/// The files in the prefix directories under `dir` (`dir/ab/<name>`), with their metadata,
/// streamed one prefix directory at a time: a store may hold millions. A file removed while
/// it is listed is left out.
fn prefixed_files(dir: PathBuf) -> BoxStream<'static, io::Result<(String, std::fs::Metadata)>> {
    futures::stream::once(blocking(move || prefix_dirs(&dir)))
        .flat_map(each)
        .then(|dir: io::Result<PathBuf>| async move {
            match dir {
                Ok(dir) => blocking(move || files_in(&dir)).await,
                Err(e) => Err(e),
            }
        })
        .flat_map(each)
        .boxed()
}

/// The items of a list read in one go, or its failure, as a stream.
fn each<T: Send + 'static>(list: io::Result<Vec<T>>) -> BoxStream<'static, io::Result<T>> {
    match list {
        Ok(items) => futures::stream::iter(items.into_iter().map(Ok)).boxed(),
        Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
    }
}

/// The entries of `dir` (none when it does not exist).
fn entries(dir: &Path) -> io::Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
        Ok(rd) => rd.collect(),
    }
}

/// The subdirectories of `dir`.
fn prefix_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in entries(dir)? {
        if entry.file_type()?.is_dir() {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// The files of one prefix directory, with their metadata.
fn files_in(dir: &Path) -> io::Result<Vec<(String, std::fs::Metadata)>> {
    let mut out = Vec::new();
    for entry in entries(dir)? {
        let meta = match entry.metadata() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            other => other?,
        };
        if let (true, Some(name)) = (meta.is_file(), entry.file_name().to_str()) {
            out.push((name.to_owned(), meta));
        }
    }
    Ok(out)
}

/// Renames `from` to `to` durably, replacing a file there (content-addressed: the same bytes,
/// stored anew after any collection's mark).
fn install(from: &Path, to: &Path) -> io::Result<()> {
    let parent = to
        .parent()
        .ok_or_else(|| io::Error::other("blob path has no parent"))?;
    // Rename first and make the prefix directory only when it is missing: `mkdir` on every
    // commit would take the parent directory's lock, which concurrent commits queue on.
    if let Err(e) = std::fs::rename(from, to) {
        if e.kind() != io::ErrorKind::NotFound || !from.exists() {
            return Err(e);
        }
        std::fs::create_dir_all(parent)?;
        if let Some(grandparent) = parent.parent() {
            sync_dir(grandparent)?;
        }
        std::fs::rename(from, to)?;
    }
    sync_dir(parent)
}

/// Opens a file to read the inclusive `range` of it (all of it when `None`): the file, where
/// the part starts, and its length.
fn open_span(path: &Path, range: Option<(u64, u64)>) -> io::Result<(File, u64, u64)> {
    let file = File::open(path)?;
    let (start, len) = match range {
        Some((start, end)) => (start, end - start + 1),
        None => (0, file.metadata()?.len()),
    };
    Ok((file, start, len))
}

/// A read chunk holding one of the store's read permits until the server has sent it.
struct Held {
    data: Vec<u8>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// Streams a file, whole or the inclusive range `start..=end`, read on the blocking pool
/// straight into the chunks that are sent (no intermediate buffer).
async fn open_range(
    path: PathBuf,
    range: Option<(u64, u64)>,
    permits: Arc<tokio::sync::Semaphore>,
) -> Result<ByteStream<'static>> {
    let (file, len) = blocking(move || {
        let (mut file, start, len) = open_span(&path, range)?;
        file.seek(SeekFrom::Start(start))?;
        Ok((file, len))
    })
    .await
    .map_err(not_found)?;
    let chunks = futures::stream::try_unfold((file, len), move |(file, left)| {
        let permits = Arc::clone(&permits);
        async move {
            if left == 0 {
                return Ok(None);
            }
            let permit = permits.try_acquire_owned().ok();
            let size = if permit.is_some() {
                READ_BUF
            } else {
                READ_BUF_SMALL
            };
            let size = size.min(usize::try_from(left).unwrap_or(usize::MAX));
            let (file, data) = blocking(move || {
                let mut data = Vec::with_capacity(size);
                (&file).take(size as u64).read_to_end(&mut data)?;
                Ok((file, data))
            })
            .await?;
            if data.len() != size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "blob shorter than its size",
                ));
            }
            let chunk = match permit {
                Some(p) => Bytes::from_owner(Held { data, _permit: p }),
                None => Bytes::from(data),
            };
            Ok(Some((chunk, (file, left - size as u64))))
        }
    });
    Ok(chunks.boxed())
}

#[async_trait]
impl BlobStore for FsStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read(
        &self,
        digest: &Digest,
        range: Option<(u64, u64)>,
        read_as: ReadAs,
    ) -> Result<BlobRead> {
        let path = self.blob_path(digest);
        if !read_as.file {
            let stream = open_range(path, range, Arc::clone(&self.reads)).await?;
            return Ok(BlobRead::Stream(stream));
        }
        let file = blocking(move || {
            let (file, start, len) = open_span(&path, range)?;
            // The first pull after a push finds the blob on disk (uploads bypass the page
            // cache): start reading the first window now, in the background, so the sender
            // does not wait for the disk chunk by chunk. Advice only; failure changes nothing.
            readahead_hint(&file, start, len.min(READAHEAD));
            Ok(file)
        })
        .await
        .map_err(not_found)?;
        Ok(BlobRead::File(LocalFile::new(file)))
    }

    async fn put(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        let target = self.blob_path(digest);
        let tmp = self.root.join("tmp").join(uuid_like());
        Ok(blocking(move || {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            install(&tmp, &target)
        })
        .await?)
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn list(&self) -> BoxStream<'_, Result<BlobEntry>> {
        let root = self.root.join("blobs");
        let algorithms = futures::stream::iter([Algorithm::Sha256, Algorithm::Sha512]);
        algorithms
            .flat_map(move |alg| {
                prefixed_files(root.join(alg.as_str())).map(move |file| {
                    let (name, meta) = file?;
                    // Anything else in there is not ours to count (or to delete).
                    let Ok(digest) = format!("{}:{name}", alg.as_str()).parse::<Digest>() else {
                        return Ok(None);
                    };
                    let modified = meta.modified()?;
                    Ok(Some(BlobEntry {
                        digest,
                        size: meta.len(),
                        modified,
                    }))
                })
            })
            .filter_map(|r: Result<Option<BlobEntry>>| async move { r.transpose() })
            .boxed()
    }

    fn uploads(&self) -> BoxStream<'_, Result<(UploadId, SystemTime)>> {
        prefixed_files(self.root.join("uploads"))
            .map(|file| {
                let (name, meta) = file?;
                let Ok(id) = name.parse::<UploadId>() else {
                    return Ok(None);
                };
                Ok(Some((id, meta.modified()?)))
            })
            .filter_map(|r: Result<Option<(UploadId, SystemTime)>>| async move { r.transpose() })
            .boxed()
    }

    async fn purge_temporary(&self, before: SystemTime) -> Result<u64> {
        let tmp = self.root.join("tmp");
        Ok(blocking(move || {
            let mut removed = 0;
            for entry in std::fs::read_dir(&tmp)? {
                let entry = entry?;
                // A put renames its temporary file away at any moment.
                let meta = match entry.metadata() {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    other => other?,
                };
                if meta.is_file() && meta.modified()? < before {
                    match std::fs::remove_file(entry.path()) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                        _ => removed += 1,
                    }
                }
            }
            Ok(removed)
        })
        .await?)
    }

    async fn append(
        &self,
        id: &UploadId,
        at: &UploadToken,
        body: ByteStream<'_>,
        durability: Durability,
    ) -> Result<UploadToken> {
        if durability == Durability::UntilCommit {
            // Before the first byte: a failure part-way may leave bytes behind unsynced.
            self.unsynced_set().insert(id.clone());
        }
        let offset = at.len;
        let writer = self.open_upload(id, offset).await?;
        let (w, end, failure) = self.stream_into(writer, offset, body).await;
        let w = w.ok_or_else(writer_lost)?;
        let len = blocking(move || settle_append(w, offset, end, failure, durability)).await??;
        Ok(UploadToken {
            len,
            progress: Vec::new(),
        })
    }

    async fn holds(&self, id: &UploadId, at: &UploadToken) -> Result<bool> {
        if at.len == 0 {
            return Ok(true);
        }
        match tokio::fs::metadata(self.upload_path(id)).await {
            Ok(m) if m.len() < at.len => Err(StoreError::Offset {
                expected: at.len,
                actual: m.len(),
            }),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn read_upload(
        &self,
        id: &UploadId,
        at: &UploadToken,
    ) -> Result<Option<ByteStream<'static>>> {
        if at.len == 0 {
            return Ok(Some(futures::stream::empty().boxed()));
        }
        let range = Some((0, at.len - 1));
        let stream = open_range(self.upload_path(id), range, Arc::clone(&self.reads)).await?;
        Ok(Some(stream))
    }

    async fn commit(&self, id: &UploadId, at: &UploadToken, digest: &Digest) -> Result<u64> {
        let from = self.upload_path(id);
        let to = self.blob_path(digest);
        let unsynced = self.unsynced_set().contains(id);
        let len = at.len;
        let committed = blocking(move || {
            let f = OpenOptions::new().write(true).open(&from)?;
            let actual = f.metadata()?.len();
            if actual < len {
                return Ok(Err(StoreError::Offset {
                    expected: len,
                    actual,
                }));
            }
            if actual > len {
                f.set_len(len)?;
            }
            // The data (and a cut length) before the name.
            if unsynced || actual > len {
                f.sync_data()?;
            }
            drop(f);
            install(&from, &to)?;
            Ok(Ok(len))
        })
        .await
        .map_err(not_found)?;
        if committed.is_ok() {
            self.unsynced_set().remove(id);
        }
        committed
    }

    async fn abort(&self, id: &UploadId, _: Option<&UploadToken>) -> Result<()> {
        self.unsynced_set().remove(id);
        match tokio::fs::remove_file(self.upload_path(id)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

impl FsStore {
    /// The upload file opened to append at `offset`: created when the upload holds nothing
    /// yet, cut back to `offset` when an append whose token was never saved ran past it.
    async fn open_upload(&self, id: &UploadId, offset: u64) -> Result<Writer> {
        let path = self.upload_path(id);
        blocking(move || {
            let plain = match OpenOptions::new().write(true).open(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound && offset == 0 => {
                    create_upload_file(&path)?
                }
                other => other?,
            };
            let actual = plain.metadata()?.len();
            if actual < offset {
                return Ok(Err(StoreError::Offset {
                    expected: offset,
                    actual,
                }));
            }
            if actual > offset {
                plain.set_len(offset)?;
            }
            Ok(Ok(Writer {
                path,
                plain,
                direct: Direct::Unopened,
            }))
        })
        .await
        .map_err(not_found)?
    }

    /// Streams `body` into the upload from `offset`. Returns the writer (for the sync or the
    /// rollback), where the bytes written end, and the first failure, if any.
    async fn stream_into(
        &self,
        writer: Writer,
        offset: u64,
        mut body: ByteStream<'_>,
    ) -> (Option<Writer>, u64, Option<StoreError>) {
        let mut app = Appender {
            pool: Arc::clone(&self.buffers),
            writer: Some(writer),
            in_flight: None,
            cur: None,
            pos: offset,
        };
        let mut failure = None;
        while let Some(chunk) = body.next().await {
            let pushed = match chunk {
                Ok(chunk) => app.push(chunk).await.map_err(StoreError::from),
                Err(e) => Err(StoreError::Body(e)),
            };
            if let Err(e) = pushed {
                failure = Some(e);
                break;
            }
        }
        if failure.is_none() {
            failure = app.flush().await.err().map(StoreError::from);
        }
        let (w, pos, last) = app.stop().await;
        if let Err(e) = last {
            failure.get_or_insert(StoreError::from(e));
        }
        (w, pos, failure)
    }
}

/// Ends an append that started at `offset` and wrote up to `pos`: all or nothing, so a failed
/// one is cut back to where it started; a durable one is synced (the data sync flushes the
/// inode, whichever descriptor its bytes took), with the file's name when it was created.
fn settle_append(
    w: Writer,
    offset: u64,
    pos: u64,
    failure: Option<StoreError>,
    durability: Durability,
) -> io::Result<Result<u64>> {
    if let Some(e) = failure {
        w.plain.set_len(offset)?;
        w.plain.sync_data()?;
        return Ok(Err(e));
    }
    if durability == Durability::UntilCommit {
        return Ok(Ok(pos));
    }
    if let Err(e) = w.plain.sync_data() {
        // Nothing of this append may be counted on.
        let _ = w.plain.set_len(offset);
        let _ = w.plain.sync_data();
        return Err(e);
    }
    if offset == 0 {
        if let Some(dir) = w.path.parent() {
            sync_dir(dir)?;
        }
    }
    Ok(Ok(pos))
}

/// A unique temporary file name (process id, time, counter): no randomness needed.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{t}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use crate::{BlobStore, Durability, UploadToken};
    use berth_oci::{Digest, UploadId};
    use futures::StreamExt;

    fn open() -> (super::FsStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (super::FsStore::open(dir.path()).unwrap(), dir)
    }

    /// The contract, one test per promise, each on a new directory.
    mod contract {
        crate::store_contract_tests!(async { Some(super::open()) });
    }

    /// With every write buffer lent and every read permit taken (many concurrent clients),
    /// appends go chunk by chunk and reads in small chunks, and the contract still holds.
    #[tokio::test]
    async fn the_contract_holds_with_the_memory_budget_spent() {
        let (store, _dir) = open();
        let lent: Vec<_> = (0..super::WRITE_BUFFERS)
            .map(|_| store.buffers.try_take().expect("a buffer"))
            .collect();
        assert!(store.buffers.try_take().is_none(), "the pool is bounded");
        let reads = std::sync::Arc::clone(&store.reads)
            .try_acquire_many_owned(super::READ_BUFS as u32)
            .unwrap();
        use crate::testsuite as t;
        t::large_bodies_arrive_byte_for_byte_in_frames_of_any_size(&store).await;
        t::append_ignores_bytes_past_its_token(&store).await;
        t::a_failed_append_leaves_the_upload_at_its_token(&store).await;
        drop(reads);
        t::read_answers_whole_blobs_and_ranges_as_stream_or_file(&store).await;
        drop(lent);
        assert!(store.buffers.try_take().is_some(), "lent buffers come back");
    }

    /// Only a session whose bytes an `UntilCommit` append wrote is marked for a sync at its
    /// commit, and the mark goes with the commit or the abort.
    #[tokio::test]
    async fn only_appends_until_commit_leave_a_sync_to_the_commit() {
        let (store, _dir) = open();
        let body =
            |b: &'static [u8]| futures::stream::iter([Ok(bytes::Bytes::from_static(b))]).boxed();
        let marked = |id: &UploadId| store.unsynced_set().contains(id);
        let empty = UploadToken::default();

        let (a, b): (UploadId, UploadId) =
            ("durable".parse().unwrap(), "deferred".parse().unwrap());
        let at_a = store
            .append(&a, &empty, body(b"abc"), Durability::Durable)
            .await
            .unwrap();
        assert!(!marked(&a), "a durable append syncs its own bytes");
        let at_b = store
            .append(&b, &empty, body(b"abc"), Durability::Durable)
            .await
            .unwrap();
        let at_b = store
            .append(&b, &at_b, body(b"def"), Durability::UntilCommit)
            .await
            .unwrap();
        assert!(
            marked(&b),
            "an append until commit leaves its bytes to the commit"
        );

        store
            .commit(&a, &at_a, &Digest::sha256(b"abc"))
            .await
            .unwrap();
        store
            .commit(&b, &at_b, &Digest::sha256(b"abcdef"))
            .await
            .unwrap();
        assert!(!marked(&b), "the commit takes the mark away");

        let c: UploadId = "aborted".parse().unwrap();
        store
            .append(&c, &empty, body(b"x"), Durability::UntilCommit)
            .await
            .unwrap();
        store.abort(&c, None).await.unwrap();
        assert!(!marked(&c), "so does an abort");
    }
}
