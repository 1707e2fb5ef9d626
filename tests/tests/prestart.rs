//! Pre-start attach against the real runtimes: a container that sends at
//! once has its first packets captured (Docker, `ctr run`, a CRI pod on
//! containerd, CRI-O where it is up, Podman), its first packet alerts, 200
//! back-to-back containers each have their first packet captured, and an
//! agent killed while containers start holds none of them up.
//!
//! Each container sends twelve TCP SYNs on its own loopback, one to each of
//! twelve ports no other container uses, and the agent's pcapng is searched
//! for those ports: what the agent captured, whoever it names.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use portwarden_tests::agent::Agent;
use portwarden_tests::cri::{CriPod, CtrNamespace};
use portwarden_tests::nids::NidsAgent;
use portwarden_tests::podman::podman_ok;
use portwarden_tests::{busybox_image, docker, docker_ok, eventually, portwarden_bin, unique_name};

const WAIT: Duration = Duration::from_secs(60);
/// SYNs each container sends at once.
const BURST: u16 = 12;

/// Ports for one container's burst, unique in this test run.
fn ports() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 20) as u16 * 1_000;
    base + NEXT.fetch_add(BURST, Ordering::Relaxed)
}

/// A shell line sending one SYN to each of `base+1..=base+BURST` on
/// loopback at once (nothing listens: each is answered by a reset).
fn burst(base: u16) -> String {
    format!("for p in $(seq {} {}); do nc -w 1 127.0.0.1 $p </dev/null 2>/dev/null; done; true", base + 1, base + BURST)
}

/// `portwarden capture -w FILE` of every container, pre-start attach on.
struct Capture {
    agent: Agent,
    file: PathBuf,
    dir: PathBuf,
}

impl Capture {
    async fn start(prefix: &str) -> Capture {
        let dir = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("all.pcapng");
        let mut command = Command::new(portwarden_bin());
        command.env("RUST_LOG", "info").arg("capture").arg("-w").arg(&file);
        let agent = Agent::spawn_command(&mut command, Stdio::null());
        agent.wait_for_text("pre-start attach on", WAIT).await;
        Capture { agent, file, dir }
    }

    /// Stops the capture and returns the ports SYNs went to.
    fn stop(self) -> (BTreeSet<u16>, Vec<String>) {
        let (status, lines) = self.agent.stop("-INT");
        assert!(status.success(), "{lines:?}");
        let syns = syn_ports(&self.file);
        let _ = std::fs::remove_dir_all(&self.dir);
        (syns, lines)
    }
}

/// The destination ports of the SYNs in a pcapng file.
fn syn_ports(file: &Path) -> BTreeSet<u16> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-Y", "tcp.flags.syn == 1 && tcp.flags.ack == 0", "-T", "fields", "-e", "tcp.dstport"])
        .output()
        .expect("tshark runs");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn burst_ports(base: u16) -> BTreeSet<u16> {
    (base + 1..=base + BURST).collect()
}

