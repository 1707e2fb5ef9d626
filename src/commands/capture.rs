//! `portwarden capture`: tcpdump for containers. Through the running
//! daemon's API when one runs (its captures, the filter enforced in its
//! kernel sockets), else on its own; the output is the same either way.

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
use portwarden_proto::{AgentClient, v1};
use tokio_util::sync::CancellationToken;

use super::{Interrupt, selector};
use crate::api::status_error;
use crate::cli::CaptureArgs;
use crate::config::Config;
use crate::progress::Progress;

pub(crate) async fn capture(
    config: &Config,
    registry: &Registry,
    daemon: Option<AgentClient>,
    args: CaptureArgs,
) -> anyhow::Result<ExitCode> {
    let mut options = config.capture.options();
    if let Some(filter) = args.filter() {
        options.filter = Some(filter);
    }
    if let Some(snaplen) = args.snaplen() {
        options.snaplen = snaplen;
    }
    options.ring_bytes = options.ring_bytes.max(RING_BYTES);
    options.ring_max_bytes = options.ring_max_bytes.max(options.ring_bytes);
    if let Some(bytes) = args.ring_bytes() {
        (options.ring_bytes, options.ring_max_bytes) = (bytes, bytes);
    }
    if args.write.is_some() && !args.immediate {
        buffered(&mut options);
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
                Destination::File { path: path.clone(), max_bytes: args.rotate_bytes(), max_age }
            };
            Arc::new(PcapngSink::new(PcapngOut::new(destination)?, options.snaplen, args.count, done.clone()))
        }
        None => Arc::new(PrintSink::new(args.count, done.clone())),
    };
    let mut sinks = vec![sink, Arc::new(ReportSink) as Arc<dyn PacketSink>];
    let progress = Progress::stderr();
    let counted = Arc::new(Counted::default());
    let ticker = (progress.enabled() && args.write.is_some()).then(|| {
        sinks.push(Arc::clone(&counted) as Arc<dyn PacketSink>);
        tokio::spawn(show_progress(progress, Arc::clone(&counted), done.clone()))
    });
    let code = match daemon {
        Some(daemon) => through_daemon(daemon, &args, &sinks, done.clone()).await,
        None => standalone(config, registry, &args, options, sinks, done.clone()).await,
    };
    done.cancel();
    if let Some(ticker) = ticker {
        let _ = ticker.await;
    }
    code
}

/// How long `capture -w` lets frames wait, unless `--immediate`: as
/// tcpdump does (its buffer timeout is 1 s), a file or a pipe gets them in
/// fewer, larger rounds, for less CPU per frame.
const BUFFERED_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

/// The ring a capture here starts with, unless `-B` sets it: tcpdump's
/// default buffer. The daemon starts each container's ring smaller (it
/// keeps one per namespace); one capture at a time can afford tcpdump's.
/// It grows on bursts as the daemon's do: at the generator's top speed
/// (400 k frames/s of 512 bytes) a ring starting at 1 MiB dropped frames
/// before it grew, and 2 MiB growing to 4 MiB dropped none.
const RING_BYTES: usize = 2 << 20;

/// Options for writing to a file or pipe: blocks retire and are read in
/// `BUFFERED_DELAY` rounds.
fn buffered(options: &mut portwarden_core::CaptureOptions) {
    options.read_delay = options.read_delay.max(BUFFERED_DELAY);
    options.block_timeout = options.block_timeout.max(BUFFERED_DELAY);
}

