//! Finished batches of a long sampling run kept on disk, so a killed run (10 000 guided DDPM
//! samples take hours on two cores) resumes where it stopped: batch `k` is written atomically
//! to `batch-k.safetensors` once sampled, and a rerun loads it instead of sampling it again.
//! Batch `k`'s noise comes from its own counter-based stream (`seeded::rng(seed, Sampling, k)`),
//! so a resumed run gives the samples an uninterrupted one would. The directory also holds the
//! run's key (checkpoint, step, sampler, seed, batch, labels): a rerun with other settings is
//! refused rather than mixed in.

use crate::checkpoint::write_atomic;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::cell::Cell;
use std::path::{Path, PathBuf};

const KEY_FILE: &str = "run.json";

/// A directory of finished sample batches for one run.
pub struct SampleShards {
    dir: PathBuf,
    loaded: Cell<usize>,
}

impl SampleShards {
    /// Opens (or starts) `dir` for the run described by `key`; an error when it holds another
    /// run's batches.
    pub fn open(dir: &Path, key: &serde_json::Value) -> Result<Self> {
        let key_path = dir.join(KEY_FILE);
        match std::fs::read(&key_path) {
            Ok(bytes) => {
                let stored: serde_json::Value = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} is not JSON", key_path.display()))?;
                if &stored != key {
                    bail!(
                        "{} holds samples of another run (other checkpoint, sampler, seed, batch or labels); use another directory",
                        dir.display()
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomic(&key_path, &serde_json::to_vec_pretty(key)?)?;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", key_path.display())),
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            loaded: Cell::new(0),
        })
    }

    fn path(&self, k: usize) -> PathBuf {
        self.dir.join(format!("batch-{k:06}.safetensors"))
    }

    /// Batch `k` if an earlier run finished it; it must have `images` images.
    pub fn load(&self, k: usize, images: usize) -> Result<Option<Tensor>> {
        let path = self.path(k);
        if !path.exists() {
            return Ok(None);
        }
        let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu)
            .with_context(|| format!("cannot read sample batch {}", path.display()))?;
        let x = tensors
            .remove("x")
            .with_context(|| format!("{} holds no `x`", path.display()))?;
        if x.dims().first() != Some(&images) {
            bail!(
                "{} holds {:?}, expected {images} images",
                path.display(),
                x.dims()
            );
        }
        self.loaded.set(self.loaded.get() + images);
        Ok(Some(x))
    }

    /// Keeps batch `k` (written atomically).
    pub fn save(&self, k: usize, x: &Tensor) -> Result<()> {
        let bytes = safetensors::serialize([("x", x)], None)?;
        write_atomic(&self.path(k), &bytes)
    }

    /// Images taken from earlier runs so far.
    pub fn loaded(&self) -> usize {
        self.loaded.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_another_run_is_refused() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("ferrite-shards-{}", std::process::id()));
        let key = serde_json::json!({"seed": 1, "labels": [0, 1]});
        let shards = SampleShards::open(&dir, &key)?;
        assert!(shards.load(0, 2)?.is_none());
        let x = Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu)?;
        shards.save(0, &x)?;
        let again = SampleShards::open(&dir, &key)?;
        let back = again.load(0, 2)?.expect("saved batch");
        assert_eq!(back.to_vec2::<f32>()?, x.to_vec2::<f32>()?);
        assert_eq!(again.loaded(), 2);
        assert!(again.load(0, 3).is_err(), "wrong image count");
        let other = serde_json::json!({"seed": 2, "labels": [0, 1]});
        let err = SampleShards::open(&dir, &other).err().expect("other run");
        assert!(err.to_string().contains("another run"), "{err}");
        std::fs::write(again.path(1), b"truncated")?;
        assert!(again.load(1, 2).is_err(), "a damaged batch is an error");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
