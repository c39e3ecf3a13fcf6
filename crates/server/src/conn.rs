//! Connections: the accept loop and what each connection may cost. axum's own `serve` sets
//! no timer, so a client could hold a connection forever by sending its headers one byte a
//! minute; here every connection gets hyper's header timeout, the number of open
//! connections is capped (the connection over the cap is answered `503` with `Retry-After`
//! and closed, so descriptors and memory stay bounded), and shutdown drains what is open.
//! Request bodies that stall are cut by [`IdleTimeout`].

use crate::sendfile::ConnInfo;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// What a connection may cost (from `[limits]`).
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Open connections at most; the next one is refused with `503`.
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
}

/// An accepted connection says what its requests may know of it.
pub trait Peer {
    fn conn_info(&self, remote: SocketAddr) -> ConnInfo;
}

/// Raises the soft limit of open files to the hard one (as Go's runtime does): the default
/// soft limit (often 1024) is below what `max_connections` and open blob files need.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::debug!("could not raise the open-file limit");
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then drains open connections for at most
/// `grace`.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: ConnLimits,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    L: Listener<Addr = SocketAddr>,
    L::Io: Peer + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(60)));
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (io, remote) = tokio::select! {
            c = listener.accept() => c,
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            if let Ok(refusing) = Arc::clone(&refusing).try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(io).await;
                    drop(refusing);
                });
            }
            continue;
        };
        let info = io.conn_info(remote);
        let io = TokioIo::new(io);
        let svc = app
            .clone()
            .map_request(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(info.clone()));
                req
            });
        let conn = builder
            .serve_connection(io, TowerToHyperService::new(svc))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection from {remote}: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("in-flight requests did not finish within {}s; exiting", grace.as_secs());
        }
    }
}

/// Refusals answered at once; beyond this many, a connection over the cap is just closed.
const MAX_REFUSING: usize = 256;

/// The error body of a connection over the cap. It is written raw, before any request is
/// parsed, which is why it is not built by `error.rs` like every other error.
const REFUSAL_BODY: &str = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"too many connections: try again shortly"}]}"#;

fn refusal() -> Vec<u8> {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         docker-distribution-api-version: registry/2.0\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{REFUSAL_BODY}",
        REFUSAL_BODY.len()
    )
    .into_bytes()
}

/// Answers a connection over the cap with `503` and `Retry-After` and closes it, holding
/// its descriptor a second at most. The answer waits for the request's headers (a client
/// sees an answer before its request as a broken connection), and what follows them is
/// read and dropped so that closing does not reset the connection before the client reads
/// the answer.
async fn refuse<I>(mut io: I)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    crate::metrics::refused_connection();
    let answer = async {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < (16 << 10) {
            let n = io.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
        }
        io.write_all(&refusal()).await?;
        io.flush().await?;
        io.shutdown().await?;
        let mut left = 64usize << 10;
        while left > 0 {
            let n = io.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            left -= n.min(left);
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
}

/// A request body that yields nothing for `idle` ends with a `TimedOut` error: a client
/// that stops sending mid-upload releases its connection and its buffers.
pub struct IdleTimeout<B> {
    body: B,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<B> IdleTimeout<B> {
    pub fn new(body: B, idle: Duration) -> IdleTimeout<B> {
        IdleTimeout {
            body,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
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
                let next = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no body bytes for {}s", this.idle.as_secs()),
                ))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