/// Streams the daemon's capture into `sinks` until the count, an
/// interrupt, or the daemon's end.
async fn through_daemon(
    mut daemon: AgentClient,
    args: &CaptureArgs,
    sinks: &[Arc<dyn PacketSink>],
    done: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let request = v1::StreamPacketsRequest {
        selector: Some(super::wire_selector(&args.containers, args.pod.as_deref())),
        bpf: args.filter().unwrap_or_default(),
        snaplen: args.snaplen().unwrap_or(0),
        host: args.host,
    };
    let stream = daemon.stream_packets(request).await.map_err(status_error)?.into_inner();
    eprintln!("portwarden: capturing through the running daemon");
    if args.buffer_size.is_some() {
        eprintln!("portwarden: -B is ignored: the daemon's rings follow its own config (`capture.ring_bytes`)");
    }
    let mut interrupt = Interrupt::new()?;
    let replaying = crate::api::replay(stream, sinks, done.clone());
    tokio::pin!(replaying);
    let skipped = tokio::select! {
        r = &mut replaying => r?,
        () = interrupt.wait() => {
            done.cancel();
            replaying.await?
        }
    };
    if skipped > 0 {
        eprintln!("portwarden: the daemon skipped {skipped} frames: this side read too slowly");
    }
    let _ = std::io::stdout().flush();
    Ok(ExitCode::SUCCESS)
}

/// Captures here, with an inventory of its own.
async fn standalone(
    config: &Config,
    registry: &Registry,
    args: &CaptureArgs,
    options: portwarden_core::CaptureOptions,
    sinks: Vec<Arc<dyn PacketSink>>,
    done: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let engine = CaptureEngine::new(Arc::new(AfPacketSource), sinks, options);
    let mut interrupt = Interrupt::new()?;
    let stop = CancellationToken::new();
    let mut hook = None;
    let task = if args.host {
        eprintln!("portwarden: capturing the agent's own network namespace");
        let (engine, stop) = (engine.clone(), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = engine.run_own_namespace(stop).await {
                eprintln!("portwarden: capture failed: {}", portwarden_core::ErrorChain(&e));
            }
        })
    } else {
        let detection = registry.detect(&config.detect_options(registry)).await;
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
        let progress = Progress::stderr();
        progress.show("listing containers from every runtime");
        inventory.wait_synced().await;
        progress.clear();
        let selector = selector(&args.containers, args.pod.as_deref())?;
        let matching: Vec<String> =
            inventory.snapshot().iter().filter(|c| c.state.is_alive() && selector(c)).map(|c| c.name.clone()).collect();
        if matching.is_empty() {
            eprintln!("portwarden: no running container matches yet; waiting for one to start");
        } else {
            eprintln!("portwarden: capturing {}", matching.join(", "));
        }
        let engine = engine.clone().with_selector(selector);
        hook = crate::prestart::start(config, registry, &engine).0;
        let stop = stop.clone();
        tokio::spawn(async move { engine.run(&inventory, stop).await })
    };
    tokio::select! {
        () = interrupt.wait() => {}
        () = done.cancelled() => {}
    }
    if let Some(hook) = hook {
        tokio::task::spawn_blocking(move || hook.stop()).await?;
    }
    stop.cancel();
    task.await?;
    let _ = std::io::stdout().flush();
    Ok(ExitCode::SUCCESS)
}

/// Frames and bytes captured so far, over every capture.
#[derive(Default)]
struct Totals {
    packets: AtomicU64,
    bytes: AtomicU64,
}

/// Counts frames for the progress line.
#[derive(Default)]
struct Counted(Arc<Totals>);

impl PacketSink for Counted {
    fn open(&self, _group: &CaptureGroup) -> Box<dyn GroupSink> {
        Box::new(CountedGroup(Arc::clone(&self.0)))
    }
}

/// One capture's counting: into the shared totals.
struct CountedGroup(Arc<Totals>);

impl GroupSink for CountedGroup {
    fn batch(&mut self, _group: &CaptureGroup, batch: &PacketBatch<'_>) {
        self.0.packets.fetch_add(batch.packets.len() as u64, Ordering::Relaxed);
        self.0.bytes.fetch_add(batch.packets.iter().map(|m| u64::from(m.len)).sum(), Ordering::Relaxed);
    }
}

/// Rewrites the progress line twice a second until `done`.
async fn show_progress(progress: Progress, counted: Arc<Counted>, done: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = done.cancelled() => break,
        }
        let (p, b) = (counted.0.packets.load(Ordering::Relaxed), counted.0.bytes.load(Ordering::Relaxed));
        progress.show(&format!("{p} packets, {:.1} MiB captured", b as f64 / f64::from(1 << 20)));
    }
    progress.clear();
}

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
