//! The OTLP receiver of the output tests (`tests/otlp/receiver.py`, on the
//! official protos and grpcio), and its requests flattened to one JSON
//! object per log record.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::logs::free_port;
use crate::{eventually, repo_root, unique_name};

/// The venv `scripts/install-test-tools.sh` makes for the receiver.
const VENV_PYTHON: &str = "/opt/portwarden-tests/otlp-venv/bin/python";

/// A running receiver: gRPC and HTTP on ports of their own.
pub struct OtlpReceiver {
    child: Child,
    dir: PathBuf,
    out: PathBuf,
    /// Its gRPC port.
    pub grpc_port: u16,
    /// Its OTLP/HTTP port.
    pub http_port: u16,
}

impl OtlpReceiver {
    /// Starts one on fresh ports with the receiver's `args`
    /// (`--unavailable N`, `--reject N`, `--tls CERT KEY`, `--client-ca CA`).
    pub async fn start(args: &[&str]) -> OtlpReceiver {
        Self::start_on(free_port(), free_port(), args).await
    }

    /// Starts one on the given ports.
    pub async fn start_on(grpc_port: u16, http_port: u16, args: &[&str]) -> OtlpReceiver {
        let dir = std::env::temp_dir().join(unique_name("otlp-receiver"));
        std::fs::create_dir_all(&dir).expect("receiver dir");
        let out = dir.join("requests.json");
        let err = dir.join("stderr");
        let child = Command::new(VENV_PYTHON)
            .arg(repo_root().join("tests/otlp/receiver.py"))
            .args(["--grpc-port", &grpc_port.to_string(), "--http-port", &http_port.to_string()])
            .args(args)
            .stdout(std::fs::File::create(&out).expect("receiver out"))
            .stderr(std::fs::File::create(&err).expect("receiver err"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{VENV_PYTHON} runs ({e}); scripts/install-test-tools.sh makes it"));
        let receiver = OtlpReceiver { child, dir, out, grpc_port, http_port };
        eventually("the OTLP receiver is ready", Duration::from_secs(30), || {
            std::fs::read_to_string(&err).unwrap_or_default().contains("ready").then_some(())
        })
        .await;
        receiver
    }

    /// Every record received so far, flattened: `resource` and `attributes`
    /// as objects of strings, `body`, `severity` (the enum's name),
    /// `severity_text`, `time` (ns), and `transport` (`grpc` or `http`).
    pub fn records(&self) -> Vec<Value> {
        records_in(&self.out)
    }

    /// Waits until `pred` holds for at least `n` records, and returns them.
    pub async fn wait_records(&self, what: &str, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        eventually(what, Duration::from_secs(60), || {
            let got: Vec<Value> = self.records().into_iter().filter(|r| pred(r)).collect();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

fn attributes(list: &Value) -> Value {
    let mut map = Map::new();
    for kv in list.as_array().into_iter().flatten() {
        let value = &kv["value"];
        let v = value
            .get("stringValue")
            .cloned()
            .or_else(|| value.get("boolValue").cloned())
            .or_else(|| value.get("intValue").cloned())
            .unwrap_or(Value::Null);
        map.insert(kv["key"].as_str().unwrap_or_default().to_owned(), v);
    }
    Value::Object(map)
}

fn records_in(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(request) = serde_json::from_str::<Value>(line) else { continue };
        for rl in request["resourceLogs"].as_array().into_iter().flatten() {
            let resource = attributes(&rl["resource"]["attributes"]);
            for sl in rl["scopeLogs"].as_array().into_iter().flatten() {
                for r in sl["logRecords"].as_array().into_iter().flatten() {
                    out.push(serde_json::json!({
                        "resource": resource,
                        "scope": sl["scope"]["name"],
                        "attributes": attributes(&r["attributes"]),
                        "body": r["body"]["stringValue"],
                        "severity": r.get("severityNumber").cloned().unwrap_or(Value::Null),
                        "severity_text": r.get("severityText").cloned().unwrap_or(Value::Null),
                        "time": r["timeUnixNano"],
                        "transport": request["transport"],
                    }));
                }
            }
        }
    }
    out
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
