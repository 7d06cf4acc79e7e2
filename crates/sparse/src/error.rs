//! Errors of encoding and decoding sparse matrices: each says which check failed and with what
//! numbers, so a bad or truncated file is reported in one line.

/// A sparse matrix that cannot be built or decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SparseError {
    /// The descriptor (safetensors metadata) is not valid.
    #[error("sparse descriptor: {0}")]
    Descriptor(String),
    /// A component tensor the format needs is missing.
    #[error("sparse tensor lacks its `{0}` component")]
    MissingComponent(&'static str),
    /// A component has the wrong dtype, shape or byte length.
    #[error("sparse component `{component}`: {problem}")]
    Component {
        /// Component suffix (`values`, `bitmap`, ...).
        component: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The components disagree with each other (counts, indices, offsets).
    #[error("corrupt sparse tensor: {0}")]
    Corrupt(String),
    /// The matrix cannot be stored in the requested layout.
    #[error("cannot encode as {layout}: {reason}")]
    Unencodable {
        /// Layout asked for.
        layout: String,
        /// Why not.
        reason: String,
    },
}

/// Result with a [`SparseError`].
pub type Result<T> = std::result::Result<T, SparseError>;

/// A [`SparseError::Corrupt`] from a formatted message.
macro_rules! corrupt {
    ($($arg:tt)*) => { $crate::error::SparseError::Corrupt(format!($($arg)*)) };
}
pub(crate) use corrupt;
