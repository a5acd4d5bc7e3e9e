//! One module per command group; each parses nothing (clap did) and
//! renders what the daemon answers.

pub mod daemon;
pub mod doctor;
pub mod image;
pub mod kernel;
pub mod vm;
