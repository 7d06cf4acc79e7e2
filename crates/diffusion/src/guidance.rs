//! Classifier-free guidance (Ho & Salimans 2022, eq. 6, in the `eps` form used by GLIDE and DiT):
//! `eps_guided = eps_uncond + s (eps_cond - eps_uncond)`; `s = 1` is the conditional model.
//!
//! [`guide_doubled_batch`] follows the original DiT (Peebles & Xie 2023, `forward_with_cfg`): the
//! batch is `[conditional; unconditional]` over the same `x_t`, only the first `guided_channels`
//! output channels (the `eps` channels) are guided and written to both halves, and the remaining
//! channels (the learned variance) keep each half's own values — so the conditional half samples
//! with the conditional variance. The DiT reference guides only the first **3** of the 4 latent
//! `eps` channels "for exact reproducibility" ([`DIT_REFERENCE_GUIDED_CHANNELS`]); the standard
//! approach, and diffusers' `DiTPipeline`, guides all `C` `eps` channels (diffusers then also drops
//! the learned variance and samples with its scheduler's fixed variance).

use candle_core::{bail, Result, Tensor};

/// The number of channels the DiT reference guides by default.
pub const DIT_REFERENCE_GUIDED_CHANNELS: usize = 3;

/// `uncond + scale * (cond - uncond)`.
pub fn classifier_free_guidance(cond: &Tensor, uncond: &Tensor, scale: f64) -> Result<Tensor> {
    uncond.add(&cond.sub(uncond)?.affine(scale, 0.0)?)
}

/// DiT's guidance on a doubled batch `[2B, C_out, ...]` (first `B` conditional, last `B`
/// unconditional): channels `0..guided_channels` become the guided value in both halves, the
/// rest are unchanged. Returns `[2B, C_out, ...]`, ready for [`crate::Scheduler::step`] on the
/// doubled sample.
pub fn guide_doubled_batch(
    model_output: &Tensor,
    guided_channels: usize,
    scale: f64,
) -> Result<Tensor> {
    let dims = model_output.dims();
    if dims.len() < 2 || dims[0] % 2 != 0 || guided_channels == 0 || guided_channels > dims[1] {
        bail!(
            "diffusion: guidance needs [2B, C, ...] with 1..=C guided channels, got {dims:?} and {guided_channels}"
        )
    }
    let half = dims[0] / 2;
    let eps = model_output.narrow(1, 0, guided_channels)?;
    let guided =
        classifier_free_guidance(&eps.narrow(0, 0, half)?, &eps.narrow(0, half, half)?, scale)?;
    let guided = Tensor::cat(&[&guided, &guided], 0)?;
    if guided_channels == dims[1] {
        return Ok(guided);
    }
    let rest = model_output.narrow(1, guided_channels, dims[1] - guided_channels)?;
    Tensor::cat(&[&guided, &rest], 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::max_abs_diff;
    use candle_core::Device;

    #[test]
    fn guidance_interpolates_and_extrapolates() {
        let dev = Device::Cpu;
        let c = Tensor::new(&[1.0f64, 2.0], &dev).unwrap();
        let u = Tensor::new(&[0.0f64, 4.0], &dev).unwrap();
        assert_eq!(
            max_abs_diff(&classifier_free_guidance(&c, &u, 1.0).unwrap(), &c),
            0.0
        );
        assert_eq!(
            max_abs_diff(&classifier_free_guidance(&c, &u, 0.0).unwrap(), &u),
            0.0
        );
        let g: Vec<f64> = classifier_free_guidance(&c, &u, 4.0)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(g, [4.0, -4.0]);
    }

    #[test]
    fn doubled_batch_guides_only_the_first_channels() {
        // [2B = 2, C_out = 5, 1]: cond = 10 + c, uncond = c.
        let dev = Device::Cpu;
        let cond: Vec<f64> = (0..5).map(|c| 10.0 + c as f64).collect();
        let uncond: Vec<f64> = (0..5).map(|c| c as f64).collect();
        let out =
            Tensor::from_vec([cond.clone(), uncond.clone()].concat(), (2, 5, 1), &dev).unwrap();
        let g = guide_doubled_batch(&out, DIT_REFERENCE_GUIDED_CHANNELS, 1.5).unwrap();
        let g: Vec<Vec<f64>> = g.squeeze(2).unwrap().to_vec2().unwrap();
        for half in &g {
            for (c, value) in half.iter().take(3).enumerate() {
                assert_eq!(*value, c as f64 + 1.5 * 10.0);
            }
        }
        // Channels 3.. keep each half's own values (DiT's `rest`).
        assert_eq!(&g[0][3..], &cond[3..]);
        assert_eq!(&g[1][3..], &uncond[3..]);
        let all = guide_doubled_batch(&out, 5, 1.5)
            .unwrap()
            .squeeze(2)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        assert_eq!(all[0][4], 4.0 + 15.0);
        assert!(guide_doubled_batch(&out, 6, 1.5).is_err());
        assert!(guide_doubled_batch(&out.narrow(0, 0, 1).unwrap(), 3, 1.5).is_err());
    }
}
