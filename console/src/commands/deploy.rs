//! `deploy DIR`: check the Procfile, pack the slug, upload it as a new release.

use super::{Ctx, emit_json, emit_line};
use crate::client::Client;
use crate::error::usage;
use crate::slug;
use anyhow::Result;
use dyno_shared::Procfile;
use dyno_shared::api::{MAX_SLUG_BYTES, Release};
use dyno_shared::procfile::MAX_PROCFILE_BYTES;
use std::path::Path;

/// Everything that can be wrong with `dir` before packing: a usage error naming the problem.
pub fn check_dir(dir: &Path) -> Result<Procfile> {
    if !dir.is_dir() {
        return Err(usage(format!("{} is not a directory", dir.display())));
    }
    let path = dir.join("Procfile");
    let meta = match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => m,
        _ => {
            return Err(usage(format!(
                "no Procfile in {}: add one with lines like `web: ./server`",
                dir.display()
            )));
        }
    };
    if meta.len() > MAX_PROCFILE_BYTES as u64 {
        return Err(usage(format!(
            "{}: Procfile is larger than {MAX_PROCFILE_BYTES} bytes",
            path.display()
        )));
    }
    let text = std::fs::read(&path)
        .map_err(|e| usage(format!("failed to read {}: {e}", path.display())))?;
    let text = String::from_utf8(text)
        .map_err(|_| usage(format!("{} is not UTF-8 text", path.display())))?;
    Procfile::parse(&text).map_err(|e| usage(format!("{}: {e}", path.display())))
}

/// Packs and uploads `dir` as a new release of `app` (shared by `deploy` and `up`).
pub fn deploy_dir(client: &Client, app: &str, dir: &Path, description: &str) -> Result<Release> {
    let slug = slug::pack(dir, MAX_SLUG_BYTES)?;
    eprintln!(
        "Packed {} entries from {} into {:.1} KB",
        slug.entries,
        dir.display(),
        slug.bytes.len() as f64 / 1024.0
    );
    client.post_bytes(
        &format!("/apps/{app}/releases"),
        &[("description", description)],
        "application/gzip",
        &slug.bytes,
    )
}

pub fn default_description(dir: &Path) -> String {
    let name = std::fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    format!("Deploy {name}")
}

pub fn run(ctx: &Ctx, dir: &Path, message: Option<&str>) -> Result<i32> {
    let procfile = check_dir(dir)?;
    let app = ctx.app()?;
    let types: Vec<&str> = procfile.processes.keys().map(|t| t.as_str()).collect();
    eprintln!("Procfile declares types -> {}", types.join(", "));
    let description = match message {
        Some(m) => m.to_string(),
        None => default_description(dir),
    };
    let release = deploy_dir(&ctx.client()?, &app, dir, &description)?;
    if ctx.json() {
        emit_json(&release)?;
    } else {
        emit_line(&format!("Released v{}", release.version))?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procfile_problems_are_usage_errors_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_dir(dir.path()).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2);
        assert!(err.to_string().contains("no Procfile"), "{err}");
        std::fs::write(dir.path().join("Procfile"), "web: ok\nnot a line\n").unwrap();
        let err = check_dir(dir.path()).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2);
        assert!(err.to_string().contains("line 2"), "{err}");
        std::fs::write(dir.path().join("Procfile"), "web: ok\n").unwrap();
        assert_eq!(check_dir(dir.path()).unwrap().processes.len(), 1);
    }
}
