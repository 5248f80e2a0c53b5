//! The HTTP routing mesh: requests for `APP.DOMAIN` (or an app's custom domain) go to one of
//! the app's web dynos.
//!
//! The coordinator owns a [`RouteTable`], keeps it current as dynos come and go, and runs
//! [`run`] in-process. Every request gets a Heroku-style router log line; failures answer 503
//! (499 for a client that left, H27) with a plain-text page and an `H` code (see HEROKU.md,
//! Router).
//!
//! Choosing a dyno: among the app's dynos with room, two at random and the one with fewer
//! requests outstanding ([`Balance::PowerOfTwo`]; [`Balance::Random`] is Heroku's uniform
//! choice, for comparisons). [`RouteTable::set_concurrency`] caps the requests one dyno gets at
//! a time; beyond it requests wait at the router, in arrival order, at most
//! [`RouterConfig::max_queue`] per app (H11 beyond that, H12 after the request timeout).
//!
//! Protocols: HTTP/1.1 with keep-alive and HTTP/2 (prior knowledge, or ALPN over TLS) from
//! clients, pooled HTTP/1.1 keep-alive connections to dynos, websocket (any `Upgrade`) pass
//! through, TLS termination with rustls on the same port when [`RouterConfig::tls`] is set.
//! Prometheus metrics at `GET /metrics` on [`RouterConfig::metrics_listen`], or from
//! [`RouteTable::prometheus`] for any other endpoint.
//!
//! Retries: a connect that is refused or times out moves the request to another backend (never
//! the same one twice, at most `max_tries` backends). That is safe for any method and body,
//! because the client only reads the request body after a connection is up; the body is shared
//! between attempts and a retry is only made while it is still unread.
//!
//! Header limits: the router answers 400 for a request line or header line over 8192 bytes (and
//! for more than 1000 headers over HTTP/2). An HTTP/1 head with more than 1000 headers, or over
//! hyper's parser buffer (1 MiB), is refused by hyper itself with 431 before the router sees it.
//! hyper's own limit of 100 headers is raised to 1000 only for connections whose head needs it
//! (see `http_builder`): raising it costs every request hyper parses.

mod body;
mod clock;
mod connector;
mod h1;
mod h1_server;
mod log;
mod metrics;
mod proxy;
mod request_id;
mod table;
mod tls;

pub use log::LogBatches;
pub use table::{Backend, Balance, Draining, NoBackends, RouteSnapshot, RouteTable};
pub use tls::{TlsConfig, TlsError};

/// Entry points for the cargo-fuzz targets in `fuzz/` and their corpus replay test
/// (`tests/fuzz_corpus.rs`). Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use crate::log::{Outcome, RequestInfo, format_line};

    /// The app a request for `host` (lowercase, without port) goes to; `domain_suffix` is
    /// `.DOMAIN`.
    pub fn route(table: &crate::RouteTable, host: &str, domain_suffix: &str) -> Option<String> {
        table.route(host, domain_suffix).map(|app| app.name.clone())
    }

    /// Whether a client's `X-Request-Id` is kept rather than replaced.
    pub fn valid_request_id(id: &str) -> bool {
        crate::request_id::is_valid(id)
    }

    /// The router log line of a request to app `shop` that `web.1` answered with 200.
    pub fn log_line(method: &str, path: &str, host: &str, request_id: &str, fwd: &str) -> String {
        let info = RequestInfo::new([host, "shop", method, path, request_id, fwd], "http");
        let outcome = Outcome {
            dyno: "web.1",
            status: 200,
            ..Outcome::default()
        };
        format_line(&info, &outcome)
    }
}

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use proxy::{ClientConn, Proxy};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// How long shutdown waits for in-flight requests before dropping their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// hyper's buffer limit sits above the router's own line limits so that the router answers.
const PARSER_MAX_BUF: usize = 1024 * 1024;
/// A client has this long for its first byte and for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often each worker closes its dyno connections that have been idle too long.
const POOL_REAP: Duration = Duration::from_secs(10);
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Apps are served at `APP.DOMAIN` (and at their custom domains).
    pub domain: String,
    /// From sending a request to a dyno until its response head (H12); also the longest a
    /// request waits in its app's queue.
    pub request_timeout: Duration,
    /// One TCP connect to a dyno (H19).
    pub connect_timeout: Duration,
    /// How many different backends one request may try.
    pub max_tries: usize,
    /// How a dyno is chosen among those with room.
    pub balance: Balance,
    /// Most requests waiting per app when every dyno is at its concurrency limit (H11 beyond).
    pub max_queue: usize,
    /// How long requests wait for a booting app's first dyno (H20).
    pub boot_timeout: Duration,
    /// Longest silence from a dyno in the middle of a response (H15).
    pub idle_timeout: Duration,
    /// How long a client connection may wait for its next request head, and take to send one
    /// (hyper's header read timeout); then it is closed.
    pub client_idle_timeout: Duration,
    /// Terminate TLS with this certificate: the router's port then speaks both plain HTTP and
    /// TLS (told apart by the first byte), and `X-Forwarded-Proto` says which.
    pub tls: Option<TlsConfig>,
    /// Serve Prometheus metrics at `GET /metrics` on this address.
    pub metrics_listen: Option<SocketAddr>,
    /// Threads serving connections; 0 is one per CPU.
    pub workers: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            domain: "localhost".to_string(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_tries: 10,
            balance: Balance::default(),
            max_queue: 1000,
            boot_timeout: Duration::from_secs(75),
            idle_timeout: Duration::from_secs(55),
            client_idle_timeout: Duration::from_secs(30),
            tls: None,
            metrics_listen: None,
            workers: 0,
        }
    }
}

