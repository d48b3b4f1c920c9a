//! The run's state file: where `down`, `status` and `exec` find the running experiment.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

/// The run's state file, so `down`, `status` and `exec` find the running controller.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct RunFile {
    pub api: String,
    pub prefix: String,
    pub netns_dir: PathBuf,
    pub pid: u32,
    pub name: String,
}

impl RunFile {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("run.json")
    }

    pub fn load(state_dir: &Path) -> Result<Self> {
        let path = Self::path(state_dir);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no running experiment ({} not found): start one with `nextmini up <file>`",
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))
    }
}
