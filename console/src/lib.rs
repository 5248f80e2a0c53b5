//! The `dyno` CLI: heroku-shaped commands against the coordinator's control API, and `dyno up`,
//! which runs a whole platform on this machine.

pub mod cli;
pub mod client;
pub mod commands;
pub mod config_file;
pub mod error;
pub mod output;
pub mod shell;
pub mod slug;
pub mod tui;
pub mod up;
pub mod wait;

pub use commands::run;
