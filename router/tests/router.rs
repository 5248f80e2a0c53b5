//! End-to-end: a real router on 127.0.0.1:0 in front of small hyper backends, driven by raw
//! HTTP/1.1 over TCP so tests can send anything, including oversized heads.

use bytes::Bytes;
use dyno_router::{Backend, RouteTable, RouterConfig};
use dyno_shared::{LogLine, LogSource};
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(5);

// ---- backends ----

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
}

/// A web dyno stand-in. `/slow` answers once released, `/hang` never answers, `/echo` returns
/// the request body, `/stream` sends one chunk and the next once released, `/trickle` sends six
/// chunks 150 ms apart, anything else returns the backend's name.
struct TestBackend {
    name: String,
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    release: Arc<Semaphore>,
    _task: JoinHandle<()>,
}

impl TestBackend {
    async fn start(name: &str) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(Semaphore::new(0));
        let (name_c, seen_c, release_c) = (name.to_string(), seen.clone(), release.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (name, seen, release) = (name_c.clone(), seen_c.clone(), release_c.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (name, seen, release) = (name.clone(), seen.clone(), release.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            seen.lock().unwrap().push(Seen {
                                path: path.clone(),
                                headers: req.headers().clone(),
                            });
                            if path == "/stream" {
                                let (mut tx, body) = Channel::<Bytes>::new(1);
                                tokio::spawn(async move {
                                    let _ = tx.send_data(Bytes::from("first-chunk")).await;
                                    release.acquire().await.unwrap().forget();
                                    let _ = tx.send_data(Bytes::from("second-chunk")).await;
                                });
                                return Ok(Response::new(Either::Right(body)));
                            }
                            if path == "/trickle" {
                                let (mut tx, body) = Channel::<Bytes>::new(1);
                                tokio::spawn(async move {
                                    for i in 0..6 {
                                        let chunk = Bytes::from(format!("chunk-{i};"));
                                        let _ = tx.send_data(chunk).await;
                                        tokio::time::sleep(Duration::from_millis(150)).await;
                                    }
                                });
                                return Ok(Response::new(Either::Right(body)));
                            }
                            let body = match path.as_str() {
                                "/slow" => {
                                    release.acquire().await.unwrap().forget();
                                    Bytes::from(name)
                                }
                                "/hang" => std::future::pending().await,
                                "/echo" => req.into_body().collect().await.unwrap().to_bytes(),
                                _ => Bytes::from(name),
                            };
                            Ok::<_, Infallible>(Response::new(Either::Left(Full::new(body))))
                        }
                    });
                    // HEROKU.md's 1000 headers reach dynos, with the router's own added.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .max_headers(1100)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestBackend {
            name: name.to_string(),
            addr,
            seen,
            release,
            _task: task,
        }
    }

    fn backend(&self, dyno: &str) -> Backend {
        Backend {
            dyno: dyno.to_string(),
            addr: self.addr,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn seen_path(&self, path: &str) -> bool {
        self.seen().iter().any(|s| s.path == path)
    }
}

/// An address nothing listens on: connects are refused.
async fn refusing_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

// ---- the router ----

struct TestRouter {
    addr: SocketAddr,
    table: RouteTable,
    logs: mpsc::Receiver<Vec<LogLine>>,
    /// Lines of the last batch not looked at yet.
    pending: std::collections::VecDeque<LogLine>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestRouter {
    async fn start(config: RouterConfig) -> TestRouter {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let table = RouteTable::new();
        let (log_tx, logs) = mpsc::channel(1000);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(dyno_router::run(
            listener,
            table.clone(),
            config,
            Some(log_tx),
            async move {
                let _ = stopped.await;
            },
        ));
        TestRouter {
            addr,
            table,
            logs,
            pending: Default::default(),
            stop: Some(stop),
            task,
        }
    }

    async fn quick() -> TestRouter {
        TestRouter::start(RouterConfig {
            request_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_millis(500),
            ..RouterConfig::default()
        })
        .await
    }

    async fn get(&self, host: &str, path: &str) -> Reply {
        self.send(&request("GET", host, path, &[], "")).await
    }

    async fn send(&self, raw: &str) -> Reply {
        send_raw(self.addr, raw.as_bytes().to_vec()).await
    }

    /// The next router log line whose message contains `needle`.
    async fn log_containing(&mut self, needle: &str) -> LogLine {
        tokio::time::timeout(WAIT, async {
            loop {
                let Some(line) = self.pending.pop_front() else {
                    let batch = self.logs.recv().await.expect("log channel open");
                    self.pending.extend(batch);
                    continue;
                };
                if line.message.contains(needle) {
                    return line;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no router log line containing {needle:?}"))
    }
}

fn request(method: &str, host: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    raw
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn send_raw(addr: SocketAddr, raw: Vec<u8>) -> Reply {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&raw).await.unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        out
    };
    let out = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("router answered in time");
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a complete response head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    assert!(
        !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding")),
        "tests expect length-delimited bodies"
    );
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// What `stream` sent up to and including `needle`; `Err` if that took longer than `WAIT`.
async fn read_until(
    stream: &mut TcpStream,
    needle: &str,
) -> Result<Vec<u8>, tokio::time::error::Elapsed> {
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&received).contains(needle) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before {needle:?}");
            received.extend_from_slice(&buf[..n]);
        }
    })
    .await?;
    Ok(received)
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---- tests ----

#[tokio::test]
async fn routes_by_host_and_answers_404_for_unknown_apps() {
    let router = TestRouter::quick().await;
    let shop = TestBackend::start("shop-web").await;
    let blog = TestBackend::start("blog-web").await;
    router
        .table
        .set_backends("shop", vec![shop.backend("web.1")]);
    router
        .table
        .set_backends("blog", vec![blog.backend("web.1")]);

    let reply = router.get("shop.localhost", "/").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "shop-web"));
    let reply = router.get("BLOG.LocalHost:8080", "/").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "blog-web"));

    let reply = router.get("nope.localhost", "/").await;
    assert_eq!(reply.status, 404);
    assert!(reply.body.contains("nope.localhost"), "{}", reply.body);
    assert_eq!(router.get("shop.example.com", "/").await.status, 404);
    assert_eq!(router.get("a.shop.localhost", "/").await.status, 404);

    router.table.remove_app("blog");
    assert_eq!(router.get("blog.localhost", "/").await.status, 404);
}

