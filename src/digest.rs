//! `sha256:<hex>` digests: computing them over bytes and streams, and parsing them safely
//! (a digest names a file in caches and bundles, so it is validated before it becomes a path).

use std::io::Read;

use sha2::{Digest as _, Sha256};

/// `sha256:<64 lowercase hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hash a reader to its end; returns (`<hex>`, bytes read).
pub fn sha256_reader(mut r: impl Read) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// A reader that hashes what passes through it: `hex()` is the sha256 of every byte read.
pub struct Sha256Reader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Sha256Reader<R> {
    pub fn new(inner: R) -> Sha256Reader<R> {
        Sha256Reader {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// `<hex>` of what was read.
    pub fn hex(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

impl<R: Read> Read for Sha256Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The 64-hex part of a `sha256:` digest, or None when the string is not exactly that. Only
/// the result of this function may be used to build a path.
pub fn sha256_hex_of(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        assert_eq!(
            sha256_digest(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn rejects_path_like_digests() {
        assert!(sha256_hex_of("sha256:../../etc/passwd").is_none());
        assert!(sha256_hex_of(&format!("sha256:{}", "A".repeat(64))).is_none());
        assert!(sha256_hex_of(&format!("sha512:{}", "a".repeat(64))).is_none());
        assert!(sha256_hex_of(&format!("sha256:{}", "a".repeat(64))).is_some());
    }
}
