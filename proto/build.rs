//! Generates `portwarden.v1` from `proto/portwarden/v1/portwarden.proto`
//! (needs `protoc`; `scripts/install-build-deps.sh` installs it).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/portwarden/v1/portwarden.proto");
    tonic_prost_build::configure()
        // Frames are sliced out of the received buffer, not copied.
        .bytes(".portwarden.v1.Packet.data")
        .compile_protos(&["proto/portwarden/v1/portwarden.proto"], &["proto"])?;
    Ok(())
}
