//! The compressed policies end to end on tiny random llama models written by the tests.

use anyhow::Result;
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use ferrite_gear::{build, GearCache, GearSpec};
use ferrite_llm::config::RopeStyle;
use ferrite_llm::perplexity;
use ferrite_llm::rope::Rope;
use ferrite_llm::testing::{temp_dir, write_gguf, TinySpec};
use ferrite_llm::{load_model, ComputeDType, FullCache, KvCache, KvGeometry, LoadedModel};

const TEXT: &str = "the cat sat on the mat in the hat, then the ant ate 12 beans and the hen ate \
                    the other 40 beans on the mat in the barn by the pond in the rain";

fn tiny(name: &str) -> Result<LoadedModel> {
    let dir = temp_dir(name);
    load_model(
        &write_gguf(&dir.join("m.gguf"), &TinySpec::default(), GgmlDType::F32)?,
        ComputeDType::F32,
    )
}

fn stream_nll(m: &LoadedModel, cache: &mut dyn KvCache) -> Result<Vec<f64>> {
    let ids = m.tokenizer.encode(TEXT)?;
    Ok(perplexity::streaming(&m.model, &ids, cache, &mut |_, _| {})?.nll)
}

#[test]
fn gear_with_every_component_off_is_quant() -> Result<()> {
    let m = tiny("gear-off")?;
    let g = m.model.kv_geometry();
    let mut quant = build("quant:4,buffer=16", &g)?;
    let mut gear = build("gear:4,outlier=0,rank=0,buffer=16", &g)?;
    let a = stream_nll(&m, quant.as_mut())?;
    let b = stream_nll(&m, gear.as_mut())?;
    assert!(a.len() > 64, "text too short to fill blocks: {}", a.len());
    assert_eq!(a, b);
    assert_eq!(quant.heap_bytes(), gear.heap_bytes());
    Ok(())
}

#[test]
fn eight_bits_track_the_full_cache_and_two_bits_less() -> Result<()> {
    let m = tiny("gear-8bit")?;
    let g = m.model.kv_geometry();
    let full = stream_nll(&m, &mut FullCache::new(&g))?;
    let gap = |spec: &str| -> Result<f64> {
        let nll = stream_nll(&m, build(spec, &g)?.as_mut())?;
        Ok(full
            .iter()
            .zip(&nll)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max))
    };
    let q8 = gap("quant:8,buffer=16")?;
    let q2 = gap("kivi:2,buffer=16,group=16")?;
    assert!(q8 < 0.02, "8-bit NLL gap {q8}");
    assert!(q2 > q8, "2-bit gap {q2} vs 8-bit {q8}");
    Ok(())
}

/// Prefill then decode through the trait: lengths, order, exact buffer and byte accounting.
#[test]
fn update_returns_every_token_with_the_buffer_exact() -> Result<()> {
    let dev = Device::Cpu;
    let (heads, hd) = (2, 16);
    let geometry = KvGeometry {
        n_layer: 1,
        n_kv_head: heads,
        head_dim: hd,
        max_tokens: 200,
        device: dev.clone(),
    };
    let rope = Rope::new(10_000.0, hd, RopeStyle::HalfSplit, &dev);
    let spec = GearSpec::parse("gear:4,buffer=16,rank=2,outlier=0.1")?;
    let mut cache = GearCache::new(spec, &geometry)?;
    let mut total = 0;
    for (step, t) in [40usize, 1, 1, 30].into_iter().enumerate() {
        let pos = cache.begin_step(t)?;
        let angles = rope.angles(&pos)?;
        let k = Tensor::randn(0f32, 1.0, (heads, t, hd), &dev)?;
        let v = (Tensor::randn(0f32, 1.0, (heads, t, hd), &dev)? + step as f64)?;
        let (k_all, v_all) = cache.update(0, &k, &v, &angles)?;
        total += t;
        assert_eq!(k_all.dims3()?, (heads, total, hd));
        // The newest token is always in the exact buffer.
        let last = |x: &Tensor| -> Result<Vec<f32>> {
            Ok(x.narrow(1, x.dim(1)? - 1, 1)?
                .flatten_all()?
                .to_vec1::<f32>()?)
        };
        assert_eq!(last(&v_all)?, last(&v)?);
        assert_eq!(last(&k_all)?, last(&angles.rotate(&k)?)?);
    }
    // 72 tokens = 4 blocks of 16 + 8 buffered (a full buffer is compressed when the next token
    // arrives).
    let store = &cache.stores()[0];
    assert_eq!((store.n_blocks(), store.buffered()), (4, 8));
    let b = cache.breakdown();
    // 4-bit codes: 4 blocks x (K + V) x 16 tokens x 32 channels / 2.
    assert_eq!(b.codes, 4 * 2 * 16 * 32 / 2);
    // KCVT: K has a (Δ, min) pair per channel, V per token, f16 each.
    assert_eq!(b.scales, 4 * (32 + 16) * 2 * 2);
    // Rank 2 per head: A [16x2] and B [16x2] f16, 2 heads, K and V.
    assert_eq!(b.low_rank, 4 * 2 * 2 * (16 * 2 + 16 * 2) * 2);
    assert_eq!(b.buffer, 2 * 16 * 32 * 4);
    assert_eq!(cache.heap_bytes(), b.total());
    assert_eq!(cache.f16_bytes(), 2 * 72 * 32 * 2);
    assert!(cache.scratch_bytes() >= 2 * 72 * 32 * 4);
    cache.reset();
    assert_eq!(cache.len(), 0);
    Ok(())
}

