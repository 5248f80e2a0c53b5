//! One task per drain: connect when there is something to send, deliver batches until the
//! connection fails, then back off (doubling up to a cap) and try again. A batch that was not
//! confirmed delivered is kept and sent again on the next connection.

use super::frame;
use super::url::base64;
use super::{Drain, Shared};
use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Giving up on a connect or TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Giving up on one write or one HTTP exchange.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Most messages in one syslog write or one HTTP POST (logplex sends at most a few hundred).
pub const BATCH_MSGS: usize = 500;
pub const BATCH_BYTES: usize = 256 * 1024;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why a connection's delivery loop ended.
enum Ended {
    /// The receiver closed an idle connection: reconnect when there is something to send.
    Closed,
    Failed(String),
}

static FRAME_IDS: AtomicU64 = AtomicU64::new(1);

impl Drain {
    /// The next batch: the L10 warning first when lines were dropped.
    fn take_batch(&self) -> Vec<Vec<u8>> {
        let batch = self.queue().take(BATCH_MSGS, BATCH_BYTES);
        let mut msgs = Vec::with_capacity(batch.msgs.len() + 1);
        if let Some((dropped, since)) = batch.overflow {
            let now = dyno_shared::time::now_micros();
            msgs.push(frame::overflow_message(
                &self.spec.token,
                dropped,
                since,
                now,
            ));
        }
        msgs.extend(batch.msgs);
        msgs
    }
}

pub(super) async fn run(drain: Arc<Drain>, shared: Arc<Shared>) {
    let spec = &drain.spec;
    let options = &shared.options;
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut backoff = options.backoff_initial;
    let mut failing = false;
    loop {
        if pending.is_empty() {
            pending = drain.take_batch();
            if pending.is_empty() {
                drain.wake.notified().await;
                continue;
            }
        }
        let mut delivered = false;
        let ended = match connect(&spec.url, &shared).await {
            Ok(io) if spec.url.scheme.is_http() => {
                deliver_http(io, &drain, &mut pending, &mut delivered).await
            }
            Ok(io) => deliver_syslog(io, &drain, &mut pending, &mut delivered).await,
            Err(e) => Ended::Failed(e),
        };
        if delivered {
            backoff = options.backoff_initial;
            if failing {
                tracing::info!(app = spec.app, drain = spec.id, url = %spec.url, "log drain delivering again");
                failing = false;
            }
        }
        match ended {
            Ended::Closed => {}
            Ended::Failed(error) => {
                if !failing {
                    tracing::warn!(app = spec.app, drain = spec.id, url = %spec.url, error, "log drain failed; retrying with backoff");
                    failing = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(options.backoff_max);
            }
        }
    }
}

async fn connect(url: &super::DrainUrl, shared: &Shared) -> Result<Box<dyn Io>, String> {
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((url.host.as_str(), url.port)),
    )
    .await
    .map_err(|_| format!("connecting to {}:{} timed out", url.host, url.port))?
    .map_err(|e| format!("failed to connect to {}:{}: {e}", url.host, url.port))?;
    let _ = tcp.set_nodelay(true);
    if !url.scheme.tls() {
        return Ok(Box::new(tcp));
    }
    let config = shared.tls_config().await?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(url.host.clone())
        .map_err(|e| format!("invalid TLS server name {:?}: {e}", url.host))?;
    let tls = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| format!("TLS handshake with {} timed out", url.host))?
    .map_err(|e| format!("TLS handshake with {} failed: {e}", url.host))?;
    Ok(Box::new(tls))
}

