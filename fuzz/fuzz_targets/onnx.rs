#![no_main]
// The onnx reader under libFuzzer: see crates/fuzz-targets.
libfuzzer_sys::fuzz_target!(|data: &[u8]| m2w_fuzz_targets::onnx(data));
