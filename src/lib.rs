//! The `portwarden` agent, as a library: the binary is a thin wrapper
//! around [`main`], and [`agent::Agent`] is the daemon that `portwarden run`
//! starts, for other programs to embed with parts of their own.
//!
//! ```no_run
//! use portwarden::agent::Agent;
//! use portwarden::config::Config;
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> anyhow::Result<()> {
//! // Every runtime this build includes; add your own with `.runtime(...)`,
//! // outputs with `.log_output(...)`, sinks with `.packet_sink(...)`.
//! let agent = Agent::builder(Config::default()).build()?;
//! let cancel = CancellationToken::new();
//! agent.run(cancel).await?; // returns once `cancel` fires, after draining
//! # Ok(()) }
//! ```
//!
//! [`default_registry`] registers every runtime this build includes; below
//! the agent, [`portwarden_core`]'s registry and inventory can be driven
//! directly.
#![deny(missing_docs)]

pub mod agent;
mod api;
pub mod cli;
mod collect;
mod commands;
pub mod config;
pub mod duration;
mod guard;
mod heap;
mod logging;
mod metrics;
pub mod mode;
mod prestart;
mod progress;

use std::process::ExitCode;

use portwarden_core::Registry;
use portwarden_runtime_containerd::{ContainerdProvider, Namespaces};
use portwarden_runtime_crio::{CriOptions, CriProvider, EventMode};
use portwarden_runtime_docker::DockerProvider;
use portwarden_runtime_podman::PodmanProvider;

use crate::cli::{Cli, Command};
use crate::config::{Config, CriEvents};

/// A registry with every runtime this build includes, configured from `config`.
pub fn default_registry(config: &Config) -> Registry {
    let r = &config.runtimes;
    let namespaces = if r.containerd.namespaces.is_empty() {
        Namespaces::All
    } else {
        Namespaces::Only(r.containerd.namespaces.iter().cloned().collect())
    };
    let cri = CriOptions {
        request_timeout: r.request_timeout,
        poll_interval: r.cri.poll_interval,
        event_mode: match r.cri.events {
            CriEvents::Auto => EventMode::Auto,
            CriEvents::Poll => EventMode::Poll,
        },
    };
    let docker = DockerProvider::new(r.request_timeout).logs(r.docker.logs.then(|| r.docker.skip_log_drivers.clone()));
    let podman = PodmanProvider::new(r.request_timeout).logs(r.podman.logs.then(|| r.podman.skip_log_drivers.clone()));
    Registry::new()
        .with_provider(docker)
        .with_provider(ContainerdProvider::new(namespaces, r.request_timeout))
        .with_provider(CriProvider::new(cri))
        .with_provider(podman)
}

/// Runs one CLI invocation: loads the config, applies flags, starts
/// logging and the async runtime, and dispatches the command.
pub fn main(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Config { action: crate::cli::ConfigAction::Default } = &cli.command {
        print!("{}", config::DEFAULT_TOML);
        return Ok(ExitCode::SUCCESS);
    }
    // The launcher execs Fluent Bit: no config, logging or runtime of ours.
    if let Command::FluentLaunch { args } = &cli.command {
        let code = portwarden_logs::fluent_launch::main(args);
        return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
    }
    let mut config = match &cli.global.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    cli.global.apply(&mut config);
    if let Command::Run(args) | Command::Alerts { run: args, .. } = &cli.command {
        args.apply(&mut config);
    }
    config.validate()?;
    // Listing commands keep stdout clean and stderr quiet unless asked.
    let level = if matches!(cli.command, Command::Run(_)) { config.log.level.as_str() } else { "warn" };
    logging::init(config.log.format, level);

    let registry = default_registry(&config);
    config.check_runtimes(&registry)?;
    // The agent, and the commands that capture or detect, spread over two
    // workers. The others read and print one stream at a time, where a
    // second worker only adds a hand-off between threads per batch (a
    // futex wake-up each: `logs` reading a long history spent most of its
    // system time there).
    let runtime = match cli.command {
        Command::Run(_) | Command::Capture(_) | Command::Alerts { .. } => {
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?
        }
        _ => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
    };
    let standalone = cli.global.standalone;
    runtime.block_on(async {
        // The commands a running daemon answers use it when it does.
        let uses_daemon = matches!(
            cli.command,
            Command::Alerts { .. }
                | Command::Ps { .. }
                | Command::Capture(_)
                | Command::Status { .. }
                | Command::Logs(_)
        );
        let daemon = if uses_daemon { api::daemon(&config, standalone).await } else { None };
        match cli.command {
            Command::Run(_) => commands::run(&config, agent::RunMode::Daemon).await,
            Command::Alerts { json, .. } => commands::alerts(&config, daemon, json).await,
            Command::Ps { json, all } => commands::ps(&config, &registry, daemon, json, all).await,
            Command::Runtimes { json } => commands::runtimes(&config, &registry, json).await,
            Command::Health => commands::health(&config),
            Command::Capture(args) => commands::capture(&config, &registry, daemon, args).await,
            Command::Status { json } => commands::status(&config, &registry, daemon, json).await,
            Command::Logs(args) => commands::logs(&config, &registry, daemon, args).await,
            Command::ExportFluentBit { dir } => commands::export_fluent_bit(&dir),
            Command::Config { .. } => commands::config_check(&config, cli.global.config.as_deref()).await,
            Command::FluentLaunch { .. } => unreachable!("handled above"),
        }
    })
}
