//! StreamingLLM on tiny random llama models written by the tests themselves: equality with the
//! full cache while the text fits, equality with the reference scheme (keys before RoPE, whole
//! cache rotated to 0..L every step) far past the cache size, chunked appends, chat past the
//! context at constant memory.

use anyhow::{Context, Result};
use candle_core::quantized::GgmlDType;
use candle_core::Tensor;
use ferrite_llm::generate::generate;
use ferrite_llm::kv_cache::{FullCache, KvCache};
use ferrite_llm::rope::{Rope, RopeAngles};
use ferrite_llm::sampling::{Sampler, SamplingParams};
use ferrite_llm::testing::{temp_dir, write_gguf, TinySpec};
use ferrite_llm::{load_model, ComputeDType, LoadedModel};
use ferrite_streaming::{parse_spec, recompute, Rotation, SinkCache, SinkConfig};

const TEXT: &str = "the cat sat on the mat in the hat, then the ant ate 12 beans; ";

fn tiny(name: &str) -> Result<LoadedModel> {
    let dir = temp_dir(name);
    load_model(
        &write_gguf(&dir.join("m.gguf"), &TinySpec::default(), GgmlDType::F32)?,
        ComputeDType::F32,
    )
}

/// `n` token ids of repeated text.
fn ids(m: &LoadedModel, n: usize) -> Result<Vec<u32>> {
    let text = TEXT.repeat(n / 10 + 2);
    let mut ids = m.tokenizer.encode(&text)?;
    ids.truncate(n);
    assert_eq!(ids.len(), n);
    Ok(ids)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The scheme of the reference implementation, written as plainly as possible: tokens in text
/// order, keys before RoPE, evict the oldest non-sink token for space, rotate the whole cache to
/// positions `0..L` at every step.
struct ReferenceCache {
    sinks: usize,
    window: usize,
    rope: Rope,
    keys: Vec<Vec<Tensor>>,
    values: Vec<Vec<Tensor>>,
    len: usize,
}

impl ReferenceCache {
    fn new(sinks: usize, window: usize, rope: Rope, n_layer: usize) -> Self {
        Self {
            sinks,
            window,
            rope,
            keys: vec![Vec::new(); n_layer],
            values: vec![Vec::new(); n_layer],
            len: 0,
        }
    }
}

impl KvCache for ReferenceCache {
    fn spec(&self) -> String {
        "reference".into()
    }
    fn begin_step(&mut self, n_new: usize) -> Result<Vec<usize>> {
        while self.len + n_new > self.sinks + self.window {
            for rows in self.keys.iter_mut().chain(self.values.iter_mut()) {
                rows.remove(self.sinks);
            }
            self.len -= 1;
        }
        self.len += n_new;
        Ok((self.len - n_new..self.len).collect())
    }
    fn update(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
        _angles: &RopeAngles,
    ) -> Result<(Tensor, Tensor)> {
        for i in 0..k.dim(1)? {
            self.keys[layer].push(k.narrow(1, i, 1)?);
            self.values[layer].push(v.narrow(1, i, 1)?);
        }
        let k = Tensor::cat(&self.keys[layer], 1)?;
        let positions: Vec<usize> = (0..k.dim(1)?).collect();
        Ok((
            self.rope.rotate(&k, &positions)?,
            Tensor::cat(&self.values[layer], 1)?,
        ))
    }
    fn len(&self) -> usize {
        self.len
    }
    fn capacity(&self) -> usize {
        self.sinks + self.window
    }
    fn heap_bytes(&self) -> usize {
        0
    }
    fn reset(&mut self) {}
}

/// Logits after each chunk of `ids` fed in chunks of the given sizes (cycled).
fn run(
    m: &LoadedModel,
    ids: &[u32],
    chunks: &[usize],
    cache: &mut dyn KvCache,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::new();
    let mut at = 0;
    for &c in chunks.iter().cycle() {
        if at >= ids.len() {
            break;
        }
        let end = (at + c).min(ids.len());
        out.push(m.model.forward_last(&ids[at..end], cache)?);
        at = end;
    }
    Ok(out)
}

fn assert_close(a: &[Vec<f32>], b: &[Vec<f32>], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let d = max_abs_diff(x, y);
        assert!(d < tol, "{what}: step {i} differs by {d}");
    }
}

#[test]
fn equals_the_full_cache_while_the_text_fits() -> Result<()> {
    let m = tiny("fits")?;
    let ids = ids(&m, 100)?;
    let full = run(&m, &ids, &[1], &mut FullCache::new(&m.model.kv_geometry()))?;
    for spec in ["sink:4+96", "sink:1+120", "window:100", "sink:4+95,after"] {
        let mut cache = SinkCache::new(parse_spec(spec)?, &m.model.kv_geometry())?;
        let got = run(&m, &ids, &[1], &mut cache)?;
        assert_close(&full, &got, 1e-4, spec);
        assert_eq!(cache.evicted(), 0, "{spec}");
    }
    // Chunked prefill too.
    let full = run(
        &m,
        &ids,
        &[7, 1, 30],
        &mut FullCache::new(&m.model.kv_geometry()),
    )?;
    let mut cache = SinkCache::new(parse_spec("sink:4+96")?, &m.model.kv_geometry())?;
    assert_close(
        &full,
        &run(&m, &ids, &[7, 1, 30], &mut cache)?,
        1e-4,
        "chunks",
    );
    Ok(())
}

