//! The websocket to the coordinator: `Hello`, wait for `Welcome`, then heartbeats, state changes
//! and log batches out, `StartDyno`/`StopDyno` in. Reconnects with backoff forever; dynos keep
//! running while the coordinator is away and the outbox keeps what they have to say.

use std::sync::Arc;
use std::time::Duration;

use dyno_shared::logline::LogLine;
use dyno_shared::protocol::{
    AgentMsg, CoordinatorMsg, HEARTBEAT_INTERVAL_MS, Hello, Isolation, MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header::AUTHORIZATION};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{debug, error, info, warn};

use crate::logbuf::BATCH_MAX_BYTES;
use crate::outbox::Outbox;
use crate::supervisor::{STATS_INTERVAL, Supervisor};

pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Log lines wait at most this long before they are sent.
pub const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// How long the sender waits after the first line of a quiet spell, so the lines written with it
/// share its frame: this much added delay buys batches of hundreds under load.
pub const LOG_COALESCE: Duration = Duration::from_millis(2);
/// Most `Logs` frames sent per flush, so heartbeats and states are not starved by a flood.
const MAX_LOG_FRAMES_PER_FLUSH: usize = 16;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Between attempts with a refused credential.
const REFUSED_RETRY: Duration = Duration::from_secs(60);
/// How long the coordinator has to answer `Hello`.
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// Replies (errors) waiting for the writer.
const REPLY_QUEUE: usize = 64;

#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// `ws://host:port/agent/ws`.
    pub ws_url: String,
    pub credential: crate::credential::Credential,
    pub name: String,
    pub address: String,
    pub memory_mb: u64,
    pub cpus: u32,
    pub isolation: Isolation,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// `http://h:p[/prefix]` -> `ws://h:p[/prefix]/agent/ws` (https -> wss).
pub fn ws_url(coordinator: &str) -> String {
    let base = coordinator.trim_end_matches('/');
    let ws = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{ws}/agent/ws")
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("the coordinator refused the token (HTTP 401); check --token")]
    Unauthorized,
    #[error("websocket: {0}")]
    Ws(#[from] WsError),
    #[error("invalid request: {0}")]
    Request(String),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("the coordinator refused the agent: {0}")]
    Refused(String),
    #[error("the coordinator closed the connection {0}")]
    Closed(&'static str),
}

enum SessionEnd {
    /// The agent is shutting down and said everything it had to say.
    Finished,
    /// The coordinator went away.
    Closed,
}

/// Exponential backoff with jitter: 100 ms doubling to 5 s.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    seed: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    pub fn new() -> Self {
        let seed = (dyno_shared::time::now_micros() as u64) ^ ((std::process::id() as u64) << 32);
        Backoff {
            next: BACKOFF_MIN,
            seed: seed | 1,
        }
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    /// The next delay is at least about `d` (with the usual jitter below it).
    pub fn at_least(&mut self, d: Duration) {
        self.next = self.next.max(d);
    }

    /// The next delay: between half and all of the current step, so agents that lost the same
    /// coordinator do not all come back at once.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        // xorshift64: jitter needs no cryptographic randomness.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let half = step.as_micros() as u64 / 2;
        Duration::from_micros(half + self.seed % (half + 1))
    }
}

/// Connects and reconnects until `finish` turns true; then reports what is left, if connected.
pub async fn run(
    config: ConnectionConfig,
    supervisor: Supervisor,
    outbox: Arc<Outbox>,
    mut finish: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new();
    loop {
        if *finish.borrow() {
            return;
        }
        match session(&config, &supervisor, &outbox, &mut finish, &mut backoff).await {
            Ok(SessionEnd::Finished) => return,
            Ok(SessionEnd::Closed) => info!("the coordinator closed the connection; reconnecting"),
            Err(ConnError::Unauthorized) if config.credential.is_own() => {
                error!(
                    url = %config.ws_url,
                    credential = %config.credential.path().display(),
                    "the coordinator refused this host's credential (HTTP 401): it was revoked \
                     (hosts:remove). To join again, delete the credential file and start the \
                     agent with a join token"
                );
                // Retrying fast would only count as failed logins from this address.
                backoff.at_least(REFUSED_RETRY);
            }
            Err(ConnError::Unauthorized) => {
                error!(url = %config.ws_url, "coordinator refused the token (HTTP 401); check --token")
            }
            Err(e) => {
                warn!(url = %config.ws_url, error = %e, "connection to the coordinator failed")
            }
        }
        let delay = backoff.next_delay();
        debug!(
            delay_ms = delay.as_millis() as u64,
            "reconnecting after a pause"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = finishing(&mut finish) => return,
        }
    }
}

