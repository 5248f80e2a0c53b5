//! The slug cache against a small HTTP server standing in for the coordinator.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dyno_agent::slugs::{SlugCache, SlugError, copy_tree, hex};
use sha2::{Digest, Sha256};

struct Server {
    url: String,
    requests: Arc<AtomicUsize>,
    auth: Arc<Mutex<Vec<String>>>,
}

/// Answers every request with `status` and `body`.
fn serve(status: u16, body: Vec<u8>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let auth = Arc::new(Mutex::new(Vec::new()));
    let (count, seen) = (requests.clone(), auth.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok() && line != "\r\n" && !line.is_empty() {
                if let Some(v) = line.strip_prefix("Authorization: ") {
                    seen.lock().unwrap().push(v.trim().to_string());
                }
                line.clear();
            }
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    Server {
        url,
        requests,
        auth,
    }
}

fn slug_bytes() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).unwrap();
    };
    add("Procfile", b"web: bin/web\n", 0o644);
    add("bin/web", b"#!/bin/sh\necho web\n", 0o755);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "web-link", "bin/web").unwrap();
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

#[tokio::test]
async fn fetches_once_verifies_extracts_and_copies_with_modes() {
    let bytes = slug_bytes();
    let sha = hex(&Sha256::digest(&bytes));
    let server = serve(200, bytes);
    let state = tempfile::tempdir().unwrap();
    let cache =
        Arc::new(SlugCache::open(&state.path().join("slugs"), &server.url, "s3cret").unwrap());

    // Concurrent starts of dynos with the same slug fetch it once.
    let (a, b) = tokio::join!(cache.ensure(&sha), cache.ensure(&sha));
    let dir = a.unwrap();
    assert_eq!(b.unwrap(), dir);
    assert_eq!(dir, state.path().join("slugs").join(&sha));
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    assert_eq!(server.auth.lock().unwrap().as_slice(), ["Bearer s3cret"]);
    cache.ensure(&sha).await.unwrap();
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        1,
        "cached slugs are reused"
    );
    let leftovers: Vec<_> = std::fs::read_dir(state.path().join("slugs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        leftovers,
        vec![sha.clone()],
        "no temp files or tarballs remain"
    );

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("bin/web")), 0o755);
    assert_eq!(mode(&dir.join("Procfile")), 0o644);

    let app = state.path().join("dynos/d1/app");
    std::fs::create_dir_all(app.parent().unwrap()).unwrap();
    copy_tree(&dir, &app).unwrap();
    assert_eq!(mode(&app.join("bin/web")), 0o755);
    assert_eq!(
        std::fs::read_link(app.join("web-link")).unwrap(),
        std::path::Path::new("bin/web")
    );
    let out = std::process::Command::new(app.join("web-link"))
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"web\n");

    // A new cache over the same directory (an agent restart) reuses what is there.
    let again = SlugCache::open(&state.path().join("slugs"), &server.url, "s3cret").unwrap();
    again.ensure(&sha).await.unwrap();
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_slug_whose_content_does_not_match_its_hash_is_rejected() {
    let bytes = slug_bytes();
    let wrong = hex(&Sha256::digest(b"some other slug"));
    let server = serve(200, bytes);
    let state = tempfile::tempdir().unwrap();
    let slugs = state.path().join("slugs");
    let cache = SlugCache::open(&slugs, &server.url, "t").unwrap();
    let err = cache.ensure(&wrong).await.unwrap_err();
    assert!(matches!(err, SlugError::HashMismatch { .. }), "{err}");
    assert!(err.to_string().contains("failed verification"), "{err}");
    assert_eq!(
        std::fs::read_dir(&slugs).unwrap().count(),
        0,
        "the download is deleted"
    );
}

#[tokio::test]
async fn refusals_name_the_problem() {
    let sha = "e".repeat(64);
    let state = tempfile::tempdir().unwrap();

    let server = serve(401, b"{}".to_vec());
    let cache = SlugCache::open(&state.path().join("a"), &server.url, "bad").unwrap();
    let err = cache.ensure(&sha).await.unwrap_err();
    assert!(err.to_string().contains("refused the token"), "{err}");

    let server = serve(404, b"{}".to_vec());
    let cache = SlugCache::open(&state.path().join("b"), &server.url, "t").unwrap();
    let err = cache.ensure(&sha).await.unwrap_err();
    assert!(err.to_string().contains("HTTP 404"), "{err}");

    let cache = SlugCache::open(&state.path().join("c"), "http://127.0.0.1:1", "t").unwrap();
    let err = cache.ensure(&sha).await.unwrap_err();
    assert!(matches!(err, SlugError::Transport { .. }), "{err}");

    let err = cache.ensure("../../etc/passwd").await.unwrap_err();
    assert!(matches!(err, SlugError::InvalidId(_)), "{err}");
}
