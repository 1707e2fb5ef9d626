//! The `portwarden` binary. Everything it does lives in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = portwarden::cli::Cli::parse();
    match portwarden::main(cli) {
        Ok(code) => code,
        // `portwarden ps | head`: the reader left; that is not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portwarden: {e:#}");
            ExitCode::from(2)
        }
    }
}