#[tokio::test]
async fn app_without_backends_answers_h14() {
    let mut router = TestRouter::quick().await;
    router.table.set_backends("shop", vec![]);
    let reply = router.get("shop.localhost", "/").await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("H14"), "{}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let line = router.log_containing("code=H14").await;
    assert!(
        line.message
            .starts_with("at=error code=H14 desc=\"No web dynos running\"")
    );
    assert!(line.message.contains("status=503"));
}

#[tokio::test]
async fn least_in_flight_sends_requests_to_the_idle_backend() {
    let router = TestRouter::quick().await;
    let one = TestBackend::start("one").await;
    let two = TestBackend::start("two").await;
    router
        .table
        .set_backends("shop", vec![one.backend("web.1"), two.backend("web.2")]);

    // Two idle dynos share the load.
    let mut names = Vec::new();
    for _ in 0..4 {
        names.push(router.get("shop.localhost", "/").await.body);
    }
    assert!(
        names.iter().any(|n| n == "one") && names.iter().any(|n| n == "two"),
        "{names:?}"
    );

    let addr = router.addr;
    let slow = tokio::spawn(async move {
        send_raw(
            addr,
            request("GET", "shop.localhost", "/slow", &[], "").into_bytes(),
        )
        .await
    });
    wait_until("the slow request reaches a backend", || {
        one.seen_path("/slow") || two.seen_path("/slow")
    })
    .await;
    let (busy, idle) = if one.seen_path("/slow") {
        (&one, &two)
    } else {
        (&two, &one)
    };

    for _ in 0..5 {
        assert_eq!(router.get("shop.localhost", "/").await.body, idle.name);
    }
    busy.release.add_permits(1);
    assert_eq!(slow.await.unwrap().body, busy.name);
}

#[tokio::test]
async fn refused_backend_is_skipped_and_all_refused_answers_h21() {
    let mut router = TestRouter::quick().await;
    let live = TestBackend::start("live").await;
    let dead = refusing_addr().await;
    router.table.set_backends(
        "shop",
        vec![
            Backend {
                dyno: "web.1".into(),
                addr: dead,
            },
            live.backend("web.2"),
        ],
    );
    for _ in 0..4 {
        let reply = router.get("shop.localhost", "/").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "live"));
    }
    // A body survives the move to another backend, since the refused connect never read it.
    router.table.set_backends(
        "shop",
        vec![
            Backend {
                dyno: "web.3".into(),
                addr: refusing_addr().await,
            },
            live.backend("web.2"),
        ],
    );
    for _ in 0..2 {
        let reply = router
            .send(&request(
                "POST",
                "shop.localhost",
                "/echo",
                &[],
                "hello body",
            ))
            .await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "hello body"));
    }

    router.table.set_backends(
        "dead",
        vec![Backend {
            dyno: "web.1".into(),
            addr: dead,
        }],
    );
    let reply = router.get("dead.localhost", "/").await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("H21"), "{}", reply.body);
    let line = router.log_containing("code=H21").await;
    assert_eq!(line.app, "dead");
    assert!(line.message.contains("desc=\"Backend connection refused\""));
    assert!(line.message.contains("dyno=web.1"));
}

#[tokio::test]
async fn request_timeout_answers_h12_and_the_backend_lives_on() {
    let mut router = TestRouter::start(RouterConfig {
        request_timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_millis(200),
        ..RouterConfig::default()
    })
    .await;
    let backend = TestBackend::start("sleepy").await;
    router
        .table
        .set_backends("shop", vec![backend.backend("web.1")]);

    let started = std::time::Instant::now();
    let reply = router.get("shop.localhost", "/hang").await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("H12"), "{}", reply.body);
    assert!(started.elapsed() < Duration::from_secs(2));
    let line = router.log_containing("code=H12").await;
    assert!(line.message.contains("desc=\"Request timeout\""));
    assert!(line.message.contains("dyno=web.1"));

    let reply = router.get("shop.localhost", "/").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "sleepy"));
    assert_eq!(router.table.in_flight("shop", "web.1"), Some(0));
}

#[tokio::test]
async fn forwarding_headers_reach_the_backend() {
    let router = TestRouter::quick().await;
    let backend = TestBackend::start("web").await;
    router
        .table
        .set_backends("shop", vec![backend.backend("web.1")]);
    let client_id = "client-request-id-0123456789";
    let before_ms = dyno_shared::time::now_micros() / 1000;

    let reply = router
        .send(&request(
            "GET",
            "shop.localhost",
            "/first",
            &[
                ("X-Forwarded-For", "10.0.0.1"),
                ("X-Request-Id", client_id),
                ("Connection", "close, x-hop"),
                ("X-Hop", "secret"),
                ("Keep-Alive", "timeout=5"),
            ],
            "",
        ))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("via"), Some("1.1 dyno-router"));
    router
        .send(&request(
            "GET",
            "shop.localhost",
            "/second",
            &[("X-Request-Id", "not valid")],
            "",
        ))
        .await;

    let seen = backend.seen();
    let first = &seen.iter().find(|s| s.path == "/first").unwrap().headers;
    let get = |h: &HeaderMap, name: &str| h.get(name).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        get(first, "x-forwarded-for").as_deref(),
        Some("10.0.0.1, 127.0.0.1")
    );
    assert_eq!(get(first, "x-forwarded-proto").as_deref(), Some("http"));
    let port = router.addr.port().to_string();
    assert_eq!(get(first, "x-forwarded-port"), Some(port));
    let start: i64 = get(first, "x-request-start").unwrap().parse().unwrap();
    assert!((before_ms..before_ms + 5000).contains(&start), "{start}");
    assert_eq!(get(first, "x-request-id").as_deref(), Some(client_id));
    assert_eq!(get(first, "via").as_deref(), Some("1.1 dyno-router"));
    assert_eq!(get(first, "host").as_deref(), Some("shop.localhost"));
    assert!(first.get("x-hop").is_none() && first.get("keep-alive").is_none());

    let second = &seen.iter().find(|s| s.path == "/second").unwrap().headers;
    let replaced = get(second, "x-request-id").unwrap();
    assert_ne!(replaced, "not valid");
    assert!(replaced.len() >= 20, "{replaced}");
    assert_eq!(get(second, "x-forwarded-for").as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn maintenance_mode_answers_h80() {
    let mut router = TestRouter::quick().await;
    let backend = TestBackend::start("web").await;
    router
        .table
        .set_backends("shop", vec![backend.backend("web.1")]);
    router.table.set_maintenance("shop", true);
    let reply = router.get("shop.localhost", "/").await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("H80"), "{}", reply.body);
    router
        .log_containing("code=H80 desc=\"Maintenance mode\"")
        .await;
    assert!(backend.seen().is_empty(), "maintenance never reaches dynos");

    router.table.set_maintenance("shop", false);
    assert_eq!(router.get("shop.localhost", "/").await.status, 200);
}

