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
/// the request body, `/stream` sends one chunk and the next once released, anything else
/// returns the backend's name.
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
                    let _ = hyper::server::conn::http1::Builder::new()
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
    logs: mpsc::Receiver<LogLine>,
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
                let line = self.logs.recv().await.expect("log channel open");
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

    let names: Vec<String> = (0..1001).map(|i| format!("X-H{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let reply = router
        .send(&request("GET", "shop.localhost", "/", &many, ""))
        .await;
    assert_eq!(reply.status, 400);

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
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&received).contains("first-chunk") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the first chunk");
            received.extend_from_slice(&buf[..n]);
        }
    })
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
