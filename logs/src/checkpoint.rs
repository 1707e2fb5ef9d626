//! Resume points in the state directory, written atomically (a temporary
//! file renamed over the old one), with each file output's length so a
//! crash between a write and the next checkpoint cannot duplicate records.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::output::FileMark;
use portwarden_core::LogStats;

const FILE_NAME: &str = "log-checkpoints.json";
const VERSION: u32 = 1;

/// What a checkpoint holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The format version.
    pub version: u32,
    /// Every source's resume point, by key.
    pub positions: BTreeMap<String, String>,
    /// Each file output's identity and length, by output name.
    pub outputs: BTreeMap<String, FileMark>,
}

/// Where checkpoints are kept; without a state directory nothing is kept
/// and every start is a fresh one.
pub struct CheckpointStore {
    path: Option<PathBuf>,
}

impl CheckpointStore {
    /// Keeps checkpoints under `state_dir`, creating it.
    pub fn new(state_dir: Option<&Path>) -> crate::Result<Self> {
        if let Some(dir) = state_dir {
            std::fs::create_dir_all(dir)
                .map_err(|source| crate::Error::StateDir { path: dir.to_path_buf(), source })?;
        }
        Ok(Self { path: state_dir.map(|d| d.join(FILE_NAME)) })
    }

    /// The last checkpoint. A corrupt one is set aside (renamed with a
    /// `.corrupt` suffix) with a warning, and the start is a fresh one.
    pub fn load(&self, stats: &Arc<LogStats>) -> Checkpoint {
        let Some(path) = &self.path else { return Checkpoint::default() };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Checkpoint::default(),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read log checkpoints; starting fresh");
                return Checkpoint::default();
            }
        };
        match serde_json::from_slice::<Checkpoint>(&bytes) {
            Ok(c) if c.version == VERSION => {
                info!(path = %path.display(), positions = c.positions.len(), "log checkpoints loaded");
                c
            }
            parsed => {
                let reason = match parsed {
                    Ok(c) => format!("unknown version {}", c.version),
                    Err(e) => e.to_string(),
                };
                let aside = path.with_extension("json.corrupt");
                let _ = std::fs::rename(path, &aside);
                stats.corrupt_checkpoints.fetch_add(1, Ordering::Relaxed);
                warn!(path = %path.display(), set_aside = %aside.display(), %reason,
                    "log checkpoints are corrupt; starting fresh");
                Checkpoint::default()
            }
        }
    }

    /// Replaces the checkpoint atomically.
    pub fn save(&self, checkpoint: &Checkpoint) -> io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let tmp = path.with_extension("json.tmp");
        let mut c = checkpoint.clone();
        c.version = VERSION;
        std::fs::write(&tmp, serde_json::to_vec(&c).map_err(io::Error::other)?)?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(LogStats::default());
        let store = CheckpointStore::new(Some(dir.path())).unwrap();
        assert_eq!(store.load(&stats), Checkpoint::default());
        let mut c = Checkpoint::default();
        c.positions.insert("cri/x".into(), "{\"offset\":3}".into());
        store.save(&c).unwrap();
        assert_eq!(store.load(&stats).positions, c.positions);
        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        assert_eq!(store.load(&stats), Checkpoint::default());
        assert_eq!(stats.corrupt_checkpoints.load(Ordering::Relaxed), 1);
        assert!(dir.path().join("log-checkpoints.json.corrupt").exists());
    }
}
