//! End-to-end pruning of tiny random llama models written by the test itself: exact sparsity
//! per layer, exact N:M, the sequential calibration really feeds each layer the outputs of the
//! layers pruned before it, SparseGPT beats magnitude on the model's logits, and a pruned model
//! round-trips through the HF export and the loader with the same logits.

use anyhow::Result;
use candle_core::quantized::GgmlDType;
use candle_core::Tensor;
use ferrite_llm::export::save_hf_dir;
use ferrite_llm::kv_cache::{FullCache, KvCache};
use ferrite_llm::llama::LinearInput;
use ferrite_llm::testing::{temp_dir, write_gguf, write_safetensors_dir, TinySpec};
use ferrite_llm::{load_model, ComputeDType, Llama, LoadedModel};
use ferrite_sparsegpt::nm_mask::is_nm_sparse;
use ferrite_sparsegpt::sequential::LayerName;
use ferrite_sparsegpt::{
    prune_model, Calibration, Magnitude, Matrix, Pruner, SparseGpt, Sparsity, Wanda,
};
use rand::{Rng, SeedableRng};

fn spec() -> TinySpec {
    TinySpec {
        hidden: 64,
        mlp: 128,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        context: 128,
        tied: false,
        seed: 5,
    }
}

fn calibration(vocab: usize, n: usize, len: usize, seed: u64) -> Calibration {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let ids: Vec<u32> = (0..4000).map(|_| rng.gen_range(0..vocab as u32)).collect();
    Calibration::sample(&ids, n, len, seed).unwrap()
}

fn load_tiny(dir: &std::path::Path) -> Result<LoadedModel> {
    load_model(&write_safetensors_dir(dir, &spec())?, ComputeDType::F32)
}

fn logits(model: &Llama, ids: &[u32]) -> Result<Vec<f32>> {
    let mut cache = FullCache::new(&model.kv_geometry());
    let h = model.forward_hidden(ids, &mut cache)?;
    Ok(model.logits(&h)?.flatten_all()?.to_vec1()?)
}

fn weight(model: &Llama, l: usize, name: LayerName) -> Result<Matrix> {
    Matrix::from_tensor(&name.linear(&model.blocks[l]).to_dense()?)
}

#[test]
fn every_layer_has_exactly_the_requested_sparsity() -> Result<()> {
    let dir = temp_dir("sgpt-exact");
    let dense = load_tiny(&dir.join("hf"))?;
    let calib = calibration(dense.config().vocab_size, 4, 24, 1);
    let pruners: [&dyn Pruner; 3] = [&SparseGpt::default(), &Wanda, &Magnitude];
    for pruner in pruners {
        for s in [
            Sparsity::Unstructured(0.37),
            Sparsity::NM { n: 2, m: 4 },
            Sparsity::NM { n: 4, m: 8 },
        ] {
            let mut model = dense.model.clone();
            let report = prune_model(&mut model, pruner, s, Some(&calib), &mut |_| {})?;
            assert_eq!(report.layers.len(), 2 * 7);
            for r in &report.layers {
                let w = weight(&model, r.block, r.layer)?;
                let want = (s.fraction() * (w.rows * w.cols) as f64).round() as usize;
                assert_eq!(w.zeros(), want, "{} {s} {:?}", pruner.name(), r.layer);
                assert_eq!(r.zeros, want);
                if let Sparsity::NM { n, m } = s {
                    assert!(is_nm_sparse(&w.data, w.cols, n, m), "{:?}", r.layer);
                }
                assert!(r.error.unwrap() > 0.0 && r.relative_error.unwrap() < 1.0);
            }
        }
    }
    Ok(())
}

/// `‖(W − Ŵ) X‖²` over the calibration segments, with X the inputs the *pruned* model feeds
/// the layer: what the report must say if pruning was really sequential.
fn direct_errors(dense: &Llama, pruned: &Llama, calib: &Calibration) -> Result<Vec<f64>> {
    let positions: Vec<usize> = (0..calib.segment_len).collect();
    let angles = pruned.rope.angles(&positions)?;
    let mut errors = Vec::new();
    let mut hidden: Vec<Tensor> = calib
        .segments
        .iter()
        .map(|s| pruned.embedding.forward(s, pruned.device()))
        .collect::<Result<_>>()?;
    for l in 0..pruned.blocks.len() {
        let block = &pruned.blocks[l];
        let mut passes: Vec<_> = hidden
            .iter()
            .map(|x| block.begin_pass(x))
            .collect::<Result<_>>()?;
        for input in LinearInput::ALL {
            for &name in LayerName::reading(input) {
                let d = weight(dense, l, name)?.to_tensor(pruned.device())?;
                let p = weight(pruned, l, name)?.to_tensor(pruned.device())?;
                let delta = (d - p)?;
                let mut e = 0.0;
                for pass in &passes {
                    let y = pass.input().matmul(&delta.t()?)?;
                    e += y.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
                }
                errors.push(e);
            }
            let mut next = Vec::new();
            for pass in passes {
                let mut cache = FullCache::new(&pruned.kv_geometry());
                cache.begin_step(calib.segment_len)?;
                next.push(block.advance(pass, l, &angles, &mut cache)?);
            }
            passes = next;
        }
        hidden = passes
            .into_iter()
            .map(|p| p.into_output())
            .collect::<Result<_>>()?;
    }
    Ok(errors)
}