struct Server {
    proxy: Proxy,
    http: auto::Builder<TokioExecutor>,
    /// `http` with room for 1000 headers (HEROKU.md's limit), for connections whose head has
    /// more than hyper's default 100 or is too big to count here.
    http_many: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
}

/// A connection handed from the accept loop to a worker.
type Accepted = (std::net::TcpStream, SocketAddr);

/// hyper's server; `max_headers` for HTTP/1 (hyper's default is 100).
fn http_builder(
    client_idle_timeout: Duration,
    max_headers: Option<usize>,
) -> auto::Builder<TokioExecutor> {
    let mut http = auto::Builder::new(TokioExecutor::new());
    // hyper's default of 100 headers is kept where it can be: a higher `max_headers` makes
    // hyper allocate and fill an index of that many entries for every request it parses
    // (2 x 32 KB for 1000), which cost a third of the router's throughput.
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(client_idle_timeout)
        .keep_alive(true)
        .max_buf_size(PARSER_MAX_BUF);
    if let Some(max) = max_headers {
        http.http1().max_headers(max);
    }
    http.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(PARSER_MAX_BUF as u32);
    http
}

/// Serves until `shutdown` resolves, then stops accepting and waits (up to 5 s) for in-flight
/// requests to finish. HTTP/1.1 and HTTP/2 (prior knowledge, or ALPN over TLS) on `listener`;
/// TLS too when `config.tls` is set; metrics on `config.metrics_listen` when set.
///
/// Connections are served by `config.workers` threads, each with a single-threaded runtime of
/// its own (like nginx's worker processes): a request, its dyno connection and its response
/// never hop between threads. This task only accepts and hands connections out in turn.
pub async fn run(
    listener: TcpListener,
    table: RouteTable,
    config: RouterConfig,
    logs: Option<LogBatches>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local_addr = listener.local_addr()?;
    let tls = match &config.tls {
        Some(files) => Some(TlsAcceptor::from(tls::server_config(files)?)),
        None => None,
    };
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    let workers = match config.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut handoff = Vec::with_capacity(workers);
    let mut finished = Vec::with_capacity(workers);
    for i in 0..workers {
        let server = Server {
            proxy: Proxy::new(
                table.clone(),
                config.clone(),
                log::LogSink::new(logs.clone()),
                local_addr.port(),
            ),
            http: http_builder(config.client_idle_timeout, None),
            http_many: http_builder(config.client_idle_timeout, Some(proxy::MAX_HEADERS)),
            tls: tls.clone(),
        };
        let (tx, rx) = mpsc::unbounded_channel::<Accepted>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let stop = stop_rx.clone();
        std::thread::Builder::new()
            .name(format!("router-{i}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(worker(Arc::new(server), rx, stop)),
                    Err(err) => tracing::error!(error = %err, "cannot start a router worker"),
                }
                let _ = done_tx.send(());
            })?;
        handoff.push(tx);
        finished.push(done_rx);
    }
    tracing::info!(addr = %local_addr, tls = tls.is_some(), workers, "router listening");

    let metrics_task = metrics_listener.map(|listener| {
        tracing::info!(addr = ?listener.local_addr().ok(), "router metrics listening");
        tokio::spawn(serve_metrics(listener, table, stop_rx.clone()))
    });
    let mut shutdown = std::pin::pin!(shutdown);
    let mut next = 0usize;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted.and_then(|(s, peer)| Ok((s.into_std()?, peer))) {
                Ok(conn) => {
                    next = next.wrapping_add(1);
                    if handoff[next % workers].send(conn).is_err() {
                        tracing::error!("a router worker is gone");
                    }
                }
                Err(err) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }

    drop(listener);
    let _ = stop_tx.send(true);
    drop(handoff);
    for done in finished {
        let _ = done.await;
    }
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    tracing::info!(addr = %local_addr, "router stopped");
    Ok(())
}

