//! Round trips, kernel-vs-dense products and rejection of bad components, on random matrices
//! of odd sizes (unaligned tails everywhere).

use super::*;
use ferrite_kernels::pool::Pool;
use rand::{rngs::StdRng, Rng, SeedableRng};

/// A random matrix with about `sparsity` exact zeros.
fn random_sparse(rng: &mut StdRng, rows: usize, cols: usize, sparsity: f64) -> Vec<f32> {
    (0..rows * cols)
        .map(|_| {
            if rng.gen_bool(sparsity) {
                0.0
            } else {
                rng.gen_range(0.01f32..1.0) * if rng.gen_bool(0.5) { 1.0 } else { -1.0 }
            }
        })
        .collect()
}

/// A random matrix with at most `n` non-zeros (random positions, sometimes fewer) per group of
/// `m` columns.
fn random_nm(rng: &mut StdRng, rows: usize, cols: usize, n: usize, m: usize) -> Vec<f32> {
    let mut d = random_sparse(rng, rows, cols, 0.0);
    for row in d.chunks_mut(cols) {
        for g in row.chunks_mut(m) {
            let mut idx: Vec<usize> = (0..g.len()).collect();
            for i in (1..idx.len()).rev() {
                idx.swap(i, rng.gen_range(0..=i));
            }
            let keep = if rng.gen_bool(0.2) {
                n.saturating_sub(1)
            } else {
                n
            };
            for &j in idx.iter().skip(keep) {
                g[j] = 0.0;
            }
        }
    }
    d
}

const SHAPES: [(usize, usize); 8] = [
    (1, 1),
    (1, 9),
    (7, 13),
    (5, 8),
    (13, 33),
    (3, 100),
    (17, 64),
    (4, 18),
];

fn layouts_for(rng: &mut StdRng, rows: usize, cols: usize) -> Vec<(Layout, Vec<f32>)> {
    let mut v = Vec::new();
    for s in [0.0, 0.5, 0.9, 1.0] {
        let d = random_sparse(rng, rows, cols, s);
        v.push((Layout::Bitmap, d.clone()));
        v.push((Layout::Csr, d));
    }
    for (n, m) in [(2, 4), (1, 4), (2, 8), (3, 8), (1, 2)] {
        v.push((Layout::Nm { n, m }, random_nm(rng, rows, cols, n, m)));
    }
    v
}

#[test]
fn every_layout_round_trips_exactly() {
    let mut rng = StdRng::seed_from_u64(1);
    for (rows, cols) in SHAPES {
        for (layout, dense) in layouts_for(&mut rng, rows, cols) {
            let s = SparseMatrix::encode(&dense, rows, cols, layout).unwrap();
            assert_eq!(s.layout(), layout);
            let back = s.to_dense();
            assert!(
                back.iter()
                    .zip(&dense)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{layout} {rows}x{cols} dense round trip"
            );
            let mut comps = s.components();
            let again = SparseMatrix::from_components(&s.descriptor(), &mut comps).unwrap();
            assert_eq!(again, s, "{layout} {rows}x{cols} component round trip");
            assert_eq!(
                s.file_bytes(),
                s.components().iter().map(|c| c.bytes.len()).sum::<usize>()
            );
        }
    }
}

#[test]
fn auto_picks_nm_for_two_of_four_and_the_smaller_of_bitmap_and_csr() {
    let mut rng = StdRng::seed_from_u64(2);
    // Exactly two non-zeros in every group of four: 2:4 ties with the bitmap and wins.
    let mut nm = random_sparse(&mut rng, 8, 64, 0.0);
    nm.iter_mut().skip(1).step_by(2).for_each(|w| *w = 0.0);
    assert_eq!(
        SparseMatrix::encode(&nm, 8, 64, Layout::Auto)
            .unwrap()
            .layout(),
        Layout::Nm { n: 2, m: 4 }
    );
    let half = random_sparse(&mut rng, 8, 64, 0.6);
    assert_eq!(
        SparseMatrix::encode(&half, 8, 64, Layout::Auto)
            .unwrap()
            .layout(),
        Layout::Bitmap
    );
    let mut rare = vec![0f32; 8 * 512];
    rare[5] = 1.0;
    rare[700] = -2.0;
    assert_eq!(
        SparseMatrix::encode(&rare, 8, 512, Layout::Auto)
            .unwrap()
            .layout(),
        Layout::Csr
    );
    let policy = EncodePolicy::default();
    assert!(policy
        .encode(&random_sparse(&mut rng, 4, 4, 0.0), 4, 4)
        .unwrap()
        .is_none());
}

