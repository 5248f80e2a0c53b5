//! The whole agent (`run`) against a fake coordinator speaking the websocket protocol.
// tungstenite's handshake callback type fixes the size of its error response.
#![allow(clippy::result_large_err)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{PATIENCE, seed_slug, spec};
use dyno_agent::AgentConfig;
use dyno_agent::runtime::process_alive;
use dyno_shared::protocol::{
    AgentMsg, CoordinatorMsg, DynoState, DynoStatus, Hello, Isolation, PROTOCOL_VERSION,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

type Ws = WebSocketStream<TcpStream>;

/// Accepts one agent connection; returns it with the Authorization header and path it used.
async fn accept(listener: &TcpListener) -> (Ws, String, String) {
    let (stream, _) = tokio::time::timeout(PATIENCE, listener.accept())
        .await
        .expect("the agent did not connect")
        .unwrap();
    let seen = Arc::new(Mutex::new((String::new(), String::new())));
    let record = seen.clone();
    let ws = tokio_tungstenite::accept_hdr_async(stream, move |req: &Request, resp: Response| {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        *record.lock().unwrap() = (auth, req.uri().path().to_string());
        Ok(resp)
    })
    .await
    .unwrap();
    let (auth, path) = seen.lock().unwrap().clone();
    (ws, auth, path)
}

/// Answers one connection attempt with HTTP 401.
async fn refuse(listener: &TcpListener) {
    let (stream, _) = tokio::time::timeout(PATIENCE, listener.accept())
        .await
        .expect("the agent did not connect")
        .unwrap();
    let result = tokio_tungstenite::accept_hdr_async(stream, |_: &Request, _: Response| {
        let mut refusal = ErrorResponse::new(Some("bad token".to_string()));
        *refusal.status_mut() = StatusCode::UNAUTHORIZED;
        Err(refusal)
    })
    .await;
    assert!(result.is_err());
}

async fn send(ws: &mut Ws, msg: &CoordinatorMsg) {
    ws.send(Message::Text(msg.encode().into())).await.unwrap();
}

async fn recv(ws: &mut Ws) -> Option<AgentMsg> {
    loop {
        let msg = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("the agent went quiet")?;
        match msg {
            Ok(Message::Text(text)) => return Some(AgentMsg::decode(text.as_str()).unwrap()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

async fn hello(ws: &mut Ws) -> Hello {
    match recv(ws).await {
        Some(AgentMsg::Hello(h)) => h,
        other => panic!("expected Hello first, got {other:?}"),
    }
}

/// Everything the agent sent on one connection.
#[derive(Default)]
struct Seen(Vec<AgentMsg>);

impl Seen {
    async fn until(&mut self, ws: &mut Ws, what: &str, done: impl Fn(&Seen) -> bool) {
        while !done(self) {
            match recv(ws).await {
                Some(msg) => self.0.push(msg),
                None => panic!("connection ended before {what}; saw {:#?}", self.0),
            }
        }
    }
    fn state(&self, id: &str, state: DynoState) -> Option<&DynoStatus> {
        self.0.iter().find_map(|m| match m {
            AgentMsg::DynoState(s) if s.dyno_id == id && s.state == state => Some(s),
            _ => None,
        })
    }
    fn logged(&self, text: &str) -> bool {
        self.0.iter().any(|m| match m {
            AgentMsg::Logs { lines } => lines.iter().any(|l| l.message == text),
            _ => false,
        })
    }
    fn error_mentioning(&self, text: &str) -> bool {
        self.0
            .iter()
            .any(|m| matches!(m, AgentMsg::Error { message } if message.contains(text)))
    }
}

fn welcome() -> CoordinatorMsg {
    CoordinatorMsg::Welcome {
        protocol_version: PROTOCOL_VERSION,
        host_id: "host-1".into(),
        credential: None,
    }
}

#[tokio::test]
async fn the_agent_runs_dynos_for_the_coordinator_and_survives_its_absence() {
    let state = tempfile::tempdir().unwrap();
    let sha = seed_slug(state.path(), &[]);
    let trigger = state.path().join("trigger");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = AgentConfig::new(
        format!("http://{}", listener.local_addr().unwrap()),
        "secret",
        state.path(),
    );
    config.name = "test-host".into();
    config.stop_grace = Duration::from_secs(5);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(dyno_agent::run(config, async {
        let _ = stop_rx.await;
    }));

    // Handshake.
    let (mut ws, auth, path) = accept(&listener).await;
    assert_eq!(auth, "Bearer secret");
    assert_eq!(path, "/agent/ws");
    let h = hello(&mut ws).await;
    assert_eq!(h.protocol_version, PROTOCOL_VERSION);
    assert_eq!(h.name, "test-host");
    assert_eq!(h.address, "127.0.0.1");
    assert_eq!(h.isolation, Isolation::None);
    assert!(h.cpus >= 1 && h.memory_mb > 0);
    assert!(h.dynos.is_empty());
    send(&mut ws, &welcome()).await;

    // A dyno starts; its states and output come back.
    let command = "sh -c 'echo hello-from-dyno; exec sleep 100'";
    send(
        &mut ws,
        &CoordinatorMsg::StartDyno(spec("d1", "worker.1", command, &sha)),
    )
    .await;
    let mut seen = Seen::default();
    seen.until(&mut ws, "d1 up and its output", |s| {
        s.state("d1", DynoState::Up).is_some() && s.logged("hello-from-dyno")
    })
    .await;
    // `starting` may be coalesced into `up` when both wait in the outbox (outbox.rs); what
    // must hold is that d1 went nowhere but starting and up on its way.
    let d1_states: Vec<DynoState> = seen
        .0
        .iter()
        .filter_map(|m| match m {
            AgentMsg::DynoState(s) if s.dyno_id == "d1" => Some(s.state),
            _ => None,
        })
        .collect();
    assert!(
        d1_states == [DynoState::Starting, DynoState::Up] || d1_states == [DynoState::Up],
        "{d1_states:?}"
    );
    let d1_pid = seen.state("d1", DynoState::Up).unwrap().pid.unwrap();

    // Garbage is answered with an error naming it; the connection stays up.
    ws.send(Message::Text(r#"{"type":"launch_missiles"}"#.into()))
        .await
        .unwrap();
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    seen.until(&mut ws, "errors and a heartbeat", |s| {
        s.error_mentioning("launch_missiles")
            && s.error_mentioning("binary")
            && s.0.iter().any(|m| matches!(m, AgentMsg::Heartbeat { .. }))
    })
    .await;

    // A worker that will exit while the coordinator is away.
    let waiter = format!(
        "sh -c 'while [ ! -f {} ]; do sleep 0.02; done; exit 4'",
        trigger.display()
    );
    send(
        &mut ws,
        &CoordinatorMsg::StartDyno(spec("d3", "worker.3", &waiter, &sha)),
    )
    .await;
    seen.until(&mut ws, "d3 up", |s| s.state("d3", DynoState::Up).is_some())
        .await;
    let d3_pid = seen.state("d3", DynoState::Up).unwrap().pid.unwrap();

    // The coordinator goes away. Dynos keep running; d3 exits meanwhile.
    drop(ws);
    std::fs::write(&trigger, "").unwrap();
    common::eventually("d3 exits", || !process_alive(d3_pid)).await;
    assert!(
        process_alive(d1_pid),
        "dynos keep running without the coordinator"
    );

    // It comes back: Hello lists what runs, and the crash that happened meanwhile is reported.
    let (mut ws, _, _) = accept(&listener).await;
    let h = hello(&mut ws).await;
    let ids: Vec<_> = h
        .dynos
        .iter()
        .map(|d| (d.dyno_id.as_str(), d.state))
        .collect();
    assert_eq!(ids, [("d1", DynoState::Up)]);
    assert_eq!(h.dynos[0].pid, Some(d1_pid));
    send(&mut ws, &welcome()).await;
    let mut seen = Seen::default();
    seen.until(&mut ws, "d3 crashed", |s| {
        s.state("d3", DynoState::Crashed).is_some()
    })
    .await;
    assert_eq!(
        seen.state("d3", DynoState::Crashed).unwrap().exit_code,
        Some(4)
    );

    // StopDyno is answered with down.
    send(
        &mut ws,
        &CoordinatorMsg::StopDyno {
            dyno_id: "d1".into(),
            grace_ms: 5000,
        },
    )
    .await;
    seen.until(&mut ws, "d1 down", |s| {
        s.state("d1", DynoState::Down).is_some()
    })
    .await;
    assert_eq!(
        seen.state("d1", DynoState::Down).unwrap().exit_code,
        Some(143)
    );
    assert!(!process_alive(d1_pid));

    // Agent shutdown stops what runs and reports it before closing.
    send(
        &mut ws,
        &CoordinatorMsg::StartDyno(spec("d2", "worker.2", "sleep 100", &sha)),
    )
    .await;
    seen.until(&mut ws, "d2 up", |s| s.state("d2", DynoState::Up).is_some())
        .await;
    stop_tx.send(()).unwrap();
    seen.until(&mut ws, "d2 down", |s| {
        s.state("d2", DynoState::Down).is_some()
    })
    .await;
    let down = seen.state("d2", DynoState::Down).unwrap();
    assert_eq!(down.reason.as_deref(), Some("Agent shutting down"));
    seen.until(&mut ws, "the shutdown lines", |s| {
        s.logged("State changed from up to down")
    })
    .await;
    while recv(&mut ws).await.is_some() {}
    tokio::time::timeout(PATIENCE, agent)
        .await
        .expect("run returns after shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(
        std::fs::read_dir(state.path().join("dynos"))
            .unwrap()
            .count(),
        0,
        "every dyno directory is gone"
    );
}

#[tokio::test]
async fn refusals_are_retried_until_welcome() {
    let state = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = AgentConfig::new(
        format!("http://{}/", listener.local_addr().unwrap()),
        "wrong",
        state.path(),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(dyno_agent::run(config, async {
        let _ = stop_rx.await;
    }));

    refuse(&listener).await;
    let (mut ws, _, _) = accept(&listener).await;
    hello(&mut ws).await;
    send(
        &mut ws,
        &CoordinatorMsg::Error {
            message: "protocol version 1 is too old".into(),
        },
    )
    .await;
    drop(ws);
    let (mut ws, _, _) = accept(&listener).await;
    hello(&mut ws).await;
    send(&mut ws, &welcome()).await;
    let mut seen = Seen::default();
    seen.until(&mut ws, "a heartbeat", |s| {
        s.0.iter().any(|m| matches!(m, AgentMsg::Heartbeat { .. }))
    })
    .await;

    stop_tx.send(()).unwrap();
    while recv(&mut ws).await.is_some() {}
    tokio::time::timeout(PATIENCE, agent)
        .await
        .expect("run returns after shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_while_the_coordinator_is_away_still_stops_dynos() {
    let state = tempfile::tempdir().unwrap();
    // Nothing listens here: the agent keeps retrying in the background.
    let config = AgentConfig::new("http://127.0.0.1:1", "t", state.path());
    let result = tokio::time::timeout(
        PATIENCE,
        dyno_agent::run(config, tokio::time::sleep(Duration::from_millis(300))),
    )
    .await
    .expect("run returns after shutdown");
    result.unwrap();

    let bad = AgentConfig::new("localhost:7070", "t", state.path());
    let err = dyno_agent::run(bad, async {}).await.unwrap_err();
    assert!(err.to_string().contains("http://"), "{err}");
}
