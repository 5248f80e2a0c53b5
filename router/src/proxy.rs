//! One request: route by Host, pick a backend, rewrite headers, proxy, retry, or answer an error.

use crate::RouterConfig;
use crate::body::{ClientFailure, Completion, End, ForwardBody, ResponseBody, Upstream};
use crate::connector::{Outgoing, Pool, SendError};
use crate::h1::RawRequest;
use crate::log::{InfoBuilder, LogSink, Outcome, RequestInfo, format_line};
use crate::request_id;
use crate::table::{Acquire, App, Refusal, RouteTable};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use smallvec::SmallVec;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// Longest request line or header line (name, ": ", value) the router accepts.
pub(crate) const MAX_LINE_BYTES: usize = 8192;
pub(crate) const MAX_HEADERS: usize = 1000;
pub(crate) const VIA: &str = "1.1 dyno-router";
// Named once: a `&str` key is parsed again on every use.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_REQUEST_START: HeaderName = HeaderName::from_static("x-request-start");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// Responses up to this long (with a Content-Length) have their first chunk read before the
/// head is passed on.
const PREFETCH_MAX: u64 = 64 * 1024;
/// Idle keep-alive connections to dynos are closed after this long.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Why the router answered itself; the message is Heroku's `desc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RouteError {
    #[error("App crashed")]
    AppCrashed,
    #[error("Backlog too deep")]
    BacklogTooDeep,
    #[error("Request timeout")]
    RequestTimeout,
    #[error("Connection closed without response")]
    ClosedWithoutResponse,
    #[error("No web dynos running")]
    NoWebDynos,
    #[error("Backend connection timeout")]
    ConnectTimeout,
    #[error("App boot timeout")]
    BootTimeout,
    #[error("Backend connection refused")]
    ConnectionRefused,
    #[error("Idle connection")]
    IdleConnection,
    #[error("Server Request Interrupted")]
    RequestInterrupted,
    #[error("Client Request Interrupted")]
    ClientInterrupted,
    #[error("Maintenance mode")]
    Maintenance,
}

impl RouteError {
    pub(crate) fn code(self) -> &'static str {
        match self {
            RouteError::AppCrashed => "H10",
            RouteError::BacklogTooDeep => "H11",
            RouteError::RequestTimeout => "H12",
            RouteError::ClosedWithoutResponse => "H13",
            RouteError::NoWebDynos => "H14",
            RouteError::IdleConnection => "H15",
            RouteError::RequestInterrupted => "H18",
            RouteError::ConnectTimeout => "H19",
            RouteError::BootTimeout => "H20",
            RouteError::ConnectionRefused => "H21",
            RouteError::ClientInterrupted => "H27",
            RouteError::Maintenance => "H80",
        }
    }

    /// 503, except for a client that went away (499, which it never sees).
    pub(crate) fn status(self) -> u16 {
        match self {
            RouteError::ClientInterrupted => 499,
            _ => 503,
        }
    }
}

/// Where the request stood when it failed, for the log line.
struct Failure<'a> {
    dyno: &'a str,
    connect_ms: u128,
}

const NO_DYNO: Failure<'static> = Failure {
    dyno: "",
    connect_ms: 0,
};

/// A request without a body, as the router's own HTTP/1.1 server parsed it.
pub(crate) struct PlainRequest<'a> {
    pub(crate) method: &'a str,
    /// Origin-form.
    pub(crate) target: &'a str,
    pub(crate) headers: &'a [httparse::Header<'a>],
    /// The client's address as X-Forwarded-For shows it, made once per connection.
    pub(crate) peer_ip: &'a str,
}

/// A plain request routed and encoded for a dyno, not yet sent.
pub(crate) struct PlainPrepared {
    app: Arc<App>,
    info: Arc<RequestInfo>,
    raw: RawRequest,
}

/// How the client reached the router.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientConn {
    pub(crate) peer: SocketAddr,
    pub(crate) tls: bool,
}

pub(crate) struct Proxy {
    table: RouteTable,
    config: RouterConfig,
    /// `.localhost`, lowercase.
    domain_suffix: String,
    /// This worker's connections to dynos.
    pool: Arc<Pool>,
    sink: LogSink,
    /// X-Forwarded-Port: the router's own port.
    port_header: HeaderValue,
}

/// Logs H27 (499) when the client goes away while its request is still being routed: hyper
/// drops the request's future then.
struct ClientGone<'a> {
    proxy: &'a Proxy,
    app: &'a App,
    info: &'a RequestInfo,
    armed: bool,
}

impl Drop for ClientGone<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.proxy
                .fail(self.app, self.info, RouteError::ClientInterrupted, NO_DYNO);
        }
    }
}

