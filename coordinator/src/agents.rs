//! One session per connected agent: the version handshake, then its reports in and the
//! manager's orders out. A garbled frame is answered with an error; it never ends the session.

use crate::store::{Desired, HostRow, Queries};
use crate::{AgentConn, Inner, Shared, now_ms};
use dyno_shared::protocol::{
    AgentMsg, CoordinatorMsg, DynoState, DynoStatus, HEARTBEAT_INTERVAL_MS, Hello, MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// An agent must say hello this soon after connecting.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A connected agent silent this long (it heartbeats every second) is treated as gone, so a host
/// that lost power or network leaves the router at once instead of after TCP gives up.
pub const SILENCE_TIMEOUT: Duration = Duration::from_millis(5 * HEARTBEAT_INTERVAL_MS);

pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        // The 128 KiB default is allocated per connection up front: 128 MB for 1,000 agents.
        // Frames are small; a bigger one grows the buffer as it arrives.
        .read_buffer_size(16 * 1024)
}

async fn send_error<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    message: String,
) {
    let _ = ws
        .send(Message::text(CoordinatorMsg::Error { message }.encode()))
        .await;
}

pub async fn session<S>(
    inner: Shared,
    mut ws: WebSocketStream<S>,
    peer: String,
    principal: crate::auth::Principal,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => match AgentMsg::decode(&t) {
            Ok(AgentMsg::Hello(h)) => h,
            Ok(_) => {
                send_error(&mut ws, "the first message must be hello".into()).await;
                return;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "agent sent a bad first frame");
                send_error(&mut ws, format!("bad hello: {e}")).await;
                return;
            }
        },
        Ok(_) => return,
        Err(_) => {
            send_error(&mut ws, "no hello within 10 s".into()).await;
            return;
        }
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        tracing::warn!(%peer, version = hello.protocol_version, "agent speaks another protocol version");
        send_error(
            &mut ws,
            format!(
                "protocol version {} is not supported; this coordinator speaks {PROTOCOL_VERSION}",
                hello.protocol_version
            ),
        )
        .await;
        return;
    }
    if !valid_host_name(&hello.name) {
        send_error(
            &mut ws,
            format!(
                "invalid host name {:?}: use 1-63 letters, digits, '.', '_' and '-'",
                hello.name
            ),
        )
        .await;
        return;
    }
    // A host's own credential speaks for that host only; a join (or operator) token gets the
    // joining host a credential of its own.
    let credential = match (principal.role, principal.host.as_deref()) {
        (crate::auth::Role::Agent, Some(h)) if h == hello.name => None,
        (crate::auth::Role::Agent, owner) => {
            tracing::warn!(%peer, host = %hello.name, credential = %principal.name, "refused an agent presenting another host's credential");
            send_error(
                &mut ws,
                format!(
                    "this credential belongs to host {}, not {}",
                    owner.unwrap_or("-"),
                    hello.name
                ),
            )
            .await;
            return;
        }
        (crate::auth::Role::Join | crate::auth::Role::Operate, _) => {
            match inner.issue_agent_credential(&hello.name, &principal.name) {
                Ok(secret) => Some(secret),
                Err(e) => {
                    tracing::error!(host = %hello.name, error = %e, "failed to issue a credential");
                    send_error(
                        &mut ws,
                        format!("coordinator failed to issue a credential: {e}"),
                    )
                    .await;
                    return;
                }
            }
        }
        (crate::auth::Role::Read, _) => return,
    };
    let host = hello.name.clone();
    let (tx, mut rx) = mpsc::unbounded_channel::<CoordinatorMsg>();
    let conn_id = inner.next_conn.fetch_add(1, Ordering::Relaxed);
    // Register first: replacing an older (perhaps half-open) connection of the same host drops its
    // sender, so no manager pass can send orders into the dead socket after `adopt` decided what
    // this host runs. Orders queued meanwhile go out after Welcome.
    inner.agents.lock().expect("agents lock").insert(
        host.clone(),
        AgentConn {
            conn_id,
            tx: tx.clone(),
            address: hello.address.clone(),
            last_heartbeat: now_ms(),
            load_1m: None,
        },
    );
    inner.away.lock().expect("away lock").remove(&host);
    if let Err(e) = adopt(&inner, &hello, &tx) {
        tracing::error!(host, error = %e, "failed to record agent hello");
        send_error(&mut ws, format!("coordinator store failed: {e}")).await;
        disconnect(&inner, &host, conn_id);
        return;
    }
    drop(tx);
    tracing::info!(host, %peer, dynos = hello.dynos.len(), "agent connected");
    let welcome = CoordinatorMsg::Welcome {
        protocol_version: PROTOCOL_VERSION,
        host_id: host.clone(),
        credential,
    };
    if ws.send(Message::text(welcome.encode())).await.is_err() {
        disconnect(&inner, &host, conn_id);
        return;
    }
    inner.wake();

    // A host silent long enough to be lost loses its connection too, so when it speaks again it
    // says hello and learns which of its dynos now run elsewhere.
    let silence = SILENCE_TIMEOUT.min(inner.config.host_lost_after);
    let mut silent_until = tokio::time::Instant::now() + silence;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(silent_until) => {
                tracing::warn!(host, "agent silent for {silence:?}; dropping its connection");
                break;
            }
            out = rx.recv() => match out {
                Some(msg) => {
                    if ws.send(Message::text(msg.encode())).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(t))) => {
                    silent_until = tokio::time::Instant::now() + silence;
                    if let Some(reply) = handle(&inner, &host, &t) {
                        let _ = ws.send(Message::text(reply.encode())).await;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let _ = ws.send(Message::text(CoordinatorMsg::Error { message: "binary frames are not part of the protocol".into() }.encode())).await;
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(host, error = %e, "agent connection failed");
                    break;
                }
            },
            _ = stop.changed() => {
                let _ = ws.close(None).await;
                break;
            }
        }
    }
    disconnect(&inner, &host, conn_id);
}

