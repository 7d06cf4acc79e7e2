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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BetaSchedule, NoiseSchedule};

    #[test]
    fn spacing_lists_match_diffusers() {
        // The T = 1000, n = 10 rows of Lin et al. 2024, Table 2 (diffusers' docs).
        let lin = spaced_timesteps(1000, 10, TimestepSpacing::Linspace).unwrap();
        assert_eq!(lin, [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
        let lead = spaced_timesteps(1000, 10, TimestepSpacing::Leading).unwrap();
        assert_eq!(lead, [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]);
        let trail = spaced_timesteps(1000, 10, TimestepSpacing::Trailing).unwrap();
        assert_eq!(trail, [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
        // Uneven divisions (numpy's half-to-even rounding: 499.5 -> 500).
        assert_eq!(
            spaced_timesteps(1000, 3, TimestepSpacing::Linspace).unwrap(),
            [999, 500, 0]
        );
        assert_eq!(
            spaced_timesteps(1000, 3, TimestepSpacing::Leading).unwrap(),
            [666, 333, 0]
        );
        assert_eq!(
            spaced_timesteps(1000, 3, TimestepSpacing::Trailing).unwrap(),
            [999, 666, 332]
        );
        assert_eq!(
            spaced_timesteps(1000, 1, TimestepSpacing::Linspace).unwrap(),
            [999]
        );
        let full = spaced_timesteps(50, 50, TimestepSpacing::Leading).unwrap();
        assert_eq!(full, (0..50).rev().collect::<Vec<_>>());
        for s in [
            TimestepSpacing::Linspace,
            TimestepSpacing::Leading,
            TimestepSpacing::Trailing,
        ] {
            assert_eq!(TimestepSpacing::parse(s.as_str()), Some(s));
            assert!(spaced_timesteps(1000, 0, s).is_err());
            assert!(spaced_timesteps(1000, 1001, s).is_err());
        }
    }

    #[test]
    fn respaced_betas_telescope_to_alpha_bar() {
        // improved-diffusion respacing: prod of the subset's (1 - beta) is alpha_bar at its top.
        let s = NoiseSchedule::new(BetaSchedule::Cosine, 1000).unwrap();
        let steps = spaced_timesteps(1000, 25, TimestepSpacing::Linspace).unwrap();
        let mut prod = 1.0;
        for (k, &t) in steps.iter().enumerate() {
            let tr = s.transition(t, steps.get(k + 1).copied()).unwrap();
            prod *= 1.0 - tr.beta();
        }
        assert!((prod - s.alpha_bar(999).unwrap()).abs() < 1e-15);
    }
}
