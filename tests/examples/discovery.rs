//! Issue 3 benchmark: time from a container start returning to the container
//! being in the inventory, for native containerd (`ctr run -d`) and for CRI
//! (StartContainer), next to `ctr tasks ls` seeing the same kind of start in
//! the same run. Rounds alternate between the two observers so neither
//! loads the machine while the other is measured.
//!
//! Run through `bench/run.sh`, or `cargo run --release -p portwarden-tests
//! --example discovery -- [ROUNDS]` with the testbed up.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portwarden_core::{ContainerId, ContainerRuntime, Inventory, InventoryOptions};
use portwarden_runtime_containerd::{ContainerdRuntime, Namespaces};
use portwarden_runtime_crio::{CriOptions, CriRuntime};
use portwarden_tests::cri::{CriPod, CtrNamespace, cri_socket};
use tokio_util::sync::CancellationToken;

/// Waits until `seen` holds, checking every millisecond.
async fn clock(start: Instant, mut seen: impl FnMut() -> bool) -> Duration {
    let deadline = start + Duration::from_secs(30);
    while !seen() {
        assert!(Instant::now() < deadline, "never seen");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}

/// Polls `ctr -n NS tasks ls` until `id` is listed as RUNNING.
fn ctr_sees(ns: &str, id: &str) -> bool {
    let out = std::process::Command::new("ctr").args(["-n", ns, "tasks", "ls"]).output().expect("ctr runs");
    String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with(id) && l.contains("RUNNING"))
}

fn summary(label: &str, v: &mut [Duration]) -> Duration {
    v.sort();
    let median = v[v.len() / 2];
    println!(
        "  {label:44} median {:7.1} ms  (min {:.1}, max {:.1}, n={})",
        median.as_secs_f64() * 1e3,
        v[0].as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3,
        v.len()
    );
    median
}

/// An inventory over the CRI, and over native containerd too unless `cri_only`.
async fn inventory(poll_interval: Duration, cri_only: bool) -> (Inventory, Arc<CriRuntime>, CancellationToken) {
    let socket = cri_socket();
    let options = CriOptions { poll_interval, ..CriOptions::default() };
    let cri = Arc::new(CriRuntime::connect(&socket, Path::new("/proc"), options).await.expect("CRI"));
    let mut runtimes: Vec<Arc<dyn ContainerRuntime>> = vec![cri.clone()];
    if !cri_only {
        let native = ContainerdRuntime::connect(&socket, Path::new("/proc"), Namespaces::All, Duration::from_secs(10));
        runtimes.push(Arc::new(native.await.expect("containerd")));
    }
    let inventory = Inventory::new(runtimes, InventoryOptions::default());
    let cancel = CancellationToken::new();
    tokio::spawn({
        let (inventory, cancel) = (inventory.clone(), cancel.clone());
        async move { inventory.run(cancel).await }
    });
    inventory.wait_synced().await;
    (inventory, cri, cancel)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    println!("\n== discovery after a start returns ({rounds} rounds each; containerd 1.6 has no GetContainerEvents)");

    // Native containerd: `ctr run -d` returns once the task started.
    let (inv, _, cancel) = inventory(Duration::from_secs(1), false).await;
    let ns = CtrNamespace::new("bench");
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let id = format!("pw-bench-a{i}");
        ns.run(&id);
        let t = Instant::now();
        ours.push(clock(t, || inv.get(&ContainerId::new(id.as_str())).is_some_and(|c| c.pid.is_some())).await);
        let id = format!("pw-bench-b{i}");
        ns.run(&id);
        let t = Instant::now();
        peer.push(clock(t, || ctr_sees(&ns.name, &id)).await);
    }
    cancel.cancel();
    println!("  -- native containerd, `ctr run -d`");
    let a = summary("in inventory with PID (containerd events)", &mut ours);
    let b = summary("`ctr tasks ls` polled", &mut peer);
    println!("  ratio inventory / ctr: {:.2}", a.as_secs_f64() / b.as_secs_f64());
    for i in 0..rounds {
        ns.delete(&format!("pw-bench-a{i}"));
        ns.delete(&format!("pw-bench-b{i}"));
    }
    ns.remove();

    // CRI: StartContainer, seen through the polling fallback.
    let setups = [(Duration::from_secs(1), false), (Duration::from_secs(1), true), (Duration::from_millis(250), true)];
    for (interval, cri_only) in setups {
        let (inv, cri, cancel) = inventory(interval, cri_only).await;
        let (mut any, mut by_cri, mut peer) = (Vec::new(), Vec::new(), Vec::new());
        let mut pod = CriPod::run("bench").await;
        for i in 0..rounds {
            let id = ContainerId::new(pod.start(&format!("a{i}")).await);
            let t = Instant::now();
            // With containerd watched too, its event lands first and hints the
            // CRI; alone, the CRI report waits for the next poll.
            any.push(clock(t, || inv.get(&id).is_some_and(|c| c.pod.is_some() && c.pid.is_some())).await);
            by_cri.push(
                clock(t, || {
                    inv.get(&id).is_some_and(|c| c.runtime == portwarden_runtime_crio::CRI && !c.ips.is_empty())
                })
                .await,
            );
            let id = pod.start(&format!("b{i}")).await;
            let t = Instant::now();
            peer.push(clock(t, || ctr_sees("k8s.io", &id)).await);
        }
        let watched = if cri_only { "CRI alone" } else { "containerd + CRI" };
        println!("  -- CRI StartContainer, {watched} watched, CRI polled every {interval:?}");
        let a = summary("in inventory with pod and PID", &mut any);
        let c = summary("CRI report merged (pod IPs, log path)", &mut by_cri);
        let b = summary("`ctr -n k8s.io tasks ls` polled", &mut peer);
        println!(
            "  ratio inventory / ctr: {:.2}; CRI report / ctr: {:.2}   (polls done: {})",
            a.as_secs_f64() / b.as_secs_f64(),
            c.as_secs_f64() / b.as_secs_f64(),
            cri.polls()
        );
        pod.remove().await;
        cancel.cancel();
    }
}
