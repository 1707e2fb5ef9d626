//! Issue 5: `fluent-launch` rewrites a FireLens-style config and execs
//! Fluent Bit with the seed's command line; a fake fluent-bit records what
//! it was given. `export-fluent-bit` puts the standalone launcher in a
//! shared directory, where it works the same.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use portwarden_tests::{portwarden_bin, unique_name};

/// What FireLens generates for a task (trimmed to its shape).
const FIRELENS: &str = "\
[INPUT]
    Name forward
    unix_path /var/run/fluent.sock

[INPUT]
    Name forward
    Listen 0.0.0.0
    Port 24224

[INPUT]
    Name tcp
    Tag firelens-healthcheck
    Listen 127.0.0.1
    Port 8877
    mem_buf_limit 5M

[FILTER]
    Name record_modifier
    Match *
    Record ecs_cluster demo
    Record ecs_task_arn arn:aws:ecs:us-east-1:123456789012:task/demo/abc

@INCLUDE extra.conf

[OUTPUT]
    Name null
    Match firelens-healthcheck

[OUTPUT]
    Name syslog
    Match app-firelens*
    Host 127.0.0.1
    Port 1514
    Mode tcp
    Syslog_Format rfc3164
    Syslog_Hostname_key container_id
    Syslog_Appname_key container_name
    Syslog_Message_key log
";

fn fake_fluent_bit(dir: &Path) -> PathBuf {
    let fake = dir.join("fluent-bit");
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > {argv}\nwhile [ $# -gt 0 ]; do if [ \"$1\" = -c ]; then cp \"$2\" {conf}; fi; shift; done\n",
        argv = dir.join("argv").display(),
        conf = dir.join("seen.conf").display()
    );
    std::fs::write(&fake, script).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    fake
}

/// Runs a launcher and returns (argv the fake saw, config it saw).
fn launch(launcher: &[&str], dir: &Path) -> (Vec<String>, String) {
    let fake = fake_fluent_bit(dir);
    let input = dir.join("fluent-bit.conf");
    std::fs::write(&input, FIRELENS).unwrap();
    let out = dir.join("launched.conf");
    let status = Command::new(launcher[0])
        .args(&launcher[1..])
        .arg("-r")
        .arg(&fake)
        .arg("-c")
        .arg(&input)
        .arg("-m")
        .arg(&out)
        // The seed's command line.
        .args(["-s", "Scheduler.Cap", "60", "-i", "Mem_Buf_Limit", "50M", "-o", "Retry_Limit", "False"])
        .args(["--", "-F", "record_modifier", "-p", "Record=hostname ${HOSTNAME}", "-m", "*"])
        .status()
        .expect("launcher runs");
    assert!(status.success(), "{launcher:?}");
    let argv = std::fs::read_to_string(dir.join("argv")).unwrap().lines().map(str::to_owned).collect();
    (argv, std::fs::read_to_string(dir.join("seen.conf")).unwrap())
}

fn check(dir: &Path, argv: &[String], conf: &str) {
    let out = dir.join("launched.conf").display().to_string();
    assert_eq!(argv, ["-c", &out, "-F", "record_modifier", "-p", "Record=hostname ${HOSTNAME}", "-m", "*"]);
    assert!(conf.starts_with("[SERVICE]\n    Scheduler.Cap 60\n"), "a [SERVICE] section is created:\n{conf}");
    assert_eq!(conf.matches("Mem_Buf_Limit 50M").count() + conf.matches("mem_buf_limit 50M").count(), 3, "{conf}");
    assert!(!conf.contains("5M\n"), "the existing key is overwritten, not repeated:\n{conf}");
    assert_eq!(conf.matches("Retry_Limit False").count(), 2, "{conf}");
    let filter = conf.split("[FILTER]").nth(1).and_then(|rest| rest.split('[').next()).unwrap_or_default();
    assert!(!filter.contains("Retry_Limit") && !filter.contains("Mem_Buf_Limit"), "filters untouched:\n{conf}");
    assert!(conf.contains(&format!("@INCLUDE {}/extra.conf", std::fs::canonicalize(dir).unwrap().display())), "{conf}");
    assert!(conf.contains("Syslog_Hostname_key container_id"), "{conf}");
}

#[test]
fn portwarden_fluent_launch_rewrites_and_execs() {
    let dir = std::env::temp_dir().join(unique_name("fluent"));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = portwarden_bin();
    let (argv, conf) = launch(&[bin.to_str().unwrap(), "fluent-launch"], &dir);
    check(&dir, &argv, &conf);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_exported_launcher_works_on_its_own() {
    let dir = std::env::temp_dir().join(unique_name("export"));
    let shared = dir.join("shared");
    let status = Command::new(portwarden_bin()).arg("export-fluent-bit").arg(&shared).status().unwrap();
    assert!(status.success());
    let launcher = shared.join("fluent-launch");
    let (argv, conf) = launch(&[launcher.to_str().unwrap()], &dir);
    check(&dir, &argv, &conf);
    // A typo in the launcher's own arguments is an error naming it.
    let out = Command::new(&launcher).args(["-x", "y"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument `-x`"));
    let _ = std::fs::remove_dir_all(&dir);
}
