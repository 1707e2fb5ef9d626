//! Issue 6: Suricata fed through the mirror; every alert names its
//! container, even when two containers use the same addresses.

use std::process::Command;
use std::time::Duration;

use portwarden_proto::v1;
use portwarden_tests::nids::{NidsAgent, RULES};
use portwarden_tests::{TestContainer, busybox_image, docker_ok, unique_name};

/// The attacks: an HTTP request with sqlmap's user agent, a DNS query for
/// the evil name, and TCP payload content, all at `server`.
/// Waits until `server`'s httpd answers `client` (it may still be starting
/// under load): an attack on a port nobody listens on raises nothing.
async fn wait_http(client: &TestContainer, server_ip: &str) {
    // Any HTTP answer will do (httpd's `/` is a 404 here).
    let probe = format!("timeout 5 wget -S -O /dev/null http://{server_ip}/ 2>&1 | grep -q 'HTTP/'");
    portwarden_tests::eventually(&format!("httpd at {server_ip}"), Duration::from_secs(60), || {
        portwarden_tests::docker(&["exec", &client.id, "sh", "-c", &probe]).status.success().then_some(())
    })
    .await;
}

fn attack(server_ip: &str) -> String {
    format!(
        "wget -q -O- -U 'sqlmap/1.7' http://{server_ip}/ ; nslookup evil.portwarden.test {server_ip} ; \
         echo PORTWARDEN-ATTACK | nc -w 1 {server_ip} 80 ; true"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_name_the_container_and_never_a_bystander() {
    let agent = NidsAgent::start("nids", RULES, "").await;
    let server = TestContainer::run_cmd("nids-srv", &[], &["httpd", "-f", "-p", "80"]);
    let bystander = TestContainer::run("nids-bystander", &[]);
    let client = TestContainer::run("nids-cli", &[]);
    // Attack once every container is captured (and so mirrored): under
    // load attaching can take longer than a fixed pause.
    for c in [&server, &bystander, &client] {
        agent.wait_captured(&c.id).await;
    }
    wait_http(&client, &server.ip()).await;
    docker_ok(&["exec", &client.id, "sh", "-c", &attack(&server.ip())]);

    for sid in [9_000_001, 9_000_002, 9_000_003] {
        let alert = agent.wait_alert(sid, &client.id).await;
        let c = &alert["container"];
        assert_eq!(c["name"], client.name.as_str());
        assert_eq!(c["image"], busybox_image().as_str());
        assert_eq!(c["runtime"], "docker");
        assert_eq!(alert["src_ip"], client.ip().as_str(), "{alert}");
        // The node, and Suricata's Community ID for joining with other tools.
        let node = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(alert["host"], node.trim(), "{alert}");
        assert!(alert["community_id"].as_str().is_some_and(|id| id.starts_with("1:")), "{alert}");
    }
    // The server saw the same attacks, in its own namespace.
    agent.wait_alert(9_000_003, &server.id).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let blamed: Vec<_> = agent.events().into_iter().filter(|e| e["container"]["id"] == bystander.id.as_str()).collect();
    assert!(blamed.is_empty(), "the bystander got {blamed:?}");
}

/// A network namespace with a veth pair to a second one: the same two
/// addresses wherever it is made.
struct TwinNet {
    attacker_ns: String,
    victim_ns: String,
}

impl TwinNet {
    fn new(tag: &str) -> TwinNet {
        let (attacker_ns, victim_ns) = (unique_name(&format!("{tag}a")), unique_name(&format!("{tag}v")));
        let (a_if, v_if) = (format!("pwt{tag}a"), format!("pwt{tag}v"));
        for ns in [&attacker_ns, &victim_ns] {
            run(&["ip", "netns", "add", ns]);
        }
        run(&[
            "ip",
            "link",
            "add",
            &a_if,
            "netns",
            &attacker_ns,
            "type",
            "veth",
            "peer",
            "name",
            &v_if,
            "netns",
            &victim_ns,
        ]);
        for (ns, iface, addr) in [(&attacker_ns, &a_if, "10.77.0.1/24"), (&victim_ns, &v_if, "10.77.0.2/24")] {
            run(&["ip", "-n", ns, "addr", "add", addr, "dev", iface]);
            run(&["ip", "-n", ns, "link", "set", iface, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        TwinNet { attacker_ns, victim_ns }
    }
}

impl Drop for TwinNet {
    fn drop(&mut self) {
        for ns in [&self.attacker_ns, &self.victim_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("command runs");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_addresses_on_two_networks_give_two_alerts_each_to_its_own_container() {
    let agent = NidsAgent::start("nids-twins", RULES, "").await;
    let (one, two) = (TwinNet::new("1"), TwinNet::new("2"));
    let ns = portwarden_tests::cri::CtrNamespace::new("twins");
    let (mut ids, mut listeners) = (Vec::new(), Vec::new());
    for (i, net) in [&one, &two].into_iter().enumerate() {
        // A listener in the victim namespace (ending by itself), and a
        // container in the attacker's that attacks every second: the first
        // attempts may come before its capture has attached (a known gap).
        let listener = "while true; do busybox nc -l -p 80 >/dev/null; done";
        let child = Command::new("ip")
            .args(["netns", "exec", &net.victim_ns, "timeout", "120", "sh", "-c", listener])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        listeners.push(child);
        let id = format!("pw-twin-{i}-{}", std::process::id());
        let netns = format!("network:/var/run/netns/{}", net.attacker_ns);
        ns.ctr(&[
            "run", "-d", "--with-ns", &netns, &busybox_image(), &id, "sh", "-c",
            "i=0; while [ $i -lt 60 ]; do echo PORTWARDEN-ATTACK | nc -w 1 10.77.0.2 80; sleep 1; i=$((i+1)); done; sleep 3600",
        ]);
        ids.push(id);
    }
    for id in &ids {
        let alert = agent.wait_alert(9_000_003, id).await;
        assert_eq!(alert["src_ip"], "10.77.0.1");
        assert_eq!(alert["dest_ip"], "10.77.0.2");
    }
    // Each container's alerts carry its own tag, never the other's.
    let vlans = |id: &str| -> std::collections::BTreeSet<String> {
        agent.alerts(9_000_003, id).iter().map(|a| a["vlan"].to_string()).collect()
    };
    let (a, b) = (vlans(&ids[0]), vlans(&ids[1]));
    assert_eq!((a.len(), b.len()), (1, 1), "one tag each: {a:?} {b:?}");
    assert!(a.is_disjoint(&b), "kept apart by their tags: {a:?} {b:?}");
    for mut l in listeners {
        // SIGTERM: `timeout` passes it on to the listener loop.
        let _ = Command::new("kill").arg(l.id().to_string()).status();
        let _ = l.wait();
    }
    for id in &ids {
        ns.delete(id);
    }
    ns.remove();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suricata_killed_is_restarted_and_detection_resumes() {
    let agent = NidsAgent::start("nids-kill", RULES, "").await;
    let server = TestContainer::run_cmd("kill-srv", &[], &["httpd", "-f", "-p", "80"]);
    let client = TestContainer::run("kill-cli", &[]);
    let attack = format!("echo PORTWARDEN-ATTACK | nc -w 1 {} 80; true", server.ip());
    docker_ok(&["exec", &client.id, "sh", "-c", &attack]);
    agent.wait_alert(9_000_003, &client.id).await;

    let old = agent.suricata_pid().expect("a pid file");
    let killed = std::time::Instant::now();
    run(&["kill", "-9", &old.to_string()]);
    // Attack again and again until an alert shows up from the new Suricata.
    let before = agent.alerts(9_000_003, &client.id).len();
    let gap = loop {
        docker_ok(&["exec", &client.id, "sh", "-c", &attack]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        if agent.alerts(9_000_003, &client.id).len() > before {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(120), "no alert after Suricata was killed");
    };
    assert_ne!(agent.suricata_pid(), Some(old), "a new Suricata");
    eprintln!("alert gap after killing Suricata: {gap:?}");
    assert!(agent.agent.lines().iter().any(|l| l.contains("Suricata exited; restarting it")));
    // The gap is counted: its length, and the frames that went uninspected.
    let mut api = portwarden_proto::connect_unix(&agent.agent.api_socket).await.expect("API");
    let status = api.status(v1::StatusRequest {}).await.expect("status").into_inner();
    let counter = |k: &str| status.counters.get(k).copied().unwrap_or_default();
    assert_eq!(counter("nids.suricata_crashes"), 1, "{:?}", status.counters);
    assert_eq!(counter("nids.suricata_running"), 1, "{:?}", status.counters);
    assert!(counter("nids.suricata_gap_ms") > 0, "{:?}", status.counters);
    assert!(counter("nids.mirror.gap_frames") > 0, "attacks during the gap: {:?}", status.counters);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_rules_are_named_and_the_rest_keep_working() {
    let rules =
        format!("{RULES}alert tcp any any -> any any (msg:\"broken\"; content:\"x\"; nosuchkeyword; sid:9000099;)\n");
    let agent = NidsAgent::start("nids-badrule", &rules, "").await;
    let warning = agent.agent.wait_for_text("Suricata rejected a rule", Duration::from_secs(30)).await;
    assert!(
        warning.contains("nosuchkeyword") || warning.contains("9000099") || warning.contains("test.rules"),
        "{warning}"
    );
    // Alerts also stream through the API, each naming its container.
    let mut api = portwarden_proto::connect_unix(&agent.agent.api_socket).await.expect("API");
    let mut alerts = api.stream_alerts(v1::StreamAlertsRequest::default()).await.expect("alert stream").into_inner();
    let server = TestContainer::run_cmd("badrule-srv", &[], &["httpd", "-f", "-p", "80"]);
    let client = TestContainer::run("badrule-cli", &[]);
    agent.wait_captured(&server.id).await;
    agent.wait_captured(&client.id).await;
    wait_http(&client, &server.ip()).await;
    docker_ok(&["exec", &client.id, "sh", "-c", &attack(&server.ip())]);
    agent.wait_alert(9_000_003, &client.id).await;
    let streamed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let a = alerts.message().await.expect("stream ok").expect("stream open");
            if a.container.as_ref().is_some_and(|c| c.id == client.id) {
                return a;
            }
        }
    })
    .await
    .expect("the alert arrives on the API stream");
    assert_eq!(streamed.event_type, "alert");
    let eve: serde_json::Value = serde_json::from_str(&streamed.json).expect("EVE JSON");
    assert_eq!(eve["container"]["name"], client.name.as_str());

    // Fixed rules plus a new one, reloaded through the API: Suricata's
    // answer comes back, and the new rule alerts.
    let fixed = format!(
        "{RULES}alert tcp any any -> any any (msg:\"reloaded\"; content:\"PORTWARDEN-RELOADED\"; sid:9000077;)\n"
    );
    std::fs::write(agent.dir.join("rules/test.rules"), &fixed).expect("rules");
    let reply = api.reload_rules(v1::ReloadRulesRequest {}).await.expect("reload").into_inner();
    assert!(reply.completed, "{reply:?}");
    assert_eq!(reply.rules_failed, 0, "{reply:?}");
    assert_eq!(reply.rules_loaded, fixed.lines().filter(|l| l.starts_with("alert")).count() as u64, "{reply:?}");
    let send = format!("echo PORTWARDEN-RELOADED | nc -w 1 {} 80; true", server.ip());
    portwarden_tests::eventually("an alert from the reloaded rule", Duration::from_secs(60), || {
        docker_ok(&["exec", &client.id, "sh", "-c", &send]);
        agent.alerts(9_000_077, &client.id).into_iter().next()
    })
    .await;
}

/// (signature id, protocol, source, destination) of every alert in `events`.
fn alert_keys(events: &[serde_json::Value]) -> std::collections::BTreeSet<(u64, String, String, String)> {
    events
        .iter()
        .filter(|e| e["event_type"] == "alert")
        .map(|e| {
            (
                e["alert"]["signature_id"].as_u64().unwrap_or(0),
                e["proto"].as_str().unwrap_or_default().to_owned(),
                format!("{}:{}", e["src_ip"].as_str().unwrap_or_default(), e["src_port"]),
                format!("{}:{}", e["dest_ip"].as_str().unwrap_or_default(), e["dest_port"]),
            )
        })
        .collect()
}

fn eve_file(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_alerts_match_suricata_reading_the_agents_pcapng() {
    let agent = NidsAgent::start("nids-parity", RULES, "").await;
    let server = TestContainer::run_cmd("parity-srv", &[], &["httpd", "-f", "-p", "80"]);
    let client = TestContainer::run("parity-cli", &[]);
    let pcap = agent.dir.join("client.pcapng");
    let capture = portwarden_tests::agent::Agent::spawn(
        &["capture", "--container", &client.name, "-w", pcap.to_str().unwrap()],
        std::process::Stdio::null(),
    );
    capture.wait_for_text("capturing", Duration::from_secs(30)).await;
    capture.wait_for_text("attached", Duration::from_secs(30)).await;
    agent.wait_captured(&client.id).await;
    agent.wait_captured(&server.id).await;
    wait_http(&client, &server.ip()).await;
    docker_ok(&["exec", &client.id, "sh", "-c", &attack(&server.ip())]);
    for sid in [9_000_001, 9_000_002, 9_000_003] {
        agent.wait_alert(sid, &client.id).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, _) = capture.stop("-INT");
    assert!(status.success());

    let offline = agent.dir.join("offline");
    std::fs::create_dir_all(&offline).unwrap();
    let rules = agent.dir.join("rules/test.rules");
    let out = Command::new("suricata")
        .args([
            "-r",
            pcap.to_str().unwrap(),
            "-S",
            rules.to_str().unwrap(),
            "-l",
            offline.to_str().unwrap(),
            "-k",
            "none",
        ])
        .output()
        .expect("suricata runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let live: Vec<_> = agent.events().into_iter().filter(|e| e["container"]["id"] == client.id.as_str()).collect();
    let (live, offline) = (alert_keys(&live), alert_keys(&eve_file(&offline.join("eve.json"))));
    assert!(live.len() >= 3, "{live:?}");
    assert_eq!(live, offline, "the same alerts live and offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_sensor_gets_vxlan_and_its_vni_maps_to_the_container() {
    // The sensor: its own namespace, reached over a veth; nothing routes further.
    let n = std::process::id() % 200 + 20;
    let sensor_ns = unique_name("sensor");
    let (host_if, sensor_if) = (format!("pws{n}h"), format!("pws{n}s"));
    run(&["ip", "netns", "add", &sensor_ns]);
    let _cleanup = NetnsGuard(sensor_ns.clone());
    run(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", &sensor_if, "netns", &sensor_ns]);
    run(&["ip", "addr", "add", &format!("10.251.{n}.1/30"), "dev", &host_if]);
    run(&["ip", "link", "set", &host_if, "up"]);
    run(&["ip", "-n", &sensor_ns, "addr", "add", &format!("10.251.{n}.2/30"), "dev", &sensor_if]);
    run(&["ip", "-n", &sensor_ns, "link", "set", &sensor_if, "up"]);
    let dir = std::env::temp_dir().join(unique_name("sensor"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("test.rules"), RULES).unwrap();
    let mut sensor = Command::new("ip")
        .args(["netns", "exec", &sensor_ns, "suricata", "-i", &sensor_if, "-k", "none"])
        .args(["-S", dir.join("test.rules").to_str().unwrap(), "-l", dir.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sensor suricata");
    portwarden_tests::eventually("the sensor's EVE file", Duration::from_secs(60), || {
        dir.join("eve.json").exists().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let agent = NidsAgent::spawn("nids-remote", RULES, &format!("vxlan = \"10.251.{n}.2:4789\"\nlocal = false"));
    agent.agent.wait_for_text("mirror sending VXLAN", Duration::from_secs(30)).await;
    let server = TestContainer::run_cmd("remote-srv", &[], &["httpd", "-f", "-p", "80"]);
    let client = TestContainer::run("remote-cli", &[]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let client_ip = client.ip();
    let attack = format!("echo PORTWARDEN-ATTACK | nc -w 1 {} 80; true", server.ip());
    let alert = portwarden_tests::eventually("an alert at the sensor", Duration::from_secs(60), || {
        docker_ok(&["exec", &client.id, "sh", "-c", &attack]);
        eve_file(&dir.join("eve.json")).into_iter().find(|e| {
            e["event_type"] == "alert" && e["alert"]["signature_id"] == 9_000_003 && e["src_ip"] == client_ip.as_str()
        })
    })
    .await;
    assert_eq!(alert["dest_port"], 80);
    let map: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(agent.run_dir.join("vni-map.json")).unwrap()).unwrap();
    let vni = map.as_object().unwrap().iter().find(|(_, c)| c["id"] == client.id.as_str()).map(|(vni, _)| vni.clone());
    assert!(vni.is_some(), "the client's VNI is in the map: {map}");
    let _ = sensor.kill();
    let _ = sensor.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_suricata_is_read_through_its_eve_file_and_status_shows_it() {
    let agent = NidsAgent::spawn("nids-external", RULES, "suricata = \"external\"\neve_file = \"{dir}/ext/eve.json\"");
    agent.agent.wait_for_text("mirror writing pcap to a pipe", Duration::from_secs(30)).await;
    // The user's own Suricata, reading the mirror's pipe.
    let ext = agent.dir.join("ext");
    std::fs::create_dir_all(&ext).unwrap();
    let mut suricata = Command::new("suricata")
        .arg("-r")
        .arg(agent.run_dir.join("mirror.pcap"))
        .args(["-S", agent.dir.join("rules/test.rules").to_str().unwrap(), "-l", ext.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("suricata runs");
    portwarden_tests::eventually("the external EVE file", Duration::from_secs(60), || {
        ext.join("eve.json").exists().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let server = TestContainer::run_cmd("ext-srv", &[], &["httpd", "-f", "-p", "80"]);
    let client = TestContainer::run("ext-cli", &[]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let attack = format!("echo PORTWARDEN-ATTACK | nc -w 1 {} 80; true", server.ip());
    let alert =
        portwarden_tests::eventually("an attributed alert from the external Suricata", Duration::from_secs(60), || {
            docker_ok(&["exec", &client.id, "sh", "-c", &attack]);
            agent.alerts(9_000_003, &client.id).into_iter().next()
        })
        .await;
    assert_eq!(alert["container"]["name"], client.name.as_str());

    // `portwarden status` shows the running agent's detection counters.
    let status = portwarden_tests::eventually("status with alerts", Duration::from_secs(30), || {
        let out = Command::new(portwarden_tests::portwarden_bin())
            .arg("--config")
            .arg(agent.dir.join("portwarden.toml"))
            .env("PORTWARDEN_API_SOCKET", &agent.agent.api_socket)
            .args(["status", "--json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["daemon"]["nids"]["alerts"].as_u64()? > 0).then_some(v)
    })
    .await;
    assert!(status["daemon"]["nids"]["mirror"]["sent"].as_u64().unwrap() > 0);
    let _ = suricata.kill();
    let _ = suricata.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_suricata_turns_detection_off_and_nothing_else() {
    let agent = NidsAgent::spawn("nids-nosuricata", RULES, "suricata_binary = \"/nonexistent/suricata\"");
    let line = agent.agent.wait_for_text("Suricata is not installed", Duration::from_secs(30)).await;
    assert!(line.contains("capture and logs go on"), "{line}");
    // Capture still attaches to a new container.
    let c = TestContainer::run("nosuricata", &[]);
    portwarden_tests::eventually("capture of the new container", Duration::from_secs(30), || {
        agent.agent.find_json("capture attached", |v| v["container"] == c.id.as_str())
    })
    .await;
    let count = agent.agent.lines().iter().filter(|l| l.contains("Suricata is not installed")).count();
    assert_eq!(count, 1, "one message, no retry loop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_rules_mount_without_builtin_rules_turns_detection_off_and_says_why() {
    // A mounted ConfigMap whose rule file holds only a comment.
    let agent = NidsAgent::spawn("nids-norules", "# no rules yet\n", "builtin_rules = false");
    let line = agent.agent.wait_for_text("intrusion detection is off", Duration::from_secs(30)).await;
    assert!(line.contains("holds no rules") && line.contains("builtin_rules = false"), "{line}");
    let c = TestContainer::run("norules", &[]);
    portwarden_tests::eventually("capture of the new container", Duration::from_secs(30), || {
        agent.agent.find_json("capture attached", |v| v["container"] == c.id.as_str())
    })
    .await;
    assert!(agent.suricata_pid().is_none(), "no Suricata was started");
    // A pre-start capture can attach before every runtime's first sync:
    // until then the agent is still starting.
    let status = || -> serde_json::Value {
        let out = std::process::Command::new(portwarden_tests::portwarden_bin())
            .arg("--config")
            .arg(agent.dir.join("portwarden.toml"))
            .args(["status", "--json"])
            .env("PORTWARDEN_API_SOCKET", &agent.agent.api_socket)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).expect("status --json")
    };
    let status = portwarden_tests::eventually("the agent started", Duration::from_secs(60), || {
        let s = status();
        (!s["daemon"]["health"].as_str().unwrap_or_default().starts_with("starting")).then_some(s)
    })
    .await;
    let health = status["daemon"]["health"].as_str().unwrap_or_default();
    assert!(health.starts_with("ok (detection off: built-in rules are off"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_go_to_their_own_outputs_by_severity_and_can_stay_off_the_log_outputs() {
    // The same payload raises a grave alert (priority 1) and a minor one
    // (no classtype: severity 3).
    let rules = format!(
        "{RULES}alert tcp any any -> any any (msg:\"PW grave payload\"; flow:established; content:\"PORTWARDEN-ATTACK\"; priority:1; sid:9000010; rev:1;)\n"
    );
    let extra = "builtin_rules = false\n\n[alerts]\nto_log_outputs = false\nmin_severity = 1\n\n\
                 [[alerts.outputs]]\ntype = \"file\"\npath = \"{dir}/alerts.json\"\n";
    let agent = NidsAgent::start("nids-alert-outputs", &rules, extra).await;
    let server = TestContainer::run_cmd("alerts-srv", &[], &["httpd", "-f", "-p", "80"]);
    let client = TestContainer::run("alerts-cli", &[]);
    for c in [&server, &client] {
        agent.wait_captured(&c.id).await;
    }
    wait_http(&client, &server.ip()).await;
    docker_ok(&["exec", &client.id, "sh", "-c", &attack(&server.ip())]);
    let alerts_file = agent.dir.join("alerts.json");
    let read = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&alerts_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let grave = portwarden_tests::eventually("the grave alert in the alert output", Duration::from_secs(60), || {
        read()
            .into_iter()
            .find(|a| a["alert"]["signature_id"] == 9_000_010 && a["container"]["id"] == client.id.as_str())
    })
    .await;
    assert_eq!(grave["alert"]["severity"], 1, "{grave}");
    // The minor alerts of the same packets were raised (the payload rule has
    // priority 3), but only the grave one is in the alert output, and no
    // alert reached the log output.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let minor: Vec<_> = read().into_iter().filter(|a| a["alert"]["severity"] != 1).collect();
    assert!(minor.is_empty(), "below min_severity: {minor:?}");
    let in_logs: Vec<_> = agent.events().into_iter().filter(|e| e["event_type"] == "alert").collect();
    assert!(in_logs.is_empty(), "to_log_outputs = false: {in_logs:?}");
}