#[tokio::test]
async fn oversized_heads_answer_400() {
    let router = TestRouter::quick().await;
    let backend = TestBackend::start("web").await;
    router
        .table
        .set_backends("shop", vec![backend.backend("web.1")]);

    let long_value = "x".repeat(9000);
    let reply = router
        .send(&request(
            "GET",
            "shop.localhost",
            "/",
            &[("X-Big", &long_value)],
            "",
        ))
        .await;
    assert_eq!(reply.status, 400);

    let long_path = format!("/{}", "p".repeat(9000));
    assert_eq!(router.get("shop.localhost", &long_path).await.status, 400);

    // More than 1000 headers: hyper's parser refuses the head itself.
    let names: Vec<String> = (0..1001).map(|i| format!("X-H{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let reply = router
        .send(&request("GET", "shop.localhost", "/", &many, ""))
        .await;
    assert_eq!(reply.status, 431);

    // Right at the limit still passes.
    let fits = "y".repeat(8192 - "X-Fit: ".len());
    let reply = router
        .send(&request(
            "GET",
            "shop.localhost",
            "/",
            &[("X-Fit", &fits)],
            "",
        ))
        .await;
    assert_eq!(reply.status, 200);
    assert!(
        backend.seen().len() == 1,
        "only the request within limits was proxied"
    );

    // Up to 1000 headers pass (HEROKU.md), on the router's own path and on hyper's (a body).
    // With Host and Connection, 1000.
    let thousand = &many[..998];
    let reply = router
        .send(&request("GET", "shop.localhost", "/", thousand, ""))
        .await;
    assert_eq!(reply.status, 200);
    let reply = router
        .send(&request(
            "POST",
            "shop.localhost",
            "/echo",
            &many[..150],
            "body",
        ))
        .await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "body"));
    let seen = backend.seen();
    assert_eq!(seen.len(), 3);
    assert!(
        seen[1].headers.contains_key("x-h997"),
        "all 1000 reached the dyno"
    );
    assert!(seen[2].headers.contains_key("x-h149"));
}

#[tokio::test]
async fn every_proxied_request_gets_a_log_line() {
    let mut router = TestRouter::quick().await;
    let backend = TestBackend::start("hello, world!").await;
    router
        .table
        .set_backends("shop", vec![backend.backend("web.1")]);

    let reply = router.get("shop.localhost", "/hello?x=1").await;
    assert_eq!(reply.status, 200);
    let line = router.log_containing("path=/hello?x=1").await;
    assert_eq!(line.source, LogSource::Router);
    assert_eq!(line.process, "router");
    assert_eq!(line.app, "shop");
    let m = &line.message;
    assert!(
        m.starts_with("at=info method=GET path=/hello?x=1 host=shop.localhost request_id="),
        "{m}"
    );
    for part in [
        "fwd=\"127.0.0.1\"",
        "dyno=web.1",
        "status=200",
        "bytes=13",
        "protocol=http",
    ] {
        assert!(m.contains(part), "{part} missing from {m}");
    }
    assert!(m.contains(" connect=") && m.contains("ms service="), "{m}");
}

#[tokio::test]
async fn set_backends_keeps_in_flight_counters_of_staying_backends() {
    let router = TestRouter::quick().await;
    let one = TestBackend::start("one").await;
    let two = TestBackend::start("two").await;
    router
        .table
        .set_backends("shop", vec![one.backend("web.1")]);

    let addr = router.addr;
    let slow = tokio::spawn(async move {
        send_raw(
            addr,
            request("GET", "shop.localhost", "/slow", &[], "").into_bytes(),
        )
        .await
    });
    wait_until("the slow request reaches web.1", || one.seen_path("/slow")).await;
    assert_eq!(router.table.in_flight("shop", "web.1"), Some(1));

    router
        .table
        .set_backends("shop", vec![one.backend("web.1"), two.backend("web.2")]);
    assert_eq!(router.table.in_flight("shop", "web.1"), Some(1));
    assert_eq!(router.table.backends("shop").len(), 2);
    for _ in 0..3 {
        assert_eq!(router.get("shop.localhost", "/").await.body, "two");
    }

    one.release.add_permits(1);
    assert_eq!(slow.await.unwrap().status, 200);
    let table = router.table.clone();
    wait_until("web.1 drains", || {
        table.in_flight("shop", "web.1") == Some(0)
    })
    .await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_then_returns() {
    let mut router = TestRouter::quick().await;
    let backend = TestBackend::start("web").await;
    router
        .table
        .set_backends("shop", vec![backend.backend("web.1")]);

    let addr = router.addr;
    let slow = tokio::spawn(async move {
        send_raw(
            addr,
            request("GET", "shop.localhost", "/slow", &[], "").into_bytes(),
        )
        .await
    });
    wait_until("the slow request arrives", || backend.seen_path("/slow")).await;
    router.stop.take().unwrap().send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "a stopped router accepts nothing"
    );

    backend.release.add_permits(1);
    assert_eq!(slow.await.unwrap().status, 200);
    tokio::time::timeout(WAIT, &mut router.task)
        .await
        .expect("run returns after shutdown")
        .unwrap()
        .unwrap();
}

