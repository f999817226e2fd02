//! Artifact loading on arbitrary bytes: decoding, checks, graph import and session setup must
//! return errors, never panic. `cargo +nightly fuzz run artifact_load` (seed the corpus with
//! real artifacts from `sparkc compile`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sparkc_runtime::{Artifact, Device, Session};

fuzz_target!(|data: &[u8]| {
    if let Ok(artifact) = Artifact::from_bytes(bytes::Bytes::copy_from_slice(data)) {
        let _ = Session::new(&artifact, Device::Cpu);
    }
});