impl Proxy {
    pub(crate) fn new(
        table: RouteTable,
        config: RouterConfig,
        sink: LogSink,
        local_port: u16,
    ) -> Self {
        let pool = Arc::new(Pool::new(config.connect_timeout, POOL_IDLE));
        let domain_suffix = format!(".{}", config.domain.trim_matches('.').to_ascii_lowercase());
        Proxy {
            table,
            config,
            domain_suffix,
            pool,
            sink,
            port_header: HeaderValue::from(local_port),
        }
    }

    pub(crate) fn config(&self) -> &RouterConfig {
        &self.config
    }

    pub(crate) fn sink(&self) -> &LogSink {
        &self.sink
    }

    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    pub(crate) async fn handle(
        &self,
        conn: ClientConn,
        mut req: Request<Incoming>,
    ) -> Response<ResponseBody> {
        let received = Instant::now();
        let received_micros = crate::clock::wall_micros(received);
        let received_unix_ms = received_micros / 1000;
        let host = request_host(&req);
        let client_version = req.version();
        if !valid_host(&host) {
            // Also keeps spaces and quotes out of the app's router log lines.
            let mut response = text_page(
                StatusCode::BAD_REQUEST,
                "400 Bad Request\n\nThe Host header is not a host name.\n".to_string(),
            );
            *response.version_mut() = client_version;
            return response;
        }
        let Some(app) = self.table.route(&host, &self.domain_suffix) else {
            let mut response = not_found(&host);
            *response.version_mut() = client_version;
            return response;
        };
        let upgrade = upgrade_protocol(&req).map(|proto| (proto, hyper::upgrade::on(&mut req)));
        let (parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut builder = InfoBuilder::new(host.len() + path.len() + 160);
        builder.field(&host);
        builder.field(&app.name);
        builder.field(parts.method.as_str());
        builder.field(path);
        let client_id = parts
            .headers
            .get(X_REQUEST_ID)
            .and_then(|v| v.to_str().ok());
        push_request_id(client_id, builder.text());
        builder.end_field();
        let chain = parts.headers.get_all(X_FORWARDED_FOR).iter();
        let chain = chain.filter_map(|v| v.to_str().ok());
        push_forwarded_for(chain, &ip_string(conn.peer.ip()), builder.text());
        builder.end_field();
        let protocol = if conn.tls { "https" } else { "http" };
        let info = Arc::new(builder.finish(protocol, received, received_micros));
        let mut gone = ClientGone {
            proxy: self,
            app: &app,
            info: &info,
            armed: true,
        };
        let mut response = self
            .route(&app, &info, conn, parts, body, upgrade, received_unix_ms)
            .await;
        gone.armed = false;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            *response.version_mut() = client_version;
        }
        response
    }

