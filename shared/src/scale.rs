//! `ps:scale` arguments and the formation they change.
//! Heroku silently drops an argument that does not match; ours rejects the whole command.

use crate::names::ProcessType;
use crate::procfile::Procfile;
use crate::size::Size;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Upper bound on one process type's quantity; a typo like `web=10000` is refused.
pub const MAX_QUANTITY: u32 = 1000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScaleError {
    #[error(
        "invalid scale argument {0:?}: expected TYPE=N, TYPE+N or TYPE-N with an optional :SIZE, for example web=3:standard-2x"
    )]
    Syntax(String),
    #[error("invalid scale argument {arg:?}: {reason}")]
    Size { arg: String, reason: String },
    #[error("no process type {ptype:?} in the current release's Procfile (it has: {known})")]
    UnknownType { ptype: String, known: String },
    #[error("process type {0:?} is named more than once")]
    Repeated(String),
    #[error("{ptype}: quantity {quantity} is more than the limit of {MAX_QUANTITY}")]
    TooMany { ptype: String, quantity: i64 },
    #[error("{ptype}: cannot scale below 0 (currently {current})")]
    Negative { ptype: String, current: u32 },
    #[error("{ptype}: {size} dynos cannot scale beyond 1; use standard-1x or larger")]
    NotHorizontal { ptype: String, size: Size },
    #[error("no scale arguments given")]
    Empty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScaleOp {
    Set(u32),
    Add(u32),
    Sub(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleArg {
    pub process_type: ProcessType,
    pub op: ScaleOp,
    pub size: Option<Size>,
}

impl FromStr for ScaleArg {
    type Err = ScaleError;
    /// `^([\w-]+)([=+-]\d+)(?::([\w-]+))?$`
    fn from_str(s: &str) -> Result<Self, ScaleError> {
        let syntax = || ScaleError::Syntax(s.to_string());
        // The operator comes before the size, which may hold '-' itself (`standard-2x`).
        let head = s.split(':').next().unwrap_or(s);
        let pos = head.find(['=', '+']).or_else(|| {
            // '-' is legal inside a type name, so the operator is the last '-' followed by digits.
            head.rfind('-')
        });
        let pos = pos.ok_or_else(syntax)?;
        let (name, rest) = s.split_at(pos);
        let process_type: ProcessType = name.parse().map_err(|_| syntax())?;
        let op_char = rest.as_bytes()[0];
        let rest = &rest[1..];
        let (num, size) = match rest.split_once(':') {
            Some((n, z)) => (n, Some(z)),
            None => (rest, None),
        };
        if num.is_empty() || num.len() > 9 || !num.bytes().all(|c| c.is_ascii_digit()) {
            return Err(syntax());
        }
        let n: u32 = num.parse().map_err(|_| syntax())?;
        let op = match op_char {
            b'=' => ScaleOp::Set(n),
            b'+' => ScaleOp::Add(n),
            _ => ScaleOp::Sub(n),
        };
        let size = match size {
            None => None,
            Some(z) => Some(z.parse::<Size>().map_err(|e| ScaleError::Size {
                arg: s.to_string(),
                reason: e.to_string(),
            })?),
        };
        Ok(ScaleArg {
            process_type,
            op,
            size,
        })
    }
}

impl fmt::Display for ScaleArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (c, n) = match self.op {
            ScaleOp::Set(n) => ('=', n),
            ScaleOp::Add(n) => ('+', n),
            ScaleOp::Sub(n) => ('-', n),
        };
        write!(f, "{}{}{}", self.process_type, c, n)?;
        if let Some(z) = self.size {
            write!(f, ":{z}")?;
        }
        Ok(())
    }
}

