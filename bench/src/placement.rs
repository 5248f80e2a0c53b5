//! Placement throughput of the coordinator: 1,000 simulated agents (websocket clients speaking
//! the agent protocol, answering each `StartDyno` at once with `starting` then `up`) and 10,000
//! dynos (10 apps scaled to web=500 worker=500). Prints the time until every start order reached
//! an agent (placement) and until the coordinator records every dyno `up`, as dynos per second,
//! and the coordinator's RSS and CPU time at that size. Nomad's C1M placed 3,750 dynos/s.
//!
//! Run: `cargo build --release --workspace && ./target/release/bench-placement [AGENTS] [DYNOS]`

use dyno_shared::protocol::{
    AgentMsg, CoordinatorMsg, DynoState, DynoStatus, Hello, Isolation, PROTOCOL_VERSION,
};
use dyno_shared::time::now_micros;
use dyno_tests::{Platform, free_port, wait_until};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const APPS: usize = 10;

/// One simulated agent: says hello, heartbeats, and reports every ordered dyno up at once.
async fn agent(url: String, token: String, i: usize, started: Arc<AtomicU64>) {
    let mut req = url.into_client_request().expect("ws url");
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("agent connects");
    let (mut sink, mut stream) = ws.split();
    let hello = AgentMsg::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        name: format!("sim-{i:04}"),
        address: "127.0.0.1".into(),
        memory_mb: 16 * 1024,
        cpus: 8,
        isolation: Isolation::None,
        agent_version: "bench".into(),
        dynos: Vec::new(),
        labels: Default::default(),
    });
    sink.send(Message::text(hello.encode())).await.unwrap();
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    let mut port = 10_000u16;
    loop {
        tokio::select! {
            _ = beat.tick() => {
                let hb = AgentMsg::Heartbeat {
                    at: now_micros(),
                    load_1m: None,
                };
                if sink.send(Message::text(hb.encode())).await.is_err() { return; }
            }
            frame = stream.next() => {
                let Some(Ok(Message::Text(t))) = frame else { return };
                let Ok(msg) = CoordinatorMsg::decode(&t) else { continue };
                let replies = match msg {
                    CoordinatorMsg::StartDyno(spec) => {
                        started.fetch_add(1, Ordering::Relaxed);
                        port = port.wrapping_add(1);
                        let web = spec.is_web();
                        let status = |state| DynoStatus {
                            dyno_id: spec.dyno_id.clone(),
                            state,
                            port: web.then_some(port),
                            pid: Some(1),
                            exit_code: None,
                            at: now_micros(),
                            reason: None,
                            generation: spec.generation,
                            healthy: true,
                        };
                        vec![status(DynoState::Starting), status(DynoState::Up)]
                    }
                    CoordinatorMsg::StopDyno { dyno_id, .. } => vec![DynoStatus {
                        dyno_id,
                        state: DynoState::Down,
                        port: None,
                        pid: None,
                        exit_code: Some(0),
                        at: now_micros(),
                        reason: Some("Stopped".into()),
                        generation: 0,
                        healthy: true,
                    }],
                    _ => Vec::new(),
                };
                for s in replies {
                    if sink.send(Message::text(AgentMsg::DynoState(s).encode())).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// (RSS in MB, CPU seconds) of a process.
fn usage(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    // /proc reports CPU time in USER_HZ ticks, 100 per second on Linux.
    let hz = 100.0;
    (rss_kb / 1024.0, ticks / hz)
}

fn count_up(p: &Platform) -> (usize, usize) {
    let (mut up, mut all) = (0, 0);
    for a in 0..APPS {
        let dynos = p.dynos(&format!("app{a}"));
        all += dynos.len();
        up += dynos.iter().filter(|d| d["state"] == "up").count();
    }
    (up, all)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let agents: usize = args.next().map_or(Ok(1000), |s| s.parse())?;
    let dynos: usize = args.next().map_or(Ok(10_000), |s| s.parse())?;
    let per_type = dynos / APPS / 2;
    let mut p = Platform {
        dir: tempfile::tempdir()?,
        api_port: free_port(),
        router_port: free_port(),
        token: format!("bench-{}", std::process::id()),
        coordinator: None,
        agent: None,
        crash_backoff: "0,1,2".into(),
        agent_args: Vec::new(),
        coordinator_args: Vec::new(),
        listen_ip: "127.0.0.1".into(),
    };
    p.start_coordinator();
    let pid = p.coordinator.as_ref().expect("coordinator").id();
    for a in 0..APPS {
        p.deploy(
            &format!("app{a}"),
            "web: dyno-probe web\nworker: dyno-probe worker\n",
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let started = Arc::new(AtomicU64::new(0));
    let url = format!("ws://127.0.0.1:{}/agent/ws", p.api_port);
    let t_connect = Instant::now();
    for i in 0..agents {
        rt.spawn(agent(url.clone(), p.token.clone(), i, started.clone()));
    }
    wait_until("agents connected", Duration::from_secs(120), || {
        let hosts = p.get("/hosts").ok()?;
        let n = hosts
            .as_array()?
            .iter()
            .filter(|h| h["state"] == "connected")
            .count();
        (n == agents).then_some(())
    });
    let connected_in = t_connect.elapsed();
    let (rss_idle, cpu_idle) = usage(pid);

    let t0 = Instant::now();
    for a in 0..APPS {
        ureq::post(&format!("{}/apps/app{a}/formation/scale", p.url()))
            .set("Authorization", &format!("Bearer {}", p.token))
            .send_json(serde_json::json!({
                "args": [format!("web={per_type}"), format!("worker={per_type}")]
            }))?;
    }
    let total = (per_type * 2 * APPS) as u64;
    while started.load(Ordering::Relaxed) < total {
        std::thread::sleep(Duration::from_millis(5));
        if t0.elapsed() > Duration::from_secs(600) {
            anyhow::bail!(
                "only {} of {total} placed after 600 s",
                started.load(Ordering::Relaxed)
            );
        }
    }
    let placed_in = t0.elapsed();
    loop {
        if count_up(&p) == (total as usize, total as usize) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(900),
            "dynos not all up after 900 s"
        );
    }
    let up_in = t0.elapsed();
    let (rss, cpu) = usage(pid);
    println!(
        "bench-placement: {agents} simulated agents, {total} dynos in {APPS} apps; {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "agents connected          {:>8.2} s",
        connected_in.as_secs_f64()
    );
    println!(
        "all start orders sent     {:>8.2} s   {:>8.0} dynos/s placed",
        placed_in.as_secs_f64(),
        total as f64 / placed_in.as_secs_f64()
    );
    println!(
        "all recorded up           {:>8.2} s   {:>8.0} dynos/s up",
        up_in.as_secs_f64(),
        total as f64 / up_in.as_secs_f64()
    );
    println!(
        "coordinator RSS           {rss_idle:>8.1} MB with the agents idle, {rss:.1} MB with every dyno up"
    );
    println!(
        "coordinator CPU           {:>8.2} s for the placement ({:.2} s before it)",
        cpu - cpu_idle,
        cpu_idle
    );
    rt.shutdown_background();
    Ok(())
}
