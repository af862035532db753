//! A fault-injecting HTTP proxy on loopback in front of the registry. Point a client at
//! `proxy.addr()` instead of the registry's address and pick a [`Fault`]; counters tell a test
//! whether the fault was hit and whether the client came back afterwards (a retry).
//!
//! One request per connection (`Connection: close` both ways) and whole responses buffered:
//! simple and plenty for the test images (KiB to a few MiB). Request bodies are forwarded by
//! Content-Length; chunked request bodies are refused with 501 (tests push directly to the
//! registry, not through the proxy).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the proxy does to requests whose path contains `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything untouched.
    PassThrough,
    /// Answer HTTP 500 to the first `first` matching requests, then forward.
    Status500 { path: String, first: usize },
    /// Answer 429 with `Retry-After: 1` to the first `first` matching requests, then forward.
    TooManyRequests { path: String, first: usize },
    /// For the first `first` matching GETs answered 200 with a body: send the headers and half
    /// the body, then close the connection.
    CutBody { path: String, first: usize },
    /// For the first `first` matching GETs answered 200 with a body: flip one byte in the
    /// middle of the body.
    CorruptBody { path: String, first: usize },
    /// Answer HTTP 500 to every matching request.
    Always500 { path: String },
    /// Every matching GET answered 200 with a body: send the body in `chunk`-byte pieces,
    /// `pause_ms` apart (a slow link, so a client can be stopped half-way through a blob).
    Slow {
        path: String,
        chunk: usize,
        pause_ms: u64,
    },
}

impl Fault {
    fn path(&self) -> Option<&str> {
        match self {
            Fault::PassThrough => None,
            Fault::Status500 { path, .. }
            | Fault::TooManyRequests { path, .. }
            | Fault::CutBody { path, .. }
            | Fault::CorruptBody { path, .. }
            | Fault::Always500 { path }
            | Fault::Slow { path, .. } => Some(path),
        }
    }

    /// How many faults to inject at most (None: every time).
    fn budget(&self) -> Option<usize> {
        match self {
            Fault::PassThrough => Some(0),
            Fault::Status500 { first, .. }
            | Fault::TooManyRequests { first, .. }
            | Fault::CutBody { first, .. }
            | Fault::CorruptBody { first, .. } => Some(*first),
            Fault::Always500 { .. } | Fault::Slow { .. } => None,
        }
    }

    fn touches_body(&self) -> bool {
        matches!(
            self,
            Fault::CutBody { .. } | Fault::CorruptBody { .. } | Fault::Slow { .. }
        )
    }
}

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Status the client got (the injected one when a fault fired); 0 when the body was cut.
    pub status: u16,
    pub injected: bool,
    /// When the proxy had read the whole request.
    pub arrived: Instant,
    /// When the proxy had written the whole answer (the client can have it from then on).
    pub answered: Instant,
}

