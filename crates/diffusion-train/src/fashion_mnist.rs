//! Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747) read from the IDX files that
//! Debian's `dataset-fashion-mnist` installs under `/usr/share/datasets/fashion-mnist`.
//!
//! IDX (LeCun's MNIST format): a big-endian magic `0x0000 TT DD` (TT = element type, 0x08 =
//! unsigned byte; DD = number of dimensions), then DD big-endian `u32` sizes, then the elements in
//! row-major order. The files are gzipped; plain (already inflated) files are accepted too.
//! Pixels are scaled to [-1, 1] as DDPM (Ho et al. 2020, §4) does with `x / 127.5 - 1`.

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where `apt-get install dataset-fashion-mnist` puts the files.
pub const DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The ten class names, in label order (defined once, beside the DiT text conditions).
pub use ferrite_dit::text_condition::FASHION_MNIST_CLASSES as CLASS_NAMES;

/// Number of classes.
pub const NUM_CLASSES: usize = 10;

/// Which half of the data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// 60 000 training images.
    Train,
    /// 10 000 test images.
    Test,
}

impl Split {
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// Images (u8, row-major `n × rows × cols`) with their labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Raw pixels, 0 = background.
    pub pixels: Vec<u8>,
    /// Class label per image, `0..10`.
    pub labels: Vec<u8>,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
}

/// An IDX array: its sizes and its unsigned-byte elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Size of each dimension.
    pub dims: Vec<usize>,
    /// Elements, row-major.
    pub data: Vec<u8>,
}

/// Parses an IDX array of unsigned bytes from (optionally gzipped) bytes.
pub fn parse_idx(bytes: &[u8]) -> Result<IdxArray> {
    let raw;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .context("gzip stream is truncated or corrupt")?;
        raw = out;
        &raw[..]
    } else {
        bytes
    };
    ensure!(
        bytes.len() >= 4,
        "not an IDX file: {} bytes, shorter than the 4-byte magic",
        bytes.len()
    );
    if bytes[0] != 0 || bytes[1] != 0 {
        bail!(
            "not an IDX file: magic starts {:02x} {:02x}, expected 00 00",
            bytes[0],
            bytes[1]
        );
    }
    if bytes[2] != 0x08 {
        bail!(
            "IDX element type 0x{:02x} is not unsigned byte (0x08)",
            bytes[2]
        );
    }
    let ndim = bytes[3] as usize;
    ensure!(ndim >= 1, "IDX file declares zero dimensions");
    let header = 4 + 4 * ndim;
    ensure!(
        bytes.len() >= header,
        "IDX header truncated: {} bytes, need {header} for {ndim} dimensions",
        bytes.len()
    );
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .context("IDX dimensions overflow")?;
    let body = &bytes[header..];
    if body.len() < count {
        bail!(
            "IDX data truncated: dims {dims:?} need {count} bytes, file has {}",
            body.len()
        );
    }
    if body.len() > count {
        bail!(
            "IDX data has {} trailing bytes after dims {dims:?}",
            body.len() - count
        );
    }
    Ok(IdxArray {
        dims,
        data: body.to_vec(),
    })
}

fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read {} (install it with `apt-get install dataset-fashion-mnist`)",
            path.display()
        )
    })?;
    parse_idx(&bytes).with_context(|| format!("reading {}", path.display()))
}

/// The two file paths of a split under `dir`.
pub fn split_paths(dir: &Path, split: Split) -> (PathBuf, PathBuf) {
    let p = split.prefix();
    (
        dir.join(format!("{p}-images-idx3-ubyte.gz")),
        dir.join(format!("{p}-labels-idx1-ubyte.gz")),
    )
}

impl Dataset {
    /// Loads one split from `dir` (the Debian layout: `train-images-idx3-ubyte.gz`, ...).
    pub fn load(dir: &Path, split: Split) -> Result<Self> {
        let (img_path, lbl_path) = split_paths(dir, split);
        let images = read_idx(&img_path)?;
        let labels = read_idx(&lbl_path)?;
        Self::from_idx(images, labels)
            .with_context(|| format!("{} with {}", img_path.display(), lbl_path.display()))
    }

