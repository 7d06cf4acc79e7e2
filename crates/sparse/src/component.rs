//! The pieces a sparse matrix is stored as: plain little-endian arrays, one safetensors tensor
//! each (`<name>.values`, `<name>.bitmap`, ...), so any safetensors reader can open the file.

use crate::error::{Result, SparseError};

/// Element type of a component (the safetensors dtypes used here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentDType {
    /// Bytes (bitmaps, N:M metadata).
    U8,
    /// Column indices.
    U16,
    /// Row offsets.
    U32,
    /// Values.
    F32,
}

impl ComponentDType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::U16 => 2,
            Self::U32 | Self::F32 => 4,
        }
    }

    /// The safetensors dtype name (`U8`, `U16`, `U32`, `F32`).
    pub fn safetensors_name(self) -> &'static str {
        match self {
            Self::U8 => "U8",
            Self::U16 => "U16",
            Self::U32 => "U32",
            Self::F32 => "F32",
        }
    }

    /// Parses a safetensors dtype name.
    pub fn from_safetensors_name(s: &str) -> Option<Self> {
        Some(match s {
            "U8" => Self::U8,
            "U16" => Self::U16,
            "U32" => Self::U32,
            "F32" => Self::F32,
            _ => return None,
        })
    }
}

/// One stored array of a sparse matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// Name suffix after `<tensor>.` (`values`, `bitmap`, `col_idx`, `row_ptr`, `nm_meta`).
    pub suffix: &'static str,
    /// Element type.
    pub dtype: ComponentDType,
    /// Shape (1-D or 2-D).
    pub shape: Vec<usize>,
    /// Little-endian element bytes.
    pub bytes: Vec<u8>,
}

impl Component {
    /// An f32 array.
    pub fn f32(suffix: &'static str, shape: Vec<usize>, v: &[f32]) -> Self {
        Self::new(
            suffix,
            ComponentDType::F32,
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()),
        )
    }

    /// A u32 array.
    pub fn u32(suffix: &'static str, shape: Vec<usize>, v: &[u32]) -> Self {
        Self::new(
            suffix,
            ComponentDType::U32,
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()),
        )
    }

    /// A u16 array.
    pub fn u16(suffix: &'static str, shape: Vec<usize>, v: &[u16]) -> Self {
        Self::new(
            suffix,
            ComponentDType::U16,
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()),
        )
    }

    /// A byte array.
    pub fn u8(suffix: &'static str, shape: Vec<usize>, v: &[u8]) -> Self {
        Self::new(suffix, ComponentDType::U8, shape, v.iter().copied())
    }

    fn new(
        suffix: &'static str,
        dtype: ComponentDType,
        shape: Vec<usize>,
        bytes: impl Iterator<Item = u8>,
    ) -> Self {
        Self {
            suffix,
            dtype,
            shape,
            bytes: bytes.collect(),
        }
    }

    /// Elements described by the shape.
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Checks dtype, shape and byte length against what the format needs.
    pub fn expect(&self, dtype: ComponentDType, shape: &[usize]) -> Result<()> {
        let bad = |problem: String| SparseError::Component {
            component: self.suffix,
            problem,
        };
        if self.dtype != dtype {
            return Err(bad(format!("dtype {:?}, expected {dtype:?}", self.dtype)));
        }
        if self.shape != shape {
            return Err(bad(format!("shape {:?}, expected {shape:?}", self.shape)));
        }
        let want = self.elements() * dtype.size();
        if self.bytes.len() != want {
            return Err(bad(format!(
                "{} bytes, shape {:?} needs {want} (truncated?)",
                self.bytes.len(),
                self.shape
            )));
        }
        Ok(())
    }

    /// The elements as f32 (after [`Self::expect`]).
    pub fn to_f32(&self) -> Vec<f32> {
        let b = &self.bytes;
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// The elements as u32 (after [`Self::expect`]).
    pub fn to_u32(&self) -> Vec<u32> {
        let b = &self.bytes;
        b.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// The elements as u16 (after [`Self::expect`]).
    pub fn to_u16(&self) -> Vec<u16> {
        let b = &self.bytes;
        b.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    }
}

/// Where decoding finds the components of one matrix by suffix.
pub trait ComponentSource {
    /// The component `suffix`, or `None` when the file has no such tensor.
    fn component(&mut self, suffix: &'static str) -> Result<Option<Component>>;
}

impl ComponentSource for Vec<Component> {
    fn component(&mut self, suffix: &'static str) -> Result<Option<Component>> {
        Ok(self
            .iter()
            .position(|c| c.suffix == suffix)
            .map(|i| self.swap_remove(i)))
    }
}

/// The component `suffix`, which must be there.
pub(crate) fn required(src: &mut dyn ComponentSource, suffix: &'static str) -> Result<Component> {
    src.component(suffix)?
        .ok_or(SparseError::MissingComponent(suffix))
}
