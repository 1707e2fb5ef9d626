//! Embedding Portwarden: the whole agent in another program, with a log
//! output, a packet sink and a runtime of the program's own.
//!
//! - `RecordCounter` (a log output) counts records per container;
//! - `ByteCounter` (a packet sink) counts captured bytes per container;
//! - `StaticProvider` (a runtime) reads its containers from a JSON file:
//!   `[{"id": "...", "name": "...", "pid": 123, "log_path": "/x.log"}]`,
//!   where `pid` is a process in the container's network namespace and the
//!   optional `log_path` is a CRI-format log file of its output.
//!
//! ```text
//! cargo run --example embed -- CONTAINERS.json SECONDS
//! ```
//!
//! It runs the agent for SECONDS with only the static runtime, then prints
//! one line per container: `container NAME records N bytes N`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use portwarden::agent::Agent;
use portwarden::config::Config;
use portwarden_core::{
    CaptureGroup, Container, ContainerId, ContainerRuntime, ContainerState, Error, GroupSink, LogRecord, PacketBatch,
    PacketSink, Result, RuntimeEnv, RuntimeEvent, RuntimeInfo, RuntimeName, RuntimeProvider,
};
use portwarden_logs::Output;
use tokio_util::sync::CancellationToken;

/// Per container name: (records, bytes).
type Tally = Arc<Mutex<BTreeMap<String, (u64, u64)>>>;

fn add(tally: &Tally, name: &str, records: u64, bytes: u64) {
    let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
    let entry = t.entry(name.to_owned()).or_default();
    entry.0 += records;
    entry.1 += bytes;
}

/// A log output that counts records per container.
struct RecordCounter(Tally);

#[async_trait]
impl Output for RecordCounter {
    fn name(&self) -> String {
        "record-counter".into()
    }

    async fn write(&mut self, records: &[LogRecord]) -> std::io::Result<()> {
        for r in records {
            let name = r.container.as_ref().map_or("-", |c| c.display_name());
            add(&self.0, name, 1, 0);
        }
        Ok(())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A packet sink that counts captured bytes per container.
struct ByteCounter(Tally);

impl PacketSink for ByteCounter {
    fn open(&self, _group: &CaptureGroup) -> Box<dyn GroupSink> {
        Box::new(GroupBytes(Arc::clone(&self.0)))
    }
}

struct GroupBytes(Tally);

impl GroupSink for GroupBytes {
    fn batch(&mut self, group: &CaptureGroup, batch: &PacketBatch<'_>) {
        let bytes: u64 = batch.iter().map(|(meta, _)| u64::from(meta.original_len)).sum();
        add(&self.0, &group.label(), 0, bytes);
    }
}

/// The runtime's name, and its config section `[runtimes.static]`.
const STATIC: RuntimeName = RuntimeName::from_static("static");

/// One entry of the JSON file.
#[derive(serde::Deserialize)]
struct Entry {
    id: String,
    name: String,
    pid: u32,
    #[serde(default)]
    log_path: Option<PathBuf>,
}

/// A runtime whose containers are listed in a JSON file (its "socket").
struct StaticProvider;

#[async_trait]
impl RuntimeProvider for StaticProvider {
    fn name(&self) -> RuntimeName {
        STATIC
    }

    /// No default: the file is given as the runtime's socket.
    fn default_sockets(&self) -> &[&'static str] {
        &[]
    }

    fn endpoint_is_socket(&self) -> bool {
        false
    }

    async fn probe(&self, file: &Path) -> Result<RuntimeInfo> {
        read(file)?;
        Ok(RuntimeInfo { runtime: STATIC, name: "static list".into(), version: "1".into(), api_version: None })
    }

    async fn connect(&self, file: &Path, env: &RuntimeEnv) -> Result<Arc<dyn ContainerRuntime>> {
        Ok(Arc::new(StaticRuntime { file: file.to_path_buf(), proc_root: env.proc_root.clone() }))
    }
}

struct StaticRuntime {
    file: PathBuf,
    proc_root: PathBuf,
}

fn read(file: &Path) -> Result<Vec<Entry>> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::unavailable(file.display().to_string(), e))?;
    serde_json::from_str(&text).map_err(|e| Error::protocol(format!("read {}", file.display()), e))
}

#[async_trait]
impl ContainerRuntime for StaticRuntime {
    fn name(&self) -> RuntimeName {
        STATIC
    }

    fn endpoint(&self) -> &Path {
        &self.file
    }

    async fn info(&self) -> Result<RuntimeInfo> {
        StaticProvider.probe(&self.file).await
    }

    async fn list(&self) -> Result<Vec<Container>> {
        Ok(read(&self.file)?
            .into_iter()
            .map(|e| Container {
                name: e.name,
                state: ContainerState::Running,
                pid: Some(e.pid),
                netns: Some(Container::netns_path(&self.proc_root, e.pid)),
                log_path: e.log_path,
                ..Container::new(STATIC, ContainerId::new(e.id))
            })
            .collect())
    }

    async fn inspect(&self, id: &ContainerId) -> Result<Container> {
        let all = self.list().await?;
        all.into_iter().find(|c| &c.id == id).ok_or_else(|| Error::NotFound { what: id.to_string() })
    }

    /// A file has no events; the inventory's resync re-reads it.
    async fn events(&self, cancel: CancellationToken) -> Result<BoxStream<'static, Result<RuntimeEvent>>> {
        Ok(futures::stream::pending().take_until(cancel.cancelled_owned()).boxed())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, file, seconds] = args.as_slice() else {
        anyhow::bail!("usage: embed CONTAINERS.json SECONDS");
    };
    let seconds: u64 = seconds.parse()?;
    let scratch = std::env::temp_dir().join(format!("portwarden-embed-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;

    // The agent's own config, as a program would set it: only the static
    // runtime, capture and log collection on, detection, listeners, API
    // and metrics off, records also kept in a file.
    let mut config = Config::default();
    config.runtimes.only = Some(vec!["static".into()]);
    config.runtimes.pin("static", vec![PathBuf::from(file)]);
    config.runtimes.resync_interval = Duration::from_secs(1);
    config.nids.enabled = Some(false);
    config.capture.flows = false;
    config.api.enabled = false;
    config.metrics.enabled = false;
    config.logs.syslog.enabled = false;
    config.logs.forward.enabled = false;
    config.logs.state_dir = PathBuf::new();
    config.logs.outputs = vec![portwarden_logs::OutputConfig::File {
        path: scratch.join("records.json"),
        max_bytes: 1 << 20,
        max_files: 1,
    }];
    config.lock_file = Some(scratch.join("portwarden.lock"));

    let tally = Tally::default();
    let agent = Agent::builder(config)
        .runtime(StaticProvider)
        .log_output(Box::new(RecordCounter(Arc::clone(&tally))))
        .packet_sink(Arc::new(ByteCounter(Arc::clone(&tally))))
        .build()?;
    let cancel = CancellationToken::new();
    let stop = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(seconds)) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            cancel.cancel();
        })
    };
    agent.run(cancel).await?;
    stop.abort();
    for (name, (records, bytes)) in tally.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("container {name} records {records} bytes {bytes}");
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
