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
        (Some(3), Some("Standard-2X"))
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

/// The body of a non-tailing `GET /apps/{app}/logs` as (process, message) pairs.
fn log_lines(s: &Server, query: &str) -> Result<Vec<(String, String)>, (u16, Value)> {
    let r = ureq::get(&format!("{}/apps/{query}", s.url))
        .set("Authorization", "Bearer secret")
        .call();
    match r {
        Ok(r) => Ok(r
            .into_string()
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["process"].as_str().unwrap().to_string(),
                    v["message"].as_str().unwrap().to_string(),
                )
            })
            .collect()),
        Err(ureq::Error::Status(code, r)) => Err((code, r.into_json().unwrap())),
        Err(e) => panic!("{query}: {e}"),
    }
}

/// A syslog receiver: each frame's message part, as they arrive over any connection.
fn syslog_receiver() -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, Read};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut r = std::io::BufReader::new(conn);
                loop {
                    let mut len = Vec::new();
                    if r.read_until(b' ', &mut len).unwrap_or(0) == 0 {
                        return;
                    }
                    let len: usize = String::from_utf8_lossy(&len).trim().parse().unwrap();
                    let mut msg = vec![0; len];
                    r.read_exact(&mut msg).unwrap();
                    let msg = String::from_utf8(msg).unwrap();
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, rx)
}

fn wait_for_frame(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(f) if f.contains(needle) => return f,
            Ok(_) => {}
            Err(e) => panic!("no frame containing {needle:?}: {e}"),
        }
    }
}

#[test]
fn log_grep_drains_and_features_with_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    s.call("POST", "/apps", Some(json!({"name": "shop"})));
    s.upload("shop", &slug("web: w"));
    s.call("PATCH", "/apps/shop/config-vars", Some(json!({"A": "1"})));

    // grep keeps matching messages; the last N of them with `lines`.
    let all = log_lines(&s, "shop/logs").unwrap();
    assert!(all.len() >= 3, "{all:?}");
    let releases = log_lines(&s, "shop/logs?grep=%5ERelease%20v%5Cd").unwrap();
    assert_eq!(releases.len(), 2, "{releases:?}");
    assert!(
        releases
            .iter()
            .all(|(p, m)| p == "api" && m.starts_with("Release v"))
    );
    let last = log_lines(&s, "shop/logs?grep=Release&lines=1").unwrap();
    assert!(last[0].1.contains("Set A config vars"), "{last:?}");
    let (code, err) = log_lines(&s, "shop/logs?grep=a(").unwrap_err();
    assert_eq!((code, err["id"].as_str()), (400, Some("bad_request")));
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("invalid grep pattern \"a(\""),
        "{err}"
    );
    let long = "a".repeat(dyno_coordinator::loghub::MAX_GREP_BYTES + 1);
    let (code, err) = log_lines(&s, &format!("shop/logs?grep={long}")).unwrap_err();
    assert_eq!(code, 400);
    assert!(err["message"].as_str().unwrap().contains("limit"), "{err}");
    assert_eq!(log_lines(&s, "ghost/logs?grep=x").unwrap_err().0, 404);

    // Invalid drain URLs: 422 naming the problem, nothing stored.
    for (url, needle) in [
        ("ftp://h:1", "unsupported drain scheme"),
        ("syslog://h", "need a port"),
        ("syslog://h:99999", "invalid port"),
        ("https://bad host/", "spaces"),
        ("nonsense", "no scheme"),
    ] {
        let (code, err) = s.call("POST", "/apps/shop/log-drains", Some(json!({"url": url})));
        assert_eq!(
            (code, err["id"].as_str()),
            (422, Some("invalid_params")),
            "{url}"
        );
        assert!(
            err["message"].as_str().unwrap().contains(needle),
            "{url}: {err}"
        );
    }
    let (code, _) = s.call("POST", "/apps/shop/log-drains", Some(json!({"nope": 1})));
    assert_eq!(code, 400);
    assert_eq!(s.call("GET", "/apps/shop/log-drains", None).1, json!([]));

    // A drain gets the app's lines from then on, as octet-counted RFC 5424 frames.
    let (port, frames) = syslog_receiver();
    let url = format!("syslog://127.0.0.1:{port}");
    let (code, drain) = s.call("POST", "/apps/shop/log-drains", Some(json!({"url": url})));
    assert_eq!(code, 201, "{drain}");
    assert_eq!(drain["url"], url);
    assert_eq!(drain["addon"], Value::Null);
    let token = drain["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("d.") && token.len() == 38, "{token}");
    let (code, err) = s.call("POST", "/apps/shop/log-drains", Some(json!({"url": url})));
    assert_eq!((code, err["id"].as_str()), (409, Some("conflict")));
    s.call("PATCH", "/apps/shop/config-vars", Some(json!({"B": "2"})));
    let f = wait_for_frame(&frames, "Set B config vars");
    assert!(f.starts_with("<45>1 20"), "{f}");
    assert!(
        f.contains(&format!(" {token} heroku api - - Release v")),
        "{f}"
    );

    let (_, list) = s.call("GET", "/apps/shop/log-drains", None);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], drain["id"]);
    // Removed by URL (or id, or token); a second removal is 404.
    let path = format!("/apps/shop/log-drains/syslog:%2F%2F127.0.0.1:{port}");
    assert_eq!(s.call("DELETE", &path, None).0, 200);
    assert_eq!(s.call("DELETE", &path, None).0, 404);
    assert_eq!(s.call("GET", "/apps/shop/log-drains", None).1, json!([]));

    // Features: runtime-metrics is off until switched on; unknown ones are 404.
    let (code, features) = s.call("GET", "/apps/shop/features", None);
    assert_eq!(code, 200);
    assert_eq!(features[0]["name"], "runtime-metrics");
    assert_eq!(features[0]["enabled"], false);
    let (code, f) = s.call(
        "PATCH",
        "/apps/shop/features/log-runtime-metrics",
        Some(json!({"enabled": true})),
    );
    assert_eq!(
        (code, f["name"].as_str(), f["enabled"].as_bool()),
        (200, Some("runtime-metrics"), Some(true))
    );
    assert_eq!(
        s.call("GET", "/apps/shop/features/runtime-metrics", None).1["enabled"],
        true
    );
    let (code, err) = s.call(
        "PATCH",
        "/apps/shop/features/warp-drive",
        Some(json!({"enabled": true})),
    );
    assert_eq!(code, 404);
    assert!(
        err["message"].as_str().unwrap().contains("warp-drive"),
        "{err}"
    );
    assert_eq!(
        s.call(
            "PATCH",
            "/apps/shop/features/runtime-metrics",
            Some(json!({"enabled": "yes"}))
        )
        .0,
        400
    );
}

