//! HF safetensors checkpoints: a directory with `config.json`, `*.safetensors` and
//! `tokenizer.json`, tensors named as in `transformers`' `LlamaForCausalLM`.
//!
//! Tensors are read with positioned reads, one at a time, into memory the model keeps (no
//! file mapping), so resident memory is what the weights take as held for compute (dense f32,
//! quantised or sparse), plus one tensor while loading.
//!
//! Sparse matrices (`ferrite-sparse`) are stored as plain component tensors
//! `<name>.values`, `<name>.bitmap` | `<name>.col_idx` + `<name>.row_ptr` | `<name>.nm_meta`, and
//! the file's `__metadata__` maps `ferrite.sparse.<name>` to the matrix's JSON descriptor; the
//! dense `<name>` is then absent. Any safetensors reader opens such a file; ferrite rebuilds the
//! matrices ([`SafetensorsDir`]) and writes them ([`save_tensors`], [`convert_dir`]).

use crate::config::{HfConfig, LlamaConfig};
use crate::weights::{StoredTensor, TensorRole, WeightSource};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use ferrite_sparse::{
    Component, ComponentDType, ComponentSource, EncodePolicy, Layout, SparseError, SparseMatrix,
    METADATA_PREFIX,
};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest header accepted (the format caps it at 100 MB).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor's entry in a file's header.
#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    dtype: String,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: u64,
    end: u64,
}

/// Bytes per element of a safetensors dtype, for the ones a checkpoint may hold.
fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "U8" | "I8" | "BOOL" => 1,
        "F16" | "BF16" | "U16" | "I16" => 2,
        "F32" | "U32" | "I32" => 4,
        "F64" | "U64" | "I64" => 8,
        _ => return None,
    })
}

/// An opened file, its tensors and its `__metadata__`.
type Header = (File, Vec<(String, Entry)>, HashMap<String, String>);

/// Parses the header of `path`, checking that every tensor lies inside the file.
fn read_header(path: &Path, file_index: usize) -> Result<Header> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = f.metadata()?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| anyhow!("{} is not a safetensors file ({len} bytes)", path.display()))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER_BYTES || 8 + n > len {
        bail!(
            "{} is truncated or not safetensors: header of {n} bytes, file of {len}",
            path.display()
        );
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .with_context(|| format!("{}: header is not a JSON object", path.display()))?;
    let data_start = 8 + n;
    let mut entries = Vec::new();
    let mut metadata = HashMap::new();
    for (name, v) in header {
        if name == "__metadata__" {
            let m: HashMap<String, String> = serde_json::from_value(v)
                .with_context(|| format!("{}: __metadata__ is not string pairs", path.display()))?;
            metadata = m;
            continue;
        }
        #[derive(serde::Deserialize)]
        struct Info {
            dtype: String,
            shape: Vec<usize>,
            data_offsets: (u64, u64),
        }
        let info: Info = serde_json::from_value(v)
            .with_context(|| format!("{}: bad header entry for `{name}`", path.display()))?;
        let (a, b) = info.data_offsets;
        let size = dtype_size(&info.dtype)
            .with_context(|| format!("`{name}`: unsupported dtype {}", info.dtype))?;
        let want = info.shape.iter().product::<usize>() as u64 * size as u64;
        if b < a || b - a != want {
            bail!(
                "{}: `{name}` spans bytes {a}..{b} but {:?} {} needs {want}",
                path.display(),
                info.shape,
                info.dtype
            );
        }
        if data_start + b > len {
            bail!(
                "{} is truncated: `{name}` ends at byte {} but the file has {len}",
                path.display(),
                data_start + b
            );
        }
        entries.push((
            name,
            Entry {
                file: file_index,
                dtype: info.dtype,
                shape: info.shape,
                start: data_start + a,
                end: data_start + b,
            },
        ));
    }
    Ok((f, entries, metadata))
}

/// An opened safetensors checkpoint directory.
pub struct SafetensorsDir {
    files: Vec<(PathBuf, File)>,
    entries: HashMap<String, Entry>,
    /// Sparse tensor name → descriptor.
    sparse: BTreeMap<String, String>,
    device: Device,
    /// Directory path.
    pub dir: PathBuf,
}

