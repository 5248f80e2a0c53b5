//! Names users type: apps, process types, dynos.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error(
        "invalid app name {0:?}: use 3-30 characters, lowercase letters, digits and dashes, starting with a letter and not ending with a dash"
    )]
    App(String),
    #[error("invalid process type {0:?}: use 1-128 characters of letters, digits, '_' and '-'")]
    ProcessType(String),
    #[error("invalid dyno name {0:?}: expected TYPE.N, for example web.1")]
    Dyno(String),
}

/// `^[a-z][a-z0-9-]{1,28}[a-z0-9]$`
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppName(String);

impl AppName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AppName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let b = s.as_bytes();
        let ok = (3..=30).contains(&b.len())
            && b[0].is_ascii_lowercase()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[b.len() - 1] != b'-';
        if ok {
            Ok(AppName(s.to_string()))
        } else {
            Err(NameError::App(s.to_string()))
        }
    }
}

/// `[A-Za-z0-9_-]{1,128}`
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProcessType(String);

impl ProcessType {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn is_web(&self) -> bool {
        self.0 == "web"
    }
}

impl FromStr for ProcessType {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let ok = (1..=128).contains(&s.len())
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        if ok {
            Ok(ProcessType(s.to_string()))
        } else {
            Err(NameError::ProcessType(s.to_string()))
        }
    }
}

/// `web.1`, `run.3`: a process type and a positive index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DynoName {
    pub process_type: ProcessType,
    pub index: u32,
}

impl DynoName {
    pub fn new(process_type: ProcessType, index: u32) -> Self {
        DynoName {
            process_type,
            index,
        }
    }
}

impl FromStr for DynoName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let err = || NameError::Dyno(s.to_string());
        let (t, n) = s.rsplit_once('.').ok_or_else(err)?;
        let process_type = t.parse().map_err(|_| err())?;
        if n.is_empty() || n.starts_with('0') || !n.bytes().all(|c| c.is_ascii_digit()) {
            return Err(err());
        }
        let index = n.parse().map_err(|_| err())?;
        Ok(DynoName {
            process_type,
            index,
        })
    }
}

macro_rules! string_conversions {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                s.parse()
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.to_string()
            }
        }
    };
}
string_conversions!(AppName);
string_conversions!(ProcessType);
string_conversions!(DynoName);

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for ProcessType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for DynoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.process_type, self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_follow_heroku_rules() {
        for ok in ["shop", "a-1", "abc", "my-app-2", &"a".repeat(30)] {
            assert!(ok.parse::<AppName>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "ab",
            "Shop",
            "1shop",
            "shop-",
            "sh_op",
            "sh op",
            &"a".repeat(31),
        ] {
            assert_eq!(
                bad.parse::<AppName>(),
                Err(NameError::App(bad.to_string())),
                "{bad}"
            );
        }
    }

    #[test]
    fn dyno_names_round_trip() {
        let d: DynoName = "web.12".parse().unwrap();
        assert_eq!(d.process_type.as_str(), "web");
        assert_eq!(d.index, 12);
        assert_eq!(d.to_string(), "web.12");
        // Dots are not allowed in process types, so only the last dot splits.
        assert!("my.type.3".parse::<DynoName>().is_err());
        for bad in ["web", "web.", "web.0", "web.01", ".1", "web.x", "we b.1"] {
            assert!(bad.parse::<DynoName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn process_types() {
        assert!("web".parse::<ProcessType>().unwrap().is_web());
        assert!("worker_2-a".parse::<ProcessType>().is_ok());
        assert!("".parse::<ProcessType>().is_err());
        assert!("a.b".parse::<ProcessType>().is_err());
        assert!("x".repeat(129).parse::<ProcessType>().is_err());
    }
}