/// A listener whose accept queue is full: the kernel drops further SYNs, so connects hang.
async fn blackhole_addr() -> (SocketAddr, Vec<TcpStream>, tokio::net::TcpListener) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
    }
    (addr, fillers, listener)
}

#[tokio::test]
async fn connect_timeout_answers_h19() {
    let mut router = TestRouter::start(RouterConfig {
        request_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_millis(200),
        ..RouterConfig::default()
    })
    .await;
    let (addr, _fillers, _listener) = blackhole_addr().await;
    router.table.set_backends(
        "shop",
        vec![Backend {
            dyno: "web.1".into(),
            addr,
        }],
    );
    let reply = router.get("shop.localhost", "/").await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("H19"), "{}", reply.body);
    let line = router.log_containing("code=H19").await;
    assert!(line.message.contains("desc=\"Backend connection timeout\""));
}

#[tokio::test]
async fn bodies_stream_through_and_head_keeps_its_length() {
    let router = TestRouter::quick().await;
    let backend = TestBackend::start("web").await;
    router
        .table
        .set_backends("shop", vec![backend.backend("web.1")]);

    let mut stream = TcpStream::connect(router.addr).await.unwrap();
    let raw = request("GET", "shop.localhost", "/stream", &[], "");
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut received = read_until(&mut stream, "first-chunk")
        .await
        .expect("the first chunk arrives while the dyno still holds the rest");
    backend.release.add_permits(1);
    stream.read_to_end(&mut received).await.unwrap();
    let text = String::from_utf8_lossy(&received).to_ascii_lowercase();
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert!(text.contains("second-chunk"), "{text}");

    let reply = router
        .send(&request("HEAD", "shop.localhost", "/", &[], ""))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-length"), Some("3"));
    assert_eq!(reply.body, "");
}

#[tokio::test]
async fn backend_closing_without_response_answers_h13() {
    let mut router = TestRouter::quick().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
        }
    });
    router.table.set_backends(
        "shop",
        vec![Backend {
            dyno: "web.1".into(),
            addr,
        }],
    );
    let reply = router.get("shop.localhost", "/").await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("H13"), "{}", reply.body);
    let line = router.log_containing("code=H13").await;
    assert!(
        line.message
            .contains("desc=\"Connection closed without response\"")
    );
    assert_eq!(router.table.in_flight("shop", "web.1"), Some(0));
}

// ---- the routing mesh: queueing, protocols, errors, metrics ----

fn config_with(change: impl FnOnce(&mut RouterConfig)) -> RouterConfig {
    let mut config = RouterConfig {
        request_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_millis(500),
        ..RouterConfig::default()
    };
    change(&mut config);
    config
}

fn spawn_get(router: &TestRouter, path: &str) -> JoinHandle<Reply> {
    let (addr, raw) = (router.addr, request("GET", "shop.localhost", path, &[], ""));
    tokio::spawn(async move { send_raw(addr, raw.into_bytes()).await })
}

#[tokio::test]
async fn a_dyno_at_its_limit_makes_requests_wait_at_the_router_in_order() {
    let mut router = TestRouter::start(config_with(|c| c.max_queue = 2)).await;
    let backend = TestBackend::start("web").await;
    router
        .table
        .set_backends("shop", vec![backend.backend("web.1")]);
    router.table.set_concurrency("shop", Some(1));

    let slow = spawn_get(&router, "/slow");
    wait_until("the slow request reaches the dyno", || {
        backend.seen_path("/slow")
    })
    .await;
    let table = router.table.clone();
    let first = spawn_get(&router, "/first");
    wait_until("one request queued", || table.queued("shop") == 1).await;
    let second = spawn_get(&router, "/second");
    wait_until("two requests queued", || table.queued("shop") == 2).await;

    // The queue is full: the next request is turned away at once.
    let reply = router.get("shop.localhost", "/third").await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("H11"), "{}", reply.body);
    router
        .log_containing("code=H11 desc=\"Backlog too deep\"")
        .await;
    // Waiting requests wait at the router, not inside the busy dyno.
    let paths: Vec<String> = backend.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/slow"]);
    assert_eq!(table.in_flight("shop", "web.1"), Some(1));

    backend.release.add_permits(1);
    assert_eq!(slow.await.unwrap().status, 200);
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(second.await.unwrap().status, 200);
    let paths: Vec<String> = backend.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/slow", "/first", "/second"]);

    // Without a limit nothing waits.
    router.table.set_concurrency("shop", None);
    let slow = spawn_get(&router, "/slow");
    wait_until("the slow request is in flight", || {
        table.in_flight("shop", "web.1") == Some(1)
    })
    .await;
    assert_eq!(router.get("shop.localhost", "/quick").await.status, 200);
    backend.release.add_permits(1);
    assert_eq!(slow.await.unwrap().status, 200);
}

#[tokio::test]
async fn a_request_that_waits_too_long_in_the_queue_answers_h12() {
    let mut router = TestRouter::start(config_with(|c| {
        c.request_timeout = Duration::from_millis(300);
    }))
    .await;
    let backend = TestBackend::start("web").await;
    router
        .table
        .set_backends("shop", vec![backend.backend("web.1")]);
    router.table.set_concurrency("shop", Some(1));
    // Each hanging request holds the dyno until its own timeout; the second one takes over
    // when the first times out, while the third is still waiting.
    let _first = spawn_get(&router, "/hang");
    wait_until("the hanging request is in flight", || {
        backend.seen_path("/hang")
    })
    .await;
    let table = router.table.clone();
    let _second = spawn_get(&router, "/hang");
    wait_until("one request queued", || table.queued("shop") == 1).await;
    let reply = router.get("shop.localhost", "/queued").await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("H12"), "{}", reply.body);
    let line = router.log_containing("path=/queued").await;
    assert!(line.message.contains("code=H12"), "{}", line.message);
    assert!(!backend.seen_path("/queued"));
}

