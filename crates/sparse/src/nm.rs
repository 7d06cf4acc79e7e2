//! N:M semi-structured layout (Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks":
//! at most N non-zeros in every group of M consecutive weights of a row; 2:4 is the pattern of
//! NVIDIA's sparse tensor cores and of SparseGPT's §4 "N:M sparsity"). Each group keeps exactly
//! `min(N, width)` slots (a value and its index inside the group, explicit zeros filling groups
//! with fewer non-zeros), so every row has the same number of values and no offsets are needed.
//!
//! On disk: `<name>.values` f32 `[rows, slots]`, `<name>.nm_meta` u8 `[rows, ⌈slots·b/8⌉]` with
//! `b = ⌈log₂ M⌉` index bits per slot packed LSB first (2 bits for 2:4: a weight costs
//! `(2·4 + 4/8)/4 = 2.125` bytes, like a 50% bitmap, with no popcounts to decode).

use crate::bitmap::VALUE_PAD;
use crate::component::{required, Component, ComponentDType, ComponentSource};
use crate::error::{corrupt, Result, SparseError};
use crate::rows::{dot_scalar, SparseRows};
use crate::Isa;

/// A matrix in N:M layout.
#[derive(Debug, Clone, PartialEq)]
pub struct NmMatrix {
    rows: usize,
    cols: usize,
    n: usize,
    m: usize,
    /// `rows × slots` values, then [`VALUE_PAD`] zeros.
    values: Vec<f32>,
    /// `rows × meta_bytes` packed indices.
    meta: Vec<u8>,
}

/// Geometry of one row.
#[derive(Debug, Clone, Copy)]
struct RowShape {
    slots: usize,
    bits: usize,
    meta_bytes: usize,
}

fn row_shape(cols: usize, n: usize, m: usize) -> RowShape {
    let slots = cols / m * n + n.min(cols % m);
    let bits = (usize::BITS - (m - 1).leading_zeros()) as usize;
    RowShape {
        slots,
        bits,
        meta_bytes: (slots * bits).div_ceil(8),
    }
}

/// Checks `1 ≤ n < m ≤ 16`.
pub(crate) fn check_nm(n: usize, m: usize) -> Result<()> {
    if n == 0 || n >= m || m > 16 {
        return Err(SparseError::Descriptor(format!(
            "N:M needs 1 <= N < M <= 16, got {n}:{m}"
        )));
    }
    Ok(())
}

fn write_bits(meta: &mut [u8], at: usize, bits: usize, v: usize) {
    for i in 0..bits {
        if v >> i & 1 != 0 {
            meta[(at + i) / 8] |= 1 << ((at + i) % 8);
        }
    }
}

fn read_bits(meta: &[u8], at: usize, bits: usize) -> usize {
    // Indices have at most 4 bits, so they lie within the 16 bits starting at their byte.
    let (byte, shift) = (at / 8, at % 8);
    let window = meta[byte] as usize | (meta.get(byte + 1).copied().unwrap_or(0) as usize) << 8;
    (window >> shift) & ((1 << bits) - 1)
}

impl NmMatrix {
    /// Encodes a dense row-major matrix with at most `n` non-zeros per group of `m`.
    pub fn encode(dense: &[f32], rows: usize, cols: usize, n: usize, m: usize) -> Result<Self> {
        assert_eq!(dense.len(), rows * cols, "dense matrix must be rows x cols");
        check_nm(n, m)?;
        let shape = row_shape(cols, n, m);
        let mut values = Vec::with_capacity(rows * shape.slots + VALUE_PAD);
        let mut meta = vec![0u8; rows * shape.meta_bytes];
        for (r, row) in dense.chunks_exact(cols.max(1)).take(rows).enumerate() {
            let row_meta = &mut meta[r * shape.meta_bytes..(r + 1) * shape.meta_bytes];
            let mut slot = 0;
            for (g, group) in row.chunks(m).enumerate() {
                let keep = n.min(group.len());
                let nonzero = group.iter().filter(|&&w| w != 0.0).count();
                if nonzero > n {
                    return Err(SparseError::Unencodable {
                        layout: format!("{n}:{m}"),
                        reason: format!("row {r}, group {g} has {nonzero} non-zeros"),
                    });
                }
                // The non-zeros, then the first zero positions, in column order.
                let mut pads = keep - nonzero;
                for (j, &w) in group.iter().enumerate() {
                    let take = w != 0.0
                        || (pads > 0 && {
                            pads -= 1;
                            true
                        });
                    if take {
                        write_bits(row_meta, slot * shape.bits, shape.bits, j);
                        values.push(w);
                        slot += 1;
                    }
                }
            }
        }
        values.extend([0.0; VALUE_PAD]);
        Ok(Self {
            rows,
            cols,
            n,
            m,
            values,
            meta,
        })
    }

