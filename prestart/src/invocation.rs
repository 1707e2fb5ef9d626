//! What a runtime or monitor was asked to do, from its command line: the
//! only thing that matters here is `create`, with its bundle and pid file.

use std::path::PathBuf;

/// A binary the hook marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An OCI runtime with runc's command line (runc, crun).
    Runtime,
    /// conmon, the monitor CRI-O and Podman start each container under.
    Monitor,
}

/// A container being created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Create {
    pub(crate) id: String,
    /// The bundle directory (maybe relative to the process's cwd).
    pub(crate) bundle: PathBuf,
    /// Where the runtime writes the container's PID (maybe relative).
    pub(crate) pid_file: PathBuf,
}

/// What an invocation means to the hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Invocation {
    Create(Create),
    /// Anything else the binary does (`state`, `start`, `init`, an exec
    /// session): nothing to attach.
    Other,
    /// A create the hook cannot follow, and why: counted, and the
    /// container is attached by the event path.
    Unknown(&'static str),
}

/// Global runc/crun options that take a value.
const RUNTIME_GLOBAL_VALUES: &[&str] = &["--root", "--log", "--log-format", "--criu", "--rootless", "--cgroup-manager"];
/// `create` options that take a value.
const CREATE_VALUES: &[&str] =
    &["--bundle", "-b", "--pid-file", "--console-socket", "--preserve-fds", "--pidfd-socket"];

/// Reads `args` (argv without argv\[0\]) as `kind` would.
pub(crate) fn parse(kind: Kind, args: &[String]) -> Invocation {
    match kind {
        Kind::Runtime => runtime(args),
        Kind::Monitor => monitor(args),
    }
}

/// `runc [global options] create [options] <id>`.
fn runtime(args: &[String]) -> Invocation {
    let mut rest = args.iter();
    let command = loop {
        let Some(arg) = rest.next() else { return Invocation::Other };
        if !arg.starts_with('-') {
            break arg.as_str();
        }
        if RUNTIME_GLOBAL_VALUES.contains(&arg.as_str()) {
            rest.next();
        }
    };
    match command {
        "create" => {}
        // `run` starts at once: there is no moment with the process parked.
        "run" => return Invocation::Unknown("`run` (create and start in one) has no parked moment"),
        _ => return Invocation::Other,
    }
    let (mut bundle, mut pid_file, mut ids) = (None, None, Vec::new());
    let mut rest = rest.map(String::as_str);
    while let Some(arg) = rest.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v)),
            _ => (arg, None),
        };
        if !key.starts_with('-') {
            ids.push(arg);
            continue;
        }
        if !CREATE_VALUES.contains(&key) {
            continue; // a flag (`--no-pivot`, `--no-new-keyring`, ...)
        }
        let Some(value) = inline.or_else(|| rest.next()) else {
            return Invocation::Unknown("an option without its value");
        };
        match key {
            "--bundle" | "-b" => bundle = Some(value),
            "--pid-file" => pid_file = Some(value),
            _ => {}
        }
    }
    let [id] = ids[..] else { return Invocation::Unknown("not exactly one container id") };
    let Some(pid_file) = pid_file else { return Invocation::Unknown("no --pid-file") };
    Invocation::Create(Create { id: id.to_owned(), bundle: bundle.unwrap_or(".").into(), pid_file: pid_file.into() })
}

/// `conmon ... -c <id> -b <bundle> -p <pid file> ...`; an exec or restore
/// session is something else.
fn monitor(args: &[String]) -> Invocation {
    let (mut id, mut bundle, mut pid_file) = (None, None, None);
    let mut rest = args.iter().map(String::as_str);
    while let Some(arg) = rest.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v)),
            _ => (arg, None),
        };
        let slot = match key {
            "-e" | "--exec" | "--restore" | "--exec-attach" => return Invocation::Other,
            "-c" | "--cid" => &mut id,
            "-b" | "--bundle" => &mut bundle,
            "-p" | "--container-pidfile" => &mut pid_file,
            _ => continue,
        };
        *slot = inline.or_else(|| rest.next());
    }
    match (id, bundle, pid_file) {
        (Some(id), Some(bundle), Some(pid_file)) => {
            Invocation::Create(Create { id: id.to_owned(), bundle: bundle.into(), pid_file: pid_file.into() })
        }
        // `conmon --version` and the like.
        (None, None, None) => Invocation::Other,
        _ => Invocation::Unknown("conmon without all of -c, -b and -p"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn containerds_shim_create_is_understood() {
        let line = "--root /run/containerd/runc/moby --log /b/log.json --log-format json --systemd-cgroup \
                    create --bundle /b --pid-file /b/init.pid abc";
        assert_eq!(
            parse(Kind::Runtime, &args(line)),
            Invocation::Create(Create { id: "abc".into(), bundle: "/b".into(), pid_file: "/b/init.pid".into() })
        );
        let inline = "create --no-pivot -b=/x --pid-file=/x/pid --console-socket /s id9";
        let Invocation::Create(c) = parse(Kind::Runtime, &args(inline)) else { panic!("create") };
        assert_eq!((c.id.as_str(), c.pid_file.to_str()), ("id9", Some("/x/pid")));
    }

    #[test]
    fn other_commands_and_odd_creates_are_told_apart() {
        assert_eq!(parse(Kind::Runtime, &args("--root /r start abc")), Invocation::Other);
        assert_eq!(parse(Kind::Runtime, &args("init")), Invocation::Other);
        assert_eq!(parse(Kind::Runtime, &args("")), Invocation::Other);
        assert!(matches!(parse(Kind::Runtime, &args("create --bundle /b abc")), Invocation::Unknown(_)));
        assert!(matches!(parse(Kind::Runtime, &args("create --pid-file /p a b")), Invocation::Unknown(_)));
        assert!(matches!(parse(Kind::Runtime, &args("create --pid-file")), Invocation::Unknown(_)));
        assert!(matches!(parse(Kind::Runtime, &args("run -d --pid-file /p abc")), Invocation::Unknown(_)));
    }

    #[test]
    fn conmon_names_the_pid_file_it_will_read() {
        let line = "--api-version 1 -c abc -u abc -r /usr/bin/runc -b /u/userdata -p /run/u/pidfile -n name \
                    --exit-dir /e --syslog";
        assert_eq!(
            parse(Kind::Monitor, &args(line)),
            Invocation::Create(Create {
                id: "abc".into(),
                bundle: "/u/userdata".into(),
                pid_file: "/run/u/pidfile".into()
            })
        );
        assert_eq!(parse(Kind::Monitor, &args("-c abc -b /u -p /p -e")), Invocation::Other);
        assert_eq!(parse(Kind::Monitor, &args("--version")), Invocation::Other);
        assert!(matches!(parse(Kind::Monitor, &args("-c abc -b /u")), Invocation::Unknown(_)));
    }
}
