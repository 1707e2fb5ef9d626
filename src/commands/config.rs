//! `portwarden config check`: the configuration has already been loaded and
//! validated by the time this runs (errors name the key and line); this
//! adds the problems only the host can reveal, and says what would run.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{Config, SuricataMode};

pub(crate) async fn config_check(config: &Config, file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let mut problems = Vec::new();
    let nids = &config.nids;
    let managed = nids.suricata == SuricataMode::Managed && nids.local;
    if nids.active() && managed {
        // Suricata checks its config and every rule; its messages name the
        // file and line. A scratch directory keeps a running agent's files.
        let mut options = nids.options().suricata();
        options.run_dir = std::env::temp_dir().join(format!("portwarden-check-{}", std::process::id()));
        let tested = options.test().await;
        let _ = std::fs::remove_dir_all(&options.run_dir);
        match tested {
            Ok(()) => println!("suricata -T: config and rules accepted"),
            Err(e) if e.starts_with("cannot run") => {}
            Err(e) => problems.push(format!("Suricata rejects the config or rules:\n{e}")),
        }
    }
    if nids.enabled == Some(true) && nids.suricata == SuricataMode::Managed {
        if !nids.rules.exists() {
            problems.push(format!("nids.rules: {} does not exist", nids.rules.display()));
        }
        let binary = &nids.suricata_binary;
        let found = if binary.components().count() > 1 {
            binary.exists()
        } else {
            std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(binary).is_file()))
        };
        if !found {
            problems.push(format!("nids.suricata_binary: `{}` not found (detection would be off)", binary.display()));
        }
    }
    if let Some(socket) = &config.logs.forward.unix_socket {
        if socket.parent().is_some_and(|d| !d.as_os_str().is_empty() && !d.exists()) {
            problems.push(format!("logs.forward.unix_socket: directory of {} does not exist", socket.display()));
        }
    }
    let source = file.map_or_else(|| "defaults (no --config)".to_owned(), |f| f.display().to_string());
    if problems.is_empty() {
        println!("{source}: no problems");
        println!(
            "would run: logs {}, detection {}, capture {}, lock {}",
            if config.logs.enabled { "on" } else { "off" },
            if nids.active() { "on" } else { "off" },
            if config.capture.enabled { "on" } else { "off" },
            config.lock_file().display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        eprintln!("{source}: {p}");
    }
    Ok(ExitCode::FAILURE)
}
