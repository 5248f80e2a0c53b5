//! Log drains: every line of an app forwarded to syslog (TCP or TLS) or HTTP(S) receivers, as
//! Heroku's logplex does. Each drain has a byte-bounded queue, filled by the log hub without
//! waiting, and one sender task that connects, delivers in batches and reconnects with
//! exponential backoff while its receiver is away.

mod frame;
mod queue;
mod sender;
pub mod url;

pub use queue::QUEUE_BYTES;
pub use url::{DrainUrl, DrainUrlError, MAX_DRAIN_URL_BYTES, Scheme};

use crate::loghub::LogSink;
use dyno_shared::LogLine;
use queue::Queue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OnceCell};
use tokio::task::JoinHandle;
use tokio_rustls::rustls::ClientConfig;

/// How drains behave; tests shrink the numbers.
#[derive(Debug, Clone)]
pub struct DrainOptions {
    pub queue_bytes: usize,
    /// The first retry after a failure; doubled per failure up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Trust for TLS drains; `None` uses the system's CA certificates (or `SSL_CERT_FILE`).
    pub tls: Option<Arc<ClientConfig>>,
}

impl Default for DrainOptions {
    fn default() -> Self {
        DrainOptions {
            queue_bytes: QUEUE_BYTES,
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// A drain to run: which app's lines go where, and the token that names it in every frame.
#[derive(Debug, Clone)]
pub struct DrainSpec {
    pub id: String,
    pub app: String,
    pub url: DrainUrl,
    pub token: String,
}

/// One running drain's state shared by the log hub (which queues) and its sender.
struct Drain {
    spec: DrainSpec,
    queue: Mutex<Queue>,
    wake: Notify,
}

impl Drain {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Running {
    drain: Arc<Drain>,
    task: JoinHandle<()>,
}

/// What every sender task needs besides its drain.
struct Shared {
    options: DrainOptions,
    native_tls: OnceCell<Result<Arc<ClientConfig>, String>>,
}

impl Shared {
    async fn tls_config(&self) -> Result<Arc<ClientConfig>, String> {
        if let Some(c) = &self.options.tls {
            return Ok(c.clone());
        }
        self.native_tls
            .get_or_init(|| async {
                tokio::task::spawn_blocking(native_tls_config)
                    .await
                    .unwrap_or_else(|e| Err(format!("loading CA certificates panicked: {e}")))
            })
            .await
            .clone()
    }
}

/// A client config trusting the system's CA certificates, with ring as the crypto provider.
fn native_tls_config() -> Result<Arc<ClientConfig>, String> {
    use tokio_rustls::rustls::{RootCertStore, crypto::ring};
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "failed to load some system CA certificates");
    }
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(
            "no system CA certificates found to verify TLS drains (set SSL_CERT_FILE)".into(),
        );
    }
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("failed to set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The running drains, by app name. Registered with the log hub as a sink.
pub struct Drains {
    by_app: Mutex<HashMap<String, Vec<Running>>>,
    shared: Arc<Shared>,
}

impl Drains {
    pub fn new(options: DrainOptions) -> Drains {
        Drains {
            by_app: Mutex::new(HashMap::new()),
            shared: Arc::new(Shared {
                options,
                native_tls: OnceCell::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Running>>> {
        self.by_app.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the app's lines from now on to `spec`'s receiver; a drain already running is left
    /// alone. Must be called inside the tokio runtime.
    pub fn start(&self, spec: DrainSpec) {
        let mut apps = self.lock();
        let list = apps.entry(spec.app.clone()).or_default();
        if list.iter().any(|r| r.drain.spec.id == spec.id) {
            return;
        }
        tracing::info!(app = spec.app, drain = spec.id, url = %spec.url, "log drain started");
        let drain = Arc::new(Drain {
            queue: Mutex::new(Queue::new(self.shared.options.queue_bytes)),
            wake: Notify::new(),
            spec,
        });
        let task = tokio::spawn(sender::run(drain.clone(), self.shared.clone()));
        list.push(Running { drain, task });
    }

    /// Stops a drain; what it had not delivered is dropped. False when it was not running.
    pub fn stop(&self, id: &str) -> bool {
        let mut apps = self.lock();
        for list in apps.values_mut() {
            if let Some(i) = list.iter().position(|r| r.drain.spec.id == id) {
                let r = list.remove(i);
                r.task.abort();
                tracing::info!(app = r.drain.spec.app, drain = id, "log drain stopped");
                return true;
            }
        }
        false
    }

    pub fn stop_app(&self, app: &str) {
        if let Some(list) = self.lock().remove(app) {
            for r in list {
                r.task.abort();
            }
        }
    }

    /// Ids of the app's running drains.
    pub fn running(&self, app: &str) -> Vec<String> {
        self.lock()
            .get(app)
            .map(|l| l.iter().map(|r| r.drain.spec.id.clone()).collect())
            .unwrap_or_default()
    }
}

impl Drop for Drains {
    fn drop(&mut self) {
        for list in self.lock().values() {
            for r in list {
                r.task.abort();
            }
        }
    }
}

impl LogSink for Drains {
    fn line(&self, line: &LogLine) {
        let apps = self.lock();
        let Some(list) = apps.get(&line.app) else {
            return;
        };
        let now = dyno_shared::time::now_micros();
        for r in list {
            let msg = frame::message(line, &r.drain.spec.token);
            if r.drain.queue().push(msg, now) {
                tracing::warn!(
                    app = line.app,
                    drain = r.drain.spec.id,
                    "log drain is not keeping up; dropping its oldest lines (L10)"
                );
            }
            r.drain.wake.notify_one();
        }
    }

    fn forget(&self, app: &str) {
        self.stop_app(app);
    }
}

#[cfg(test)]
mod tests;
