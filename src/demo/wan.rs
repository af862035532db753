//! Benchmark only (`sparkgap demo --bench-seed-mib N --bench-wan-rtt-ms ...`): a loopback TCP
//! proxy that makes the local registry look like one across a wide-area network, so the build
//! benchmark can show what concurrent transfers buy. On bare loopback there is no round trip
//! and no per-stream limit, so eight transfers at once cost what one does.
//!
//! What it emulates, per TCP connection between a client and the registry:
//! - a round-trip time: a new connection waits one RTT before its first byte moves (the TCP
//!   handshake; plain HTTP, so no TLS round trips), and every byte is delivered RTT/2 after it
//!   was sent, in both directions (a request and its response cost one RTT on top);
//! - a bandwidth cap per connection (what one TCP stream from a remote registry or CDN gets),
//!   and optionally one over all connections together (the machine's uplink).
//!
//! It buffers at most `QUEUE` chunks per direction (about the bandwidth-delay product), so a
//! fast upstream is held back by back-pressure, not by memory. It never touches the bytes and
//! only binds 127.0.0.1. Nothing outside the benchmark path starts it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{DemoError, Result};

/// Bytes read from one side at a time.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight per direction (4 MiB: above the bandwidth-delay product of any profile the
/// benchmark uses, e.g. 32 MiB/s × 40 ms = 1.3 MiB).
const QUEUE: usize = 64;
/// Largest write the pacer releases at once: keeps the rate smooth at small time scales.
const SLICE: usize = 16 * 1024;

/// The emulated network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WanProfile {
    pub rtt: Duration,
    /// Bytes per second one connection may carry, each way.
    pub per_connection: u64,
    /// Bytes per second all connections together may carry, each way (None: no shared limit).
    pub total: Option<u64>,
}

impl std::fmt::Display for WanProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RTT {} ms, {} MiB/s per connection",
            self.rtt.as_millis(),
            self.per_connection >> 20
        )?;
        if let Some(t) = self.total {
            write!(f, ", {} MiB/s in total", t >> 20)?;
        }
        Ok(())
    }
}

/// A token bucket with no burst: `reserve(n)` says when `n` more bytes may go.
#[derive(Debug)]
struct Pacer {
    bytes_per_sec: f64,
    next: Instant,
}

impl Pacer {
    fn new(bytes_per_sec: u64) -> Pacer {
        Pacer {
            bytes_per_sec: bytes_per_sec.max(1) as f64,
            next: Instant::now(),
        }
    }

    fn reserve(&mut self, n: usize) -> Instant {
        let start = self.next.max(Instant::now());
        self.next = start + Duration::from_secs_f64(n as f64 / self.bytes_per_sec);
        start
    }
}

/// A running proxy; stops accepting when dropped (connections in flight run to their end).
#[derive(Debug)]
pub struct WanProxy {
    addr: String,
    profile: WanProfile,
    stop: Arc<AtomicBool>,
}

impl WanProxy {
    /// Listen on a free loopback port and forward every connection to `upstream` (host:port)
    /// through the emulated network.
    pub fn start(upstream: &str, profile: WanProfile) -> Result<WanProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| DemoError::io("cannot bind the WAN-emulation proxy", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| DemoError::io("cannot read the WAN-emulation proxy's address", e))?
            .to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let total = profile.total.map(|t| Arc::new(Mutex::new(Pacer::new(t))));
        let (upstream, flag) = (upstream.to_string(), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let (upstream, total) = (upstream.clone(), total.clone());
                std::thread::spawn(move || {
                    if let Err(e) = serve(client, &upstream, profile, total) {
                        tracing::debug!("WAN proxy connection ended: {e}");
                    }
                });
            }
        });
        Ok(WanProxy {
            addr,
            profile,
            stop,
        })
    }

    /// `127.0.0.1:PORT`: use it where the registry's address would go.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn profile(&self) -> WanProfile {
        self.profile
    }
}

impl Drop for WanProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

/// One client connection: handshake delay, then both directions through a delay line and
/// the pacers.
fn serve(
    client: TcpStream,
    upstream: &str,
    profile: WanProfile,
    total: Option<Arc<Mutex<Pacer>>>,
) -> std::io::Result<()> {
    std::thread::sleep(profile.rtt);
    let server = TcpStream::connect(upstream)?;
    for s in [&client, &server] {
        s.set_nodelay(true)?;
    }
    let one_way = profile.rtt / 2;
    let up = pipe(
        client.try_clone()?,
        server.try_clone()?,
        one_way,
        profile.per_connection,
        total.clone(),
    );
    let down = pipe(server, client, one_way, profile.per_connection, total);
    let _ = up.join();
    let _ = down.join();
    Ok(())
}

/// Bytes in flight and when they arrive at the other end (empty: end of stream).
type Chunk = (Instant, Vec<u8>);

/// Forward `from` to `to`: a reader stamps each chunk with its delivery time, a writer waits
/// for that time and for the pacers, then writes. EOF is passed on as a write shutdown.
fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    delay: Duration,
    per_connection: u64,
    total: Option<Arc<Mutex<Pacer>>>,
) -> std::thread::JoinHandle<()> {
    let (tx, rx): (SyncSender<Chunk>, Receiver<Chunk>) = sync_channel(QUEUE);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match from.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            // An empty chunk is EOF; a closed channel means the writer gave up.
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
                || n == 0
            {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        let mut conn = Pacer::new(per_connection);
        while let Ok((due, data)) = rx.recv() {
            if data.is_empty() {
                break;
            }
            sleep_until(due);
            for slice in data.chunks(SLICE) {
                let mut at = conn.reserve(slice.len());
                if let Some(t) = &total {
                    let shared = t.lock().map(|mut p| p.reserve(slice.len()));
                    if let Ok(s) = shared {
                        at = at.max(s);
                    }
                }
                sleep_until(at);
                if to.write_all(slice).is_err() {
                    return;
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    })
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo-less upstream that sends `n` bytes and closes; the proxy must deliver all of
    /// them, no sooner than one RTT (handshake) + RTT/2 + n / rate.
    #[test]
    fn delivers_every_byte_late_and_paced() {
        let up = TcpListener::bind("127.0.0.1:0").unwrap();
        let up_addr = up.local_addr().unwrap().to_string();
        let n = 2 << 20;
        std::thread::spawn(move || {
            let (mut s, _) = up.accept().unwrap();
            let mut req = [0u8; 4];
            s.read_exact(&mut req).unwrap();
            assert_eq!(&req, b"ping");
            s.write_all(&vec![7u8; n]).unwrap();
        });
        let profile = WanProfile {
            rtt: Duration::from_millis(40),
            per_connection: 16 << 20,
            total: None,
        };
        let proxy = WanProxy::start(&up_addr, profile).unwrap();
        let started = Instant::now();
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        c.write_all(b"ping").unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        let took = started.elapsed();
        assert_eq!(got.len(), n);
        assert!(got.iter().all(|b| *b == 7));
        // handshake RTT + request RTT/2 + response RTT/2 + 2 MiB at 16 MiB/s = 205 ms.
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert_eq!(profile.to_string(), "RTT 40 ms, 16 MiB/s per connection");
    }

    #[test]
    fn pacer_spaces_reservations_by_size_over_rate() {
        let mut p = Pacer::new(1 << 20);
        let a = p.reserve(512 << 10);
        let b = p.reserve(512 << 10);
        let gap = b - a;
        assert!(
            gap >= Duration::from_millis(499) && gap <= Duration::from_millis(501),
            "{gap:?}"
        );
    }
}
