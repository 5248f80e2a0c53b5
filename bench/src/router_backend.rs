//! bench-router-backend: the web dyno of bench-router. Answers every request with a body of
//! `--body` bytes (1024 by default) after sleeping the milliseconds given in the request's
//! `X-Service-Ms` header. With `--serial` it serves one request at a time, in arrival order,
//! like a single-threaded dyno: the others wait inside it.
//!
//! usage: bench-router-backend PORT [--serial] [--body BYTES]

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut port: Option<u16> = None;
    let mut serial = false;
    let mut body_len = 1024usize;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--serial" => serial = true,
            "--body" => {
                body_len = it
                    .next()
                    .context("--body needs BYTES")?
                    .parse()
                    .context("--body needs a number")?;
            }
            p if port.is_none() => port = Some(p.parse().context("PORT must be a number")?),
            other => bail!("unexpected argument {other:?}"),
        }
    }
    let port = port.context("usage: bench-router-backend PORT [--serial] [--body BYTES]")?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(port, serial, Bytes::from(vec![b'x'; body_len])))
}

async fn serve(port: u16, serial: bool, body: Bytes) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    // tokio's semaphore is fair: permits go out in the order they were asked for.
    let one_at_a_time = Arc::new(Semaphore::new(if serial {
        1
    } else {
        Semaphore::MAX_PERMITS
    }));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (body, gate) = (body.clone(), Arc::clone(&one_at_a_time));
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let (body, gate) = (body.clone(), Arc::clone(&gate));
                async move {
                    let ms: f64 = req
                        .headers()
                        .get("x-service-ms")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .filter(|ms: &f64| ms.is_finite() && *ms > 0.0)
                        .unwrap_or(0.0);
                    if ms > 0.0 || serial {
                        let _permit = gate.acquire().await;
                        if ms > 0.0 {
                            tokio::time::sleep(Duration::from_secs_f64(ms / 1000.0)).await;
                        }
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(body)))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