#[tokio::test]
async fn booting_apps_wait_for_a_dyno_crashed_ones_answer_h10() {
    let mut router = TestRouter::start(config_with(|c| {
        c.boot_timeout = Duration::from_millis(300);
    }))
    .await;
    let backend = TestBackend::start("web").await;
    router.table.set_backends("shop", vec![]);
    router
        .table
        .set_no_backends("shop", dyno_router::NoBackends::Booting);

    // Too slow a boot: H20.
    let reply = router.get("shop.localhost", "/").await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("H20"), "{}", reply.body);
    router
        .log_containing("code=H20 desc=\"App boot timeout\"")
        .await;

    // A dyno that comes up in time gets the waiting request.
    let waiting = spawn_get(&router, "/early");
    let table = router.table.clone();
    wait_until("the request waits", || table.queued("shop") == 1).await;
    router
        .table
        .set_backends("shop", vec![backend.backend("web.1")]);
    let reply = waiting.await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "web"));

    router.table.set_backends("shop", vec![]);
    router
        .table
        .set_no_backends("shop", dyno_router::NoBackends::Crashed);
    let reply = router.get("shop.localhost", "/").await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("H10"), "{}", reply.body);
    router.log_containing("code=H10 desc=\"App crashed\"").await;
}

#[tokio::test]
async fn custom_domains_route_to_their_app() {
    let router = TestRouter::quick().await;
    let shop = TestBackend::start("shop-web").await;
    router
        .table
        .set_backends("shop", vec![shop.backend("web.1")]);
    router.table.set_domains(
        "shop",
        vec!["www.shop.example".into(), "*.shop.test".into()],
    );
    for host in ["www.shop.example", "WWW.shop.example:443", "eu.shop.test"] {
        let reply = router.get(host, "/").await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "shop-web"),
            "{host}"
        );
    }
    assert_eq!(router.get("shop.example", "/").await.status, 404);
    assert_eq!(router.table.domains("shop").len(), 2);
    router.table.set_domains("shop", vec![]);
    assert_eq!(router.get("www.shop.example", "/").await.status, 404);
}

/// A websocket dyno: echoes every text message with a prefix.
async fn websocket_backend() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if let tokio_tungstenite::tungstenite::Message::Text(text) = msg
                        && ws.send(format!("echo: {text}").into()).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn websocket_upgrades_pass_through() {
    use futures_util::{SinkExt, StreamExt};
    let mut router = TestRouter::quick().await;
    let addr = websocket_backend().await;
    router.table.set_backends(
        "chat",
        vec![Backend {
            dyno: "web.1".into(),
            addr,
        }],
    );
    let stream = TcpStream::connect(router.addr).await.unwrap();
    let url = format!("ws://chat.localhost:{}/socket", router.addr.port());
    let (mut ws, response) =
        tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["via"], "1.1 dyno-router");
    for i in 0..3 {
        ws.send(format!("hello {i}").into()).await.unwrap();
        let reply = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            reply.into_text().unwrap().as_str(),
            format!("echo: hello {i}")
        );
    }
    let line = router.log_containing("path=/socket").await;
    assert!(line.message.contains("status=101"), "{}", line.message);
    // An open websocket does not count as a request in flight.
    assert_eq!(router.table.in_flight("chat", "web.1"), Some(0));
    ws.close(None).await.unwrap();
}

/// An HTTP/2 connection without TLS (prior knowledge).
async fn h2_client(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test]
async fn http2_clients_get_many_requests_over_one_connection() {
    let router = TestRouter::quick().await;
    let one = TestBackend::start("one").await;
    let two = TestBackend::start("two").await;
    router
        .table
        .set_backends("shop", vec![one.backend("web.1"), two.backend("web.2")]);
    let mut sender = h2_client(router.addr).await;
    sender.ready().await.unwrap();
    let mut pending = Vec::new();
    for i in 0..6 {
        let req = Request::builder()
            .uri(format!("http://shop.localhost/h2/{i}"))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        pending.push(sender.send_request(req));
    }
    let mut names = Vec::new();
    for response in futures_util::future::join_all(pending).await {
        let response = response.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        assert_eq!(response.headers()["via"], "1.1 dyno-router");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        names.push(String::from_utf8(body.to_vec()).unwrap());
    }
    assert!(names.iter().all(|n| n == "one" || n == "two"), "{names:?}");
    let seen: Vec<Seen> = one.seen().into_iter().chain(two.seen()).collect();
    assert_eq!(seen.len(), 6);
    for s in &seen {
        assert_eq!(s.headers["host"], "shop.localhost");
        assert_eq!(s.headers["x-forwarded-proto"], "http");
    }
}

struct Certificate {
    _dir: tempfile::TempDir,
    tls: dyno_router::TlsConfig,
    der: Vec<u8>,
}

fn self_signed(names: &[&str]) -> Certificate {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let key = rcgen::generate_simple_self_signed(names).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, key.cert.pem()).unwrap();
    std::fs::write(&key_path, key.signing_key.serialize_pem()).unwrap();
    Certificate {
        tls: dyno_router::TlsConfig {
            cert_path,
            key_path,
        },
        der: key.cert.der().to_vec(),
        _dir: dir,
    }
}

