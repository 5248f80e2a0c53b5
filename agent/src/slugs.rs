//! The slug cache: `GET /slugs/{sha256}` once per slug, verify the hash, extract once into
//! `slugs/{sha}/`, and give every dyno its own copy of that tree.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dyno_shared::api::MAX_SLUG_BYTES;
use sha2::{Digest, Sha256};
use tracing::{debug, info};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between two reads of a slug download.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SlugError {
    #[error("invalid slug id {0:?}: expected 64 lowercase hex characters")]
    InvalidId(String),
    #[error("failed to fetch slug {sha}: the coordinator refused the token (HTTP 401)")]
    Unauthorized { sha: String },
    #[error("failed to fetch slug {sha}: the coordinator answered HTTP {status}")]
    Status { sha: String, status: u16 },
    #[error("failed to fetch slug {sha}: {message}")]
    Transport { sha: String, message: String },
    #[error("failed to fetch slug {sha}: it is larger than {MAX_SLUG_BYTES} bytes")]
    TooLarge { sha: String },
    #[error("slug {expected} failed verification: its content hashes to {actual}")]
    HashMismatch { expected: String, actual: String },
    #[error("failed to extract slug {sha}: {source}")]
    Extract {
        sha: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("slug task failed: {0}")]
    Task(String),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SlugError {
    let path = path.to_path_buf();
    move |source| SlugError::Io {
        action,
        path,
        source,
    }
}

pub fn valid_sha(sha: &str) -> bool {
    sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[derive(Debug)]
pub struct SlugCache {
    dir: PathBuf,
    coordinator: String,
    credential: crate::credential::Credential,
    /// One lock per slug, so concurrent starts of dynos with the same slug fetch it once.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl SlugCache {
    /// Opens (creating) the cache in `dir` and removes what an interrupted fetch left behind.
    pub fn open(
        dir: &Path,
        coordinator: &str,
        credential: impl Into<crate::credential::Credential>,
    ) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") || name.ends_with(".extracting") {
                crate::supervisor::remove_tree(&entry.path())?;
            }
        }
        Ok(SlugCache {
            dir: dir.to_path_buf(),
            coordinator: coordinator.trim_end_matches('/').to_string(),
            credential: credential.into(),
            locks: Mutex::new(HashMap::new()),
        })
    }

    /// Where slug `sha` is (or will be) extracted.
    pub fn path(&self, sha: &str) -> PathBuf {
        self.dir.join(sha)
    }

    /// The extracted tree of slug `sha`, fetching and extracting it first if needed.
    pub async fn ensure(&self, sha: &str) -> Result<PathBuf, SlugError> {
        if !valid_sha(sha) {
            return Err(SlugError::InvalidId(sha.to_string()));
        }
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(sha.to_string())
            .or_default()
            .clone();
        let guard = lock.lock_owned().await;
        let target = self.path(sha);
        if target.is_dir() {
            return Ok(target);
        }
        let url = format!("{}/slugs/{sha}", self.coordinator);
        let (token, dir, sha) = (self.credential.current(), self.dir.clone(), sha.to_string());
        let pin = self.credential.pin();
        // The guard moves into the blocking task: if this caller is dropped (its dyno stopped
        // mid-fetch), the download runs on, and the next caller must wait for it, not race it.
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            fetch_and_extract(&url, &token, pin, &dir, &sha)
        })
        .await
        .map_err(|e| SlugError::Task(e.to_string()))?
    }
}

fn fetch_and_extract(
    url: &str,
    token: &str,
    pin: Option<dyno_shared::tls::Pin>,
    dir: &Path,
    sha: &str,
) -> Result<PathBuf, SlugError> {
    let tarball = dir.join(format!("{sha}.tar.gz"));
    // A tarball is only renamed into place after verification, so one that exists is good.
    if !tarball.is_file() {
        let started = std::time::Instant::now();
        let bytes = download(url, token, pin, &tarball, sha)?;
        info!(slug = %sha, bytes, elapsed_ms = started.elapsed().as_millis() as u64, "fetched slug");
    }
    let target = dir.join(sha);
    let staging = dir.join(format!("{sha}.extracting"));
    if staging.exists() {
        crate::supervisor::remove_tree(&staging).map_err(io_err("remove", &staging))?;
    }
    fs::create_dir(&staging).map_err(io_err("create", &staging))?;
    if let Err(source) = unpack(&tarball, &staging) {
        let _ = crate::supervisor::remove_tree(&staging);
        return Err(SlugError::Extract {
            sha: sha.to_string(),
            source,
        });
    }
    fs::rename(&staging, &target).map_err(io_err("rename", &staging))?;
    // The extracted tree is the cache; the tarball is no longer needed.
    let _ = fs::remove_file(&tarball);
    Ok(target)
}

