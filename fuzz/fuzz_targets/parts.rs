//! A split bundle's parts file (`NAME.parts.json`) as `inspect`, `install` and `up` meet it:
//! `parse_parts_file` must never panic; an accepted one's sizes add up. When the parts it lists
//! are small, they are written beside it (cut from the input's own bytes) and `inspect` reads
//! them as one bundle: it may refuse, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sparkgap::bundle::parts::parse_parts_file;
use sparkgap::bundle::read::{ReadOptions, inspect};

fuzz_target!(|data: &[u8]| {
    let Ok(index) = parse_parts_file(data) else {
        return;
    };
    let sum: u64 = index.parts.iter().map(|p| p.size).sum();
    assert_eq!(sum, index.size, "accepted parts that do not add up");
    let last = index.parts.len() - 1;
    for (i, p) in index.parts.iter().enumerate() {
        assert!(p.size <= index.part_size && (i == last || p.size == index.part_size));
    }
    if index.size > 1 << 16 {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut at = 0usize;
    for p in &index.parts {
        let bytes: Vec<u8> = (0..p.size as usize)
            .map(|k| data[(at + k) % data.len()])
            .collect();
        at += p.size as usize;
        std::fs::write(dir.path().join(&p.file), bytes).expect("write part");
    }
    let parts_file = dir.path().join(format!("{}.parts.json", index.bundle));
    std::fs::write(&parts_file, data).expect("write parts file");
    let _ = inspect(&parts_file, &ReadOptions::default());
    let _ = inspect(dir.path(), &ReadOptions::default());
});
