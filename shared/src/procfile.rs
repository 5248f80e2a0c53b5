//! Procfile parsing. Unlike foreman, a duplicate type or a malformed line is an error naming the line.

use crate::names::ProcessType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A Procfile over this many bytes is rejected before parsing.
pub const MAX_PROCFILE_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProcfileError {
    #[error("Procfile line {line}: expected `TYPE: COMMAND`, got {text:?}")]
    Malformed { line: usize, text: String },
    #[error(
        "Procfile line {line}: invalid process type {name:?} (use letters, digits, '_' and '-', at most 128)"
    )]
    BadType { line: usize, name: String },
    #[error("Procfile line {line}: process type {name:?} has an empty command")]
    EmptyCommand { line: usize, name: String },
    #[error("Procfile line {line}: process type {name:?} is already defined on line {first}")]
    Duplicate {
        line: usize,
        name: String,
        first: usize,
    },
    #[error("Procfile line {line}: process type `run` is reserved for one-off dynos (run.N)")]
    Reserved { line: usize },
    #[error("Procfile defines no process types")]
    Empty,
    #[error("Procfile is larger than {MAX_PROCFILE_BYTES} bytes")]
    TooLarge,
    #[error("no Procfile at the app root")]
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Procfile {
    pub processes: BTreeMap<ProcessType, String>,
}

impl Procfile {
    pub fn parse(text: &str) -> Result<Procfile, ProcfileError> {
        if text.len() > MAX_PROCFILE_BYTES {
            return Err(ProcfileError::TooLarge);
        }
        let mut processes = BTreeMap::new();
        let mut first_line: BTreeMap<String, usize> = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((name, command)) = trimmed.split_once(':') else {
                return Err(ProcfileError::Malformed {
                    line,
                    text: raw.to_string(),
                });
            };
            let name = name.trim();
            let command = command.trim();
            let ptype: ProcessType = name.parse().map_err(|_| ProcfileError::BadType {
                line,
                name: name.to_string(),
            })?;
            if ptype.as_str() == "run" {
                return Err(ProcfileError::Reserved { line });
            }
            if command.is_empty() {
                return Err(ProcfileError::EmptyCommand {
                    line,
                    name: name.to_string(),
                });
            }
            if let Some(first) = first_line.get(name) {
                return Err(ProcfileError::Duplicate {
                    line,
                    name: name.to_string(),
                    first: *first,
                });
            }
            first_line.insert(name.to_string(), line);
            processes.insert(ptype, command.to_string());
        }
        if processes.is_empty() {
            return Err(ProcfileError::Empty);
        }
        Ok(Procfile { processes })
    }

    pub fn command(&self, ptype: &ProcessType) -> Option<&str> {
        self.processes.get(ptype).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_types_comments_and_blank_lines() {
        let p = Procfile::parse(
            "# comment\n\nweb: bin/server --port $PORT\nworker:bin/work  \nrelease: ./migrate\n",
        )
        .unwrap();
        assert_eq!(p.processes.len(), 3);
        assert_eq!(
            p.command(&"web".parse().unwrap()),
            Some("bin/server --port $PORT")
        );
        assert_eq!(p.command(&"worker".parse().unwrap()), Some("bin/work"));
    }

    #[test]
    fn command_may_contain_colons() {
        let p = Procfile::parse("web: gunicorn app:app --bind [::]:$PORT").unwrap();
        assert_eq!(
            p.command(&"web".parse().unwrap()),
            Some("gunicorn app:app --bind [::]:$PORT")
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            Procfile::parse("web: a\nnonsense\n"),
            Err(ProcfileError::Malformed {
                line: 2,
                text: "nonsense".into()
            })
        );
        assert_eq!(
            Procfile::parse("web: a\n\nweb: b"),
            Err(ProcfileError::Duplicate {
                line: 3,
                name: "web".into(),
                first: 1
            })
        );
        assert_eq!(
            Procfile::parse("we b: a"),
            Err(ProcfileError::BadType {
                line: 1,
                name: "we b".into()
            })
        );
        assert_eq!(
            Procfile::parse("web:   "),
            Err(ProcfileError::EmptyCommand {
                line: 1,
                name: "web".into()
            })
        );
        assert_eq!(Procfile::parse("# only\n\n"), Err(ProcfileError::Empty));
        assert_eq!(
            Procfile::parse("web: a\nrun: b"),
            Err(ProcfileError::Reserved { line: 2 })
        );
        let msg = Procfile::parse("web: a\nweb: b").unwrap_err().to_string();
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn oversized_procfile_is_rejected() {
        let big = format!("web: {}", "x".repeat(MAX_PROCFILE_BYTES));
        assert_eq!(Procfile::parse(&big), Err(ProcfileError::TooLarge));
    }
}
