//! Connections to dynos: plain TCP, HTTP/1.1 with keep-alive, pooled per router worker.
//!
//! A request takes its worker's most recently used idle connection to the chosen dyno, or
//! connects when there is none; the connection goes back to the pool once its response has been
//! read to the end. This is what hyper-util's legacy client did, cut down to what the router
//! needs: that client hashed a pool key and locked its pool twice per request, stored connection
//! info in every request's extensions, and spawned a task per request to hand the connection
//! back, which together cost about a tenth of the router's CPU.
//!
//! Requests without a body are written and read by the router itself ([`h1`]) on bare streams;
//! requests with a body and upgrades go through hyper's client, on connections pooled apart
//! from the bare ones.

use crate::body::{BoxError, ForwardBody, Upstream};
use crate::h1::{self, RawRequest};
use bytes::BytesMut;
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

type Sender = http1::SendRequest<ForwardBody>;

/// One worker's idle connections to dynos, by dyno address.
#[derive(Debug)]
pub(crate) struct Pool {
    idle: Mutex<Idles>,
    connect_timeout: Duration,
    /// Idle connections are closed after this long.
    idle_timeout: Duration,
}

/// Keyed by dyno addresses the coordinator chose: foldhash is safe and cheaper than SipHash.
type AddrMap<V> = HashMap<SocketAddr, V, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct Idles {
    /// Driven by hyper's client (requests with a body, upgrades).
    hyper: AddrMap<Vec<Idle>>,
    /// Bare streams for [`h1`] (requests without a body).
    raw: AddrMap<Vec<RawIdle>>,
}

#[derive(Debug)]
struct Idle {
    sender: Sender,
    /// `clock::monotonic_ms` when it went idle.
    since_ms: u64,
}

#[derive(Debug)]
struct RawIdle {
    stream: TcpStream,
    /// Its read buffer, kept so that the next response on it is read without an allocation.
    buf: BytesMut,
    /// `clock::monotonic_ms` when it went idle.
    since_ms: u64,
}

/// A request on its way to a dyno.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// With a body or an upgrade: through hyper's client.
    Hyper(Box<Request<ForwardBody>>),
    /// Without a body: written by [`h1`].
    Raw(RawRequest),
}

/// A connection in use by one request; [`Pooled::release`] hands it back for the next.
#[derive(Debug)]
pub(crate) struct Pooled {
    pool: Arc<Pool>,
    addr: SocketAddr,
    sender: Sender,
}

impl Pooled {
    /// The response was read to the end: the connection may carry another request.
    pub(crate) fn release(self) {
        self.pool.put(self.addr, self.sender);
    }
}

/// Why a request got no response head.
#[derive(Debug)]
pub(crate) enum SendError {
    /// Connecting failed (refused or timed out); the request was not sent and comes back.
    Connect(std::io::Error, Box<Outgoing>),
    /// The dyno (or the client's request body) failed once the request was on its way.
    Failed(BoxError),
}

