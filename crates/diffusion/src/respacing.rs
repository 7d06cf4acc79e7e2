//! Which training timesteps an `n`-step sampler visits (diffusers `timestep_spacing`, after
//! "Common Diffusion Noise Schedules and Sample Steps are Flawed", Lin et al. 2024, Table 2), and
//! improved-diffusion's respacing (Nichol & Dhariwal 2021, §4): the sampler steps between
//! consecutive visited timesteps with `beta = 1 - alpha_bar_t / alpha_bar_prev` (see
//! [`crate::schedule::Transition`]), so DDPM works on any subset.
//!
//! For `T` training steps and `n` sampling steps, descending:
//! * `Linspace`: `round(linspace(0, T - 1, n))` — includes `T - 1` and `0` (improved-diffusion's
//!   single-section `space_timesteps(T, [n])`, DiT's `timestep_respacing="250"`);
//! * `Leading`: `k * (T / n)` (integer division), `k = n-1 .. 0` — DDIM's original striding
//!   (improved-diffusion `"ddimN"`);
//! * `Trailing`: `round(T - k T / n) - 1`, `k = 0 .. n-1` — starts at `T - 1`.
//!
//! Rounding is half-to-even, as numpy's.

use candle_core::{bail, Result};

/// How `n` sampling timesteps are spread over `0..T` (diffusers `timestep_spacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestepSpacing {
    /// Evenly from `T - 1` down to `0` (rounded).
    Linspace,
    /// Multiples of `T / n` starting at 0 (diffusers' default; `steps_offset = 0`).
    #[default]
    Leading,
    /// Evenly from `T - 1` down, ending at `T / n - 1`.
    Trailing,
}

impl TimestepSpacing {
    /// The diffusers spelling: `linspace`, `leading`, `trailing`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TimestepSpacing::Linspace => "linspace",
            TimestepSpacing::Leading => "leading",
            TimestepSpacing::Trailing => "trailing",
        }
    }

    /// Parses the diffusers spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "linspace" => Some(TimestepSpacing::Linspace),
            "leading" => Some(TimestepSpacing::Leading),
            "trailing" => Some(TimestepSpacing::Trailing),
            _ => None,
        }
    }
}

/// The `n` timesteps (descending, distinct) that an `n`-step sampler visits out of
/// `num_train_timesteps`.
pub fn spaced_timesteps(
    num_train_timesteps: usize,
    n: usize,
    spacing: TimestepSpacing,
) -> Result<Vec<usize>> {
    let t_max = num_train_timesteps;
    if n == 0 || n > t_max {
        bail!("diffusion: cannot take {n} sampling steps out of {t_max} training timesteps (need 1..={t_max})")
    }
    let steps: Vec<usize> = match spacing {
        TimestepSpacing::Linspace => {
            let last = (t_max - 1) as f64;
            let stride = if n == 1 { 0.0 } else { last / (n - 1) as f64 };
            (0..n)
                .rev()
                .map(|k| {
                    if k == n - 1 {
                        t_max - 1
                    } else {
                        (k as f64 * stride).round_ties_even() as usize
                    }
                })
                .collect()
        }
        TimestepSpacing::Leading => {
            let stride = t_max / n;
            (0..n).rev().map(|k| k * stride).collect()
        }
        TimestepSpacing::Trailing => {
            let stride = t_max as f64 / n as f64;
            (0..n)
                .map(|k| (t_max as f64 - k as f64 * stride).round_ties_even() as usize - 1)
                .collect()
        }
    };
    debug_assert!(steps.windows(2).all(|w| w[0] > w[1]));
    Ok(steps)
}
