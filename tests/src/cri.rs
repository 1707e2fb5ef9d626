//! A minimal kubelet: creates pods and containers through the real CRI
//! endpoint, labelled the way the kubelet labels them.

use std::collections::HashMap;
use std::path::PathBuf;

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest, ReopenContainerLogRequest, RunPodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest,
};
use tonic::transport::Channel;

use crate::{busybox_image, unique_name};

/// The CRI endpoint the testbed serves (`CRI_SOCK`).
pub fn cri_socket() -> PathBuf {
    PathBuf::from(std::env::var("CRI_SOCK").unwrap_or_else(|_| "/run/containerd/containerd.sock".into()))
}

/// A running pod sandbox with some containers. Call [`CriPod::remove`]; if a
/// test fails first, `Drop` removes it anyway.
pub struct CriPod {
    client: RuntimeServiceClient<Channel>,
    config: PodSandboxConfig,
    /// The sandbox id.
    pub sandbox_id: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`, unique per test run so CRI log files never collide.
    pub uid: String,
    /// (container name, container id), in creation order.
    pub containers: Vec<(String, String)>,
    removed: bool,
}

impl CriPod {
    /// RunPodSandbox, as the kubelet does for a pod on the pod network.
    pub async fn run(prefix: &str) -> CriPod {
        Self::run_at(&cri_socket(), prefix).await
    }

    /// RunPodSandbox on the CRI endpoint at `socket` (CRI-O's, say).
    pub async fn run_at(socket: &std::path::Path, prefix: &str) -> CriPod {
        let channel = portwarden_runtime_crio::connect_channel(socket).await.expect("CRI endpoint");
        let mut client = RuntimeServiceClient::new(channel);
        let name = unique_name(prefix);
        let (namespace, uid) = ("pw-test".to_owned(), unique_name("uid"));
        let labels = HashMap::from([
            ("io.kubernetes.pod.name".to_owned(), name.clone()),
            ("io.kubernetes.pod.namespace".to_owned(), namespace.clone()),
            ("io.kubernetes.pod.uid".to_owned(), uid.clone()),
        ]);
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.clone(),
                uid: uid.clone(),
                namespace: namespace.clone(),
                attempt: 0,
            }),
            hostname: "pw-test".into(),
            log_directory: format!("/var/log/pods/{namespace}_{name}_{uid}"),
            labels,
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let request = RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
        let sandbox_id = client.run_pod_sandbox(request).await.expect("RunPodSandbox").into_inner().pod_sandbox_id;
        CriPod { client, config, sandbox_id, name, namespace, uid, containers: Vec::new(), removed: false }
    }

    /// CreateContainer + StartContainer: busybox sleeping. Returns its id.
    pub async fn start(&mut self, container: &str) -> String {
        self.start_with(container, &["sleep", "3600"]).await
    }

    /// CreateContainer + StartContainer: busybox running `command`.
    pub async fn start_with(&mut self, container: &str, command: &[&str]) -> String {
        let mut labels = self.config.labels.clone();
        labels.insert("io.kubernetes.container.name".into(), container.into());
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata { name: container.into(), attempt: 0 }),
            image: Some(ImageSpec {
                image: busybox_image(),
                user_specified_image: busybox_image(),
                ..Default::default()
            }),
            command: command.iter().map(|c| (*c).to_owned()).collect(),
            log_path: format!("{container}/0.log"),
            labels,
            // As the kubelet asks: the pod's network, a PID namespace of its own.
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let request = CreateContainerRequest {
            pod_sandbox_id: self.sandbox_id.clone(),
            config: Some(config),
            sandbox_config: Some(self.config.clone()),
        };
        // The kubelet makes the log directories (CRI-O, unlike containerd, expects them).
        let _ = std::fs::create_dir_all(self.log_path(container).parent().expect("a log directory"));
        let id = self.client.create_container(request).await.expect("CreateContainer").into_inner().container_id;
        let start = StartContainerRequest { container_id: id.clone() };
        self.client.start_container(start).await.expect("StartContainer");
        self.containers.push((container.to_owned(), id.clone()));
        id
    }

    /// ReopenContainerLog: what the kubelet calls after renaming a log file.
    pub async fn reopen_log(&mut self, container_id: &str) {
        let request = ReopenContainerLogRequest { container_id: container_id.to_owned() };
        self.client.reopen_container_log(request).await.expect("ReopenContainerLog");
    }

    /// The host path of a container's log file.
    pub fn log_path(&self, container: &str) -> PathBuf {
        PathBuf::from(format!("/var/log/pods/{}_{}_{}/{container}/0.log", self.namespace, self.name, self.uid))
    }

    /// StopPodSandbox + RemovePodSandbox (which removes its containers).
    pub async fn remove(mut self) {
        remove(&mut self.client, &self.sandbox_id).await;
        self.removed = true;
    }
}

/// Stops and removes the sandbox, retrying each call a few times as the
/// kubelet does: tearing down the pod's network namespace can fail for a
/// moment (`unlinkat ... device or resource busy` while another mount
/// namespace still holds it).
async fn remove(client: &mut RuntimeServiceClient<Channel>, sandbox_id: &str) {
    let id = sandbox_id.to_owned();
    for call in ["StopPodSandbox", "RemovePodSandbox"] {
        for attempt in 1..=5 {
            let result = if call == "StopPodSandbox" {
                client.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await.map(drop)
            } else {
                client.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id.clone() }).await.map(drop)
            };
            match result {
                Ok(()) => break,
                Err(e) if attempt == 5 => panic!("{call} {id}: {e:?}"),
                Err(_) => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
            }
        }
    }
}

impl Drop for CriPod {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let (mut client, id) = (self.client.clone(), self.sandbox_id.clone());
        // Drop may run inside the test's runtime: clean up from a fresh one.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                let _ = client.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await;
                let _ = client.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }).await;
            });
        })
        .join();
    }
}

/// A containerd namespace of the test's own, holding the busybox image,
/// where containers are made with the real `ctr` client. Removed on drop.
pub struct CtrNamespace {
    /// The namespace.
    pub name: String,
}

impl CtrNamespace {
    /// Creates the namespace by importing the busybox image into it.
    pub fn new(prefix: &str) -> CtrNamespace {
        let name = unique_name(prefix);
        let image = busybox_image();
        let script = format!("docker save {image} | ctr -n {name} images import - >/dev/null");
        let out = std::process::Command::new("sh").args(["-c", &script]).output().expect("sh runs");
        assert!(out.status.success(), "image import failed: {}", String::from_utf8_lossy(&out.stderr));
        CtrNamespace { name }
    }

    /// Runs `ctr -n <ns> ARGS` and returns stdout; panics on failure.
    pub fn ctr(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("ctr").arg("-n").arg(&self.name).args(args).output().expect("ctr runs");
        assert!(out.status.success(), "ctr {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctr run -d`: a busybox container sleeping in its own network namespace.
    pub fn run(&self, id: &str) {
        self.ctr(&["run", "-d", &busybox_image(), id, "sleep", "3600"]);
    }