#[test]
fn a_window_policy_can_evict_whole_blocks() -> Result<()> {
    let spec = GearSpec::parse("kivi:2,buffer=8,group=4")?;
    let mut store = ferrite_gear::CompressedStore::new(spec.config, 8, 4, 2, 0)?;
    let rows: Vec<f32> = (0..30 * 4).map(|i| i as f32).collect();
    store.append(&rows, &rows, true)?;
    assert_eq!((store.len(), store.n_blocks()), (30, 3));
    let before = store.heap_bytes();
    assert_eq!(store.evict_oldest_block(), 8);
    assert_eq!(store.len(), 22);
    assert!(store.heap_bytes() < before);
    let (k, _) = store.materialise();
    // The oldest token left is token 8 (channel 0 of head 0 holds 4·t, within 2-bit error).
    assert!((k[0] - 32.0).abs() < 4.0, "{}", k[0]);
    Ok(())
}

#[test]
fn specs_that_do_not_fit_the_model_are_refused() -> Result<()> {
    let m = tiny("gear-bad")?;
    let g = m.model.kv_geometry();
    // 32 channels are not whole groups of 24; rank 40 exceeds a 16-wide head.
    for bad in [
        "kivi:2,group=24",
        "gear:4,rank=40",
        "gear:4,buffer=16,group=5",
    ] {
        let e = build(bad, &g)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("bad --kv spec"), "{bad}: {e}");
    }
    Ok(())
}

/// `n` token ids of repeated text.
fn ids(m: &LoadedModel, n: usize) -> Result<Vec<u32>> {
    let mut ids = m.tokenizer.encode(&TEXT.repeat(n / 40 + 2))?;
    ids.truncate(n);
    assert_eq!(ids.len(), n);
    Ok(ids)
}

fn nll(m: &LoadedModel, ids: &[u32], cache: &mut dyn KvCache) -> Result<Vec<f64>> {
    Ok(perplexity::streaming(&m.model, ids, cache, &mut |_, _| {})?.nll)
}

#[test]
fn sink_window_over_gear_is_the_plain_store_while_the_text_fits() -> Result<()> {
    let m = tiny("sink-gear-fits")?;
    let g = m.model.kv_geometry();
    // 100 tokens fit 4 sinks + a window of 100: nothing is evicted.
    let ids = ids(&m, 100)?;
    let plain = nll(&m, &ids, build("gear:4,buffer=16", &g)?.as_mut())?;
    let mut composed = build("sink:4+100/gear:4,buffer=16", &g)?;
    assert_eq!(nll(&m, &ids, composed.as_mut())?, plain);
    assert_eq!(composed.len(), 99); // the last token is only predicted
    Ok(())
}

#[test]
fn sink_window_over_8_bits_tracks_the_sink_cache_far_past_the_context() -> Result<()> {
    let m = tiny("sink-gear-8bit")?;
    let g = m.model.kv_geometry();
    let ids = ids(&m, 400)?; // context of the tiny model: 128
    let exact = nll(
        &m,
        &ids,
        ferrite_streaming::build("sink:4+60", &g)?.as_mut(),
    )?;
    let gap = |spec: &str| -> Result<f64> {
        let got = nll(&m, &ids, build(spec, &g)?.as_mut())?;
        assert_eq!(got.len(), exact.len());
        // Mean gap over the predictions after the first eviction.
        Ok(got[64..]
            .iter()
            .zip(&exact[64..])
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>()
            / (got.len() - 64) as f64)
    };
    let q8 = gap("sink:4+60/quant:8,buffer=16")?;
    let q2 = gap("sink:4+60/kivi:2,buffer=16,group=16")?;
    // Without the sinks' shift the model would see them at the wrong distance.
    let no_sinks = gap("window:64/quant:8,buffer=16")?;
    assert!(q8 < 0.01, "8-bit mean NLL gap {q8}");
    assert!(
        q2 > q8 && no_sinks > q8,
        "2-bit {q2}, no sinks {no_sinks}, 8-bit {q8}"
    );
    Ok(())
}

