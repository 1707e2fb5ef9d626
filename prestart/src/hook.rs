//! [`Hook`]: one fanotify group for the whole host. Marked OCI runtimes
//! and monitors tell it when a container is created; a mark on the pid
//! file's directory holds the first read of the pid file (the moment the
//! container's init is parked, before its first instruction) until the
//! capture is attached, or the time limit passes.
//!
//! Three rules keep the host safe: every held event is allowed by its
//! deadline whatever happens; the thread that answers never blocks on
//! anything but the kernel (no network, no disk, no lock held elsewhere
//! for long); and the agent never reads a marked file while an event is
//! held (the pid is read through the event's own fd, which does not
//! notify). If the agent dies, the kernel allows whatever it held.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use portwarden_core::hostpath::resolve_in_root;
use portwarden_core::{Container, OciBundle};
use tracing::{debug, info, warn};

use crate::fanotify::{self, Event, Group};
use crate::invocation::{self, Invocation, Kind};
use crate::paths;
use crate::pending::{Added, Awaited, Pending};
use crate::stats::Stats;

/// How long a runtime's exec may take to complete before its command line
/// is given up on.
const EXEC_WAIT: Duration = Duration::from_millis(100);
/// How often the command line is looked at meanwhile.
const EXEC_POLL: Duration = Duration::from_micros(100);
/// The most of a bundle's `config.json` read.
const MAX_CONFIG: u64 = 4 << 20;
/// The most a pid file may hold.
const MAX_PID_FILE: i64 = 32;
/// The hard limit on holding an event, whatever the configuration says.
pub const HARD_LIMIT: Duration = Duration::from_millis(100);

/// How the hook runs.
#[derive(Clone, Debug)]
pub struct HookOptions {
    /// Where the host's filesystem is (`/` on the host, `/host` in a
    /// container): runtimes, bundles and pid files are looked up under it.
    pub host_root: PathBuf,
    /// Where the host's `/proc` is: containers' namespaces are entered
    /// through it.
    pub proc_root: PathBuf,
    /// More runtime or monitor binaries to mark (paths on the host), beside
    /// the usual places.
    pub runtimes: Vec<PathBuf>,
    /// How long a pid-file read may be held for the capture to attach;
    /// capped at [`HARD_LIMIT`].
    pub answer_within: Duration,
    /// How long a created container's pid file is awaited.
    pub pending_ttl: Duration,
}

impl Default for HookOptions {
    fn default() -> Self {
        Self {
            host_root: PathBuf::from("/"),
            proc_root: PathBuf::from("/proc"),
            runtimes: Vec::new(),
            answer_within: Duration::from_millis(80),
            pending_ttl: Duration::from_secs(10),
        }
    }
}

/// What the hook calls: the agent's side.
pub trait Attach: Send + Sync + 'static {
    /// Who the container in `bundle` is. Called as the runtime starts, with
    /// no event held.
    fn identify(&self, bundle: &OciBundle) -> Container;

    /// The container's init is parked (`pid` and `netns` are set): attach,
    /// then answer `verdict`. Called with the runtime waiting: hand the
    /// work to another thread and return; the hook allows the read at its
    /// deadline if the verdict has not come, and dropping it allows too.
    fn attach(&self, container: Container, verdict: Verdict);
}

/// Why the hook is not running: pre-start attach is off, and containers
/// are attached when their runtime reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Off(pub String);

impl fmt::Display for Off {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How an attach went, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A capture was opened in the container's namespace.
    Attached,
    /// The namespace was captured already.
    Joined,
    /// No capture (not selected, failed).
    NotAttached,
}

/// The answer to one held read. Allowing is all it can do; dropping it
/// allows too.
pub struct Verdict(Arc<Held>);

impl Verdict {
    /// Allows the read now.
    pub fn allow(self, outcome: Outcome) {
        self.0.answer(Some(outcome));
    }
}

impl Drop for Verdict {
    fn drop(&mut self) {
        self.0.answer(Some(Outcome::NotAttached));
    }
}

