//! The conflict guard: one agent per host. The agent holds an exclusive
//! `flock` on a file in the host's `/run` (reached through the host's PID 1,
//! so agents in different containers on one host see the same file) for as
//! long as it runs; a second agent is refused, told who holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A held lock; released when dropped (or when the process dies).
pub(crate) struct HostLock {
    _file: File,
    path: PathBuf,
}

impl HostLock {
    /// Takes the lock at the first of `paths` that can be opened, or
    /// explains who holds it. The first is the host's `/run` (through its
    /// PID 1); a second, the agent's own `/run`, serves where that cannot be
    /// reached (some sandboxes and user namespaces) and is the host's own
    /// for an agent running on the host. `Ok(None)` when none can be
    /// opened (as in a sidecar): the agent runs, unguarded, and says so.
    pub(crate) fn acquire(paths: &[PathBuf]) -> anyhow::Result<Option<HostLock>> {
        for (i, path) in paths.iter().enumerate() {
            match Self::open(path) {
                Ok(file) => {
                    if i > 0 {
                        tracing::info!(lock = %path.display(), unreachable = %paths[0].display(),
                            "the host's /run is out of reach; the agent lock is in the agent's own /run");
                    }
                    return Self::take(file, path).map(Some);
                }
                Err(e) => tracing::debug!(lock = %path.display(), error = %e, "cannot open the agent lock here"),
            }
        }
        tracing::warn!(locks = ?paths, "cannot open the agent lock; the one-agent-per-host guard is off");
        Ok(None)
    }

    fn open(path: &Path) -> std::io::Result<File> {
        path.parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path))
    }

    fn take(mut file: File, path: &Path) -> anyhow::Result<HostLock> {
        // SAFETY: a valid fd; flock has no memory effects.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            anyhow::bail!(
                "another portwarden agent is already running on this host ({}; lock {}): only one may run per host",
                if holder.is_empty() { "holder unknown" } else { holder },
                path.display()
            );
        }
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let me = format!("pid {} on {}", std::process::id(), hostname.trim());
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(me.as_bytes())?;
        Ok(HostLock { _file: file, path: path.to_path_buf() })
    }

    /// Where the lock is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_told_who_holds_it() {
        let dir = std::env::temp_dir().join(format!("pw-lock-test-{}", std::process::id()));
        let path = vec![dir.join("agent.lock")];
        let first = HostLock::acquire(&path).expect("first").expect("opened");
        let err = HostLock::acquire(&path).err().expect("second refused");
        let text = format!("{err:#}");
        assert!(text.contains("already running") && text.contains(&format!("pid {}", std::process::id())), "{text}");
        drop(first);
        HostLock::acquire(&path).expect("free again").expect("opened");
        let unreachable = PathBuf::from("/proc/no/such/dir/lock");
        assert!(HostLock::acquire(std::slice::from_ref(&unreachable)).expect("unguarded").is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_unreachable_host_run_falls_back_to_the_agents_own() {
        let dir = std::env::temp_dir().join(format!("pw-lock-fallback-{}", std::process::id()));
        let paths =
            vec![PathBuf::from("/proc/no/such/dir/1/root/run/portwarden.lock"), dir.join("run/portwarden.lock")];
        let held = HostLock::acquire(&paths).expect("taken").expect("in the fallback");
        assert_eq!(held.path(), paths[1]);
        // And a second agent finds it there.
        assert!(HostLock::acquire(&paths).is_err());
        drop(held);
        let _ = std::fs::remove_dir_all(dir);
    }
}