fn assert_burst_captured(syns: &BTreeSet<u16>, base: u16, runtime: &str, lines: &[String]) {
    let want = burst_ports(base);
    let got: BTreeSet<u16> = syns.intersection(&want).copied().collect();
    eprintln!("{runtime}: {} of {BURST} packets sent at once captured", got.len());
    assert_eq!(got, want, "{runtime}: the first packets of a container sending at once; agent log: {lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("before_start") && l.contains("true")),
        "attached before start: {lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_first_packets_are_captured() {
    let capture = Capture::start("pre-docker").await;
    let base = ports();
    let name = unique_name("first");
    docker_ok(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "--name",
        &name,
        "--network",
        "none",
        &busybox_image(),
        "sh",
        "-c",
        &burst(base),
    ]);
    let (syns, lines) = capture.stop();
    assert_burst_captured(&syns, base, "docker", &lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctr_run_first_packets_are_captured() {
    // `ctr run` gives a container a namespace without a live loopback:
    // join one of the test's own instead, `lo` up.
    let netns = unique_name("ns");
    let ip = |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success(), "ip {args:?}");
    ip(&["netns", "add", &netns]);
    ip(&["-n", &netns, "link", "set", "lo", "up"]);
    let ns = CtrNamespace::new("pre-ctr");
    let capture = Capture::start("pre-ctr").await;
    let base = ports();
    let with_ns = format!("network:/var/run/netns/{netns}");
    ns.ctr(&["run", "--rm", "--with-ns", &with_ns, &busybox_image(), "burst", "sh", "-c", &burst(base)]);
    let (syns, lines) = capture.stop();
    ns.remove();
    ip(&["netns", "delete", &netns]);
    assert_burst_captured(&syns, base, "ctr run", &lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cri_pods_first_packets_are_captured() {
    let capture = Capture::start("pre-cri").await;
    let base = ports();
    let mut pod = CriPod::run("pre-cri").await;
    pod.start_with("burst", &["sh", "-c", &burst(base)]).await;
    // The container exits by itself once its SYNs are answered.
    let log = pod.log_path("burst");
    eventually("the burst container's exit", WAIT, || std::fs::metadata(&log).ok()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    pod.remove().await;
    let (syns, lines) = capture.stop();
    assert_burst_captured(&syns, base, "CRI pod on containerd", &lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crio_pods_first_packets_are_captured() {
    let Ok(socket) = std::env::var("CRIO_SOCK") else {
        eprintln!("CRIO_SOCK not set (../shared/crio/up.sh not run): CRI-O left out");
        return;
    };
    let mut command = Command::new(portwarden_bin());
    let dir = std::env::temp_dir().join(unique_name("pre-crio"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("all.pcapng");
    // CRI-O runs runc through a wrapper script; runc itself is marked.
    command.env("RUST_LOG", "info").args(["--cri-socket", &socket, "capture", "-w"]).arg(&file);
    let agent = Agent::spawn_command(&mut command, Stdio::null());
    agent.wait_for_text("pre-start attach on", WAIT).await;
    let base = ports();
    let mut pod = CriPod::run_at(Path::new(&socket), "pre-crio").await;
    pod.start_with("burst", &["sh", "-c", &burst(base)]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    pod.remove().await;
    let (status, lines) = agent.stop("-INT");
    assert!(status.success());
    let syns = syn_ports(&file);
    let _ = std::fs::remove_dir_all(&dir);
    assert_burst_captured(&syns, base, "CRI-O pod", &lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_first_packets_are_captured() {
    portwarden_tests::podman::podman_socket();
    let capture = Capture::start("pre-podman").await;
    let base = ports();
    let name = unique_name("first");
    podman_ok(&["run", "--rm", "--name", &name, "--network", "none", &busybox_image(), "sh", "-c", &burst(base)]);
    let (syns, lines) = capture.stop();
    assert_burst_captured(&syns, base, "podman (conmon, runc)", &lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_packet_alerts_naming_the_container() {
    let base = ports();
    let sid = 9_100_201;
    let rule =
        format!("alert tcp any any -> any {} (msg:\"PW test first SYN\"; flags:S; sid:{sid}; rev:1;)\n", base + 1);
    let nids = NidsAgent::start("pre-alert", &rule, "").await;
    let name = unique_name("first");
    // It sends at once, then waits so its runtime reports it by name.
    let script = format!("{}; sleep 3", burst(base));
    let id = docker_ok(&[
        "run",
        "-d",
        "--pull",
        "never",
        "--name",
        &name,
        "--network",
        "none",
        &busybox_image(),
        "sh",
        "-c",
        &script,
    ]);
    let alert = nids.wait_alert(sid, &id).await;
    assert_eq!(alert["container"]["name"], name.as_str(), "{alert}");
    assert_eq!(alert["dest_port"], base + 1);
    let _ = docker(&["rm", "-f", &id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_containers_back_to_back_each_have_their_first_packet_captured() {
    const CONTAINERS: u16 = 200;
    const PARALLEL: u16 = 4;
    let capture = Capture::start("pre-200").await;
    let base = {
        let first = ports();
        // Reserve the range: one port per container.
        for _ in 1..CONTAINERS.div_ceil(BURST) {
            ports();
        }
        first
    };
    let image = busybox_image();
    std::thread::scope(|s| {
        for lane in 0..PARALLEL {
            let image = &image;
            s.spawn(move || {
                for i in (lane..CONTAINERS).step_by(PARALLEL as usize) {
                    let script = format!("nc -w 1 127.0.0.1 {} </dev/null 2>/dev/null; true", base + 1 + i);
                    let out =
                        docker(&["run", "--rm", "--pull", "never", "--network", "none", image, "sh", "-c", &script]);
                    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                }
            });
        }
    });
    let (syns, lines) = capture.stop();
    let want: BTreeSet<u16> = (base + 1..=base + CONTAINERS).collect();
    let missing: Vec<u16> = want.difference(&syns).copied().collect();
    let early = lines.iter().filter(|l| l.contains("capture attached") && l.contains("before_start=true")).count();
    eprintln!(
        "{CONTAINERS} containers back to back: {} first packets captured, {early} captures attached before start",
        CONTAINERS as usize - missing.len()
    );
    let summary = lines.iter().find(|l| l.contains("pre-start hook stopped")).cloned().unwrap_or_default();
    eprintln!("{summary}");
    assert!(missing.is_empty(), "first packets missing for ports {missing:?}; {summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_while_containers_start_holds_none_of_them() {
    let capture = Capture::start("pre-kill").await;
    let image = busybox_image();
    let started = std::sync::atomic::AtomicUsize::new(0);
    let agent = std::sync::Mutex::new(Some(capture.agent));
    std::thread::scope(|s| {
        for _ in 0..2 {
            let (image, started) = (&image, &started);
            s.spawn(move || {
                for _ in 0..10 {
                    let out = Command::new("timeout")
                        .args(["120", "docker", "run", "--rm", "--pull", "never", "--network", "none", image, "true"])
                        .output()
                        .expect("docker runs");
                    assert!(out.status.success(), "a start failed or hung: {}", String::from_utf8_lossy(&out.stderr));
                    started.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // SIGKILL mid-way: the kernel allows whatever the agent held.
        while started.load(Ordering::Relaxed) < 4 {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(mut agent) = agent.lock().unwrap().take() {
            agent.kill();
        }
    });
    assert_eq!(started.load(Ordering::Relaxed), 20);
    let _ = std::fs::remove_dir_all(&capture.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_invocations_it_cannot_follow_are_allowed_and_counted() {
    // A marked "runtime" of the test's own (a copy of busybox), invoked as
    // a runc wrapper or another version might be.
    let dir = std::env::temp_dir().join(unique_name("pre-bad"));
    std::fs::create_dir_all(dir.join("bundle")).unwrap();
    let runtime = dir.join("odd-runc");
    std::fs::copy("/bin/busybox", &runtime).expect("busybox-static is installed");
    std::fs::write(dir.join("bundle/config.json"), "{ not json").unwrap();
    let extra = format!("builtin_rules = false\n\n[capture.prestart]\nruntimes = [\"{}\"]\n", runtime.display());
    let nids = NidsAgent::start("pre-bad", portwarden_tests::nids::RULES, &extra).await;
    let socket = nids.agent.api_socket.clone();
    let status = || {
        let out = Command::new(portwarden_bin())
            .env("PORTWARDEN_API_SOCKET", &socket)
            .args(["status", "--json"])
            .output()
            .expect("status runs");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    let before = status();
    let p = &before["daemon"]["prestart"];
    assert_eq!(p["state"], "on", "{before}");
    assert!(p["marked"].as_array().is_some_and(|m| m.iter().any(|m| m == runtime.to_str().unwrap())), "{before}");
    // `create` with no pid file, then one whose bundle does not parse. The
    // binary runs as busybox's `sh` on a script named `create` (so it lives
    // a second, its command line a runtime's): each runs unheld, counted.
    std::fs::write(dir.join("create"), "sleep 1\n").unwrap();
    let bundle = dir.join("bundle").display().to_string();
    let pid_file = dir.join("bundle/init.pid").display().to_string();
    for args in [
        vec!["create", "--bundle", &bundle, "id-1"],
        vec!["create", "--bundle", &bundle, "--pid-file", &pid_file, "id-2"],
    ] {
        let started = std::time::Instant::now();
        let status = Command::new(&runtime).arg0("sh").args(&args).current_dir(&dir).status().unwrap();
        assert!(status.success());
        eprintln!("odd runtime {args:?} ran in {:?}", started.elapsed());
    }
    let counted = eventually("both counted", WAIT, || {
        let p = status()["daemon"]["prestart"].clone();
        (p["unknown_args"].as_u64() >= Some(1) && p["bad_config"].as_u64() >= Some(1)).then_some(p)
    })
    .await;
    eprintln!("prestart counters after odd invocations: {counted}");
    let _ = std::fs::remove_dir_all(&dir);
}
