//! A tiny loopback HTTP file server: a stand-in k3s "release" (the binary at `/k3s-arm64` and,
//! when given, `k3s-images.txt` beside it), for `spec.k3s.binaryUrl` in the demo and the tests.
//!
//! Plain std threads rather than tokio: callers are synchronous tests as often as async code,
//! and a server owning its own threads works from both without runtime nesting. It answers GET
//! and HEAD with `Connection: close`, one request per connection.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::{DemoError, Result};

/// The path the file is served at.
pub const K3S_PATH: &str = "/k3s-arm64";
/// Where the image list is served, beside the binary as in a k3s release.
pub const IMAGES_PATH: &str = "/k3s-images.txt";

/// A running file server; stopped on drop.
#[derive(Debug)]
pub struct ServedFile {
    url: String,
    addr: String,
    stop: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServedFile {
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Successful GETs of the k3s file so far.
    pub fn downloads(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for ServedFile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serve `bytes` at `http://127.0.0.1:PORT/k3s-arm64`; returns the URL and the handle that keeps
/// the server alive.
pub fn serve_file(bytes: impl Into<Arc<[u8]>>) -> Result<(String, ServedFile)> {
    serve_release(bytes, None)
}

/// A stand-in release: `bytes` at `/k3s-arm64` and, when given, `images_txt` at
/// `/k3s-images.txt`. Returns the binary's URL and the handle that keeps the server alive.
pub fn serve_release(
    bytes: impl Into<Arc<[u8]>>,
    images_txt: Option<String>,
) -> Result<(String, ServedFile)> {
    let mut files: Vec<(String, Arc<[u8]>)> = vec![(K3S_PATH.into(), bytes.into())];
    if let Some(text) = images_txt {
        files.push((IMAGES_PATH.into(), text.into_bytes().into()));
    }
    let mut served = serve_files(files)?;
    served.url = format!("{}{K3S_PATH}", served.url);
    Ok((served.url.clone(), served))
}

/// Serve `files` (absolute request path, bytes) on a loopback port until dropped; the
/// `ServedFile`'s url is the server's base (`http://127.0.0.1:PORT`). A chart repository
/// (`/index.yaml` and its archives) in the tests, k3s's release in the demo.
pub fn serve_files(files: Vec<(String, Arc<[u8]>)>) -> Result<ServedFile> {
    serve(Files::Static(files), None)
}

/// Serve the files under `dir` (read at each request, so files written after the server
/// started are served too) on a loopback port until dropped; the url is the server's base.
pub fn serve_dir(dir: impl Into<std::path::PathBuf>) -> Result<ServedFile> {
    serve(Files::Dir(dir.into()), None)
}

/// [`serve_dir`] behind authentication: a request whose `Authorization` header is not exactly
/// `authorization` (e.g. `Basic dXNlcjpwYXNz`, `Bearer t0ken`) gets 401 with a Basic challenge.
/// A private chart repository in the tests.
pub fn serve_dir_with_auth(
    dir: impl Into<std::path::PathBuf>,
    authorization: &str,
) -> Result<ServedFile> {
    serve(Files::Dir(dir.into()), Some(authorization.to_string()))
}

enum Files {
    Static(Vec<(String, Arc<[u8]>)>),
    Dir(std::path::PathBuf),
}

impl Files {
    fn get(&self, path: &str) -> Option<Arc<[u8]>> {
        match self {
            Files::Static(v) => v.iter().find(|(p, _)| p == path).map(|(_, b)| b.clone()),
            Files::Dir(d) => {
                let rel = path.trim_start_matches('/');
                let safe = !rel.is_empty()
                    && std::path::Path::new(rel)
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)));
                safe.then(|| std::fs::read(d.join(rel)).ok())
                    .flatten()
                    .map(Into::into)
            }
        }
    }
}

fn serve(files: Files, authorization: Option<String>) -> Result<ServedFile> {
    let files = Arc::new(files);
    let authorization = Arc::new(authorization);
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| DemoError::io("cannot bind a loopback port for the k3s file server", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| DemoError::io("cannot read the file server's address", e))?
        .to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let thread = {
        let (stop, hits) = (stop.clone(), hits.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (files, hits, authorization) =
                    (files.clone(), hits.clone(), authorization.clone());
                std::thread::spawn(move || {
                    let _ = answer(conn, &files, &hits, authorization.as_deref());
                });
            }
        })
    };
    Ok(ServedFile {
        url: format!("http://{addr}"),
        addr,
        stop,
        hits,
        thread: Some(thread),
    })
}

fn answer(
    conn: TcpStream,
    files: &Files,
    hits: &AtomicUsize,
    authorization: Option<&str>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut sent_auth = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            sent_auth = Some(value.trim().to_string());
        }
    }
    if let Some(want) = authorization
        && sent_auth.as_deref() != Some(want)
    {
        let mut out = conn;
        out.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"charts\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return out.flush();
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut out = conn;
    let path = path.split('?').next().unwrap_or("");
    let found = files.get(path);
    match (method, found) {
        ("GET" | "HEAD", Some(body)) => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            if method == "GET" {
                out.write_all(&body)?;
                if path == K3S_PATH {
                    hits.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        ("GET" | "HEAD", None) => out.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?,
        _ => out.write_all(
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?,
    }
    out.flush()
}

/// Deterministic stand-in bytes for the k3s binary (not an executable: nothing runs it here).
pub fn k3s_standin(len: usize) -> Vec<u8> {
    let mut out =
        b"#!/bin/sh\n# sparkgap demo stand-in for the k3s binary; not k3s.\nexit 0\n".to_vec();
    let mut rng = super::images::Prng::new(0x006b_3373);
    let start = out.len();
    out.resize(len.max(start), 0);
    rng.fill(&mut out[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn get(url_addr: &str, path: &str) -> Vec<u8> {
        let mut s = TcpStream::connect(url_addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_the_image_list_beside_the_binary() {
        let (url, server) = serve_release(vec![1u8, 2, 3], Some("a:1\n".into())).unwrap();
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches(K3S_PATH)
            .to_string();
        assert!(get(&addr, IMAGES_PATH).ends_with(b"\r\n\r\na:1\n"));
        assert_eq!(server.downloads(), 0, "only k3s downloads are counted");
    }

    #[test]
    fn serves_the_bytes_and_404s_elsewhere() {
        let body = k3s_standin(10_000);
        let (url, server) = serve_file(body.clone()).unwrap();
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches(K3S_PATH)
            .to_string();
        let resp = get(&addr, K3S_PATH);
        assert!(resp.starts_with(b"HTTP/1.1 200"));
        assert!(resp.ends_with(&body));
        assert!(get(&addr, "/other").starts_with(b"HTTP/1.1 404"));
        assert!(get(&addr, IMAGES_PATH).starts_with(b"HTTP/1.1 404"));
        assert_eq!(server.downloads(), 1);
        drop(server);
        // Tests in this binary run in parallel and bind ephemeral ports too: one may already hold
        // the freed port. Whatever answers there now must not be this server.
        assert!(
            TcpStream::connect(&addr).is_err() || !get(&addr, K3S_PATH).ends_with(&body),
            "server still listening after drop"
        );
    }
}
