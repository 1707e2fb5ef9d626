//! Pid files the hook waits for someone to read, and the directories it
//! has marked for them (one mark per directory, however many wait there).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use portwarden_core::Container;

/// A container whose pid file is awaited.
#[derive(Clone, Debug)]
pub(crate) struct Awaited {
    pub(crate) container: Container,
    pub(crate) expires: Instant,
}

/// What adding an awaited pid file asks of the marks.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Added {
    /// The directory holds nothing else awaited: mark it.
    MarkDir(PathBuf),
    /// It is marked already.
    Marked,
}

/// The awaited pid files, by the path the agent sees them under.
#[derive(Default)]
pub(crate) struct Pending {
    files: HashMap<PathBuf, Awaited>,
    dirs: HashMap<PathBuf, usize>,
}

impl Pending {
    /// Awaits `file`; the same file again (conmon, then the runtime it
    /// runs) keeps one entry with the later deadline.
    pub(crate) fn add(&mut self, file: PathBuf, awaited: Awaited) -> Added {
        let dir = parent(&file);
        if let Some(old) = self.files.get_mut(&file) {
            old.expires = old.expires.max(awaited.expires);
            return Added::Marked;
        }
        self.files.insert(file, awaited);
        let count = self.dirs.entry(dir.clone()).or_default();
        *count += 1;
        if *count == 1 { Added::MarkDir(dir) } else { Added::Marked }
    }

    /// Extends the wait for `file` when it is awaited already (conmon's
    /// create, then its runtime's); false when it is not.
    pub(crate) fn add_again(&mut self, file: &Path, expires: Instant) -> bool {
        let Some(old) = self.files.get_mut(file) else { return false };
        old.expires = old.expires.max(expires);
        true
    }

    /// Stops awaiting `file`: what was awaited, and the directory to
    /// unmark when nothing else there is.
    pub(crate) fn take(&mut self, file: &Path) -> Option<(Awaited, Option<PathBuf>)> {
        let awaited = self.files.remove(file)?;
        Some((awaited, self.release(parent(file))))
    }

    /// Drops what expired by `now`: each file, and the directories to unmark.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(PathBuf, Option<PathBuf>)> {
        let gone: Vec<PathBuf> = self.files.iter().filter(|(_, a)| a.expires <= now).map(|(f, _)| f.clone()).collect();
        gone.into_iter()
            .map(|f| {
                self.files.remove(&f);
                let dir = self.release(parent(&f));
                (f, dir)
            })
            .collect()
    }

    /// The earliest deadline.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.files.values().map(|a| a.expires).min()
    }

    fn release(&mut self, dir: PathBuf) -> Option<PathBuf> {
        let count = self.dirs.get_mut(&dir)?;
        *count -= 1;
        if *count > 0 {
            return None;
        }
        self.dirs.remove(&dir);
        Some(dir)
    }
}

fn parent(file: &Path) -> PathBuf {
    file.parent().unwrap_or(Path::new("/")).to_path_buf()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use portwarden_core::{ContainerId, RuntimeName};

    use super::*;

    fn awaited(id: &str, expires: Instant) -> Awaited {
        Awaited { container: Container::new(RuntimeName::from_static("t"), ContainerId::new(id)), expires }
    }

    #[test]
    fn one_mark_per_directory_released_with_its_last_file() {
        let now = Instant::now();
        let mut p = Pending::default();
        assert_eq!(p.add("/d/a.pid".into(), awaited("a", now)), Added::MarkDir("/d".into()));
        assert_eq!(p.add("/d/b.pid".into(), awaited("b", now)), Added::Marked);
        assert_eq!(p.add("/d/a.pid".into(), awaited("a", now + Duration::from_secs(5))), Added::Marked);
        let (a, unmark) = p.take(Path::new("/d/a.pid")).expect("awaited");
        assert_eq!((a.container.id.as_str(), unmark), ("a", None));
        assert!(p.take(Path::new("/d/a.pid")).is_none(), "taken once");
        assert_eq!(p.expire(now), vec![(PathBuf::from("/d/b.pid"), Some(PathBuf::from("/d")))]);
        assert!(p.next_expiry().is_none());
        assert_eq!(p.add("/d/c.pid".into(), awaited("c", now)), Added::MarkDir("/d".into()), "marked afresh");
    }
}
