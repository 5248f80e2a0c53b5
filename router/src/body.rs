//! Streaming bodies: the request body sent to a dyno and the response body sent to the client.

use crate::log::{LogSink, Outcome, RequestInfo, format_line};
use crate::table::InFlight;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

/// The client's request body, shared by every attempt of one request. A failed connect never
/// polls the body, so the next attempt can still send all of it; `started` tells whether that
/// is still true.
#[derive(Debug, Clone)]
pub(crate) struct ForwardBody {
    incoming: Arc<Mutex<Incoming>>,
    started: Arc<AtomicBool>,
}

impl ForwardBody {
    pub(crate) fn new(incoming: Incoming) -> Self {
        ForwardBody {
            incoming: Arc::new(Mutex::new(incoming)),
            started: Arc::new(AtomicBool::new(false)),
        }
    }

    /// True once any attempt began reading the body: a retry would send it incomplete.
    pub(crate) fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, Incoming> {
        self.incoming.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.started.store(true, Ordering::Release);
        Pin::new(&mut *self.lock()).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.lock().is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.lock().size_hint()
    }
}

/// Logs a proxied request and releases its backend once the response is done or abandoned.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) info: RequestInfo,
    pub(crate) sink: LogSink,
    pub(crate) dyno: String,
    pub(crate) status: u16,
    pub(crate) connect_ms: u128,
    /// When the request was sent to the dyno.
    pub(crate) sent_at: Instant,
    pub(crate) bytes: u64,
    pub(crate) _in_flight: InFlight,
}

impl Drop for Completion {
    fn drop(&mut self) {
        let service_ms = self
            .sent_at
            .elapsed()
            .as_millis()
            .saturating_sub(self.connect_ms);
        let outcome = Outcome {
            error: None,
            dyno: &self.dyno,
            connect_ms: self.connect_ms,
            service_ms,
            status: self.status,
            bytes: self.bytes,
        };
        self.sink
            .emit(&self.info.app, format_line(&self.info, &outcome));
    }
}

#[derive(Debug)]
enum Content {
    /// A page the router wrote itself; `None` once sent.
    Page(Option<Bytes>),
    Upstream(Incoming),
}

/// What the router answers with: its own page, or a dyno's body streamed through.
#[derive(Debug)]
pub(crate) struct ResponseBody {
    content: Content,
    completion: Option<Completion>,
}

impl ResponseBody {
    pub(crate) fn page(text: String) -> Self {
        ResponseBody {
            content: Content::Page(Some(Bytes::from(text))),
            completion: None,
        }
    }

    pub(crate) fn upstream(body: Incoming, completion: Completion) -> Self {
        ResponseBody {
            content: Content::Upstream(body),
            completion: Some(completion),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        match &mut this.content {
            Content::Page(page) => Poll::Ready(page.take().map(|b| Ok(Frame::data(b)))),
            Content::Upstream(body) => {
                let polled = Pin::new(body).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let (Some(data), Some(done)) = (frame.data_ref(), &mut this.completion) {
                            done.bytes += data.len() as u64;
                        }
                    }
                    // The end, or the dyno broke off: log now rather than when hyper drops us.
                    Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.completion = None,
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.content {
            Content::Page(page) => page.is_none(),
            Content::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.content {
            Content::Page(page) => {
                SizeHint::with_exact(page.as_ref().map_or(0, |b| b.len() as u64))
            }
            Content::Upstream(body) => body.size_hint(),
        }
    }
}
