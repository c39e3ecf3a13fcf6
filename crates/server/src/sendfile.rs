//! Blob bodies sent by the kernel: sendfile(2) from the blob's file to the socket, on plain
//! HTTP/1 connections. Streaming a blob through user space costs two copies of every byte
//! (file to buffer, buffer to socket) plus a thread hand-off per chunk; sendfile costs
//! neither, and no memory.
//!
//! hyper writes bodies itself, so the file goes in disguise. The body of such a response is a
//! stream of *marks*: slices of one zeroed region, [`MARKS`], that nothing ever reads. Each
//! mark produced queues an [`Op`] (file, offset, length) on its connection, and the
//! connection's writer ([`Conn`]), handed a mark where it expected bytes, sends that op's
//! bytes from the file instead. hyper keeps body chunks as they are and hands them to a
//! vectored writer in order (its queue strategy, chosen because [`Conn`] says it writes
//! vectored), so marks and ops meet in the same order: one op per mark, and the mark's length
//! always equals what the op has left, which the writer checks. Any disagreement closes the
//! connection with an error: the client may see a cut response, never wrong bytes.
//!
//! Only HTTP/1 over a [`Conn`] takes marks: HTTP/2 copies body bytes into its own frames, and
//! would send the zeros (the handler checks the request version).

use axum::serve::Listener;
use bytes::Bytes;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The largest mark, hence the largest part of a file one body chunk stands for.
const MARK_LEN: usize = 4 << 20;
/// Bytes handed to one sendfile call: other connections get their turn between calls.
const SEND_MAX: usize = 1 << 20;

/// The zeroed region marks are cut from. Allocated zeroed and never written or read, so the
/// kernel never backs it with memory.
fn marks() -> &'static Bytes {
    static MARKS: OnceLock<Bytes> = OnceLock::new();
    MARKS.get_or_init(|| Bytes::from(vec![0u8; MARK_LEN]))
}

fn is_mark(buf: &[u8]) -> bool {
    let m = marks();
    let (start, p) = (m.as_ptr() as usize, buf.as_ptr() as usize);
    !buf.is_empty() && p >= start && p + buf.len() <= start + m.len()
}

/// Bytes of a file a mark stands for.
struct Op {
    file: Arc<File>,
    offset: u64,
    left: usize,
}

/// What a connection's writer and its responses' bodies share.
#[derive(Default)]
struct Pending {
    // A std Mutex: held only to push or take an op, never across an await.
    ops: Mutex<VecDeque<Op>>,
}

/// Unsent bytes a connection's socket may hold before it stops taking more. Without a limit
/// the kernel queues up to the whole send buffer (megabytes) of file pages per connection,
/// and those go out later, whenever acknowledgements open the window; with it, sendfile
/// hands over little more than the window takes at once, which parallel pulls need (see
/// BENCHMARKS.md). It bounds the queue, not what is in flight, so long fat links keep
/// their throughput.
const NOTSENT_LOWAT: u32 = 16 << 10;

/// Accepts TCP connections as [`Conn`]s, with `TCP_NODELAY` like `axum::serve`'s default,
/// and a bounded queue of unsent bytes ([`NOTSENT_LOWAT`]).
pub struct SendfileListener(pub TcpListener);

impl Listener for SendfileListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!("TCP_NODELAY: {e}");
                    }
                    if let Err(e) =
                        socket2::SockRef::from(&stream).set_tcp_notsent_lowat(NOTSENT_LOWAT)
                    {
                        tracing::debug!("TCP_NOTSENT_LOWAT: {e}");
                    }
                    let conn = Conn {
                        stream,
                        pending: Arc::default(),
                    };
                    return (conn, addr);
                }
                // Out of descriptors and the like: wait rather than spin, as axum does.
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A TCP connection whose writer understands marks.
pub struct Conn {
    stream: TcpStream,
    pending: Arc<Pending>,
}

