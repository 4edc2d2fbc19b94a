// Compiles proto/*.proto with protox (pure Rust), so no system protoc is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let link = protox::compile(["proto/link.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(link)?;
    let api = protox::compile(["proto/api.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(api)?;
    Ok(())
}