    #[allow(clippy::too_many_arguments)]
    async fn route(
        &self,
        app: &Arc<App>,
        info: &Arc<RequestInfo>,
        conn: ClientConn,
        mut parts: Parts,
        body: Incoming,
        upgrade: Option<(HeaderValue, OnUpgrade)>,
        received_unix_ms: i64,
    ) -> Response<ResponseBody> {
        if let Err(why) = check_limits(&parts) {
            app.metrics.router_statuses.count(400);
            let outcome = Outcome {
                status: 400,
                ..Outcome::default()
            };
            let at = info.wall_micros(Instant::now());
            self.sink.emit(info.app(), format_line(info, &outcome), at);
            return text_page(
                StatusCode::BAD_REQUEST,
                format!("400 Bad Request\n\n{why}\n"),
            );
        }
        if parts.method == Method::CONNECT {
            app.metrics.router_statuses.count(405);
            return text_page(
                StatusCode::METHOD_NOT_ALLOWED,
                "405 Method Not Allowed\n\nThe router does not tunnel CONNECT.\n".to_string(),
            );
        }

        // Requests without a body are written by the router itself; the others go through
        // hyper's client, which streams the body while the response comes in.
        if upgrade.is_none() && body.is_end_stream() {
            let head = self.encode_request_head(&parts, info, conn, received_unix_ms);
            let raw = RawRequest::new(head, parts.method == Method::HEAD);
            drop(parts);
            let failure = ForwardBody::new(body).failure();
            return self
                .forward(app, info, Outgoing::Raw(raw), Client::plain(failure))
                .await;
        }
        self.rewrite_request_headers(&mut parts.headers, info, conn, received_unix_ms);
        let (upgrade_proto, client_upgrade) = match upgrade {
            Some((proto, on)) => (Some(proto), Some(on)),
            None => (None, None),
        };
        if let Some(proto) = &upgrade_proto {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, proto.clone());
        }
        // Origin-form, as HTTP/1.1 sends it to a server that is not a proxy.
        parts.uri = Uri::from(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/")),
        );
        parts.version = Version::HTTP_11;
        parts.extensions.clear();
        let body = ForwardBody::new(body);
        let client_failure = body.failure();
        let outgoing = Outgoing::Hyper(Box::new(Request::from_parts(parts, body)));
        let client = Client {
            failure: client_failure,
            upgrade: client_upgrade,
            timer: None,
        };
        self.forward(app, info, outgoing, client).await
    }

    /// Sends the request to a backend (another after a failed connect) and passes its answer
    /// on.
    async fn forward(
        &self,
        app: &Arc<App>,
        info: &Arc<RequestInfo>,
        outgoing: Outgoing,
        client: Client<'_>,
    ) -> Response<ResponseBody> {
        let received = info.received();
        let Client {
            failure: client_failure,
            upgrade: client_upgrade,
            mut timer,
        } = client;
        // Only a failed connect gives the request back, its body unread: any request may then
        // move on to another backend.
        let mut unsent = Some(outgoing);
        // Inline: a request almost always tries one backend.
        let mut tried: SmallVec<[SocketAddr; 4]> = SmallVec::new();
        let mut last_failure: Option<(RouteError, String, u128)> = None;

        while tried.len() < self.config.max_tries.max(1)
            && let Some(upstream) = unsent.take()
        {
            let retry = !tried.is_empty();
            let mut waited = false;
            let acquired = match self.table.acquire(
                app,
                &tried,
                self.config.balance,
                self.config.max_queue,
                retry,
            ) {
                Acquire::Ready(in_flight) => Ok(in_flight),
                Acquire::Wait { grant, booting } => {
                    waited = true;
                    let limit = if booting {
                        self.config.boot_timeout
                    } else {
                        self.config.request_timeout
                    };
                    let deadline = tokio::time::Instant::from_std(received + limit);
                    match tokio::time::timeout_at(deadline, grant).await {
                        Ok(Ok(granted)) => granted,
                        Ok(Err(_closed)) => Err(Refusal::NotRunning),
                        Err(_elapsed) if booting => {
                            return self.fail(app, info, RouteError::BootTimeout, NO_DYNO);
                        }
                        Err(_elapsed) => {
                            return self.fail(app, info, RouteError::RequestTimeout, NO_DYNO);
                        }
                    }
                }
                Acquire::Refused(refusal) => Err(refusal),
            };
            let in_flight = match acquired {
                Ok(in_flight) => in_flight,
                Err(refusal) => {
                    let why = match refusal {
                        Refusal::Maintenance => RouteError::Maintenance,
                        Refusal::NotRunning => RouteError::NoWebDynos,
                        Refusal::Crashed => RouteError::AppCrashed,
                        Refusal::Backlog => RouteError::BacklogTooDeep,
                        Refusal::Exhausted => break,
                    };
                    return self.fail(app, info, why, NO_DYNO);
                }
            };
            // A request that found room at once did not queue, and goes out as it came in: no
            // clock read for either (each is a few per cent of the router's own work).
            let sent_at = if waited || retry {
                Instant::now()
            } else {
                received
            };
            if !retry {
                app.metrics.queue.observe(sent_at - received);
            }
            let slot = Arc::clone(in_flight.slot());
            tried.push(slot.addr);
            let mut connect = 0u128;
            let deadline = tokio::time::Instant::from_std(sent_at + self.config.request_timeout);
            // Pinned where it is made: this future is most of the request's state, and each
            // move of it is a copy.
            let result = {
                let mut attempt = std::pin::pin!(self.pool.send(slot.addr, upstream, &mut connect));
                match timer.as_mut() {
                    Some(timer) => {
                        // A timer due earlier is left there and moved on when it fires: moving
                        // it either way is a trip through the timer wheel.
                        if timer.deadline() > deadline {
                            timer.as_mut().reset(deadline);
                        }
                        std::future::poll_fn(|cx| {
                            if let Poll::Ready(done) = attempt.as_mut().poll(cx) {
                                return Poll::Ready(Ok(done));
                            }
                            while timer.as_mut().poll(cx).is_ready() {
                                if tokio::time::Instant::now() >= deadline {
                                    return Poll::Ready(Err(TimedOut));
                                }
                                timer.as_mut().reset(deadline);
                            }
                            Poll::Pending
                        })
                        .await
                    }
                    None => tokio::time::timeout_at(deadline, attempt)
                        .await
                        .map_err(|_| TimedOut),
                }
            };
            let at = Failure {
                dyno: &slot.dyno,
                connect_ms: connect,
            };
            match result {
                Ok(Ok((mut response, conn))) => {
                    let first = if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                        None
                    } else {
                        match self.prefetch(&mut response).await {
                            Ok(first) => first,
                            Err(end) => {
                                let why = match end {
                                    End::Idle => RouteError::IdleConnection,
                                    _ => RouteError::RequestInterrupted,
                                };
                                return self.fail(app, info, why, at);
                            }
                        }
                    };
                    let completion = Completion {
                        info: Arc::clone(info),
                        sink: self.sink.clone(),
                        status: response.status().as_u16(),
                        connect_ms: connect,
                        sent_at,
                        bytes: 0,
                        end: End::Complete,
                        in_flight,
                        conn,
                    };
                    if response.status() == StatusCode::SWITCHING_PROTOCOLS
                        && let Some(client_upgrade) = client_upgrade
                    {
                        return upgraded(response, client_upgrade, completion);
                    }
                    return self.proxied_response(response, first, completion);
                }
                Ok(Err(SendError::Connect(err, request))) => {
                    let why = classify_connect_error(&err);
                    tracing::debug!(dyno = %slot.dyno, addr = %slot.addr, error = ?err, "connect failed");
                    self.table.quarantine(&slot);
                    last_failure = Some((why, slot.dyno.clone(), connect));
                    unsent = Some(*request);
                }
                Ok(Err(SendError::Failed(err))) => {
                    tracing::debug!(dyno = %slot.dyno, error = ?err, "backend failed before a response");
                    let why = if client_failure.failed() {
                        RouteError::ClientInterrupted
                    } else {
                        RouteError::ClosedWithoutResponse
                    };
                    return self.fail(app, info, why, at);
                }
                Err(TimedOut) => {
                    return self.fail(app, info, RouteError::RequestTimeout, at);
                }
            }
        }
        match last_failure {
            Some((why, dyno, connect_ms)) => {
                let at = Failure {
                    dyno: &dyno,
                    connect_ms,
                };
                self.fail(app, info, why, at)
            }
            None => self.fail(app, info, RouteError::NoWebDynos, NO_DYNO),
        }
    }

    /// The request head for a dyno, as `rewrite_request_headers` would make it, written
    /// straight from the client's headers: origin-form, HTTP/1.1, hop-by-hop headers out,
    /// forwarding headers in.
    fn encode_request_head(
        &self,
        parts: &Parts,
        info: &RequestInfo,
        conn: ClientConn,
        received_unix_ms: i64,
    ) -> Vec<u8> {
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let headers = || {
            parts
                .headers
                .iter()
                .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
        };
        self.encode_head(
            parts.method.as_str(),
            target,
            headers,
            info,
            conn,
            received_unix_ms,
        )
    }

    /// `encode_request_head` over any list of (name in any case, value) pairs, which
    /// `headers` iterates (twice).
    fn encode_head<'h, H>(
        &self,
        method: &str,
        target: &str,
        headers: impl Fn() -> H,
        info: &RequestInfo,
        conn: ClientConn,
        received_unix_ms: i64,
    ) -> Vec<u8>
    where
        H: Iterator<Item = (&'h [u8], &'h [u8])>,
    {
        fn line(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
            head.extend_from_slice(name);
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        }
        let connection: Vec<&[u8]> = headers()
            .filter(|(name, _)| name.eq_ignore_ascii_case(b"connection"))
            .map(|(_, value)| value)
            .collect();
        let named_by_connection = |name: &[u8]| {
            connection.iter().any(|v| {
                v.split(|&b| b == b',')
                    .any(|token| token.trim_ascii().eq_ignore_ascii_case(name))
            })
        };
        let mut head = Vec::with_capacity(768 + target.len());
        head.extend_from_slice(method.as_bytes());
        head.push(b' ');
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        let mut via: Vec<&[u8]> = Vec::new();
        let mut has_host = false;
        for (name, value) in headers() {
            if crate::h1::hop_by_hop(name) || (!connection.is_empty() && named_by_connection(name))
            {
                continue;
            }
            if name.eq_ignore_ascii_case(b"via") {
                if header_str(value).is_some() {
                    via.push(value);
                }
                continue;
            }
            if [
                b"x-forwarded-for".as_slice(),
                b"x-forwarded-proto",
                b"x-forwarded-port",
                b"x-request-start",
                b"x-request-id",
            ]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
            {
                continue;
            }
            has_host |= name.eq_ignore_ascii_case(b"host");
            line(&mut head, name, value);
        }
        if !has_host {
            line(&mut head, b"host", info.host().as_bytes());
        }
        line(&mut head, b"x-forwarded-for", info.fwd().as_bytes());
        let proto: &[u8] = if conn.tls { b"https" } else { b"http" };
        line(&mut head, b"x-forwarded-proto", proto);
        line(&mut head, b"x-forwarded-port", self.port_header.as_bytes());
        head.extend_from_slice(b"x-request-start: ");
        push_decimal(&mut head, received_unix_ms);
        head.extend_from_slice(b"\r\n");
        line(&mut head, b"x-request-id", info.request_id().as_bytes());
        head.extend_from_slice(b"via: ");
        for prior in via {
            head.extend_from_slice(prior);
            head.extend_from_slice(b", ");
        }
        head.extend_from_slice(VIA.as_bytes());
        head.extend_from_slice(b"\r\n\r\n");
        head
    }

    /// What `handle` does for a request without a body, for the router's own HTTP/1.1 server
    /// (`h1_server`), up to sending it: `None` when the request is one for hyper's server to
    /// answer (a bad or unknown host, a head over the limits), which it then does as usual.
    pub(crate) fn prepare_plain(
        &self,
        conn: ClientConn,
        req: &PlainRequest<'_>,
    ) -> Option<PlainPrepared> {
        let received = Instant::now();
        let received_micros = crate::clock::wall_micros(received);
        let received_unix_ms = received_micros / 1000;
        // METHOD SP TARGET SP HTTP/1.1
        if req.method.len() + req.target.len() + 10 > MAX_LINE_BYTES {
            return None;
        }
        let mut host = None;
        let mut request_id = None;
        for h in req.headers {
            if h.name.len() + 2 + h.value.len() > MAX_LINE_BYTES {
                return None;
            }
            if host.is_none() && h.name.eq_ignore_ascii_case("host") {
                host = Some(h.value);
            } else if request_id.is_none() && h.name.eq_ignore_ascii_case("x-request-id") {
                request_id = Some(h.value);
            }
        }
        let host = header_str(host?)?;
        // Every text of the request's log line in one buffer, the host first: it routes.
        let mut info = InfoBuilder::new(host.len() + req.method.len() + req.target.len() + 160);
        push_normalised_host(host, info.text());
        if !valid_host(info.current()) {
            return None;
        }
        let app = self.table.route(info.current(), &self.domain_suffix)?;
        info.end_field();
        info.field(&app.name);
        info.field(req.method);
        info.field(req.target);
        push_request_id(request_id.and_then(header_str), info.text());
        info.end_field();
        let chain = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
            .filter_map(|h| header_str(h.value));
        push_forwarded_for(chain, req.peer_ip, info.text());
        info.end_field();
        let protocol = if conn.tls { "https" } else { "http" };
        let info = info.finish(protocol, received, received_micros);
        let headers = || req.headers.iter().map(|h| (h.name.as_bytes(), h.value));
        let head = self.encode_head(
            req.method,
            req.target,
            headers,
            &info,
            conn,
            received_unix_ms,
        );
        Some(PlainPrepared {
            app,
            info: Arc::new(info),
            raw: RawRequest::new(head, req.method == "HEAD").passing_head(),
        })
    }

    /// Routes and forwards a prepared plain request, as `handle` does, timed by `timer`.
    pub(crate) async fn forward_plain(
        &self,
        prepared: PlainPrepared,
        timer: Pin<&mut tokio::time::Sleep>,
    ) -> Response<ResponseBody> {
        let PlainPrepared { app, info, raw } = prepared;
        let mut gone = ClientGone {
            proxy: self,
            app: &app,
            info: &info,
            armed: true,
        };
        let response = self
            .forward(
                &app,
                &info,
                Outgoing::Raw(raw),
                Client {
                    timer: Some(timer),
                    ..Client::plain(ClientFailure::none())
                },
            )
            .await;
        gone.armed = false;
        response
    }

    fn rewrite_request_headers(
        &self,
        headers: &mut HeaderMap,
        info: &RequestInfo,
        conn: ClientConn,
        received_unix_ms: i64,
    ) {
        strip_hop_by_hop(headers);
        if !headers.contains_key(header::HOST)
            && let Ok(host) = HeaderValue::from_str(info.host())
        {
            headers.insert(header::HOST, host);
        }
        if let Ok(fwd) = HeaderValue::from_str(info.fwd()) {
            headers.insert(X_FORWARDED_FOR, fwd);
        }
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
        );
        headers.insert(X_FORWARDED_PORT, self.port_header.clone());
        headers.insert(X_REQUEST_START, HeaderValue::from(received_unix_ms));
        if let Ok(id) = HeaderValue::from_str(info.request_id()) {
            headers.insert(X_REQUEST_ID, id);
        }
        append_via(headers);
    }

    /// The first chunk of a small response of known length, read before the head is passed
    /// on: hyper then writes head and body to the client in one go. Otherwise it sends the head
    /// alone the moment the body is not ready yet, which costs a second write, a second packet
    /// and a wake-up per request.
    async fn prefetch(
        &self,
        response: &mut Response<Upstream>,
    ) -> Result<Option<Frame<Bytes>>, End> {
        let small = response
            .body()
            .size_hint()
            .exact()
            .is_some_and(|len| len > 0 && len <= PREFETCH_MAX);
        if !small {
            return Ok(None);
        }
        // Usually the chunk came in with the head: then no idle timer is armed for it.
        let body = response.body_mut();
        let now = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await;
        let polled = match now {
            Poll::Ready(frame) => Ok(frame),
            Poll::Pending => tokio::time::timeout(self.config.idle_timeout, body.frame()).await,
        };
        match polled {
            Ok(Some(Ok(frame))) => Ok(Some(frame)),
            Ok(None) => Ok(None),
            Ok(Some(Err(_))) => Err(End::ServerInterrupted),
            Err(_) => Err(End::Idle),
        }
    }

    fn proxied_response(
        &self,
        response: Response<Upstream>,
        first: Option<Frame<Bytes>>,
        completion: Completion,
    ) -> Response<ResponseBody> {
        let (mut parts, body) = response.into_parts();
        // `h1` leaves out hop-by-hop headers and adds Via as it parses.
        if let Upstream::Hyper(_) = body {
            strip_hop_by_hop(&mut parts.headers);
            append_via(&mut parts.headers);
        }
        Response::from_parts(
            parts,
            ResponseBody::upstream(body, first, completion, self.config.idle_timeout),
        )
    }

    fn fail(
        &self,
        app: &App,
        info: &RequestInfo,
        why: RouteError,
        at: Failure<'_>,
    ) -> Response<ResponseBody> {
        let desc = why.to_string();
        let status = why.status();
        app.metrics.error(why.code());
        if at.dyno.is_empty() {
            app.metrics.router_statuses.count(status);
        } else {
            app.metrics.dyno(at.dyno).statuses.count(status);
        }
        let now = Instant::now();
        let service = now.saturating_duration_since(info.received());
        let outcome = Outcome {
            error: Some((why.code(), &desc)),
            dyno: at.dyno,
            connect_ms: at.connect_ms,
            service_ms: service.as_millis().saturating_sub(at.connect_ms),
            status,
            bytes: 0,
        };
        let at = info.wall_micros(now);
        self.sink.emit(info.app(), format_line(info, &outcome), at);
        error_page(why, info.request_id())
    }
}

