//! What the denoiser predicts, and the conversions between the three parameterisations of
//! `x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps` (DDPM eq. 4):
//!
//! * `Epsilon`: the noise (DDPM eq. 11-12): `x_0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)`
//!   (DDPM eq. 15 / improved-diffusion `_predict_xstart_from_eps`).
//! * `Sample`: `x_0` itself; `eps = (x_t - sqrt(alpha_bar) x_0) / sqrt(1 - alpha_bar)`.
//! * `VPrediction`: `v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0` (Salimans & Ho 2022, §4);
//!   `x_0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v`, `eps = sqrt(alpha_bar) v + sqrt(1 - alpha_bar) x_t`.
//!
//! Names follow diffusers' `prediction_type` (`"epsilon"`, `"sample"`, `"v_prediction"`).

use candle_core::{Result, Tensor};

use crate::coef::{lincomb, per_sample};

/// The quantity the model outputs (its first `C` channels when the variance is learned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PredictionType {
    /// The added noise `eps` (DDPM, DiT).
    #[default]
    Epsilon,
    /// The clean sample `x_0`.
    Sample,
    /// The velocity `v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0`.
    VPrediction,
}

impl PredictionType {
    /// The diffusers spelling: `epsilon`, `sample`, `v_prediction`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PredictionType::Epsilon => "epsilon",
            PredictionType::Sample => "sample",
            PredictionType::VPrediction => "v_prediction",
        }
    }

    /// Parses the diffusers spelling (also `eps`, `x0`, `v`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "epsilon" | "eps" => Some(PredictionType::Epsilon),
            "sample" | "x0" => Some(PredictionType::Sample),
            "v_prediction" | "v" => Some(PredictionType::VPrediction),
            _ => None,
        }
    }

    /// The training target for `x_t` built from `x0` and `noise`; `alpha_bars[b]` per sample.
    pub fn target(&self, x0: &Tensor, noise: &Tensor, alpha_bars: &[f64]) -> Result<Tensor> {
        match self {
            PredictionType::Epsilon => Ok(noise.clone()),
            PredictionType::Sample => Ok(x0.clone()),
            PredictionType::VPrediction => {
                let (s, s1) = scales(alpha_bars, x0)?;
                lincomb(&s, noise, &s1.neg()?, x0)
            }
        }
    }

    /// `(x_0, eps)` implied by `model_output` at `x_t`; `alpha_bars[b]` per sample.
    pub fn to_x0_and_eps(
        &self,
        model_output: &Tensor,
        x_t: &Tensor,
        alpha_bars: &[f64],
    ) -> Result<(Tensor, Tensor)> {
        let (s, s1) = scales(alpha_bars, x_t)?;
        match self {
            PredictionType::Epsilon => {
                let x0 = x_t
                    .sub(&model_output.broadcast_mul(&s1)?)?
                    .broadcast_div(&s)?;
                Ok((x0, model_output.clone()))
            }
            PredictionType::Sample => {
                let eps = x_t
                    .sub(&model_output.broadcast_mul(&s)?)?
                    .broadcast_div(&s1)?;
                Ok((model_output.clone(), eps))
            }
            PredictionType::VPrediction => {
                let x0 = lincomb(&s, x_t, &s1.neg()?, model_output)?;
                let eps = lincomb(&s, model_output, &s1, x_t)?;
                Ok((x0, eps))
            }
        }
    }

    /// `x_0` implied by `model_output` at `x_t`.
    pub fn to_x0(&self, model_output: &Tensor, x_t: &Tensor, alpha_bars: &[f64]) -> Result<Tensor> {
        Ok(self.to_x0_and_eps(model_output, x_t, alpha_bars)?.0)
    }

    /// `eps` implied by an `x_0` estimate at `x_t` (improved-diffusion `_predict_eps_from_xstart`).
    pub fn eps_from_x0(x0: &Tensor, x_t: &Tensor, alpha_bars: &[f64]) -> Result<Tensor> {
        PredictionType::Sample
            .to_x0_and_eps(x0, x_t, alpha_bars)
            .map(|(_, eps)| eps)
    }
}

/// `(sqrt(alpha_bar), sqrt(1 - alpha_bar))` as per-sample tensors.
fn scales(alpha_bars: &[f64], like: &Tensor) -> Result<(Tensor, Tensor)> {
    let s: Vec<f64> = alpha_bars.iter().map(|a| a.sqrt()).collect();
    let s1: Vec<f64> = alpha_bars.iter().map(|a| (1.0 - a).sqrt()).collect();
    Ok((per_sample(&s, like)?, per_sample(&s1, like)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        a.sub(b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn eps_x0_v_round_trip() {
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[[0.9f64, -0.4, 0.1], [0.0, 1.0, -1.0]], &dev).unwrap();
        let eps = Tensor::new(&[[0.3f64, 1.7, -0.8], [-1.2, 0.05, 2.2]], &dev).unwrap();
        let ab = [0.9, 0.02];
        let (s, s1) = scales(&ab, &x0).unwrap();
        let x_t = lincomb(&s, &x0, &s1, &eps).unwrap();
        for p in [
            PredictionType::Epsilon,
            PredictionType::Sample,
            PredictionType::VPrediction,
        ] {
            let target = p.target(&x0, &eps, &ab).unwrap();
            let (x0_back, eps_back) = p.to_x0_and_eps(&target, &x_t, &ab).unwrap();
            assert!(max_diff(&x0_back, &x0) < 1e-12, "{p:?} x0");
            assert!(max_diff(&eps_back, &eps) < 1e-12, "{p:?} eps");
            assert_eq!(PredictionType::parse(p.as_str()), Some(p));
        }
        let eps_from = PredictionType::eps_from_x0(&x0, &x_t, &ab).unwrap();
        assert!(max_diff(&eps_from, &eps) < 1e-12);
    }

    #[test]
    fn v_matches_its_definition() {
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[[2.0f64]], &dev).unwrap();
        let eps = Tensor::new(&[[3.0f64]], &dev).unwrap();
        let v: Vec<Vec<f64>> = PredictionType::VPrediction
            .target(&x0, &eps, &[0.25])
            .unwrap()
            .to_vec2()
            .unwrap();
        // v = sqrt(0.25) * 3 - sqrt(0.75) * 2
        assert!((v[0][0] - (1.5 - 0.75f64.sqrt() * 2.0)).abs() < 1e-15);
    }
}