async fn tls_connect(
    addr: SocketAddr,
    cert: &Certificate,
    server_name: &str,
    alpn: &[&str],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(cert.der.clone()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    connector.connect(name, stream).await.unwrap()
}

#[tokio::test]
async fn tls_is_terminated_and_plain_http_still_works_on_the_same_port() {
    let cert = self_signed(&["shop.localhost"]);
    let mut router = TestRouter::start(config_with(|c| c.tls = Some(cert.tls.clone()))).await;
    let backend = TestBackend::start("web").await;
    router
        .table
        .set_backends("shop", vec![backend.backend("web.1")]);

    // HTTP/1.1 over TLS.
    let mut tls = tls_connect(router.addr, &cert, "shop.localhost", &["http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    tls.write_all(request("GET", "shop.localhost", "/secure", &[], "").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut out))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("web"), "{text}");
    let line = router.log_containing("path=/secure").await;
    assert!(line.message.ends_with("protocol=https"), "{}", line.message);

    // HTTP/2 over TLS, chosen by ALPN.
    let tls = tls_connect(router.addr, &cert, "shop.localhost", &["h2", "http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("https://shop.localhost/secure-h2")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), hyper::Version::HTTP_2);

    // Plain HTTP on the same port.
    assert_eq!(router.get("shop.localhost", "/plain").await.status, 200);

    let seen = backend.seen();
    let proto = |path: &str| {
        seen.iter().find(|s| s.path == path).unwrap().headers["x-forwarded-proto"]
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(proto("/secure"), "https");
    assert_eq!(proto("/secure-h2"), "https");
    assert_eq!(proto("/plain"), "http");
}

#[tokio::test]
async fn a_router_with_unreadable_certificate_files_does_not_start() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = config_with(|c| {
        c.tls = Some(dyno_router::TlsConfig {
            cert_path: "/nonexistent/cert.pem".into(),
            key_path: "/nonexistent/key.pem".into(),
        })
    });
    let result = dyno_router::run(listener, RouteTable::new(), config, None, async {}).await;
    let err = result.unwrap_err();
    assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
}

#[tokio::test]
async fn a_client_that_hangs_up_is_logged_h27_and_frees_the_dyno() {
    let mut router = TestRouter::quick().await;
    let backend = TestBackend::start("web").await;
    router
        .table
        .set_backends("shop", vec![backend.backend("web.1")]);
    let mut stream = TcpStream::connect(router.addr).await.unwrap();
    stream
        .write_all(request("GET", "shop.localhost", "/hang", &[], "").as_bytes())
        .await
        .unwrap();
    wait_until("the request reaches the dyno", || {
        backend.seen_path("/hang")
    })
    .await;
    drop(stream);
    let line = router.log_containing("code=H27").await;
    assert!(
        line.message.contains("desc=\"Client Request Interrupted\""),
        "{}",
        line.message
    );
    assert!(line.message.contains("status=499"), "{}", line.message);
    let table = router.table.clone();
    wait_until("the dyno is free again", || {
        table.in_flight("shop", "web.1") == Some(0)
    })
    .await;
}

/// A dyno that sends part of a response, then closes the connection.
async fn breaking_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
                .await;
            let _ = stream.shutdown().await;
        }
    });
    addr
}

#[tokio::test]
async fn a_dyno_breaking_off_mid_response_is_logged_h18() {
    let mut router = TestRouter::quick().await;
    let addr = breaking_backend().await;
    router.table.set_backends(
        "shop",
        vec![Backend {
            dyno: "web.1".into(),
            addr,
        }],
    );
    let mut stream = TcpStream::connect(router.addr).await.unwrap();
    stream
        .write_all(request("GET", "shop.localhost", "/", &[], "").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let line = router.log_containing("code=H18").await;
    assert!(
        line.message.contains("desc=\"Server Request Interrupted\""),
        "{}",
        line.message
    );
    assert!(line.message.contains("dyno=web.1"), "{}", line.message);
}

#[tokio::test]
async fn a_silent_dyno_mid_response_is_cut_off_after_the_idle_timeout() {
    let mut router = TestRouter::start(config_with(|c| {
        c.idle_timeout = Duration::from_millis(300);
    }))
    .await;
    let backend = TestBackend::start("web").await;
    router
        .table
        .set_backends("shop", vec![backend.backend("web.1")]);
    let started = std::time::Instant::now();
    let mut stream = TcpStream::connect(router.addr).await.unwrap();
    stream
        .write_all(request("GET", "shop.localhost", "/stream", &[], "").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out).contains("first-chunk"));
    assert!(started.elapsed() < Duration::from_secs(2));
    let line = router.log_containing("code=H15").await;
    assert!(
        line.message.contains("desc=\"Idle connection\""),
        "{}",
        line.message
    );
}

#[tokio::test]
async fn a_dyno_that_keeps_sending_within_the_idle_timeout_is_not_cut_off() {
    // Chunks 150 ms apart for 750 ms, against an idle timeout of 400 ms: the timer must start
    // over with each chunk.
    let mut router = TestRouter::start(config_with(|c| {
        c.idle_timeout = Duration::from_millis(400);
    }))
    .await;
    let backend = TestBackend::start("web").await;
    router
        .table
        .set_backends("shop", vec![backend.backend("web.1")]);
    let stream = TcpStream::connect(router.addr).await.unwrap();
    let mut conn = tokio::io::BufReader::new(stream);
    conn.get_mut()
        .write_all(b"GET /trickle HTTP/1.1\r\nHost: shop.localhost\r\n\r\n")
        .await
        .unwrap();
    let reply = read_reply(&mut conn, false).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        "chunk-0;chunk-1;chunk-2;chunk-3;chunk-4;chunk-5;"
    );
    let line = router.log_containing("path=/trickle").await;
    assert!(line.message.starts_with("at=info"), "{}", line.message);
}

/// A dyno that writes each response's head and body in two writes with Nagle on, as many app
/// servers do: the body waits until the head is acknowledged.
async fn two_write_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut pending = Vec::new();
                loop {
                    let end = loop {
                        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    };
                    pending.drain(..end);
                    let head = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
                    if stream.write_all(head.as_bytes()).await.is_err()
                        || stream.write_all(b"two writes").await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_dyno_writing_head_and_body_apart_is_not_held_up_by_delayed_acks() {
    let router = TestRouter::quick().await;
    let addr = two_write_backend().await;
    router.table.set_backends(
        "shop",
        vec![Backend {
            dyno: "web.1".into(),
            addr,
        }],
    );
    let stream = TcpStream::connect(router.addr).await.unwrap();
    let mut conn = tokio::io::BufReader::new(stream);
    let started = std::time::Instant::now();
    for _ in 0..20 {
        conn.get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: shop.localhost\r\n\r\n")
            .await
            .unwrap();
        let reply = read_reply(&mut conn, false).await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "two writes"));
    }
    // Without the router's quick ACK, all but the connection's first few responses wait out
    // its delayed-ACK timer (40 ms or more): 20 take over half a second. With it, a few ms.
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(400),
        "20 requests took {took:?}"
    );
}

