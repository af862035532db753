//! The spec parser and validation over arbitrary bytes: `SpecFile::from_bytes` (UTF-8 check,
//! YAML → `Appliance`, validation, line lookup of each issue) must return, never panic or hang.
//! Whatever validation accepts must render every stage (the promise `sparkgap render` makes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sparkgap::spec::SpecFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = SpecFile::from_bytes("appliance.yaml".as_ref(), data.to_vec()) {
        sparkgap::stages::render_all(&spec.appliance).expect("a valid spec renders");
    }
});
