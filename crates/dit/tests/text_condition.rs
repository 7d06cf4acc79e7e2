//! Worked example of text conditions on the real SmolLM2-135M token embeddings: the ten
//! Fashion-MNIST class names as sequences for the cross-attention DiT. Fails when the asset is
//! missing (`make setup`).

use anyhow::Result;
use candle_core::{DType, Device, Tensor, D};
use ferrite_dit::text_condition::{conditions_for_labels, Pooling, TextEmbedder};
use ferrite_dit::{seeded_var_builder, Condition, Conditioning, DiT, DitConfig, GuidedChannels};
use std::path::Path;

fn cosine(a: &Tensor, b: &Tensor) -> f32 {
    let dot = (a * b)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let na = a
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt();
    let nb = b
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt();
    dot / (na * nb)
}

#[test]
fn class_names_condition_a_cross_attention_dit() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = TextEmbedder::load(&root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf"))?;
    assert_eq!(text.width(), 576);
    let mean = text.fashion_mnist_classes(Pooling::Mean)?;
    assert_eq!(mean.dims(), &[10, 1, 576]);
    let tokens = text.fashion_mnist_classes(Pooling::Tokens)?;
    let (n, len, width) = tokens.dims3()?;
    assert_eq!((n, width), (10, 576));
    assert!(len >= 2, "`Ankle boot` is more than one token");
    // unit RMS per token
    let rms = tokens
        .sqr()?
        .mean(D::Minus1)?
        .sqrt()?
        .flatten_all()?
        .to_vec1::<f32>()?;
    assert!(rms.iter().all(|r| (r - 1.0).abs() < 1e-3));
    // "Shirt" (6) is closer to "T-shirt/top" (0) than to "Bag" (8).
    let row = |i: usize| mean.get(i).unwrap().flatten_all().unwrap();
    let (shirt_tshirt, shirt_bag) = (cosine(&row(6), &row(0)), cosine(&row(6), &row(8)));
    assert!(shirt_tshirt > shirt_bag, "{shirt_tshirt} vs {shirt_bag}");
    assert!(text.embed("").is_err());

    let mut cfg = DitConfig::preset("cpu-tiny")?.with_conditioning(Conditioning::CrossAttention);
    (cfg.hidden_size, cfg.depth, cfg.cond_dim) = (32, 1, Some(576));
    let varmap = candle_nn::VarMap::new();
    let dit = DiT::new(
        &cfg,
        seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu),
    )?;
    let labels = Tensor::new(&[9u32, 0, 5], &Device::Cpu)?;
    let cond = conditions_for_labels(&tokens, &labels)?;
    let x = Tensor::randn(0f32, 1., (3, 1, 28, 28), &Device::Cpu)?;
    let t = Tensor::new(&[10f32, 500., 900.], &Device::Cpu)?;
    let out = dit.forward(&x, &t, Condition::Sequence(&cond), true)?;
    assert_eq!(out.dims(), &[3, 1, 28, 28]);
    let guided =
        dit.forward_guided(&x, &t, Condition::Sequence(&cond), 3.0, GuidedChannels::Eps)?;
    assert_eq!(guided.dims(), &[3, 1, 28, 28]);
    Ok(())
}