#[tokio::test]
async fn metrics_count_requests_statuses_and_times_per_app_and_dyno() {
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let router = TestRouter::start(config_with(|c| c.metrics_listen = Some(metrics_addr))).await;
    let backend = TestBackend::start("web").await;
    router
        .table
        .set_backends("shop", vec![backend.backend("web.1")]);
    router.table.set_backends("empty", vec![]);
    for _ in 0..3 {
        assert_eq!(router.get("shop.localhost", "/").await.status, 200);
    }
    assert_eq!(router.get("empty.localhost", "/").await.status, 503);

    let table = router.table.clone();
    wait_until("the last response is counted", || {
        table.prometheus().contains("status=\"200\"} 3")
    })
    .await;
    let reply = send_raw(
        metrics_addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = reply.body;
    for expected in [
        "dyno_router_requests_total{app=\"shop\",dyno=\"web.1\",status=\"200\"} 3",
        "dyno_router_requests_total{app=\"empty\",dyno=\"\",status=\"503\"} 1",
        "dyno_router_errors_total{app=\"empty\",code=\"H14\"} 1",
        "dyno_router_queue_seconds_count{app=\"shop\"} 3",
        "dyno_router_service_seconds_count{app=\"shop\",dyno=\"web.1\"} 3",
        "dyno_router_in_flight{app=\"shop\",dyno=\"web.1\"} 0",
        "dyno_router_queue_depth{app=\"shop\"} 0",
        "# TYPE dyno_router_service_seconds histogram",
    ] {
        assert!(text.contains(expected), "{expected} missing from\n{text}");
    }
    let reply = send_raw(
        metrics_addr,
        b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
    )
    .await;
    assert_eq!(reply.status, 404);
}

// ---- the router's own HTTP/1.1 server (plain requests) and its hand-over to hyper ----

/// Reads one response off a keep-alive connection: the head, then a body framed by
/// Content-Length or chunked (decoded), or none for HEAD.
async fn read_reply(conn: &mut tokio::io::BufReader<TcpStream>, head_request: bool) -> Reply {
    use tokio::io::AsyncBufReadExt;
    let read = async {
        let mut status_line = String::new();
        conn.read_line(&mut status_line).await.unwrap();
        let status = status_line
            .split(' ')
            .nth(1)
            .unwrap_or_else(|| panic!("no status in {status_line:?}"))
            .parse()
            .unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            conn.read_line(&mut line).await.unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let mut reply = Reply {
            status,
            headers,
            body: String::new(),
        };
        reply
            .headers
            .insert(0, ("status-line".into(), status_line.trim_end().into()));
        if head_request {
            return reply;
        }
        let mut body = Vec::new();
        if let Some(len) = reply.header("content-length") {
            body.resize(len.parse().unwrap(), 0);
            conn.read_exact(&mut body).await.unwrap();
        } else {
            assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
            loop {
                let mut size = String::new();
                conn.read_line(&mut size).await.unwrap();
                let size = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                conn.read_exact(&mut chunk).await.unwrap();
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        }
        reply.body = String::from_utf8(body).unwrap();
        reply
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("a response in time")
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_across_the_hand_over_to_hyper() {
    let router = TestRouter::quick().await;
    let backend = TestBackend::start("web").await;
    router
        .table
        .set_backends("shop", vec![backend.backend("web.1")]);
    let stream = TcpStream::connect(router.addr).await.unwrap();
    let mut conn = tokio::io::BufReader::new(stream);
    // Plain, plain, one with a body (hyper's from here on), plain again, all in one write.
    let all = [
        "GET /a HTTP/1.1\r\nHost: shop.localhost\r\n\r\n",
        "GET /b HTTP/1.1\r\nHost: shop.localhost\r\nX-Request-Id: pipelined-request-id-2\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: shop.localhost\r\nContent-Length: 5\r\n\r\nhello",
        "GET /d HTTP/1.1\r\nHost: shop.localhost\r\nConnection: close\r\n\r\n",
    ]
    .concat();
    conn.get_mut().write_all(all.as_bytes()).await.unwrap();
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let reply = read_reply(&mut conn, false).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.header("via"), Some("1.1 dyno-router"), "{reply:?}");
        assert!(reply.header("date").is_some(), "{reply:?}");
        bodies.push(reply.body);
    }
    assert_eq!(bodies, ["web", "web", "hello", "web"]);
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "closed after Connection: close");
    let seen = backend.seen();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/a", "/b", "/echo", "/d"]);
    assert_eq!(seen[1].headers["x-request-id"], "pipelined-request-id-2");
    for s in &seen {
        assert_eq!(s.headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(s.headers["via"], "1.1 dyno-router");
    }
}

#[tokio::test]
async fn a_keep_alive_connection_carries_every_kind_of_answer() {
    let router = TestRouter::quick().await;
    let backend = TestBackend::start("web").await;
    router
        .table
        .set_backends("shop", vec![backend.backend("web.1")]);
    router.table.set_backends("empty", vec![]);
    let stream = TcpStream::connect(router.addr).await.unwrap();
    let mut conn = tokio::io::BufReader::new(stream);
    let get = |host: &str, path: &str| format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");

    // A body of known length.
    conn.get_mut()
        .write_all(get("shop.localhost", "/").as_bytes())
        .await
        .unwrap();
    let reply = read_reply(&mut conn, false).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "web"));
    assert_eq!(reply.header("status-line"), Some("HTTP/1.1 200 OK"));
    assert_eq!(reply.header("content-length"), Some("3"));

    // A streamed body of unknown length goes out chunked, and the connection lives on.
    conn.get_mut()
        .write_all(get("shop.localhost", "/stream").as_bytes())
        .await
        .unwrap();
    backend.release.add_permits(1);
    let reply = read_reply(&mut conn, false).await;
    assert_eq!(reply.body, "first-chunksecond-chunk");
    assert_eq!(reply.header("content-length"), None);

    // HEAD: the length of the body it would have had, and no body.
    let head = "HEAD / HTTP/1.1\r\nHost: shop.localhost\r\n\r\n";
    conn.get_mut().write_all(head.as_bytes()).await.unwrap();
    let reply = read_reply(&mut conn, true).await;
    assert_eq!(reply.header("content-length"), Some("3"));

    // The router's own answer (H14), with its length and a date.
    conn.get_mut()
        .write_all(get("empty.localhost", "/").as_bytes())
        .await
        .unwrap();
    let reply = read_reply(&mut conn, false).await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("H14"), "{}", reply.body);
    assert_eq!(
        reply.header("content-length"),
        Some(reply.body.len().to_string().as_str())
    );
    assert!(reply.header("date").is_some());

    // A request hyper answers (an unknown app), then one more on the same connection.
    conn.get_mut()
        .write_all(get("nope.localhost", "/").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_reply(&mut conn, false).await.status, 404);
    conn.get_mut()
        .write_all(get("shop.localhost", "/").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_reply(&mut conn, false).await.body, "web");
}

