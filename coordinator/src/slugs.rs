//! The slug store: gzipped tars, content addressed by sha256, written atomically.

use dyno_shared::Procfile;
use dyno_shared::procfile::{MAX_PROCFILE_BYTES, ProcfileError};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SlugError {
    #[error("slug is not a gzipped tar: {0}")]
    NotATar(std::io::Error),
    #[error(transparent)]
    Procfile(#[from] ProcfileError),
    #[error("Procfile is not UTF-8")]
    ProcfileEncoding,
    #[error("failed to store slug at {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid slug id {0:?}: expected 64 lowercase hex digits")]
    BadId(String),
}

pub struct SlugStore {
    dir: PathBuf,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn valid_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Finds and parses the `Procfile` at the root of a gzipped tar.
pub fn read_procfile(slug: &[u8]) -> Result<Procfile, SlugError> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(slug));
    for entry in archive.entries().map_err(SlugError::NotATar)? {
        let mut entry = entry.map_err(SlugError::NotATar)?;
        let path = entry.path().map_err(SlugError::NotATar)?.into_owned();
        let normal: Vec<_> = path
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect();
        if normal.len() == 1 && normal[0].as_os_str() == "Procfile" {
            if entry.size() > MAX_PROCFILE_BYTES as u64 {
                return Err(ProcfileError::TooLarge.into());
            }
            let mut text = Vec::new();
            entry.read_to_end(&mut text).map_err(SlugError::NotATar)?;
            let text = String::from_utf8(text).map_err(|_| SlugError::ProcfileEncoding)?;
            return Ok(Procfile::parse(&text)?);
        }
    }
    Err(ProcfileError::Missing.into())
}

impl SlugStore {
    pub fn open(dir: PathBuf) -> Result<SlugStore, SlugError> {
        std::fs::create_dir_all(&dir).map_err(|source| SlugError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(SlugStore { dir })
    }

    pub fn path(&self, id: &str) -> Result<PathBuf, SlugError> {
        if !valid_id(id) {
            return Err(SlugError::BadId(id.to_string()));
        }
        Ok(self.dir.join(format!("{id}.tar.gz")))
    }

    /// Stores `bytes` under their sha256 and returns it; storing the same slug twice is free.
    pub fn put(&self, bytes: &[u8]) -> Result<String, SlugError> {
        let id = sha256_hex(bytes);
        let path = self.path(&id)?;
        if path.exists() {
            return Ok(id);
        }
        // Unique per upload: two uploads of the same slug must not truncate each other's file.
        let tmp = self.dir.join(format!(".{id}.{}.tmp", crate::new_id("")));
        let io = |source| SlugError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        // The release row that names this slug commits after this returns: the bytes must be durable first.
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        sync_dir(&self.dir);
        Ok(id)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
pub(crate) fn tar_gz(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, body) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, body.as_bytes()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_root_procfile() {
        let slug = tar_gz(&[("sub/Procfile", "x: y"), ("./Procfile", "web: run it")]);
        let p = read_procfile(&slug).unwrap();
        assert_eq!(p.command(&"web".parse().unwrap()), Some("run it"));
    }

    #[test]
    fn missing_and_malformed_procfiles_are_named() {
        let e = read_procfile(&tar_gz(&[("app.py", "")])).unwrap_err();
        assert_eq!(e.to_string(), "no Procfile at the app root");
        let e = read_procfile(&tar_gz(&[("Procfile", "web: a\nbad line")])).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(matches!(
            read_procfile(b"not a tarball"),
            Err(SlugError::NotATar(_))
        ));
    }

    #[test]
    fn stores_by_content_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = SlugStore::open(dir.path().to_path_buf()).unwrap();
        let id = store.put(b"hello").unwrap();
        assert_eq!(
            id,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(std::fs::read(store.path(&id).unwrap()).unwrap(), b"hello");
        assert_eq!(store.put(b"hello").unwrap(), id);
        assert!(store.path("../etc/passwd").is_err());
    }
}