/// Completes once the agent is finishing (or whoever could tell it so is gone).
async fn finishing(finish: &mut watch::Receiver<bool>) {
    // The borrow `wait_for` returns must not live across an await: drop it here.
    let _ = finish.wait_for(|f| *f).await.map(|_| ());
}

async fn session(
    config: &ConnectionConfig,
    supervisor: &Supervisor,
    outbox: &Outbox,
    finish: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> Result<SessionEnd, ConnError> {
    let mut request = config
        .ws_url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnError::Request(e.to_string()))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", config.credential.current()))
        .map_err(|_| ConnError::Request("the token is not a valid header value".into()))?;
    request.headers_mut().insert(AUTHORIZATION, bearer);
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let connector = config.ws_url.starts_with("wss://").then(|| {
        tokio_tungstenite::Connector::Rustls(dyno_shared::tls::client_config(
            config.credential.pin(),
        ))
    });
    let connect =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(ws_config), true, connector);
    let (ws, _) = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Err(_) => return Err(ConnError::Timeout("connecting")),
        Ok(Err(WsError::Http(resp))) if resp.status() == StatusCode::UNAUTHORIZED => {
            return Err(ConnError::Unauthorized);
        }
        Ok(result) => result?,
    };
    let (mut sink, mut stream) = ws.split();

    let hello = AgentMsg::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        name: config.name.clone(),
        address: config.address.clone(),
        memory_mb: config.memory_mb,
        cpus: config.cpus,
        isolation: config.isolation,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        dynos: supervisor.statuses(),
        labels: config.labels.clone(),
    });
    send(&mut sink, &hello).await?;
    let host_id = match tokio::time::timeout(
        WELCOME_TIMEOUT,
        welcome(&mut sink, &mut stream, &config.credential),
    )
    .await
    {
        Ok(result) => result?,
        Err(_) => return Err(ConnError::Timeout("waiting for Welcome")),
    };
    info!(host_id = %host_id, "connected to the coordinator");
    backoff.reset();

    let (reply_tx, reply_rx) = mpsc::channel(REPLY_QUEUE);
    tokio::select! {
        end = read_loop(stream, supervisor, reply_tx) => end,
        end = write_loop(sink, outbox, reply_rx, finish) => end,
    }
}

async fn send<S>(sink: &mut S, msg: &AgentMsg) -> Result<(), ConnError>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    sink.send(Message::Text(msg.encode().into())).await?;
    Ok(())
}

/// Reads until `Welcome` (its host id) or `Error`.
async fn welcome<S, R>(
    sink: &mut S,
    stream: &mut R,
    credential: &crate::credential::Credential,
) -> Result<String, ConnError>
where
    S: Sink<Message, Error = WsError> + Unpin,
    R: Stream<Item = Result<Message, WsError>> + Unpin,
{
    while let Some(msg) = stream.next().await {
        let text = match msg? {
            Message::Text(text) => text,
            Message::Binary(_) => {
                send(sink, &binary_error()).await?;
                continue;
            }
            Message::Close(_) => break,
            _ => continue,
        };
        match CoordinatorMsg::decode(text.as_str()) {
            Ok(CoordinatorMsg::Welcome {
                protocol_version,
                host_id,
                credential: issued,
            }) => {
                if let Some(own) = issued {
                    // Saved before anything else: the join token may be revoked from now on.
                    credential.save(&own).map_err(|e| {
                        ConnError::Request(format!(
                            "failed to save this host's credential to {}: {e}",
                            credential.path().display()
                        ))
                    })?;
                    info!(path = %credential.path().display(), "joined; saved this host's own credential");
                }
                if protocol_version != PROTOCOL_VERSION {
                    warn!(
                        theirs = protocol_version,
                        ours = PROTOCOL_VERSION,
                        "the coordinator speaks another protocol version"
                    );
                }
                return Ok(host_id);
            }
            Ok(CoordinatorMsg::Error { message }) => return Err(ConnError::Refused(message)),
            Ok(other) => warn!(message = ?other, "ignoring a message that came before Welcome"),
            Err(e) => {
                warn!(error = %e, "undecodable frame from the coordinator");
                send(sink, &decode_error(&e)).await?;
            }
        }
    }
    Err(ConnError::Closed("before Welcome"))
}

