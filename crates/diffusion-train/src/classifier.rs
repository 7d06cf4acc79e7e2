//! The evaluation classifier: a small CNN trained here on Fashion-MNIST, whose penultimate
//! features give the classifier-feature FID and whose predictions give the class accuracy of
//! class-conditional samples (the role Inception-v3 plays for ImageNet FID and Inception Score,
//! Heusel et al. 2017 / Salimans et al. 2016).
//!
//! conv 3×3 (1→16) · ReLU · max-pool 2 → conv 3×3 (16→32) · ReLU · max-pool 2 → linear
//! 1568→128 · ReLU (the features) → linear 128→10.

use crate::adamw::{AdamW, AdamWParams};
use crate::checkpoint::Checkpoint;
use crate::fashion_mnist::{Dataset, NUM_CLASSES};
use crate::seeded::{permutation, rng, Stream};
use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder, VarMap};
use ferrite_dit::init::{seeded_var_builder, xavier_uniform};
use std::collections::HashMap;
use std::path::Path;

/// Width of the penultimate features.
pub const FEATURE_DIM: usize = 128;

/// The CNN.
pub struct Classifier {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
}

fn conv(vb: &VarBuilder, cin: usize, cout: usize, name: &str) -> Result<Conv2d> {
    let vb = vb.pp(name);
    let w = vb.get_with_hints(
        (cout, cin, 3, 3),
        "weight",
        xavier_uniform(cin * 9, cout * 9),
    )?;
    let b = vb.get_with_hints(cout, "bias", candle_nn::Init::Const(0.0))?;
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    Ok(Conv2d::new(w, Some(b), cfg))
}

fn linear(vb: &VarBuilder, fin: usize, fout: usize, name: &str) -> Result<Linear> {
    let vb = vb.pp(name);
    let w = vb.get_with_hints((fout, fin), "weight", xavier_uniform(fin, fout))?;
    let b = vb.get_with_hints(fout, "bias", candle_nn::Init::Const(0.0))?;
    Ok(Linear::new(w, Some(b)))
}

impl Classifier {
    /// Builds (or loads, when `vb` holds the tensors) the CNN for `side × side` images.
    pub fn new(vb: &VarBuilder, side: usize) -> Result<Self> {
        ensure!(
            side % 4 == 0,
            "classifier input side {side} is not a multiple of 4"
        );
        Ok(Self {
            conv1: conv(vb, 1, 16, "conv1")?,
            conv2: conv(vb, 16, 32, "conv2")?,
            fc1: linear(vb, 32 * (side / 4) * (side / 4), FEATURE_DIM, "fc1")?,
            fc2: linear(vb, FEATURE_DIM, NUM_CLASSES, "fc2")?,
        })
    }

    /// Penultimate features `[B, 128]` of images `[B, 1, H, W]` in [-1, 1].
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(x)?.relu()?.max_pool2d(2)?;
        let h = self.conv2.forward(&h)?.relu()?.max_pool2d(2)?;
        Ok(self.fc1.forward(&h.flatten_from(1)?)?.relu()?)
    }

    /// Class logits `[B, 10]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.fc2.forward(&self.features(x)?)?)
    }

    /// Features and predicted labels of many images, in batches of `batch`.
    pub fn features_and_predictions(
        &self,
        x: &Tensor,
        batch: usize,
    ) -> Result<(Vec<f32>, Vec<u32>)> {
        let n = x.dim(0)?;
        let (mut feats, mut preds) = (Vec::new(), Vec::new());
        for start in (0..n).step_by(batch.max(1)) {
            let xb = x.narrow(0, start, batch.min(n - start))?;
            let f = self.features(&xb)?;
            let logits = self.fc2.forward(&f)?;
            feats.extend(f.flatten_all()?.to_vec1::<f32>()?);
            preds.extend(logits.argmax(1)?.to_vec1::<u32>()?);
        }
        Ok((feats, preds))
    }
}

/// A trained classifier with its measured test accuracy.
pub struct TrainedClassifier {
    /// The network.
    pub model: Classifier,
    /// Accuracy on the 10k test images.
    pub test_accuracy: f64,
    /// Epochs it was trained for.
    pub epochs: usize,
}

