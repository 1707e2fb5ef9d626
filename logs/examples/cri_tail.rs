//! Benchmark helper: tails a CRI log file with the agent's tailer until
//! COUNT records, encoding each as the JSON line an output would write.
//! `cri_tail FILE COUNT` prints the elapsed seconds.

use std::sync::Arc;
use std::time::Instant;

use portwarden_core::{Container, ContainerId, ContainerState, RuntimeName};
use portwarden_logs::Encoder;
use portwarden_logs::{CriTail, TailOptions};
use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (file, count): (&str, usize) = match args.as_slice() {
        [_, file, count] => (file, count.parse().expect("COUNT")),
        _ => panic!("usage: cri_tail FILE COUNT"),
    };
    let container = Arc::new(Container {
        name: "bench".into(),
        image: "busybox".into(),
        state: ContainerState::Running,
        pid: Some(1),
        namespace: Some("k8s.io".into()),
        log_path: Some(file.into()),
        reported_by: vec![RuntimeName::from_static("cri")],
        ..Container::new(RuntimeName::from_static("cri"), ContainerId::new("b".repeat(64)))
    });
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let tail = CriTail::new(file.into(), "cri/bench".into(), container, TailOptions::default(), Arc::default());
    let task = tokio::spawn(tail.run(None, portwarden_core::LogSender::new(tx, Default::default()), cancel.clone()));
    let mut encoder = Encoder::new("bench".into());
    let mut buf = Vec::with_capacity(1 << 20);
    let mut seen = 0;
    while seen < count {
        let Some(batch) = rx.recv().await else { break };
        buf.clear();
        for r in &batch {
            encoder.line(r, &mut buf);
        }
        seen += batch.len();
    }
    println!("{:.4}", started.elapsed().as_secs_f64());
    cancel.cancel();
    let _ = task.await;
}
