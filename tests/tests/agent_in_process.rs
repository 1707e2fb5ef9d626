//! Issue 15: the agent run in-process through `portwarden::agent::Agent`,
//! as an embedder runs it: its own log outputs and packet sinks (a stuck
//! output, a sink that blocks, one that panics), the real Docker runtime,
//! and a drained stop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use portwarden::agent::Agent;
use portwarden::config::Config;
use portwarden_core::{CaptureGroup, GroupSink, LogRecord, PacketBatch, PacketSink};
use portwarden_logs::Output;
use portwarden_runtime_docker::DockerProvider;
use portwarden_tests::{TestContainer, docker_socket, eventually, unique_name};
use tokio_util::sync::CancellationToken;

/// Messages per container id.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<HashMap<String, Vec<String>>>>);

#[async_trait]
impl Output for Collected {
    fn name(&self) -> String {
        "collected".into()
    }
    async fn write(&mut self, records: &[LogRecord]) -> std::io::Result<()> {
        let mut all = self.0.lock().unwrap();
        for r in records {
            let id = r.container.as_ref().map(|c| c.id.to_string()).unwrap_or_default();
            all.entry(id).or_default().push(r.message.clone());
        }
        Ok(())
    }
    async fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes per container id.
#[derive(Clone, Default)]
struct Bytes(Arc<Mutex<HashMap<String, u64>>>);

impl PacketSink for Bytes {
    fn open(&self, _group: &CaptureGroup) -> Box<dyn GroupSink> {
        Box::new(self.clone())
    }
}

impl GroupSink for Bytes {
    fn batch(&mut self, group: &CaptureGroup, batch: &PacketBatch<'_>) {
        let id = group.container().map(|c| c.id.to_string()).unwrap_or_default();
        let n: u64 = batch.iter().map(|(m, _)| u64::from(m.original_len)).sum();
        *self.0.lock().unwrap().entry(id).or_default() += n;
    }
}

/// Never returns from its first batch.
struct Stalls;

impl PacketSink for Stalls {
    fn open(&self, _group: &CaptureGroup) -> Box<dyn GroupSink> {
        Box::new(Stalls)
    }
}

impl GroupSink for Stalls {
    fn batch(&mut self, _group: &CaptureGroup, _batch: &PacketBatch<'_>) {
        std::thread::park();
    }
}

/// Never finishes a write.
struct Stuck;

#[async_trait]
impl Output for Stuck {
    fn name(&self) -> String {
        "stuck".into()
    }
    async fn write(&mut self, _records: &[LogRecord]) -> std::io::Result<()> {
        std::future::pending().await
    }
    async fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Panics on its first batch, every capture.
struct Panics(Arc<AtomicU64>);

impl PacketSink for Panics {
    fn open(&self, _group: &CaptureGroup) -> Box<dyn GroupSink> {
        Box::new(PanicsGroup(Arc::clone(&self.0)))
    }
}

struct PanicsGroup(Arc<AtomicU64>);

impl GroupSink for PanicsGroup {
    fn batch(&mut self, _group: &CaptureGroup, _batch: &PacketBatch<'_>) {
        self.0.fetch_add(1, Ordering::Relaxed);
        panic!("an embedder's sink bug");
    }
}

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.runtimes.only = Some(vec!["docker".into()]);
    c.runtimes.pin("docker", vec![docker_socket()]);
    c.nids.enabled = Some(false);
    c.capture.flows = false;
    c.api.enabled = false;
    c.metrics.enabled = false;
    c.logs.syslog.enabled = false;
    c.logs.forward.enabled = false;
    c.logs.state_dir = PathBuf::new();
    c.logs.outputs =
        vec![portwarden_logs::OutputConfig::File { path: dir.join("out.json"), max_bytes: 1 << 20, max_files: 1 }];
    c.lock_file = Some(dir.join("lock"));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_agent_feeds_its_own_output_and_sinks_contains_stuck_and_panicking_ones_and_drains_on_cancel() {
    let dir = std::env::temp_dir().join(unique_name("in-process"));
    std::fs::create_dir_all(&dir).unwrap();
    let (records, bytes, panics) = (Collected::default(), Bytes::default(), Arc::new(AtomicU64::new(0)));
    let agent = Agent::builder(config(&dir))
        .log_output(Box::new(Stuck))
        .log_output(Box::new(records.clone()))
        .packet_sink(Arc::new(Stalls))
        .packet_sink(Arc::new(Panics(Arc::clone(&panics))))
        .packet_sink(Arc::new(bytes.clone()))
        .build()
        .expect("a valid agent");
    let cancel = CancellationToken::new();
    let running = tokio::spawn(agent.run(cancel.clone()));

    let target = TestContainer::run("inproc-target", &[]);
    let script = format!(
        "i=0; while true; do i=$((i+1)); echo line-$i; ping -c 1 -W 1 {} >/dev/null; sleep 0.2; done",
        target.ip()
    );
    let c = TestContainer::run_cmd("inproc", &[], &["sh", "-c", &script]);
    eventually("its lines in the embedder's output", Duration::from_secs(60), || {
        records.0.lock().unwrap().get(&c.id).filter(|m| m.len() >= 3).cloned()
    })
    .await;
    eventually("its bytes in the embedder's sink, after the other sink panicked", Duration::from_secs(60), || {
        let n = bytes.0.lock().unwrap().get(&c.id).copied().unwrap_or(0);
        (n > 0 && panics.load(Ordering::Relaxed) > 0).then_some(n)
    })
    .await;
    let before = bytes.0.lock().unwrap().get(&c.id).copied().unwrap_or(0);
    eventually("the capture going on past the panic", Duration::from_secs(60), || {
        (bytes.0.lock().unwrap().get(&c.id).copied().unwrap_or(0) > before).then_some(())
    })
    .await;

    // Cancelled: `run` returns, after the outputs drained.
    cancel.cancel();
    // The stuck output is given up after the drain grace (5 s).
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("run returns once cancelled")
        .expect("no panic")
        .expect("a clean stop");
    let file = std::fs::read_to_string(dir.join("out.json")).unwrap();
    let mine = file.lines().filter(|l| l.contains(&c.id)).count();
    let collected = records.0.lock().unwrap().get(&c.id).map_or(0, Vec::len);
    assert_eq!(mine, collected, "the configured output and the embedder's got the same records");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn two_providers_with_one_name_are_refused_naming_both() {
    let dir = std::env::temp_dir().join(unique_name("dup"));
    let err = Agent::builder(config(&dir)).runtime(DockerProvider::default()).build().err().expect("refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("runtime name `docker` is registered twice")
            && text.matches("portwarden_runtime_docker::provider::DockerProvider").count() == 2,
        "{text}"
    );
}