    /// The task's PID, as `ctr tasks ls` shows it.
    pub fn pid(&self, id: &str) -> Option<u32> {
        let listing = self.ctr(&["tasks", "ls"]);
        listing
            .lines()
            .skip(1)
            .find(|l| l.split_whitespace().next() == Some(id))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// Kills and deletes the task, then the container.
    pub fn delete(&self, id: &str) {
        let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
        self.ctr(&["tasks", "delete", "-f", id]);
        self.ctr(&["containers", "delete", id]);
    }
}

impl CtrNamespace {
    /// Deletes everything in the namespace, then the namespace, and checks
    /// it is gone. containerd collects the image content asynchronously, so
    /// the namespace removal is retried for a few seconds.
    pub fn remove(self) {
        assert!(self.try_remove(), "namespace {} could not be removed", self.name);
    }

    fn try_remove(&self) -> bool {
        let ns = &self.name;
        let script = format!(
            "for t in $(ctr -n {ns} tasks ls -q); do ctr -n {ns} tasks delete -f $t; done; \
             for c in $(ctr -n {ns} containers ls -q); do ctr -n {ns} containers delete $c; done; \
             for i in $(ctr -n {ns} images ls -q); do ctr -n {ns} images rm --sync $i; done; \
             for _ in $(seq 50); do ctr namespaces remove {ns} 2>/dev/null && exit 0; sleep 0.1; done; exit 1"
        );
        let out = std::process::Command::new("sh").args(["-c", &script]).output();
        out.is_ok_and(|o| o.status.success())
    }
}

impl Drop for CtrNamespace {
    fn drop(&mut self) {
        let listed = std::process::Command::new("ctr").args(["namespaces", "ls", "-q"]).output();
        if listed.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l == self.name)) {
            self.try_remove();
        }
    }
}
