//! The `portwarden.v1.Agent` service over the running agent's parts.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use portwarden_capture::AfPacketSource;
use portwarden_core::{Cap, InventoryEvent, LogOrigin};
use portwarden_nids::ReloadOutcome;
use portwarden_proto::v1::{self, agent_server::Agent};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::packets::PacketStreams;
use super::records::{self, Filter, Kind, LISTENERS};
use super::streams::{self, STREAM_QUEUE, Served};
use crate::config::Config;
use crate::metrics::Telemetry;
use crate::mode::CapturePlan;

/// How long `ReloadRules` waits for Suricata's answer.
const RELOAD_WAIT: Duration = Duration::from_secs(60);

/// The API over the agent. Clones share everything.
#[derive(Clone)]
pub(crate) struct AgentService {
    inventory: portwarden_core::Inventory,
    telemetry: Arc<Telemetry>,
    packets: PacketStreams,
    /// The host name records carry when their sender gave none.
    host: String,
    /// The agent's: every stream ends when it fires.
    cancel: CancellationToken,
}

impl AgentService {
    pub(crate) fn new(
        config: &Config,
        inventory: portwarden_core::Inventory,
        telemetry: Arc<Telemetry>,
        cancel: CancellationToken,
    ) -> Self {
        let packets = PacketStreams::new(Arc::new(AfPacketSource), config.capture.options(), inventory.clone());
        Self { inventory, telemetry, packets, host: config.logs.host(), cancel }
    }

    fn plan(&self) -> CapturePlan {
        self.telemetry.facts.plan
    }
}

