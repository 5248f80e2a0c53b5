//! Packing an app directory into a slug: a gzipped tar with the Procfile at its root, honouring
//! `.slugignore` and skipping `.git`.

use crate::error::usage;
use anyhow::{Context, Result};
use flate2::Compression;
use flate2::write::GzEncoder;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// One `.slugignore` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoreRule {
    pattern: Vec<char>,
    /// Matched against the whole path from the root rather than any path's last component.
    anchored: bool,
    dir_only: bool,
}

impl IgnoreRule {
    pub fn parse(line: &str) -> Option<IgnoreRule> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let (line, dir_only) = match line.strip_suffix('/') {
            Some(l) => (l, true),
            None => (line, false),
        };
        let (line, leading_slash) = match line.strip_prefix('/') {
            Some(l) => (l, true),
            None => (line, false),
        };
        if line.is_empty() {
            return None;
        }
        // As in .gitignore, a slash inside the pattern also ties it to the root.
        let anchored = leading_slash || line.contains('/');
        Some(IgnoreRule {
            pattern: line.chars().collect(),
            anchored,
            dir_only,
        })
    }

    /// `rel` is the path from the slug root with `/` separators.
    pub fn matches(&self, rel: &str, is_dir: bool) -> bool {
        if self.dir_only && !is_dir {
            return false;
        }
        let subject = if self.anchored {
            rel
        } else {
            rel.rsplit('/').next().unwrap_or(rel)
        };
        let text: Vec<char> = subject.chars().collect();
        glob(&self.pattern, &text)
    }
}

/// `*` and `?` stay within one path component, `**` crosses them.
fn glob(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') if p.get(1) == Some(&'*') => {
            let rest = &p[2..];
            // `**/` may also stand for no directories at all.
            if rest.first() == Some(&'/') && glob(&rest[1..], t) {
                return true;
            }
            (0..=t.len()).any(|i| glob(rest, &t[i..]))
        }
        Some('*') => {
            let rest = &p[1..];
            for i in 0..=t.len() {
                if glob(rest, &t[i..]) {
                    return true;
                }
                if i < t.len() && t[i] == '/' {
                    break;
                }
            }
            false
        }
        Some('?') => !t.is_empty() && t[0] != '/' && glob(&p[1..], &t[1..]),
        Some(c) => t.first() == Some(c) && glob(&p[1..], &t[1..]),
    }
}

#[derive(Debug, Clone, Default)]
pub struct IgnoreList {
    rules: Vec<IgnoreRule>,
}

impl IgnoreList {
    pub fn parse(text: &str) -> IgnoreList {
        IgnoreList {
            rules: text.lines().filter_map(IgnoreRule::parse).collect(),
        }
    }

    pub fn is_ignored(&self, rel: &str, is_dir: bool) -> bool {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        if name == ".git" {
            return true;
        }
        // The Procfile is what makes a slug a slug; no pattern can drop it.
        if rel == "Procfile" {
            return false;
        }
        self.rules.iter().any(|r| r.matches(rel, is_dir))
    }
}

/// A packed slug.
pub struct Slug {
    pub bytes: Vec<u8>,
    /// Entries in the archive (files, directories, links).
    pub entries: usize,
}

