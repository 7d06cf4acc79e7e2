//! One module per subcommand.

pub mod bench;
pub mod chat;
pub mod diffusion;
pub mod generate;
pub mod info;
pub mod ppl;
pub mod prune;
pub mod serve;
