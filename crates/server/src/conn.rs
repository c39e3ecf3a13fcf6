//! Connections: the accept loop and what each connection may cost. axum's own `serve` sets
//! no timer, so a client could hold a connection forever by sending its headers one byte a
//! minute, or nothing at all; here every connection gets hyper's header timeout and a
//! watchdog that closes it once nothing has happened on it for as long, HTTP/2 streams per
//! connection are bounded, the number of open connections is capped (the one over the cap
//! is answered `503` with `Retry-After` and closed, so descriptors and memory stay
//! bounded), and shutdown drains what is open. Request bodies that stall are cut by
//! [`IdleTimeout`].

use crate::config::ConnLimits;
use crate::sendfile::{ConnInfo, Peer};
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Raises the soft limit of open files to the hard one (as Go's runtime does): the default
/// soft limit (often 1024) is below what `max_connections` and open blob files need.
/// Returns the limit now in force.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return u64::MAX;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// What a connection's watchdog reads: when a byte last moved, and how many requests are
/// being handled.
#[derive(Default)]
struct Activity {
    /// Milliseconds since `born` at the last read or write that moved bytes.
    last: AtomicU64,
    handling: AtomicUsize,
}

impl Activity {
    fn touch(&self, born: Instant) {
        self.last
            .store(born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self, born: Instant) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        born.elapsed().saturating_sub(last)
    }
}

/// Counts a request as being handled until dropped (answered, or abandoned by its client).
struct Handling(Arc<Activity>);

impl Handling {
    fn start(activity: &Arc<Activity>) -> Handling {
        activity.handling.fetch_add(1, Ordering::Relaxed);
        Handling(Arc::clone(activity))
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's I/O, noting every read and write that moves bytes.
struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
    born: Instant,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch(self.born);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch(self.born);
        }
        r
    }

    // Forwarded as it is: the sendfile connection reads its marks from vectored writes.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch(self.born);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` until `shutdown`, then drains open connections for at most
/// `grace`.
///
/// Each connection has a watchdog: when no request is being handled and no byte has moved
/// for `header_timeout`, the connection is asked to close (HTTP/2 gets GOAWAY) and dropped a
/// second later. That closes what hyper's own header timeout cannot: a connection that
/// never sends a byte (hyper waits, untimed, to learn whether it speaks HTTP/2), an idle
/// HTTP/2 connection, and a client that stops reading a response.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: ConnLimits,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    L: Listener<Addr = SocketAddr>,
    L::Io: Peer + AsyncRead + AsyncWrite + Unpin,
{
    let max_connections = connection_cap(&limits);
    let idle = limits.header_timeout;
    let Builders {
        normal: builder,
        crowded,
        refusal,
    } = builders(idle);
    let open = Arc::new(Semaphore::new(max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (io, remote) = tokio::select! {
            c = listener.accept() => c,
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            crate::metrics::refused_connection();
            if let Ok(refusing) = Arc::clone(&refusing).try_acquire_owned() {
                tokio::spawn(refuse(refusal.clone(), io, refusing));
            }
            continue;
        };
        let info = io.conn_info(remote);
        let activity = Arc::new(Activity::default());
        let born = Instant::now();
        let io = TokioIo::new(Watched {
            io,
            activity: Arc::clone(&activity),
            born,
        });
        let svc = service(app.clone(), info, Arc::clone(&activity));
        let open_now = max_connections.saturating_sub(open.available_permits());
        let http = if is_crowded(open_now) {
            &crowded
        } else {
            &builder
        };
        let conn = http
            .serve_connection(io, TowerToHyperService::new(svc))
            .into_owned();
        let stop = stop.clone();
        tasks.spawn(async move {
            if let Err(e) = watch(conn, stop, activity, born, idle).await {
                tracing::debug!("connection from {remote}: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    drain(stop, tasks, grace).await;
}

/// Serves one connection until it ends, `stop` asks it to finish, or its watchdog finds it
/// quiet: no request being handled and no byte moved for `idle`. One wake-up per quiet
/// period, at the moment it would end, not a polling tick.
async fn watch<C: GracefulConnection>(
    conn: C,
    stop: CancellationToken,
    activity: Arc<Activity>,
    born: Instant,
    idle: Duration,
) -> Result<(), C::Error> {
    tokio::pin!(conn);
    let watchdog = tokio::time::sleep(idle);
    tokio::pin!(watchdog);
    loop {
        tokio::select! {
            r = conn.as_mut() => return r,
            () = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                return conn.as_mut().await;
            }
            () = &mut watchdog => {
                let quiet_for = activity.idle_for(born);
                let busy = activity.handling.load(Ordering::Relaxed) > 0;
                if !busy && quiet_for >= idle {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
                    return Ok(());
                }
                let wait = if busy { idle } else { idle - quiet_for };
                watchdog.as_mut().reset(tokio::time::Instant::now() + wait);
            }
        }
    }
}

/// Connections open at most: the configured cap, lowered to what the open-file limit
/// allows (each connection is a descriptor and may open a blob file; a reserve stays for
/// the database, the uploads and the refusals).
fn connection_cap(limits: &ConnLimits) -> usize {
    let files = raise_fd_limit();
    let fit = usize::try_from(files.saturating_sub(512) / 2).unwrap_or(usize::MAX);
    let max_connections = limits.max_connections.clamp(1, 1 << 24);
    if max_connections > fit {
        tracing::warn!(
            "max_connections {max_connections} lowered to {fit}: the open-file limit is {files}"
        );
        return fit.max(1);
    }
    max_connections
}

/// How connections are served: normally, when crowded (a smaller read buffer), and when
/// refused (one answer, then closed).
struct Builders {
    normal: Builder<TokioExecutor>,
    crowded: Builder<TokioExecutor>,
    refusal: Builder<TokioExecutor>,
}

fn builders(idle: Duration) -> Builders {
    let mut normal = Builder::new(TokioExecutor::new());
    normal
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle);
    // Streams per connection are bounded, so the connection cap bounds requests too.
    normal
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64);
    let mut crowded = normal.clone();
    crowded.http1().max_buf_size(CROWDED_READ_BUF);
    let mut refusal = Builder::new(TokioExecutor::new());
    refusal
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(1))
        .keep_alive(false);
    Builders {
        normal,
        crowded,
        refusal,
    }
}

/// The app as one connection's service: each request knows its connection, and counts as
/// being handled (for the watchdog) until its response is ready.
fn service(
    app: Router,
    info: ConnInfo,
    activity: Arc<Activity>,
) -> impl tower::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    tower::service_fn(move |mut req: hyper::Request<Incoming>| {
        let handling = Handling::start(&activity);
        req.extensions_mut().insert(ConnectInfo(info.clone()));
        let answer = app.clone().oneshot(req);
        async move {
            let r = answer.await;
            drop(handling);
            r
        }
    })
}

/// Asks open connections to finish and waits for them, for at most `grace`.
async fn drain(stop: CancellationToken, tasks: TaskTracker, grace: Duration) {
    tracing::info!("shutting down: draining in-flight requests");
    stop.cancel();
    tasks.close();
    tokio::select! {
        () = tasks.wait() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("in-flight requests did not finish within {}s; exiting", grace.as_secs());
        }
    }
}

/// Open connections (the new one counted) up to which a new connection's read buffer may
/// grow to hyper's default, about 400 KiB: a body fills it, so fewer reads per byte. A
/// connection opened beyond keeps its buffer to [`CROWDED_READ_BUF`], so that memory does
/// not grow by 400 KiB per busy client under hundreds of uploads, while the first few
/// clients keep their push rate (see BENCHMARKS.md).
const UNCROWDED: usize = 64;
const CROWDED_READ_BUF: usize = 64 << 10;

/// Whether a connection accepted while `open` connections are open (itself counted) gets the
/// smaller read buffer.
fn is_crowded(open: usize) -> bool {
    open > UNCROWDED
}

/// Refusals answered at once; beyond this many, a connection over the cap is just closed.
const MAX_REFUSING: usize = 256;

/// Answers a connection over the cap with `503` and `Retry-After` (HTTP/1 or HTTP/2, as
/// the client speaks) and closes it, holding its descriptor two seconds at most.
async fn refuse<I>(builder: Builder<TokioExecutor>, io: I, slot: OwnedSemaphorePermit)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(|_req: hyper::Request<Incoming>| async {
        let mut r = crate::error::too_busy();
        r.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        Ok::<_, std::convert::Infallible>(r)
    });
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    if tokio::time::timeout(Duration::from_secs(1), conn.as_mut())
        .await
        .is_err()
    {
        // Still open after its answer (HTTP/2) or before its request: a last second to go.
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
    }
    drop(slot);
}

/// A request body that yields nothing for `idle` ends with a `TimedOut` error: a client
/// that stops sending mid-upload releases its connection and its buffers. The clock starts
/// at the first read that has to wait, not when the request arrived: a handler may read
/// its body late (and HTTP/1's `100 Continue` goes out only at the first read).
pub struct IdleTimeout<B> {
    body: B,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> IdleTimeout<B> {
    pub fn new(body: B, idle: Duration) -> IdleTimeout<B> {
        IdleTimeout {
            body,
            idle,
            timer: None,
        }
    }
}

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                // Progress: the next wait starts its own clock.
                this.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no body bytes for {}s", idle.as_secs()),
                    ))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first connections keep hyper's growing buffer; the ones past them get the cap.
    #[test]
    fn only_connections_past_the_uncrowded_count_get_the_small_buffer() {
        assert!(!is_crowded(1));
        assert!(!is_crowded(UNCROWDED));
        assert!(is_crowded(UNCROWDED + 1));
    }
}
