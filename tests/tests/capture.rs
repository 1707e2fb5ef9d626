//! Issue 4: per-container capture against real containers, read back with
//! tshark.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use portwarden_tests::agent::Agent;
use portwarden_tests::cri::CriPod;
use portwarden_tests::{TestContainer, docker, docker_ok, unique_name};

const WAIT: Duration = Duration::from_secs(60);

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name(name));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// `tshark -r FILE -T fields -e ...` as rows of fields.
fn tshark(file: &Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(file).args(["-T", "fields", "-E", "separator=|"]);
    if !filter.is_empty() {
        cmd.args(["-Y", filter]);
    }
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark runs");
    assert!(out.status.success(), "tshark failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split('|').map(str::to_owned).collect()).collect()
}

fn web() -> TestContainer {
    let c = TestContainer::run("web", &[]);
    docker_ok(&["exec", "-d", &c.id, "httpd", "-f", "-p", "80", "-h", "/etc"]);
    c
}

/// `wget` from `client` to `url` until it answers (httpd may still be starting).
async fn fetch(client: &TestContainer, url: &str) {
    portwarden_tests::eventually(&format!("{url} to answer"), WAIT, || {
        docker(&["exec", &client.id, "wget", "-q", "-O", "/dev/null", url]).status.success().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_between_two_containers_is_captured_in_each_namespace() {
    let (server, client) = (web(), TestContainer::run("client", &[]));
    let file = scratch("two").join("two.pcapng");
    let agent = Agent::spawn(
        &["capture", "--container", &server.name, "--container", &client.name, "-w", file.to_str().expect("utf8")],
        Stdio::null(),
    );
    agent.wait_for_text(&format!("attached {}", server.name), WAIT).await;
    agent.wait_for_text(&format!("attached {}", client.name), WAIT).await;
    fetch(&client, &format!("http://{}/passwd", server.ip())).await;
    let (status, _) = agent.stop("-INT");
    assert!(status.success());

    // The same TCP stream is in the file twice (once per namespace), so
    // tshark marks the second copy as retransmissions: match on ports.
    let request = "tcp.dstport == 80 && tcp.len > 0";
    let rows = tshark(&file, request, &["frame.interface_name", "ip.src", "ip.dst", "frame.interface_description"]);
    let on = |name: &str| rows.iter().find(|r| r[0] == format!("{name}/eth0")).cloned();
    let at_server = on(&server.name).expect("the request, seen in the server's namespace");
    let at_client = on(&client.name).expect("the request, seen in the client's namespace");
    for row in [&at_server, &at_client] {
        assert_eq!((row[1].as_str(), row[2].as_str()), (client.ip().as_str(), server.ip().as_str()));
    }
    assert!(
        at_server[3].contains(&format!("id={}", server.id)) && at_server[3].contains("runtime=docker"),
        "{}",
        at_server[3]
    );
    assert!(at_server[3].contains("image=localhost/testbed/busybox:1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_traffic_is_captured_once() {
    let server = web();
    let file = scratch("lo").join("lo.pcapng");
    let agent =
        Agent::spawn(&["capture", "--container", &server.name, "-w", file.to_str().expect("utf8")], Stdio::null());
    agent.wait_for_text(&format!("attached {}", server.name), WAIT).await;
    fetch(&server, "http://127.0.0.1/passwd").await;
    let (status, _) = agent.stop("-INT");
    assert!(status.success());
    let lo = format!("{}/lo", server.name);
    let syns =
        tshark(&file, "tcp.flags.syn == 1 && tcp.flags.ack == 0 && tcp.dstport == 80", &["frame.interface_name"]);
    let requests = tshark(&file, "http.request", &["frame.interface_name"]);
    assert!(!syns.is_empty());
    assert!(syns.iter().all(|r| r[0] == lo));
    assert_eq!(syns.len(), requests.len(), "one SYN per request, not two: {syns:?} / {requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cri_pods_traffic_is_attributed_to_the_pod() {
    let mut pod = CriPod::run("cap").await;
    pod.start_with("server", &["httpd", "-f", "-p", "8080", "-h", "/etc"]).await;
    let client = pod.start("client").await;
    let file = scratch("pod").join("pod.pcapng");
    let selector = format!("{}/{}", pod.namespace, pod.name);
    let agent = Agent::spawn(&["capture", "--pod", &selector, "-w", file.to_str().expect("utf8")], Stdio::null());
    agent.wait_for_text("attached", WAIT).await;
    portwarden_tests::eventually("the pod's server to answer", WAIT, || {
        let out = Command::new("ctr")
            .args(["-n", "k8s.io", "tasks", "exec", "--exec-id", &unique_name("x"), &client])
            .args(["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/passwd"])
            .output()
            .expect("ctr runs");
        out.status.success().then_some(())
    })
    .await;
    let (status, lines) = agent.stop("-INT");
    assert!(status.success(), "{lines:?}");
    let rows = tshark(&file, "http.request", &["frame.interface_name", "frame.interface_description"]);
    assert!(!rows.is_empty(), "no HTTP captured: {lines:?}");
    for row in &rows {
        assert!(row[0].ends_with("/lo"), "{row:?}");
        assert!(
            row[1].contains(&format!("pod={selector}")) && row[1].contains(&format!("pod_uid={}", pod.uid)),
            "{row:?}"
        );
        assert!(row[1].contains("runtime=cri"), "{row:?}");
    }
    pod.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bpf_filter_is_enforced_in_the_kernel() {
    let (server, client) = (web(), TestContainer::run("bpf", &[]));
    let file = scratch("bpf").join("bpf.pcapng");
    let agent = Agent::spawn(
        &["capture", "--container", &client.name, "-f", "tcp port 80", "-w", file.to_str().expect("utf8")],
        Stdio::null(),
    );
    agent.wait_for_text(&format!("attached {}", client.name), WAIT).await;
    // Traffic the filter must exclude, and traffic it must keep.
    docker_ok(&["exec", &client.id, "ping", "-c", "3", "-W", "1", &server.ip()]);
    fetch(&client, &format!("http://{}/passwd", server.ip())).await;
    let (status, lines) = agent.stop("-INT");
    assert!(status.success());

    let all = tshark(&file, "", &["tcp.port"]);
    assert!(!all.is_empty());
    assert!(all.iter().all(|r| r[0].split(',').any(|p| p == "80")), "only port 80 in the file: {all:?}");
    // The socket itself received only what the file holds: the kernel filtered.
    let captured: usize = lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("portwarden: {}: ", client.name)))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a capture report");
    assert_eq!(captured, all.len(), "frames received by the socket vs written: {lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_filter_is_a_clear_error() {
    let out = Command::new(portwarden_tests::portwarden_bin())
        .args(["capture", "--host", "-f", "tcp prot 80"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid capture filter `tcp prot 80`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_living_under_a_second_is_reported() {
    let server = web();
    let file = scratch("short").join("short.pcapng");
    let agent = Agent::spawn(&["capture", "-w", file.to_str().expect("utf8")], Stdio::null());
    agent.wait_for_text(&format!("attached {}", server.name), WAIT).await;
    let url = format!("http://{}/passwd", server.ip());
    let net = portwarden_tests::test_network();
    let image = portwarden_tests::busybox_image();
    // One container sends 0.3 s after starting, one at once; both are gone within a second.
    let (late, early) = (unique_name("brief-late"), unique_name("brief-early"));
    for (name, delay) in [(&late, "0.3"), (&early, "0")] {
        let script = format!("sleep {delay}; wget -q -O /dev/null {url}; sleep 0.3");
        docker_ok(&["run", "--rm", "--pull", "never", "--name", name, "--network", &net, &image, "sh", "-c", &script]);
    }
    let (status, _) = agent.stop("-INT");
    assert!(status.success());
    let count = |name: &str| {
        tshark(&file, &format!("frame.interface_name == \"{name}/eth0\" && tcp.port == 80"), &["frame.number"]).len()
    };
    let at_server = count(&server.name);
    let (late_seen, early_seen) = (count(&late), count(&early));
    eprintln!(
        "short-lived containers: sending after 0.3 s, {late_seen} HTTP packets captured in its own namespace; \
         sending at once, {early_seen}; the server's namespace saw {at_server} for both"
    );
    assert!(at_server > 0, "the server side is always captured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s_0_keeps_whole_frames_and_a_trailing_expression_filters_as_in_tcpdump() {
    let (server, client) = (web(), TestContainer::run("snap0", &[]));
    let file = scratch("snap0").join("snap0.pcapng");
    // tcpdump's order: options, then the filter expression as plain words.
    let agent = Agent::spawn(
        &[
            "capture",
            "--container",
            &client.name,
            "-s",
            "0",
            "-w",
            file.to_str().expect("utf8"),
            "icmp",
            "and",
            "host",
            &server.ip(),
        ],
        Stdio::null(),
    );
    agent.wait_for_text(&format!("attached {}", client.name), WAIT).await;
    docker_ok(&["exec", &client.id, "ping", "-c", "3", "-s", "1400", "-W", "1", &server.ip()]);
    fetch(&client, &format!("http://{}/passwd", server.ip())).await;
    let (status, lines) = agent.stop("-INT");
    assert!(status.success(), "{lines:?}");
    let rows = tshark(&file, "", &["frame.len", "frame.cap_len", "ip.proto"]);
    assert_eq!(rows.len(), 6, "3 requests and 3 replies, no TCP: {rows:?}");
    for r in &rows {
        assert_eq!(r[0], r[1], "-s 0 keeps the whole frame: {r:?}");
        assert_eq!(r[2], "1", "only ICMP passed the trailing expression: {r:?}");
        assert!(r[0].parse::<u32>().unwrap() > 1400, "{r:?}");
    }
}