fn disconnect(inner: &Inner, host: &str, conn_id: u64) {
    let mut agents = inner.agents.lock().expect("agents lock");
    if agents.get(host).is_some_and(|c| c.conn_id == conn_id)
        && let Some(c) = agents.remove(host)
    {
        // The host counts as lost only once it has been silent long enough from here.
        inner
            .away
            .lock()
            .expect("away lock")
            .insert(host.to_string(), c.last_heartbeat);
        tracing::info!(host, "agent disconnected");
    }
    drop(agents);
    let _ = inner.refresh_routes();
    inner.wake();
}

/// Merges what a (re)connecting agent runs with what the store expects on that host: known dynos
/// are adopted as they are, unknown or unwanted ones stopped, missing ones marked down.
fn adopt(
    inner: &Inner,
    hello: &Hello,
    tx: &mpsc::UnboundedSender<CoordinatorMsg>,
) -> Result<(), crate::StoreError> {
    let now = now_ms();
    let batch: Vec<(String, DynoStatus)> = hello
        .dynos
        .iter()
        .map(|s| (hello.name.clone(), s.clone()))
        .collect();
    for (_, msg) in inner.apply_statuses(&batch)? {
        let _ = tx.send(msg);
    }
    let reported: HashSet<&str> = hello.dynos.iter().map(|s| s.dyno_id.as_str()).collect();
    let mut finished = Vec::new();
    inner.store().transaction(|t| {
        t.upsert_host(&HostRow {
            name: hello.name.clone(),
            address: hello.address.clone(),
            memory_mb: hello.memory_mb,
            cpus: hello.cpus,
            isolation: hello.isolation.as_str().to_string(),
            agent_version: hello.agent_version.clone(),
            first_seen: now,
            last_seen: now,
            drained: false,
            labels: hello.labels.clone(),
        })?;
        for mut d in t.dynos()? {
            if d.host.as_deref() != Some(hello.name.as_str()) || reported.contains(d.id.as_str()) {
                continue;
            }
            if d.desired == Desired::Stop || d.one_off {
                if d.one_off {
                    finished.push((d.app.clone(), d.name()));
                }
                t.delete_dyno(&d.id, now)?;
            } else if d.state.is_running() {
                d.state = if d.desired == Desired::Sleep {
                    DynoState::Idle
                } else {
                    DynoState::Down
                };
                d.reason = Some("not running on its host".into());
                d.updated_at = now;
                d.up_since = None;
                t.update_dyno(&d)?;
            }
        }
        Ok(())
    })?;
    for (app, name) in finished {
        inner.finish_run(&app, &name, -1);
    }
    Ok(())
}

fn handle(inner: &Inner, host: &str, text: &str) -> Option<CoordinatorMsg> {
    let msg = match AgentMsg::decode(text) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(host, error = %e, "agent sent a bad frame");
            return Some(CoordinatorMsg::Error {
                message: e.to_string(),
            });
        }
    };
    match msg {
        AgentMsg::Heartbeat { load_1m, .. } => {
            if let Some(c) = inner.agents.lock().expect("agents lock").get_mut(host) {
                c.last_heartbeat = now_ms();
                c.load_1m = load_1m.filter(|l| l.is_finite() && *l >= 0.0);
            }
            None
        }
        AgentMsg::DynoState(s) => {
            inner.queue_status(host, s);
            None
        }
        AgentMsg::Logs { lines } => {
            inner.ingest_logs(lines);
            None
        }
        AgentMsg::Stats { stats } => {
            inner.stats.record(stats);
            None
        }
        AgentMsg::Error { message } => {
            tracing::warn!(host, message, "agent reported an error");
            None
        }
        AgentMsg::Hello(_) => Some(CoordinatorMsg::Error {
            message: "hello was already received on this connection".into(),
        }),
    }
}

pub fn valid_host_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}
