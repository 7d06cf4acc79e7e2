//! Next-token selection: greedy, temperature, top-k, top-p (nucleus, Holtzman et al. 2020) and
//! the repetition penalty of CTRL (Keskar et al. 2019), seeded.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Sampling settings; `temperature == 0` means greedy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SamplingParams {
    /// Softmax temperature; 0 picks the argmax.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1 = all).
    pub top_p: f32,
    /// CTRL penalty θ for tokens already present (1 = off).
    pub repetition_penalty: f32,
    /// Tokens looked back for the penalty.
    pub repeat_last_n: usize,
    /// RNG seed.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            repeat_last_n: 64,
            seed: 42,
        }
    }
}

/// A seeded sampler.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    /// A sampler with these settings.
    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Self { params, rng }
    }

    /// Picks the next token from `logits` given the tokens so far.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let _span = crate::profile::span(crate::profile::Op::Sampling);
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let start = history.len().saturating_sub(p.repeat_last_n);
            let mut seen = history[start..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            for &t in &seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    // CTRL: divide positive logits, multiply negative ones.
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.temperature <= 0.0 {
            return argmax(logits);
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        if p.top_k > 0 {
            order.truncate(p.top_k);
        }
        let max = logits[order[0]];
        let mut probs: Vec<f32> = order
            .iter()
            .map(|&i| ((logits[i] - max) / p.temperature).exp())
            .collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, &x) in probs.iter().enumerate() {
                acc += x;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            order.truncate(keep);
        }
        let total: f32 = probs.iter().sum();
        let mut r = self.rng.gen::<f32>() * total;
        for (i, &x) in probs.iter().enumerate() {
            r -= x;
            if r <= 0.0 {
                return order[i] as u32;
            }
        }
        order[probs.len() - 1] as u32
    }
}

/// Index of the largest value (first on ties).
pub fn argmax(xs: &[f32]) -> u32 {
    let _span = crate::profile::span(crate::profile::Op::Sampling);
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_argmax() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&mut [0.1, 3.0, -1.0], &[]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_at_any_temperature() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 5.0,
            top_k: 1,
            ..Default::default()
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.1, 3.0, 2.9], &[]), 1);
        }
    }

    #[test]
    fn top_p_excludes_the_tail() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            ..Default::default()
        });
        // token 0 has ~0.84 of the mass: nucleus 0.5 holds only it.
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [4.0, 2.0, 1.0, 0.0], &[]), 0);
        }
    }

    #[test]
    fn repetition_penalty_can_flip_the_choice() {
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&mut [3.0, 2.0], &[0]), 1);
    }

    #[test]
    fn same_seed_same_samples() {
        let params = SamplingParams {
            temperature: 1.0,
            seed: 7,
            ..Default::default()
        };
        let draw = |p: SamplingParams| {
            let mut s = Sampler::new(p);
            (0..32)
                .map(|_| s.sample(&mut [1.0, 1.1, 0.9, 1.05], &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(params.clone()), draw(params));
    }
}