/// Streams the slug to `{dest}.tmp` while hashing it, then renames it to `dest` if the hash is
/// `sha`. Returns the size.
pub fn download(
    url: &str,
    token: &str,
    pin: Option<dyno_shared::tls::Pin>,
    dest: &Path,
    sha: &str,
) -> Result<u64, SlugError> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(CONNECT_TIMEOUT)
        .timeout_read(READ_TIMEOUT)
        .tls_config(dyno_shared::tls::client_config(pin))
        .build();
    let response = agent
        .get(url)
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .map_err(|e| match e {
            ureq::Error::Status(401, _) => SlugError::Unauthorized {
                sha: sha.to_string(),
            },
            ureq::Error::Status(status, _) => SlugError::Status {
                sha: sha.to_string(),
                status,
            },
            ureq::Error::Transport(t) => SlugError::Transport {
                sha: sha.to_string(),
                message: t.to_string(),
            },
        })?;
    let tmp = dest.with_extension("gz.tmp");
    let result = write_verified(response.into_reader(), &tmp, sha);
    match result {
        Ok(size) => {
            fs::rename(&tmp, dest).map_err(io_err("rename", &tmp))?;
            Ok(size)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn write_verified(reader: impl Read, tmp: &Path, sha: &str) -> Result<u64, SlugError> {
    write_verified_up_to(reader, tmp, sha, MAX_SLUG_BYTES as u64)
}

fn write_verified_up_to(
    reader: impl Read,
    tmp: &Path,
    sha: &str,
    max_bytes: u64,
) -> Result<u64, SlugError> {
    let mut reader = reader.take(max_bytes + 1);
    let mut file = File::create(tmp).map_err(io_err("create", tmp))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(SlugError::Transport {
                    sha: sha.to_string(),
                    message: e.to_string(),
                });
            }
        };
        total += n as u64;
        if total > max_bytes {
            return Err(SlugError::TooLarge {
                sha: sha.to_string(),
            });
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(io_err("write", tmp))?;
    }
    file.sync_all().map_err(io_err("sync", tmp))?;
    let actual = hex(&hasher.finalize());
    if actual != sha {
        return Err(SlugError::HashMismatch {
            expected: sha.to_string(),
            actual,
        });
    }
    Ok(total)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Unpacks a gzipped tar into `dst`. Only files, directories and links are created: tar's
/// `unpack_in` refuses paths that leave `dst` (`..`, absolute, through symlinks), device nodes
/// and fifos have no place in an app, and setuid/setgid bits are not kept.
pub fn unpack(tarball: &Path, dst: &Path) -> io::Result<()> {
    let file = File::open(tarball)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    archive.set_preserve_permissions(false);
    archive.set_preserve_ownerships(false);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let dst = dst.canonicalize()?;
    // Directories last, so a read-only one does not block what goes inside (as tar's own unpack).
    let mut directories = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        use tar::EntryType as T;
        match kind {
            T::Directory => directories.push(entry),
            T::Regular | T::Continuous | T::GNUSparse | T::Symlink | T::Link => {
                crate::runtime::writing_file(|| entry.unpack_in(&dst))?;
            }
            other => debug!(path = ?entry.path().ok(), kind = ?other, "skipping slug entry"),
        }
    }
    directories.sort_by(|a, b| b.path_bytes().cmp(&a.path_bytes()));
    for mut dir in directories {
        dir.unpack_in(&dst)?;
    }
    Ok(())
}