#[test]
fn log_history_and_drains_survive_a_restart_and_go_with_their_app() {
    let dir = tempfile::tempdir().unwrap();
    let (port, frames) = syslog_receiver();
    {
        let s = Server::start(dir.path());
        s.call("POST", "/apps", Some(json!({"name": "keep"})));
        s.call("POST", "/apps", Some(json!({"name": "gone"})));
        s.call("PATCH", "/apps/keep/config-vars", Some(json!({"K": "v"})));
        let url = format!("syslog://127.0.0.1:{port}");
        assert_eq!(
            s.call("POST", "/apps/keep/log-drains", Some(json!({"url": url})))
                .0,
            201
        );
        s.call("PATCH", "/apps/gone/config-vars", Some(json!({"G": "v"})));
        assert_eq!(s.call("DELETE", "/apps/gone", None).0, 200);
    }
    let s = Server::start(dir.path());
    let keep = log_lines(&s, "keep/logs").unwrap();
    let messages: Vec<&str> = keep.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(
        messages,
        ["App created", "Release v1 created: Set K config vars"]
    );
    // The restarted coordinator starts the stored drain.
    assert_eq!(
        s.call("GET", "/apps/keep/log-drains", None)
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
    s.call("PATCH", "/apps/keep/config-vars", Some(json!({"L": "w"})));
    wait_for_frame(&frames, "Set L config vars");
    // A destroyed app's lines went with it: a new app of that name starts afresh.
    s.call("POST", "/apps", Some(json!({"name": "gone"})));
    let gone = log_lines(&s, "gone/logs").unwrap();
    assert_eq!(gone, [("api".to_string(), "App created".to_string())]);
}
