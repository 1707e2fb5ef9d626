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
    /// Takes the lock at `path`, or explains who holds it. `Ok(None)` when
    /// the file cannot be opened at all (no privilege to reach the host's
    /// `/run`, as in a sidecar): the agent runs, unguarded, and says so.
    pub(crate) fn acquire(path: &Path) -> anyhow::Result<Option<HostLock>> {
        let opened = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path));
        let mut file = match opened {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(lock = %path.display(), error = %e,
                    "cannot open the agent lock; the one-agent-per-host guard is off");
                return Ok(None);
            }
        };
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
        Ok(Some(HostLock { _file: file, path: path.to_path_buf() }))
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
        let path = dir.join("agent.lock");
        let first = HostLock::acquire(&path).expect("first").expect("opened");
        let err = HostLock::acquire(&path).err().expect("second refused");
        let text = format!("{err:#}");
        assert!(text.contains("already running") && text.contains(&format!("pid {}", std::process::id())), "{text}");
        drop(first);
        HostLock::acquire(&path).expect("free again").expect("opened");
        assert!(HostLock::acquire(Path::new("/proc/no/such/dir/lock")).expect("unguarded").is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
