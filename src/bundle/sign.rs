//! minisign-compatible signatures over the exact bytes of `sparkgap-bundle.json`.
//!
//! Keys and signatures are the minisign CLI's file formats, so `minisign -G` keys sign bundles
//! and `minisign -V -m sparkgap-bundle.json` checks what we sign. Never prompts: an encrypted
//! key needs its password passed in (the CLI reads `SPARKGAP_SIGN_PASSWORD`).

use std::io::Cursor;
use std::path::Path;

use minisign::{PublicKey, PublicKeyBox, SecretKey, SecretKeyBox, SignatureBox};

use super::BundleError;

/// A loaded minisign secret key, ready to sign manifests.
pub struct SignKey {
    sk: SecretKey,
    key_id: String,
}

impl std::fmt::Debug for SignKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignKey({})", self.key_id)
    }
}

/// minisign's key id as its CLI prints it: the 8 key-number bytes as a little-endian u64 in hex.
pub(crate) fn key_id(keynum: &[u8]) -> String {
    let mut b = [0u8; 8];
    let n = keynum.len().min(8);
    b[..n].copy_from_slice(&keynum[..n]);
    format!("{:016X}", u64::from_le_bytes(b))
}

impl SignKey {
    /// Read a minisign secret key file. `password` is needed only for an encrypted key.
    pub fn load(path: &Path, password: Option<String>) -> Result<SignKey, BundleError> {
        let err = |message: String| BundleError::Key {
            path: path.display().to_string(),
            message,
        };
        let text = key_text("secret key", path)?;
        let boxed = SecretKeyBox::from_string(&text)
            .map_err(|e| err(format!("not a minisign secret key file ({e})")))?;
        let sk = match SecretKey::from_unencrypted_box(boxed.clone()) {
            Ok(sk) if !sk.is_encrypted() => sk,
            _ if let Some(sk) = unencrypted_cli_key(&text) => sk,
            _ => match password {
                Some(pw) => SecretKey::from_box(boxed, Some(pw)).map_err(|e| {
                    err(format!(
                        "cannot decrypt the secret key ({e}); check SPARKGAP_SIGN_PASSWORD"
                    ))
                })?,
                None => {
                    // Tell an encrypted key from a file that is no key at all.
                    return Err(err(
                        if text.lines().count() >= 2 && text.starts_with("untrusted comment:") {
                            "the secret key is encrypted; set SPARKGAP_SIGN_PASSWORD, or make an \
                             unencrypted key with `minisign -G -W`"
                                .into()
                        } else {
                            "not a minisign secret key file".into()
                        },
                    ));
                }
            },
        };
        let key_id = key_id(sk.keynum());
        Ok(SignKey { sk, key_id })
    }

    /// The key id as minisign prints it (16 upper-case hex digits).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The `.minisig` file for `data`. The trusted comment is fixed by `mtime` so it does not
    /// depend on the clock; the signature itself is hedged (randomised) by minisign, so two
    /// signings of the same manifest differ in those bytes only.
    pub fn sign(&self, data: &[u8], mtime: u64) -> Result<Vec<u8>, BundleError> {
        let trusted = format!("timestamp:{mtime}\tfile:{}\thashed", super::MANIFEST_PATH);
        let untrusted = format!("signature from sparkgap, key {}", self.key_id);
        let sig = minisign::sign(
            None,
            &self.sk,
            Cursor::new(data),
            Some(&trusted),
            Some(&untrusted),
        )
        .map_err(|e| BundleError::Key {
            path: format!("key {}", self.key_id),
            message: format!("signing failed: {e}"),
        })?;
        Ok(sig.into_string().into_bytes())
    }
}

