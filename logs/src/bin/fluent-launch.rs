//! The standalone Fluent Bit launcher, small enough to copy into a Fluent
//! Bit image's shared volume (`portwarden export-fluent-bit DIR`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(portwarden_logs::fluent_launch::main(&args));
}
