//! One module per CLI command.

mod alerts;
mod capture;
mod config;
mod fluent;
mod health;
mod logs;
mod ps;
mod run;
mod runtimes;
mod status;

pub(crate) use alerts::alerts;
pub(crate) use capture::capture;
pub(crate) use config::config_check;
pub(crate) use fluent::export_fluent_bit;
pub(crate) use health::health;
pub(crate) use logs::{TextStdout, logs};
pub(crate) use ps::ps;
pub(crate) use run::run;
pub(crate) use runtimes::runtimes;
pub(crate) use status::status;

use std::io::Write;

use portwarden_core::Selector;
use portwarden_proto::v1;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// `--container` and `--pod` as the API's selector.
fn wire_selector(containers: &[String], pod: Option<&str>) -> v1::Selector {
    v1::Selector::new(containers, pod)
}

/// Matches containers by name or id prefix (4+ characters), or by pod
/// `NS/NAME`; with neither, every container. The daemon matches the same way.
fn selector(containers: &[String], pod: Option<&str>) -> anyhow::Result<Selector> {
    wire_selector(containers, pod).matcher().map_err(|e| anyhow::anyhow!("--container/--pod: {e}"))
}

/// A container's name on the wire, or its id when unnamed, or `-`.
fn wire_name(c: Option<&v1::Container>) -> &str {
    c.map_or("-", |c| if c.name.is_empty() { &c.id } else { &c.name })
}

/// Prints a daemon's stream, a line per message (`None` skips one), until
/// it ends, the reader of stdout goes away, or SIGINT/SIGTERM. `missed`
/// reads how many `what` the daemon skipped before a message.
async fn print_stream<T>(
    mut stream: tonic::Streaming<T>,
    what: &str,
    missed: impl Fn(&T) -> u64,
    mut line: impl FnMut(T) -> Option<String>,
) -> anyhow::Result<std::process::ExitCode> {
    let mut interrupt = Interrupt::new()?;
    loop {
        let message = tokio::select! {
            () = interrupt.wait() => break,
            got = stream.message() => match got.map_err(crate::api::status_error)? {
                Some(message) => message,
                None => break,
            },
        };
        let skipped = missed(&message);
        if skipped > 0 {
            eprintln!("portwarden: {skipped} {what} skipped: this terminal read too slowly");
        }
        let Some(line) = line(message) else { continue };
        let mut out = std::io::stdout().lock();
        if out.write_all(line.as_bytes()).and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// SIGINT or SIGTERM: the end of a following command.
struct Interrupt {
    int: Signal,
    term: Signal,
}

impl Interrupt {
    fn new() -> std::io::Result<Interrupt> {
        Ok(Interrupt { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())? })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Prints `value` as pretty JSON on stdout. Serialised first, so a reader
/// that closed the pipe surfaces as a plain `BrokenPipe` io error.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

/// Prints rows under headers, columns padded to their widest cell.
fn print_table(out: &mut impl Write, headers: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: &mut dyn Iterator<Item = &str>| -> std::io::Result<()> {
        let mut text = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}   "));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, &mut headers.iter().copied())?;
    for row in rows {
        line(out, &mut row.iter().map(String::as_str))?;
    }
    Ok(())
}
