#![no_main]
// The gguf reader under libFuzzer: see crates/fuzz-targets.
libfuzzer_sys::fuzz_target!(|data: &[u8]| m2w_fuzz_targets::gguf(data));
