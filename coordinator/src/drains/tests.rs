//! Drains against real sockets on 127.0.0.1: plain TCP syslog, syslog over TLS and HTTPS, with a
//! receiver that goes away and comes back.

use super::*;
use dyno_shared::LogSource;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{RootCertStore, ServerConfig, crypto::ring};

const WAIT: Duration = Duration::from_secs(20);

fn options() -> DrainOptions {
    DrainOptions {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..DrainOptions::default()
    }
}

fn spec(url: &str) -> DrainSpec {
    DrainSpec {
        id: "drain-1".into(),
        app: "shop".into(),
        url: url.parse().unwrap(),
        token: "d.test-token".into(),
    }
}

fn line(n: usize) -> LogLine {
    LogLine {
        at: 1_795_446_826_000_000 + n as i64,
        app: "shop".into(),
        source: LogSource::App,
        process: "web.1".into(),
        message: format!("line {n}"),
    }
}

/// Reads one octet-counted frame.
async fn read_frame<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Option<String> {
    let mut len = Vec::new();
    r.read_until(b' ', &mut len).await.ok()?;
    let len: usize = std::str::from_utf8(len.strip_suffix(b" ")?)
        .ok()?
        .parse()
        .ok()?;
    let mut msg = vec![0; len];
    r.read_exact(&mut msg).await.ok()?;
    String::from_utf8(msg).ok()
}

fn split_frames(mut body: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let sp = body.iter().position(|b| *b == b' ').expect("a length");
        let len: usize = std::str::from_utf8(&body[..sp]).unwrap().parse().unwrap();
        out.push(String::from_utf8(body[sp + 1..sp + 1 + len].to_vec()).unwrap());
        body = &body[sp + 1 + len..];
    }
    out
}

