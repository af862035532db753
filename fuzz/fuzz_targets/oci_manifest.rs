//! OCI manifest / index / config parsing and the platform resolver (src/oci/manifest.rs, and
//! the pure part of src/oci/resolve.rs) over arbitrary bytes, as a registry could send them.
//! The first byte picks the Content-Type header and the wanted platform; the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sparkgap::oci::manifest::{self, ACCEPTED, Document};
use sparkgap::spec::Platform;

const WANTED: [&str; 5] = [
    "linux/arm64",
    "linux/arm64/v8",
    "linux/amd64",
    "linux/arm/v7",
    "windows/amd64",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let header = ACCEPTED.get(usize::from(pick & 7)).copied();
    let want = Platform::parse(WANTED[usize::from(pick >> 3) % WANTED.len()]).expect("platform");
    match manifest::parse_document(body, header) {
        Ok(Document::Index(entries)) => {
            if let Some(e) = manifest::choose(&entries, &want) {
                let p = e.platform.as_ref().expect("chosen entries have a platform");
                assert!(
                    manifest::platform_matches(&want, p),
                    "{p} chosen for {want}"
                );
            }
            let _ = manifest::platforms_present(&entries);
        }
        Ok(Document::Manifest(m)) => assert!(!m.media_type.is_empty()),
        Err(e) => assert!(!e.is_empty()),
    }
    if let Ok(p) = manifest::config_platform(body) {
        let _ = manifest::platform_matches(&want, &p);
        let _ = p.to_string();
    }
    // References as a spec writes them, then the name the node imports the image under.
    if let Ok(text) = std::str::from_utf8(body)
        && text.len() < 512
        && let Ok(r) = oci_client::Reference::try_from(text)
    {
        let _ = sparkgap::oci::resolve::image_name(&r);
    }
    // A registry's Retry-After header.
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = sparkgap::oci::retry::parse_retry_after(text);
    }
});