/// Copies a tree, keeping permission bits and symlinks (as links). Other special files are
/// skipped.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let perms = fs::symlink_metadata(src)?.permissions();
    fs::create_dir(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if kind.is_dir() {
            copy_tree(&from, &to)?;
        } else if kind.is_file() {
            // fs::copy keeps the permission bits, the executable one included.
            crate::runtime::writing_file(|| fs::copy(&from, &to))?;
        }
    }
    // Last, so a read-only directory does not block its own contents.
    fs::set_permissions(dst, perms)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tar_gz(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    }

    fn file_header(path: &[u8], size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_old();
        // Written raw: set_path refuses `..`, which is exactly what these tests need.
        h.as_old_mut().name[..path.len()].copy_from_slice(path);
        h.set_size(size);
        h.set_mode(mode);
        h.set_entry_type(kind);
        h.set_cksum();
        h
    }

    #[test]
    fn sha_ids_are_checked() {
        assert!(valid_sha(&"a".repeat(64)));
        assert!(!valid_sha(&"A".repeat(64)));
        assert!(!valid_sha("../../etc"));
        assert!(!valid_sha(&"a".repeat(63)));
    }

    #[test]
    fn unpack_stays_inside_the_target() {
        let root = tempfile::tempdir().unwrap();
        let dst = root.path().join("dst");
        fs::create_dir(&dst).unwrap();
        let outside = root.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let bytes = tar_gz(|b| {
            b.append(
                &file_header(b"../escaped", 2, 0o644, tar::EntryType::Regular),
                &b"hi"[..],
            )
            .unwrap();
            b.append(
                &file_header(b"ok.txt", 2, 0o644, tar::EntryType::Regular),
                &b"ok"[..],
            )
            .unwrap();
            b.append(
                &file_header(b"dev", 0, 0o644, tar::EntryType::Char),
                &b""[..],
            )
            .unwrap();
        });
        let tarball = root.path().join("s.tar.gz");
        fs::write(&tarball, bytes).unwrap();
        unpack(&tarball, &dst).unwrap();
        assert!(!root.path().join("escaped").exists());
        assert_eq!(fs::read_to_string(dst.join("ok.txt")).unwrap(), "ok");
        assert!(!dst.join("dev").exists());

        // A symlink pointing outside cannot be written through.
        let bytes = tar_gz(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "link", &outside).unwrap();
            b.append(
                &file_header(b"link/owned", 2, 0o644, tar::EntryType::Regular),
                &b"hi"[..],
            )
            .unwrap();
        });
        fs::write(&tarball, bytes).unwrap();
        let dst2 = root.path().join("dst2");
        fs::create_dir(&dst2).unwrap();
        assert!(unpack(&tarball, &dst2).is_err());
        assert!(!outside.join("owned").exists());
    }

    #[test]
    fn copy_keeps_modes_and_symlinks() {
        let root = tempfile::tempdir().unwrap();
        let src = root.path().join("src");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("bin/run"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("bin/run"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(src.join("data"), "x").unwrap();
        fs::set_permissions(src.join("data"), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("bin/run", src.join("run-link")).unwrap();
        let dst = root.path().join("dst");
        copy_tree(&src, &dst).unwrap();
        let mode = |p: &str| fs::metadata(dst.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("bin/run"), 0o755);
        assert_eq!(mode("data"), 0o600);
        assert_eq!(
            fs::read_link(dst.join("run-link")).unwrap(),
            Path::new("bin/run")
        );
    }

    #[test]
    fn verification_rejects_the_wrong_content() {
        let root = tempfile::tempdir().unwrap();
        let tmp = root.path().join("x.tmp");
        let good = hex(&Sha256::digest(b"slug"));
        assert_eq!(write_verified(&b"slug"[..], &tmp, &good).unwrap(), 4);
        let err = write_verified(&b"other"[..], &tmp, &good).unwrap_err();
        assert!(matches!(err, SlugError::HashMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&good));
    }

    #[test]
    fn the_slug_size_limit_is_enforced() {
        let root = tempfile::tempdir().unwrap();
        let tmp = root.path().join("big.tmp");
        // The real limit (MAX_SLUG_BYTES) is 500 MB; the same code path with a small one.
        let endless = io::repeat(0).take(1000);
        let err = write_verified_up_to(endless, &tmp, &"0".repeat(64), 999).unwrap_err();
        assert!(matches!(err, SlugError::TooLarge { .. }), "{err}");
        let exact = io::repeat(0).take(999);
        let err = write_verified_up_to(exact, &tmp, &"0".repeat(64), 999).unwrap_err();
        assert!(matches!(err, SlugError::HashMismatch { .. }), "{err}");
    }
}
