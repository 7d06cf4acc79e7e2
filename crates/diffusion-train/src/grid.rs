//! Sample grids as PNG: one row per class, images side by side, written atomically.

use anyhow::{ensure, Context, Result};
use candle_core::Tensor;
use std::path::Path;

/// Pixels between images.
const GAP: u32 = 2;

/// Writes `rows` of images (`[B, 1, H, W]` in [-1, 1], row-major: row r holds images
/// `r*cols .. (r+1)*cols`) as a grey-scale PNG, each pixel repeated `scale` times.
pub fn write_grid(path: &Path, images: &Tensor, cols: usize, scale: u32) -> Result<()> {
    let (n, c, h, w) = images.dims4().context("grid images must be [B, C, H, W]")?;
    ensure!(c == 1, "grid images must have one channel, got {c}");
    ensure!(
        cols > 0 && n % cols == 0,
        "{n} images do not fill rows of {cols}"
    );
    ensure!(scale > 0, "grid scale must be positive");
    let rows = n / cols;
    let v = images.flatten_all()?.to_vec1::<f32>()?;
    ensure!(
        v.iter().all(|x| x.is_finite()),
        "grid images contain NaN or infinity"
    );
    let (h32, w32) = (h as u32 * scale, w as u32 * scale);
    let width = cols as u32 * (w32 + GAP) + GAP;
    let height = rows as u32 * (h32 + GAP) + GAP;
    let mut img = image::GrayImage::from_pixel(width, height, image::Luma([128]));
    for k in 0..n {
        let (r, col) = ((k / cols) as u32, (k % cols) as u32);
        let (x0, y0) = (GAP + col * (w32 + GAP), GAP + r * (h32 + GAP));
        for y in 0..h32 {
            for x in 0..w32 {
                let p = v[k * h * w + (y / scale) as usize * w + (x / scale) as usize];
                let byte = ((p.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
                img.put_pixel(x0 + x, y0 + y, image::Luma([byte]));
            }
        }
    }
    let tmp = crate::checkpoint::tmp_path(path);
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot move grid to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn writes_a_png_of_the_right_size() {
        let dir = std::env::temp_dir().join(format!("ferrite-grid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("grid.png");
        let x = Tensor::arange(0f32, 6.0 * 4.0, &Device::Cpu)
            .unwrap()
            .affine(1.0 / 12.0, -1.0)
            .unwrap()
            .reshape((6, 1, 2, 2))
            .unwrap();
        write_grid(&path, &x, 3, 2).unwrap();
        let img = image::open(&path).unwrap().to_luma8();
        assert_eq!(img.dimensions(), (3 * 6 + 2, 2 * 6 + 2));
        assert_eq!(img.get_pixel(2, 2).0[0], 0); // first pixel of image 0 is -1
        assert_eq!(img.get_pixel(0, 0).0[0], 128); // gap
        assert!(write_grid(&path, &x, 4, 2).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
