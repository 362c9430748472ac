#![no_main]
// Every target in one binary, chosen by M2W_FUZZ_TARGET (onnx, gguf, ...): what the GPU
// machine's many cores run, since one binary travels where seven would not.
use std::sync::OnceLock;

static TARGET: OnceLock<m2w_fuzz_targets::Target> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let target = TARGET.get_or_init(|| {
        let name = std::env::var("M2W_FUZZ_TARGET").unwrap_or_default();
        m2w_fuzz_targets::TARGETS
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("M2W_FUZZ_TARGET={name:?}: one of the names in m2w_fuzz_targets::TARGETS"))
            .1
    });
    target(data)
});
