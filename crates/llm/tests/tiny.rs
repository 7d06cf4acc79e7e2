//! Runtime tests on tiny random llama models written by the tests themselves.

use anyhow::Result;
use candle_core::quantized::GgmlDType;
use ferrite_llm::generate::generate;
use ferrite_llm::perplexity;
use ferrite_llm::sampling::{Sampler, SamplingParams};
use ferrite_llm::testing::{
    temp_dir, write_gguf, write_gguf_with, write_safetensors_dir, TinySpec,
};
use ferrite_llm::{load_model, ComputeDType, FullCache, KvCache};

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const TEXT: &str = "the cat sat on the mat in the hat, then the ant ate 12 beans";

#[test]
fn gguf_and_safetensors_give_the_same_logits() -> Result<()> {
    let dir = temp_dir("formats");
    let spec = TinySpec::default();
    let g = load_model(
        &write_gguf(&dir.join("m.gguf"), &spec, GgmlDType::F32)?,
        ComputeDType::F32,
    )?;
    let s = load_model(
        &write_safetensors_dir(&dir.join("hf"), &spec)?,
        ComputeDType::F32,
    )?;
    let ids = g.tokenizer.encode(TEXT)?;
    assert_eq!(ids, s.tokenizer.encode(TEXT)?, "tokenizers disagree");
    let lg = g
        .model
        .forward_last(&ids, &mut FullCache::new(&g.model.kv_geometry()))?;
    let ls = s
        .model
        .forward_last(&ids, &mut FullCache::new(&s.model.kv_geometry()))?;
    // Interleaved RoPE on permuted rows (GGUF) equals half-split RoPE on HF rows.
    assert!(max_abs_diff(&lg, &ls) < 1e-4, "{}", max_abs_diff(&lg, &ls));
    Ok(())
}

#[test]
fn tied_embeddings_load() -> Result<()> {
    let dir = temp_dir("tied");
    let spec = TinySpec {
        tied: true,
        ..Default::default()
    };
    let m = load_model(
        &write_gguf(&dir.join("m.gguf"), &spec, GgmlDType::Q8_0)?,
        ComputeDType::Quantized,
    )?;
    assert!(m.config().tie_word_embeddings);
    let s = load_model(
        &write_safetensors_dir(&dir.join("hf"), &spec)?,
        ComputeDType::F32,
    )?;
    assert!(s.config().tie_word_embeddings);
    Ok(())
}

#[test]
fn incremental_decode_equals_full_forward() -> Result<()> {
    let dir = temp_dir("incremental");
    let m = load_model(
        &write_gguf(&dir.join("m.gguf"), &TinySpec::default(), GgmlDType::F32)?,
        ComputeDType::F32,
    )?;
    let ids = m.tokenizer.encode(TEXT)?;
    let full = m
        .model
        .forward_last(&ids, &mut FullCache::new(&m.model.kv_geometry()))?;
    // prompt chunk, then one token at a time: the cache and the causal mask must agree.
    let mut cache = FullCache::new(&m.model.kv_geometry());
    let split = ids.len() / 2;
    let mut last = m.model.forward_last(&ids[..split], &mut cache)?;
    for &t in &ids[split..] {
        last = m.model.forward_last(&[t], &mut cache)?;
    }
    assert_eq!(cache.len(), ids.len());
    assert!(
        max_abs_diff(&full, &last) < 1e-4,
        "{}",
        max_abs_diff(&full, &last)
    );
    Ok(())
}

#[test]
fn streaming_ppl_with_full_cache_equals_one_chunk() -> Result<()> {
    let dir = temp_dir("ppl");
    let m = load_model(
        &write_gguf(&dir.join("m.gguf"), &TinySpec::default(), GgmlDType::F32)?,
        ComputeDType::F32,
    )?;
    let ids = m.tokenizer.encode(TEXT)?;
    let chunked = perplexity::chunked(&m.model, &ids, ids.len(), &mut |_, _| {})?;
    let mut cache = FullCache::new(&m.model.kv_geometry());
    let stream = perplexity::streaming(&m.model, &ids, &mut cache, &mut |_, _| {})?;
    assert_eq!(chunked.tokens_scored, stream.tokens_scored);
    assert!(
        (chunked.ppl - stream.ppl).abs() / chunked.ppl < 1e-4,
        "{} vs {}",
        chunked.ppl,
        stream.ppl
    );
    // smaller chunks see less context: a different (here, any) value, same count minus one per chunk
    let halves = perplexity::chunked(&m.model, &ids, ids.len().div_ceil(2), &mut |_, _| {})?;
    assert_eq!(halves.tokens_scored, ids.len() - 2);
    Ok(())
}

