//! Issue 7: the gRPC API (`portwarden.v1`) of a running daemon, used by a
//! real client over the unix socket and over TCP with mutual TLS, and by
//! the CLI.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use portwarden_proto::v1::{self, packet_event::Event};
use portwarden_tests::api::{ApiAgent, ping_gateway, pinger};
use portwarden_tests::logs::free_port;
use portwarden_tests::{TestContainer, eventually, portwarden_bin, tshark_fields, unique_name};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(60);

/// An Ethernet frame carrying ICMP over IPv4.
fn is_icmp(frame: &[u8]) -> bool {
    frame.len() > 23 && frame[12..14] == [0x08, 0x00] && frame[23] == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_lists_watches_and_streams_logs_and_packets() {
    let daemon = ApiAgent::start("api", "").await;
    let agent = &daemon.agent;
    let mode = std::fs::metadata(&agent.api_socket).expect("socket").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the API socket is root's only: {mode:o}");
    let mut api = daemon.client().await;

    let mut watch = api
        .watch_containers(v1::WatchContainersRequest { selector: None, existing: true })
        .await
        .expect("watch")
        .into_inner();
    // The existing list ends with SYNCED.
    loop {
        let e = watch.message().await.expect("watch event").expect("open");
        if e.kind == v1::container_event::Kind::Synced as i32 {
            break;
        }
    }

    let c = TestContainer::run_cmd(
        "api",
        &[],
        &[
            "sh",
            "-c",
            &format!("i=0; while true; do echo api-line-$i; i=$((i+1)); {}; sleep 0.2; done", ping_gateway()),
        ],
    );
    // STARTED comes with the first runtime's report (containerd's, naming
    // the container by id, can be first); the name follows as UPDATED, and
    // the addresses with Docker's view of the started container, which can
    // come after containerd has already reported it running.
    let (started, named) = tokio::time::timeout(WAIT, async {
        let mut started = false;
        loop {
            let e = watch.message().await.expect("watch event").expect("open");
            let Some(x) = e.container.filter(|x| x.id == c.id) else { continue };
            started |= e.kind == v1::container_event::Kind::Started as i32;
            if started && x.name == c.name && !x.ips.is_empty() {
                return (started, x);
            }
        }
    })
    .await
    .expect("the start is watched, then the name and addresses");
    assert!(started && named.state == "running", "{named:?}");

    let listed = api.list_containers(v1::ListContainersRequest::default()).await.expect("list").into_inner();
    let mine = listed.containers.iter().find(|x| x.id == c.id).expect("the container is listed");
    assert_eq!((mine.runtime.as_str(), mine.state.as_str()), ("docker", "running"));
    assert!(mine.pid.is_some() && !mine.ips.is_empty(), "{mine:?}");

    let selector = Some(v1::Selector { containers: vec![c.name.clone()], pod: String::new() });
    let mut logs = api
        .stream_logs(v1::StreamLogsRequest { selector: selector.clone(), sources: vec![] })
        .await
        .expect("logs")
        .into_inner();
    let record = logs.message().await.expect("a record").expect("open");
    assert!(record.message.starts_with("api-line-"), "{record:?}");
    assert_eq!(record.source, "docker");
    assert_eq!(record.container.as_ref().map(|x| x.id.as_str()), Some(c.id.as_str()));
    let json: serde_json::Value = serde_json::from_str(&record.json).expect("the output's JSON");
    assert_eq!(json["container"]["name"], c.name.as_str());

    let mut packets = api
        .stream_packets(v1::StreamPacketsRequest { selector, bpf: "icmp".into(), snaplen: 0, host: false })
        .await
        .expect("packets")
        .into_inner();
    let mut icmp = 0;
    let mut named = false;
    while icmp < 4 {
        let event =
            tokio::time::timeout(WAIT, packets.message()).await.expect("packets flow").expect("ok").expect("open");
        if let Some(Event::Batch(b)) = event.event {
            named |= b.containers.iter().any(|x| x.id == c.id);
            assert!(!b.interfaces.is_empty() || named, "interfaces are announced with the first batch");
            for p in &b.packets {
                assert!(is_icmp(&p.data), "the kernel filter lets only ICMP through");
                icmp += 1;
            }
        }
    }
    assert!(named, "the first batch names the container");

    let status = api.status(v1::StatusRequest {}).await.expect("status").into_inner();
    assert_eq!(status.mode, "full");
    assert!(status.inventory_synced);
    assert!(status.api_streams >= 3, "{status:?}");
    assert!(status.captures.iter().any(|x| x.container_id == c.id && x.packets > 0), "{status:?}");
    assert!(status.counters.get("logs.records").is_some_and(|n| *n > 0), "{:?}", status.counters);
    drop((watch, logs, packets));
    let (exit, _) = daemon.agent.stop("-TERM");
    assert!(exit.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_invalid_argument_with_the_reason() {
    let daemon = ApiAgent::start("api-bad", "").await;
    let mut api = daemon.client().await;
    let bad_pod = Some(v1::Selector { containers: vec![], pod: "no-slash".into() });
    let e = api
        .stream_packets(v1::StreamPacketsRequest { selector: bad_pod.clone(), ..Default::default() })
        .await
        .expect_err("a bad selector is refused");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("NAMESPACE/NAME"), "{}", e.message());
    let e = api
        .stream_packets(v1::StreamPacketsRequest { bpf: "tcp port".into(), ..Default::default() })
        .await
        .expect_err("a bad filter is refused");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("bpf:"), "{}", e.message());
    let e = api
        .list_containers(v1::ListContainersRequest { selector: bad_pod, all: false })
        .await
        .expect_err("a bad selector is refused");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = api
        .stream_logs(v1::StreamLogsRequest { selector: None, sources: vec!["journald".into()] })
        .await
        .expect_err("an unknown source is refused");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("journald"), "{}", e.message());
    let e = api.reload_rules(v1::ReloadRulesRequest {}).await.expect_err("no detection here");
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = api.stream_alerts(v1::StreamAlertsRequest::default()).await.expect_err("no detection here");
    assert_eq!(e.code(), Code::FailedPrecondition);

    // Another user cannot open the socket: the CLI says so and works alone.
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--", "env"])
        .arg(format!("PORTWARDEN_API_SOCKET={}", daemon.agent.api_socket.display()))
        .arg(portwarden_bin())
        .arg("status")
        .output()
        .expect("runuser");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is root's only") && err.contains("ermission denied"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_uses_the_running_daemon() {
    let daemon = ApiAgent::start("api-cli", "").await;
    let c = TestContainer::run_cmd("api-cli", &[], &["sh", "-c", &pinger("0.2")]);
    let cli = || daemon.cli();
    let ps = eventually("`ps` through the daemon lists the container", WAIT, || {
        let out = cli().args(["ps", "--json"]).output().expect("ps");
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        list.as_array()?.iter().find(|x| x["id"] == c.id.as_str() && x["name"] == c.name.as_str()).cloned()
    })
    .await;
    assert_eq!(ps["runtime"], "docker");

    // A capture to a file through the daemon, read back by tshark. `-B`
    // sizes rings made here, and says so rather than pass unnoticed.
    let file = std::env::temp_dir().join(format!("{}.pcapng", unique_name("api-cli")));
    let out = cli()
        .args(["capture", "--container", &c.name, "-f", "icmp", "-c", "6", "-B", "8192", "-w"])
        .arg(&file)
        .output()
        .expect("capture");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("through the running daemon"), "{err}");
    assert!(err.contains("-B is ignored"), "{err}");
    let fields = tshark_fields(&file, "frame.interface_name");
    assert_eq!(fields.len(), 6, "{fields:?}");
    assert!(fields.iter().all(|f| f.contains(&c.name)), "{fields:?}");

    // `logs -f` through the daemon carries syslog records too.
    let mut follow =
        cli().args(["logs", "-f", "--json"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("logs -f");
    let stdout = follow.stdout.take().expect("piped");
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = std::thread::spawn({
        let lines = std::sync::Arc::clone(&lines);
        move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        }
    });
    let marker = unique_name("via-daemon");
    eventually("the syslog record through `logs -f`", WAIT, || {
        let _ = Command::new("logger")
            .args(["--tcp", "-n", "127.0.0.1", "-P", &daemon.syslog_port.to_string(), "--rfc5424", &marker])
            .status();
        lines.lock().unwrap().iter().find(|l| l.contains(&marker)).cloned()
    })
    .await;
    let _ = Command::new("kill").args(["-INT", &follow.id().to_string()]).status();
    let status = follow.wait().expect("logs -f exits");
    assert!(status.success(), "{status:?}");
    let _ = reader.join();

    // `status` reports the daemon's view.
    let out = cli().args(["status", "--json"]).output().expect("status");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(status["daemon"]["logs"]["records"].as_u64().is_some_and(|n| n > 0), "{status}");
    assert!(status["daemon"]["captures"].as_array().is_some_and(|a| !a.is_empty()), "{status}");
    // On a terminal, a capture to a file shows its progress on stderr
    // (`script` gives the command a pseudo-terminal).
    let shell = format!(
        "PORTWARDEN_API_SOCKET={} {} --config {} capture --container {} -f icmp -c 20 -w {}",
        daemon.agent.api_socket.display(),
        portwarden_bin().display(),
        daemon.config.display(),
        c.name,
        file.display()
    );
    let out = Command::new("script").args(["-qec", &shell, "/dev/null"]).output().expect("script");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(tty.contains("packets,") && tty.contains("MiB captured"), "progress on the terminal: {tty:?}");

    let _ = std::fs::remove_file(file);
    let (exit, _) = daemon.agent.stop("-TERM");
    assert!(exit.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_needs_a_client_certificate() {
    let dir = std::env::temp_dir().join(unique_name("api-tls"));
    std::fs::create_dir_all(&dir).expect("dir");
    portwarden_tests::tls::certificates(&dir);
    let port = free_port();
    let extra = format!(
        "[api.tcp]\nlisten = \"127.0.0.1:{port}\"\ncert = \"{d}/server.pem\"\nkey = \"{d}/server.key\"\nclient_ca = \"{d}/ca.pem\"\n",
        d = dir.display()
    );
    let daemon = ApiAgent::start("api-tls", &extra).await;
    daemon.agent.wait_for_text("API on TCP", WAIT).await;
    let read = |f: &str| std::fs::read(dir.join(f)).expect("pem");
    let address = format!("127.0.0.1:{port}");
    let mut api =
        portwarden_proto::connect_tls(&address, &read("ca.pem"), &read("client.pem"), &read("client.key"), "localhost")
            .await
            .expect("mutual TLS connects");
    let status = api.status(v1::StatusRequest {}).await.expect("status over TLS").into_inner();
    assert_eq!(status.mode, "full");

    // A client with no certificate of its own gets nothing.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read("ca.pem")))
        .domain_name("localhost");
    let refused = async {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("https://{address}"))?.tls_config(tls)?.connect().await?;
        let mut api = v1::agent_client::AgentClient::new(channel);
        api.status(v1::StatusRequest {}).await.map_err(anyhow::Error::from)?;
        anyhow::Ok(())
    }
    .await;
    assert!(refused.is_err(), "no client certificate, no answer");
    let _ = std::fs::remove_dir_all(dir);
}
