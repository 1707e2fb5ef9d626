//! Path resolution inside a host root.
//!
//! When the agent runs in a container, the host's filesystem is mounted at a
//! host root such as `/host`. Absolute symlinks there (`/var/run -> /run` on
//! Debian) point at the *host's* `/run`, so following them with the agent's
//! own `canonicalize` would land in the agent's filesystem. This module
//! resolves symlinks component by component, re-rooting absolute targets at
//! the host root, the way `chroot` would.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Most symlinks followed before giving up, as Linux's `MAXSYMLINKS`.
const MAX_SYMLINKS: usize = 40;

/// Resolves `path` (absolute, as seen on the host) to a path under `root`
/// with every symlink followed inside `root`.
///
/// A component that does not exist ends resolution early: the result then
/// names the missing path, so the caller's `stat` reports it as missing.
pub fn resolve_in_root(root: &Path, path: &Path) -> io::Result<PathBuf> {
    let mut pending: VecDeque<OsString> = normal_components(path).collect();
    let mut resolved = root.to_path_buf();
    let mut depth = 0usize; // components of `resolved` below `root`
    let mut links = 0usize;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            if depth > 0 {
                resolved.pop();
                depth -= 1;
            }
            continue;
        }
        let next = resolved.join(&part);
        let meta = match std::fs::symlink_metadata(&next) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                resolved = next;
                resolved.extend(pending);
                return Ok(resolved);
            }
            Err(e) => return Err(e),
        };
        if !meta.file_type().is_symlink() {
            resolved = next;
            depth += 1;
            continue;
        }
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(io::Error::other(format!("too many levels of symbolic links at {}", next.display())));
        }
        let target = std::fs::read_link(&next)?;
        if target.is_absolute() {
            resolved = root.to_path_buf();
            depth = 0;
        }
        for (i, c) in normal_components(&target).enumerate() {
            pending.insert(i, c);
        }
    }
    Ok(resolved)
}

/// The path's names and `..`s, without the root and `.` components.
fn normal_components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(name) => Some(name.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pw-hostpath-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    #[test]
    fn absolute_symlinks_stay_inside_the_root() {
        let root = scratch("abs");
        std::fs::create_dir_all(root.join("run")).expect("mkdir");
        std::fs::create_dir_all(root.join("var")).expect("mkdir");
        symlink("/run", root.join("var/run")).expect("symlink");
        std::fs::write(root.join("run/docker.sock"), b"").expect("write");
        let got = resolve_in_root(&root, Path::new("/var/run/docker.sock")).expect("resolve");
        assert_eq!(got, root.join("run/docker.sock"));
    }

    #[test]
    fn relative_symlinks_and_dotdot_cannot_escape() {
        let root = scratch("rel");
        std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
        symlink("../../../../etc", root.join("a/b/up")).expect("symlink");
        let got = resolve_in_root(&root, Path::new("/a/b/up/passwd")).expect("resolve");
        assert_eq!(got, root.join("etc/passwd"));
    }

    #[test]
    fn missing_components_are_kept_for_the_caller_to_report() {
        let root = scratch("missing");
        let got = resolve_in_root(&root, Path::new("/run/crio/crio.sock")).expect("resolve");
        assert_eq!(got, root.join("run/crio/crio.sock"));
    }

    #[test]
    fn symlink_loops_are_an_error_not_a_hang() {
        let root = scratch("loop");
        symlink("/b", root.join("a")).expect("symlink");
        symlink("/a", root.join("b")).expect("symlink");
        assert!(resolve_in_root(&root, Path::new("/a/x")).is_err());
    }
}
