//! The `portwarden` binary. Everything it does lives in the library.

use std::process::ExitCode;

use clap::Parser;

/// jemalloc rather than glibc's malloc: log records are allocated on the
/// sources' threads and freed on the outputs', which glibc makes costly,
/// and capture threads that come and go with containers fragment glibc's
/// per-thread arenas (see `bench/` and `tests/examples/soak.rs`).
#[cfg(all(feature = "jemalloc", target_os = "linux"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// One background thread hands pages freed after a burst back to the kernel
/// (after jemalloc's default ten-second decay), so an agent that went idle
/// after churn shrinks without waiting for its next allocations. Eight
/// arenas whatever the core count (jemalloc's default is four per core):
/// what was measured on two cores is what a 64-core node gets, rather than
/// a capture thread per arena each keeping its own free pages.
#[cfg(all(feature = "jemalloc", target_os = "linux"))]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 58] = b"background_thread:true,max_background_threads:1,narenas:8\0";

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
