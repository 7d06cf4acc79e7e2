//! Checkpoints: one safetensors file holding every tensor group (model, EMA, optimizer moments)
//! under a prefix, plus the JSON training state (step, seed, configuration, loss log) in the
//! header's metadata. Written atomically: to a temporary file in the same directory, flushed
//! to disk, then renamed over the old checkpoint, so a run killed at any moment leaves either
//! the previous checkpoint or the new one, never a torn file.

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Metadata key of the JSON state.
const STATE_KEY: &str = "ferrite.state";

/// A hidden temporary path next to `path`, keeping its extension (plotters picks the image
/// format from it).
pub fn tmp_path(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    dir.join(format!(".{name}.{}.tmp{ext}", std::process::id()))
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = tmp_path(path);
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} into place", path.display()))
}

/// Tensor groups by prefix (`"model"`, `"ema"`, `"opt"`) plus the JSON state.
pub struct Checkpoint {
    /// `prefix -> (name -> tensor)`.
    pub groups: HashMap<String, HashMap<String, Tensor>>,
    /// The training state as JSON.
    pub state: serde_json::Value,
}

impl Checkpoint {
    /// Serialises and writes the checkpoint atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, &Tensor)> = Vec::new();
        for (prefix, tensors) in &self.groups {
            for (name, t) in tensors {
                named.push((format!("{prefix}/{name}"), t));
            }
        }
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let meta = HashMap::from([(STATE_KEY.to_string(), serde_json::to_string(&self.state)?)]);
        let bytes = safetensors::serialize(named.iter().map(|(n, t)| (n.as_str(), *t)), Some(meta))
            .context("cannot serialise checkpoint")?;
        write_atomic(path, &bytes)
    }

    /// Reads a checkpoint written by [`Checkpoint::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
        Self::from_bytes(&bytes).with_context(|| format!("checkpoint {}", path.display()))
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| anyhow::anyhow!("not a safetensors file: {e}"))?;
        let Some(state) = meta.metadata().as_ref().and_then(|m| m.get(STATE_KEY)) else {
            bail!("not a ferrite training checkpoint (no {STATE_KEY} metadata)");
        };
        let state: serde_json::Value =
            serde_json::from_str(state).context("training state is not valid JSON")?;
        let mut groups: HashMap<String, HashMap<String, Tensor>> = HashMap::new();
        for (name, t) in candle_core::safetensors::load_buffer(bytes, &Device::Cpu)? {
            let Some((prefix, rest)) = name.split_once('/') else {
                bail!("tensor {name} has no group prefix");
            };
            groups
                .entry(prefix.to_string())
                .or_default()
                .insert(rest.to_string(), t);
        }
        Ok(Self { groups, state })
    }

    /// One tensor group, or an error naming it.
    pub fn group(&self, prefix: &str) -> Result<&HashMap<String, Tensor>> {
        self.groups
            .get(prefix)
            .with_context(|| format!("checkpoint has no `{prefix}` tensors"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_tensors_and_state_and_rejects_torn_files() {
        let dir = std::env::temp_dir().join(format!("ferrite-ckpt-{}", std::process::id()));
        let path = dir.join("c.safetensors");
        let t = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
        let ck = Checkpoint {
            groups: HashMap::from([
                (
                    "model".into(),
                    HashMap::from([("a.weight".into(), t.clone())]),
                ),
                (
                    "opt".into(),
                    HashMap::from([("m.a.weight".into(), (&t * 2.0).unwrap())]),
                ),
            ]),
            state: serde_json::json!({"step": 7, "losses": [0.5, 0.25]}),
        };
        ck.save(&path).unwrap();
        let back = Checkpoint::load(&path).unwrap();
        assert_eq!(back.state, ck.state);
        let m = back.group("opt").unwrap()["m.a.weight"]
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(m, vec![vec![2.0, 4.0], vec![6.0, 8.0]]);
        assert!(back.group("ema").is_err());
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(Checkpoint::load(&path).is_err());
        assert!(
            std::fs::read_dir(&dir).unwrap().count() == 1,
            "no temporary left behind"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
