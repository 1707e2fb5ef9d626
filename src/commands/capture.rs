//! `portwarden capture`: tcpdump for containers, on its own (the daemon's
//! API arrives with issue #7).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use portwarden_capture::sinks::PcapngSink;
use portwarden_capture::{AfPacketSource, Destination, PcapngOut, Skip, summarize};
use portwarden_core::time::eve_timestamp;
use portwarden_core::{
    CaptureEngine, CaptureGroup, CaptureStats, GroupSink, Inventory, LinkType, PacketBatch, PacketSink, Registry,
};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::selector;
use crate::cli::CaptureArgs;
use crate::config::Config;

pub(crate) async fn capture(config: &Config, registry: &Registry, args: CaptureArgs) -> anyhow::Result<ExitCode> {
    let mut options = config.capture.options();
    if let Some(filter) = &args.filter {
        options.filter = Some(filter.clone());
    }
    if let Some(snaplen) = args.snaplen {
        options.snaplen = snaplen;
    }
    // Fail on a bad filter now, not once per container.
    portwarden_capture::Program::for_filter(options.filter.as_deref(), options.snaplen)?;

    let done = CancellationToken::new();
    let sink: Arc<dyn PacketSink> = match &args.write {
        Some(path) => {
            let destination = if path.as_os_str() == "-" {
                Destination::Stdout
            } else {
                let max_age = args.rotate_seconds.filter(|s| *s > 0).map(std::time::Duration::from_secs);
                Destination::File { path: path.clone(), max_bytes: args.rotate_bytes.unwrap_or(0), max_age }
            };
            Arc::new(PcapngSink::new(PcapngOut::new(destination)?, options.snaplen, args.count, done.clone()))
        }
        None => Arc::new(PrintSink::new(args.count, done.clone())),
    };
    let engine = CaptureEngine::new(Arc::new(AfPacketSource), vec![sink, Arc::new(ReportSink)], options);

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let stop = CancellationToken::new();
    let task = if args.host {
        eprintln!("portwarden: capturing the agent's own network namespace");
        let (engine, stop) = (engine.clone(), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = engine.run_own_namespace(stop).await {
                eprintln!("portwarden: capture failed: {}", portwarden_core::ErrorChain(&e));
            }
        })
    } else {
        let detection = registry.detect(&config.detect_options()).await;
        if detection.runtimes.is_empty() {
            anyhow::bail!(
                "no container runtime detected (`portwarden runtimes` says why); use --host for this namespace"
            );
        }
        let runtimes = detection.runtimes.into_iter().map(|d| d.runtime).collect();
        let inventory = Inventory::new(runtimes, config.inventory_options());
        tokio::spawn({
            let (inventory, stop) = (inventory.clone(), stop.clone());
            async move { inventory.run(stop).await }
        });
        inventory.wait_synced().await;
        let selector = selector(&args.containers, args.pod.as_deref())?;
        let matching: Vec<String> =
            inventory.snapshot().iter().filter(|c| c.state.is_alive() && selector(c)).map(|c| c.name.clone()).collect();
        if matching.is_empty() {
            eprintln!("portwarden: no running container matches yet; waiting for one to start");
        } else {
            eprintln!("portwarden: capturing {}", matching.join(", "));
        }
        let engine = engine.clone().with_selector(selector);
        let stop = stop.clone();
        tokio::spawn(async move { engine.run(&inventory, stop).await })
    };
    tokio::select! {
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
        () = done.cancelled() => {}
    }
    stop.cancel();
    task.await?;
    let _ = std::io::stdout().flush();
    Ok(ExitCode::SUCCESS)
}

/// Containers named or id-prefixed by `--container`, or in `--pod NS/NAME`;
/// every container when neither is given.
/// One tcpdump-like line per frame on stdout.
struct PrintSink {
    remaining: Option<Arc<AtomicU64>>,
    done: CancellationToken,
}

impl PrintSink {
    fn new(limit: Option<u64>, done: CancellationToken) -> PrintSink {
        PrintSink { remaining: limit.map(|n| Arc::new(AtomicU64::new(n))), done }
    }
}

impl PacketSink for PrintSink {
    fn open(&self, _group: &CaptureGroup) -> Box<dyn GroupSink> {
        Box::new(GroupPrint { remaining: self.remaining.clone(), done: self.done.clone(), names: Default::default() })
    }
}

struct GroupPrint {
    remaining: Option<Arc<AtomicU64>>,
    done: CancellationToken,
    names: std::collections::HashMap<u32, (String, LinkType)>,
}

impl GroupSink for GroupPrint {
    fn batch(&mut self, group: &CaptureGroup, batch: &PacketBatch<'_>) {
        for iface in batch.new_interfaces {
            self.names.insert(iface.index, (iface.name.clone(), iface.link));
        }
        let mut text = String::new();
        for (meta, bytes) in batch.iter() {
            if let Some(remaining) = &self.remaining {
                match remaining.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)) {
                    Ok(1) => self.done.cancel(),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let (ifname, link) = self
                .names
                .get(&meta.ifindex)
                .cloned()
                .unwrap_or_else(|| (format!("if{}", meta.ifindex), LinkType::Ethernet));
            let what = match summarize(link, bytes) {
                Ok(s) => format!("{} {}:{} > {}:{}", s.proto.eve_name(), s.src, s.sport, s.dst, s.dport),
                Err(Skip::NotIp) => "non-IP".to_owned(),
                Err(Skip::Malformed) => "malformed".to_owned(),
            };
            let line = format!(
                "{} {}/{} {what} length {}\n",
                eve_timestamp(meta.timestamp_ns),
                group.label(),
                ifname,
                meta.original_len
            );
            text.push_str(&line);
        }
        let mut out = std::io::stdout().lock();
        if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
            self.done.cancel();
        }
    }
}

/// Reports on stderr when each capture attaches, and its counters when it ends.
struct ReportSink;

impl PacketSink for ReportSink {
    fn open(&self, _group: &CaptureGroup) -> Box<dyn GroupSink> {
        Box::new(ReportSink)
    }
}

impl GroupSink for ReportSink {
    fn started(&mut self, group: &CaptureGroup) {
        eprintln!("portwarden: attached {}", group.label());
    }

    fn batch(&mut self, _group: &CaptureGroup, _batch: &PacketBatch<'_>) {}

    fn close(&mut self, group: &CaptureGroup, stats: CaptureStats) {
        eprintln!(
            "portwarden: {}: {} packets captured, {} dropped by the kernel",
            group.label(),
            stats.packets,
            stats.kernel_drops
        );
    }
}
