//! `fluent-launch`: rewrites a classic Fluent Bit config and execs Fluent
//! Bit on the result, so a Fluent Bit sidecar (FireLens, or the seed's
//! launcher) can be pointed at this agent without editing its image.
//!
//! ```text
//! fluent-launch [-r RUN_PATH] [-c IN_CONFIG] [-m OUT_CONFIG]
//!               [-i KEY VALUE]... [-f KEY VALUE]... [-o KEY VALUE]... [-s KEY VALUE]...
//!               [-- FLUENT_BIT_ARGS...]
//! ```
//! `-i`, `-f`, `-o` and `-s` set a key in every `[INPUT]`, `[FILTER]`,
//! `[OUTPUT]` or `[SERVICE]` section (keys compare case-insensitively, as in
//! Fluent Bit); a `[SERVICE]` section is added if there is none. Relative
//! `@INCLUDE` paths are made absolute, since the rewritten file may live in
//! another directory.

use std::fmt;
use std::path::{Path, PathBuf};

/// The launcher's arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchArgs {
    /// Fluent Bit's executable. Default: `/fluent-bit/bin/fluent-bit`.
    pub run_path: PathBuf,
    /// The config to read. Default: `/fluent-bit/etc/fluent-bit.conf`.
    pub in_config: PathBuf,
    /// Where the rewritten config goes. Default: `<in_config>.launch.conf`
    /// beside the input, or in `/tmp` when that directory is read-only.
    pub out_config: Option<PathBuf>,
    /// Keys to set, per section kind, in command-line order.
    pub sets: Vec<(Section, String, String)>,
    /// Arguments after `--`, passed to Fluent Bit.
    pub passthrough: Vec<String>,
}

/// The section kinds `-i`, `-f`, `-o` and `-s` address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// `[INPUT]`.
    Input,
    /// `[FILTER]`.
    Filter,
    /// `[OUTPUT]`.
    Output,
    /// `[SERVICE]`.
    Service,
}

impl Section {
    fn header(self) -> &'static str {
        match self {
            Section::Input => "INPUT",
            Section::Filter => "FILTER",
            Section::Output => "OUTPUT",
            Section::Service => "SERVICE",
        }
    }
}

/// A usage error, with the offending argument.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Usage text.
pub const USAGE: &str = "usage: fluent-launch [-r RUN_PATH] [-c IN_CONFIG] [-m OUT_CONFIG] \
[-i|-f|-o|-s KEY VALUE]... [-- FLUENT_BIT_ARGS...]";

/// Parses the launcher's command line (without the program name).
pub fn parse_args(args: &[String]) -> Result<LaunchArgs, UsageError> {
    let mut parsed = LaunchArgs {
        run_path: "/fluent-bit/bin/fluent-bit".into(),
        in_config: "/fluent-bit/etc/fluent-bit.conf".into(),
        out_config: None,
        sets: Vec::new(),
        passthrough: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value =
            |what: &str| it.next().cloned().ok_or_else(|| UsageError(format!("{arg} needs {what}\n{USAGE}")));
        let section = match arg.as_str() {
            "--" => {
                parsed.passthrough = it.cloned().collect();
                break;
            }
            "-r" | "--run-path" => {
                parsed.run_path = value("a path")?.into();
                continue;
            }
            "-c" | "--in-config" => {
                parsed.in_config = value("a path")?.into();
                continue;
            }
            "-m" | "--out-config" => {
                parsed.out_config = Some(value("a path")?.into());
                continue;
            }
            "-i" | "--input" => Section::Input,
            "-f" | "--filter" => Section::Filter,
            "-o" | "--output" => Section::Output,
            "-s" | "--service" => Section::Service,
            "-h" | "--help" => return Err(UsageError(USAGE.into())),
            other => return Err(UsageError(format!("unknown argument `{other}`\n{USAGE}"))),
        };
        let key = value("a key and a value")?;
        let val = value("a value")?;
        parsed.sets.push((section, key, val));
    }
    Ok(parsed)
}

/// One line of a classic config, as far as the rewrite cares.
enum Line {
    Header(String),
    Entry { indent: String, key: String, value: String },
    Include(String),
    Other(String),
}

fn classify(line: &str) -> Line {
    let trimmed = line.trim();
    if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return Line::Header(name.trim().to_ascii_uppercase());
    }
    if let Some(path) = trimmed.strip_prefix("@INCLUDE").or_else(|| trimmed.strip_prefix("@include")) {
        return Line::Include(path.trim().to_owned());
    }
    if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('@') {
        return Line::Other(line.to_owned());
    }
    let indent: String = line.chars().take_while(|c| c.is_whitespace()).collect();
    let (key, value) = trimmed.split_once(char::is_whitespace).map_or((trimmed, ""), |(k, v)| (k, v.trim()));
    Line::Entry { indent, key: key.to_owned(), value: value.to_owned() }
}