    /// Pairs an `n × rows × cols` image array with an `n` label array.
    pub fn from_idx(images: IdxArray, labels: IdxArray) -> Result<Self> {
        ensure!(
            images.dims.len() == 3,
            "images must have 3 dimensions, got {:?}",
            images.dims
        );
        ensure!(
            labels.dims.len() == 1,
            "labels must have 1 dimension, got {:?}",
            labels.dims
        );
        ensure!(
            images.dims[0] == labels.dims[0],
            "{} images but {} labels",
            images.dims[0],
            labels.dims[0]
        );
        if let Some(bad) = labels.data.iter().find(|&&l| l as usize >= NUM_CLASSES) {
            bail!("label {bad} is outside 0..{NUM_CLASSES}");
        }
        Ok(Self {
            pixels: images.data,
            labels: labels.data,
            rows: images.dims[1],
            cols: images.dims[2],
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The first `n` images only (for quick runs).
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len());
        self.labels.truncate(n);
        self.pixels.truncate(n * self.rows * self.cols);
    }

    /// Images `indices` as a `[B, 1, size, size]` f32 tensor in [-1, 1], centred in a
    /// `size × size` canvas (padding is background, -1) when `size` exceeds the image, and
    /// their labels as a `[B]` u32 tensor.
    pub fn batch(&self, indices: &[usize], size: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
        ensure!(
            size >= self.rows && size >= self.cols,
            "model input {size} is smaller than the {}x{} images",
            self.rows,
            self.cols
        );
        let (top, left) = ((size - self.rows) / 2, (size - self.cols) / 2);
        let mut x = vec![-1f32; indices.len() * size * size];
        let mut y = Vec::with_capacity(indices.len());
        for (b, &i) in indices.iter().enumerate() {
            let src = &self.pixels[i * self.rows * self.cols..(i + 1) * self.rows * self.cols];
            for r in 0..self.rows {
                for c in 0..self.cols {
                    x[b * size * size + (r + top) * size + c + left] =
                        src[r * self.cols + c] as f32 / 127.5 - 1.0;
                }
            }
            y.push(self.labels[i] as u32);
        }
        Ok((
            Tensor::from_vec(x, (indices.len(), 1, size, size), dev)?,
            Tensor::from_vec(y, indices.len(), dev)?,
        ))
    }
}

/// Crops a `[B, 1, size, size]` batch back to the centred `rows × cols` image.
pub fn crop_center(x: &Tensor, rows: usize, cols: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    ensure!(
        h >= rows && w >= cols,
        "cannot crop {h}x{w} to {rows}x{cols}"
    );
    Ok(x.narrow(2, (h - rows) / 2, rows)?
        .narrow(3, (w - cols) / 2, cols)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn parses_plain_and_gzipped_idx() {
        let data: Vec<u8> = (0..24).collect();
        let raw = idx_bytes(&[2, 3, 4], &data);
        for bytes in [raw.clone(), gzip(&raw)] {
            let a = parse_idx(&bytes).unwrap();
            assert_eq!(a.dims, vec![2, 3, 4]);
            assert_eq!(a.data, data);
        }
    }

    #[test]
    fn rejects_truncated_and_wrong_files() {
        let raw = idx_bytes(&[2, 3, 4], &[7; 24]);
        let short = parse_idx(&raw[..raw.len() - 1]).unwrap_err().to_string();
        assert!(short.contains("truncated"), "{short}");
        let gz = gzip(&raw);
        let cut = parse_idx(&gz[..gz.len() / 2]).unwrap_err().to_string();
        assert!(cut.contains("gzip"), "{cut}");
        let header = parse_idx(&raw[..9]).unwrap_err().to_string();
        assert!(header.contains("header truncated"), "{header}");
        let mut wrong_type = raw.clone();
        wrong_type[2] = 0x0d;
        assert!(parse_idx(&wrong_type).is_err());
        assert!(parse_idx(b"PNG\x89 not idx").is_err());
        let mut trailing = raw;
        trailing.push(0);
        assert!(parse_idx(&trailing).is_err());
    }

    #[test]
    fn pairs_images_with_labels_and_scales_to_unit_range() {
        let images = parse_idx(&idx_bytes(&[2, 2, 2], &[0, 255, 0, 255, 51, 51, 51, 51])).unwrap();
        let labels = parse_idx(&idx_bytes(&[2], &[3, 9])).unwrap();
        let ds = Dataset::from_idx(images.clone(), labels).unwrap();
        let (x, y) = ds.batch(&[1, 0], 4, &Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[2, 1, 4, 4]);
        assert_eq!(y.to_vec1::<u32>().unwrap(), vec![9, 3]);
        let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v[0], -1.0); // padding
        assert!((v[5] - (51.0 / 127.5 - 1.0)).abs() < 1e-6);
        assert_eq!(v[16 + 6], 1.0); // image 0, row 0, col 1 -> canvas (1, 2)
        let crop = crop_center(&x, 2, 2).unwrap();
        assert_eq!(crop.dims(), &[2, 1, 2, 2]);
        let bad_labels = parse_idx(&idx_bytes(&[2], &[3, 10])).unwrap();
        assert!(Dataset::from_idx(images, bad_labels).is_err());
    }
}
