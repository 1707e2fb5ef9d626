//! Issue 7: the container image, run the way the seed runs its agent: host
//! network, the Docker socket, the host's /proc at /host/proc, and the
//! capabilities instead of `--privileged` (see the note in the test); the
//! CLI on the host captures through the API of the agent in the container.

use std::process::Command;
use std::time::Duration;

use portwarden_tests::api::pinger;
use portwarden_tests::logs::free_port;
use portwarden_tests::{TestContainer, docker, docker_ok, eventually, portwarden_bin, repo_root, unique_name};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_discovers_captures_collects_and_listens() {
    let tag = format!("localhost/portwarden-test:{}", std::process::id());
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/build-image.sh"))
        .arg(&tag)
        .env("PORTWARDEN_PROFILE", "debug")
        .output()
        .expect("build-image.sh runs");
    assert!(out.status.success(), "image build failed: {}", String::from_utf8_lossy(&out.stderr));

    let dir = std::env::temp_dir().join(unique_name("image"));
    std::fs::create_dir_all(&dir).unwrap();
    let (syslog, forward) = (free_port(), free_port());
    let config = format!(
        "lock_file = \"/tmp/portwarden.lock\"\n[logs]\nstate_dir = \"\"\n[logs.syslog]\ntcp_port = {syslog}\nudp_port = {syslog}\n\
         [logs.forward]\nport = {forward}\n[capture]\nflows = false\n"
    );
    std::fs::write(dir.join("portwarden.toml"), config).unwrap();
    let name = unique_name("agent");
    let volume = format!("{}:/etc/portwarden.toml:ro", dir.join("portwarden.toml").display());
    // The API socket's directory, shared with the host as deploy/docker-run.sh does.
    std::fs::create_dir_all(dir.join("run")).unwrap();
    let run_volume = format!("{}:/run/portwarden", dir.join("run").display());
    // The seed uses --privileged; this machine's capability bounding set
    // lacks CAP_SYS_RESOURCE, so runc refuses privileged containers here
    // ("unable to apply caps"). The four capabilities the agent needs are
    // exactly what --privileged would have given it for these features.
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--net=host",
        "--cap-add",
        "SYS_ADMIN",
        "--cap-add",
        "SYS_PTRACE",
        "--cap-add",
        "NET_RAW",
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-v",
        "/proc:/host/proc:ro",
        "-v",
        &volume,
        "-v",
        &run_volume,
        &tag,
        "--config",
        "/etc/portwarden.toml",
        "--log-format",
        "json",
        "run",
    ]);
    let logs = |stderr: bool| {
        let out = docker(&["logs", &name]);
        String::from_utf8_lossy(if stderr { &out.stderr } else { &out.stdout }).into_owned()
    };
    eventually("the agent to sync", Duration::from_secs(60), || logs(true).contains("runtime synced").then_some(()))
        .await;

    let script = format!("echo hello-from-the-image-test; {}", pinger("0.2"));
    let c = TestContainer::run_cmd("image-target", &[], &["sh", "-c", &script]);
    eventually("discovery and capture of the test container", Duration::from_secs(60), || {
        let err = logs(true);
        let attached = format!("\"container\":\"{}\"", c.id);
        err.lines().any(|l| l.contains("capture attached") && l.contains(&attached)).then_some(())
    })
    .await;
    let status = Command::new("logger")
        .args(["-n", "127.0.0.1", "-P", &syslog.to_string(), "--tcp", "syslog-into-the-image"])
        .status()
        .unwrap();
    assert!(status.success());
    let records = eventually("the container's line and the syslog line", Duration::from_secs(60), || {
        let out = logs(false);
        (out.contains("hello-from-the-image-test") && out.contains("syslog-into-the-image")).then_some(out)
    })
    .await;
    // `portwarden capture` on the host, through the API of the agent in the
    // container: pcapng that tshark reads, on interfaces named after it.
    let file = dir.join("through-the-api.pcapng");
    let out = Command::new(portwarden_bin())
        .env("PORTWARDEN_API_SOCKET", dir.join("run/portwarden.sock"))
        .args(["capture", "--container", &c.name, "-f", "icmp", "-c", "4", "-w"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("through the running daemon"), "{err}");
    let tshark = Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .args(["-T", "fields", "-e", "frame.interface_name"])
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&tshark.stdout).into_owned();
    assert_eq!(names.lines().count(), 4, "{names}");
    assert!(names.lines().all(|n| n.contains(&c.name)), "{names}");

    let line = records.lines().find(|l| l.contains("hello-from-the-image-test")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["container"]["id"], c.id.as_str());
    // The agent does not collect its own output (records about records).
    let own = records.lines().filter(|l| l.contains(&format!("\"name\":\"{name}\""))).count();
    assert_eq!(own, 0, "the agent collected its own output");
    let _ = docker(&["rm", "-f", &name]);
    let _ = docker(&["rmi", &tag]);
    let _ = std::fs::remove_dir_all(&dir);
}
