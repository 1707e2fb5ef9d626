//! Malformed, truncated and failing Docker API responses, served by a
//! scripted HTTP server on a unix socket. Nothing may panic, the inventory
//! must stay consistent, and the warning must name the container.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portwarden_core::{ContainerId, ContainerRuntime, ContainerState, Error, Inventory, InventoryOptions};
use portwarden_runtime_docker::DockerRuntime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

fn ok(body: &str) -> String {
    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
}

/// Responses by request path; unknown paths get a 404 in Docker's format.
fn respond(path: &str) -> String {
    let running = |id: &str, pid: i64| {
        format!(
            r#"{{"Id":"{id}","Name":"/{id}","State":{{"Status":"running","Pid":{pid}}},"Config":{{"Image":"img"}}}}"#
        )
    };
    match path {
        "/version" => ok(r#"{"Version":"99.0","ApiVersion":"1.99"}"#),
        "/containers/json?all=1" => ok(concat!(
            r#"[{"Id":"good","Names":["/good"],"State":"running","Image":"img"},"#,
            r#"{"Id":"truncated","Names":["/cut-short"],"State":"running","Image":"img","Labels":{"a":"b"}},"#,
            r#"{"Id":"nopid","Names":["/nopid"],"State":"running","Image":"img"},"#,
            r#"{"Id":"old","Names":["/old"],"State":"exited","Image":"img"}]"#
        )),
        "/containers/good/json" => ok(&running("good", 10)),
        "/containers/nopid/json" => ok(&running("nopid", 0)),
        // Promises 500 bytes, sends 12, closes.
        "/containers/truncated/json" => "HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"Id\":\"trun".to_owned(),
        "/containers/garbage/json" => ok("<html>not json</html>"),
        "/containers/broken/json" => {
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 22\r\n\r\n{\"message\":\"disk full\"}"
                .replacen("22", "23", 1)
        }
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 36\r\n\r\n{\"message\":\"No such container: xyz\"}".to_owned(),
    }
}

/// Serves one request per connection from `respond`.
fn fake_dockerd(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pw-fake-dockerd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let sock = dir.join("docker.sock");
    let listener = UnixListener::bind(&sock).expect("bind");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let _ = conn.write_all(respond(&path).as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    sock
}

/// Captures the runtime's `tracing` output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

fn runtime(sock: &Path) -> DockerRuntime {
    DockerRuntime::new(sock, Path::new("/proc"), Duration::from_secs(5))
}

#[tokio::test]
async fn a_truncated_inspect_falls_back_to_the_list_entry_with_a_warning() {
    let logs = Captured::default();
    let writer = logs.clone();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish(),
    );
    let docker = runtime(&fake_dockerd("list"));
    let inventory = Inventory::new(vec![Arc::new(docker)], InventoryOptions::default());
    assert!(inventory.sync_once().await.is_empty());

    let all = inventory.snapshot();
    assert_eq!(all.len(), 4, "{all:?}");
    let get = |id: &str| inventory.get(&ContainerId::new(id)).expect(id);
    assert_eq!(get("good").pid, Some(10));
    let cut = get("truncated");
    assert_eq!((cut.name.as_str(), cut.state, cut.pid), ("cut-short", ContainerState::Running, None));
    assert_eq!(cut.labels.get("a").map(String::as_str), Some("b"));
    assert_eq!(get("nopid").pid, None);
    assert_eq!(get("old").state, ContainerState::Exited);

    let text = logs.text();
    let warned = |id: &str, what: &str| text.lines().any(|l| l.contains("WARN") && l.contains(id) && l.contains(what));
    assert!(warned("truncated", "could not inspect"), "{text}");
    assert!(warned("nopid", "no PID"), "{text}");
}

#[tokio::test]
async fn unreadable_responses_are_protocol_errors_and_statuses_map_to_kinds() {
    let docker = runtime(&fake_dockerd("kinds"));
    let err = docker.inspect(&ContainerId::new("garbage")).await.expect_err("not JSON");
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    let err = docker.inspect(&ContainerId::new("truncated")).await.expect_err("cut short");
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    let err = docker.inspect(&ContainerId::new("missing")).await.expect_err("404");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let err = docker.inspect(&ContainerId::new("broken")).await.expect_err("500");
    assert!(matches!(&err, Error::Api { status: 500, message, .. } if message == "disk full"), "{err:?}");
    let info = docker.info().await.expect("version decodes");
    assert_eq!(info.api_version.as_deref(), Some("1.99"));
}

#[tokio::test]
async fn a_dead_socket_is_unavailable_not_a_panic() {
    let sock = fake_dockerd("dead");
    let _ = std::fs::remove_file(&sock);
    drop(std::os::unix::net::UnixListener::bind(&sock).expect("rebind"));
    let err = runtime(&sock).list().await.expect_err("nobody listens");
    assert!(err.is_transient(), "{err:?}");
}