/// Fraction of `preds` equal to `labels`.
pub fn accuracy(preds: &[u32], labels: &[u32]) -> f64 {
    let hits = preds.iter().zip(labels).filter(|(p, l)| p == l).count();
    hits as f64 / labels.len().max(1) as f64
}

/// Trains the CNN (AdamW lr 1e-3, batch 128, seeded data order), then measures test accuracy.
pub fn train_classifier(
    train: &Dataset,
    test: &Dataset,
    epochs: usize,
    seed: u64,
    progress: &indicatif::ProgressBar,
) -> Result<TrainedClassifier> {
    let dev = Device::Cpu;
    let side = train.rows;
    let map = VarMap::new();
    let vb = seeded_var_builder(&map, seed, DType::F32, &dev);
    let model = Classifier::new(&vb, side)?;
    let named = map
        .data()
        .lock()
        .expect("var map")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut opt = AdamW::new(
        named,
        AdamWParams {
            lr: 1e-3,
            ..Default::default()
        },
    )?;
    let batch = 128;
    let per_epoch = train.len() / batch;
    progress.set_length((epochs * per_epoch) as u64);
    for epoch in 0..epochs {
        let order = permutation(&mut rng(seed, Stream::DataOrder, epoch as u64), train.len());
        for b in 0..per_epoch {
            let (x, y) = train.batch(&order[b * batch..(b + 1) * batch], side, &dev)?;
            let loss = candle_nn::loss::cross_entropy(&model.forward(&x)?, &y)?;
            opt.step(&loss.backward()?)?;
            progress.inc(1);
            if b % 50 == 0 {
                progress.set_message(format!(
                    "classifier epoch {} loss {:.3}",
                    epoch + 1,
                    loss.to_scalar::<f32>()?
                ));
            }
        }
    }
    let test_accuracy = test_accuracy(&model, test)?;
    Ok(TrainedClassifier {
        model,
        test_accuracy,
        epochs,
    })
}

/// Accuracy of `model` on every image of `test`.
pub fn test_accuracy(model: &Classifier, test: &Dataset) -> Result<f64> {
    let idx: Vec<usize> = (0..test.len()).collect();
    let (x, y) = test.batch(&idx, test.rows, &Device::Cpu)?;
    let (_, preds) = model.features_and_predictions(&x, 500)?;
    Ok(accuracy(&preds, &y.to_vec1::<u32>()?))
}

impl TrainedClassifier {
    /// Saves weights and accuracy (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        Checkpoint {
            groups: HashMap::from([("classifier".to_string(), classifier_tensors(&self.model))]),
            state: serde_json::json!({"test_accuracy": self.test_accuracy, "epochs": self.epochs}),
        }
        .save(path)
    }
}

/// The classifier's tensors by name.
pub fn classifier_tensors(model: &Classifier) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    for (name, conv) in [("conv1", &model.conv1), ("conv2", &model.conv2)] {
        out.insert(format!("{name}.weight"), conv.weight().clone());
        out.insert(format!("{name}.bias"), conv.bias().expect("bias").clone());
    }
    for (name, lin) in [("fc1", &model.fc1), ("fc2", &model.fc2)] {
        out.insert(format!("{name}.weight"), lin.weight().clone());
        out.insert(format!("{name}.bias"), lin.bias().expect("bias").clone());
    }
    out
}

/// Loads a classifier saved by [`TrainedClassifier::save`].
pub fn load_classifier(path: &Path, side: usize) -> Result<TrainedClassifier> {
    let ck = Checkpoint::load(path)?;
    let tensors = ck.group("classifier")?.clone();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let model =
        Classifier::new(&vb, side).with_context(|| format!("classifier {}", path.display()))?;
    let test_accuracy = ck.state["test_accuracy"]
        .as_f64()
        .context("classifier lacks test_accuracy")?;
    let epochs = ck.state["epochs"].as_u64().unwrap_or(0) as usize;
    Ok(TrainedClassifier {
        model,
        test_accuracy,
        epochs,
    })
}