fn selector(s: Option<v1::Selector>) -> Result<(v1::Selector, portwarden_core::Selector), Status> {
    let s = s.unwrap_or_default();
    let m = s.matcher().map_err(|e| Status::invalid_argument(format!("selector: {e}")))?;
    Ok((s, m))
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn status(&self, _request: Request<v1::StatusRequest>) -> Result<Response<v1::StatusReply>, Status> {
        let t = &self.telemetry;
        let mut reply = v1::StatusReply {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            containers: self.inventory.snapshot().len() as u64,
            inventory_synced: self.inventory.is_synced(),
            counters: t.counters('.').into_iter().collect(),
            api_streams: u32::try_from(t.api_streams.load(Ordering::Relaxed)).unwrap_or(u32::MAX),
            ..Default::default()
        };
        {
            let f = &t.facts;
            reply.mode = f.mode.as_str().to_owned();
            reply.capture = f.plan.as_str().to_owned();
            reply.reason.clone_from(&f.reason);
            reply.uptime_seconds = f.started.elapsed().as_secs();
            reply.runtimes = f
                .runtimes
                .iter()
                .map(|r| v1::Runtime {
                    kind: r.kind.as_str().to_owned(),
                    socket: r.socket.display().to_string(),
                    name: r.name.clone(),
                    version: r.version.clone(),
                })
                .collect();
            reply.capabilities = Cap::ALL
                .into_iter()
                .map(|c| v1::Capability {
                    name: c.name().to_owned(),
                    effective: f.capabilities.has(c),
                    switches_off: if f.capabilities.has(c) { String::new() } else { c.switches_off().to_owned() },
                })
                .collect();
        }
        if let Some(engine) = &t.engine {
            reply.captures = engine
                .live()
                .iter()
                .map(|c| {
                    let s = c.counters.snapshot();
                    v1::CaptureStatus {
                        label: c.label(),
                        container_id: c.container().map(|id| id.as_str().to_owned()).unwrap_or_default(),
                        packets: s.packets,
                        bytes: s.bytes,
                        kernel_drops: s.kernel_drops,
                    }
                })
                .collect();
        }
        if let Some(nids) = t.nids_status() {
            reply.rule_sources = nids
                .rule_sources
                .into_iter()
                .map(|s| v1::RuleSource {
                    path: s.path.display().to_string(),
                    builtin: s.builtin,
                    rules: s.rules,
                    rejected: s.rejected,
                })
                .collect();
        }
        reply.health = t.health().http().1.trim_end().to_owned();
        if let Some(p) = &t.prestart {
            reply.prestart = p.state();
            if let crate::metrics::Prestart::On { marked, .. } = p {
                reply.prestart_marked = marked.iter().map(|m| m.display().to_string()).collect();
            }
        }
        if let Some(q) = t.records.as_ref().map(|r| &r.queues) {
            reply.counters.insert("logs.queue.intake".into(), q.intake() as u64);
            for (name, n) in q.outputs() {
                reply.counters.insert(format!("logs.queue.output.{name}"), n as u64);
            }
        }
        Ok(Response::new(reply))
    }

    async fn list_containers(
        &self,
        request: Request<v1::ListContainersRequest>,
    ) -> Result<Response<v1::ListContainersReply>, Status> {
        let request = request.into_inner();
        let (_, matcher) = selector(request.selector)?;
        let containers = self
            .inventory
            .snapshot()
            .iter()
            .filter(|c| (request.all || c.state.is_alive()) && matcher(c))
            .map(Into::into)
            .collect();
        Ok(Response::new(v1::ListContainersReply { containers }))
    }

    type WatchContainersStream = Served<v1::ContainerEvent>;

    async fn watch_containers(
        &self,
        request: Request<v1::WatchContainersRequest>,
    ) -> Result<Response<Self::WatchContainersStream>, Status> {
        use v1::container_event::Kind as K;
        let request = request.into_inner();
        let (_, matcher) = selector(request.selector)?;
        let (tx, stop, served) = streams::open(&self.telemetry, &self.cancel, STREAM_QUEUE);
        // Listed and subscribed at once: no change falls between them, and
        // none is replayed after the list.
        let (now, mut changes) = self.inventory.list_and_subscribe();
        let existing = request.existing.then_some(now);
        tokio::spawn(async move {
            let event = |kind: K, c: Option<&portwarden_core::Container>, missed: u64| v1::ContainerEvent {
                kind: kind as i32,
                container: c.map(Into::into),
                missed,
            };
            if let Some(existing) = existing {
                for c in existing.iter().filter(|c| matcher(c)) {
                    if tx.send(Ok(event(K::Existing, Some(c), 0))).await.is_err() {
                        return;
                    }
                }
                if tx.send(Ok(event(K::Synced, None, 0))).await.is_err() {
                    return;
                }
            }
            let mut missed = 0;
            loop {
                let change = tokio::select! {
                    () = stop.cancelled() => return,
                    got = changes.recv() => match got {
                        Ok(InventoryEvent::Container(change)) => change,
                        Ok(_) => continue,
                        Err(RecvError::Lagged(n)) => {
                            missed += n;
                            continue;
                        }
                        Err(RecvError::Closed) => return,
                    },
                };
                let c = change.container();
                if !matcher(c) {
                    continue;
                }
                let kind = if change.started() {
                    K::Started
                } else if change.stopped() {
                    K::Stopped
                } else if change.after.is_none() {
                    K::Removed
                } else {
                    K::Updated
                };
                let sent = tokio::select! {
                    () = stop.cancelled() => return,
                    sent = tx.send(Ok(event(kind, Some(c), std::mem::take(&mut missed)))) => sent,
                };
                if sent.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(served))
    }

    type StreamLogsStream = Served<v1::LogRecord>;

    async fn stream_logs(
        &self,
        request: Request<v1::StreamLogsRequest>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
        let request = request.into_inner();
        let (wanted, matcher) = selector(request.selector)?;
        let Some(records) = &self.telemetry.records else {
            return Err(Status::failed_precondition("log collection is off on this agent"));
        };
        let known: Vec<&'static str> = records.sources.iter().copied().chain(LISTENERS).collect();
        let mut sources = Vec::new();
        for name in &request.sources {
            let origin = known.iter().find(|o| *o == name).ok_or_else(|| {
                Status::invalid_argument(format!("unknown log source `{name}` (this agent has: {})", known.join(", ")))
            })?;
            sources.push(*origin);
        }
        let tap = &records.tap;
        let filter = Filter { selector: matcher, everything: wanted.is_everything(), sources, all_events: false };
        let (tx, stop, served) = streams::open(&self.telemetry, &self.cancel, STREAM_QUEUE);
        tokio::spawn(records::relay(Kind::Logs, tap.subscribe(), filter, self.host.clone(), tx, stop));
        Ok(Response::new(served))
    }

    type StreamPacketsStream = Served<v1::PacketEvent>;

    async fn stream_packets(
        &self,
        request: Request<v1::StreamPacketsRequest>,
    ) -> Result<Response<Self::StreamPacketsStream>, Status> {
        let served = self.packets.start(request.into_inner(), self.plan(), &self.telemetry, &self.cancel)?;
        Ok(Response::new(served))
    }

    type StreamAlertsStream = Served<v1::Alert>;

    async fn stream_alerts(
        &self,
        request: Request<v1::StreamAlertsRequest>,
    ) -> Result<Response<Self::StreamAlertsStream>, Status> {
        let request = request.into_inner();
        let (wanted, matcher) = selector(request.selector)?;
        if self.telemetry.nids.is_none() {
            return Err(Status::failed_precondition(
                "intrusion detection is off on this agent (`portwarden status` says why on its health line)",
            ));
        }
        let Some(tap) = self.telemetry.records.as_ref().map(|r| &r.tap) else {
            return Err(Status::unavailable("the record pipeline is not running"));
        };
        let filter = Filter {
            selector: matcher,
            everything: wanted.is_everything(),
            sources: vec![LogOrigin::Suricata.as_str()],
            all_events: request.all_events,
        };
        let (tx, stop, served) = streams::open(&self.telemetry, &self.cancel, STREAM_QUEUE);
        tokio::spawn(records::relay(Kind::Alerts, tap.subscribe(), filter, self.host.clone(), tx, stop));
        Ok(Response::new(served))
    }

    async fn reload_rules(
        &self,
        _request: Request<v1::ReloadRulesRequest>,
    ) -> Result<Response<v1::ReloadRulesReply>, Status> {
        let Some(reloader) = self.telemetry.nids.as_ref().map(|n| &n.reload) else {
            return Err(Status::failed_precondition("intrusion detection is off on this agent"));
        };
        let reply = match reloader.reload(RELOAD_WAIT).await {
            ReloadOutcome::Loaded { loaded, failed } => {
                v1::ReloadRulesReply { completed: true, rules_loaded: loaded, rules_failed: failed }
            }
            ReloadOutcome::NoAnswer => v1::ReloadRulesReply::default(),
            ReloadOutcome::NotManaged => {
                return Err(Status::failed_precondition("Suricata is external here: reload it yourself"));
            }
        };
        Ok(Response::new(reply))
    }
}
