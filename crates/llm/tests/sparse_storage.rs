//! Sparse storage end to end on a tiny model: a masked (pruned-looking) checkpoint written
//! sparse loads with the same logits as written dense, `--dtype sparse` converts the dense one
//! at load, conversion round-trips exactly, and damaged sparse files are refused clearly.
//!
//! The masks here are fixed index patterns (test fixtures), not a pruning method.

use anyhow::Result;
use candle_core::{Device, Tensor};
use ferrite_llm::linear::Linear;
use ferrite_llm::safetensors::{convert_dir, save_tensors, SafetensorsDir, StorageFormat};
use ferrite_llm::testing::{temp_dir, write_safetensors_dir, TinySpec};
use ferrite_llm::weights::StoredTensor;
use ferrite_llm::{load_model, ComputeDType, FullCache, Llama};
use std::path::{Path, PathBuf};

const TEXT: &str = "the cat sat on the mat in the hat, then the ant ate 12 beans";

/// Which entries of a projection a fixture mask zeroes.
#[derive(Clone, Copy)]
enum Mask {
    /// About half, scattered (a hash of the index).
    Half,
    /// Two of every four along a row.
    TwoOfFour,
}

fn masked(t: &Tensor, mask: Mask) -> Result<Tensor> {
    let (rows, cols) = t.dims2()?;
    let mut v = t.flatten_all()?.to_vec1::<f32>()?;
    for (i, w) in v.iter_mut().enumerate() {
        let zero = match mask {
            Mask::Half => (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 63 == 1,
            Mask::TwoOfFour => matches!((i % cols) % 4, 0 | 3),
        };
        if zero {
            *w = 0.0;
        }
    }
    Ok(Tensor::from_vec(v, (rows, cols), &Device::Cpu)?)
}

/// A tiny HF dir whose projections carry `mask`, written dense.
fn masked_dense_dir(root: &Path, mask: Mask) -> Result<PathBuf> {
    let src = write_safetensors_dir(&root.join("orig"), &TinySpec::default())?;
    let st = SafetensorsDir::open_tensors(&src, &Device::Cpu)?;
    let mut tensors = Vec::new();
    for name in st.tensor_names() {
        let Some(StoredTensor::Dense(t)) = st.load_named(&name)? else {
            unreachable!("a plain checkpoint")
        };
        let t = if name.contains("_proj") {
            masked(&t, mask)?
        } else {
            t
        };
        tensors.push((name, t));
    }
    let dense = root.join("dense");
    std::fs::create_dir_all(&dense)?;
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dense.join(f))?;
    }
    save_tensors(
        &dense.join("model.safetensors"),
        &tensors,
        &StorageFormat::Dense,
    )?;
    Ok(dense)
}