/// The protocol a client asks to switch to (`Upgrade: websocket` with `Connection: upgrade`,
/// HTTP/1.1 only).
/// The request timeout passed first.
struct TimedOut;

/// The client's X-Request-Id if it is a sensible one, else a fresh one, appended to `out`.
fn push_request_id(client: Option<&str>, out: &mut String) {
    match client.filter(|id| request_id::is_valid(id)) {
        Some(id) => out.push_str(id),
        None => request_id::push_generated(out),
    }
}

/// What `forward` is told of the client's side.
struct Client<'t> {
    failure: ClientFailure,
    /// The client's side of a websocket (or other) upgrade it asked for.
    upgrade: Option<OnUpgrade>,
    /// The caller's timer for the request timeout, due at or before its deadline: one armed
    /// timer reused, where a fresh one per request is a registration with the runtime's timer
    /// wheel and a removal after.
    timer: Option<Pin<&'t mut tokio::time::Sleep>>,
}

impl Client<'_> {
    fn plain(failure: ClientFailure) -> Self {
        Client {
            failure,
            upgrade: None,
            timer: None,
        }
    }
}

fn upgrade_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| req.headers().get(header::UPGRADE).cloned())
        .flatten()
}

/// The dyno agreed to switch protocols: answer 101 and splice the two connections once hyper
/// hands them over. The dyno's slot is released at once; a websocket is not a request in flight.
fn upgraded(
    mut response: Response<Upstream>,
    client: OnUpgrade,
    mut completion: Completion,
) -> Response<ResponseBody> {
    let dyno_side = hyper::upgrade::on(&mut response);
    let (mut parts, _) = response.into_parts();
    append_via(&mut parts.headers);
    let dyno = completion.in_flight.slot().dyno.clone();
    // Never back to the pool: the connection becomes the websocket.
    let dyno_conn = completion.conn.take();
    drop(completion);
    tokio::spawn(async move {
        let joined = tokio::try_join!(client, dyno_side);
        drop(dyno_conn);
        match joined {
            Ok((client, dyno_side)) => {
                let mut client = TokioIo::new(client);
                let mut dyno_side = TokioIo::new(dyno_side);
                if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut dyno_side).await {
                    tracing::debug!(%dyno, error = %err, "upgraded connection ended");
                }
            }
            Err(err) => tracing::debug!(%dyno, error = %err, "upgrade failed"),
        }
    });
    Response::from_parts(parts, ResponseBody::empty())
}

