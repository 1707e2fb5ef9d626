//! One module per CLI command.

mod capture;
mod config;
mod fluent;
mod logs;
mod ps;
mod run;
mod runtimes;
mod status;

pub(crate) use capture::capture;
pub(crate) use config::config_check;
pub(crate) use fluent::export_fluent_bit;
pub(crate) use logs::logs;
pub(crate) use ps::ps;
pub(crate) use run::run;
pub(crate) use runtimes::runtimes;
pub(crate) use status::status;

use std::io::Write;
use std::sync::Arc;

use portwarden_core::{Container, Selector};

/// Matches containers by name or id prefix, or by pod `NS/NAME`; with
/// neither, every container.
fn selector(containers: &[String], pod: Option<&str>) -> anyhow::Result<Selector> {
    let pod = match pod {
        Some(p) => {
            let (ns, name) =
                p.split_once('/').ok_or_else(|| anyhow::anyhow!("--pod wants NAMESPACE/NAME, got `{p}`"))?;
            Some((ns.to_owned(), name.to_owned()))
        }
        None => None,
    };
    let wanted: Vec<String> = containers.to_vec();
    Ok(Arc::new(move |c: &Container| {
        if wanted.is_empty() && pod.is_none() {
            return true;
        }
        let by_name = wanted.iter().any(|w| c.name == *w || (w.len() >= 4 && c.id.as_str().starts_with(w.as_str())));
        let by_pod = pod
            .as_ref()
            .is_some_and(|(ns, name)| c.pod.as_ref().is_some_and(|p| p.namespace == *ns && p.name == *name));
        by_name || by_pod
    }))
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
