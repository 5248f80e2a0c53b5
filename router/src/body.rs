//! Streaming bodies: the request body sent to a dyno and the response body sent to the client.

use crate::connector::Pooled;
use crate::h1::RawBody;
use crate::log::{LogSink, Outcome, RequestInfo, format_line};
use crate::table::InFlight;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client's request body on its way to a dyno. It only goes out once a connection is up,
/// and comes back with the request when connecting fails, so any request may be retried
/// elsewhere after a failed connect.
#[derive(Debug)]
pub(crate) struct ForwardBody {
    incoming: Incoming,
    /// Set when reading the client's body failed; only made for requests with a body.
    client_failed: Option<Arc<AtomicBool>>,
}

impl ForwardBody {
    pub(crate) fn new(incoming: Incoming) -> Self {
        let client_failed = (!incoming.is_end_stream()).then(|| Arc::new(AtomicBool::new(false)));
        ForwardBody {
            incoming,
            client_failed,
        }
    }

    /// Tells afterwards whether reading the client's body failed (the client went away
    /// mid-upload).
    pub(crate) fn failure(&self) -> ClientFailure {
        ClientFailure(self.client_failed.clone())
    }
}

/// See [`ForwardBody::failure`].
#[derive(Debug)]
pub(crate) struct ClientFailure(Option<Arc<AtomicBool>>);

impl ClientFailure {
    /// For a request without a body: reading it cannot fail.
    pub(crate) fn none() -> Self {
        ClientFailure(None)
    }

    pub(crate) fn failed(&self) -> bool {
        self.0.as_ref().is_some_and(|f| f.load(Ordering::Acquire))
    }
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.incoming).poll_frame(cx);
        if let (Poll::Ready(Some(Err(_))), Some(failed)) = (&polled, &self.client_failed) {
            failed.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// How a proxied response ended, for its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Complete,
    /// The dyno broke off mid-response (H18).
    ServerInterrupted,
    /// No byte from the dyno for the idle timeout (H15).
    Idle,
    /// The client went away before the response was done (H27, 499).
    ClientInterrupted,
}

/// Logs a proxied request, counts it and releases its backend once the response is done or
/// abandoned.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) info: Arc<RequestInfo>,
    pub(crate) sink: LogSink,
    pub(crate) status: u16,
    pub(crate) connect_ms: u128,
    /// When the request was sent to the dyno.
    pub(crate) sent_at: Instant,
    pub(crate) bytes: u64,
    pub(crate) end: End,
    pub(crate) in_flight: InFlight,
    /// The dyno connection (hyper's client), back to the pool if the response ends complete.
    pub(crate) conn: Option<Pooled>,
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.end == End::Complete
        {
            conn.release();
        }
        let now = Instant::now();
        let service = now.saturating_duration_since(self.sent_at);
        let service_ms = service.as_millis().saturating_sub(self.connect_ms);
        let slot = self.in_flight.slot();
        let app = &self.in_flight.app().metrics;
        let error = match self.end {
            End::Complete => None,
            End::ServerInterrupted => Some(("H18", "Server Request Interrupted", 503)),
            End::Idle => Some(("H15", "Idle connection", 503)),
            End::ClientInterrupted => Some(("H27", "Client Request Interrupted", 499)),
        };
        let status = error.map_or(self.status, |(_, _, status)| status);
        if let Some((code, _, _)) = error {
            app.error(code);
        }
        slot.metrics.statuses.count(status);
        slot.metrics.service.observe(service);
        let outcome = Outcome {
            error: error.map(|(code, desc, _)| (code, desc)),
            dyno: &slot.dyno,
            connect_ms: self.connect_ms,
            service_ms,
            status,
            bytes: self.bytes,
        };
        let at = self.info.wall_micros(now);
        self.sink
            .emit(self.info.app(), format_line(&self.info, &outcome), at);
    }
}

/// A dyno's response body: through hyper's client, or read by [`crate::h1`].
#[derive(Debug)]
pub(crate) enum Upstream {
    Hyper(Incoming),
    Raw(RawBody),
}

impl Body for Upstream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Upstream::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Upstream::Raw(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Upstream::Hyper(body) => body.is_end_stream(),
            Upstream::Raw(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Upstream::Hyper(body) => body.size_hint(),
            Upstream::Raw(body) => body.size_hint(),
        }
    }
}

#[derive(Debug)]
enum Content {
    /// A page the router wrote itself; `None` once sent.
    Page(Option<Bytes>),
    Upstream(Upstream),
}

/// What the router answers with: its own page, or a dyno's body streamed through.
/// Boxed: a response moves through several layers by value, and each move copies it.
pub(crate) struct ResponseBody(Box<BodyState>);

