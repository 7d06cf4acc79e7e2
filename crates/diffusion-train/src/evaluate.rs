//! Scores a set of class-conditional samples with the in-project classifier: the
//! classifier-feature FID against the test images (see [`crate::fid`]; *not* Inception FID)
//! and the fraction of samples the classifier assigns to the class they were drawn for.

use crate::classifier::{accuracy, Classifier, FEATURE_DIM};
use crate::fashion_mnist::Dataset;
use crate::fid::{frechet_distance, GaussianStats};
use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};

/// Feature statistics of the reference (test) images, computed once.
pub struct Reference {
    /// Gaussian fitted to the test features.
    pub stats: GaussianStats,
    /// Number of reference images.
    pub count: usize,
}

impl Reference {
    /// Features of every image of `test`.
    pub fn new(classifier: &Classifier, test: &Dataset) -> Result<Self> {
        let idx: Vec<usize> = (0..test.len()).collect();
        let (x, _) = test.batch(&idx, test.rows, &Device::Cpu)?;
        let (feats, _) = classifier.features_and_predictions(&x, 500)?;
        Ok(Self {
            stats: GaussianStats::fit(&feats, FEATURE_DIM)?,
            count: test.len(),
        })
    }
}

/// Scores of one set of samples.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SampleScores {
    /// Classifier-feature FID against the reference.
    pub classifier_fid: f64,
    /// Fraction of samples classified as their conditioning class.
    pub class_accuracy: f64,
    /// Number of samples scored.
    pub samples: usize,
}

/// Scores `images` (`[N, 1, H, W]` in [-1, 1], cropped to the data size) drawn for `labels`.
pub fn score_samples(
    classifier: &Classifier,
    reference: &Reference,
    images: &Tensor,
    labels: &[u32],
) -> Result<SampleScores> {
    let n = images.dim(0)?;
    ensure!(n == labels.len(), "{n} samples but {} labels", labels.len());
    let (feats, preds) = classifier.features_and_predictions(images, 500)?;
    let stats = GaussianStats::fit(&feats, FEATURE_DIM)?;
    Ok(SampleScores {
        classifier_fid: frechet_distance(&stats, &reference.stats)?,
        class_accuracy: accuracy(&preds, labels),
        samples: n,
    })
}

/// The FID floor at a sample size: scores `per_class` real *training* images of each class
/// (the first ones in file order) as if they were samples, so a row's FID can be read against
/// what `n` perfect samples would get (FID is biased upwards at small `n`).
pub fn real_image_baseline(
    classifier: &Classifier,
    reference: &Reference,
    train: &Dataset,
    per_class: usize,
) -> Result<SampleScores> {
    let mut idx = Vec::new();
    for c in 0..crate::fashion_mnist::NUM_CLASSES as u8 {
        let of_class = (0..train.len())
            .filter(|&i| train.labels[i] == c)
            .take(per_class);
        idx.extend(of_class);
    }
    ensure!(idx.len() >= 2, "too few training images for a baseline");
    let (x, y) = train.batch(&idx, train.rows, &Device::Cpu)?;
    score_samples(classifier, reference, &x, &y.to_vec1::<u32>()?)
}
