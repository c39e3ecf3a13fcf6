//! A TCP proxy for tests that cuts one connection once a set number of bytes has passed in
//! one direction, and counts every byte it forwards: a resumed transfer sends little more
//! than the blob, a restarted one much more. Plain threads, so that a test blocked on a
//! child process does not stall it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Default)]
pub struct Counters {
    /// Bytes client → server, and server → client.
    pub up: AtomicU64,
    pub down: AtomicU64,
    /// Cut the connection carrying byte number N of that direction (u64::MAX: never).
    pub cut_up_at: AtomicU64,
    pub cut_down_at: AtomicU64,
    pub cuts: AtomicU64,
    /// Once a cut happened, forward nothing more on any connection.
    pub refuse_after_cut: AtomicBool,
    stop: AtomicBool,
}

pub struct CutProxy {
    pub addr: String,
    pub counters: Arc<Counters>,
}

impl CutProxy {
    pub fn spawn(target: &str) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        let counters = Arc::new(Counters::default());
        counters.cut_up_at.store(u64::MAX, Ordering::SeqCst);
        counters.cut_down_at.store(u64::MAX, Ordering::SeqCst);
        let c = counters.clone();
        let target = target.to_owned();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if c.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                if c.refuse_after_cut.load(Ordering::SeqCst) && c.cuts.load(Ordering::SeqCst) > 0 {
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let (c1, c2) = (c.clone(), c.clone());
                let (client2, server2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                std::thread::spawn(move || pump(client, server, &c1, true));
                std::thread::spawn(move || pump(server2, client2, &c2, false));
            }
        });
        CutProxy { addr, counters }
    }

    pub fn up(&self) -> u64 {
        self.counters.up.load(Ordering::SeqCst)
    }

    pub fn down(&self) -> u64 {
        self.counters.down.load(Ordering::SeqCst)
    }

    pub fn cuts(&self) -> u64 {
        self.counters.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.counters.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, c: &Counters, up: bool) {
    let (count, cut_at) = if up {
        (&c.up, &c.cut_up_at)
    } else {
        (&c.down, &c.cut_down_at)
    };
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if c.refuse_after_cut.load(Ordering::SeqCst) && c.cuts.load(Ordering::SeqCst) > 0 {
            break;
        }
        let before = count.fetch_add(n as u64, Ordering::SeqCst);
        let at = cut_at.load(Ordering::SeqCst);
        if before + n as u64 > at
            && cut_at
                .compare_exchange(at, u64::MAX, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            // Forward up to the cut point, then drop both sides mid-transfer.
            let keep = at.saturating_sub(before) as usize;
            let _ = to.write_all(&buf[..keep]);
            count.fetch_sub((n - keep) as u64, Ordering::SeqCst);
            c.cuts.fetch_add(1, Ordering::SeqCst);
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