/// A held permission event.
struct Held {
    shared: Arc<Shared>,
    file: Mutex<Option<OwnedFd>>,
    since: Instant,
    deadline: Instant,
}

impl Held {
    /// Allows the event, once; `None` is the deadline passing.
    fn answer(&self, outcome: Option<Outcome>) {
        let Some(file) = lock(&self.file).take() else { return };
        if let Err(e) = fanotify::allow(self.shared.group.raw(), &file) {
            debug!(error = %e, "answering a held read failed (the kernel allows it when the group closes)");
        }
        let stats = &self.shared.stats;
        stats.answered(self.since.elapsed());
        Stats::bump(match outcome {
            Some(Outcome::Attached) => &stats.attached,
            Some(Outcome::Joined) => &stats.joined,
            Some(Outcome::NotAttached) => &stats.not_attached,
            None => &stats.late,
        });
    }

    fn answered(&self) -> bool {
        lock(&self.file).is_none()
    }
}

/// What the hook's threads share.
struct Shared {
    group: Group,
    stats: Arc<Stats>,
    pending: Mutex<Pending>,
    /// Marked binaries by (device, inode).
    binaries: HashMap<(u64, u64), Kind>,
    options: HookOptions,
    attach: Arc<dyn Attach>,
}

/// A runtime execution to look into.
struct Exec {
    pid: i32,
    kind: Kind,
    binary: (u64, u64),
}

/// The running hook. Dropping it stops it (and allows what it holds).
pub struct Hook {
    stats: Arc<Stats>,
    marked: Vec<PathBuf>,
    stop: OwnedFd,
    threads: Vec<JoinHandle<()>>,
}