#[test]
fn incremental_and_naive_rotation_equal_the_reference_far_past_the_cache() -> Result<()> {
    let m = tiny("reference")?;
    let ids = ids(&m, 400)?;
    let g = m.model.kv_geometry();
    for (sinks, window) in [(4, 28), (1, 15), (0, 32), (8, 8)] {
        let config = SinkConfig {
            sinks,
            window,
            trim_after: false,
        };
        for chunks in [&[1usize][..], &[5, 1, 1, 7, 2]] {
            let mut reference = ReferenceCache::new(sinks, window, m.model.rope.clone(), g.n_layer);
            let want = run(&m, &ids, chunks, &mut reference)?;
            let mut fast = SinkCache::new(config, &g)?;
            let got = run(&m, &ids, chunks, &mut fast)?;
            assert_close(
                &want,
                &got,
                2e-4,
                &format!("incremental {sinks}+{window} {chunks:?}"),
            );
            let mut naive =
                SinkCache::with_rotation(config, &g, Rotation::Naive(m.model.rope.clone()))?;
            let got = run(&m, &ids, chunks, &mut naive)?;
            assert_close(
                &want,
                &got,
                2e-4,
                &format!("naive {sinks}+{window} {chunks:?}"),
            );
            assert!(fast.evicted() > 300);
        }
    }
    Ok(())
}

#[test]
fn trim_after_equals_the_reference_with_one_more_slot() -> Result<()> {
    // Evicting after attending (the reference code) is evicting before with one more slot.
    let m = tiny("after")?;
    let ids = ids(&m, 200)?;
    let g = m.model.kv_geometry();
    let mut reference = ReferenceCache::new(4, 21, m.model.rope.clone(), g.n_layer);
    let want = run(&m, &ids, &[1], &mut reference)?;
    let mut after = SinkCache::new(parse_spec("sink:4+20,after")?, &g)?;
    assert_close(&want, &run(&m, &ids, &[1], &mut after)?, 2e-4, "after");
    Ok(())
}

#[test]
fn streaming_ppl_runs_far_past_the_context_at_constant_bytes() -> Result<()> {
    let m = tiny("stream")?;
    let ids = ids(&m, 600)?; // context of the tiny model: 128
    let cache = SinkCache::new(parse_spec("sink:4+60")?, &m.model.kv_geometry())?;
    let mut metered = ferrite_streaming::Metered::new(Box::new(cache));
    let r = ferrite_llm::perplexity::streaming(&m.model, &ids, &mut metered, &mut |_, _| {})?;
    assert_eq!(r.tokens_scored, 599);
    assert!(r.ppl.is_finite());
    let bytes = metered.bytes();
    assert_eq!(bytes.len(), 600);
    assert!(
        bytes[65..].iter().all(|&b| b == bytes[65]),
        "bytes grew after the cache filled"
    );
    assert_eq!(r.kv_bytes_peak, bytes[65]);
    Ok(())
}

#[test]
fn chat_goes_on_past_the_context_without_growing() -> Result<()> {
    let m = tiny("chat")?;
    let mut cache = SinkCache::new(parse_spec("sink:4+44")?, &m.model.kv_geometry())?;
    let mut sampler = Sampler::new(SamplingParams {
        temperature: 0.8,
        ..Default::default()
    });
    let mut bytes = Vec::new();
    let mut total = 0;
    for round in 0..16 {
        // Each turn must fit the window at once (byte-level tiny tokenizer: short prompts).
        let prompt = m.tokenizer.encode(&format!("r{round} the cat"))?;
        let g = generate(
            &m.model,
            &m.tokenizer,
            &mut cache,
            &prompt,
            30,
            &mut sampler,
            &mut |_| {},
        )?;
        total += prompt.len() + g.tokens.len();
        bytes.push(cache.heap_bytes());
        assert!(cache.len() <= 48);
    }
    assert!(total > 3 * 128, "only {total} tokens streamed");
    assert!(bytes.iter().all(|&b| b == bytes[0]));
    Ok(())
}

#[test]
fn recompute_equals_the_full_cache_inside_the_window() -> Result<()> {
    let m = tiny("recompute")?;
    let ids = ids(&m, 60)?;
    let full = ferrite_llm::perplexity::streaming(
        &m.model,
        &ids,
        &mut FullCache::new(&m.model.kv_geometry()),
        &mut |_, _| {},
    )?;
    let r = recompute::perplexity(&m.model, &ids, 64, 1, &mut |_, _| {})?;
    assert!(
        (r.ppl - full.ppl).abs() / full.ppl < 1e-4,
        "{} vs {}",
        r.ppl,
        full.ppl
    );
    // A short window forgets: predictions differ, and every 7th one is scored.
    let short = recompute::perplexity(&m.model, &ids, 8, 7, &mut |_, _| {})?;
    assert_eq!(short.tokens_scored, 59 / 7);
    let first = short.nll.first().context("scored")?;
    assert!(
        (first - full.nll[6]).abs() < 1e-3,
        "window 8 sees all 7 tokens of prediction 6"
    );
    Ok(())
}
