//! The control API in-process (the same `run` as `main`), on ports chosen by the OS, without an
//! agent: validation, errors and persistence. Also makes `cargo test` build `dyno-coordinator`.

use dyno_coordinator::CoordinatorConfig;
use serde_json::{Value, json};
use std::time::Duration;

struct Server {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(dir: &std::path::Path) -> Server {
        Self::start_with(dir, dyno_shared::api::MAX_SLUG_BYTES)
    }

    fn start_with(dir: &std::path::Path, max_slug_bytes: usize) -> Server {
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut config = CoordinatorConfig::new(dir.to_path_buf());
        config.token = Some("secret".into());
        config.max_slug_bytes = max_slug_bytes;
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let router = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                url_tx
                    .send(format!("http://{}", api.local_addr().unwrap()))
                    .unwrap();
                dyno_coordinator::run(config, api, router, async move {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
            });
        });
        let url = url_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Server {
            url,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let req = ureq::request(method, &format!("{}{path}", self.url))
            .set("Authorization", "Bearer secret");
        let r = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match r {
            Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    fn upload(&self, app: &str, slug: &[u8]) -> (u16, Value) {
        let r = ureq::post(&format!("{}/apps/{app}/releases", self.url))
            .set("Authorization", "Bearer secret")
            .send_bytes(slug);
        match r {
            Ok(r) => (r.status(), r.into_json().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap()),
            Err(e) => panic!("upload: {e}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn slug(procfile: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(procfile.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "Procfile", procfile.as_bytes())
        .unwrap();
    b.into_inner().unwrap().finish().unwrap()
}

#[test]
fn apps_releases_formation_and_config_with_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());

    assert_eq!(
        s.call("POST", "/apps", Some(json!({"name": "shop"}))).0,
        201
    );
    let (code, err) = s.call("POST", "/apps", Some(json!({"name": "shop"})));
    assert_eq!((code, err["id"].as_str()), (409, Some("conflict")));
    let (code, err) = s.call("POST", "/apps", Some(json!({"name": "No_Way"})));
    assert_eq!((code, err["id"].as_str()), (422, Some("invalid_params")));
    assert!(err["message"].as_str().unwrap().contains("No_Way"));

    // Scaling before any release names the problem.
    let (code, err) = s.call(
        "POST",
        "/apps/shop/formation/scale",
        Some(json!({"args": ["web=1"]})),
    );
    assert_eq!(code, 422);
    assert!(err["message"].as_str().unwrap().contains("deploy"), "{err}");

    // A malformed Procfile is refused with its line number and makes no release.
    let (code, err) = s.upload("shop", &slug("web: ok\nthis is wrong\n"));
    assert_eq!(code, 422);
    assert!(err["message"].as_str().unwrap().contains("line 2"), "{err}");
    assert_eq!(s.call("GET", "/apps/shop/releases", None).1, json!([]));

    let (code, rel) = s.upload("shop", &slug("web: w\nworker: k\n"));
    assert_eq!((code, rel["version"].as_u64()), (201, Some(1)));
    // First deploy: web=1, like Heroku.
    let (_, f) = s.call("GET", "/apps/shop/formation", None);
    assert_eq!(f[0]["type"], "web");
    assert_eq!(f[0]["quantity"], 1);
    assert_eq!(f[1]["quantity"], 0);

    // All scale arguments or none.
    let (code, _) = s.call(
        "POST",
        "/apps/shop/formation/scale",
        Some(json!({"args": ["web=3", "bogus=1"]})),
    );
    assert_eq!(code, 422);
    let (code, f) = s.call(
        "POST",
        "/apps/shop/formation/scale",
        Some(json!({"args": ["web=3:standard-2x", "worker+2"]})),
    );
    assert_eq!(code, 200);
    assert_eq!(
        (f[0]["quantity"].as_u64(), f[0]["size"].as_str()),
        (Some(3), Some("standard-2x"))
    );
    assert_eq!(f[1]["quantity"], 2);
    // The Platform API's batch update.
    let (code, f) = s.call(
        "PATCH",
        "/apps/shop/formation",
        Some(json!({"updates": [{"type": "worker", "quantity": 1}]})),
    );
    assert_eq!((code, f[1]["quantity"].as_u64()), (200, Some(1)));

    // Config: invalid keys change nothing; valid changes make a release.
    let (code, _) = s.call(
        "PATCH",
        "/apps/shop/config-vars",
        Some(json!({"BAD-KEY": "1"})),
    );
    assert_eq!(code, 422);
    let (code, c) = s.call(
        "PATCH",
        "/apps/shop/config-vars",
        Some(json!({"A": "1", "B": "2"})),
    );
    assert_eq!((code, c), (200, json!({"A": "1", "B": "2"})));
    let (_, c) = s.call("PATCH", "/apps/shop/config-vars", Some(json!({"A": null})));
    assert_eq!(c, json!({"B": "2"}));
    let (_, rels) = s.call("GET", "/apps/shop/releases", None);
    assert_eq!(rels.as_array().unwrap().len(), 3);
    assert_eq!(rels[2]["current"], true);
    assert!(
        rels[2]["description"]
            .as_str()
            .unwrap()
            .contains("Remove A")
    );

    // Unknown things are 404 with a JSON body naming them.
    let (code, err) = s.call("GET", "/apps/ghost/dynos", None);
    assert_eq!((code, err["id"].as_str()), (404, Some("not_found")));
    assert!(err["message"].as_str().unwrap().contains("ghost"));
    let (code, _) = s.call("POST", "/apps/shop/restart", Some(json!({"dyno": "web.9"})));
    assert_eq!(code, 404);
    let (code, _) = s.call("GET", "/apps/shop/logs?source=nope", None);
    assert_eq!(code, 422);
    let (code, _) = s.call("GET", "/slugs/..%2Fstate.db", None);
    assert_eq!(code, 422);

    // No dyno can be placed without hosts: a one-off says so.
    let (code, err) = s.call("POST", "/apps/shop/run", Some(json!({"command": "true"})));
    assert_eq!(code, 503, "{err}");
}

#[test]
fn wrong_or_missing_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    for auth in [None, Some("Bearer nope"), Some("Basic secret")] {
        let mut req = ureq::get(&format!("{}/apps", s.url));
        if let Some(a) = auth {
            req = req.set("Authorization", a);
        }
        match req.call() {
            Err(ureq::Error::Status(401, r)) => {
                let v: Value = r.into_json().unwrap();
                assert_eq!(v["id"], "unauthorized");
            }
            other => panic!("{auth:?}: expected 401, got {other:?}"),
        }
    }
    assert_eq!(
        ureq::get(&format!("{}/healthz", s.url))
            .call()
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn state_survives_a_restart_of_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Server::start(dir.path());
        s.call("POST", "/apps", Some(json!({"name": "keep"})));
        s.upload("keep", &slug("web: w"));
        s.call("PATCH", "/apps/keep/config-vars", Some(json!({"K": "v"})));
    }
    let s = Server::start(dir.path());
    assert_eq!(
        s.call("GET", "/apps/keep/config-vars", None).1,
        json!({"K": "v"})
    );
    assert_eq!(
        s.call("GET", "/apps/keep/releases", None)
            .1
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn a_slug_over_the_limit_is_refused_and_makes_no_release() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), 64 * 1024);
    s.call("POST", "/apps", Some(json!({"name": "big"})));
    let small = slug("web: w");
    assert_eq!(s.upload("big", &small).0, 201);
    let mut big = small.clone();
    big.resize(64 * 1024 + 1, 0);
    let (code, err) = s.upload("big", &big);
    assert_eq!((code, err["id"].as_str()), (413, Some("payload_too_large")));
    assert!(err["message"].as_str().unwrap().contains("65536"), "{err}");
    assert_eq!(
        s.call("GET", "/apps/big/releases", None)
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn concurrent_config_changes_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(Server::start(dir.path()));
    s.call("POST", "/apps", Some(json!({"name": "busy"})));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let (code, _) = s.call(
                    "PATCH",
                    "/apps/busy/config-vars",
                    Some(json!({format!("K{i}"): "1"})),
                );
                assert_eq!(code, 200);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (_, config) = s.call("GET", "/apps/busy/config-vars", None);
    assert_eq!(config.as_object().unwrap().len(), 8, "{config}");
    assert_eq!(
        s.call("GET", "/apps/busy/releases", None)
            .1
            .as_array()
            .unwrap()
            .len(),
        8
    );
}