    /// `(N, M)`.
    pub fn pattern(&self) -> (usize, usize) {
        (self.n, self.m)
    }

    /// Stored values (explicit zeros included).
    pub fn stored(&self) -> usize {
        self.values.len() - VALUE_PAD
    }

    /// Bytes held in memory.
    pub fn heap_bytes(&self) -> usize {
        self.values.len() * 4 + self.meta.len()
    }

    /// Bytes on disk.
    pub fn file_bytes(&self) -> usize {
        self.stored() * 4 + self.meta.len()
    }

    /// The stored arrays.
    pub fn components(&self) -> Vec<Component> {
        let s = row_shape(self.cols, self.n, self.m);
        vec![
            Component::f32(
                "values",
                vec![self.rows, s.slots],
                &self.values[..self.stored()],
            ),
            Component::u8("nm_meta", vec![self.rows, s.meta_bytes], &self.meta),
        ]
    }

    /// Rebuilds the matrix from its components, checking every index.
    pub fn from_components(
        rows: usize,
        cols: usize,
        n: usize,
        m: usize,
        src: &mut dyn ComponentSource,
    ) -> Result<Self> {
        check_nm(n, m)?;
        let s = row_shape(cols, n, m);
        let values = required(src, "values")?;
        values.expect(ComponentDType::F32, &[rows, s.slots])?;
        let meta = required(src, "nm_meta")?;
        meta.expect(ComponentDType::U8, &[rows, s.meta_bytes])?;
        let meta = meta.bytes;
        for r in 0..rows {
            let row_meta = &meta[r * s.meta_bytes..(r + 1) * s.meta_bytes];
            let mut prev: Option<(usize, usize)> = None;
            for slot in 0..s.slots {
                let g = slot / n;
                let j = read_bits(row_meta, slot * s.bits, s.bits);
                let width = m.min(cols - g * m);
                if j >= width || prev.is_some_and(|(pg, pj)| pg == g && pj >= j) {
                    return Err(corrupt!(
                        "{n}:{m} row {r}, group {g}: index {j} out of order or range"
                    ));
                }
                prev = Some((g, j));
            }
            if !(s.slots * s.bits).is_multiple_of(8) && s.meta_bytes > 0 {
                let spare = row_meta[s.meta_bytes - 1] >> ((s.slots * s.bits) % 8);
                if spare != 0 {
                    return Err(corrupt!("{n}:{m} row {r}: bits set past the last index"));
                }
            }
        }
        let mut values = values.to_f32();
        values.extend([0.0; VALUE_PAD]);
        Ok(Self {
            rows,
            cols,
            n,
            m,
            values,
            meta,
        })
    }
}

impl SparseRows for NmMatrix {
    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn nonzeros(&self, r: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let s = row_shape(self.cols, self.n, self.m);
        let row_meta = &self.meta[r * s.meta_bytes..(r + 1) * s.meta_bytes];
        let vals = &self.values[r * s.slots..(r + 1) * s.slots];
        vals.iter().enumerate().map(move |(slot, &v)| {
            let j = read_bits(row_meta, slot * s.bits, s.bits);
            (slot / self.n * self.m + j, v)
        })
    }

    fn dot<const T: usize>(&self, isa: Isa, r: usize, xs: [&[f32]; T]) -> [f32; T] {
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx2() && (self.n, self.m) == (2, 4) {
            let s = row_shape(self.cols, 2, 4);
            let full = self.cols / 8;
            let row_meta = &self.meta[r * s.meta_bytes..(r + 1) * s.meta_bytes];
            let start = r * s.slots;
            // SAFETY: AVX2/FMA detected; values padded; `xs[i]` hold `cols ≥ 8·full` floats.
            let (mut acc, used) = unsafe {
                crate::expand::expand_dot::<T, false>(
                    &crate::expand::NM24,
                    &row_meta[..full],
                    self.values.as_ptr().add(start),
                    xs.map(|x| x.as_ptr()),
                )
            };
            // The one or two groups after the last full 8 columns.
            for slot in used..s.slots {
                let c = slot / 2 * 4 + read_bits(row_meta, slot * 2, 2);
                for i in 0..T {
                    acc[i] += self.values[start + slot] * xs[i][c];
                }
            }
            return acc;
        }
        let _ = isa;
        dot_scalar(self, r, xs)
    }
}