/// An unencrypted key as `minisign -G -W` (the C tool) writes it: no KDF, and the checksum
/// left all zero (the tool computes it only for encrypted keys and never checks it for
/// unencrypted ones). The minisign crate insists on a checksum and calls such a key
/// corrupted; read it as the C tool does. None for anything else.
fn unencrypted_cli_key(text: &str) -> Option<SecretKey> {
    use base64::Engine as _;
    // sig_alg, kdf_alg, chk_alg (2 each), salt 32, opslimit 8, memlimit 8, keynum 8,
    // secret key 64, checksum 32.
    const LEN: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32;
    let line = text.lines().nth(1)?.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(line)
        .ok()?;
    let unencrypted = bytes.len() == LEN
        && bytes[..2] == *b"Ed"
        && bytes[2..4] == [0, 0]
        && bytes[4..6] == *b"B2"
        && bytes[LEN - 32..].iter().all(|b| *b == 0);
    if !unencrypted {
        return None;
    }
    SecretKey::from_bytes(&bytes)
        .ok()
        .filter(|sk| !sk.is_encrypted())
}

/// Which half of a minisign key pair a key file holds, by the size of its key line: a public
/// key is 42 bytes (algorithm, key id, key), a secret key box 158. None for anything else.
fn key_half(text: &str) -> Option<&'static str> {
    use base64::Engine as _;
    let line = text.lines().nth(1).unwrap_or(text.lines().next()?).trim();
    match base64::engine::general_purpose::STANDARD
        .decode(line)
        .ok()?
        .len()
    {
        42 => Some("public"),
        158 => Some("secret"),
        _ => None,
    }
}

/// A key file's text; the input-file rule for missing, empty or unreadable ones, and a word for
/// the other half of the pair given in place of this one (`--sign-key sparkgap.pub`).
fn key_text(what: &'static str, path: &Path) -> Result<String, BundleError> {
    let bytes = crate::input::read(what, path)?;
    let err = |message: String| BundleError::Key {
        path: path.display().to_string(),
        message,
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| err(format!("is not a minisign {what} file (not text)")))?;
    match (what, key_half(&text)) {
        ("secret key", Some("public")) => Err(err(
            "is a minisign public key; --sign-key takes the secret key (the .key file `minisign -G` \
             wrote beside the .pub; keep it off the Spark)"
                .into(),
        )),
        ("public key", Some("secret")) => Err(err(
            "is a minisign secret key; --pubkey takes the public key (the .pub file `minisign -G` \
             wrote beside it); the secret key never needs to leave the build machine"
                .into(),
        )),
        _ => Ok(text),
    }
}

/// Read a minisign public key file (the two-line `.pub` format, or a bare base64 key line).
pub fn load_public_key(path: &Path) -> Result<PublicKey, BundleError> {
    let text = key_text("public key", path)?;
    let parsed = if text.trim().lines().count() == 1 {
        PublicKey::from_base64(text.trim())
    } else {
        PublicKeyBox::from_string(&text).and_then(PublicKey::from_box)
    };
    parsed.map_err(|e| BundleError::Key {
        path: path.display().to_string(),
        message: format!("not a minisign public key: {e}"),
    })
}

/// Check `sig_bytes` (a `.minisig` file) over `data` with `pk`. Err is a sentence naming the
/// key ids involved.
pub fn verify(pk: &PublicKey, data: &[u8], sig_bytes: &[u8]) -> Result<(), String> {
    let want = key_id(pk.keynum());
    let text =
        std::str::from_utf8(sig_bytes).map_err(|_| "the signature file is not text".to_string())?;
    let sig = SignatureBox::from_string(text)
        .map_err(|e| format!("the signature file is not a minisign signature: {e}"))?;
    let got = key_id(sig.keynum());
    if got != want {
        return Err(format!(
            "the manifest is signed by key {got}, not by the trusted key {want}"
        ));
    }
    minisign::verify(pk, &sig, Cursor::new(data), true, false, false).map_err(|e| {
        format!(
            "the signature by key {want} does not match sparkgap-bundle.json ({e}); the manifest \
             was altered or the signature belongs to another bundle"
        )
    })
}