impl SafetensorsDir {
    /// Opens every `*.safetensors` file in `dir` and parses `config.json`.
    pub fn open(dir: &Path, device: &Device) -> Result<(Self, LlamaConfig)> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .with_context(|| format!("cannot read {}", config_path.display()))?;
        let config = HfConfig::parse(&text)
            .with_context(|| format!("in {}", config_path.display()))?
            .into_llama()?;
        Ok((Self::open_tensors(dir, device)?, config))
    }

    /// Opens the `*.safetensors` files of `dir` (no `config.json` needed).
    pub fn open_tensors(dir: &Path, device: &Device) -> Result<Self> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            bail!("no *.safetensors file in {}", dir.display());
        }
        let (mut files, mut entries, mut sparse) = (Vec::new(), HashMap::new(), BTreeMap::new());
        for (i, p) in paths.into_iter().enumerate() {
            let (f, es, md) = read_header(&p, i)?;
            entries.extend(es);
            sparse.extend(
                md.into_iter()
                    .filter_map(|(k, v)| Some((k.strip_prefix(METADATA_PREFIX)?.to_string(), v))),
            );
            files.push((p, f));
        }
        sparse.remove("version");
        Ok(Self {
            files,
            entries,
            sparse,
            device: device.clone(),
            dir: dir.to_path_buf(),
        })
    }

    fn read_bytes(&self, name: &str, e: &Entry) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; (e.end - e.start) as usize];
        let (path, f) = &self.files[e.file];
        f.read_exact_at(&mut buf, e.start)
            .with_context(|| format!("reading `{name}` from {}", path.display()))?;
        Ok(buf)
    }

    fn read_dense(&self, name: &str, e: &Entry) -> Result<Tensor> {
        let dtype = match e.dtype.as_str() {
            "F32" => {
                // Read straight into the f32 buffer the tensor keeps (no second copy).
                let n: usize = e.shape.iter().product();
                let mut v = vec![0f32; n];
                // SAFETY: the f32 buffer is viewed as its own bytes, any bit pattern is a valid
                // f32; files are little-endian, as is every target this builds for (below).
                let bytes = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), n * 4) };
                let (path, f) = &self.files[e.file];
                f.read_exact_at(bytes, e.start)
                    .with_context(|| format!("reading `{name}` from {}", path.display()))?;
                #[cfg(target_endian = "big")]
                v.iter_mut()
                    .for_each(|x| *x = f32::from_bits(x.to_bits().swap_bytes()));
                return Ok(Tensor::from_vec(v, e.shape.clone(), &self.device)?);
            }
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "F64" => DType::F64,
            other => bail!("`{name}` has dtype {other}, expected a float type"),
        };
        let bytes = self.read_bytes(name, e)?;
        Ok(Tensor::from_raw_buffer(
            &bytes,
            dtype,
            &e.shape,
            &self.device,
        )?)
    }

    fn read_sparse(&self, name: &str, descriptor: &str) -> Result<SparseMatrix> {
        struct Parts<'a> {
            dir: &'a SafetensorsDir,
            name: &'a str,
        }
        impl ComponentSource for Parts<'_> {
            fn component(
                &mut self,
                suffix: &'static str,
            ) -> std::result::Result<Option<Component>, SparseError> {
                let full = format!("{}.{suffix}", self.name);
                let Some(e) = self.dir.entries.get(&full) else {
                    return Ok(None);
                };
                let bad = |problem: String| SparseError::Component {
                    component: suffix,
                    problem,
                };
                let dtype = ComponentDType::from_safetensors_name(&e.dtype)
                    .ok_or_else(|| bad(format!("dtype {}", e.dtype)))?;
                let bytes = self
                    .dir
                    .read_bytes(&full, e)
                    .map_err(|err| bad(format!("{err:#}")))?;
                Ok(Some(Component {
                    suffix,
                    dtype,
                    shape: e.shape.clone(),
                    bytes,
                }))
            }
        }
        SparseMatrix::from_components(descriptor, &mut Parts { dir: self, name })
            .with_context(|| format!("sparse tensor `{name}` in {}", self.dir.display()))
    }

    /// The tensor `name` as stored (dense, or sparse when the metadata says so), or `None`.
    pub fn load_named(&self, name: &str) -> Result<Option<StoredTensor>> {
        if let Some(e) = self.entries.get(name) {
            return Ok(Some(StoredTensor::Dense(self.read_dense(name, e)?)));
        }
        match self.sparse.get(name) {
            Some(d) => Ok(Some(StoredTensor::Sparse(Arc::new(
                self.read_sparse(name, d)?,
            )))),
            None => Ok(None),
        }
    }

    /// Names of the model's tensors (a sparse matrix once, not its components), sorted.
    pub fn tensor_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .entries
            .keys()
            .filter(|n| !self.is_component(n))
            .cloned()
            .chain(self.sparse.keys().cloned())
            .collect();
        names.sort();
        names
    }

    fn is_component(&self, name: &str) -> bool {
        name.rsplit_once('.')
            .is_some_and(|(base, _)| self.sparse.contains_key(base))
    }

    /// `(tensor, type, shape)` for every tensor: the dtype of dense ones, `sparse-<layout>`
    /// for sparse ones.
    pub fn tensor_list(&self) -> Result<Vec<(String, String, Vec<usize>)>> {
        self.tensor_names()
            .into_iter()
            .map(|n| {
                if let Some(e) = self.entries.get(&n) {
                    return Ok((n, e.dtype.to_lowercase(), e.shape.clone()));
                }
                let d: ferrite_sparse::Descriptor = serde_json::from_str(&self.sparse[&n])
                    .with_context(|| format!("descriptor of `{n}`"))?;
                let layout = match (d.n, d.m) {
                    (Some(n), Some(m)) => format!("{n}:{m}"),
                    _ => d.format.clone(),
                };
                Ok((n, format!("sparse-{layout}"), vec![d.rows, d.cols]))
            })
            .collect()
    }
}