fn message_of(frame: &str) -> &str {
    frame.splitn(8, ' ').nth(7).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_frames_arrive_in_order_across_a_receiver_restart() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let drains = Drains::new(options());
    drains.start(spec(&format!("syslog://{addr}")));
    for n in 1..=3 {
        drains.line(&line(n));
    }
    let (conn, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut r = BufReader::new(conn);
    let first = read_frame(&mut r).await.unwrap();
    assert_eq!(
        first,
        "<190>1 2026-11-23T15:13:46.000001+00:00 d.test-token app web.1 - - line 1"
    );
    assert_eq!(message_of(&read_frame(&mut r).await.unwrap()), "line 2");
    assert_eq!(message_of(&read_frame(&mut r).await.unwrap()), "line 3");

    // The receiver goes away; lines logged meanwhile wait in the queue.
    drop(r);
    drop(listener);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in 4..=6 {
        drains.line(&line(n));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener = TcpListener::bind(addr).await.unwrap();
    drains.line(&line(7));
    let (conn, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut r = BufReader::new(conn);
    for n in 4..=7 {
        let f = tokio::time::timeout(WAIT, read_frame(&mut r))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(message_of(&f), format!("line {n}"));
    }

    // Stopping the drain stops delivery; lines for other apps never went there.
    assert!(drains.stop("drain-1"));
    assert!(!drains.stop("drain-1"));
    assert!(drains.running("shop").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_the_oldest_and_says_so_with_l10() {
    // A port nobody listens on until the queue has overflowed.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let drains = Drains::new(DrainOptions {
        queue_bytes: 2000,
        ..options()
    });
    drains.start(spec(&format!("syslog://{addr}")));
    let total = 200;
    for n in 1..=total {
        drains.line(&line(n));
    }
    let listener = TcpListener::bind(addr).await.unwrap();
    let (conn, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut r = BufReader::new(conn);
    let mut received = Vec::new();
    let mut dropped = 0;
    loop {
        let f = tokio::time::timeout(WAIT, read_frame(&mut r))
            .await
            .unwrap()
            .unwrap();
        let msg = message_of(&f).to_string();
        if let Some(rest) = msg.strip_prefix("Error L10 (output buffer overflow): ") {
            assert!(
                f.starts_with("<172>1 ") && f.contains(" d.test-token heroku logplex - - "),
                "{f}"
            );
            dropped += rest.split(' ').next().unwrap().parse::<usize>().unwrap();
            assert!(rest.contains(" messages dropped since 2"), "{rest}");
            continue;
        }
        let n: usize = msg.strip_prefix("line ").unwrap().parse().unwrap();
        received.push(n);
        if n == total {
            break;
        }
    }
    assert!(dropped > 0, "the queue must have overflowed");
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "in order: {received:?}"
    );
    assert_eq!(
        received.len() + dropped,
        total,
        "every line is delivered or counted"
    );
}

struct Tls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

fn self_signed() -> Tls {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let server = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Tls {
        server: Arc::new(server),
        client: Arc::new(client),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_over_tls_verifies_the_receiver() {
    let tls = self_signed();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let drains = Drains::new(DrainOptions {
        tls: Some(tls.client.clone()),
        ..options()
    });
    drains.start(spec(&format!("syslog+tls://{addr}")));
    drains.line(&line(1));
    drains.line(&line(2));
    let (conn, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let conn = tokio_rustls::TlsAcceptor::from(tls.server.clone())
        .accept(conn)
        .await
        .unwrap();
    let mut r = BufReader::new(conn);
    assert_eq!(message_of(&read_frame(&mut r).await.unwrap()), "line 1");
    assert_eq!(message_of(&read_frame(&mut r).await.unwrap()), "line 2");

    // A drain that does not trust the receiver's certificate delivers nothing.
    let untrusting = Drains::new(DrainOptions {
        tls: Some(self_signed().client),
        ..options()
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    untrusting.start(spec(&format!("syslog+tls://{addr}")));
    untrusting.line(&line(1));
    let (conn, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let accepted = tokio_rustls::TlsAcceptor::from(tls.server.clone())
        .accept(conn)
        .await;
    assert!(accepted.is_err(), "the client must abort the handshake");
}

/// One HTTP request: (request line, lower-case headers, body).
async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> Option<(String, std::collections::BTreeMap<String, String>, Vec<u8>)> {
    let mut start = String::new();
    if r.read_line(&mut start).await.ok()? == 0 {
        return None;
    }
    let mut headers = std::collections::BTreeMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).await.ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    r.read_exact(&mut body).await.ok()?;
    Some((start.trim_end().to_string(), headers, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_batches_are_logplex_posts_and_a_failed_one_is_sent_again() {
    let tls = self_signed();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let drains = Drains::new(DrainOptions {
        tls: Some(tls.client.clone()),
        ..options()
    });
    drains.start(spec(&format!(
        "https://user:s%3Acret@{addr}/drain?app=shop"
    )));
    for n in 1..=3 {
        drains.line(&line(n));
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
    let mut bodies: Vec<Vec<String>> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    // The first POST gets a 500, so the same batch must come again; then 200s until every line
    // has arrived (the sender may split them into batches as they came).
    while seen.len() < 3 {
        let status = if bodies.is_empty() {
            "500 Internal Server Error"
        } else {
            "200 OK"
        };
        let (conn, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .unwrap()
            .unwrap();
        let mut conn = BufReader::new(acceptor.accept(conn).await.unwrap());
        let (start, headers, body) = tokio::time::timeout(WAIT, read_request(&mut conn))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(start, "POST /drain?app=shop HTTP/1.1");
        assert_eq!(headers["content-type"], "application/logplex-1");
        assert_eq!(headers["logplex-drain-token"], "d.test-token");
        assert_eq!(
            headers["authorization"],
            format!("Basic {}", url::base64(b"user:s:cret"))
        );
        let frames = split_frames(&body);
        assert_eq!(headers["logplex-msg-count"], frames.len().to_string());
        if !bodies.is_empty() {
            seen.extend(frames.iter().map(|f| message_of(f).to_string()));
        }
        bodies.push(frames);
        conn.get_mut()
            .write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        conn.get_mut().shutdown().await.unwrap();
    }
    assert_eq!(
        bodies[0], bodies[1],
        "the refused batch is sent again as it was"
    );
    assert_eq!(seen, ["line 1", "line 2", "line 3"]);
}
