//! The lock reader over arbitrary bytes: `Lock::from_slice` returns, never panics; a lock it
//! accepts writes back to bytes that read as the same lock, and its blob lists can be computed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sparkgap::lock::Lock;

fuzz_target!(|data: &[u8]| {
    let Ok(lock) = Lock::from_slice("appliance.lock", data) else {
        return;
    };
    let again = Lock::from_slice("rewritten", &lock.to_bytes()).expect("our own bytes read back");
    let mut sorted = lock.clone();
    sorted.images.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(again, sorted);
    let _ = lock.all_blobs();
    // What `sparkgap build` and the Nix fetcher derive from a lock: blobs and their sources.
    let _ = sparkgap::oci::pull::needed_blobs(&lock);
    for img in &lock.images {
        let _ = img.size();
    }
});