/// `transformers`' name for a tensor role.
pub fn hf_name(role: TensorRole) -> String {
    use TensorRole::*;
    match role {
        TokenEmbedding => "model.embed_tokens.weight".into(),
        OutputNorm => "model.norm.weight".into(),
        Output => "lm_head.weight".into(),
        AttnNorm(l) => format!("model.layers.{l}.input_layernorm.weight"),
        Q(l) => format!("model.layers.{l}.self_attn.q_proj.weight"),
        K(l) => format!("model.layers.{l}.self_attn.k_proj.weight"),
        V(l) => format!("model.layers.{l}.self_attn.v_proj.weight"),
        O(l) => format!("model.layers.{l}.self_attn.o_proj.weight"),
        FfnNorm(l) => format!("model.layers.{l}.post_attention_layernorm.weight"),
        Gate(l) => format!("model.layers.{l}.mlp.gate_proj.weight"),
        Up(l) => format!("model.layers.{l}.mlp.up_proj.weight"),
        Down(l) => format!("model.layers.{l}.mlp.down_proj.weight"),
    }
}

impl WeightSource for SafetensorsDir {
    fn load(&mut self, role: TensorRole) -> Result<Option<StoredTensor>> {
        self.load_named(&hf_name(role))
    }

    fn format(&self) -> &'static str {
        "safetensors"
    }
}

/// How a checkpoint's matrices are written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StorageFormat {
    /// Every tensor dense, in its own dtype (plain safetensors).
    Dense,
    /// Matrices the policy finds sparse enough in a sparse layout, the rest dense.
    Sparse(EncodePolicy),
}

impl std::str::FromStr for StorageFormat {
    type Err = anyhow::Error;
    /// `dense`, `sparse` (automatic layout), or `sparse:<layout>` with a layout of
    /// `auto`, `bitmap`, `csr` or `N:M` (e.g. `sparse:2:4`).
    fn from_str(s: &str) -> Result<Self> {
        if s == "dense" {
            return Ok(Self::Dense);
        }
        let layout = match s.strip_prefix("sparse") {
            Some("") => Layout::Auto,
            Some(rest) if rest.starts_with(':') => rest[1..].parse()?,
            _ => bail!(
                "unknown storage format `{s}` (expected dense, sparse or sparse:<auto|bitmap|csr|N:M>)"
            ),
        };
        Ok(Self::Sparse(EncodePolicy {
            layout,
            ..EncodePolicy::default()
        }))
    }
}

/// What [`save_tensors`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SaveReport {
    /// Tensors written dense.
    pub dense_tensors: usize,
    /// Matrices written sparse.
    pub sparse_tensors: usize,
    /// Size of the file.
    pub file_bytes: u64,
}

enum Payload<'a> {
    Dense(&'a Tensor),
    Component(Component),
}

fn safetensors_dtype(d: DType) -> Result<&'static str> {
    Ok(match d {
        DType::F32 => "F32",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::F64 => "F64",
        other => bail!("cannot store a {other:?} tensor"),
    })
}

