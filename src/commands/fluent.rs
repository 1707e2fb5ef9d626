//! `portwarden export-fluent-bit DIR`: puts the standalone launcher where a
//! Fluent Bit sidecar can run it (the seed shares such a volume, e.g.
//! `/var/alertlogic/lib/fluent-bit`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

/// The launcher's file name, beside the agent's binary and in the export.
const LAUNCHER: &str = "fluent-launch";

pub(crate) fn export_fluent_bit(dir: &Path) -> anyhow::Result<ExitCode> {
    let me = std::env::current_exe().context("cannot find the agent's own binary")?;
    let launcher = me.with_file_name(LAUNCHER);
    anyhow::ensure!(
        launcher.is_file(),
        "{} not found beside the agent (build it with `cargo build -p portwarden-logs --bin fluent-launch`)",
        launcher.display()
    );
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let target = dir.join(LAUNCHER);
    // Copy beside, then rename: a sidecar never runs a half-written file.
    let tmp = dir.join(format!(".{LAUNCHER}.tmp"));
    std::fs::copy(&launcher, &tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &target)?;
    println!("{}", target.display());
    Ok(ExitCode::SUCCESS)
}
