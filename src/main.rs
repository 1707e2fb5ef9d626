//! The `portwarden` binary. Everything it does lives in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = portwarden::cli::Cli::parse();
    match portwarden::main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portwarden: {e:#}");
            ExitCode::from(2)
        }
    }
}
