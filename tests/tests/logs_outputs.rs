//! Issue 17: the fleet outputs. OTLP over gRPC and HTTP/protobuf into a
//! receiver built on the official protos (tests/otlp/receiver.py): every
//! field, both transports, gzip, TLS with a client certificate, a receiver
//! that was down, and a partial success. Syslog over TLS (RFC 5425) into a
//! real rsyslog with its gtls driver.

use std::process::Command;
use std::time::Duration;

use portwarden_tests::logs::{LogAgent, free_port};
use portwarden_tests::otlp::OtlpReceiver;
use portwarden_tests::{TestContainer, unique_name};
use serde_json::Value;

fn output(endpoint: &str, protocol: &str, extra: &str) -> String {
    format!("\n[[logs.outputs]]\ntype = \"otlp\"\nendpoint = \"{endpoint}\"\nprotocol = \"{protocol}\"\n{extra}\n")
}

fn logger(port: u16, priority: &str, message: &str) {
    let status = Command::new("logger")
        .args(["-n", "127.0.0.1", "-P", &port.to_string(), "--tcp", "--rfc5424", "-t", "otlptest", "-p", priority])
        .arg(message)
        .status()
        .expect("logger runs");
    assert!(status.success());
}

fn with_body(body: &str) -> impl Fn(&Value) -> bool + '_ {
    move |r: &Value| r["body"] == body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_arrive_over_grpc_and_http_with_identity_severity_and_body() {
    let receiver = OtlpReceiver::start(&[]).await;
    let outputs = output(&format!("http://127.0.0.1:{}", receiver.grpc_port), "grpc", "")
        + &output(&format!("http://127.0.0.1:{}", receiver.http_port), "http", "compression = \"gzip\"");
    let agent = LogAgent::start("logs-otlp", "", &outputs).await;
    let tag = unique_name("otlp");
    let c =
        TestContainer::run_cmd("otlp", &[], &["sh", "-c", &format!("echo {tag}-out; echo {tag}-err >&2; sleep 3600")]);
    logger(agent.syslog_port, "user.err", &format!("{tag}-syslog"));

    for transport in ["grpc", "http"] {
        let of = |body: String| move |r: &Value| r["body"] == body.as_str() && r["transport"] == transport;
        let out = receiver.wait_records("stdout line", 1, of(format!("{tag}-out"))).await;
        let err = receiver.wait_records("stderr line", 1, of(format!("{tag}-err"))).await;
        let syslog = receiver.wait_records("syslog line", 1, of(format!("{tag}-syslog"))).await;
        for (r, stream) in [(&out[0], "stdout"), (&err[0], "stderr")] {
            let a = &r["attributes"];
            assert_eq!(a["container.id"], c.id.as_str(), "{r}");
            assert_eq!(a["container.name"], c.name.as_str());
            assert_eq!(a["container.image.name"], portwarden_tests::busybox_image().as_str());
            assert_eq!(a["container.runtime"], "docker");
            assert_eq!(a["log.iostream"], stream);
            assert_eq!(a["portwarden.source"], "docker");
            assert!(r["resource"]["host.name"].as_str().is_some_and(|h| !h.is_empty()), "{r}");
            assert_eq!(r["scope"], "portwarden");
            assert!(r["time"].as_str().is_some_and(|t| t.len() >= 19), "nanoseconds since the epoch: {r}");
            assert_eq!(r["severity"], Value::Null, "container output has no severity: {r}");
        }
        let s = &syslog[0];
        assert_eq!(s["severity"], "SEVERITY_NUMBER_ERROR", "{s}");
        assert_eq!(s["severity_text"], "err");
        assert_eq!(s["attributes"]["portwarden.source"], "syslog");
        assert_eq!(s["attributes"]["portwarden.appname"], "otlptest");
    }
    // Once each: nothing sent twice.
    let all = receiver.records();
    for body in [format!("{tag}-out"), format!("{tag}-err"), format!("{tag}-syslog")] {
        assert_eq!(all.iter().filter(|r| with_body(&body)(r)).count(), 2, "{body} once per transport");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_was_down_gets_every_record_and_a_partial_success_is_counted() {
    let (grpc_port, http_port) = (free_port(), free_port());
    let outputs = output(&format!("http://127.0.0.1:{grpc_port}"), "grpc", "compression = \"gzip\"")
        + &output(&format!("http://127.0.0.1:{http_port}"), "http", "");
    let agent = LogAgent::start("logs-otlp-down", "", &outputs).await;
    let tag = unique_name("down");
    for i in 0..20 {
        logger(agent.syslog_port, "user.info", &format!("{tag}-{i}"));
    }
    // The file output is not held back by the OTLP ones that cannot send.
    agent.wait_records("all 20 in the file", 20, |r| r["message"].as_str().is_some_and(|m| m.starts_with(&tag))).await;
    agent.agent.wait_for_text("log output failed; retrying", Duration::from_secs(30)).await;

    // Up at last, first refusing twice more, then taking all but one record
    // of each request.
    let receiver = OtlpReceiver::start_on(grpc_port, http_port, &["--unavailable", "2", "--reject", "1"]).await;
    let mine = |r: &Value| r["body"].as_str().is_some_and(|b| b.starts_with(&tag));
    for transport in ["grpc", "http"] {
        let got =
            receiver.wait_records("all 20 after the outage", 20, |r| mine(r) && r["transport"] == transport).await;
        let mut bodies: Vec<String> = got.iter().map(|r| r["body"].as_str().unwrap_or_default().to_owned()).collect();
        bodies.sort();
        bodies.dedup();
        assert_eq!(bodies.len(), 20, "every record, none twice: {bodies:?}");
    }
    let warning = agent.agent.wait_for_text("OTLP receiver refused records", Duration::from_secs(30)).await;
    assert!(warning.contains("test receiver rejects 1") && warning.contains("otlp:http://127.0.0.1"), "{warning}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate_and_a_name_mismatch_that_holds_back_nothing_else() {
    let dir = std::env::temp_dir().join(unique_name("otlp-tls"));
    std::fs::create_dir_all(&dir).expect("dir");
    portwarden_tests::tls::certificates(&dir);
    let path = |f: &str| dir.join(f).display().to_string();
    let receiver =
        OtlpReceiver::start(&["--tls", &path("server.pem"), &path("server.key"), "--client-ca", &path("ca.pem")]).await;
    let tls = |name: &str| {
        format!(
            "[logs.outputs.tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nserver_name = \"{name}\"\n",
            path("ca.pem"),
            path("client.pem"),
            path("client.key")
        )
    };
    let outputs = output(&format!("https://127.0.0.1:{}", receiver.grpc_port), "grpc", &tls("localhost"))
        + &output(&format!("https://127.0.0.1:{}", receiver.http_port), "http", &tls("localhost"))
        + &output(&format!("https://127.0.0.1:{}", receiver.http_port), "http", &tls("wrong.example"));
    let agent = LogAgent::start("logs-otlp-tls", "", &outputs).await;
    let tag = unique_name("tls");
    logger(agent.syslog_port, "user.warning", &tag);
    for transport in ["grpc", "http"] {
        let got = receiver
            .wait_records("a record over TLS", 1, |r| r["body"] == tag.as_str() && r["transport"] == transport)
            .await;
        assert_eq!(got[0]["severity"], "SEVERITY_NUMBER_WARN");
    }
    agent.wait_records("the file output's copy", 1, |r| r["message"] == tag.as_str()).await;
    // The output whose receiver's certificate does not match says so, by name.
    let warning = agent.agent.wait_for_text("log output failed; retrying", Duration::from_secs(30)).await;
    assert!(warning.contains("otlp:https://127.0.0.1") && warning.contains("certificate"), "{warning}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_over_tls_reaches_rsyslog_with_a_client_certificate_and_a_wrong_ca_is_named() {
    let dir = std::env::temp_dir().join(unique_name("syslog-tls"));
    let other = dir.join("other");
    std::fs::create_dir_all(&other).expect("dirs");
    portwarden_tests::tls::certificates(&dir);
    // A CA that signed nothing the receiver has.
    portwarden_tests::tls::certificates(&other);
    let rsyslog = portwarden_tests::logs::Rsyslog::start_tls(&dir).await;
    let path = |d: &std::path::Path, f: &str| d.join(f).display().to_string();
    let syslog = |ca: &str| {
        format!(
            "\n[[logs.outputs]]\ntype = \"syslog\"\naddress = \"127.0.0.1:{}\"\n[logs.outputs.tls]\nca = \"{ca}\"\n\
             cert = \"{}\"\nkey = \"{}\"\nserver_name = \"localhost\"\n",
            rsyslog.port,
            path(&dir, "client.pem"),
            path(&dir, "client.key")
        )
    };
    let outputs = syslog(&path(&dir, "ca.pem")) + &syslog(&path(&other, "ca.pem"));
    let agent = LogAgent::start("logs-syslog-tls", "", &outputs).await;
    let tag = unique_name("tls-syslog");
    logger(agent.syslog_port, "user.notice", &format!("{tag} over tls"));
    let line = portwarden_tests::eventually("the line at rsyslog over TLS", Duration::from_secs(30), || {
        rsyslog.lines().into_iter().find(|l| l.contains(&tag))
    })
    .await;
    assert!(line.ends_with(&format!("|{tag} over tls")), "{line}");
    assert!(line.starts_with("portwarden|"), "APP-NAME of a record without a container: {line}");
    let warning = agent.agent.wait_for_text("log output failed; retrying", Duration::from_secs(30)).await;
    assert!(warning.contains("syslog+tls:127.0.0.1") && warning.contains("certificate"), "{warning}");
    agent.wait_records("the file output's copy", 1, |r| r["message"] == format!("{tag} over tls").as_str()).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `GET /metrics` from the agent's endpoint on `port`.
fn metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("response");
    body
}

fn counter(metrics: &str, name: &str, output: &str) -> u64 {
    let prefix = format!("{name}{{output=\"{output}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_that_is_down_with_drop_newest_holds_back_nothing_and_counts_its_drops() {
    use std::io::Write;
    let down = free_port();
    let metrics_port = free_port();
    let outputs = output(&format!("http://127.0.0.1:{down}"), "http", "when_full = \"drop_newest\"")
        + &format!("\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n");
    // One batch of queue: the stuck output's queue is full at once.
    let agent = LogAgent::start("logs-output-down", "queue_batches = 1", &outputs).await;
    let tag = unique_name("flood");
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", agent.syslog_port)).expect("syslog tcp");
    for burst in 0..20 {
        let mut text = String::new();
        for i in 0..100 {
            text.push_str(&format!("<14>1 2026-01-01T00:00:00Z h app - - - {tag} {burst}-{i}\n"));
        }
        tcp.write_all(text.as_bytes()).expect("send");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(tcp);
    // Every line reaches the file output while the OTLP receiver is down.
    let got = agent
        .wait_records("all 2000 in the file", 2000, |r| r["message"].as_str().is_some_and(|m| m.starts_with(&tag)))
        .await;
    assert_eq!(got.len(), 2000, "none twice");
    let name = format!("otlp:http://127.0.0.1:{down}");
    let m = portwarden_tests::eventually("the drops counted", Duration::from_secs(30), || {
        let m = metrics(metrics_port);
        (counter(&m, "portwarden_log_output_dropped_total", &name) > 0).then_some(m)
    })
    .await;
    assert!(counter(&m, "portwarden_log_output_retries_total", &name) > 0, "{m}");
    assert_eq!(counter(&m, "portwarden_log_output_records_total", &name), 0, "{m}");
    let file = format!("file:{}", agent.out.display());
    assert!(counter(&m, "portwarden_log_output_records_total", &file) >= 2000, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_records_go_to_their_own_outputs_and_can_stay_off_the_log_outputs() {
    let dir = std::env::temp_dir().join(unique_name("flows-out"));
    std::fs::create_dir_all(&dir).expect("dir");
    let (logs, flows) = (dir.join("logs.json"), dir.join("flows.json"));
    let config = format!(
        "[logs]\nstate_dir = \"\"\n[logs.syslog]\nenabled = false\n[logs.forward]\nenabled = false\n\
         [nids]\nenabled = false\n[metrics]\nenabled = false\n\
         [flows]\nto_log_outputs = false\n[[flows.outputs]]\ntype = \"file\"\npath = \"{}\"\n\
         [[logs.outputs]]\ntype = \"file\"\npath = \"{}\"\n",
        flows.display(),
        logs.display()
    );
    std::fs::write(dir.join("portwarden.toml"), config).expect("config");
    let config_path = dir.join("portwarden.toml");
    let agent = portwarden_tests::agent::Agent::spawn(
        &["--config", config_path.to_str().expect("utf8"), "--log-format", "json", "run"],
        std::process::Stdio::null(),
    );
    let server = TestContainer::run("flows-srv", &[]);
    let c = TestContainer::run_cmd("flows-cli", &[], &["sh", "-c", "echo flows-line; sleep 3600"]);
    portwarden_tests::eventually("the client captured", Duration::from_secs(60), || {
        agent.find_json("capture attached", |v| v["container"] == c.id.as_str())
    })
    .await;
    let ping = portwarden_tests::docker(&["exec", &c.id, "ping", "-c", "2", "-W", "1", &server.ip()]);
    assert!(ping.status.success());
    // Flows end at shutdown at the latest: stop the agent, then read.
    let read = |p: &std::path::Path| -> Vec<Value> {
        std::fs::read_to_string(p).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    };
    portwarden_tests::eventually("the container's line in the log output", Duration::from_secs(60), || {
        read(&logs).into_iter().find(|r| r["message"] == "flows-line")
    })
    .await;
    let (status, lines) = agent.stop("-TERM");
    assert!(status.success(), "{lines:?}");
    let flow = read(&flows)
        .into_iter()
        .find(|f| f["event_type"] == "flow" && f["proto"] == "ICMP" && f["container"]["id"] == c.id.as_str());
    let flow = flow.unwrap_or_else(|| panic!("no ICMP flow of the client among {:?}", read(&flows)));
    assert!(flow["flow"]["pkts_toserver"].as_u64().is_some_and(|n| n >= 2), "{flow}");
    assert!(read(&flows).iter().all(|f| f["event_type"] == "flow"), "only flow records in the flow output");
    assert!(read(&logs).iter().all(|r| r["event_type"].is_null()), "no flow record in the log output");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_buffer_keeps_records_through_an_outage_and_a_sigkill() {
    let (grpc_port, http_port) = (free_port(), free_port());
    let metrics_port = free_port();
    let outputs = output(&format!("http://127.0.0.1:{http_port}"), "http", "buffer_max_bytes = 10000000")
        + &format!("\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n");
    let mut agent = LogAgent::start("logs-disk-buffer", "", &outputs).await;
    let tag = unique_name("buffered");
    for i in 0..50 {
        logger(agent.syslog_port, "user.info", &format!("{tag}-{i}"));
    }
    // The file output has them all while the receiver is down: the buffered
    // output holds nothing back.
    agent.wait_records("all 50 in the file", 50, |r| r["message"].as_str().is_some_and(|m| m.starts_with(&tag))).await;
    let name = format!("otlp:http://127.0.0.1:{http_port}");
    portwarden_tests::eventually("all 50 on disk, none delivered", Duration::from_secs(30), || {
        let m = metrics(metrics_port);
        (counter(&m, "portwarden_log_output_buffer_bytes", &name) > 0
            && counter(&m, "portwarden_log_output_buffer_retries_total", &name) > 0)
            .then_some(())
    })
    .await;
    // SIGKILL, then the receiver comes up and the agent starts again: what
    // was on disk is sent.
    agent.crash_and_restart().await;
    let receiver = OtlpReceiver::start_on(grpc_port, http_port, &[]).await;
    let got = receiver
        .wait_records("the 50 after the restart", 50, |r| r["body"].as_str().is_some_and(|b| b.starts_with(&tag)))
        .await;
    let mut bodies: Vec<&str> = got.iter().filter_map(|r| r["body"].as_str()).collect();
    bodies.sort_unstable();
    bodies.dedup();
    assert_eq!(bodies.len(), 50, "every record: {bodies:?}");
    portwarden_tests::eventually("the buffer emptied", Duration::from_secs(30), || {
        (counter(&metrics(metrics_port), "portwarden_log_output_buffer_bytes", &name) == 0).then_some(())
    })
    .await;
}

/// A tmpfs of `size` on `path` while it lives; then unmounted, and the
/// test directory holding it removed.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(path: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs on {}", path.display());
        SmallDisk(path.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_a_buffer_is_named_and_counted_and_its_space_comes_back() {
    use std::io::Write;
    let (grpc_port, http_port, metrics_port) = (free_port(), free_port(), free_port());
    let outputs = output(
        &format!("http://127.0.0.1:{http_port}"),
        "http",
        "when_full = \"drop_newest\"\nbuffer_max_bytes = 100000000",
    ) + &format!("\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n");
    // The state directory (checkpoints and the buffer) on a 1 MiB disk,
    // far below the buffer's own bound: the disk fills first.
    let mut disk = None;
    let agent = LogAgent::start_prepared("logs-full-disk", "", "", &outputs, |dir| {
        disk = Some(SmallDisk::mount(&dir.join("state"), "1m"));
    })
    .await;
    let name = format!("otlp:http://127.0.0.1:{http_port}");
    let dropped = || counter(&metrics(metrics_port), "portwarden_log_output_buffer_dropped_total", &name);
    let tag = unique_name("disk-full");
    let pad = "p".repeat(400);
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", agent.syslog_port)).expect("syslog tcp");
    let mut sent = 0;
    // ~0.5 KiB records until the disk is full: at most 8 MiB of them.
    while sent < 16_000 && dropped() == 0 {
        let mut text = String::new();
        for _ in 0..200 {
            text.push_str(&format!("<14>1 2026-01-01T00:00:00Z h app - - - {tag} {sent} {pad}\n"));
            sent += 1;
        }
        tcp.write_all(text.as_bytes()).expect("send");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mine = |r: &Value| r["message"].as_str().is_some_and(|m| m.starts_with(&tag));
    // The other output is not held back by the full disk.
    let got = agent.wait_records("every record in the file output", sent, mine).await;
    assert_eq!(got.len(), sent, "none twice");
    let lost = portwarden_tests::eventually("the drops counted", Duration::from_secs(30), || {
        Some(dropped()).filter(|n| *n > 0)
    })
    .await;
    let error = agent
        .agent
        .find_json("cannot append to the disk buffer; records dropped", |v| v["output"] == name.as_str())
        .unwrap_or_else(|| panic!("no error naming the output: {:?}", agent.agent.lines()));
    assert!(error["error"].as_str().is_some_and(|e| e.contains("No space left")), "{error}");

    // The receiver comes up: what fit on the disk is delivered, the drained
    // segment's space comes back, and later records fit again.
    let receiver = OtlpReceiver::start_on(grpc_port, http_port, &[]).await;
    let kept = sent - lost as usize;
    let body_mine = |r: &Value| r["body"].as_str().is_some_and(|b| b.starts_with(&tag));
    receiver.wait_records("every record that fit on the disk", kept, body_mine).await;
    portwarden_tests::eventually("the buffer emptied", Duration::from_secs(30), || {
        (counter(&metrics(metrics_port), "portwarden_log_output_buffer_bytes", &name) == 0).then_some(())
    })
    .await;
    let later = unique_name("after-full");
    let mut text = String::new();
    for i in 0..500 {
        text.push_str(&format!("<14>1 2026-01-01T00:00:00Z h app - - - {later} {i} {pad}\n"));
    }
    tcp.write_all(text.as_bytes()).expect("send");
    let after = receiver
        .wait_records("the later records, none dropped", 500, |r| {
            r["body"].as_str().is_some_and(|b| b.starts_with(&later))
        })
        .await;
    let mut distinct: Vec<&str> = after.iter().filter_map(|r| r["body"].as_str()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 500);
    assert_eq!(dropped(), lost, "no drop once the space came back");
    drop(agent);
    drop(disk);
}
