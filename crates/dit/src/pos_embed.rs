//! Fixed 2-D sine-cosine position embedding (paper §3.2 "Patchify": "we apply standard ViT
//! frequency-based positional embeddings (the sine-cosine version) to all input tokens"; the
//! reference code takes MAE's `get_2d_sincos_pos_embed`).
//!
//! For a `G x G` grid and width `D`, token `(row i, column j)` (index `i*G + j`) gets
//! `[E(j), E(i)]`, where `E(pos)` is the 1-D embedding of width `D/2`:
//! `E(pos)_k = sin(pos * w_k)`, `E(pos)_{D/4 + k} = cos(pos * w_k)`, `w_k = 10000^(-k / (D/4))`,
//! `k < D/4`. (MAE's meshgrid puts the column coordinate first, hence `E(j)` before `E(i)`.)

use candle_core::{Device, Result, Tensor};

/// The `[G*G, D]` table, computed in f64 as the reference's NumPy code and stored as f32.
pub fn sincos_2d(dim: usize, grid: usize, device: &Device) -> Result<Tensor> {
    if dim % 4 != 0 {
        candle_core::bail!("2-D sin-cos position embedding needs a width divisible by 4, got {dim}")
    }
    let quarter = dim / 4;
    let omega: Vec<f64> = (0..quarter)
        .map(|k| 1.0 / 10000f64.powf(k as f64 / quarter as f64))
        .collect();
    let mut table = Vec::with_capacity(grid * grid * dim);
    for i in 0..grid {
        for j in 0..grid {
            for pos in [j as f64, i as f64] {
                table.extend(omega.iter().map(|w| (pos * w).sin() as f32));
                table.extend(omega.iter().map(|w| (pos * w).cos() as f32));
            }
        }
    }
    Tensor::from_vec(table, (grid * grid, dim), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hand_formula() {
        let (d, g) = (8, 3);
        let t = sincos_2d(d, g, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // token (row 2, column 1) = index 7; w = [1, 1/100].
        let row = &t[7];
        let expect = [
            1f64.sin(),
            0.01f64.sin(),
            1f64.cos(),
            0.01f64.cos(),
            2f64.sin(),
            0.02f64.sin(),
            2f64.cos(),
            0.02f64.cos(),
        ];
        for (a, b) in row.iter().zip(expect) {
            assert!((*a as f64 - b).abs() < 1e-6, "{row:?}");
        }
        // token 0 is (0,0): sin 0 = 0, cos 0 = 1.
        assert_eq!(t[0], vec![0., 0., 1., 1., 0., 0., 1., 1.]);
        assert!(sincos_2d(6, 2, &Device::Cpu).is_err());
    }
}