#[test]
fn sparse_products_equal_the_dense_product() {
    let mut rng = StdRng::seed_from_u64(3);
    let pools = [Pool::new(1), Pool::new(3)];
    for (rows, cols) in [(1, 3), (5, 9), (37, 77), (130, 64), (9, 576)] {
        for (layout, dense) in layouts_for(&mut rng, rows, cols) {
            let s = SparseMatrix::encode(&dense, rows, cols, layout).unwrap();
            for n in [1, 2, 3, 5, 7, 8, 9, 70] {
                let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
                for isa in Isa::available() {
                    for pool in &pools {
                        let mut y = vec![f32::NAN; n * rows];
                        s.matmul_with(&x, &mut y, pool, isa);
                        for i in 0..n {
                            for r in 0..rows {
                                let (xr, wr) = (&x[i * cols..][..cols], &dense[r * cols..][..cols]);
                                let exact: f64 =
                                    xr.iter().zip(wr).map(|(a, b)| *a as f64 * *b as f64).sum();
                                let scale: f64 =
                                    xr.iter().zip(wr).map(|(a, b)| (a * b).abs() as f64).sum();
                                let got = y[i * rows + r] as f64;
                                assert!(
                                    (got - exact).abs() <= 1e-6 * scale + 1e-7,
                                    "{layout} {rows}x{cols} n={n} {isa:?}: {got} vs {exact}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Decoding `comps` with one component replaced fails with a message containing `want`.
fn rejects(s: &SparseMatrix, edit: impl Fn(&mut Vec<Component>), want: &str) {
    let mut comps = s.components();
    edit(&mut comps);
    let err = SparseMatrix::from_components(&s.descriptor(), &mut comps)
        .expect_err(want)
        .to_string();
    assert!(err.contains(want), "`{err}` should mention `{want}`");
}

fn part<'a>(comps: &'a mut [Component], suffix: &str) -> &'a mut Component {
    comps.iter_mut().find(|c| c.suffix == suffix).unwrap()
}

#[test]
fn bad_or_truncated_components_are_rejected() {
    let mut rng = StdRng::seed_from_u64(4);
    let d = random_sparse(&mut rng, 6, 13, 0.5);
    let bitmap = SparseMatrix::encode(&d, 6, 13, Layout::Bitmap).unwrap();
    let csr = SparseMatrix::encode(&d, 6, 13, Layout::Csr).unwrap();
    let nm = SparseMatrix::encode(
        &random_nm(&mut rng, 6, 13, 2, 4),
        6,
        13,
        Layout::Nm { n: 2, m: 4 },
    )
    .unwrap();
    for s in [&bitmap, &csr, &nm] {
        rejects(
            s,
            |c| {
                part(c, "values").bytes.pop();
            },
            "truncated",
        );
        rejects(
            s,
            |c| c.retain(|c| c.suffix != "values"),
            "lacks its `values`",
        );
        rejects(
            s,
            |c| part(c, "values").dtype = ComponentDType::U32,
            "dtype",
        );
    }
    rejects(
        &bitmap,
        |c| part(c, "bitmap").bytes[0] ^= 1 << 3,
        "values are stored",
    );
    rejects(&bitmap, |c| part(c, "bitmap").bytes[1] |= 0x80, "past 13");
    rejects(&bitmap, |c| part(c, "bitmap").shape = vec![6, 3], "shape");
    rejects(&csr, |c| part(c, "row_ptr").bytes[24] = 0, "row_ptr runs");
    rejects(
        &csr,
        |c| part(c, "row_ptr").bytes[4..8].copy_from_slice(&99u32.to_le_bytes()),
        "decreases",
    );
    rejects(
        &csr,
        |c| part(c, "col_idx").bytes[0..2].copy_from_slice(&13u16.to_le_bytes()),
        "column 13",
    );
    rejects(
        &csr,
        |c| {
            let b = &mut part(c, "col_idx").bytes;
            let first = [b[0], b[1]];
            b[2..4].copy_from_slice(&first);
        },
        "not increasing",
    );
    // First group's two 2-bit indices made equal.
    rejects(
        &nm,
        |c| {
            let b = &mut part(c, "nm_meta").bytes[0];
            *b = (*b & !0b1111) | 0b0101;
        },
        "out of order",
    );
    // 13 columns: 3 full groups and a 1-wide tail, 7 slots = 14 bits; bit 15 is spare.
    rejects(
        &nm,
        |c| part(c, "nm_meta").bytes[1] |= 0x80,
        "past the last index",
    );
    let garbage = SparseMatrix::from_components("{not json", &mut bitmap.components());
    assert!(matches!(garbage, Err(SparseError::Descriptor(_))));
    let unknown = bitmap.descriptor().replace("bitmap", "ellpack");
    assert!(
        SparseMatrix::from_components(&unknown, &mut bitmap.components())
            .unwrap_err()
            .to_string()
            .contains("unknown format")
    );
    let dense = random_sparse(&mut rng, 2, 8, 0.0);
    assert!(
        SparseMatrix::encode(&dense, 2, 8, Layout::Nm { n: 2, m: 4 })
            .unwrap_err()
            .to_string()
            .contains("4 non-zeros")
    );
}

#[test]
fn layout_names_parse() {
    for s in ["auto", "bitmap", "csr", "2:4", "1:8"] {
        assert_eq!(s.parse::<Layout>().unwrap().to_string(), s);
    }
    for s in ["4:4", "0:4", "2:32", "dense", "2-4"] {
        assert!(s.parse::<Layout>().is_err(), "{s}");
    }
}
