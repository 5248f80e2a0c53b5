//! The saved CLI settings, `$XDG_CONFIG_HOME/dyno/config.json`, and how flags, the environment
//! and that file combine.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `$XDG_CONFIG_HOME/dyno/config.json`, else `$HOME/.config/dyno/config.json`.
pub fn config_path_from(xdg: Option<String>, home: Option<String>) -> Option<PathBuf> {
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    if let Some(x) = nonempty(xdg) {
        return Some(PathBuf::from(x).join("dyno").join("config.json"));
    }
    nonempty(home).map(|h| {
        PathBuf::from(h)
            .join(".config")
            .join("dyno")
            .join("config.json")
    })
}

pub fn config_path() -> Option<PathBuf> {
    config_path_from(
        std::env::var("XDG_CONFIG_HOME").ok(),
        std::env::var("HOME").ok(),
    )
}

/// Reads the saved settings; a missing file is an empty config.
pub fn load(path: &Path) -> Result<SavedConfig> {
    match fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("failed to parse {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SavedConfig::default()),
        Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
    }
}

/// Writes the settings with mode 0600 (they hold the operator token), replacing the file atomically.
pub fn save(path: &Path, config: &SavedConfig) -> Result<()> {
    let dir = path
        .parent()
        .context("config path has no parent directory")?;
    fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let tmp = path.with_extension("json.tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("failed to create {}", tmp.display()))?;
    let mut text = serde_json::to_string_pretty(config)?;
    text.push('\n');
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("failed to write {}", tmp.display()))?;
    // The umask may have narrowed the mode further; never wider than 0600.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    fs::rename(&tmp, path).with_context(|| format!("failed to replace {}", path.display()))?;
    Ok(())
}

/// The value of one setting: clap has already merged the flag over the environment, so this
/// only falls back to the saved file and then the default.
pub fn resolve(
    flag_or_env: Option<&str>,
    saved: Option<&str>,
    default: Option<&str>,
) -> Option<String> {
    [flag_or_env, saved, default]
        .into_iter()
        .flatten()
        .find(|v| !v.trim().is_empty())
        .map(|v| v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_prefers_xdg() {
        assert_eq!(
            config_path_from(Some("/x".into()), Some("/h".into())),
            Some(PathBuf::from("/x/dyno/config.json"))
        );
        assert_eq!(
            config_path_from(Some(String::new()), Some("/h".into())),
            Some(PathBuf::from("/h/.config/dyno/config.json"))
        );
        assert_eq!(config_path_from(None, None), None);
    }

    #[test]
    fn precedence_flag_then_file_then_default() {
        assert_eq!(
            resolve(Some("http://flag"), Some("http://file"), Some("http://def")).as_deref(),
            Some("http://flag")
        );
        assert_eq!(
            resolve(None, Some("http://file"), Some("http://def")).as_deref(),
            Some("http://file")
        );
        assert_eq!(
            resolve(Some(""), None, Some("http://def")).as_deref(),
            Some("http://def")
        );
        assert_eq!(resolve(None, None, None), None);
    }

    #[test]
    fn saves_with_mode_0600_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config.json");
        assert_eq!(load(&path).unwrap(), SavedConfig::default());
        let cfg = SavedConfig {
            coordinator: Some("http://127.0.0.1:7070".into()),
            token: Some("secret".into()),
        };
        save(&path, &cfg).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(&path).unwrap(), cfg);
        // An existing, wider file is replaced by a 0600 one.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        save(&path, &cfg).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::write(&path, "not json").unwrap();
        assert!(load(&path).is_err());
    }
}