/// A `Vec` that refuses to grow past `limit`, so an oversized slug stops packing early.
struct Capped {
    buf: Vec<u8>,
    limit: usize,
    hit: Arc<AtomicBool>,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.hit.store(true, Ordering::SeqCst);
            return Err(io::Error::other("slug size limit reached"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Packs `dir` into a gzipped tar of at most `limit` bytes (a usage error beyond that).
pub fn pack(dir: &Path, limit: usize) -> Result<Slug> {
    let ignore = match fs::read_to_string(dir.join(".slugignore")) {
        Ok(text) => IgnoreList::parse(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => IgnoreList::default(),
        Err(e) => {
            return Err(e).with_context(|| format!("failed to read {}/.slugignore", dir.display()));
        }
    };
    let hit = Arc::new(AtomicBool::new(false));
    let out = Capped {
        buf: Vec::new(),
        limit,
        hit: hit.clone(),
    };
    let mut builder = tar::Builder::new(GzEncoder::new(out, Compression::default()));
    builder.follow_symlinks(false);
    let mut entries = 0;
    let result = add_dir(&mut builder, dir, Path::new(""), &ignore, &mut entries)
        .and_then(|_| builder.into_inner().map_err(Into::into))
        .and_then(|gz| gz.finish().map_err(Into::into));
    match result {
        Ok(out) => Ok(Slug {
            bytes: out.buf,
            entries,
        }),
        Err(_) if hit.load(Ordering::SeqCst) => Err(usage(format!(
            "{} packs to more than the slug limit of {} MB; list what the app does not need in .slugignore",
            dir.display(),
            limit / (1024 * 1024)
        ))),
        Err(e) => Err(e.context(format!("failed to pack {}", dir.display()))),
    }
}

fn header_for(meta: &fs::Metadata) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    // Ownership means nothing on another host; keep the permission bits exactly.
    h.set_uid(0);
    h.set_gid(0);
    h.set_mode(meta.mode() & 0o7777);
    h
}

fn add_dir<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    rel_dir: &Path,
    ignore: &IgnoreList,
    entries: &mut usize,
) -> Result<()> {
    let abs_dir = root.join(rel_dir);
    let mut names: Vec<_> = fs::read_dir(&abs_dir)
        .with_context(|| format!("failed to read {}", abs_dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .with_context(|| format!("failed to read {}", abs_dir.display()))?;
    // Sorted, so the same directory packs to the same bytes.
    names.sort();
    for name in names {
        let rel: PathBuf = rel_dir.join(&name);
        let abs = root.join(&rel);
        let meta = fs::symlink_metadata(&abs)
            .with_context(|| format!("failed to stat {}", abs.display()))?;
        let rel_str = rel.to_string_lossy().into_owned();
        if ignore.is_ignored(&rel_str, meta.is_dir()) {
            continue;
        }
        let ft = meta.file_type();
        let mut header = header_for(&meta);
        if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            builder.append_data(&mut header, &rel, io::empty())?;
            *entries += 1;
            add_dir(builder, root, &rel, ignore, entries)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&abs)
                .with_context(|| format!("failed to read link {}", abs.display()))?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, &rel, &target)?;
            *entries += 1;
        } else if ft.is_file() {
            let file = fs::File::open(&abs)
                .with_context(|| format!("failed to open {}", abs.display()))?;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            builder.append_data(&mut header, &rel, file)?;
            *entries += 1;
        }
        // Sockets, fifos and devices have no place in a slug.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    fn ignored(rules: &str, path: &str, is_dir: bool) -> bool {
        IgnoreList::parse(rules).is_ignored(path, is_dir)
    }

    #[test]
    fn patterns_without_slash_match_at_any_depth() {
        assert!(ignored("*.log", "a.log", false));
        assert!(ignored("*.log", "deep/dir/a.log", false));
        assert!(!ignored("*.log", "a.logx", false));
        assert!(ignored("tmp", "x/tmp", true));
        assert!(ignored("file?.txt", "file1.txt", false));
        assert!(!ignored("file?.txt", "file10.txt", false));
    }

    #[test]
    fn leading_slash_anchors_and_trailing_slash_means_directory() {
        assert!(ignored("/build", "build", true));
        assert!(!ignored("/build", "src/build", true));
        assert!(ignored("docs/", "docs", true));
        assert!(!ignored("docs/", "docs", false));
        assert!(ignored("docs/", "a/docs", true));
        assert!(ignored("/spec/*.rb", "spec/a.rb", false));
        assert!(!ignored("/spec/*.rb", "spec/sub/a.rb", false));
        assert!(ignored("spec/**/*.rb", "spec/sub/x/a.rb", false));
        assert!(ignored("**/cache", "cache", true));
        assert!(ignored("**/cache", "a/b/cache", true));
    }

    #[test]
    fn comments_blank_lines_git_and_procfile() {
        let rules = "# a comment\n\n   \n*.tmp\n";
        assert_eq!(IgnoreList::parse(rules).rules.len(), 1);
        assert!(ignored("", ".git", true));
        assert!(ignored("", "vendor/lib/.git", true));
        assert!(!ignored("Procfile", "Procfile", false));
        assert!(!ignored("#x", "#x", false), "a comment is not a pattern");
    }

    fn unpack(bytes: &[u8]) -> BTreeMap<String, (tar::EntryType, u32, Vec<u8>, Option<String>)> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
        let mut out = BTreeMap::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let kind = e.header().entry_type();
            let mode = e.header().mode().unwrap();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.insert(path, (kind, mode, data, link));
        }
        out
    }

    #[test]
    fn packs_relative_paths_modes_and_symlinks_without_ignored_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("Procfile"), "web: bin/server\n").unwrap();
        fs::write(d.join(".slugignore"), "# big stuff\n*.log\n/tmp/\nspec\n").unwrap();
        fs::create_dir_all(d.join(".git/objects")).unwrap();
        fs::write(d.join(".git/HEAD"), "ref").unwrap();
        fs::create_dir_all(d.join("bin")).unwrap();
        fs::write(d.join("bin/server"), "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(d.join("bin/server"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(d.join("debug.log"), "x").unwrap();
        fs::write(d.join("bin/other.log"), "x").unwrap();
        fs::create_dir_all(d.join("tmp")).unwrap();
        fs::write(d.join("tmp/cache"), "x").unwrap();
        fs::create_dir_all(d.join("lib/tmp")).unwrap();
        fs::write(d.join("lib/tmp/keep"), "kept: /tmp/ is anchored").unwrap();
        fs::create_dir_all(d.join("lib/spec")).unwrap();
        fs::write(d.join("lib/spec/a_spec.rb"), "x").unwrap();
        std::os::unix::fs::symlink("bin/server", d.join("server-link")).unwrap();

        let slug = pack(d, 10 * 1024 * 1024).unwrap();
        let files = unpack(&slug.bytes);
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            vec![
                ".slugignore",
                "Procfile",
                "bin",
                "bin/server",
                "lib",
                "lib/tmp",
                "lib/tmp/keep",
                "server-link"
            ]
        );
        assert_eq!(slug.entries, names.len());
        let (kind, mode, data, _) = &files["bin/server"];
        assert_eq!(*kind, tar::EntryType::Regular);
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(data, b"#!/bin/sh\necho hi\n");
        assert_eq!(files["Procfile"].1 & 0o111, 0, "not executable");
        let (kind, _, _, link) = &files["server-link"];
        assert_eq!(*kind, tar::EntryType::Symlink);
        assert_eq!(link.as_deref(), Some("bin/server"));
        assert_eq!(files["bin"].0, tar::EntryType::Directory);

        // The same tree packs to the same bytes.
        assert_eq!(pack(d, 10 * 1024 * 1024).unwrap().bytes, slug.bytes);
    }

    #[test]
    fn oversized_slug_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("Procfile"), "web: x\n").unwrap();
        // Incompressible bytes, so the gzip stream really is larger than the limit.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let noise: Vec<u8> = (0..64 * 1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        fs::write(dir.path().join("blob"), noise).unwrap();
        let err = pack(dir.path(), 16 * 1024).err().expect("too large");
        assert_eq!(crate::error::exit_code(&err), 2);
        assert!(err.to_string().contains("slug limit"), "{err}");
    }
}
