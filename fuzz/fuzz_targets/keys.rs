//! The files users hand over as keys and kubeconfigs, over arbitrary bytes: a minisign secret
//! key (`build --sign-key`, with the check that tells a public key given in its place), a public
//! key (`--pubkey`, likewise for a secret key), a kubeconfig (`--kubeconfig`). Each must return,
//! never panic or hang, and no file is ever read as both halves of a key pair.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("input");
    std::fs::write(&file, data).expect("write the input");
    let secret = sparkgap::bundle::SignKey::load(&file, None).is_ok();
    let public = sparkgap::bundle::check_public_key(&file).is_ok();
    assert!(
        !(secret && public),
        "one file was read as both the secret and the public key"
    );
    let _ = sparkgap::cluster::read_kubeconfig(&file);
});
