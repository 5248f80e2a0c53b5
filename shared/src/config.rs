//! Config vars: keys of letters, digits and `_`; all vars together at most 32 KB.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MAX_CONFIG_BYTES: usize = 32 * 1024;

/// Names the platform sets itself; an app cannot override them.
pub const RESERVED_KEYS: [&str; 3] = ["PORT", "DYNO", "HOME"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid config var key {0:?}: use letters, digits and '_', not starting with a digit")]
    BadKey(String),
    #[error("config var {0} is set by the platform and cannot be changed")]
    Reserved(String),
    #[error("invalid config var assignment {0:?}: expected KEY=VALUE")]
    Syntax(String),
    #[error("config vars would total {0} bytes, over the limit of {MAX_CONFIG_BYTES}")]
    TooLarge(usize),
    #[error("config var {0} contains a NUL byte")]
    Nul(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct ConfigVars(pub BTreeMap<String, String>);

pub fn validate_key(key: &str) -> Result<(), ConfigError> {
    let ok = !key.is_empty()
        && key.len() <= 256
        && !key.as_bytes()[0].is_ascii_digit()
        && key.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
    if !ok {
        return Err(ConfigError::BadKey(key.to_string()));
    }
    if RESERVED_KEYS.contains(&key) {
        return Err(ConfigError::Reserved(key.to_string()));
    }
    Ok(())
}

/// `KEY=VALUE` as typed on the command line (the value may contain '=').
pub fn parse_assignment(s: &str) -> Result<(String, String), ConfigError> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| ConfigError::Syntax(s.to_string()))?;
    validate_key(k)?;
    Ok((k.to_string(), v.to_string()))
}

impl ConfigVars {
    /// Applies sets (`Some`) and unsets (`None`) as one change; `self` is untouched on error.
    pub fn apply(&self, changes: &BTreeMap<String, Option<String>>) -> Result<Self, ConfigError> {
        let mut next = self.clone();
        for (k, v) in changes {
            validate_key(k)?;
            match v {
                Some(v) => {
                    if v.contains('\0') {
                        return Err(ConfigError::Nul(k.clone()));
                    }
                    next.0.insert(k.clone(), v.clone());
                }
                None => {
                    next.0.remove(k);
                }
            }
        }
        let total = next.total_bytes();
        if total > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge(total));
        }
        Ok(next)
    }

    pub fn total_bytes(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(validate_key("DATABASE_URL").is_ok());
        assert!(validate_key("a1").is_ok());
        for bad in ["", "1A", "A-B", "A B", "Ä"] {
            assert_eq!(validate_key(bad), Err(ConfigError::BadKey(bad.into())));
        }
        assert_eq!(
            validate_key("PORT"),
            Err(ConfigError::Reserved("PORT".into()))
        );
    }

    #[test]
    fn assignments() {
        assert_eq!(
            parse_assignment("URL=postgres://x?a=b").unwrap(),
            ("URL".into(), "postgres://x?a=b".into())
        );
        assert_eq!(
            parse_assignment("EMPTY=").unwrap(),
            ("EMPTY".into(), "".into())
        );
        assert!(matches!(
            parse_assignment("NOVALUE"),
            Err(ConfigError::Syntax(_))
        ));
    }

    #[test]
    fn size_limit_and_atomicity() {
        let c = ConfigVars::default();
        let mut ch = BTreeMap::new();
        ch.insert("A".to_string(), Some("x".repeat(MAX_CONFIG_BYTES)));
        assert!(matches!(c.apply(&ch), Err(ConfigError::TooLarge(_))));
        let mut ch = BTreeMap::new();
        ch.insert("A".to_string(), Some("1".into()));
        ch.insert("bad-key".to_string(), Some("1".into()));
        assert!(c.apply(&ch).is_err());
        let mut ch = BTreeMap::new();
        ch.insert("A".to_string(), Some("1".into()));
        let c = c.apply(&ch).unwrap();
        let mut ch = BTreeMap::new();
        ch.insert("A".to_string(), None);
        assert!(c.apply(&ch).unwrap().0.is_empty());
    }
}