#[test]
fn sink_window_over_gear_streams_at_bounded_bytes() -> Result<()> {
    let m = tiny("sink-gear-bytes")?;
    let g = m.model.kv_geometry();
    let ids = ids(&m, 600)?;
    let cache = build("sink:4+60/gear:4,buffer=16", &g)?;
    let mut metered = ferrite_streaming::Metered::new(cache);
    let r = perplexity::streaming(&m.model, &ids, &mut metered, &mut |_, _| {})?;
    assert!(r.ppl.is_finite());
    assert_eq!(metered.len(), 64);
    let bytes = metered.bytes();
    // Full from token 65 on: the store then holds 60..75 tokens, so its bytes cycle by one
    // block of every layer and never grow.
    let after = &bytes[100..];
    let (lo, hi) = (after.iter().min().unwrap(), after.iter().max().unwrap());
    let head = &bytes[100..300];
    assert_eq!(head.iter().max(), Some(hi), "bytes grew: {hi}");
    let store = GearCache::new(GearSpec::parse("gear:4,buffer=16,prefill_rank=2")?, &g)?;
    let block = {
        let mut one = store;
        let angles = Rope::new(10_000.0, g.head_dim, RopeStyle::HalfSplit, &Device::Cpu)
            .angles(&(0..17).collect::<Vec<_>>())?;
        one.begin_step(17)?;
        let x = Tensor::randn(0f32, 1.0, (g.n_kv_head, 17, g.head_dim), &Device::Cpu)?;
        for layer in 0..g.n_layer {
            one.update(layer, &x, &x, &angles)?;
        }
        let b = one.breakdown();
        b.codes + b.scales + b.outliers + b.low_rank
    };
    // Two footprints, n or n + 1 blocks per layer: they differ by one block's payload plus its
    // record (the low-rank list's allocation).
    let mut distinct = after.to_vec();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 2, "{distinct:?}");
    assert!(
        hi - lo >= block && 2 * (hi - lo) < 3 * block,
        "bytes vary by {} for a block of {block}",
        hi - lo
    );
    // A fraction of the exact sink cache of the same size.
    let exact = ferrite_streaming::build("sink:4+60", &g)?;
    let mut exact = ferrite_streaming::Metered::new(exact);
    perplexity::streaming(&m.model, &ids[..100], &mut exact, &mut |_, _| {})?;
    assert!(*hi < exact.heap_bytes(), "{hi} vs {}", exact.heap_bytes());
    Ok(())
}

#[test]
fn chat_over_a_compressed_window_goes_on_past_the_context() -> Result<()> {
    use ferrite_llm::generate::generate;
    use ferrite_llm::sampling::{Sampler, SamplingParams};
    let m = tiny("sink-gear-chat")?;
    let mut cache = build("sink:4+44/gear:4,buffer=16", &m.model.kv_geometry())?;
    let mut sampler = Sampler::new(SamplingParams {
        temperature: 0.8,
        ..Default::default()
    });
    let mut total = 0;
    for round in 0..16 {
        let prompt = m.tokenizer.encode(&format!("r{round} the cat"))?;
        let out = generate(
            &m.model,
            &m.tokenizer,
            cache.as_mut(),
            &prompt,
            30,
            &mut sampler,
            &mut |_| {},
        )?;
        total += prompt.len() + out.tokens.len();
        assert!(cache.len() <= 48);
    }
    assert!(total > 3 * 128, "only {total} tokens streamed");
    Ok(())
}

/// With nothing compressed (the exact buffer holds the whole text) the packed decode path is the
/// full cache bit for bit: same dot products, softmax and summation order.
#[test]
fn an_uncompressed_store_decodes_like_the_full_cache() -> Result<()> {
    // SmolLM2's attention geometry: 9 query heads, 3 KV heads of 64.
    let spec = TinySpec {
        hidden: 576,
        heads: 9,
        kv_heads: 3,
        context: 512,
        ..TinySpec::default()
    };
    let dir = temp_dir("gear-exact-buffer");
    let m = load_model(
        &write_gguf(&dir.join("m.gguf"), &spec, GgmlDType::F32)?,
        ComputeDType::F32,
    )?;
    let g = m.model.kv_geometry();
    let ids = ids(&m, 300)?;
    let full = nll(&m, &ids, &mut FullCache::new(&g))?;
    let exact = nll(&m, &ids, build("quant:8,buffer=512", &g)?.as_mut())?;
    assert_eq!(full, exact);
    Ok(())
}
