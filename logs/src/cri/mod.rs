//! CRI log files (containerd's CRI plugin, CRI-O): the file at each
//! container's `log_path`, tailed through rotations.

mod identity;
mod parse;
mod tail;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use portwarden_core::hostpath::resolve_in_root;
use portwarden_core::{Container, Error, LogSender, LogSource, Result, ResumeLookup};
use tokio_util::sync::CancellationToken;

pub use identity::FileCursor;
pub use tail::{CriTail, TailOptions};

use portwarden_core::LogStats;

/// Reads containers' CRI log files, with paths taken inside the host root.
pub struct CriLogSource {
    host_root: PathBuf,
    options: TailOptions,
    stats: Arc<LogStats>,
}

impl CriLogSource {
    /// Log paths are resolved under `host_root` (`/` on the host itself).
    pub fn new(host_root: PathBuf, options: TailOptions, stats: Arc<LogStats>) -> Self {
        Self { host_root, options, stats }
    }
}

#[async_trait]
impl LogSource for CriLogSource {
    fn name(&self) -> &'static str {
        "cri"
    }

    fn accepts(&self, container: &Container) -> bool {
        container.log_path.is_some()
    }

    fn resume_key(&self, container: &Container) -> String {
        format!("cri/{}", container.id)
    }

    async fn follow(
        &self,
        container: Arc<Container>,
        resume: ResumeLookup,
        out: LogSender,
        cancel: CancellationToken,
    ) -> Result<()> {
        let Some(path) = container.log_path.as_ref() else {
            return Err(Error::NotFound { what: format!("log path of container {}", container.id) });
        };
        let live = match resolve_in_root(&self.host_root, path) {
            Ok(p) => p,
            // Not created yet (or the directory is a symlink we cannot
            // resolve): the tailer waits for the plain path.
            Err(_) => self.host_root.join(path.strip_prefix("/").unwrap_or(path)),
        };
        let key: Arc<str> = self.resume_key(&container).into();
        let saved: Option<FileCursor> = portwarden_core::saved_resume(&resume, &key);
        let tail = CriTail::new(live.clone(), key, container, self.options.clone(), Arc::clone(&self.stats));
        tail.run(saved, out, cancel).await.map_err(|e| Error::unavailable(live.display().to_string(), e))
    }
}
