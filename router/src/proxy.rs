//! One request: route by Host, pick a backend, rewrite headers, proxy, retry, or answer an error.

use crate::RouterConfig;
use crate::body::{Completion, ForwardBody, ResponseBody};
use crate::connector::{CONNECT_MS, TimedConnector};
use crate::log::{LogSink, Outcome, RequestInfo, format_line};
use crate::request_id;
use crate::table::{InFlight, RouteTable};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longest request line or header line (name, ": ", value) the router accepts.
pub(crate) const MAX_LINE_BYTES: usize = 8192;
pub(crate) const MAX_HEADERS: usize = 1000;
const VIA: &str = "1.1 dyno-router";
/// Idle keep-alive connections to dynos are closed after this long.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Why the router answered 503 itself; the message is Heroku's `desc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RouteError {
    #[error("Request timeout")]
    RequestTimeout,
    #[error("Connection closed without response")]
    ClosedWithoutResponse,
    #[error("No web dynos running")]
    NoWebDynos,
    #[error("Backend connection timeout")]
    ConnectTimeout,
    #[error("Backend connection refused")]
    ConnectionRefused,
    #[error("Maintenance mode")]
    Maintenance,
}

impl RouteError {
    pub(crate) fn code(self) -> &'static str {
        match self {
            RouteError::RequestTimeout => "H12",
            RouteError::ClosedWithoutResponse => "H13",
            RouteError::NoWebDynos => "H14",
            RouteError::ConnectTimeout => "H19",
            RouteError::ConnectionRefused => "H21",
            RouteError::Maintenance => "H80",
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

pub(crate) struct Proxy {
    table: RouteTable,
    config: RouterConfig,
    /// `.localhost`, lowercase.
    domain_suffix: String,
    client: Client<TimedConnector, ForwardBody>,
    sink: LogSink,
    local_port: u16,
}

impl Proxy {
    pub(crate) fn new(
        table: RouteTable,
        config: RouterConfig,
        sink: LogSink,
        local_port: u16,
    ) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(TimedConnector::new(config.connect_timeout));
        let domain_suffix = format!(".{}", config.domain.trim_matches('.').to_ascii_lowercase());
        Proxy {
            table,
            config,
            domain_suffix,
            client,
            sink,
            local_port,
        }
    }

    pub(crate) async fn handle(
        &self,
        client_addr: SocketAddr,
        req: Request<Incoming>,
    ) -> Response<ResponseBody> {
        let received = Instant::now();
        let received_unix_ms = dyno_shared::time::now_micros() / 1000;
        let host = request_host(&req);
        let Some(app) = self.app_for_host(&host) else {
            return not_found(&host);
        };
        let Some(routes) = self.table.lookup(app) else {
            return not_found(&host);
        };
        let app = app.to_string();
        let (mut parts, body) = req.into_parts();
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|id| request_id::is_valid(id))
            .map_or_else(request_id::generate, str::to_string);
        let info = RequestInfo {
            app,
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_string(),
            fwd: forwarded_for(&parts.headers, client_addr.ip()),
            host,
            request_id,
        };

        if let Err(why) = check_limits(&parts) {
            let outcome = Outcome {
                status: 400,
                ..Outcome::default()
            };
            self.sink.emit(&info.app, format_line(&info, &outcome));
            return text_page(
                StatusCode::BAD_REQUEST,
                format!("400 Bad Request\n\n{why}\n"),
            );
        }
        if parts.method == Method::CONNECT {
            return text_page(
                StatusCode::METHOD_NOT_ALLOWED,
                "405 Method Not Allowed\n\nThe router does not tunnel CONNECT.\n".to_string(),
            );
        }
        if routes.maintenance {
            return self.fail(&info, RouteError::Maintenance, NO_DYNO, received);
        }
        if routes.backends.is_empty() {
            return self.fail(&info, RouteError::NoWebDynos, NO_DYNO, received);
        }

        self.rewrite_request_headers(&mut parts.headers, &info, received_unix_ms);
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/"));
        let body = ForwardBody::new(body);
        let deadline = tokio::time::Instant::from_std(received + self.config.request_timeout);
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut last_failure: Option<(RouteError, String, u128)> = None;

        // A failed connect never reads the body, so any request may move on to another
        // backend; `started` guards the case where it did read it.
        while tried.len() < self.config.max_tries.max(1) && !body.started() {
            let Some(slot) = self.table.pick(&routes, &tried) else {
                break;
            };
            tried.push(slot.addr);
            let in_flight = InFlight::start(Arc::clone(&slot));
            let uri = match Uri::builder()
                .scheme("http")
                .authority(slot.addr.to_string())
                .path_and_query(path.clone())
                .build()
            {
                Ok(uri) => uri,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot build the upstream URI");
                    return text_page(
                        StatusCode::BAD_REQUEST,
                        "400 Bad Request\n\nBad request target.\n".to_string(),
                    );
                }
            };
            let mut upstream = Request::new(body.clone());
            *upstream.method_mut() = parts.method.clone();
            *upstream.uri_mut() = uri;
            *upstream.version_mut() = Version::HTTP_11;
            *upstream.headers_mut() = parts.headers.clone();

            let connect_ms = Arc::new(AtomicU64::new(0));
            let sent_at = Instant::now();
            let attempt = CONNECT_MS.scope(Arc::clone(&connect_ms), self.client.request(upstream));
            let result = tokio::time::timeout_at(deadline, attempt).await;
            let connect = u128::from(connect_ms.load(Ordering::Relaxed));
            match result {
                Ok(Ok(response)) => {
                    let completion = Completion {
                        info,
                        sink: self.sink.clone(),
                        dyno: slot.dyno.clone(),
                        status: response.status().as_u16(),
                        connect_ms: connect,
                        sent_at,
                        bytes: 0,
                        _in_flight: in_flight,
                    };
                    return proxied_response(response, completion);
                }
                Ok(Err(err)) if err.is_connect() => {
                    let why = classify_connect_error(&err);
                    tracing::debug!(dyno = %slot.dyno, addr = %slot.addr, error = ?err, "connect failed");
                    self.table.quarantine(&slot);
                    last_failure = Some((why, slot.dyno.clone(), connect));
                }
                Ok(Err(err)) => {
                    tracing::debug!(dyno = %slot.dyno, error = ?err, "backend failed before a response");
                    let at = Failure {
                        dyno: &slot.dyno,
                        connect_ms: connect,
                    };
                    return self.fail(&info, RouteError::ClosedWithoutResponse, at, received);
                }
                Err(_elapsed) => {
                    let at = Failure {
                        dyno: &slot.dyno,
                        connect_ms: connect,
                    };
                    return self.fail(&info, RouteError::RequestTimeout, at, received);
                }
            }
        }
        match last_failure {
            Some((why, dyno, connect_ms)) => {
                let at = Failure {
                    dyno: &dyno,
                    connect_ms,
                };
                self.fail(&info, why, at, received)
            }
            None => self.fail(&info, RouteError::NoWebDynos, NO_DYNO, received),
        }
    }

    /// `APP.DOMAIN` -> `APP`; deeper subdomains and other hosts belong to no app.
    fn app_for_host<'a>(&self, host: &'a str) -> Option<&'a str> {
        let app = host.strip_suffix(&self.domain_suffix)?;
        (!app.is_empty() && !app.contains('.')).then_some(app)
    }

    fn rewrite_request_headers(
        &self,
        headers: &mut HeaderMap,
        info: &RequestInfo,
        received_unix_ms: i64,
    ) {
        strip_hop_by_hop(headers);
        if !headers.contains_key(header::HOST)
            && let Ok(host) = HeaderValue::from_str(&info.host)
        {
            headers.insert(header::HOST, host);
        }
        if let Ok(fwd) = HeaderValue::from_str(&info.fwd) {
            headers.insert("x-forwarded-for", fwd);
        }
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        headers.insert("x-forwarded-port", HeaderValue::from(self.local_port));
        headers.insert("x-request-start", HeaderValue::from(received_unix_ms));
        if let Ok(id) = HeaderValue::from_str(&info.request_id) {
            headers.insert("x-request-id", id);
        }
        append_via(headers);
    }

    fn fail(
        &self,
        info: &RequestInfo,
        why: RouteError,
        at: Failure<'_>,
        received: Instant,
    ) -> Response<ResponseBody> {
        let desc = why.to_string();
        let outcome = Outcome {
            error: Some((why.code(), &desc)),
            dyno: at.dyno,
            connect_ms: at.connect_ms,
            service_ms: received.elapsed().as_millis().saturating_sub(at.connect_ms),
            status: 503,
            bytes: 0,
        };
        self.sink.emit(&info.app, format_line(info, &outcome));
        text_page(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "Application error\n\n{} {desc}. Request ID: {}\n",
                why.code(),
                info.request_id
            ),
        )
    }
}

fn proxied_response(
    response: Response<Incoming>,
    completion: Completion,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    append_via(&mut parts.headers);
    parts.version = Version::HTTP_11;
    Response::from_parts(parts, ResponseBody::upstream(body, completion))
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
        .unwrap_or("")
        .trim();
    let without_port = if raw.starts_with('[') {
        raw.split_inclusive(']').next().unwrap_or(raw)
    } else {
        match raw.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => raw,
        }
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

/// The client's X-Forwarded-For chain with the client's own address appended.
fn forwarded_for(headers: &HeaderMap, client: IpAddr) -> String {
    let mut chain: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    chain.push(client.to_string());
    chain.join(", ")
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
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
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
        let fwd = forwarded_for(&headers, IpAddr::from([3, 3, 3, 3]));
        assert_eq!(fwd, "1.1.1.1, 2.2.2.2, 3.3.3.3");
        assert_eq!(
            forwarded_for(&HeaderMap::new(), IpAddr::from([3, 3, 3, 3])),
            "3.3.3.3"
        );

        headers.insert(header::VIA, HeaderValue::from_static("1.0 edge"));
        append_via(&mut headers);
        assert_eq!(headers[header::VIA], "1.0 edge, 1.1 dyno-router");
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