/// Refused and timed-out connects are different Heroku errors; only the io error kind, deep in
/// the client's error chain, tells them apart.
fn classify_connect_error(err: &(dyn std::error::Error + 'static)) -> RouteError {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::TimedOut => RouteError::ConnectTimeout,
                _ => RouteError::ConnectionRefused,
            };
        }
        cause = e.source();
    }
    RouteError::ConnectionRefused
}

/// The Host header (or the authority of an absolute-form target), lowercase, without port or
/// trailing dot; empty when there is none.
fn request_host<B>(req: &Request<B>) -> String {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or("");
    normalise_host(raw)
}

/// A Host value lowercase, without port or trailing dot.
fn normalise_host(raw: &str) -> String {
    let mut host = String::new();
    push_normalised_host(raw, &mut host);
    host
}

/// `normalise_host`, appended to `out`.
fn push_normalised_host(raw: &str, out: &mut String) {
    let raw = raw.trim();
    let without_port = if raw.starts_with('[') {
        raw.split_inclusive(']').next().unwrap_or(raw)
    } else {
        match raw.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => raw,
        }
    };
    let start = out.len();
    out.push_str(without_port.trim_end_matches('.'));
    out[start..].make_ascii_lowercase();
}

/// A header value as text, as `HeaderValue::to_str` allows it: visible ASCII, spaces and tabs.
fn header_str(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| (b' '..0x7f).contains(&b) || b == b'\t')
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// A DNS name (letters, digits, `-`, `_`, dot-separated labels of 1-63 bytes, 253 at most) or
/// an IP address literal, as `request_host` leaves it (lowercase, without port).
fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    // One pass: every label 1-63 bytes of the allowed ones.
    let mut label = 0usize;
    for b in host.bytes() {
        if b == b'.' {
            if label == 0 {
                return false;
            }
            label = 0;
        } else if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            label += 1;
            if label > 63 {
                return false;
            }
        } else {
            return false;
        }
    }
    label > 0
}

