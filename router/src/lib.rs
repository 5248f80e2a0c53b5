//! The HTTP routing mesh: `APP.DOMAIN` requests go to the app's least busy web dyno.
//!
//! The coordinator owns a [`RouteTable`], keeps it current as dynos come and go, and runs
//! [`run`] in-process. Every request gets a Heroku-style router log line; failures answer 503
//! with a plain-text page and an `H` code (see HEROKU.md, Router).
//!
//! Retries: a connect that is refused or times out moves the request to another backend (never
//! the same one twice, at most `max_tries` backends). That is safe for any method and body,
//! because the client only reads the request body after a connection is up; the body is shared
//! between attempts and a retry is only made while it is still unread.
//!
//! Header limits: the router answers 400 for a request line or header line over 8192 bytes or
//! more than 1000 headers. A head too big for hyper's own parser buffer (1 MiB, 2000 headers)
//! is refused by hyper itself with 431 before the router sees it.

mod body;
mod connector;
mod log;
mod proxy;
mod request_id;
mod table;

pub use table::{Backend, RouteTable};

use dyno_shared::LogLine;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use proxy::Proxy;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// How long shutdown waits for in-flight requests before dropping their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// hyper's parser limits sit above the router's own so that the router, not hyper, answers.
const PARSER_MAX_HEADERS: usize = 2 * proxy::MAX_HEADERS;
const PARSER_MAX_BUF: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Apps are served at `APP.DOMAIN`.
    pub domain: String,
    /// From receiving a request until the dyno's response head (H12).
    pub request_timeout: Duration,
    /// One TCP connect to a dyno (H19).
    pub connect_timeout: Duration,
    /// How many different backends one request may try.
    pub max_tries: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            domain: "localhost".to_string(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_tries: 10,
        }
    }
}

struct Server {
    proxy: Proxy,
    http: http1::Builder,
}

/// Serves until `shutdown` resolves, then stops accepting and waits (up to 5 s) for in-flight
/// requests to finish.
pub async fn run(
    listener: TcpListener,
    table: RouteTable,
    config: RouterConfig,
    logs: Option<mpsc::Sender<LogLine>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local_addr = listener.local_addr()?;
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .keep_alive(true)
        .max_headers(PARSER_MAX_HEADERS)
        .max_buf_size(PARSER_MAX_BUF);
    let server = Arc::new(Server {
        proxy: Proxy::new(table, config, log::LogSink::new(logs), local_addr.port()),
        http,
    });
    tracing::info!(addr = %local_addr, "router listening");

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(
                        Arc::clone(&server),
                        stream,
                        peer,
                        stop_rx.clone(),
                    ));
                }
                Err(err) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(finished) = connections.join_next(), if !connections.is_empty() => {
                log_join(finished);
            }
        }
    }

    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(finished) = connections.join_next().await {
            log_join(finished);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "shutdown grace period over; dropping connections"
        );
        connections.shutdown().await;
    }
    tracing::info!(addr = %local_addr, "router stopped");
    Ok(())
}

fn log_join(finished: Result<(), tokio::task::JoinError>) {
    if let Err(err) = finished
        && err.is_panic()
    {
        tracing::error!(error = %err, "connection task panicked");
    }
}

async fn serve_connection(
    server: Arc<Server>,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let handler = Arc::clone(&server);
    let service = service_fn(move |req| {
        let handler = Arc::clone(&handler);
        async move { Ok::<_, Infallible>(handler.proxy.handle(peer, req).await) }
    });
    let connection = server.http.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let stopping = async {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopping => {
            // Finish the request in progress, then close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "client connection ended with an error");
    }
}