impl Hook {
    /// Marks the runtimes found under the host root and starts answering;
    /// [`Off`] says why it cannot (no `CAP_SYS_ADMIN`, an old kernel, no
    /// known runtime, not in the host's PID namespace).
    pub fn start(options: HookOptions, attach: Arc<dyn Attach>) -> Result<Hook, Off> {
        host_pid_namespace(&options.proc_root)?;
        let group = Group::new().map_err(|e| {
            Off(match e.raw_os_error() {
                Some(libc::EPERM) => "no CAP_SYS_ADMIN: fanotify permission events need it".to_owned(),
                Some(libc::EINVAL | libc::ENOSYS) => {
                    format!("the kernel has no fanotify permission events (CONFIG_FANOTIFY_ACCESS_PERMISSIONS): {e}")
                }
                _ => format!("fanotify_init: {e}"),
            })
        })?;
        let mut binaries = HashMap::new();
        let mut marked = Vec::new();
        let user = options.runtimes.iter().map(|p| (p.clone(), paths::kind_of(p)));
        let all = paths::DEFAULT.iter().map(|(p, k)| (PathBuf::from(p), *k)).chain(user);
        for (path, kind) in all {
            let Ok(at) = resolve_in_root(&options.host_root, &path) else { continue };
            let Ok(meta) = std::fs::metadata(&at) else { continue };
            if !meta.is_file() || binaries.contains_key(&(meta.dev(), meta.ino())) {
                continue;
            }
            match group.mark(&at, libc::FAN_OPEN_EXEC_PERM) {
                Ok(()) => {
                    binaries.insert((meta.dev(), meta.ino()), kind);
                    marked.push(path);
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    return Err(Off(format!("the kernel has no FAN_OPEN_EXEC_PERM (needs Linux 5.0): {e}")));
                }
                Err(e) => warn!(path = %at.display(), error = %e, "cannot mark a runtime binary"),
            }
        }
        if marked.is_empty() {
            return Err(Off(format!(
                "no known OCI runtime or monitor (runc, crun, conmon) under {}; name yours in prestart.runtimes",
                options.host_root.display()
            )));
        }
        // SAFETY: eventfd(2); owned below.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(Off(format!("eventfd: {}", io::Error::last_os_error())));
        }
        // SAFETY: a fresh fd nothing else owns.
        let stop = unsafe { OwnedFd::from_raw_fd(raw) };
        let stop_copy = stop.try_clone().map_err(|e| Off(format!("eventfd: {e}")))?;
        let stats = Arc::new(Stats::default());
        let shared =
            Arc::new(Shared { group, stats: Arc::clone(&stats), pending: Mutex::default(), binaries, options, attach });
        let (tx, rx) = mpsc::channel();
        let inspector = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("pw-prestart-args".into())
                .spawn(move || rx.iter().for_each(|exec| inspect(&shared, &exec)))
                .map_err(|e| Off(format!("cannot start a thread: {e}")))?
        };
        let events = std::thread::Builder::new()
            .name("pw-prestart".into())
            .spawn(move || answer_events(&shared, &stop_copy, &tx))
            .map_err(|e| Off(format!("cannot start a thread: {e}")))?;
        info!(marked = ?marked, "pre-start attach on: runtimes marked");
        Ok(Hook { stats, marked, stop, threads: vec![events, inspector] })
    }

    /// The binaries marked, as paths on the host.
    pub fn marked(&self) -> &[PathBuf] {
        &self.marked
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Stops answering: what is held is allowed, the marks go with the group.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        let one: u64 = 1;
        // SAFETY: writes 8 bytes to an eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), (&raw const one).cast(), 8) };
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let s = self.stats.snapshot();
        info!(
            creates = s.creates,
            held = s.held,
            attached = s.attached,
            joined = s.joined,
            late = s.late,
            not_attached = s.not_attached,
            unknown_args = s.unknown_args,
            bad_config = s.bad_config,
            pending_expired = s.pending_expired,
            answer_p99_us = s.answer_p99_us,
            answer_max_us = s.answer_max_us,
            "pre-start hook stopped"
        );
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.shut();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The hook needs the host's PIDs: the pids in its events and pid files
/// must name processes under `proc_root`. A procfs answers `self` in the
/// PID namespace it was mounted for, so the host's `/proc` mounted in the
/// agent's container names another pid than the agent's own unless the
/// agent shares the host's PID namespace.
fn host_pid_namespace(proc_root: &Path) -> Result<(), Off> {
    let link = proc_root.join("self");
    let named = std::fs::read_link(&link).map_err(|e| Off(format!("{}: {e}", link.display())))?;
    if named.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id()) {
        return Err(Off("the agent is not in the host's PID namespace (run it with hostPID / --pid=host)".into()));
    }
    Ok(())
}

