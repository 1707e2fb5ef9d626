//! `portwarden ps`: every container from every detected runtime, as the
//! running daemon knows them, or listed here when none runs.

use std::io::Write;
use std::process::ExitCode;

use portwarden_core::{Container, ErrorChain, Inventory, Registry};

use portwarden_proto::{AgentClient, v1};

use crate::api::status_error;
use crate::config::Config;
use crate::progress::Progress;

pub(crate) async fn ps(
    config: &Config,
    registry: &Registry,
    daemon: Option<AgentClient>,
    json: bool,
    all: bool,
) -> anyhow::Result<ExitCode> {
    if let Some(mut daemon) = daemon {
        let request = v1::ListContainersRequest { selector: None, all };
        let reply = daemon.list_containers(request).await.map_err(status_error)?.into_inner();
        let containers: Vec<Container> = reply.containers.iter().map(v1::Container::to_model).collect();
        show(&containers, json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let progress = Progress::stderr();
    progress.show("listing containers from every runtime");
    let detection = registry.detect(&config.detect_options(registry)).await;
    if detection.runtimes.is_empty() {
        eprintln!("portwarden: no container runtime detected; `portwarden runtimes` says why");
    }
    let runtimes = detection.runtimes.into_iter().map(|d| d.runtime).collect();
    let inventory = Inventory::new(runtimes, config.inventory_options());
    let failed = inventory.sync_once().await;
    progress.clear();
    for (runtime, error) in &failed {
        eprintln!(
            "portwarden: could not list {} at {}: {}",
            runtime.name(),
            runtime.endpoint().display(),
            ErrorChain(error)
        );
    }
    let containers: Vec<Container> = inventory.snapshot().into_iter().filter(|c| all || c.state.is_alive()).collect();
    show(&containers, json)?;
    Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn show(containers: &[Container], json: bool) -> anyhow::Result<()> {
    if json { super::print_json(&containers) } else { Ok(print(&mut std::io::stdout().lock(), containers)?) }
}

fn print(out: &mut impl Write, containers: &[Container]) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = containers
        .iter()
        .map(|c| {
            let ips: Vec<String> = c.ips.iter().map(ToString::to_string).collect();
            vec![
                c.id.short().to_owned(),
                c.runtime.to_string(),
                c.name.clone(),
                c.image.clone(),
                c.state.to_string(),
                c.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                c.pod.as_ref().map_or_else(|| "-".to_owned(), |p| format!("{}/{}", p.namespace, p.name)),
                if c.host_network { "host".to_owned() } else { ips.join(",") },
            ]
        })
        .collect();
    super::print_table(out, &["CONTAINER ID", "RUNTIME", "NAME", "IMAGE", "STATE", "PID", "POD", "IPS"], &rows)
}
