//! Domain types, validation, the agent wire protocol and the control API's JSON shapes.
//! No I/O lives here: every other crate agrees on these definitions.

pub mod api;
pub mod config;
pub mod logline;
pub mod names;
pub mod procfile;
pub mod protocol;
pub mod range;
pub mod scale;
pub mod size;
pub mod time;
#[cfg(feature = "tls")]
pub mod tls;

pub use config::{ConfigError, ConfigVars};
pub use logline::{LogLine, LogSource};
pub use names::{AppName, DynoName, NameError, ProcessType};
pub use procfile::{Procfile, ProcfileError};
pub use scale::{Formation, FormationEntry, ScaleArg, ScaleError, ScaleOp};
pub use size::Size;
