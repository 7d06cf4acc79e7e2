//! Counter-based randomness: every random draw of training and sampling comes from a generator
//! seeded by `(seed, stream, counter)` (e.g. the training step), so a run's whole random state
//! is its seed and step: a resumed run draws exactly the numbers an uninterrupted one would.
//! (Weights are initialised by `ferrite_dit::init::seeded_var_builder`.)

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Independent random streams, so that e.g. data order and noise never share draws.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum Stream {
    /// Epoch permutations of the training set.
    DataOrder = 2,
    /// Timesteps, noise and label dropout of one training step.
    TrainStep = 3,
    /// Initial noise and per-step noise of sampling.
    Sampling = 4,
}

/// SplitMix64 finaliser: a bijective 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator for `(seed, stream, counter)`.
pub fn rng(seed: u64, stream: Stream, counter: u64) -> StdRng {
    StdRng::seed_from_u64(mix(mix(mix(seed) ^ stream as u64) ^ counter))
}

/// One standard normal draw (Box-Muller).
pub fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// A seeded Fisher-Yates permutation of `0..n`.
pub fn permutation(rng: &mut StdRng, n: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.gen_range(0..=i);
        p.swap(i, j);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u32> = (0..4).map(|_| rng(7, Stream::TrainStep, 3).gen()).collect();
        let b: Vec<u32> = (0..4).map(|_| rng(7, Stream::TrainStep, 3).gen()).collect();
        assert_eq!(a, b);
        let c: u64 = rng(7, Stream::TrainStep, 4).gen();
        let d: u64 = rng(7, Stream::Sampling, 3).gen();
        let e: u64 = rng(7, Stream::TrainStep, 3).gen();
        assert_ne!(c, e);
        assert_ne!(d, e);
        let mut p = permutation(&mut rng(1, Stream::DataOrder, 0), 100);
        p.sort();
        assert_eq!(p, (0..100).collect::<Vec<_>>());
    }
}
