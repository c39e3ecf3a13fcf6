//! TLS with rustls: the certificate chain and key come from PEM files and are re-read when
//! either changes (looked at every [`RELOAD_EVERY`]), so a renewed certificate needs no
//! restart; connections already open keep the one they started with. ALPN offers HTTP/2 and
//! HTTP/1.1.
//!
//! Handshakes run in tasks of their own, not in the accept loop: a client that connects and
//! says nothing must not hold up the others. Finished connections reach the server through
//! a channel, as [`TlsListener`] yields them.

use crate::config::file_stamp;
use crate::sendfile::ConnInfo;
use anyhow::Context;
use axum::serve::Listener;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How often the certificate and key files are looked at.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// TLS handshakes run at once, at most.
const MAX_HANDSHAKES: usize = 1024;
/// A client gets this long to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the chain and key into a server configuration.
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("certificate {}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading private key {}", key.display()))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and the key do not go together")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TLS connections on a TCP listener.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` with the certificate and key read now (an error if they
    /// are unusable), and watching both files.
    pub fn start(tcp: TcpListener, cert: PathBuf, key: PathBuf) -> anyhow::Result<TlsListener> {
        let current = Arc::new(RwLock::new(load(&cert, &key)?));
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(256);

        let watched = Arc::clone(&current);
        tokio::spawn(async move {
            let stamp = || [file_stamp(&cert), file_stamp(&key)];
            let mut seen = stamp();
            loop {
                tokio::time::sleep(RELOAD_EVERY).await;
                let now = stamp();
                if now == seen {
                    continue;
                }
                seen = now;
                match load(&cert, &key) {
                    Ok(c) => {
                        *watched.write().unwrap_or_else(|p| p.into_inner()) = c;
                        tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => tracing::error!("keeping the previous TLS certificate: {e:#}"),
                }
            }
        });

        // Handshakes under way at most: beyond them, accepting waits (the kernel's backlog
        // queues new connections), so a flood of silent clients cannot take every descriptor.
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = Arc::clone(&handshakes).acquire_owned().await else {
                    return;
                };
                let (stream, addr) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // The server has stopped (the listener, and so the receiver, is gone).
                if tx.is_closed() {
                    return;
                }
                let _ = stream.set_nodelay(true);
                let config = Arc::clone(&current.read().unwrap_or_else(|p| p.into_inner()));
                let tx = tx.clone();
                tokio::spawn(async move {
                    let handshake = TlsAcceptor::from(config).accept(stream);
                    let done = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await;
                    drop(slot);
                    match done {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake: {e}"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task is gone only when the runtime is: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl crate::sendfile::Peer for TlsStream<TcpStream> {
    fn conn_info(&self, remote: SocketAddr) -> ConnInfo {
        ConnInfo::without_sendfile(remote)
    }
}
