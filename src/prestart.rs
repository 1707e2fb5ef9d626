//! Pre-start attach wired to the capture engine: the hook's bundles are
//! named by the runtime adapters, its parked containers captured by the
//! engine.

use portwarden_core::{CaptureEngine, Container, EarlyAttach, EarlyOutcome, EarlyRequest, OciBundle, Registry};
use portwarden_prestart::{Attach, Hook, Outcome, Verdict};
use tracing::{info, warn};

use crate::config::Config;
use crate::metrics::Prestart;

/// The hook's view of the agent.
struct EngineAttach {
    registry: Registry,
    early: EarlyAttach,
}

impl Attach for EngineAttach {
    fn identify(&self, bundle: &OciBundle) -> Container {
        self.registry.identify(bundle)
    }

    fn attach(&self, container: Container, verdict: Verdict) {
        let done = Box::new(move |outcome: EarlyOutcome| {
            verdict.allow(match outcome {
                EarlyOutcome::Attached => Outcome::Attached,
                EarlyOutcome::Joined => Outcome::Joined,
                EarlyOutcome::Skipped(_) | EarlyOutcome::Failed(_) => Outcome::NotAttached,
            });
        });
        self.early.request(EarlyRequest { container, done });
    }
}

/// Starts the hook for `engine` when the config wants it; says why not
/// otherwise (the engine then attaches from runtime events alone).
pub(crate) fn start(config: &Config, registry: &Registry, engine: &CaptureEngine) -> (Option<Hook>, Prestart) {
    if !config.capture.prestart.enabled {
        info!("pre-start attach off (capture.prestart.enabled = false); containers are attached from runtime events");
        return (None, Prestart::Off("capture.prestart.enabled = false".into()));
    }
    let attach = EngineAttach { registry: registry.clone(), early: engine.early_attach() };
    match Hook::start(config.prestart_options(), std::sync::Arc::new(attach)) {
        Ok(hook) => {
            // Frames stamped from now on: a capture opened in a hurry hands
            // its first frames over by their stamps.
            portwarden_capture::keep_timestamps();
            let state = Prestart::On { marked: hook.marked().to_vec(), stats: hook.stats() };
            (Some(hook), state)
        }
        Err(off) => {
            warn!(reason = %off, "pre-start attach off; containers are attached from runtime events");
            (None, Prestart::Off(off.0))
        }
    }
}