struct State {
    upstream: String,
    fault: Mutex<Fault>,
    /// Every request.
    total: AtomicUsize,
    /// Requests the fault applies to (path matched, and for body faults: a GET).
    matched: AtomicUsize,
    /// Faults actually injected.
    injected: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

pub struct FaultProxy {
    addr: String,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Listen on a free loopback port and forward to `upstream` (`127.0.0.1:PORT`).
    pub fn start(upstream: &str, fault: Fault) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy port");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let state = Arc::new(State {
            upstream: upstream.to_string(),
            fault: Mutex::new(fault),
            total: AtomicUsize::new(0),
            matched: AtomicUsize::new(0),
            injected: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = state.clone();
                    std::thread::spawn(move || {
                        let _ = handle(conn, &state);
                    });
                }
            })
        };
        FaultProxy {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT` to use in place of the registry's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Switch fault; resets the matched/injected counters (not the total or the log).
    pub fn set_fault(&self, fault: Fault) {
        *self.state.fault.lock().unwrap() = fault;
        self.state.matched.store(0, Ordering::SeqCst);
        self.state.injected.store(0, Ordering::SeqCst);
    }

    pub fn requests(&self) -> usize {
        self.state.total.load(Ordering::SeqCst)
    }

    pub fn matched(&self) -> usize {
        self.state.matched.load(Ordering::SeqCst)
    }

    pub fn injected(&self) -> usize {
        self.state.injected.load(Ordering::SeqCst)
    }

    /// The client came back for a matching path after a fault was injected.
    pub fn retried(&self) -> bool {
        self.injected() > 0 && self.matched() > self.injected()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
}

fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    let (mut len, mut chunked) = (0usize, false);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            if k.eq_ignore_ascii_case("content-length") {
                len = v.parse().unwrap_or(0);
            }
            if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(Some(Request {
        method,
        target,
        headers,
        body,
        chunked,
    }))
}

fn handle(conn: TcpStream, state: &State) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let Some(req) = read_request(&mut reader)? else {
        return Ok(());
    };
    let arrived = Instant::now();
    let mut client = conn;
    state.total.fetch_add(1, Ordering::SeqCst);
    let fault = state.fault.lock().unwrap().clone();
    let path_hit = fault.path().is_some_and(|p| req.target.contains(p));
    let applies = path_hit && (!fault.touches_body() || req.method == "GET");
    let mut seen = Seen {
        method: req.method.clone(),
        path: req.target.clone(),
        status: 0,
        injected: false,
        arrived,
        answered: arrived,
    };
    // Reserve one unit of the fault budget for this request, atomically across connections.
    let fire = applies && {
        let n = state.matched.fetch_add(1, Ordering::SeqCst);
        fault.budget().is_none_or(|b| n < b)
    };

    if fire && !fault.touches_body() {
        let (status, extra, code) = match fault {
            Fault::TooManyRequests { .. } => (
                "429 Too Many Requests",
                "Retry-After: 1\r\n",
                "TOOMANYREQUESTS",
            ),
            _ => ("500 Internal Server Error", "", "UNKNOWN"),
        };
        let body = format!(
            r#"{{"errors":[{{"code":"{code}","message":"injected by the sparkgap test proxy"}}]}}"#
        );
        write!(
            client,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        state.injected.fetch_add(1, Ordering::SeqCst);
        client.flush()?;
        seen.status = status[..3].parse().unwrap_or(0);
        seen.injected = true;
        seen.answered = Instant::now();
        state.seen.lock().unwrap().push(seen);
        return Ok(());
    }
    if req.chunked {
        client.write_all(
            b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        seen.status = 501;
        seen.answered = Instant::now();
        state.seen.lock().unwrap().push(seen);
        return Ok(());
    }

    let response = forward(&req, &state.upstream)?;
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(response.len());
    let (head, body) = response.split_at(head_end);
    let head_text = String::from_utf8_lossy(head);
    seen.status = head_text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let has_length = head_text
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("content-length:"));
    let body_fault = fire && seen.status == 200 && has_length && !body.is_empty();
    match (&fault, body_fault) {
        (Fault::CutBody { .. }, true) => {
            client.write_all(head)?;
            client.write_all(&body[..body.len() / 2])?;
            client.flush()?;
            let _ = client.shutdown(Shutdown::Both);
            state.injected.fetch_add(1, Ordering::SeqCst);
            seen.status = 0;
            seen.injected = true;
        }
        (
            Fault::Slow {
                chunk, pause_ms, ..
            },
            true,
        ) => {
            client.write_all(head)?;
            for piece in body.chunks((*chunk).max(1)) {
                client.write_all(piece)?;
                client.flush()?;
                std::thread::sleep(std::time::Duration::from_millis(*pause_ms));
            }
            state.injected.fetch_add(1, Ordering::SeqCst);
            seen.injected = true;
        }
        (Fault::CorruptBody { .. }, true) => {
            let mut body = body.to_vec();
            let mid = body.len() / 2;
            body[mid] ^= 0xff;
            client.write_all(head)?;
            client.write_all(&body)?;
            state.injected.fetch_add(1, Ordering::SeqCst);
            seen.injected = true;
        }
        _ => {
            if fire {
                // The fault had nothing to act on (not a 200 with a body): give the unit back.
                state.matched.fetch_sub(1, Ordering::SeqCst);
            }
            client.write_all(&response)?;
        }
    }
    client.flush()?;
    seen.answered = Instant::now();
    state.seen.lock().unwrap().push(seen);
    Ok(())
}

/// Send the request upstream with `Connection: close` and read the whole response.
fn forward(req: &Request, upstream: &str) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect(upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    for (k, v) in &req.headers {
        let hop = ["connection", "keep-alive", "proxy-connection"]
            .iter()
            .any(|h| k.eq_ignore_ascii_case(h));
        if !hop {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes())?;
    up.write_all(&req.body)?;
    let mut out = Vec::new();
    up.read_to_end(&mut out)?;
    Ok(out)
}