fn decode_error(e: &dyno_shared::protocol::DecodeError) -> AgentMsg {
    AgentMsg::Error {
        message: format!("could not decode frame: {e}"),
    }
}

fn binary_error() -> AgentMsg {
    AgentMsg::Error {
        message: "binary frames are not part of the agent protocol: send JSON text frames".into(),
    }
}

async fn read_loop<R>(
    mut stream: R,
    supervisor: &Supervisor,
    replies: mpsc::Sender<AgentMsg>,
) -> Result<SessionEnd, ConnError>
where
    R: Stream<Item = Result<Message, WsError>> + Unpin,
{
    while let Some(msg) = stream.next().await {
        let reply = match msg? {
            Message::Text(text) => handle_frame(text.as_str(), supervisor),
            Message::Binary(_) => {
                warn!("binary frame from the coordinator");
                Some(binary_error())
            }
            Message::Close(_) => return Ok(SessionEnd::Closed),
            _ => None,
        };
        if let Some(reply) = reply
            && replies.send(reply).await.is_err()
        {
            break;
        }
    }
    Ok(SessionEnd::Closed)
}

/// Acts on one text frame; returns what to answer, if anything.
fn handle_frame(text: &str, supervisor: &Supervisor) -> Option<AgentMsg> {
    match CoordinatorMsg::decode(text) {
        Ok(CoordinatorMsg::StartDyno(spec)) => {
            info!(app = %spec.app, dyno = %spec.name, id = %spec.dyno_id, release = spec.release, "start requested");
            supervisor.start(spec);
            None
        }
        Ok(CoordinatorMsg::StopDyno { dyno_id, grace_ms }) => {
            info!(id = %dyno_id, grace_ms, "stop requested");
            supervisor.stop(&dyno_id, Duration::from_millis(grace_ms));
            None
        }
        Ok(CoordinatorMsg::Error { message }) => {
            warn!(%message, "the coordinator reported an error");
            None
        }
        Ok(CoordinatorMsg::Welcome { .. }) => {
            debug!("ignoring a repeated Welcome");
            None
        }
        Err(e) => {
            warn!(error = %e, "undecodable frame from the coordinator");
            Some(decode_error(&e))
        }
    }
}

async fn write_loop<S>(
    mut sink: S,
    outbox: &Outbox,
    mut replies: mpsc::Receiver<AgentMsg>,
    finish: &mut watch::Receiver<bool>,
) -> Result<SessionEnd, ConnError>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let mut heartbeat = tokio::time::interval(Duration::from_millis(HEARTBEAT_INTERVAL_MS));
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut log_flush = tokio::time::interval(LOG_FLUSH_INTERVAL);
    log_flush.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stats = tokio::time::interval(STATS_INTERVAL);
    stats.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // What piled up while the coordinator was away goes first.
    send_states(&mut sink, outbox).await?;
    loop {
        tokio::select! {
            biased;
            () = finishing(finish) => {
                send_states(&mut sink, outbox).await?;
                while send_logs(&mut sink, outbox, MAX_LOG_FRAMES_PER_FLUSH).await? > 0 {}
                let _ = sink.send(Message::Close(None)).await;
                return Ok(SessionEnd::Finished);
            }
            Some(reply) = replies.recv() => send(&mut sink, &reply).await?,
            () = outbox.states_ready() => send_states(&mut sink, outbox).await?,
            _ = heartbeat.tick() => {
                send(&mut sink, &AgentMsg::Heartbeat {
                    at: dyno_shared::time::now_micros(),
                    load_1m: crate::host::load_1m(),
                }).await?;
            }
            () = outbox.logs_ready() => {
                tokio::time::sleep(LOG_COALESCE).await;
                send_logs(&mut sink, outbox, MAX_LOG_FRAMES_PER_FLUSH).await?;
                outbox.wake_if_logs_left();
            }
            _ = log_flush.tick() => {
                send_logs(&mut sink, outbox, MAX_LOG_FRAMES_PER_FLUSH).await?;
                outbox.wake_if_logs_left();
            }
            _ = stats.tick() => {
                // Samples are only worth their latest value: a failed send drops them.
                let stats = outbox.take_stats();
                if !stats.is_empty() {
                    send(&mut sink, &AgentMsg::Stats { stats }).await?;
                }
            }
        }
    }
}