#[test]
fn each_layer_is_calibrated_on_the_outputs_of_the_pruned_layers_before_it() -> Result<()> {
    let dir = temp_dir("sgpt-sequential");
    let dense = load_tiny(&dir.join("hf"))?;
    let calib = calibration(dense.config().vocab_size, 3, 20, 2);
    let mut model = dense.model.clone();
    let s = Sparsity::Unstructured(0.6);
    let report = prune_model(
        &mut model,
        &SparseGpt::default(),
        s,
        Some(&calib),
        &mut |_| {},
    )?;
    let direct = direct_errors(&dense.model, &model, &calib)?;
    for (r, d) in report.layers.iter().zip(&direct) {
        let got = r.error.unwrap();
        assert!(
            (got - d).abs() <= 2e-3 * d.max(1e-6),
            "block {} {:?}: report {got} vs direct {d}",
            r.block,
            r.layer
        );
    }
    Ok(())
}

#[test]
fn sparsegpt_keeps_the_logits_closer_than_magnitude_and_wanda() -> Result<()> {
    let dir = temp_dir("sgpt-logits");
    let dense = load_tiny(&dir.join("hf"))?;
    let vocab = dense.config().vocab_size;
    let calib = calibration(vocab, 8, 48, 3);
    let eval: Vec<u32> = calibration(vocab, 1, 64, 99).segments[0].clone();
    let reference = logits(&dense.model, &eval)?;
    let distance = |p: &dyn Pruner, s: Sparsity| -> Result<f64> {
        let mut m = dense.model.clone();
        prune_model(&mut m, p, s, Some(&calib), &mut |_| {})?;
        let l = logits(&m, &eval)?;
        Ok(l.iter()
            .zip(&reference)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>())
    };
    for s in [Sparsity::Unstructured(0.5), Sparsity::NM { n: 2, m: 4 }] {
        let sg = distance(&SparseGpt::default(), s)?;
        let ma = distance(&Magnitude, s)?;
        let wa = distance(&Wanda, s)?;
        assert!(
            sg < ma && sg < wa,
            "{s}: sparsegpt {sg}, wanda {wa}, magnitude {ma}"
        );
    }
    Ok(())
}

#[test]
fn a_pruned_gguf_model_round_trips_through_export_and_load() -> Result<()> {
    let dir = temp_dir("sgpt-roundtrip");
    // GGUF source: the export must undo llama.cpp's q/k row permutation of pruned weights.
    let src = load_model(
        &write_gguf(&dir.join("m.gguf"), &spec(), GgmlDType::F32)?,
        ComputeDType::F32,
    )?;
    let calib = calibration(src.config().vocab_size, 4, 24, 4);
    let mut model = src.model.clone();
    let s = Sparsity::NM { n: 2, m: 4 };
    prune_model(
        &mut model,
        &SparseGpt::default(),
        s,
        Some(&calib),
        &mut |_| {},
    )?;
    let out = dir.join("pruned");
    save_hf_dir(&model, &src.tokenizer, &out)?;
    let back = load_model(&out, ComputeDType::F32)?;
    let ids = src
        .tokenizer
        .encode("the cat sat on the mat, then the ant ate 12 beans")?;
    let (a, b) = (logits(&model, &ids)?, logits(&back.model, &ids)?);
    let max = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(max < 1e-4, "max logit difference {max}");
    for l in 0..back.model.blocks.len() {
        for name in LayerName::ALL {
            let w = weight(&back.model, l, name)?;
            assert!(is_nm_sparse(&w.data, w.cols, 2, 4), "block {l} {name:?}");
        }
    }
    Ok(())
}

#[test]
fn magnitude_needs_no_calibration_and_calibrated_methods_refuse_without() -> Result<()> {
    let dir = temp_dir("sgpt-nocalib");
    let dense = load_tiny(&dir.join("hf"))?;
    let mut m = dense.model.clone();
    let s = Sparsity::Unstructured(0.5);
    let r = prune_model(&mut m, &Magnitude, s, None, &mut |_| {})?;
    assert!(r
        .layers
        .iter()
        .all(|l| l.error.is_none() && l.sparsity == 0.5));
    assert!(prune_model(&mut m, &SparseGpt::default(), s, None, &mut |_| {}).is_err());
    assert!(prune_model(&mut m, &Wanda, s, None, &mut |_| {}).is_err());
    let bad = Calibration {
        seed: 0,
        segment_len: 2,
        segments: vec![vec![0, 1_000_000]],
    };
    let err = prune_model(&mut m, &Wanda, s, Some(&bad), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    Ok(())
}