/// Applies `sets` to the config text `input`; relative `@INCLUDE`s are
/// resolved against `base_dir`.
pub fn rewrite(input: &str, sets: &[(Section, String, String)], base_dir: &Path) -> String {
    // Sections as (header or none for the preamble, lines).
    let mut sections: Vec<(Option<String>, Vec<Line>)> = vec![(None, Vec::new())];
    for line in input.lines() {
        match classify(line) {
            Line::Header(h) => sections.push((Some(h), Vec::new())),
            l => sections.last_mut().map(|s| s.1.push(l)).unwrap_or_default(),
        }
    }
    if sets.iter().any(|(s, ..)| *s == Section::Service)
        && !sections.iter().any(|(h, _)| h.as_deref() == Some("SERVICE"))
    {
        sections.insert(1, (Some("SERVICE".into()), Vec::new()));
    }
    let mut out = String::with_capacity(input.len() + 256);
    for (header, mut lines) in sections {
        if let Some(h) = &header {
            for (section, key, value) in sets.iter().filter(|(s, ..)| s.header() == h) {
                let _ = section;
                let existing = lines.iter_mut().find_map(|l| match l {
                    Line::Entry { key: k, value: v, .. } if k.eq_ignore_ascii_case(key) => Some(v),
                    _ => None,
                });
                match existing {
                    Some(v) => *v = value.clone(),
                    None => {
                        // After the last entry, so trailing blank lines stay trailing.
                        let at = lines.iter().rposition(|l| matches!(l, Line::Entry { .. })).map_or(0, |i| i + 1);
                        lines.insert(at, Line::Entry { indent: "    ".into(), key: key.clone(), value: value.clone() });
                    }
                }
            }
            out.push_str(&format!("[{h}]\n"));
        }
        for l in lines {
            match l {
                Line::Entry { indent, key, value } if value.is_empty() => out.push_str(&format!("{indent}{key}\n")),
                Line::Entry { indent, key, value } => out.push_str(&format!("{indent}{key} {value}\n")),
                Line::Include(path) => {
                    let p = Path::new(&path);
                    let abs = if p.is_absolute() { p.to_path_buf() } else { base_dir.join(p) };
                    out.push_str(&format!("@INCLUDE {}\n", abs.display()));
                }
                Line::Other(text) => {
                    out.push_str(&text);
                    out.push('\n');
                }
                Line::Header(_) => {}
            }
        }
    }
    out
}

/// Where the rewritten config goes when `-m` is not given.
pub fn default_out_config(in_config: &Path) -> PathBuf {
    let mut name = in_config.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "fluent-bit.conf".into());
    name.push(".launch.conf");
    let beside = in_config.with_file_name(&name);
    let writable = beside.parent().is_some_and(|d| {
        let probe = d.join(".fluent-launch-probe");
        let ok = std::fs::write(&probe, b"").is_ok();
        let _ = std::fs::remove_file(&probe);
        ok
    });
    if writable { beside } else { std::env::temp_dir().join(name) }
}

/// Reads, rewrites and writes the config; returns Fluent Bit's command
/// line (`run_path -c out_config passthrough...`).
pub fn prepare(args: &LaunchArgs) -> crate::Result<(PathBuf, Vec<String>)> {
    let input = std::fs::read_to_string(&args.in_config)
        .map_err(|source| crate::Error::FluentConfig { path: args.in_config.clone(), source })?;
    let base = args.in_config.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = std::fs::canonicalize(&base).unwrap_or(base);
    let out_path = args.out_config.clone().unwrap_or_else(|| default_out_config(&args.in_config));
    std::fs::write(&out_path, rewrite(&input, &args.sets, &base))
        .map_err(|source| crate::Error::FluentConfig { path: out_path.clone(), source })?;
    let mut argv = vec!["-c".to_owned(), out_path.display().to_string()];
    argv.extend(args.passthrough.iter().cloned());
    Ok((args.run_path.clone(), argv))
}

/// The whole launcher: parse, rewrite, exec. Returns only on failure, with
/// the exit code to use.
pub fn main(args: &[String]) -> i32 {
    let parsed = match parse_args(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fluent-launch: {e}");
            return 2;
        }
    };
    let (program, argv) = match prepare(&parsed) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("fluent-launch: {}", portwarden_core::ErrorChain(&e));
            return 1;
        }
    };
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&program).args(&argv).exec();
    eprintln!("fluent-launch: cannot run {}: {err}", program.display());
    127
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn seed_command_line() {
        let a =
            parse_args(&args("-s Scheduler.Cap 60 -i Mem_Buf_Limit 50M -- -F record_modifier -p Record=a\\ b -m '*'"))
                .unwrap();
        assert_eq!(a.run_path, Path::new("/fluent-bit/bin/fluent-bit"));
        assert_eq!(a.sets[0], (Section::Service, "Scheduler.Cap".into(), "60".into()));
        assert_eq!(a.sets[1], (Section::Input, "Mem_Buf_Limit".into(), "50M".into()));
        assert_eq!(a.passthrough[0], "-F");
        assert!(parse_args(&args("-i OnlyKey")).is_err());
        assert!(parse_args(&args("-x")).unwrap_err().0.contains("unknown argument `-x`"));
    }

    #[test]
    fn sets_replace_add_and_create_service() {
        let input = "@INCLUDE extra.conf\n[INPUT]\n    Name forward\n    mem_buf_limit 5M\n\n[input]\n    Name tail\n[OUTPUT]\n    Name null\n";
        let sets = vec![
            (Section::Input, "Mem_Buf_Limit".to_owned(), "50M".to_owned()),
            (Section::Service, "Flush".to_owned(), "1".to_owned()),
            (Section::Output, "Match".to_owned(), "*".to_owned()),
        ];
        let out = rewrite(input, &sets, Path::new("/etc/fb"));
        assert!(out.starts_with("@INCLUDE /etc/fb/extra.conf\n[SERVICE]\n    Flush 1\n[INPUT]\n"), "{out}");
        assert!(out.contains("    Name forward\n    mem_buf_limit 50M\n"), "{out}");
        assert!(out.contains("[INPUT]\n    Name tail\n    Mem_Buf_Limit 50M\n"), "{out}");
        assert!(out.contains("[OUTPUT]\n    Name null\n    Match *\n"), "{out}");
        assert_eq!(out.matches("[SERVICE]").count(), 1);
    }
}