/// Octet-counted frames down one TCP (or TLS) connection.
async fn deliver_syslog(
    io: Box<dyn Io>,
    drain: &Drain,
    pending: &mut Vec<Vec<u8>>,
    delivered: &mut bool,
) -> Ended {
    let (mut rd, mut wr) = tokio::io::split(io);
    // Receivers send nothing; reading only notices when they hang up.
    let mut ignored = [0u8; 512];
    loop {
        if pending.is_empty() {
            *pending = drain.take_batch();
        }
        if pending.is_empty() {
            tokio::select! {
                _ = drain.wake.notified() => continue,
                r = rd.read(&mut ignored) => match r {
                    Ok(0) => return Ended::Closed,
                    Ok(_) => continue,
                    Err(e) => return Ended::Failed(format!("connection failed: {e}")),
                },
            }
        }
        // A receiver that hung up since the last write would silently swallow this one.
        match rd.read(&mut ignored).now_or_never() {
            Some(Ok(0)) => return Ended::Closed,
            Some(Err(e)) => return Ended::Failed(format!("connection failed: {e}")),
            Some(Ok(_)) | None => {}
        }
        let bytes = frame::frames(pending);
        let write = async {
            wr.write_all(&bytes).await?;
            wr.flush().await
        };
        match tokio::time::timeout(SEND_TIMEOUT, write).await {
            Ok(Ok(())) => {
                pending.clear();
                *delivered = true;
            }
            Ok(Err(e)) => return Ended::Failed(format!("write failed: {e}")),
            Err(_) => return Ended::Failed("write timed out".into()),
        }
    }
}

/// Batches POSTed like Heroku's HTTPS drains, over one keep-alive connection.
async fn deliver_http(
    io: Box<dyn Io>,
    drain: &Drain,
    pending: &mut Vec<Vec<u8>>,
    delivered: &mut bool,
) -> Ended {
    let url = &drain.spec.url;
    let io = hyper_util::rt::TokioIo::new(io);
    let (mut client, conn) = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(io),
    )
    .await
    {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Ended::Failed(format!("HTTP handshake failed: {e}")),
        Err(_) => return Ended::Failed("HTTP handshake timed out".into()),
    };
    let mut conn = tokio::spawn(conn);
    let _abort = AbortOnDrop(conn.abort_handle());
    let auth = url
        .userinfo
        .as_ref()
        .map(|u| format!("Basic {}", base64(u.as_bytes())));
    loop {
        if pending.is_empty() {
            *pending = drain.take_batch();
        }
        if pending.is_empty() {
            tokio::select! {
                _ = drain.wake.notified() => continue,
                _ = &mut conn => return Ended::Closed,
            }
        }
        let body = frame::frames(pending);
        let mut req = hyper::Request::post(url.target.as_str())
            .header(hyper::header::HOST, url.host_header())
            .header(hyper::header::CONTENT_TYPE, "application/logplex-1")
            .header(hyper::header::CONTENT_LENGTH, body.len())
            .header(
                hyper::header::USER_AGENT,
                concat!("dyno-coordinator/", env!("CARGO_PKG_VERSION")),
            )
            .header("Logplex-Msg-Count", pending.len())
            .header("Logplex-Drain-Token", drain.spec.token.as_str())
            .header(
                "Logplex-Frame-Id",
                format!(
                    "{}-{}",
                    drain.spec.id,
                    FRAME_IDS.fetch_add(1, Ordering::Relaxed)
                ),
            );
        if let Some(a) = &auth {
            req = req.header(hyper::header::AUTHORIZATION, a.as_str());
        }
        let req = match req.body(Full::new(Bytes::from(body))) {
            Ok(r) => r,
            Err(e) => return Ended::Failed(format!("failed to build the request: {e}")),
        };
        let exchange = async {
            client.ready().await?;
            let resp = client.send_request(req).await?;
            let status = resp.status();
            // Read the answer so the connection can carry the next batch.
            resp.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        };
        let status = match tokio::time::timeout(SEND_TIMEOUT, exchange).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Ended::Failed(format!("request failed: {e}")),
            Err(_) => return Ended::Failed("request timed out".into()),
        };
        if status.is_success() {
            pending.clear();
            *delivered = true;
        } else if status.is_client_error()
            && status != hyper::StatusCode::REQUEST_TIMEOUT
            && status != hyper::StatusCode::TOO_MANY_REQUESTS
        {
            // Sending the same batch again would be refused again.
            tracing::warn!(drain = drain.spec.id, %status, lines = pending.len(), "log drain refused a batch; dropping it");
            pending.clear();
        } else {
            return Ended::Failed(format!("the receiver answered {status}"));
        }
        // The receiver closed the connection after answering (`Connection: close`).
        if conn.is_finished() {
            return Ended::Closed;
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