/// The client's X-Forwarded-For chain (its header values in order) with the client's own
/// address appended.
#[cfg(test)]
fn forwarded_for<'a>(chain: impl Iterator<Item = &'a str>, client: &str) -> String {
    let mut joined = String::new();
    push_forwarded_for(chain, client, &mut joined);
    joined
}

/// `forwarded_for`, appended to `out`.
fn push_forwarded_for<'a>(chain: impl Iterator<Item = &'a str>, client: &str, out: &mut String) {
    for value in chain {
        let value = value.trim();
        if !value.is_empty() {
            out.push_str(value);
            out.push_str(", ");
        }
    }
    out.push_str(client);
}

/// `ip.to_string()`, without the formatting machinery for IPv4 (a few per cent of a request).
pub(crate) fn ip_string(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut out = Vec::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        push_decimal(&mut out, octet);
    }
    String::from_utf8(out).unwrap_or_else(|_| ip.to_string())
}

fn check_limits(parts: &Parts) -> Result<(), String> {
    if parts.headers.len() > MAX_HEADERS {
        return Err(format!("More than {MAX_HEADERS} headers."));
    }
    let uri = &parts.uri;
    let target_len = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    // METHOD SP TARGET SP HTTP/1.1
    if parts.method.as_str().len() + target_len + 10 > MAX_LINE_BYTES {
        return Err(format!("Request line longer than {MAX_LINE_BYTES} bytes."));
    }
    for (name, value) in &parts.headers {
        if name.as_str().len() + 2 + value.len() > MAX_LINE_BYTES {
            return Err(format!("Header {name} longer than {MAX_LINE_BYTES} bytes."));
        }
    }
    Ok(())
}

