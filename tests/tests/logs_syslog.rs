//! Issue 5: util-linux `logger` over TCP and UDP, RFC 3164 and RFC 5424,
//! octet-counted and not; and the seed's Fluent Bit `out_syslog` shape
//! (HOSTNAME = container id, APP-NAME = container name, PROCID = pid),
//! sent by `logger` from a UTS namespace whose hostname is the id.

use std::process::Command;

use portwarden_tests::TestContainer;
use portwarden_tests::logs::{LogAgent, messages};

fn logger(port: u16, args: &[&str], message: &str) {
    let status = Command::new("logger")
        .args(["-n", "127.0.0.1", "-P", &port.to_string()])
        .args(args)
        .arg(message)
        .status()
        .expect("logger runs");
    assert!(status.success(), "logger {args:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logger_in_every_transport_and_format() {
    let agent = LogAgent::start("logs-logger", "", "").await;
    let port = agent.syslog_port;
    let cases: [(&[&str], &str); 6] = [
        (&["--tcp", "--rfc3164"], "tcp-3164"),
        (&["--tcp", "--rfc5424"], "tcp-5424"),
        (&["--tcp", "--rfc3164", "--octet-count"], "tcp-3164-octet"),
        (&["--tcp", "--rfc5424", "--octet-count"], "tcp-5424-octet"),
        (&["--udp", "--rfc3164"], "udp-3164"),
        (&["--udp", "--rfc5424"], "udp-5424"),
    ];
    for (args, text) in cases {
        logger(port, &[args, &["-t", "pwtest", "-p", "local3.warning"]].concat(), text);
    }
    let got = agent.wait_records("six logger messages", 6, |r| r["source"] == "syslog").await;
    let mut msgs = messages(&got);
    msgs.sort();
    let mut want: Vec<String> = cases.iter().map(|(_, t)| (*t).to_owned()).collect();
    want.sort();
    assert_eq!(msgs, want);
    for r in &got {
        assert_eq!(r["syslog"]["appname"], "pwtest", "{r}");
        assert_eq!(r["syslog"]["facility"], "19", "{r}");
        assert_eq!(r["syslog"]["severity"], "4", "{r}");
        assert!(r["container"].is_null());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_relaying_in_either_framing_leaves_no_trailing_newline() {
    let agent = LogAgent::start("logs-rsyslog-relay", "", "").await;
    for framing in ["octet-counted", "traditional"] {
        let relay = portwarden_tests::logs::Rsyslog::relay(agent.syslog_port, framing).await;
        let text = format!("relayed-{framing}");
        logger(relay.port, &["--tcp", "--rfc5424", "-t", "pwrelay"], &text);
        let got = agent.wait_records(&text, 1, |r| r["message"].as_str().is_some_and(|m| m.starts_with(&text))).await;
        assert_eq!(got[0]["message"], text.as_str(), "{}", got[0]);
        assert_eq!(got[0]["syslog"]["appname"], "pwrelay", "{}", got[0]);
    }
}

/// `logger` in a new UTS namespace whose hostname is `hostname`.
fn logger_as_host(hostname: &str, port: u16, tag: &str, pid: &str, message: &str) {
    let script =
        format!("hostname {hostname} && logger -n 127.0.0.1 -P {port} --tcp --rfc3164 -t {tag} --id={pid} '{message}'");
    let status = Command::new("unshare").args(["--uts", "sh", "-c", &script]).status().expect("unshare runs");
    assert!(status.success(), "{script}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fluent_bit_out_syslog_shape_is_attributed_or_keeps_its_identity() {
    let agent = LogAgent::start("logs-outsyslog", "", "").await;
    let c = TestContainer::run("outsyslog", &[]);
    agent.agent.wait_for_text(&c.id, std::time::Duration::from_secs(30)).await;
    let pid = c.inspect("{{.State.Pid}}");
    // Hostnames are at most 64 bytes: a full container id fits.
    logger_as_host(&c.id, agent.syslog_port, &c.name, &pid, "known container");
    let unknown = "ab".repeat(32);
    logger_as_host(&unknown, agent.syslog_port, "ghost", "77", "unknown container");

    let got = agent.wait_records("the known record", 1, |r| r["message"] == "known container").await;
    assert_eq!(got[0]["container"]["id"], c.id.as_str());
    assert_eq!(got[0]["container"]["name"], c.name.as_str());
    assert_eq!(got[0]["container"]["runtime"], "docker");
    let got = agent.wait_records("the unknown record", 1, |r| r["message"] == "unknown container").await;
    let claimed = &got[0]["container"];
    assert_eq!(claimed["id"], unknown.as_str());
    assert_eq!(claimed["name"], "ghost");
    assert_eq!(claimed["pid"], 77);
    assert_eq!(claimed["known"], false);
}