#[tokio::test]
async fn heads_in_pieces_and_http_1_0_are_served() {
    let router = TestRouter::quick().await;
    let backend = TestBackend::start("web").await;
    router
        .table
        .set_backends("shop", vec![backend.backend("web.1")]);

    // A head that arrives a few bytes at a time.
    let stream = TcpStream::connect(router.addr).await.unwrap();
    let mut conn = tokio::io::BufReader::new(stream);
    let raw = "GET /drip HTTP/1.1\r\nHost: shop.localhost\r\nAccept: */*\r\n\r\n";
    for piece in raw.as_bytes().chunks(7) {
        conn.get_mut().write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reply = read_reply(&mut conn, false).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "web"));
    assert!(backend.seen_path("/drip"));

    // HTTP/1.0 is hyper's to answer, in HTTP/1.0, closing afterwards.
    let reply = router
        .send("GET /old HTTP/1.0\r\nHost: shop.localhost\r\n\r\n")
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "web");
    assert!(backend.seen_path("/old"));
}

#[tokio::test]
async fn idle_client_connections_close_after_the_idle_limit() {
    let router = TestRouter::start(config_with(|c| {
        c.client_idle_timeout = Duration::from_millis(300);
        // Longer than any wait here: the request's timer must not hold the idle limit back.
        c.request_timeout = Duration::from_secs(60);
    }))
    .await;
    let backend = TestBackend::start("web").await;
    router
        .table
        .set_backends("shop", vec![backend.backend("web.1")]);
    let closes_by_itself = |mut conn: tokio::io::BufReader<TcpStream>| async move {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), conn.read_to_end(&mut rest))
            .await
            .expect("the router closes an idle connection")
            .unwrap();
    };

    // Plain path: after a keep-alive answer, nothing more.
    let mut conn = tokio::io::BufReader::new(TcpStream::connect(router.addr).await.unwrap());
    let get = "GET / HTTP/1.1\r\nHost: shop.localhost\r\n\r\n";
    conn.get_mut().write_all(get.as_bytes()).await.unwrap();
    assert_eq!(read_reply(&mut conn, false).await.body, "web");
    // Still served while it keeps sending within the limit.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        conn.get_mut().write_all(get.as_bytes()).await.unwrap();
        assert_eq!(read_reply(&mut conn, false).await.body, "web");
    }
    // A request that outlasts the idle limit (the connection's one timer fires during it) is
    // neither cut off nor timed out.
    let slow = "GET /slow HTTP/1.1\r\nHost: shop.localhost\r\n\r\n";
    conn.get_mut().write_all(slow.as_bytes()).await.unwrap();
    wait_until("the slow request arrives", || backend.seen_path("/slow")).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    backend.release.add_permits(1);
    let reply = read_reply(&mut conn, false).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "web"));
    closes_by_itself(conn).await;

    // Half a head, never finished.
    let mut conn = tokio::io::BufReader::new(TcpStream::connect(router.addr).await.unwrap());
    conn.get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHo")
        .await
        .unwrap();
    closes_by_itself(conn).await;

    // hyper's path (a request with a body), then nothing more.
    let mut conn = tokio::io::BufReader::new(TcpStream::connect(router.addr).await.unwrap());
    let post = "POST /echo HTTP/1.1\r\nHost: shop.localhost\r\nContent-Length: 2\r\n\r\nhi";
    conn.get_mut().write_all(post.as_bytes()).await.unwrap();
    assert_eq!(read_reply(&mut conn, false).await.body, "hi");
    closes_by_itself(conn).await;
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_body_is_logged_h27_and_frees_the_dyno() {
    let mut router = TestRouter::quick().await;
    let backend = TestBackend::start("web").await;
    router
        .table
        .set_backends("shop", vec![backend.backend("web.1")]);
    let mut stream = TcpStream::connect(router.addr).await.unwrap();
    let get = "GET /stream HTTP/1.1\r\nHost: shop.localhost\r\n\r\n";
    stream.write_all(get.as_bytes()).await.unwrap();
    read_until(&mut stream, "first-chunk")
        .await
        .expect("the first chunk arrives");
    // The dyno still holds the rest; the client leaves.
    drop(stream);
    let line = router.log_containing("code=H27").await;
    assert!(line.message.contains("status=499"), "{}", line.message);
    assert!(line.message.contains("dyno=web.1"), "{}", line.message);
    let table = router.table.clone();
    wait_until("the dyno is free again", || {
        table.in_flight("shop", "web.1") == Some(0)
    })
    .await;
}

#[tokio::test]
async fn connect_is_refused_and_a_half_close_ends_the_connection() {
    let mut router = TestRouter::quick().await;
    let backend = TestBackend::start("web").await;
    router
        .table
        .set_backends("shop", vec![backend.backend("web.1")]);
    let reply = router
        .send("CONNECT / HTTP/1.1\r\nHost: shop.localhost\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(reply.status, 405, "{reply:?}");
    assert!(!backend.seen_path("/"), "CONNECT reached the dyno");

    // Two requests, then the client shuts its sending side. The first is answered from the
    // buffer; while the second is with the dyno the end of the client's stream reads as a
    // client gone (H27), as with nginx and hyper: a half-close and a hang-up look the same.
    let stream = TcpStream::connect(router.addr).await.unwrap();
    let mut conn = tokio::io::BufReader::new(stream);
    let two = "GET /one HTTP/1.1\r\nHost: shop.localhost\r\n\r\n\
               GET /two HTTP/1.1\r\nHost: shop.localhost\r\n\r\n";
    conn.get_mut().write_all(two.as_bytes()).await.unwrap();
    conn.get_mut().shutdown().await.unwrap();
    assert_eq!(read_reply(&mut conn, false).await.body, "web");
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    let line = router.log_containing("code=H27").await;
    assert!(line.message.contains("path=/two"), "{}", line.message);
}
