//! The pipeline: checkpoints agree with a file output across a crash, and a
//! blocked output holds sources back without losing anything.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use portwarden_core::LogStats;
use portwarden_core::{LogOrigin, LogPosition, LogRecord};
use portwarden_logs::{CheckpointStore, JsonFile, Output, Pipeline, PipelineOptions};
use tokio::sync::watch;

fn record(n: u64) -> LogRecord {
    let mut r = LogRecord::new(SystemTime::UNIX_EPOCH, LogOrigin::Cri, None, format!("line {n}"));
    r.position = Some(LogPosition { key: "cri/x".into(), state: n.to_string() });
    r
}

fn options() -> PipelineOptions {
    PipelineOptions { intake: 2, queue: 2, commit_interval: Duration::from_millis(10), ..PipelineOptions::default() }
}

#[tokio::test]
async fn a_crash_after_writing_but_before_the_checkpoint_is_cut_back() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.json");
    let stats = Arc::new(LogStats::default());
    let file = JsonFile::open(out_path.clone(), 1 << 20, 2, "h".into()).unwrap();
    let p = Pipeline::start(
        vec![Box::new(file)],
        CheckpointStore::new(Some(dir.path())).unwrap(),
        options(),
        Arc::clone(&stats),
    )
    .unwrap();
    for n in 0..10 {
        p.sender().send(vec![record(n)]).await.unwrap();
    }
    let resume = p.resume();
    p.finish(Duration::from_secs(5)).await;
    assert_eq!(resume("cri/x").as_deref(), Some("9"));
    let size = std::fs::metadata(&out_path).unwrap().len();
    // Records written after the last checkpoint, then a crash.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&out_path)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(b"{\"message\":\"line 10\"}\n")
        })
        .unwrap();
    let file = JsonFile::open(out_path.clone(), 1 << 20, 2, "h".into()).unwrap();
    let p = Pipeline::start(vec![Box::new(file)], CheckpointStore::new(Some(dir.path())).unwrap(), options(), stats)
        .unwrap();
    assert_eq!(std::fs::metadata(&out_path).unwrap().len(), size, "cut back to the checkpoint");
    assert_eq!(p.resume()("cri/x").as_deref(), Some("9"));
    p.finish(Duration::from_secs(5)).await;
}