struct BodyState {
    content: Content,
    /// A chunk read ahead (see `Proxy::prefetch`), sent first.
    first: Option<Frame<Bytes>>,
    completion: Option<Completion>,
    idle_timeout: Duration,
    /// The H15 timer, made the first time the dyno keeps the body waiting and moved on after:
    /// a streamed body waits between most of its chunks.
    idle: Option<Pin<Box<Sleep>>>,
    /// `idle` is due for the current wait (not an earlier one).
    idle_armed: bool,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("content", &self.0.content)
            .field("completion", &self.0.completion)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the dyno sent nothing for {0:?}")]
struct IdleTimeout(Duration);

impl ResponseBody {
    pub(crate) fn page(text: String) -> Self {
        ResponseBody(Box::new(BodyState {
            content: Content::Page(Some(Bytes::from(text))),
            first: None,
            completion: None,
            idle_timeout: Duration::MAX,
            idle: None,
            idle_armed: false,
        }))
    }

    /// No body at all (a 101 answer).
    pub(crate) fn empty() -> Self {
        ResponseBody(Box::new(BodyState {
            content: Content::Page(None),
            first: None,
            completion: None,
            idle_timeout: Duration::MAX,
            idle: None,
            idle_armed: false,
        }))
    }

    pub(crate) fn upstream(
        body: Upstream,
        first: Option<Frame<Bytes>>,
        completion: Completion,
        idle_timeout: Duration,
    ) -> Self {
        ResponseBody(Box::new(BodyState {
            content: Content::Upstream(body),
            first,
            completion: Some(completion),
            idle_timeout,
            idle: None,
            idle_armed: false,
        }))
    }

    /// A dyno's header lines, when the request asked for them as bytes
    /// ([`crate::h1::RawRequest::passing_head`]).
    pub(crate) fn take_head_lines(&mut self) -> Option<crate::h1::HeadLines> {
        match &mut self.0.content {
            Content::Upstream(Upstream::Raw(body)) => body.take_head_lines(),
            _ => None,
        }
    }
}

impl BodyState {
    fn finish(&mut self, end: End) {
        if let Some(mut done) = self.completion.take() {
            done.end = end;
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self.get_mut().0;
        let body = match &mut this.content {
            Content::Page(page) => return Poll::Ready(page.take().map(|b| Ok(Frame::data(b)))),
            Content::Upstream(body) => body,
        };
        let polled = match this.first.take() {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None => Pin::new(&mut *body).poll_frame(cx),
        };
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.idle_armed = false;
                if let (Some(data), Some(done)) = (frame.data_ref(), &mut this.completion) {
                    done.bytes += data.len() as u64;
                }
                if body.is_end_stream() {
                    this.finish(End::Complete);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            // The end: log now rather than when hyper drops us.
            Poll::Ready(None) => {
                this.finish(End::Complete);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(err))) => {
                this.finish(End::ServerInterrupted);
                Poll::Ready(Some(Err(err)))
            }
            Poll::Pending => {
                let timeout = this.idle_timeout;
                let fresh = this.idle.is_none();
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if !fresh
                    && !this.idle_armed
                    // Too far to count: it was made that far already.
                    && let Some(at) = tokio::time::Instant::now().checked_add(timeout)
                {
                    idle.as_mut().reset(at);
                }
                this.idle_armed = true;
                if idle.as_mut().poll(cx).is_ready() {
                    this.finish(End::Idle);
                    return Poll::Ready(Some(Err(Box::new(IdleTimeout(timeout)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0.content {
            Content::Page(page) => page.is_none(),
            Content::Upstream(body) => self.0.first.is_none() && body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let this = &*self.0;
        match &this.content {
            Content::Page(page) => {
                SizeHint::with_exact(page.as_ref().map_or(0, |b| b.len() as u64))
            }
            Content::Upstream(body) => {
                let ahead = this
                    .first
                    .as_ref()
                    .and_then(Frame::data_ref)
                    .map_or(0, |d| d.len() as u64);
                let hint = body.size_hint();
                match hint.exact() {
                    Some(rest) => SizeHint::with_exact(rest + ahead),
                    None => {
                        let mut sum = SizeHint::new();
                        sum.set_lower(hint.lower() + ahead);
                        if let Some(upper) = hint.upper() {
                            sum.set_upper(upper + ahead);
                        }
                        sum
                    }
                }
            }
        }
    }
}

impl Drop for BodyState {
    fn drop(&mut self) {
        // Dropped with the response unfinished: the client went away (or hyper knew the body
        // was empty and never polled it).
        let end = match &self.content {
            Content::Upstream(body) if self.first.is_some() || !body.is_end_stream() => {
                End::ClientInterrupted
            }
            _ => End::Complete,
        };
        self.finish(end);
    }
}
