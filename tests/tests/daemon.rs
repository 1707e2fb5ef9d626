//! Issue 7 (first parts): one agent per host, and SIGTERM delivers what was
//! already written before the agent exits 0.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portwarden_tests::agent::Agent;
use portwarden_tests::logs::LogAgent;
use portwarden_tests::{TestContainer, docker_ok, portwarden_bin, unique_name};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_the_host_is_refused_naming_the_first() {
    let lock = std::env::temp_dir().join(format!("{}.lock", unique_name("guard")));
    let mut first = Command::new(portwarden_bin());
    first.env("PORTWARDEN_LOCK_FILE", &lock).env("PORTWARDEN_NO_DETECT", "true").args(["--log-format", "json", "run"]);
    let first = Agent::spawn_command(&mut first, Stdio::null());
    first.wait_for_text("runtime synced", Duration::from_secs(30)).await;

    let second = Command::new(portwarden_bin())
        .env("PORTWARDEN_LOCK_FILE", &lock)
        .arg("run")
        .output()
        .expect("second agent runs");
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another portwarden agent is already running"), "{err}");
    assert!(err.contains(&format!("pid {}", first.pid())), "names the running one: {err}");
    let (status, _) = first.stop("-TERM");
    assert!(status.success());
    let _ = std::fs::remove_file(lock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_delivers_the_last_line_and_exits_zero() {
    let agent = LogAgent::start("sigterm", "", "").await;
    let c = TestContainer::run("sigterm", &[]);
    agent
        .agent
        .wait_for_text(&format!("log collection attached\",\"container\":\"{}", c.id), Duration::from_secs(30))
        .await;
    docker_ok(&["exec", &c.id, "sh", "-c", "echo LAST-LINE-BEFORE-SIGTERM > /proc/1/fd/1"]);
    let asked = Instant::now();
    let mut agent = agent;
    let status = agent.agent.signal_and_wait("-TERM");
    let exited = asked.elapsed();
    eprintln!("SIGTERM -> exit: {exited:?}");
    assert!(status.success(), "exit 0 on SIGTERM: {status:?}");
    let records = agent.records();
    assert!(
        records.iter().any(|r| r["message"] == "LAST-LINE-BEFORE-SIGTERM" && r["container"]["id"] == c.id.as_str()),
        "the line written before SIGTERM is in the output"
    );
}

/// `GET path` on 127.0.0.1:`port`: (status line, body).
fn http_get(port: u16, path: &str) -> Option<(String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_owned(), body.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_containers_packets_and_log_records() {
    let port = portwarden_tests::logs::free_port();
    let dir = std::env::temp_dir().join(unique_name("metrics"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "[capture]\nflows = false\n[logs]\nstate_dir = \"\"\n[logs.syslog]\nenabled = false\n[logs.forward]\nenabled = false\n\
         [[logs.outputs]]\ntype = \"file\"\npath = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n[nids]\nrun_dir = \"{}\"\n",
        dir.join("out.json").display(),
        dir.join("run").display()
    );
    std::fs::write(dir.join("pw.toml"), config).unwrap();
    let mut command = Command::new(portwarden_bin());
    command.arg("--config").arg(dir.join("pw.toml")).args(["--log-format", "json", "run"]);
    let agent = Agent::spawn_command(&mut command, Stdio::null());
    agent.wait_for_text("metrics on /metrics", Duration::from_secs(30)).await;
    // Ready once the inventory synced and Suricata's engine (built-in rules) started.
    let (status, body) = http_get(port, "/healthz").expect("healthz answers");
    assert!(status.contains("200") || (status.contains("503") && body.starts_with("starting: ")), "{status} {body}");
    portwarden_tests::eventually("/healthz to say ok", Duration::from_secs(60), || {
        http_get(port, "/healthz").filter(|(s, b)| s.contains("200") && b.trim() == "ok")
    })
    .await;

    let server = TestContainer::run_cmd("metrics-srv", &[], &["httpd", "-f", "-p", "80"]);
    let ip = server.inspect("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}");
    let client = TestContainer::run_cmd("metrics-cli", &[], &["sh", "-c", "echo a-log-line; sleep 3600"]);
    // Traffic until the client's capture shows packets and a log record is counted.
    let deadline = Instant::now() + Duration::from_secs(90);
    let body = loop {
        docker_ok(&["exec", &client.id, "sh", "-c", &format!("wget -q -O- http://{ip}/ ; true")]);
        let found = http_get(port, "/metrics").and_then(|(_, body)| {
            let value = |prefix: &str, must: &str| -> Option<u64> {
                body.lines().find(|l| l.starts_with(prefix) && l.contains(must))?.rsplit(' ').next()?.parse().ok()
            };
            let packets = value("portwarden_capture_packets_total", &format!("container=\"{}\"", client.name))?;
            let records = value("portwarden_logs_records_total ", "")?;
            (packets > 0 && records > 0).then_some(body)
        });
        if let Some(body) = found {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no packets or records in /metrics; agent said:\n{}",
            agent.lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        body.lines().any(|l| l.starts_with("portwarden_containers{runtime=\"docker\",state=\"running\"}")),
        "{body}"
    );
    assert!(body.contains(&format!("id=\"{}\"", client.id)));
    assert!(body.lines().any(|l| l.starts_with("portwarden_log_queue_batches{queue=\"intake\"}")), "{body}");
    assert!(body.lines().any(|l| l.starts_with("portwarden_log_queue_batches{queue=\"output\"")), "{body}");
    assert!(body.lines().any(|l| l.starts_with("portwarden_api_streams ")), "{body}");
    assert!(body.lines().any(|l| l.starts_with("portwarden_nids_suricata_running 1")), "{body}");
    let (status, _) = http_get(port, "/nope").unwrap();
    assert!(status.contains("404"));

    // Prometheus' own linter finds nothing to say.
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) runs");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));
    assert!(checked.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");

    // A real Prometheus scrapes the agent, and a counter can be queried.
    let prom_port = portwarden_tests::logs::free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: portwarden\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let mut prometheus = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus runs");
    let query = "/api/v1/query?query=portwarden_logs_records_total";
    let answer = portwarden_tests::eventually(
        "Prometheus to scrape portwarden_logs_records_total",
        Duration::from_secs(90),
        || {
            let (_, body) = http_get(prom_port, query)?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let value = v["data"]["result"][0]["value"][1].as_str()?.parse::<f64>().ok()?;
            (value > 0.0).then_some(v)
        },
    )
    .await;
    assert_eq!(answer["data"]["result"][0]["metric"]["job"], "portwarden", "{answer}");
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