/// `n`'s decimal digits (and sign), for request and response heads.
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Removes headers that describe one connection rather than the message (RFC 9110 7.6.1),
/// including any the Connection header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
    ] {
        headers.remove(name);
    }
}

fn append_via(headers: &mut HeaderMap) {
    let prior: Vec<&str> = headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if prior.is_empty() {
        HeaderValue::from_static(VIA)
    } else {
        HeaderValue::from_str(&format!("{}, {VIA}", prior.join(", ")))
            .unwrap_or(HeaderValue::from_static(VIA))
    };
    headers.insert(header::VIA, value);
}

fn not_found(host: &str) -> Response<ResponseBody> {
    let shown: String = host.chars().take(255).collect();
    let text = if shown.is_empty() {
        "404 Not Found\n\nThe request has no Host header.\n".to_string()
    } else {
        format!("404 Not Found\n\nNo app is served at {shown}.\n")
    };
    tracing::debug!(host = %shown, "no app for host");
    text_page(StatusCode::NOT_FOUND, text)
}

fn error_page(why: RouteError, request_id: &str) -> Response<ResponseBody> {
    let status = StatusCode::from_u16(why.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    text_page(
        status,
        format!(
            "Application error\n\n{} {}. Request ID: {request_id}\n",
            why.code(),
            why
        ),
    )
}

fn text_page(status: StatusCode, text: String) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::page(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    headers.insert(header::VIA, HeaderValue::from_static(VIA));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(host: Option<&str>, uri: &str) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        if let Some(host) = host {
            builder = builder.header(header::HOST, host);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn host_is_normalised() {
        assert_eq!(
            request_host(&get(Some("Shop.LocalHost:8080"), "/")),
            "shop.localhost"
        );
        assert_eq!(
            request_host(&get(Some("shop.localhost."), "/")),
            "shop.localhost"
        );
        assert_eq!(request_host(&get(Some("[::1]:80"), "/")), "[::1]");
        assert_eq!(
            request_host(&get(None, "http://a.localhost:9/x")),
            "a.localhost"
        );
        assert_eq!(request_host(&get(None, "/")), "");
        for ok in [
            "shop.localhost",
            "www.example.com",
            "127.0.0.1",
            "[::1]",
            "a_b.c",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "",
            "x status=500 dyno=web.9.shop.test",
            "a\"b.test",
            "a..b",
            "[zz]",
            "é.test",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::ACCEPT));
    }

    #[test]
    fn forwarded_for_appends_and_via_appends() {
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        headers.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2"));
        let chain = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().unwrap());
        let fwd = forwarded_for(chain, "3.3.3.3");
        assert_eq!(fwd, "1.1.1.1, 2.2.2.2, 3.3.3.3");
        assert_eq!(forwarded_for([" ", ""].into_iter(), "3.3.3.3"), "3.3.3.3");

        headers.insert(header::VIA, HeaderValue::from_static("1.0 edge"));
        append_via(&mut headers);
        assert_eq!(headers[header::VIA], "1.0 edge, 1.1 dyno-router");
    }

    #[test]
    fn encoded_request_heads_match_the_rewritten_headers() {
        let proxy = Proxy::new(
            RouteTable::new(),
            RouterConfig::default(),
            LogSink::new(None),
            8080,
        );
        let conn = ClientConn {
            peer: SocketAddr::from(([3, 3, 3, 3], 5000)),
            tls: true,
        };
        for with_host in [true, false] {
            let mut builder = Request::builder()
                .method(Method::DELETE)
                .uri("http://shop.localhost/a/b?c=d")
                .header("connection", "keep-alive, X-Secret")
                .header("connection", "host")
                .header("keep-alive", "timeout=5")
                .header("x-secret", "1")
                .header("te", "trailers")
                .header("x-forwarded-for", "1.1.1.1")
                .header("x-forwarded-proto", "gopher")
                .header("x-request-id", "client-chosen")
                .header("via", "1.0 edge")
                .header("via", "1.1 other")
                .header("accept", "*/*")
                .header("x-multi", "1")
                .header("x-multi", "2");
            if with_host {
                builder = builder.header("host", "shop.localhost:80");
            }
            let (mut parts, ()) = builder.body(()).unwrap().into_parts();
            let info = RequestInfo::new(
                [
                    "shop.localhost",
                    "shop",
                    "DELETE",
                    "/a/b?c=d",
                    "abc-123",
                    "1.1.1.1, 3.3.3.3",
                ],
                "https",
            );
            let head = proxy.encode_request_head(&parts, &info, conn, 1_700_000_000_123);
            proxy.rewrite_request_headers(&mut parts.headers, &info, conn, 1_700_000_000_123);

            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Request::new(&mut slots);
            assert!(parsed.parse(&head).unwrap().is_complete());
            assert_eq!(parsed.method, Some("DELETE"));
            assert_eq!(parsed.path, Some("/a/b?c=d"));
            assert_eq!(parsed.version, Some(1));
            let mut encoded: Vec<(String, String)> = parsed
                .headers
                .iter()
                .map(|h| {
                    let value = String::from_utf8(h.value.to_vec()).unwrap();
                    (h.name.to_string(), value)
                })
                .collect();
            let mut rewritten: Vec<(String, String)> = parts
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            encoded.sort();
            rewritten.sort();
            assert_eq!(encoded, rewritten);
        }
        for ip in ["0.0.0.0", "255.255.255.255", "10.0.100.9", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_string(ip), ip.to_string());
        }
        let mut out = Vec::new();
        push_decimal(&mut out, -1_700_000_000_123_i64);
        assert_eq!(out, b"-1700000000123");
    }

    #[test]
    fn connect_errors_are_classified() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            classify_connect_error(&refused),
            RouteError::ConnectionRefused
        );
        let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        assert_eq!(classify_connect_error(&timeout), RouteError::ConnectTimeout);
        assert_eq!(RouteError::Maintenance.code(), "H80");
        assert_eq!(RouteError::NoWebDynos.to_string(), "No web dynos running");
    }
}
