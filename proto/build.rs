//! Generates the message and service code from `proto/kiln/v1/*.proto` with a protobuf
//! compiler written in Rust (protox), so building kiln needs no `protoc` on the machine.

fn main() {
    const FILES: [&str; 3] = [
        "proto/kiln/v1/common.proto",
        "proto/kiln/v1/runner.proto",
        "proto/kiln/v1/control.proto",
    ];
    for file in FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = match protox::compile(FILES, ["proto"]) {
        Ok(descriptors) => descriptors,
        Err(error) => panic!("the .proto files do not compile: {error:?}"),
    };
    if let Err(error) = tonic_prost_build::configure().compile_fds(descriptors) {
        panic!("cannot generate code from the .proto files: {error}");
    }
}