/// Parses every argument or none.
pub fn parse_scale_args<S: AsRef<str>>(args: &[S]) -> Result<Vec<ScaleArg>, ScaleError> {
    if args.is_empty() {
        return Err(ScaleError::Empty);
    }
    let mut out: Vec<ScaleArg> = Vec::with_capacity(args.len());
    for a in args {
        let arg: ScaleArg = a.as_ref().parse()?;
        if out.iter().any(|o| o.process_type == arg.process_type) {
            return Err(ScaleError::Repeated(arg.process_type.to_string()));
        }
        out.push(arg);
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormationEntry {
    pub quantity: u32,
    pub size: Size,
}

/// Desired dynos per process type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Formation {
    pub entries: BTreeMap<ProcessType, FormationEntry>,
}

impl Formation {
    /// The formation after `args`, checked against the release's Procfile. `self` is untouched on error.
    pub fn apply(&self, args: &[ScaleArg], procfile: &Procfile) -> Result<Formation, ScaleError> {
        let mut next = self.clone();
        for arg in args {
            if !procfile.processes.contains_key(&arg.process_type) {
                let known: Vec<&str> = procfile.processes.keys().map(|k| k.as_str()).collect();
                return Err(ScaleError::UnknownType {
                    ptype: arg.process_type.to_string(),
                    known: known.join(", "),
                });
            }
            let cur = next
                .entries
                .get(&arg.process_type)
                .copied()
                .unwrap_or(FormationEntry {
                    quantity: 0,
                    size: Size::default(),
                });
            let q: i64 = match arg.op {
                ScaleOp::Set(n) => n as i64,
                ScaleOp::Add(n) => cur.quantity as i64 + n as i64,
                ScaleOp::Sub(n) => cur.quantity as i64 - n as i64,
            };
            let ptype = arg.process_type.to_string();
            if q < 0 {
                return Err(ScaleError::Negative {
                    ptype,
                    current: cur.quantity,
                });
            }
            if q > MAX_QUANTITY as i64 {
                return Err(ScaleError::TooMany { ptype, quantity: q });
            }
            let size = arg.size.unwrap_or(cur.size);
            if q > 1 && !size.scales_horizontally() {
                return Err(ScaleError::NotHorizontal { ptype, size });
            }
            next.entries.insert(
                arg.process_type.clone(),
                FormationEntry {
                    quantity: q as u32,
                    size,
                },
            );
        }
        Ok(next)
    }

    /// `web=3:standard-2x worker=1:basic`, re-usable as `ps:scale` input.
    pub fn to_scale_string(&self) -> String {
        self.entries
            .iter()
            .map(|(t, e)| format!("{t}={}:{}", e.quantity, e.size))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn procfile() -> Procfile {
        Procfile::parse("web: a\nworker: b\nclock-2: c").unwrap()
    }

    #[test]
    fn parses_all_forms() {
        let a: ScaleArg = "web=3:standard-2x".parse().unwrap();
        assert_eq!(a.op, ScaleOp::Set(3));
        assert_eq!(a.size, Some(Size::Standard2x));
        let a: ScaleArg = "worker+1".parse().unwrap();
        assert_eq!(a.op, ScaleOp::Add(1));
        assert_eq!(a.size, None);
        let a: ScaleArg = "clock-2-1".parse().unwrap();
        assert_eq!(a.process_type.as_str(), "clock-2");
        assert_eq!(a.op, ScaleOp::Sub(1));
        let a: ScaleArg = "web=0".parse().unwrap();
        assert_eq!(a.to_string(), "web=0");
    }

    #[test]
    fn subtracts_with_a_dashed_size() {
        // Found by the `scale` fuzz target: the last '-' of `standard-2x` was taken for the
        // operator, so `web-1:standard-2x` was refused and `web-1:pm` printed unparseably.
        let a: ScaleArg = "web-1:standard-2x".parse().unwrap();
        assert_eq!(a.process_type.as_str(), "web");
        assert_eq!((a.op, a.size), (ScaleOp::Sub(1), Some(Size::Standard2x)));
        let a: ScaleArg = "clock-2-1:pm".parse().unwrap();
        assert_eq!(a.process_type.as_str(), "clock-2");
        assert_eq!(a.to_string(), "clock-2-1:performance-m");
        for op in [ScaleOp::Set(2), ScaleOp::Add(2), ScaleOp::Sub(2)] {
            for size in Size::ALL {
                let a = ScaleArg {
                    process_type: "a-b".parse().unwrap(),
                    op,
                    size: Some(size),
                };
                assert_eq!(a.to_string().parse(), Ok(a));
            }
        }
        assert!(matches!(
            "web-1:x=y".parse::<ScaleArg>(),
            Err(ScaleError::Size { .. })
        ));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "web", "web=", "=3", "web=x", "web=3:", "web==3", "web=-1", "web 3", "web=3x",
        ] {
            assert!(bad.parse::<ScaleArg>().is_err(), "{bad}");
        }
        assert!(matches!(
            "web=3:huge".parse::<ScaleArg>(),
            Err(ScaleError::Size { .. })
        ));
    }

    #[test]
    fn one_bad_argument_rejects_all() {
        assert!(matches!(
            parse_scale_args(&["web=2", "worker=bogus"]),
            Err(ScaleError::Syntax(_))
        ));
        assert_eq!(
            parse_scale_args(&["web=2", "web+1"]),
            Err(ScaleError::Repeated("web".into()))
        );
        assert_eq!(parse_scale_args::<&str>(&[]), Err(ScaleError::Empty));
    }

    #[test]
    fn applies_relative_and_sizes() {
        let f = Formation::default();
        let args = parse_scale_args(&["web=2:standard-2x", "worker+1"]).unwrap();
        let f = f.apply(&args, &procfile()).unwrap();
        assert_eq!(
            f.to_scale_string(),
            "web=2:standard-2x worker=1:standard-1x"
        );
        let f = f
            .apply(&parse_scale_args(&["web-1"]).unwrap(), &procfile())
            .unwrap();
        assert_eq!(f.entries[&"web".parse().unwrap()].quantity, 1);
        assert_eq!(
            f.entries[&"web".parse().unwrap()].size,
            Size::Standard2x,
            "size kept"
        );
    }

    #[test]
    fn invalid_changes_leave_formation_alone() {
        let f = Formation::default()
            .apply(&parse_scale_args(&["web=1"]).unwrap(), &procfile())
            .unwrap();
        let before = f.clone();
        let args = parse_scale_args(&["web=3", "nope=1"]).unwrap();
        assert!(matches!(
            f.apply(&args, &procfile()),
            Err(ScaleError::UnknownType { .. })
        ));
        assert!(matches!(
            f.apply(&parse_scale_args(&["web-2"]).unwrap(), &procfile()),
            Err(ScaleError::Negative { .. })
        ));
        assert!(matches!(
            f.apply(&parse_scale_args(&["web=1001"]).unwrap(), &procfile()),
            Err(ScaleError::TooMany { .. })
        ));
        assert!(matches!(
            f.apply(&parse_scale_args(&["web=2:basic"]).unwrap(), &procfile()),
            Err(ScaleError::NotHorizontal { .. })
        ));
        assert_eq!(f, before);
    }
}
