//! The CRI tailer against real files: kubelet-style rotation (rename, new
//! file, gzip), resuming by identity, partial lines and bad lines.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use portwarden_core::{Container, ContainerId, ContainerState, LogBatch, LogRecord, RuntimeName};
use portwarden_core::{LogSender, LogStats, ResumePoints};
use portwarden_logs::{CriTail, FileCursor, TailOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn container() -> Arc<Container> {
    Arc::new(Container {
        name: "app".into(),
        image: "busybox".into(),
        state: ContainerState::Running,
        reported_by: vec![RuntimeName::from_static("cri")],
        ..Container::new(RuntimeName::from_static("cri"), ContainerId::new("c".repeat(64)))
    })
}

fn append(path: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

fn cri(n: usize, stream: &str, tag: &str, msg: &str) -> String {
    format!("2026-11-27T13:00:00.{n:09}Z {stream} {tag} {msg}")
}

fn gzip(path: &Path) -> PathBuf {
    let gz = PathBuf::from(format!("{}.gz", path.display()));
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    enc.write_all(&std::fs::read(path).unwrap()).unwrap();
    enc.finish().unwrap();
    std::fs::remove_file(path).unwrap();
    gz
}

struct Running {
    rx: mpsc::Receiver<LogBatch>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn start(live: &Path, resume: Option<FileCursor>, stats: &Arc<LogStats>) -> Running {
    let (tx, rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let options = TailOptions { max_line: 1000, max_poll: Duration::from_millis(20), chunk: 64 };
    let tail = CriTail::new(live.to_path_buf(), "cri/c".into(), container(), options, Arc::clone(stats));
    let task = tokio::spawn(tail.run(resume, LogSender::new(tx, ResumePoints::default()), cancel.clone()));
    Running { rx, cancel, task }
}

async fn take(r: &mut Running, n: usize) -> Vec<LogRecord> {
    let mut got = Vec::new();
    while got.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(10), r.rx.recv()).await.expect("records in time");
        got.extend(batch.expect("tailer alive"));
    }
    got
}

fn messages(records: &[LogRecord]) -> Vec<String> {
    records.iter().map(|r| r.message.clone()).collect()
}

#[tokio::test]
async fn rotation_renamed_new_file_then_gzip_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("0.log");
    let stats = Arc::new(LogStats::default());
    append(&live, &(0..50).map(|i| cri(i, "stdout", "F", &format!("line {i}"))).collect::<Vec<_>>());
    let mut r = start(&live, None, &stats);
    let first = take(&mut r, 10).await;
    // Rotate while the tailer is mid-file, then write to the old file a
    // little more (the runtime has not reopened yet), then to the new one.
    let rotated = dir.path().join("0.log.20261127-130000");
    std::fs::rename(&live, &rotated).unwrap();
    append(&rotated, &(50..60).map(|i| cri(i, "stdout", "F", &format!("line {i}"))).collect::<Vec<_>>());
    append(&live, &(60..100).map(|i| cri(i, "stdout", "F", &format!("line {i}"))).collect::<Vec<_>>());
    let mut all = first;
    all.extend(take(&mut r, 100 - all.len()).await);
    gzip(&rotated);
    append(&live, &[cri(100, "stderr", "F", "after gzip")]);
    all.extend(take(&mut r, 1).await);
    let want: Vec<String> = (0..100).map(|i| format!("line {i}")).chain(["after gzip".to_owned()]).collect();
    assert_eq!(messages(&all), want);
    assert_eq!(stats.rotations.load(std::sync::atomic::Ordering::Relaxed), 1);
    r.cancel.cancel();
    r.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn resume_finds_the_file_after_rename_and_after_gzip() {
    for compress in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("0.log");
        let stats = Arc::new(LogStats::default());
        append(&live, &(0..30).map(|i| cri(i, "stdout", "F", &format!("line {i}"))).collect::<Vec<_>>());
        let mut r = start(&live, None, &stats);
        let first = take(&mut r, 30).await;
        r.cancel.cancel();
        r.task.await.unwrap().unwrap();
        // Resume from the last saved point among the first dozen lines (only
        // a batch's last record carries one), as if the checkpoint were there.
        let at = (0..12).rev().find(|&i| first[i].position.is_some()).expect("a resume point");
        let state = &first[at].position.as_ref().unwrap().state;
        let cursor: FileCursor = serde_json::from_str(state).unwrap();
        let rotated = dir.path().join("0.log.20261127-130000");
        std::fs::rename(&live, &rotated).unwrap();
        if compress {
            gzip(&rotated);
        }
        append(&live, &[cri(99, "stdout", "F", "new file")]);
        let mut r = start(&live, Some(cursor), &stats);
        let rest = take(&mut r, 30 - at).await;
        let want: Vec<String> = (at + 1..30).map(|i| format!("line {i}")).chain(["new file".to_owned()]).collect();
        assert_eq!(messages(&rest), want, "compressed: {compress}");
        r.cancel.cancel();
        r.task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn partial_lines_merge_per_stream_and_bad_lines_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("0.log");
    let stats = Arc::new(LogStats::default());
    append(
        &live,
        &[
            cri(1, "stdout", "P", "hel"),
            cri(2, "stderr", "F", "err"),
            "not a cri line".to_owned(),
            cri(3, "stdout", "P", "lo "),
            cri(4, "stdout", "F", "world"),
            "2026-11-27T13:00:00.000000005Z stdout untagged line".to_owned(),
            cri(6, "stdout", "F", &"x".repeat(5000)),
            cri(7, "stdout", "F", "after"),
        ],
    );
    let mut r = start(&live, None, &stats);
    let got = take(&mut r, 5).await;
    assert_eq!(messages(&got)[..3], ["err", "hello world", "untagged line"]);
    assert!(got[3].truncated && got[3].message.len() == 1000);
    assert_eq!(got[4].message, "after");
    // While "hel" was pending, no resume point passed its start.
    for r in &got[..1] {
        if let Some(p) = &r.position {
            assert_eq!(serde_json::from_str::<FileCursor>(&p.state).unwrap().offset, 0);
        }
    }
    let s = stats.snapshot();
    assert_eq!((s.malformed, s.untagged, s.truncated), (1, 1, 1));
    r.cancel.cancel();
    r.task.await.unwrap().unwrap();
}
