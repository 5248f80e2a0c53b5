//! Dyno sizes and their resource limits (HEROKU.md's default pricing table).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// On the wire in Heroku's spelling (`Standard-1X`, what the heroku CLI's price table is keyed
/// by); read in any case and with Heroku's old aliases. `as_str` (lowercase) is for the store,
/// config files and our CLI's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Size {
    Eco,
    Basic,
    #[default]
    Standard1x,
    Standard2x,
    PerformanceM,
    PerformanceL,
}

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.heroku_name())
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "unknown dyno size {0:?}: expected one of eco, basic, standard-1x, standard-2x, performance-m, performance-l"
)]
pub struct UnknownSize(pub String);

impl Size {
    pub const ALL: [Size; 6] = [
        Size::Eco,
        Size::Basic,
        Size::Standard1x,
        Size::Standard2x,
        Size::PerformanceM,
        Size::PerformanceL,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Size::Eco => "eco",
            Size::Basic => "basic",
            Size::Standard1x => "standard-1x",
            Size::Standard2x => "standard-2x",
            Size::PerformanceM => "performance-m",
            Size::PerformanceL => "performance-l",
        }
    }
    /// `Standard-1X`, `Performance-M`, `Eco`: Heroku's spelling.
    pub fn heroku_name(self) -> &'static str {
        match self {
            Size::Eco => "Eco",
            Size::Basic => "Basic",
            Size::Standard1x => "Standard-1X",
            Size::Standard2x => "Standard-2X",
            Size::PerformanceM => "Performance-M",
            Size::PerformanceL => "Performance-L",
        }
    }

    pub fn memory_mb(self) -> u64 {
        match self {
            Size::Eco | Size::Basic | Size::Standard1x => 512,
            Size::Standard2x => 1024,
            Size::PerformanceM => 2560,
            Size::PerformanceL => 14336,
        }
    }
    pub fn pids_max(self) -> u64 {
        match self {
            Size::Eco | Size::Basic | Size::Standard1x => 256,
            Size::Standard2x => 512,
            Size::PerformanceM => 16384,
            Size::PerformanceL => 32768,
        }
    }
    /// Relative CPU share: 1x, 2x, 12x, 50x.
    pub fn cpu_weight(self) -> u32 {
        match self {
            Size::Eco | Size::Basic | Size::Standard1x => 1,
            Size::Standard2x => 2,
            Size::PerformanceM => 12,
            Size::PerformanceL => 50,
        }
    }
    /// Default monthly price in US cents.
    pub fn monthly_cents(self) -> u64 {
        match self {
            Size::Eco => 500,
            Size::Basic => 700,
            Size::Standard1x => 2500,
            Size::Standard2x => 5000,
            Size::PerformanceM => 25000,
            Size::PerformanceL => 50000,
        }
    }
    /// Eco and basic run at most one dyno per process type.
    pub fn scales_horizontally(self) -> bool {
        !matches!(self, Size::Eco | Size::Basic)
    }
}

impl FromStr for Size {
    type Err = UnknownSize;
    fn from_str(s: &str) -> Result<Self, UnknownSize> {
        let lower = s.to_ascii_lowercase();
        // Heroku's older names are still accepted by its CLI.
        let canonical = match lower.as_str() {
            "free" | "hobby" => return Err(UnknownSize(s.to_string())),
            "1x" | "standard-1x" => "standard-1x",
            "2x" | "standard-2x" => "standard-2x",
            "pm" | "performance" | "performance-m" => "performance-m",
            "pl" | "performance-l" => "performance-l",
            other => other,
        };
        Size::ALL
            .into_iter()
            .find(|z| z.as_str() == canonical)
            .ok_or_else(|| UnknownSize(s.to_string()))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_aliases() {
        assert_eq!("standard-2x".parse(), Ok(Size::Standard2x));
        assert_eq!("Performance-M".parse(), Ok(Size::PerformanceM));
        assert!(serde_json::from_str::<Size>("\"huge\"").is_err());
        assert_eq!("2X".parse(), Ok(Size::Standard2x));
        assert_eq!("eco".parse(), Ok(Size::Eco));
        assert!("huge".parse::<Size>().is_err());
        for s in Size::ALL {
            assert_eq!(s.as_str().parse(), Ok(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.heroku_name()));
            assert_eq!(serde_json::from_str::<Size>(&json).unwrap(), s);
            let lower = format!("\"{}\"", s.as_str());
            assert_eq!(serde_json::from_str::<Size>(&lower).unwrap(), s);
        }
    }

    #[test]
    fn limits_follow_the_table() {
        assert_eq!(Size::Standard2x.memory_mb(), 1024);
        assert_eq!(Size::PerformanceL.pids_max(), 32768);
        assert!(!Size::Basic.scales_horizontally());
        assert!(Size::Standard1x.scales_horizontally());
    }
}
