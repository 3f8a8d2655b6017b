//! Run records on disk: one JSON file per run under `<data_dir>/runs/`, written
//! atomically (temporary file, fsync, rename) so a crash never leaves a torn
//! record. Per-run logs live under `<data_dir>/logs/`. Records never hold the
//! request's secrets: only what [`RunRecord`] names.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::api::RunStatus;

/// What the runner keeps about a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    /// The public status.
    #[serde(flatten)]
    pub status: RunStatus,
    /// SSH user of the target.
    pub user: String,
    /// The request's idempotency key.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The run's work directory while it runs (removed by a restart if the
    /// runner died before removing it: it holds the key).
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
    /// The `ansible-playbook` process group while it runs (killed by a restart).
    #[serde(default)]
    pub pgid: Option<i32>,
}

/// The run directory and the log directory.
#[derive(Debug, Clone)]
pub struct RunStore {
    runs: PathBuf,
    logs: PathBuf,
}

fn private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

impl RunStore {
    /// Opens (creating) `<data_dir>/runs` and `<data_dir>/logs`.
    pub fn open(data_dir: &Path) -> std::io::Result<RunStore> {
        let store = RunStore {
            runs: data_dir.join("runs"),
            logs: data_dir.join("logs"),
        };
        private_dir(&store.runs)?;
        private_dir(&store.logs)?;
        Ok(store)
    }

    /// Writes a record atomically.
    pub fn save(&self, record: &RunRecord) -> std::io::Result<()> {
        let path = self.runs.join(format!("{}.json", record.status.id));
        let tmp = self.runs.join(format!(".{}.json.tmp", record.status.id));
        let body = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    /// Every readable record; unreadable files are reported and skipped.
    pub fn load_all(&self) -> std::io::Result<Vec<RunRecord>> {
        let mut records = Vec::new();
        for entry in std::fs::read_dir(&self.runs)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<RunRecord>(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(r) => records.push(r),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping unreadable run record")
                }
            }
        }
        Ok(records)
    }

    /// The log file of a run.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.logs.join(format!("{id}.log"))
    }
}
