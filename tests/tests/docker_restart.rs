//! Issue 2: dockerd killed and restarted under a running agent. Alone in its
//! own test binary, because it takes dockerd away from everyone.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portwarden_core::{ContainerId, Inventory, InventoryOptions};
use portwarden_runtime_docker::DockerRuntime;
use portwarden_tests::{TestContainer, docker, docker_ok, docker_socket, eventually, portwarden_bin, repo_root};

const WAIT: Duration = Duration::from_secs(60);

/// The agent's JSON log lines, collected as they arrive.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<serde_json::Value>>>);

impl Logs {
    fn find(&self, message: &str, container: Option<&str>) -> Option<serde_json::Value> {
        let lines = self.0.lock().expect("logs lock");
        lines.iter().find(|l| l["message"] == message && container.is_none_or(|id| l["container"] == id)).cloned()
    }

    fn count(&self, message: &str) -> usize {
        self.0.lock().expect("logs lock").iter().filter(|l| l["message"] == message).count()
    }
}

fn kill_dockerd() {
    let pid = std::fs::read_to_string("/var/run/docker.pid").expect("dockerd pid file");
    let status = Command::new("kill").args(["-KILL", pid.trim()]).status().expect("kill runs");
    assert!(status.success());
}

fn restart_testbed() {
    let script = repo_root().join("scripts/testbed-up.sh");
    let out = Command::new("bash").arg(script).output().expect("testbed-up runs");
    assert!(out.status.success(), "testbed-up failed: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dockerd_restart_is_survived_and_the_inventory_is_correct_afterwards() {
    let sock = docker_socket();
    let before = TestContainer::run("restart-before", &[]);

    let lock = std::env::temp_dir().join(format!("{}.lock", portwarden_tests::unique_name("restart")));
    let mut agent = Command::new(portwarden_bin())
        .env("PORTWARDEN_LOCK_FILE", &lock)
        .env("PORTWARDEN_NO_DETECT", "true")
        .args(["run", "--log-format", "json", "--docker-socket"])
        .arg(&sock)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("agent starts");
    let logs = Logs::default();
    let reader = std::thread::spawn({
        let logs = logs.clone();
        let stderr = agent.stderr.take().expect("piped");
        move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or(serde_json::json!({ "raw": line }));
                logs.0.lock().expect("logs lock").push(value);
            }
        }
    });

    // An in-process inventory, to compare its whole state with Docker's.
    let runtime = Arc::new(DockerRuntime::new(&sock, "/proc".as_ref(), Duration::from_secs(10)));
    let inventory = Inventory::new(vec![runtime], InventoryOptions { resync_interval: None, ..Default::default() });
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let (inventory, cancel) = (inventory.clone(), cancel.clone());
        async move { inventory.run(cancel).await }
    });

    eventually("the agent to see the first container", WAIT, || logs.find("container started", Some(&before.id))).await;

    kill_dockerd();
    let lost = eventually("the agent to log the lost runtime", WAIT, || logs.find("runtime lost", None)).await;
    assert_eq!(lost["runtime"], "docker");
    restart_testbed();
    eventually("the agent to log the restored runtime", WAIT, || logs.find("runtime restored", None)).await;

    // Without live-restore, dockerd stops what ran before its restart; the
    // agent must notice either way.
    let after = TestContainer::run("restart-after", &[]);
    let started = eventually("the agent to see a container started after the restart", WAIT, || {
        logs.find("container started", Some(&after.id))
    })
    .await;
    assert_eq!(started["origin"], "Event");
    let docker_state = before.inspect("{{.State.Status}}");
    if docker_state != "running" {
        eventually("the agent to log the first container stopping", WAIT, || {
            logs.find("container stopped", Some(&before.id))
        })
        .await;
    }

    // The in-process inventory agrees with `docker ps -a` on every container.
    eventually("the inventory to match docker ps -a", WAIT, || {
        let listed = docker_ok(&["ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.State}}"]);
        let mut want: Vec<String> = listed.lines().map(str::to_owned).collect();
        let mut have: Vec<String> = inventory
            .snapshot()
            .into_iter()
            .filter(|c| c.runtime == portwarden_runtime_docker::DOCKER)
            .map(|c| format!("{} {}", c.id, c.state))
            .collect();
        want.sort();
        have.sort();
        (want == have).then_some(())
    })
    .await;
    let got = inventory.get(&ContainerId::new(after.id.clone())).expect("after is known");
    assert_eq!(got.pid.map(|p| p.to_string()), Some(after.inspect("{{.State.Pid}}")));
    cancel.cancel();

    assert_eq!(logs.count("runtime lost"), 1, "one loss logged, not one per retry");
    let status = Command::new("kill").args(["-TERM", &agent.id().to_string()]).status().expect("kill runs");
    assert!(status.success());
    let exit = agent.wait().expect("agent exits");
    assert!(exit.success(), "agent exited with {exit}");
    reader.join().expect("reader");
    assert!(logs.find("stopped", None).is_some());
    drop((before, after));
    assert!(docker(&["version"]).status.success());
}