impl Conn {
    /// Sends (part of) the op a mark of `len` bytes stands for.
    fn poll_send_file(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            let socket = self.stream.as_raw_fd();
            let pending = &self.pending;
            match self
                .stream
                .try_io(Interest::WRITABLE, || send_op(pending, socket, len))
            {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }
}

fn send_op(pending: &Pending, socket: i32, len: usize) -> io::Result<usize> {
    let mut ops = pending.ops.lock().unwrap_or_else(|p| p.into_inner());
    let Some(op) = ops.front_mut() else {
        return Err(io::Error::other(
            "sendfile: a body mark with no file behind it",
        ));
    };
    if op.left != len {
        return Err(io::Error::other(format!(
            "sendfile: a body mark of {len} bytes where {} were due",
            op.left
        )));
    }
    let mut offset = i64::try_from(op.offset).map_err(io::Error::other)?;
    // SAFETY: both descriptors are open for the call (the socket is ours, the file is held
    // by the op); the kernel writes only `offset`, a local.
    let n = unsafe { libc::sendfile(socket, op.file.as_raw_fd(), &mut offset, len.min(SEND_MAX)) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "sendfile: the blob's file is shorter than its size",
        ));
    }
    op.offset += n as u64;
    op.left -= n;
    if op.left == 0 {
        ops.pop_front();
    }
    Ok(n)
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if is_mark(buf) {
            return self.poll_send_file(cx, buf.len());
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Plain bytes before the first mark go as they are; a mark in front goes by sendfile.
        match bufs.iter().position(|b| is_mark(b)) {
            Some(0) => self.poll_send_file(cx, bufs[0].len()),
            Some(k) => Pin::new(&mut self.stream).poll_write_vectored(cx, &bufs[..k]),
            None => Pin::new(&mut self.stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        // Makes hyper queue body chunks untouched instead of copying them into one buffer.
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// What a request knows of its connection (axum's `ConnectInfo`): the peer's address, and
/// the way to send files on it when there is one.
#[derive(Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// The connection is TLS (no sendfile there).
    pub tls: bool,
    pub files: Option<FileSender>,
}

/// An accepted connection says what its requests may know of it.
pub trait Peer {
    fn conn_info(&self, remote: SocketAddr) -> ConnInfo;
}

impl Peer for Conn {
    fn conn_info(&self, remote: SocketAddr) -> ConnInfo {
        ConnInfo {
            remote,
            tls: false,
            files: Some(FileSender(Arc::clone(&self.pending))),
        }
    }
}

impl ConnInfo {
    /// A connection that cannot send files (TLS).
    pub fn without_sendfile(remote: SocketAddr) -> ConnInfo {
        ConnInfo {
            remote,
            tls: true,
            files: None,
        }
    }
}

/// Sends files on one [`Conn`].
#[derive(Clone)]
pub struct FileSender(Arc<Pending>);

impl FileSender {
    /// A response body of `len` bytes of `file` from `offset`, sent by sendfile. Only for a
    /// response on this sender's connection, over HTTP/1.
    pub fn body(&self, file: File, offset: u64, len: u64) -> axum::body::Body {
        let pending = Arc::clone(&self.0);
        let file = Arc::new(file);
        let marks = futures::stream::unfold((offset, len), move |(offset, left)| {
            let pending = Arc::clone(&pending);
            let file = Arc::clone(&file);
            async move {
                if left == 0 {
                    return None;
                }
                let n = usize::try_from(left).unwrap_or(MARK_LEN).min(MARK_LEN);
                pending
                    .ops
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back(Op {
                        file,
                        offset,
                        left: n,
                    });
                let mark: io::Result<Bytes> = Ok(marks().slice(..n));
                Some((mark, (offset + n as u64, left - n as u64)))
            }
        });
        axum::body::Body::from_stream(marks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepted connections send without delay and bound their unsent bytes.
    #[tokio::test]
    async fn accepted_connections_bound_their_unsent_bytes() -> io::Result<()> {
        let mut listener = SendfileListener(TcpListener::bind("127.0.0.1:0").await?);
        let client = tokio::spawn(TcpStream::connect(listener.local_addr()?));
        let (conn, _) = listener.accept().await;
        let socket = socket2::SockRef::from(&conn.stream);
        assert_eq!(socket.tcp_notsent_lowat()?, NOTSENT_LOWAT);
        assert!(socket.tcp_nodelay()?);
        client.await??;
        Ok(())
    }
}
