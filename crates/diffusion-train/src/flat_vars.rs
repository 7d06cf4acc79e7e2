//! Named f32 variables seen as one flat vector (names sorted, the order of a
//! [`ParamLayout`]): optimizer moments and EMA averages live in such vectors and are updated in
//! one pass split over the kernels' pool, instead of as a tensor per variable.

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Tensor, Var};
use ferrite_dit::backprop::ParamLayout;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

/// Sorted named variables and where each lies in the flat vector.
pub struct FlatVars {
    slots: Vec<(String, Var, Range<usize>)>,
    len: usize,
}

impl FlatVars {
    /// The variables, sorted by name; all must be f32.
    pub fn new(mut named_vars: Vec<(String, Var)>) -> Result<Self> {
        named_vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut len = 0;
        let mut slots = Vec::with_capacity(named_vars.len());
        for (name, var) in named_vars {
            ensure!(
                var.dtype() == DType::F32,
                "{name} is {:?}; training state is f32",
                var.dtype()
            );
            let n = var.elem_count();
            slots.push((name, var, len..len + n));
            len += n;
        }
        Ok(Self { slots, len })
    }

    /// Elements of all variables together.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The same order and sizes as a [`ParamLayout`].
    pub fn layout(&self) -> ParamLayout {
        ParamLayout::new(
            self.slots
                .iter()
                .map(|(n, v, _)| (n.clone(), v.dims().to_vec()))
                .collect(),
        )
    }

    /// Each variable with its range.
    pub fn slots(&self) -> impl Iterator<Item = (&str, &Var, Range<usize>)> {
        self.slots
            .iter()
            .map(|(n, v, r)| (n.as_str(), v, r.clone()))
    }

    /// The variables' current values, end to end.
    pub fn read(&self) -> Result<Vec<f32>> {
        let mut flat = Vec::with_capacity(self.len);
        for (_, var, _) in &self.slots {
            flat.extend(var.as_tensor().flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(flat)
    }

    /// Sets every variable from `flat`.
    pub fn write(&self, flat: &[f32]) -> Result<()> {
        ensure!(
            flat.len() == self.len,
            "{} values for {} weights",
            flat.len(),
            self.len
        );
        for (_, var, range) in &self.slots {
            var.set(&Tensor::from_slice(
                &flat[range.clone()],
                var.shape(),
                var.device(),
            )?)?;
        }
        Ok(())
    }

    /// `flat` as tensors named `prefix + name` (for a checkpoint).
    pub fn tensors(&self, flat: &[f32], prefix: &str) -> Vec<(String, Tensor)> {
        self.slots
            .iter()
            .map(|(n, var, range)| {
                let t = Tensor::from_slice(&flat[range.clone()], var.shape(), var.device())
                    .expect("a slot's range matches its shape");
                (format!("{prefix}{n}"), t)
            })
            .collect()
    }

    /// Fills `flat` from `tensors[prefix + name]`, checking every shape; `what` names the state.
    pub fn load(
        &self,
        tensors: &HashMap<String, Tensor>,
        prefix: &str,
        what: &str,
        flat: &mut [f32],
    ) -> Result<()> {
        for (name, var, range) in &self.slots {
            let key = format!("{prefix}{name}");
            let src = tensors
                .get(&key)
                .with_context(|| format!("{what} lacks {key}"))?;
            ensure!(
                src.dims() == var.dims(),
                "{what} {key} has shape {:?}, the model {:?}",
                src.dims(),
                var.dims()
            );
            flat[range.clone()]
                .copy_from_slice(&src.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
        }
        Ok(())
    }
}

/// Elements per piece when `len` elements are split over the kernels' pool (one piece per
/// thread, none under 16k elements).
pub fn piece_len(len: usize) -> usize {
    let n = ferrite_kernels::pool::global()
        .threads()
        .min(len.div_ceil(1 << 14))
        .max(1);
    len.div_ceil(n).max(1)
}

/// Runs `f` on every piece (e.g. zipped `chunks_mut` of [`piece_len`]) on the kernels' pool.
pub fn run_pieces<T: Send>(pieces: Vec<T>, f: &(dyn Fn(T) + Sync)) {
    let slots: Vec<Mutex<Option<T>>> = pieces.into_iter().map(|p| Mutex::new(Some(p))).collect();
    ferrite_kernels::pool::global().run(slots.len(), &|i| {
        if let Some(piece) = slots[i].lock().expect("piece").take() {
            f(piece)
        }
    });
}
