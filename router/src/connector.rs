//! The client's connector: plain TCP that reports how long the connect took.

use hyper::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

tokio::task_local! {
    /// Set around one proxied request; the connector stores its connect time (ms) there. A
    /// request served on a pooled connection never connects and leaves it at 0.
    pub(crate) static CONNECT_MS: Arc<AtomicU64>;
}

#[derive(Debug, Clone)]
pub(crate) struct TimedConnector {
    inner: HttpConnector,
}

impl TimedConnector {
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        let mut inner = HttpConnector::new();
        inner.set_connect_timeout(Some(connect_timeout));
        inner.set_nodelay(true);
        TimedConnector { inner }
    }
}

impl tower_service::Service<Uri> for TimedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        // The client calls this while polling the request future, inside the task-local scope.
        let report = CONNECT_MS.try_with(Arc::clone).ok();
        let connecting = self.inner.call(dst);
        Box::pin(async move {
            let started = Instant::now();
            let result = connecting.await;
            if let Some(report) = report {
                report.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
            result.map_err(Into::into)
        })
    }
}