/// The event thread: answers every permission event, executions at once,
/// awaited pid-file reads once attached or at their deadline.
fn answer_events(shared: &Arc<Shared>, stop: &OwnedFd, inspector: &mpsc::Sender<Exec>) {
    let mut buf = vec![0u64; 4096];
    let mut held: Vec<Arc<Held>> = Vec::new();
    let mut failed_reads = 0u32;
    loop {
        let now = Instant::now();
        let next = held
            .iter()
            .map(|h| h.deadline)
            .chain(lock(&shared.pending).next_expiry())
            .min()
            .unwrap_or(now + Duration::from_secs(1))
            .min(now + Duration::from_secs(1));
        let wait = next.saturating_duration_since(now);
        let timeout = i32::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(1000);
        let mut fds = [
            libc::pollfd { fd: shared.group.raw(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfds.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if ready < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            warn!(error = %io::Error::last_os_error(), "pre-start hook: poll failed; stopping");
            break;
        }
        if fds[1].revents != 0 {
            break;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            match shared.group.read(&mut buf) {
                Ok(events) => {
                    for event in events {
                        handle(shared, event, inspector, &mut held);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed_reads += 1;
                    if failed_reads.is_power_of_two() {
                        warn!(error = %e, times = failed_reads, "pre-start hook: reading events failed");
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        let now = Instant::now();
        held.retain(|h| {
            if h.deadline <= now {
                h.answer(None);
            }
            !h.answered()
        });
        expire(shared, now);
    }
    for h in held {
        h.answer(Some(Outcome::NotAttached));
    }
}

/// One event.
fn handle(shared: &Arc<Shared>, event: Event, inspector: &mpsc::Sender<Exec>, held: &mut Vec<Arc<Held>>) {
    if event.mask & libc::FAN_Q_OVERFLOW != 0 {
        Stats::bump(&shared.stats.overflows);
    }
    let Some(file) = event.file else { return };
    if event.mask & libc::FAN_ACCESS_PERM != 0 {
        return pid_file_read(shared, file, held);
    }
    // An execution (or anything else): allowed at once, looked into after.
    let binary = fanotify::identity(&file).ok();
    if let Err(e) = fanotify::allow(shared.group.raw(), &file) {
        debug!(error = %e, "allowing an execution failed");
    }
    drop(file);
    if event.mask & libc::FAN_OPEN_EXEC_PERM == 0 {
        return;
    }
    Stats::bump(&shared.stats.runtime_execs);
    if event.pid <= 0 {
        Stats::bump(&shared.stats.pid_invisible);
        return;
    }
    if let Some((binary, kind)) = binary.and_then(|b| shared.binaries.get(&b).map(|k| (b, *k))) {
        let _ = inspector.send(Exec { pid: event.pid, kind, binary });
    }
}

/// A read in a marked directory: the awaited pid file is held while the
/// capture attaches; anything else passes at once.
fn pid_file_read(shared: &Arc<Shared>, file: OwnedFd, held: &mut Vec<Arc<Held>>) {
    let path = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let awaited = path.ok().and_then(|path| {
        let path = in_agent_view(&shared.options.host_root, path);
        let mut pending = lock(&shared.pending);
        let (awaited, unmark) = pending.take(&path)?;
        if let Some(dir) = unmark {
            unmark_dir(shared, &dir);
        }
        Some(awaited)
    });
    let Some(awaited) = awaited else {
        if let Err(e) = fanotify::allow(shared.group.raw(), &file) {
            debug!(error = %e, "allowing a read failed");
        }
        return;
    };
    let pid = match read_pid(&file) {
        Ok(pid) => pid,
        Err(why) => {
            Stats::bump(&shared.stats.bad_pid_file);
            debug!(container = %awaited.container.id, why, "pid file unusable; the event path attaches this container");
            let _ = fanotify::allow(shared.group.raw(), &file);
            return;
        }
    };
    let since = Instant::now();
    let within = shared.options.answer_within.min(HARD_LIMIT);
    let h =
        Arc::new(Held { shared: Arc::clone(shared), file: Mutex::new(Some(file)), since, deadline: since + within });
    held.push(Arc::clone(&h));
    Stats::bump(&shared.stats.held);
    let mut container = awaited.container;
    debug!(container = %container.id, pid, "pid file read held; attaching");
    container.pid = Some(pid);
    container.netns = Some(Container::netns_path(&shared.options.proc_root, pid));
    shared.attach.attach(container, Verdict(h));
}

/// An event file's path as the agent names it. The kernel names a file on
/// a mount outside the agent's mount namespace (the agent in a container,
/// the host's root at `host_root`) as the host sees it, without the
/// prefix: such a path is put back under `host_root`.
fn in_agent_view(host_root: &Path, path: PathBuf) -> PathBuf {
    if path.starts_with(host_root) {
        return path;
    }
    host_root.join(path.strip_prefix("/").unwrap_or(&path))
}

/// The PID in a pid file, read through the event's fd: a small plain file
/// holding a number.
fn read_pid(file: &OwnedFd) -> Result<u32, &'static str> {
    let st = fanotify::stat(file).map_err(|_| "fstat failed")?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err("not a plain file");
    }
    if st.st_size <= 0 || st.st_size > MAX_PID_FILE {
        return Err("empty or too large for a pid");
    }
    let mut buf = [0u8; MAX_PID_FILE as usize];
    let n = fanotify::read_start(file, &mut buf).map_err(|_| "unreadable")?;
    let text = std::str::from_utf8(&buf[..n]).map_err(|_| "not text")?;
    match text.trim().parse::<u32>() {
        Ok(pid) if pid > 1 => Ok(pid),
        _ => Err("not a pid"),
    }
}

/// Drops awaited pid files past their time, and their marks.
fn expire(shared: &Shared, now: Instant) {
    let mut pending = lock(&shared.pending);
    for (file, unmark) in pending.expire(now) {
        Stats::bump(&shared.stats.pending_expired);
        debug!(file = %file.display(), "pid file never read in time; the event path attaches this container");
        if let Some(dir) = unmark {
            unmark_dir(shared, &dir);
        }
    }
}

/// The mask on pid-file directories.
const DIR_MASK: u64 = libc::FAN_ACCESS_PERM | libc::FAN_EVENT_ON_CHILD;

fn unmark_dir(shared: &Shared, dir: &Path) {
    if let Err(e) = shared.group.unmark(dir, DIR_MASK) {
        // Removed with the container: the kernel dropped the mark with it.
        Stats::bump(&shared.stats.marks_vanished);
        debug!(dir = %dir.display(), error = %e, "pid file directory gone before its mark was removed");
    }
}

/// Looks into one runtime execution: a create gets its pid file awaited.
fn inspect(shared: &Shared, exec: &Exec) {
    let proc = PathBuf::from(format!("/proc/{}", exec.pid));
    let started = Instant::now();
    // The event came as the exec began: wait until the process is the
    // runtime and its arguments are in place (the kernel switches the
    // executable before it copies them).
    let cmdline = loop {
        let exe = std::fs::metadata(proc.join("exe"));
        let gone = exe.is_err();
        if exe.is_ok_and(|m| (m.dev(), m.ino()) == exec.binary) {
            match std::fs::read(proc.join("cmdline")) {
                Ok(cmdline) if !cmdline.is_empty() => break cmdline,
                Ok(_) => {}
                Err(_) => {
                    Stats::bump(&shared.stats.exec_unseen);
                    return;
                }
            }
        }
        if gone || started.elapsed() >= EXEC_WAIT {
            Stats::bump(&shared.stats.exec_unseen);
            debug!(
                pid = exec.pid,
                waited_us = started.elapsed().as_micros() as u64,
                gone,
                "runtime execution not seen through"
            );
            return;
        }
        std::thread::sleep(EXEC_POLL);
    };
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .skip(1)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    debug!(pid = exec.pid, waited_us = started.elapsed().as_micros() as u64, ?args, "runtime executed");
    let create = match invocation::parse(exec.kind, &args) {
        Invocation::Create(create) => create,
        Invocation::Other => return,
        Invocation::Unknown(why) => {
            Stats::bump(&shared.stats.unknown_args);
            debug!(
                pid = exec.pid,
                why,
                ?args,
                "runtime arguments not understood; the event path attaches this container"
            );
            return;
        }
    };
    if real_uid(&proc) != Some(0) {
        Stats::bump(&shared.stats.rootless);
        debug!(pid = exec.pid, id = create.id, "rootless runtime; the event path attaches this container");
        return;
    }
    Stats::bump(&shared.stats.creates);
    let cwd = || std::fs::read_link(proc.join("cwd")).unwrap_or_else(|_| PathBuf::from("/"));
    let absolute = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { cwd().join(p) };
    let (bundle_dir, pid_file) = (absolute(&create.bundle), absolute(&create.pid_file));
    let root = &shared.options.host_root;
    let (Some(dir), Some(name)) = (pid_file.parent(), pid_file.file_name()) else { return };
    let Ok(seen) = resolve_in_root(root, dir).map(|d| d.join(name)) else {
        Stats::bump(&shared.stats.marks_vanished);
        return;
    };
    if lock(&shared.pending).add_again(&seen, Instant::now() + shared.options.pending_ttl) {
        return; // conmon's, then its runtime's: awaited already
    }
    let bundle = match read_bundle(root, &bundle_dir, &create.id) {
        Ok(bundle) => bundle,
        Err(e) => {
            Stats::bump(&shared.stats.bad_config);
            debug!(id = create.id, bundle = %bundle_dir.display(), error = %e,
                "bundle config unreadable; the event path attaches this container");
            return;
        }
    };
    let container = shared.attach.identify(&bundle);
    debug!(container = %container.id, runtime = %container.runtime, pid_file = %seen.display(), "container created; awaiting its pid file");
    let awaited = Awaited { container, expires: Instant::now() + shared.options.pending_ttl };
    let mut pending = lock(&shared.pending);
    if let Added::MarkDir(dir) = pending.add(seen.clone(), awaited) {
        if let Err(e) = shared.group.mark(&dir, DIR_MASK) {
            pending.take(&seen);
            Stats::bump(&shared.stats.marks_vanished);
            debug!(dir = %dir.display(), error = %e, "cannot mark the pid file's directory");
        }
    }
}

/// The real uid of a process.
fn real_uid(proc: &Path) -> Option<u32> {
    let status = std::fs::read_to_string(proc.join("status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

/// The bundle's `config.json`: annotations and hostname.
fn read_bundle(root: &Path, dir: &Path, id: &str) -> io::Result<OciBundle> {
    #[derive(serde::Deserialize)]
    struct Spec {
        #[serde(default)]
        annotations: std::collections::BTreeMap<String, String>,
        hostname: Option<String>,
    }
    let path = resolve_in_root(root, &dir.join("config.json"))?;
    let mut text = Vec::new();
    std::fs::File::open(&path)?.take(MAX_CONFIG).read_to_end(&mut text)?;
    let spec: Spec = serde_json::from_slice(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(OciBundle { id: id.to_owned(), dir: dir.to_path_buf(), annotations: spec.annotations, hostname: spec.hostname })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_path_outside_the_agents_mounts_is_put_under_the_host_root() {
        let root = Path::new("/host");
        let own = PathBuf::from("/host/run/containerd/t/init.pid");
        assert_eq!(in_agent_view(root, own.clone()), own);
        assert_eq!(in_agent_view(root, "/run/containerd/t/init.pid".into()), own);
        assert_eq!(in_agent_view(Path::new("/"), "/run/x/init.pid".into()), PathBuf::from("/run/x/init.pid"));
    }

    #[test]
    fn a_pid_file_must_be_small_plain_and_hold_a_pid() {
        let dir = std::env::temp_dir().join(format!("pw-prestart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let check = |text: &[u8]| {
            let path = dir.join("p");
            std::fs::write(&path, text).unwrap();
            read_pid(&OwnedFd::from(std::fs::File::open(&path).unwrap()))
        };
        assert_eq!(check(b"4242\n"), Ok(4242));
        assert!(check(b"").is_err());
        assert!(check(b"1").is_err(), "pid 1 is never a container's init here");
        assert!(check(b"twelve").is_err());
        assert!(check(&[b'7'; 40]).is_err());
        assert!(read_pid(&OwnedFd::from(std::fs::File::open(&dir).unwrap())).is_err(), "a directory");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bundle_gives_its_annotations_and_a_bad_one_is_an_error() {
        let dir = std::env::temp_dir().join(format!("pw-bundle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), br#"{"ociVersion":"1.0.2","hostname":"h","annotations":{"a":"b"}}"#)
            .unwrap();
        let b = read_bundle(Path::new("/"), &dir, "id1").expect("parsed");
        assert_eq!((b.id.as_str(), b.hostname.as_deref(), b.annotation("a")), ("id1", Some("h"), Some("b")));
        std::fs::write(dir.join("config.json"), b"{not json").unwrap();
        assert!(read_bundle(Path::new("/"), &dir, "id1").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