#[test]
fn quantized_path_tracks_its_dequantised_f32_path() -> Result<()> {
    let dir = temp_dir("quant");
    let spec = TinySpec::default();
    let f = load_model(
        &write_gguf(&dir.join("f.gguf"), &spec, GgmlDType::F32)?,
        ComputeDType::F32,
    )?;
    let ids = f.tokenizer.encode(TEXT)?;
    let exact = f
        .model
        .forward_last(&ids, &mut FullCache::new(&f.model.kv_geometry()))?;
    let scale = exact.iter().fold(0f32, |m, x| m.max(x.abs()));
    // (type, bound of the weight error alone, bound of the kernel error alone), both relative to
    // the largest logit; the quantised kernels also quantise activations to 8 bits.
    for (ty, weight_rel, kernel_rel) in [
        (GgmlDType::F16, 0.001, 0.001),
        (GgmlDType::Q8_0, 0.02, 0.04),
        (GgmlDType::Q4_0, 0.3, 0.04),
        (GgmlDType::Q4_1, 0.3, 0.04),
    ] {
        let path = write_gguf(&dir.join(format!("{ty:?}.gguf")), &spec, ty)?;
        let run = |dtype| -> Result<Vec<f32>> {
            let m = load_model(&path, dtype)?;
            m.model
                .forward_last(&ids, &mut FullCache::new(&m.model.kv_geometry()))
        };
        let dequantised = run(ComputeDType::F32)?;
        let kernels = run(ComputeDType::Quantized)?;
        let w = max_abs_diff(&exact, &dequantised);
        let k = max_abs_diff(&dequantised, &kernels);
        assert!(
            w < weight_rel * scale,
            "{ty:?}: weight error {w} (largest logit {scale})"
        );
        assert!(
            k < kernel_rel * scale,
            "{ty:?}: kernel error {k} (largest logit {scale})"
        );
    }
    Ok(())
}

#[test]
fn generation_is_deterministic_and_stops_at_budget() -> Result<()> {
    let dir = temp_dir("generate");
    let m = load_model(
        &write_gguf(&dir.join("m.gguf"), &TinySpec::default(), GgmlDType::Q8_0)?,
        ComputeDType::Quantized,
    )?;
    let prompt = m.tokenizer.encode("the cat")?;
    let run = |seed| -> Result<Vec<u32>> {
        let mut cache = FullCache::new(&m.model.kv_geometry());
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.8,
            top_k: 20,
            seed,
            ..Default::default()
        });
        let g = generate(
            &m.model,
            &m.tokenizer,
            &mut cache,
            &prompt,
            10,
            &mut s,
            &mut |_| {},
        )?;
        Ok(g.tokens)
    };
    let a = run(1)?;
    assert_eq!(a, run(1)?);
    assert!(a.len() <= 10);
    Ok(())
}

#[test]
fn tokenizer_matches_special_tokens_and_round_trips() -> Result<()> {
    let dir = temp_dir("tok");
    let m = load_model(
        &write_gguf(&dir.join("m.gguf"), &TinySpec::default(), GgmlDType::F32)?,
        ComputeDType::F32,
    )?;
    let ids = m.tokenizer.encode("<|im_start|>user\nthe 42<|im_end|>")?;
    assert_eq!(ids[0], 1);
    assert_eq!(*ids.last().unwrap(), 2);
    // digits are split one by one (the smollm pre-tokenizer)
    let digits = m.tokenizer.encode("42")?;
    assert_eq!(digits.len(), 2);
    assert_eq!(m.tokenizer.decode(&m.tokenizer.encode(TEXT)?)?, TEXT);
    assert!(m.tokenizer.stop_ids.contains(&2));
    Ok(())
}

#[test]
fn bad_files_give_clear_errors() -> Result<()> {
    let dir = temp_dir("bad");
    let err = |p: &std::path::Path| {
        format!(
            "{:#}",
            load_model(p, ComputeDType::Quantized)
                .err()
                .expect("must fail")
        )
    };
    assert!(err(&dir.join("missing.gguf")).contains("not found"));
    let not_gguf = dir.join("x.gguf");
    std::fs::write(&not_gguf, b"hello, this is not a model")?;
    assert!(err(&not_gguf).contains("not a GGUF file"));
    let good = write_gguf(
        &dir.join("good.gguf"),
        &TinySpec::default(),
        GgmlDType::Q8_0,
    )?;
    let bytes = std::fs::read(&good)?;
    for cut in [bytes.len() - 100, bytes.len() / 2, 40] {
        let p = dir.join(format!("cut{cut}.gguf"));
        std::fs::write(&p, &bytes[..cut])?;
        let e = err(&p);
        assert!(e.contains("truncated") || e.contains("corrupt"), "{e}");
    }
    let gpt = write_gguf_with(
        &dir.join("gpt.gguf"),
        &TinySpec::default(),
        GgmlDType::F32,
        "gptneox",
    )?;
    assert!(err(&gpt).contains("unsupported architecture `gptneox`"));
    Ok(())
}

#[test]
fn full_cache_refuses_more_than_the_context() -> Result<()> {
    let dir = temp_dir("ctx");
    let spec = TinySpec {
        context: 8,
        ..Default::default()
    };
    let m = load_model(
        &write_gguf(&dir.join("m.gguf"), &spec, GgmlDType::F32)?,
        ComputeDType::F32,
    )?;
    let mut cache = FullCache::new(&m.model.kv_geometry());
    let ids: Vec<u32> = (10..19).collect();
    let e = m
        .model
        .forward_last(&ids, &mut cache)
        .unwrap_err()
        .to_string();
    assert!(e.contains("context is full"), "{e}");
    Ok(())
}
