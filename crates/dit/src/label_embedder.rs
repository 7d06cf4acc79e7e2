//! Class-label embedding with the null class of classifier-free guidance (Ho & Salimans 2022; DiT
//! §3.2 / reference `LabelEmbedder`): a table of `num_classes + 1` rows (N(0, 0.02)), the last row
//! the null label that replaces a label with probability `class_dropout_prob` in training.

use crate::init::EMBEDDING_INIT;
use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

/// The label table.
#[derive(Debug, Clone)]
pub struct LabelEmbedder {
    table: Tensor,
    num_classes: usize,
    has_null: bool,
}

impl LabelEmbedder {
    /// Reads `embedding_table.weight` under `vb`.
    pub fn new(vb: &VarBuilder, num_classes: usize, hidden: usize, has_null: bool) -> Result<Self> {
        let rows = num_classes + usize::from(has_null);
        let table =
            vb.pp("embedding_table")
                .get_with_hints((rows, hidden), "weight", EMBEDDING_INIT)?;
        Ok(Self {
            table,
            num_classes,
            has_null,
        })
    }

    /// `[B]` u32 labels to `[B, D]`; where `drop[i]` the null class is used instead.
    pub fn forward(&self, labels: &Tensor, drop: Option<&[bool]>) -> Result<Tensor> {
        let mut ids = labels.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        if let Some(&bad) = ids.iter().find(|&&y| y as usize >= self.num_classes) {
            candle_core::bail!(
                "class label {bad} out of range (num_classes {})",
                self.num_classes
            )
        }
        if let Some(drop) = drop {
            if drop.len() != ids.len() {
                candle_core::bail!(
                    "label drop mask has {} entries for {} labels",
                    drop.len(),
                    ids.len()
                )
            }
            if drop.iter().any(|&d| d) && !self.has_null {
                candle_core::bail!(
                    "this DiT has no null class (class_dropout_prob = 0): cannot drop labels"
                )
            }
            for (y, &d) in ids.iter_mut().zip(drop) {
                if d {
                    *y = self.num_classes as u32;
                }
            }
        }
        let ids = Tensor::new(ids, labels.device())?;
        self.table.index_select(&ids, 0)
    }
}
