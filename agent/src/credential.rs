//! The token the agent presents to the coordinator: its own credential once it has joined
//! (kept in `STATE_DIR/credential`), else the join token it was started with.

use dyno_shared::tls::Pin;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

#[derive(Debug, Clone)]
pub struct Credential {
    token: Arc<RwLock<String>>,
    own: Arc<std::sync::atomic::AtomicBool>,
    /// The coordinator certificate to trust, from the join token (`SECRET@sha256:HEX`).
    pin: Option<Pin>,
    path: PathBuf,
}

fn split(token: &str) -> std::io::Result<(String, Option<Pin>)> {
    dyno_shared::tls::split_token(token)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

impl Credential {
    /// The saved credential in `state_dir`, else `join_token`.
    pub fn load(state_dir: &Path, join_token: &str) -> std::io::Result<Credential> {
        let path = state_dir.join("credential");
        let (token, own) = match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => (t.trim().to_string(), true),
            Ok(_) => (join_token.to_string(), false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (join_token.to_string(), false),
            Err(e) => return Err(e),
        };
        let (secret, pin) = split(&token)?;
        // A pin given now (a re-issued certificate) wins over the one saved.
        let (_, given_pin) = split(join_token)?;
        Ok(Credential {
            token: Arc::new(RwLock::new(secret)),
            own: Arc::new(own.into()),
            pin: given_pin.or(pin),
            path,
        })
    }

    /// The coordinator certificate to trust, if pinned.
    pub fn pin(&self) -> Option<Pin> {
        self.pin
    }

    /// A token that is never saved (tests, tools).
    pub fn fixed(token: &str) -> Credential {
        Credential {
            token: Arc::new(RwLock::new(token.to_string())),
            own: Arc::new(false.into()),
            pin: None,
            path: PathBuf::new(),
        }
    }

    pub fn current(&self) -> String {
        self.token.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// True once this host has its own credential (and no longer shows the join token).
    pub fn is_own(&self) -> bool {
        self.own.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Saves the host's own credential (mode 0600, replaced atomically) and presents it from now.
    pub fn save(&self, token: &str) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let saved = match self.pin {
            Some(pin) => format!("{token}@{pin}\n"),
            None => format!("{token}\n"),
        };
        f.write_all(saved.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        *self.token.write().unwrap_or_else(|e| e.into_inner()) = token.to_string();
        self.own.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

impl From<&str> for Credential {
    fn from(token: &str) -> Credential {
        Credential::fixed(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_saved_credential_replaces_the_join_token_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let c = Credential::load(dir.path(), "join").unwrap();
        assert_eq!((c.current().as_str(), c.is_own()), ("join", false));
        c.save("own-secret").unwrap();
        assert_eq!((c.current().as_str(), c.is_own()), ("own-secret", true));
        let mode = std::fs::metadata(c.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A restarted agent presents the saved one, whatever join token it is given.
        let again = Credential::load(dir.path(), "join").unwrap();
        assert_eq!(
            (again.current().as_str(), again.is_own()),
            ("own-secret", true)
        );
    }
}
