//! Issue 13: Suricata configured the way its users expect. Settings reach
//! the real Suricata; a bad setting, group, include or rule is named before
//! anything starts, with Suricata's own words where Suricata is the judge.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use portwarden_tests::nids::{NidsAgent, RULES};
use portwarden_tests::{portwarden_bin, unique_name};

/// A directory with rules and a config whose `[nids]` has `nids` added.
fn setup(nids: &str, rules: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(unique_name("suricata-config"));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("test.rules"), rules).expect("rules");
    let config = dir.join("portwarden.toml");
    let text = format!(
        "lock_file = \"{d}/lock\"\n[logs]\nenabled = false\nstate_dir = \"\"\n[metrics]\nenabled = false\n\
         [api]\nsocket = \"{d}/api.sock\"\n[nids]\nenabled = true\nbuiltin_rules = false\nrules = \"{d}/test.rules\"\nrun_dir = \"{d}/run\"\n{nids}\n",
        d = dir.display(),
    );
    std::fs::write(&config, text).expect("config");
    (dir, config)
}

fn portwarden(config: &Path, args: &[&str]) -> Output {
    Command::new(portwarden_bin()).arg("--config").arg(config).args(args).output().expect("runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unknown_settings_and_bad_groups_are_named_before_anything_starts() {
    for (nids, named) in [
        ("set = [\"streams.midstream=true\"]", "streams"),
        ("set = [\"stream.midstream\"]", "key=value"),
        ("set = [\"outputs.0.fast.enabled=yes\"]", "nids.events"),
        ("address_groups = { HOME_NET = \"[10.0.0.0/33]\" }", "HOME_NET"),
        ("address_groups = { HOME_NET = \"$NOWHERE\" }", "$NOWHERE"),
        ("port_groups = { HTTP_PORTS = \"[80,99999]\" }", "99999"),
        ("include = \"/nonexistent/suricata.yaml\"", "nids.include"),
        ("threads = 0", "nids.threads"),
    ] {
        let (dir, config) = setup(nids, RULES);
        for command in [&["config", "check"][..], &["run"][..]] {
            let out = portwarden(&config, command);
            assert!(!out.status.success(), "{nids}: {command:?} succeeded");
            assert!(stderr(&out).contains(named), "{nids}: {command:?}: {}", stderr(&out));
        }
        // Nothing started: no mirror, no Suricata files.
        assert!(!dir.join("run/suricata").exists(), "{nids}: something started");
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn an_include_that_does_not_parse_stops_the_agent_with_suricatas_message() {
    let (dir, config) = setup("", RULES);
    let include = dir.join("user.yaml");
    // No `%YAML` header (the agent adds it), and a broken flow sequence.
    std::fs::write(&include, "stream:\n  midstream: [true\n").expect("include");
    let text = std::fs::read_to_string(&config).unwrap().replace("[nids]\n", "[nids]\ninclude = \"INC\"\n");
    std::fs::write(&config, text.replace("INC", &include.display().to_string())).unwrap();
    let out = portwarden(&config, &["run"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("Suricata cannot use this config") && err.contains("line"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn config_check_runs_suricata_on_config_and_rules() {
    let (dir, config) = setup("set = [\"stream.midstream=true\"]", RULES);
    let out = portwarden(&config, &["config", "check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("suricata -T: config and rules accepted"));
    let _ = std::fs::remove_dir_all(dir);

    let broken = format!("{RULES}alert tcp any any -> any any (msg:\"broken\"; nosuchkeyword; sid:9000099;)\n");
    let (dir, config) = setup("", &broken);
    let out = portwarden(&config, &["config", "check"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    // Suricata's own message: the keyword, the file and the line.
    assert!(err.contains("nosuchkeyword") && err.contains("test.rules") && err.contains("line 4"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_reach_the_running_suricata() {
    let include = std::env::temp_dir().join(unique_name("include.yaml"));
    std::fs::write(&include, "%YAML 1.1\n---\nstream.reassembly.depth: 2mb\n").expect("include");
    let extra = format!(
        "address_groups = {{ HOME_NET = \"[10.99.0.0/16]\", EXTERNAL_NET = \"!$HOME_NET\" }}\n\
         port_groups = {{ HTTP_PORTS = \"[80,8080]\" }}\n\
         set = [\"app-layer.protocols.modbus.enabled=yes\"]\ninclude = \"{}\"\nrunmode = \"single\"\n",
        include.display()
    );
    let agent = NidsAgent::start("suricata-settings", RULES, &extra).await;
    let pid = agent.suricata_pid().expect("Suricata's pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let config = agent.run_dir.join("suricata/suricata.yaml");
    // It reads the mirror's pipe.
    let input = agent.run_dir.join("mirror.pcap").display().to_string();
    assert!(args.windows(2).any(|w| w[0] == "-r" && w[1] == input), "{args:?}");
    // Suricata's own view of the config it runs with.
    let dump = Command::new("suricata").arg("--dump-config").args(&args[1..]).output().expect("suricata --dump-config");
    let dump = String::from_utf8_lossy(&dump.stdout);
    for line in [
        "vars.address-groups.HOME_NET = [10.99.0.0/16]",
        "vars.address-groups.EXTERNAL_NET = !$HOME_NET",
        "vars.port-groups.HTTP_PORTS = [80,8080]",
        // Suricata's defaults for the rest, from its own config.
        "vars.address-groups.DNS_SERVERS = $HOME_NET",
        "app-layer.protocols.smb.enabled = yes",
        "app-layer.protocols.modbus.enabled = yes",
        "stream.reassembly.depth = 2mb",
        "runmode = single",
        "flow-timeouts.tcp.emergency-established = 30",
        "flow-timeouts.tcp.established = 45",
    ] {
        assert!(dump.contains(line), "{line} not in Suricata's config ({}):\n{dump}", config.display());
    }
    let _ = std::fs::remove_file(include);
    drop(agent);
    tokio::time::sleep(Duration::from_millis(100)).await;
}
