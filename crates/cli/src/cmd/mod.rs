//! One module per command group; each parses nothing (clap did) and
//! renders what the daemon answers.

pub mod daemon;
pub mod dns;
pub mod doctor;
pub mod image;
pub mod kernel;
pub mod ssh_config;
pub mod system;
pub mod template;
pub mod vm;
pub mod web;
