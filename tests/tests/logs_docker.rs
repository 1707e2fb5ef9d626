//! Issue 5: Docker containers' stdout and stderr through the logs API, and
//! Docker's own syslog and fluentd log drivers sending to the listeners.

use portwarden_tests::logs::{LogAgent, messages};
use portwarden_tests::{TestContainer, docker_ok, test_network, unique_name};
use serde_json::Value;

fn from(id: &str) -> impl Fn(&Value) -> bool + '_ {
    move |r: &Value| r["container"]["id"] == id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_stderr_tty_and_long_lines_arrive_intact_and_attributed() {
    let agent = LogAgent::start("logs-docker", "", "").await;
    let long = "x".repeat(40_000);
    let script = format!("echo out-1; echo err-1 >&2; echo out-2; printf '%s\\n' {long}; echo err-2 >&2; sleep 3600");
    let plain = TestContainer::run_cmd("plain", &[], &["sh", "-c", &script]);
    let tty = TestContainer::run_cmd("tty", &["-t"], &["sh", "-c", "echo tty-1; echo tty-2; sleep 3600"]);

    let got = agent.wait_records("the plain container's 5 lines", 5, from(&plain.id)).await;
    let stdout: Vec<String> = messages(&got.iter().filter(|r| r["stream"] == "stdout").cloned().collect::<Vec<_>>());
    let stderr: Vec<String> = messages(&got.iter().filter(|r| r["stream"] == "stderr").cloned().collect::<Vec<_>>());
    let brief: Vec<String> = got
        .iter()
        .map(|r| {
            let m: String = r["message"].as_str().unwrap_or_default().chars().take(8).collect();
            format!("{m} {} {} {} {}", r["stream"], r["source"], r["timestamp"], r["container"]["runtime"])
        })
        .collect();
    let about: Vec<String> = agent.agent.lines().into_iter().filter(|l| l.contains(&plain.id)).collect();
    assert_eq!(stdout, ["out-1", "out-2", long.as_str()], "Docker's 16 KiB pieces merged back: {brief:?}\n{about:#?}");
    assert_eq!(stderr, ["err-1", "err-2"]);
    for r in &got {
        assert_eq!(r["source"], "docker");
        assert_eq!(r["container"]["name"], plain.name.as_str());
        assert_eq!(r["container"]["runtime"], "docker");
        assert!(r["timestamp"].as_str().is_some_and(|t| t.len() == 30 && t.ends_with('Z')), "{r}");
        assert!(r["host"].is_string());
    }
    let got = agent.wait_records("the TTY container's 2 lines", 2, from(&tty.id)).await;
    assert_eq!(messages(&got), ["tty-1", "tty-2"], "no \\r left from the terminal");
    assert!(got.iter().all(|r| r["stream"] == "stdout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_log_driver_gets_one_warning() {
    let agent = LogAgent::start("logs-none", "", "").await;
    let c = TestContainer::run("none", &["--log-driver", "none"]);
    let warning = agent.agent.wait_for_text("cannot be read back", std::time::Duration::from_secs(30)).await;
    assert!(warning.contains(&c.id), "{warning}");
    portwarden_tests::assert_quiet_for("second warning (a retry loop)", std::time::Duration::from_secs(2), || {
        let warnings: Vec<String> =
            agent.agent.lines().into_iter().filter(|l| l.contains("cannot be read back")).collect();
        (warnings.len() > 1).then_some(warnings)
    })
    .await;
}

/// Runs a container that prints `lines` with Docker's `driver` and options,
/// and waits for it to exit.
fn run_with_driver(driver: &str, opts: &[String], lines: &[&str]) -> String {
    let name = unique_name(driver);
    let network = test_network();
    let image = portwarden_tests::busybox_image();
    let script = lines.iter().map(|l| format!("echo {l}")).collect::<Vec<_>>().join("; ");
    let mut args = vec!["run", "-d", "--pull", "never", "--name", &name, "--network", &network, "--log-driver", driver];
    for o in opts {
        args.extend(["--log-opt", o.as_str()]);
    }
    args.extend([image.as_str(), "sh", "-c", &script]);
    let id = docker_ok(&args);
    docker_ok(&["wait", &id]);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_syslog_driver_in_both_formats_is_attributed() {
    let agent = LogAgent::start("logs-syslog-driver", "", "").await;
    for format in ["rfc5424", "rfc3164"] {
        let opts = [format!("syslog-address=tcp://127.0.0.1:{}", agent.syslog_port), format!("syslog-format={format}")];
        let id = run_with_driver("syslog", &opts, &[&format!("{format}-a"), &format!("{format}-b >&2")]);
        let got = agent.wait_records(&format!("{format} records"), 2, from(&id)).await;
        assert!(got.iter().all(|r| r["source"] == "syslog"), "{got:?}");
        // The driver's severities (info <30>, err <27>) give the streams back;
        // across two streams, order is Docker's to choose.
        let mut streams: Vec<(String, String)> =
            got.iter().map(|r| (r["message"].as_str().unwrap().to_owned(), r["stream"].to_string())).collect();
        streams.sort();
        let want = [(format!("{format}-a"), "\"stdout\"".to_owned()), (format!("{format}-b"), "\"stderr\"".to_owned())];
        assert_eq!(streams, want, "{got:?}");
        // Not read a second time through the logs API.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert_eq!(agent.records().iter().filter(|r| from(&id)(r)).count(), 2);
        let _ = portwarden_tests::docker(&["rm", "-f", &id]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_fluentd_driver_with_and_without_acks_is_attributed() {
    let agent = LogAgent::start("logs-fluentd-driver", "", "").await;
    let long = "y".repeat(20_000);
    for ack in ["false", "true"] {
        let opts = [format!("fluentd-address=127.0.0.1:{}", agent.forward_port), format!("fluentd-request-ack={ack}")];
        let id = run_with_driver("fluentd", &opts, &[&format!("ack-{ack}"), &long]);
        let got = agent.wait_records(&format!("fluentd records (ack {ack})"), 2, from(&id)).await;
        assert_eq!(messages(&got), [format!("ack-{ack}"), long.clone()], "partials merged");
        assert!(got.iter().all(|r| r["source"] == "forward" && r["stream"] == "stdout"), "{got:?}");
        let _ = portwarden_tests::docker(&["rm", "-f", &id]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_a_remote_syslog_as_rfc5424_with_the_container() {
    let rsyslog = portwarden_tests::logs::Rsyslog::start().await;
    let extra = format!("[[logs.outputs]]\ntype = \"syslog\"\naddress = \"127.0.0.1:{}\"\n", rsyslog.port);
    let agent = LogAgent::start("logs-siem", "", &extra).await;
    let c =
        TestContainer::run_cmd("siem", &[], &["sh", "-c", "echo to-the-siem; echo 'quote\" and ]' >&2; sleep 3600"]);
    agent.wait_records("both lines in the file output", 2, from(&c.id)).await;
    let lines = portwarden_tests::eventually("both lines at rsyslog", std::time::Duration::from_secs(30), || {
        let lines: Vec<String> = rsyslog.lines().into_iter().filter(|l| l.contains(&c.id)).collect();
        (lines.len() >= 2).then_some(lines)
    })
    .await;
    let out = lines.iter().find(|l| l.ends_with("|to-the-siem")).expect("stdout line");
    let fields: Vec<&str> = out.splitn(5, '|').collect();
    assert_eq!(fields[0], c.name.as_str(), "APP-NAME is the container name: {out}");
    assert_eq!(fields[2], "docker", "MSGID is the source: {out}");
    assert!(fields[3].starts_with("[portwarden@32473 container_id=\""), "{out}");
    assert!(fields[3].contains("stream=\"stdout\""), "{out}");
    let err = lines.iter().find(|l| l.contains("stream=\"stderr\"")).expect("stderr line");
    assert!(err.ends_with("|quote\" and ]"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_fluentd_driver_over_the_unix_socket() {
    let socket = std::env::temp_dir().join(format!("{}.sock", unique_name("forward")));
    let extra = format!("unix_socket = \"{}\"", socket.display());
    let agent = LogAgent::start_with("logs-fluentd-unix", "", &extra, "").await;
    let opts = [format!("fluentd-address=unix://{}", socket.display())];
    let id = run_with_driver("fluentd", &opts, &["over-the-unix-socket"]);
    let got = agent.wait_records("the record sent over the unix socket", 1, from(&id)).await;
    assert_eq!(messages(&got), ["over-the-unix-socket"]);
    let _ = portwarden_tests::docker(&["rm", "-f", &id]);
    let _ = std::fs::remove_file(socket);
}