impl Pool {
    pub(crate) fn new(connect_timeout: Duration, idle_timeout: Duration) -> Self {
        Pool {
            idle: Mutex::new(Idles::default()),
            connect_timeout,
            idle_timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Idles> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `request` (origin-form URI, with a Host header) to `addr` over an idle connection,
    /// or a new one. `connect_ms` is set to how long connecting took (left alone when an idle
    /// connection served).
    /// The connection comes back with hyper's responses; [`h1`]'s response bodies hand theirs
    /// back themselves.
    pub(crate) async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        request: Outgoing,
        connect_ms: &mut u128,
    ) -> Result<(Response<Upstream>, Option<Pooled>), SendError> {
        match request {
            Outgoing::Raw(request) => {
                let response = self.send_raw(addr, request, connect_ms).await?;
                Ok((response.map(Upstream::Raw), None))
            }
            Outgoing::Hyper(request) => {
                // Boxed: the plain path's future would otherwise be as large as hyper's.
                let sent = Box::pin(self.send_hyper(addr, *request, connect_ms));
                let (response, pooled) = sent.await?;
                Ok((response.map(Upstream::Hyper), Some(pooled)))
            }
        }
    }

    async fn send_raw(
        self: &Arc<Self>,
        addr: SocketAddr,
        request: RawRequest,
        connect_ms: &mut u128,
    ) -> Result<Response<h1::RawBody>, SendError> {
        let (stream, buf) = match self.take_raw(addr) {
            Some(idle) => idle,
            None => {
                let started = Instant::now();
                let connected = connect(addr, self.connect_timeout).await;
                *connect_ms = started.elapsed().as_millis();
                match connected {
                    Ok(stream) => (stream, BytesMut::new()),
                    Err(err) => {
                        return Err(SendError::Connect(err, Box::new(Outgoing::Raw(request))));
                    }
                }
            }
        };
        h1::exchange(stream, buf, &request, self, addr)
            .await
            .map_err(|err| SendError::Failed(Box::new(err)))
    }

    async fn send_hyper(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut request: Request<ForwardBody>,
        connect_ms: &mut u128,
    ) -> Result<(Response<hyper::body::Incoming>, Pooled), SendError> {
        while let Some(mut sender) = self.take(addr) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, self.pooled(addr, sender))),
                Err(mut err) => match err.take_message() {
                    // The dyno closed the connection before the request went out: another.
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Failed(err.into_error().into())),
                },
            }
        }
        let started = Instant::now();
        let connected = connect(addr, self.connect_timeout).await;
        *connect_ms = started.elapsed().as_millis();
        let stream = match connected {
            Ok(stream) => stream,
            Err(err) => {
                return Err(SendError::Connect(
                    err,
                    Box::new(Outgoing::Hyper(Box::new(request))),
                ));
            }
        };
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| SendError::Failed(err.into()))?;
        tokio::spawn(async move {
            if let Err(err) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %err, "dyno connection ended with an error");
            }
        });
        match sender.try_send_request(request).await {
            Ok(response) => Ok((response, self.pooled(addr, sender))),
            Err(err) => Err(SendError::Failed(err.into_error().into())),
        }
    }

    fn pooled(self: &Arc<Self>, addr: SocketAddr, sender: Sender) -> Pooled {
        Pooled {
            pool: Arc::clone(self),
            addr,
            sender,
        }
    }

    /// Whether a connection idle since `since_ms` has been idle too long at `now`.
    fn expired(&self, since_ms: u64, now: u64) -> bool {
        u128::from(now.saturating_sub(since_ms)) >= self.idle_timeout.as_millis()
    }

    /// The most recently used open idle connection to `addr`.
    fn take(&self, addr: SocketAddr) -> Option<Sender> {
        let now = crate::clock::monotonic_ms();
        let mut idle = self.lock();
        let list = idle.hyper.get_mut(&addr)?;
        while let Some(entry) = list.pop() {
            if self.expired(entry.since_ms, now) {
                // The rest are older still.
                list.clear();
                return None;
            }
            if !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    fn put(&self, addr: SocketAddr, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let idle = Idle {
            sender,
            since_ms: crate::clock::monotonic_ms(),
        };
        self.lock().hyper.entry(addr).or_default().push(idle);
    }

    /// The most recently used idle stream to `addr` that nothing arrived on, with its buffer.
    fn take_raw(&self, addr: SocketAddr) -> Option<(TcpStream, BytesMut)> {
        let now = crate::clock::monotonic_ms();
        let mut idle = self.lock();
        let list = idle.raw.get_mut(&addr)?;
        while let Some(entry) = list.pop() {
            if self.expired(entry.since_ms, now) {
                list.clear();
                return None;
            }
            if h1::idle_usable(&entry.stream) {
                return Some((entry.stream, entry.buf));
            }
        }
        None
    }

    /// A stream whose response was read to the end, for the next request.
    pub(crate) fn put_raw(&self, addr: SocketAddr, stream: TcpStream, buf: BytesMut) {
        let idle = RawIdle {
            stream,
            buf,
            since_ms: crate::clock::monotonic_ms(),
        };
        self.lock().raw.entry(addr).or_default().push(idle);
    }

    /// Closes connections idle for the idle timeout and forgets closed ones.
    pub(crate) fn reap(&self) {
        let mut expired: Vec<Idle> = Vec::new();
        let mut expired_raw: Vec<RawIdle> = Vec::new();
        let now = crate::clock::monotonic_ms();
        {
            let mut idle = self.lock();
            idle.hyper.retain(|_, list| {
                list.retain(|e| !e.sender.is_closed());
                let fresh = list.partition_point(|e| self.expired(e.since_ms, now));
                expired.extend(list.drain(..fresh));
                !list.is_empty()
            });
            idle.raw.retain(|_, list| {
                list.retain(|e| h1::idle_usable(&e.stream));
                let fresh = list.partition_point(|e| self.expired(e.since_ms, now));
                expired_raw.extend(list.drain(..fresh));
                !list.is_empty()
            });
        }
        // Closed outside the lock.
        drop(expired);
        drop(expired_raw);
    }
}

/// A TCP connection to a dyno, with Nagle off; `TimedOut` after `timeout`.
async fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(connected) => connected?,
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connect to {addr} timed out after {timeout:?}"),
            ));
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}