/// An output that writes only while its gate is open.
struct Gated {
    open: watch::Receiver<bool>,
    seen: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl Output for Gated {
    fn name(&self) -> String {
        "gated".into()
    }

    async fn write(&mut self, records: &[LogRecord]) -> io::Result<()> {
        let _ = self.open.wait_for(|open| *open).await;
        self.seen.lock().unwrap().extend(records.iter().map(|r| r.message.clone()));
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// The paused clock advances only once every task waits: the sleep below
// ends when the producer is held by backpressure, not after real time.
#[tokio::test(start_paused = true)]
async fn a_blocked_output_stops_the_sources_and_loses_nothing() {
    let (gate, open) = watch::channel(false);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stats = Arc::new(LogStats::default());
    let p = Pipeline::start(
        vec![Box::new(Gated { open, seen: Arc::clone(&seen) })],
        CheckpointStore::new(None).unwrap(),
        options(),
        stats,
    )
    .unwrap();
    let sender = p.sender();
    let producer = tokio::spawn(async move {
        for n in 0..100 {
            sender.send(vec![record(n)]).await.unwrap();
        }
    });
    // Paused clock: this returns once every task waits, the producer on a full queue.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Intake (2) + output queue (2) + one batch in the router and one in the
    // writer: the producer is held back, not buffered without bound.
    assert!(!producer.is_finished());
    assert!(p.resume()("cri/x").map_or(0, |s| s.parse::<u64>().unwrap()) < 10);
    gate.send(true).unwrap();
    producer.await.unwrap();
    p.finish(Duration::from_secs(5)).await;
    let want: Vec<String> = (0..100).map(|n| format!("line {n}")).collect();
    assert_eq!(*seen.lock().unwrap(), want);
}

// Queues of 100 batches, but 64 KiB of records in flight at most: a stalled
// output makes the agent hold the budget, not the queues' worth.
#[tokio::test(start_paused = true)]
async fn a_stalled_output_holds_no_more_than_the_byte_budget() {
    let (gate, open) = watch::channel(false);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let options = PipelineOptions { intake: 100, queue: 100, max_bytes: 64 << 10, ..options() };
    let p = Pipeline::start(
        vec![Box::new(Gated { open, seen: Arc::clone(&seen) })],
        CheckpointStore::new(None).unwrap(),
        options,
        Arc::new(LogStats::default()),
    )
    .unwrap();
    let sender = p.sender();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let producer = tokio::spawn({
        let sent = Arc::clone(&sent);
        async move {
            for n in 0..50 {
                // About 21 KiB a batch: three fit the budget.
                let batch = (0..10)
                    .map(|i| {
                        LogRecord::new(
                            SystemTime::UNIX_EPOCH,
                            LogOrigin::Cri,
                            None,
                            format!("{n}-{i} {}", "x".repeat(1800)),
                        )
                    })
                    .collect();
                sender.send(batch).await.unwrap();
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    // Paused clock: this returns once every task waits, the producer on the budget.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!((1..=3).contains(&held), "{held} batches taken in: the budget, not the queues, holds the source");
    gate.send(true).unwrap();
    producer.await.unwrap();
    p.finish(Duration::from_secs(5)).await;
    assert_eq!(seen.lock().unwrap().len(), 500, "nothing lost");
}

#[tokio::test]
async fn the_tap_sees_every_batch_and_never_holds_the_outputs_back() {
    let (gate, open) = watch::channel(false);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let p = Pipeline::start(
        vec![Box::new(Gated { open, seen: Arc::clone(&seen) })],
        CheckpointStore::new(None).unwrap(),
        options(),
        Arc::new(LogStats::default()),
    )
    .unwrap();
    let gauges = p.gauges();
    let mut live = p.tap().subscribe();
    let idle = p.tap().subscribe();
    let sender = p.sender();
    let producer = tokio::spawn(async move {
        for n in 0..20 {
            sender.send(vec![record(n)]).await.unwrap();
        }
    });
    // The output is blocked: the queues fill, and the gauges say so.
    let first = live.recv().await.unwrap();
    assert_eq!(first[0].message, "line 0");
    while gauges.intake() < 2 {
        tokio::task::yield_now().await;
    }
    assert_eq!(gauges.outputs(), vec![("gated".to_owned(), 2)]);
    gate.send(true).unwrap();
    producer.await.unwrap();
    for n in 1..20 {
        assert_eq!(live.recv().await.unwrap()[0].message, format!("line {n}"));
    }
    // A reader that never read has all 20 waiting; it did not slow anyone.
    assert_eq!(idle.len(), 20);
    p.finish(Duration::from_secs(5)).await;
    assert_eq!(seen.lock().unwrap().len(), 20);
    assert_eq!(gauges.intake(), 0, "a closed queue reads as empty");
}

#[tokio::test]
async fn a_file_output_rotates_by_size_and_keeps_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.json");
    let file = JsonFile::open(out_path.clone(), 4096, 3, "h".into()).unwrap();
    let p = Pipeline::start(
        vec![Box::new(file)],
        CheckpointStore::new(None).unwrap(),
        options(),
        Arc::new(LogStats::default()),
    )
    .unwrap();
    for n in 0..200 {
        p.sender().send(vec![record(n)]).await.unwrap();
    }
    p.finish(Duration::from_secs(5)).await;
    let mut lines = 0;
    for name in ["out.json", "out.json.1", "out.json.2", "out.json.3"] {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
        assert!(text.len() <= 4096 + 300, "{name} is {} bytes", text.len());
        lines += text.lines().count();
    }
    assert!(dir.path().join("out.json.3").exists() && !dir.path().join("out.json.4").exists());
    // Three rotated files and the live one hold the newest lines, each whole.
    assert!(lines > 0 && lines < 200);
    let newest = std::fs::read_to_string(&out_path).unwrap();
    assert!(newest.lines().last().unwrap().contains("line 199"));
}

/// Counts the records it is given.
struct Counting(Arc<Mutex<usize>>);

#[async_trait]
impl Output for Counting {
    fn name(&self) -> String {
        "counting".into()
    }
    async fn write(&mut self, records: &[LogRecord]) -> io::Result<()> {
        *self.0.lock().unwrap() += records.len();
        Ok(())
    }
    async fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Panics on its third batch.
struct Panicking(usize);

#[async_trait]
impl Output for Panicking {
    fn name(&self) -> String {
        "panicking".into()
    }
    async fn write(&mut self, _records: &[LogRecord]) -> io::Result<()> {
        self.0 += 1;
        assert!(self.0 < 3, "an embedder's bug");
        Ok(())
    }
    async fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn an_output_that_panics_is_cut_off_alone_and_counted() {
    let stats = Arc::new(LogStats::default());
    let count = Arc::new(Mutex::new(0));
    let outputs: Vec<Box<dyn Output>> = vec![Box::new(Panicking(0)), Box::new(Counting(Arc::clone(&count)))];
    let p = Pipeline::start(outputs, CheckpointStore::new(None).unwrap(), options(), Arc::clone(&stats)).unwrap();
    // Far more batches than the queues hold: a dead output must not block.
    for n in 0..50 {
        p.sender().send(vec![record(n)]).await.unwrap();
    }
    let resume = p.resume();
    p.finish(Duration::from_secs(5)).await;
    assert_eq!(*count.lock().unwrap(), 50, "the other output got every record");
    assert_eq!(stats.snapshot().panics, 1);
    assert_eq!(resume("cri/x").as_deref(), Some("49"), "checkpoints went on");
}

/// Never finishes a write.
struct Stuck;

#[async_trait]
impl Output for Stuck {
    fn name(&self) -> String {
        "stuck".into()
    }
    async fn write(&mut self, _records: &[LogRecord]) -> io::Result<()> {
        std::future::pending().await
    }
    async fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_contained_output_that_is_stuck_holds_nothing_back_and_its_drops_are_counted() {
    let stats = Arc::new(LogStats::default());
    let count = Arc::new(Mutex::new(0));
    let outputs: Vec<Box<dyn Output>> =
        vec![Box::new(portwarden_logs::Contained(Box::new(Stuck))), Box::new(Counting(Arc::clone(&count)))];
    let p = Pipeline::start(outputs, CheckpointStore::new(None).unwrap(), options(), Arc::clone(&stats)).unwrap();
    for n in 0..50 {
        p.sender().send(vec![record(n)]).await.unwrap();
    }
    let resume = p.resume();
    // The stuck output never drains: its writer is given up at the grace.
    p.finish(Duration::from_millis(300)).await;
    assert_eq!(*count.lock().unwrap(), 50, "the other output got every record");
    let dropped = stats.snapshot().output_dropped;
    assert!(dropped >= 40, "the stuck output's drops are counted: {dropped}");
    assert_eq!(resume("cri/x").as_deref(), Some("49"), "checkpoints did not wait for it");
}