/// Logits of the whole prompt (prompt-chunk kernels) and of one more token (decode kernels).
fn logits(m: &Llama, ids: &[u32]) -> Result<Vec<f32>> {
    let mut cache = FullCache::new(&m.kv_geometry());
    let h = m.forward_hidden(ids, &mut cache)?;
    let mut out = m.logits(&h)?.flatten_all()?.to_vec1::<f32>()?;
    out.extend(m.forward_last(&ids[..1], &mut cache)?);
    Ok(out)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn sparse_layers(m: &Llama) -> usize {
    m.blocks
        .iter()
        .flat_map(|b| {
            [
                &b.attn.q,
                &b.attn.k,
                &b.attn.v,
                &b.attn.o,
                &b.mlp.gate,
                &b.mlp.up,
                &b.mlp.down,
            ]
        })
        .filter(|l| matches!(l, Linear::Sparse(_)))
        .count()
}

#[test]
fn sparse_storage_gives_the_dense_logits() -> Result<()> {
    for (mask, layout) in [
        (Mask::Half, "sparse-bitmap"),
        (Mask::TwoOfFour, "sparse-2:4"),
    ] {
        let root = temp_dir(&format!("sparse-{layout}"));
        let dense = masked_dense_dir(&root, mask)?;
        let sparse = root.join("sparse");
        let report = convert_dir(&dense, &sparse, &"sparse".parse()?)?;
        assert_eq!(report.sparse_tensors, 2 * 7, "every projection encoded");
        let (ds, ss) = (
            std::fs::metadata(dense.join("model.safetensors"))?.len(),
            std::fs::metadata(sparse.join("model.safetensors"))?.len(),
        );
        let reference = load_model(&dense, ComputeDType::F32)?;
        // The default dtype keeps what the file stores; `sparse` converts the dense file.
        let from_file = load_model(&sparse, ComputeDType::Quantized)?;
        let converted = load_model(&dense, ComputeDType::Sparse)?;
        assert!(
            from_file.tensors.iter().any(|(_, ty, _)| ty == layout),
            "{layout}"
        );
        let ids = reference.tokenizer.encode(TEXT)?;
        assert!(
            ids.len() >= 8,
            "the prompt must exercise the prompt-chunk kernels"
        );
        let want = logits(&reference.model, &ids)?;
        for m in [&from_file, &converted] {
            assert_eq!(sparse_layers(&m.model), 14, "{layout}");
            let d = max_abs_diff(&want, &logits(&m.model, &ids)?);
            assert!(d < 1e-4, "{layout}: max logit difference {d}");
        }
        assert!(
            from_file.model.weight_bytes() < reference.model.weight_bytes(),
            "sparse weights take less memory"
        );
        // The tiny model's embedding (dense) dominates; the projections alone shrink ~47%.
        assert!(ss < ds, "sparse file {ss} bytes vs dense {ds}");
        std::fs::remove_dir_all(&root)?;
    }
    Ok(())
}

#[test]
fn conversion_round_trips_exactly() -> Result<()> {
    let root = temp_dir("sparse-roundtrip");
    let dense = masked_dense_dir(&root, Mask::Half)?;
    for format in ["sparse:bitmap", "sparse:csr", "sparse"] {
        let sparse = root.join(format.replace(':', "-"));
        convert_dir(&dense, &sparse, &format.parse()?)?;
        let back = root.join(format!("{}-back", format.replace(':', "-")));
        convert_dir(&sparse, &back, &StorageFormat::Dense)?;
        let (a, b) = (
            SafetensorsDir::open_tensors(&dense, &Device::Cpu)?,
            SafetensorsDir::open_tensors(&back, &Device::Cpu)?,
        );
        assert_eq!(a.tensor_names(), b.tensor_names());
        for name in a.tensor_names() {
            let get = |d: &SafetensorsDir| -> Result<Vec<u32>> {
                let t = d.load_named(&name)?.unwrap().to_f32()?;
                Ok(t.flatten_all()?
                    .to_vec1::<f32>()?
                    .iter()
                    .map(|x| x.to_bits())
                    .collect())
            };
            assert_eq!(get(&a)?, get(&b)?, "{format}: {name}");
        }
    }
    std::fs::remove_dir_all(&root)?;
    Ok(())
}

/// Byte range of tensor `name` in a safetensors file.
fn data_range(file: &[u8], name: &str) -> (usize, usize) {
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&file[8..8 + n]).unwrap();
    let off = &header[name]["data_offsets"];
    let (a, b) = (
        off[0].as_u64().unwrap() as usize,
        off[1].as_u64().unwrap() as usize,
    );
    (8 + n + a, 8 + n + b)
}

#[test]
fn damaged_sparse_files_are_refused_with_a_clear_error() -> Result<()> {
    let root = temp_dir("sparse-damaged");
    let dense = masked_dense_dir(&root, Mask::Half)?;
    let sparse = root.join("sparse");
    convert_dir(&dense, &sparse, &"sparse:bitmap".parse()?)?;
    let file = sparse.join("model.safetensors");
    let good = std::fs::read(&file)?;
    let error = |bytes: &[u8]| -> String {
        std::fs::write(&file, bytes).unwrap();
        match load_model(&sparse, ComputeDType::Quantized) {
            Ok(_) => panic!("a damaged file loaded"),
            Err(e) => format!("{e:#}"),
        }
    };
    let e = error(&good[..good.len() - 100]);
    assert!(e.contains("truncated"), "{e}");
    let name = "model.layers.1.mlp.up_proj.weight";
    let (a, _) = data_range(&good, &format!("{name}.bitmap"));
    let mut flipped = good.clone();
    flipped[a] ^= 0x10;
    let e = error(&flipped);
    assert!(
        e.contains("corrupt sparse tensor") && e.contains(name),
        "{e}"
    );
    // The header names the values component differently (same length, so offsets hold).
    let mut renamed = good.clone();
    let key = format!("{name}.values\"");
    let at = renamed
        .windows(key.len())
        .position(|w| w == key.as_bytes())
        .expect("component in header");
    renamed[at + key.len() - 2] = b'z';
    let e = error(&renamed);
    assert!(e.contains("lacks its `values`"), "{e}");
    std::fs::remove_dir_all(&root)?;
    Ok(())
}
