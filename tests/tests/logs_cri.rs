//! Issue 5: a CRI pod's output from its log file, attributed to the pod,
//! through a kubelet-style rotation: rename, ReopenContainerLog, gzip.

use std::io::Write;
use std::time::Duration;

use portwarden_tests::cri::CriPod;
use portwarden_tests::logs::LogAgent;
use serde_json::Value;

/// The sequence numbers in `seq N` messages from `id`.
fn seqs(records: &[Value], id: &str) -> Vec<u64> {
    records
        .iter()
        .filter(|r| r["container"]["id"] == id)
        .filter_map(|r| r["message"].as_str()?.strip_prefix("seq ")?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_output_is_attributed_and_survives_rotation() {
    let agent = LogAgent::start("logs-cri", "", "").await;
    let mut pod = CriPod::run("logs").await;
    // 1500 numbered lines, a few ms apart, on both streams.
    let script = "i=0; while [ $i -lt 1500 ]; do echo \"seq $i\"; i=$((i+1)); echo \"seq $i\" >&2; i=$((i+1)); \
                  usleep 2000; done; sleep 3600";
    let id = pod.start_with("writer", &["sh", "-c", script]).await;
    let live = pod.log_path("writer");

    let got = agent.wait_records("the first lines", 200, |r| r["container"]["id"] == id.as_str()).await;
    let first = &got[0];
    assert_eq!(first["source"], "cri");
    assert_eq!(first["container"]["pod"]["name"], pod.name.as_str());
    assert_eq!(first["container"]["pod"]["namespace"], pod.namespace.as_str());
    assert_eq!(first["container"]["pod"]["uid"], pod.uid.as_str());
    assert!(got.iter().any(|r| r["stream"] == "stderr") && got.iter().any(|r| r["stream"] == "stdout"));

    // What the kubelet does: rename, ask the runtime to reopen, gzip later.
    let rotated = live.with_file_name("0.log.20261127-130000");
    std::fs::rename(&live, &rotated).expect("rename");
    pod.reopen_log(&id).await;
    // The runtime writes to the new file from here on.
    portwarden_tests::eventually("the reopened log file", Duration::from_secs(30), || live.exists().then_some(()))
        .await;
    let data = std::fs::read(&rotated).expect("rotated file");
    let gz = rotated.with_file_name("0.log.20261127-130000.gz");
    let mut enc = system_gzip(&gz);
    enc.write_all(&data).expect("gzip");
    drop(enc);
    std::fs::remove_file(&rotated).expect("remove the uncompressed copy");

    let got = agent.wait_records("all 1500 lines", 1500, |r| r["container"]["id"] == id.as_str()).await;
    let mut seen = seqs(&got, &id);
    seen.sort_unstable();
    assert_eq!(seen, (0..1500).collect::<Vec<_>>(), "every line once");
    pod.remove().await;
}

/// A gzip writer using the system `gzip` (no compression crate in the tests).
fn system_gzip(path: &std::path::Path) -> impl Write {
    struct Gz(std::process::Child);
    impl Write for Gz {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.stdin.as_mut().expect("stdin").write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Drop for Gz {
        fn drop(&mut self) {
            drop(self.0.stdin.take());
            let _ = self.0.wait();
        }
    }
    let out = std::fs::File::create(path).expect("gz file");
    Gz(std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(out)
        .spawn()
        .expect("gzip runs"))
}