/// One worker: serves the connections handed to it until the accept loop stops, then gives
/// them up to 5 s to finish.
async fn worker(
    server: Arc<Server>,
    mut incoming: mpsc::UnboundedReceiver<Accepted>,
    stop: watch::Receiver<bool>,
) {
    let sink = server.proxy.sink().clone();
    let forwarder = tokio::spawn(async move { sink.forward().await });
    let pool = Arc::clone(server.proxy.pool());
    let reaper = tokio::spawn(async move {
        let mut every = tokio::time::interval(POOL_REAP);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            pool.reap();
        }
    });
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            next = incoming.recv() => match next {
                Some((stream, peer)) => match TcpStream::from_std(stream) {
                    Ok(stream) => {
                        connections.spawn(serve_connection(
                            Arc::clone(&server),
                            stream,
                            peer,
                            stop.clone(),
                        ));
                    }
                    Err(err) => tracing::warn!(%peer, error = %err, "cannot serve a connection"),
                },
                None => break,
            },
            Some(finished) = connections.join_next(), if !connections.is_empty() => {
                log_join(finished);
            }
        }
    }
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
    forwarder.abort();
    reaper.abort();
    server.proxy.sink().flush();
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
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    if let Some(acceptor) = &server.tls {
        let mut first = [0u8; 1];
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
            Ok(Ok(1)) if first[0] == TLS_HANDSHAKE => {
                let accepted =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.clone().accept(stream)).await;
                match accepted {
                    Ok(Ok(tls)) => {
                        let conn = ClientConn { peer, tls: true };
                        // Boxed: the TLS stream would make every connection's task larger.
                        Box::pin(h1_server::serve(server, tls, conn, stop)).await;
                    }
                    Ok(Err(err)) => tracing::debug!(%peer, error = %err, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
                return;
            }
            Ok(Ok(1)) => {}
            // Closed, failed, or silent: nothing to serve.
            _ => return,
        }
    }
    let conn = ClientConn { peer, tls: false };
    h1_server::serve(server, stream, conn, stop).await;
}

async fn serve_http<I>(
    server: Arc<Server>,
    io: TokioIo<I>,
    conn: ClientConn,
    many_headers: bool,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handler = Arc::clone(&server);
    let service = service_fn(move |req| {
        let handler = Arc::clone(&handler);
        async move { Ok::<_, Infallible>(handler.proxy.handle(conn, req).await) }
    });
    let http = if many_headers {
        &server.http_many
    } else {
        &server.http
    };
    let connection = http.serve_connection_with_upgrades(io, service);
    let mut connection = std::pin::pin!(connection);
    let stopping = stopped(&mut stop);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopping => {
            // Finish the requests in progress, then close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(peer = %conn.peer, error = %err, "client connection ended with an error");
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// `GET /metrics` in the Prometheus text format; anything else is 404.
async fn serve_metrics(listener: TcpListener, table: RouteTable, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let table = table.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let table = table.clone();
                        async move { Ok::<_, Infallible>(metrics_response(&table, &req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

fn metrics_response<B>(table: &RouteTable, req: &Request<B>) -> Response<Full<Bytes>> {
    let (status, content_type, body) =
        if req.method() == Method::GET && req.uri().path() == "/metrics" {
            (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                table.prometheus(),
            )
        } else {
            (
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "404 Not Found\n\nMetrics are at GET /metrics.\n".to_string(),
            )
        };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}