/// Writes `tensors` (HF names) to `path` atomically (`<path>.tmp`, then rename), encoding the
/// 2-D ones `format` finds sparse enough as sparse components.
pub fn save_tensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    format: &StorageFormat,
) -> Result<SaveReport> {
    let mut report = SaveReport::default();
    let mut metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let mut items: Vec<(String, &'static str, Vec<usize>, Payload)> = Vec::new();
    for (name, t) in tensors {
        let sparse = match format {
            StorageFormat::Sparse(policy) if t.rank() == 2 && t.dtype().is_float() => {
                let (rows, cols) = t.dims2()?;
                let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                policy
                    .encode(&v, rows, cols)
                    .with_context(|| format!("encoding `{name}`"))?
            }
            _ => None,
        };
        match sparse {
            Some(s) => {
                metadata.insert(format!("{METADATA_PREFIX}{name}"), s.descriptor());
                for c in s.components() {
                    let shape = c.shape.clone();
                    items.push((
                        format!("{name}.{}", c.suffix),
                        c.dtype.safetensors_name(),
                        shape,
                        Payload::Component(c),
                    ));
                }
                report.sparse_tensors += 1;
            }
            None => {
                items.push((
                    name.clone(),
                    safetensors_dtype(t.dtype())?,
                    t.dims().to_vec(),
                    Payload::Dense(t),
                ));
                report.dense_tensors += 1;
            }
        }
    }
    if report.sparse_tensors > 0 {
        metadata.insert(format!("{METADATA_PREFIX}version"), "1".into());
    }
    // Widest elements first so every tensor starts aligned to its element size.
    items.sort_by(|a, b| {
        let size = |d: &str| dtype_size(d).unwrap_or(1);
        size(b.1).cmp(&size(a.1)).then_with(|| a.0.cmp(&b.0))
    });
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::to_value(&metadata)?);
    let mut offset = 0u64;
    for (name, dtype, shape, _) in &items {
        let bytes = (shape.iter().product::<usize>() * dtype_size(dtype).unwrap_or(1)) as u64;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut header = serde_json::to_vec(&header)?;
    header.resize(header.len().next_multiple_of(8), b' ');
    let tmp = path.with_extension("safetensors.tmp");
    let write = || -> Result<()> {
        let mut w = BufWriter::new(File::create(&tmp)?);
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(&header)?;
        for (_, _, _, payload) in &items {
            match payload {
                Payload::Component(c) => w.write_all(&c.bytes)?,
                Payload::Dense(t) => {
                    let t = t.flatten_all()?;
                    let bytes: Vec<u8> = match t.dtype() {
                        DType::F32 => t
                            .to_vec1::<f32>()?
                            .iter()
                            .flat_map(|x| x.to_le_bytes())
                            .collect(),
                        DType::F16 => t
                            .to_vec1::<half::f16>()?
                            .iter()
                            .flat_map(|x| x.to_le_bytes())
                            .collect(),
                        DType::BF16 => t
                            .to_vec1::<half::bf16>()?
                            .iter()
                            .flat_map(|x| x.to_le_bytes())
                            .collect(),
                        DType::F64 => t
                            .to_vec1::<f64>()?
                            .iter()
                            .flat_map(|x| x.to_le_bytes())
                            .collect(),
                        other => bail!("cannot store a {other:?} tensor"),
                    };
                    w.write_all(&bytes)?;
                }
            }
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    };
    write().with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    report.file_bytes = std::fs::metadata(path)?.len();
    Ok(report)
}

/// Re-encodes the checkpoint directory `src` into `dst` (dense to sparse or back): every
/// tensor of its `*.safetensors` goes into `dst/model.safetensors`, the other files
/// (`config.json`, `tokenizer.json`, ...) are copied.
pub fn convert_dir(src: &Path, dst: &Path, format: &StorageFormat) -> Result<SaveReport> {
    if src.canonicalize().ok() == dst.canonicalize().ok() {
        bail!("convert: source and destination are the same directory");
    }
    let st = SafetensorsDir::open_tensors(src, &Device::Cpu)?;
    std::fs::create_dir_all(dst).with_context(|| format!("cannot create {}", dst.display()))?;
    for e in std::fs::read_dir(src)? {
        let p = e?.path();
        if p.is_file() && p.extension().is_none_or(|x| x != "safetensors") {
            let to = dst.join(p.file_name().context("file name")?);
            std::fs::copy(&p, &to)
                .with_context(|| format!("copying {} to {}", p.display(), to.display()))?;
        }
    }
    let mut tensors = Vec::new();
    for name in st.tensor_names() {
        let t = st.load_named(&name)?.context("listed tensor vanished")?;
        let t = match t {
            StoredTensor::Dense(t) => t,
            other => other.to_f32()?,
        };
        tensors.push((name, t));
    }
    save_tensors(&dst.join("model.safetensors"), &tensors, format)
}