/// Sends every queued state change; what could not be sent goes back to the outbox. Queued log
/// lines go first: a dyno's last output was written before its final state, and a one-off's
/// client must see all of it before the exit code.
async fn send_states<S>(sink: &mut S, outbox: &Outbox) -> Result<(), ConnError>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    while send_logs(sink, outbox, MAX_LOG_FRAMES_PER_FLUSH).await? > 0 {}
    let mut states = outbox.take_states().into_iter();
    while let Some(status) = states.next() {
        if let Err(e) = send(sink, &AgentMsg::DynoState(status.clone())).await {
            let mut unsent = vec![status];
            unsent.extend(states);
            outbox.requeue_states(unsent);
            return Err(e);
        }
    }
    Ok(())
}

/// Sends up to `max_frames` frames of log lines; returns how many were sent.
async fn send_logs<S>(sink: &mut S, outbox: &Outbox, max_frames: usize) -> Result<usize, ConnError>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let mut sent = 0;
    while sent < max_frames {
        let lines = outbox.take_logs();
        if lines.is_empty() {
            break;
        }
        let frames = encode_logs(&lines);
        let mut done = 0;
        for (frame, count) in frames {
            if let Err(e) = sink.send(Message::Text(frame.into())).await {
                outbox.requeue_logs(lines[done..].to_vec());
                return Err(e.into());
            }
            done += count;
            sent += 1;
        }
    }
    Ok(sent)
}

/// Encodes lines into `Logs` frames of at most `BATCH_MAX_BYTES` each (a single huge line goes
/// alone). Returns each frame with the number of lines in it.
pub fn encode_logs(lines: &[LogLine]) -> Vec<(String, usize)> {
    const HEAD: &str = r#"{"type":"logs","lines":["#;
    const TAIL: &str = "]}";
    let mut frames = Vec::new();
    let mut frame = String::from(HEAD);
    let mut count = 0;
    for line in lines {
        let json = serde_json::to_string(line).expect("log lines always serialize");
        if count > 0 && frame.len() + 1 + json.len() + TAIL.len() > BATCH_MAX_BYTES {
            frame.push_str(TAIL);
            frames.push((std::mem::replace(&mut frame, String::from(HEAD)), count));
            count = 0;
        }
        if count > 0 {
            frame.push(',');
        }
        frame.push_str(&json);
        count += 1;
    }
    if count > 0 {
        frame.push_str(TAIL);
        frames.push((frame, count));
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use dyno_shared::logline::{LogSource, MAX_LINE_BYTES};

    #[test]
    fn derives_the_websocket_url() {
        assert_eq!(
            ws_url("http://10.0.0.1:7070"),
            "ws://10.0.0.1:7070/agent/ws"
        );
        assert_eq!(ws_url("http://h:1/base/"), "ws://h:1/base/agent/ws");
        assert_eq!(ws_url("https://h"), "wss://h/agent/ws");
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(
            first >= BACKOFF_MIN / 2 && first <= BACKOFF_MIN,
            "{first:?}"
        );
        let delays: Vec<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX));
        assert!(delays[10..].iter().all(|d| *d >= BACKOFF_MAX / 2));
        b.reset();
        assert!(b.next_delay() <= BACKOFF_MIN);
    }

    #[test]
    fn log_frames_decode_and_stay_under_the_limit() {
        let line = |i: usize| LogLine {
            at: i as i64,
            app: "shop".into(),
            source: LogSource::App,
            process: "web.1".into(),
            // Control characters take six bytes each once escaped.
            message: "\u{1}".repeat(MAX_LINE_BYTES / 2) + &i.to_string(),
        };
        let lines: Vec<LogLine> = (0..300).map(line).collect();
        let frames = encode_logs(&lines);
        assert!(frames.len() > 1);
        let mut decoded = Vec::new();
        for (frame, count) in &frames {
            assert!(frame.len() <= BATCH_MAX_BYTES, "{}", frame.len());
            match AgentMsg::decode(frame).unwrap() {
                AgentMsg::Logs { lines } => {
                    assert_eq!(lines.len(), *count);
                    decoded.extend(lines);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(decoded, lines);
        assert!(encode_logs(&[]).is_empty());
    }
}
