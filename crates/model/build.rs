//! Compiles the vendored `proto/onnx.proto` (copied verbatim from the `onnx==1.22.0` wheel)
//! into prost types. protox is a pure-Rust protobuf compiler, so no `protoc` is needed on
//! the build machine.
fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["onnx.proto"], ["proto"]).expect("vendored onnx.proto must compile");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("prost code generation for onnx.proto");
}
