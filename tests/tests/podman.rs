//! Issue 15: Podman through `runtime-podman` (written against core's public
//! traits only), against Debian's Podman serving its API as a user starts
//! it (`podman system service`, by scripts/podman-up.sh).

use std::process::Command;
use std::time::Duration;

use portwarden_tests::api::ApiAgent;
use portwarden_tests::cri::{CriPod, CtrNamespace};
use portwarden_tests::podman::{PodmanContainer, PodmanPod, podman_socket};
use portwarden_tests::{
    TestContainer, assert_quiet_for, docker_socket, eventually, portwarden_bin, tshark_fields, unique_name,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// `portwarden ps --json --all` through `daemon`.
fn ps(daemon: &ApiAgent) -> Vec<Value> {
    let out = daemon.cli().args(["ps", "--json", "--all"]).output().expect("ps");
    serde_json::from_slice::<Value>(&out.stdout).ok().and_then(|v| v.as_array().cloned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_podman_container_is_listed_captured_and_collected_and_removed_whether_it_predates_the_agent_or_not() {
    podman_socket();
    let target = PodmanContainer::run("pm-target", &[], &["sleep", "3600"]);
    let chatty = |name: &str| {
        format!(
            "i=0; while true; do i=$((i+1)); echo {name}-out-$i; echo {name}-err-$i >&2; ping -c 1 -W 1 {} >/dev/null; sleep 0.3; done",
            target.ip()
        )
    };
    // One container already running when the agent starts, one after.
    // Podman drops NET_RAW by default; busybox's ping needs it.
    let before = PodmanContainer::run("pm-before", &["--cap-add=NET_RAW"], &["sh", "-c", &chatty("before")]);
    let daemon = ApiAgent::start("podman", "").await;
    let after = PodmanContainer::run("pm-after", &["--cap-add=NET_RAW"], &["sh", "-c", &chatty("after")]);

    for c in [&before, &after] {
        let listed = eventually(&format!("{} listed with its PID", c.name), WAIT, || {
            ps(&daemon).into_iter().find(|x| x["id"] == c.id.as_str() && x["pid"].is_u64())
        })
        .await;
        assert_eq!(listed["runtime"], "podman", "{listed}");
        assert_eq!(listed["name"], c.name.as_str());
        assert_eq!(listed["state"], "running");
        assert_eq!(listed["pid"], c.pid(), "{listed}");
        assert!(listed["ips"].as_array().is_some_and(|ips| ips.iter().any(|ip| ip == c.ip().as_str())), "{listed}");

        // Its output, both streams, attributed.
        let name = c.name.clone();
        let got = eventually(&format!("{}'s stdout and stderr", c.name), WAIT, || {
            let mine: Vec<Value> =
                daemon.records().into_iter().filter(|r| r["container"]["id"] == c.id.as_str()).collect();
            let streams = |s: &str| mine.iter().filter(|r| r["stream"] == s).count();
            (streams("stdout") >= 2 && streams("stderr") >= 2).then_some(mine)
        })
        .await;
        for r in &got {
            assert_eq!(r["source"], "podman", "{r}");
            assert_eq!(r["container"]["runtime"], "podman", "{r}");
            assert_eq!(r["container"]["name"], name.as_str(), "{r}");
            let message = r["message"].as_str().unwrap_or_default();
            let stream = r["stream"].as_str().unwrap_or_default();
            let prefix = if c.id == before.id { "before" } else { "after" };
            let expected = if stream == "stdout" { format!("{prefix}-out-") } else { format!("{prefix}-err-") };
            assert!(message.starts_with(&expected), "{r}");
        }

        // Its traffic, captured in its own namespace through the daemon.
        let file = std::env::temp_dir().join(format!("{}.pcapng", unique_name("pm")));
        let out = daemon
            .cli()
            .args(["capture", "--container", &c.name, "-f", "icmp", "-c", "4", "-w"])
            .arg(&file)
            .output()
            .expect("capture");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let interfaces = tshark_fields(&file, "frame.interface_name");
        assert_eq!(interfaces.len(), 4, "{interfaces:?}");
        assert!(interfaces.iter().all(|i| i.contains(&c.name)), "{interfaces:?}");
    }

    // Removed: gone from the list, its capture detached.
    let (gone_id, gone_name) = (after.id.clone(), after.name.clone());
    drop(after);
    eventually("the removed container to leave the list", WAIT, || {
        (!ps(&daemon).iter().any(|x| x["id"] == gone_id.as_str())).then_some(())
    })
    .await;
    // The agent's own capture of it detaches too (the CLI's capture above
    // was the first to).
    eventually(&format!("{gone_name} removed and both its captures detached"), WAIT, || {
        let lines = daemon.agent.lines();
        let removed = lines.iter().any(|l| l.contains("container removed") && l.contains(&gone_name));
        let detached = lines.iter().filter(|l| l.contains("capture detached") && l.contains(&gone_name)).count();
        (removed && detached == 2).then_some(())
    })
    .await;

    // Podman's event stream sends nothing, headers included, until an
    // event: a quiet spell longer than the request timeout (10 s) is not
    // a lost runtime.
    assert_quiet_for("runtime lost", Duration::from_secs(12), || {
        daemon.agent.lines().into_iter().find(|l| l.contains("runtime lost"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_podman_pod_is_one_namespace_whose_members_carry_the_pod() {
    podman_socket();
    let pod = PodmanPod::create("pm-pod");
    let pod_arg = format!("--pod={}", pod.id);
    let app = PodmanContainer::run("pm-app", &[&pod_arg], &["sleep", "3600"]);
    let side = PodmanContainer::run("pm-side", &[&pod_arg], &["sleep", "3600"]);
    let out = Command::new(portwarden_bin()).args(["--runtime", "podman", "ps", "--json"]).output().expect("ps");
    let list: Vec<Value> =
        serde_json::from_slice::<Value>(&out.stdout).expect("json").as_array().cloned().unwrap_or_default();
    let members: Vec<&Value> = list.iter().filter(|c| c["pod"]["uid"] == pod.id.as_str()).collect();
    assert_eq!(members.len(), 3, "two containers and the infra container: {members:?}");
    assert_eq!(members.iter().filter(|m| m["sandbox"] == true).count(), 1, "the infra container: {members:?}");
    for m in &members {
        assert_eq!(m["pod"]["name"], pod.name.as_str(), "{m}");
        assert_eq!(m["ips"], list.iter().find(|c| c["id"] == app.id.as_str()).expect("app")["ips"]);
    }
    let netns = |c: &PodmanContainer| std::fs::read_link(format!("/proc/{}/ns/net", c.pid())).expect("netns");
    assert_eq!(netns(&app), netns(&side), "members share the pod's namespace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_mixed_host_every_container_is_listed_exactly_once() {
    podman_socket();
    docker_socket();
    let docker = TestContainer::run("mix-docker", &[]);
    let podman = PodmanContainer::run("mix-podman", &[], &["sleep", "3600"]);
    let ns = CtrNamespace::new("mix-ctr");
    let ctr_id = unique_name("mix-ctr");
    ns.run(&ctr_id);
    let mut pod = CriPod::run("mix-cri").await;
    let cri_id = pod.start("app").await;

    let out = Command::new(portwarden_bin()).args(["ps", "--json"]).output().expect("ps");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Vec<Value> =
        serde_json::from_slice::<Value>(&out.stdout).expect("json").as_array().cloned().unwrap_or_default();
    for (id, runtime) in [
        (docker.id.as_str(), "docker"),
        (podman.id.as_str(), "podman"),
        (ctr_id.as_str(), "containerd"),
        (cri_id.as_str(), "cri"),
    ] {
        let rows: Vec<&Value> = list.iter().filter(|c| c["id"] == id).collect();
        assert_eq!(rows.len(), 1, "{runtime} container {id} listed once: {rows:?}");
        assert_eq!(rows[0]["runtime"], runtime, "{}", rows[0]);
        assert!(rows[0]["pid"].is_u64(), "{}", rows[0]);
    }
    let mut ids: Vec<&str> = list.iter().filter_map(|c| c["id"].as_str()).collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total, "no container twice");
    ns.delete(&ctr_id);
    ns.remove();
    pod.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_and_podman_sockets_are_told_apart_and_named() {
    let podman = podman_socket();
    let docker = docker_socket();
    let out = Command::new(portwarden_bin())
        .arg("--docker-socket")
        .arg(&podman)
        .arg("--podman-socket")
        .arg(&docker)
        .args(["--runtime", "docker,podman", "runtimes", "--json"])
        .output()
        .expect("runtimes");
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let rejected = report["rejected"].as_array().expect("rejected");
    let reason = |runtime: &str| {
        rejected.iter().find(|r| r["runtime"] == runtime).map(|r| (r["reason"].clone(), r["detail"].clone()))
    };
    let (code, detail) = reason("docker").expect("docker rejected");
    assert_eq!(code, "wrong_protocol");
    assert!(detail.as_str().is_some_and(|d| d.contains("this is Podman")), "{detail}");
    let (code, detail) = reason("podman").expect("podman rejected");
    assert_eq!(code, "wrong_protocol");
    assert!(detail.as_str().is_some_and(|d| d.contains("not Podman")), "{detail}");

    let out = Command::new(portwarden_bin()).args(["--runtime", "dockr", "ps"]).output().expect("ps");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown runtime `dockr` (registered: docker, containerd, cri, podman)"), "{err}");
}
