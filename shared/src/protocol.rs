//! The agent <-> coordinator protocol: JSON text frames over a websocket at `/agent/ws`,
//! authenticated with `Authorization: Bearer TOKEN`.
//!
//! The agent's first frame is `Hello` (carrying `protocol_version`); the coordinator answers
//! `Welcome` or `Error` and closes. Unknown fields are ignored; an unknown message type is
//! answered with `Error`, never a crash.

use crate::logline::LogLine;
use crate::size::Size;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const PROTOCOL_VERSION: u32 = 1;
/// Largest websocket frame either side accepts.
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// How often an agent sends `Heartbeat`.
pub const HEARTBEAT_INTERVAL_MS: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Plain processes: own process group and rlimits only.
    None,
    /// Namespaces and cgroups.
    Linux,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::None => "none",
            Isolation::Linux => "linux",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DynoState {
    Starting,
    Up,
    Crashed,
    Idle,
    Down,
}

impl DynoState {
    pub fn as_str(self) -> &'static str {
        match self {
            DynoState::Starting => "starting",
            DynoState::Up => "up",
            DynoState::Crashed => "crashed",
            DynoState::Idle => "idle",
            DynoState::Down => "down",
        }
    }
    pub fn is_running(self) -> bool {
        matches!(self, DynoState::Starting | DynoState::Up)
    }
}

/// Everything an agent needs to start one dyno.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynoSpec {
    /// Unique per dyno instance; a replacement gets a new id, a crash restart keeps it.
    pub dyno_id: String,
    pub app: String,
    /// `web.1`, `run.3`.
    pub name: String,
    pub process_type: String,
    pub release: u32,
    /// sha256 hex of the slug, fetched from `GET /slugs/{sha256}`.
    pub slug: String,
    pub command: String,
    /// The app's config vars; the agent adds PORT (web only), DYNO, HOME and PATH.
    pub env: BTreeMap<String, String>,
    pub size: Size,
    /// One-off dynos are never restarted and report `Down` with their exit code.
    pub one_off: bool,
    /// Which start of this dyno this is (the coordinator counts starts per dyno); echoed in every
    /// status, so a late report of an earlier start is recognised as stale. 0: not known.
    #[serde(default)]
    pub generation: u32,
    /// How the agent watches the dyno once it is up (`checks:set`). Web dynos without one get
    /// [`HealthCheck::default_web`].
    #[serde(default)]
    pub check: Option<HealthCheck>,
}

/// A responsiveness check the agent runs on an up dyno every `interval_ms`. One failure takes a
/// web dyno out of the router; `failures` in a row kill it (and the manager restarts it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Web: `GET path` on `$PORT` must answer below 500 within `timeout_ms`. Without a path
    /// (and without `file`), `$PORT` must accept a connection.
    #[serde(default)]
    pub path: Option<String>,
    /// Worker heartbeat: this file under `/app` must have been modified within `timeout_ms`.
    #[serde(default)]
    pub file: Option<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub failures: u32,
}

impl HealthCheck {
    /// Every web dyno's check unless one is set: `$PORT` accepts, every 5 s, 3 strikes.
    pub fn default_web() -> HealthCheck {
        HealthCheck {
            path: None,
            file: None,
            interval_ms: 5_000,
            timeout_ms: 2_000,
            failures: 3,
        }
    }

    /// Why this check cannot work, if it cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.path.is_some() && self.file.is_some() {
            return Err("a check has a path (web) or a file (worker heartbeat), not both".into());
        }
        if let Some(p) = &self.path
            && (!p.starts_with('/') || p.len() > 1024 || p.bytes().any(|b| b <= b' ' || b == 0x7f))
        {
            return Err(format!(
                "invalid check path {p:?}: it must start with / and hold no spaces or control characters"
            ));
        }
        if let Some(f) = &self.file
            && (f.is_empty()
                || f.len() > 1024
                || f.split('/').any(|c| c == "..")
                || f.contains('\0'))
        {
            return Err(format!(
                "invalid heartbeat file {f:?}: a path under /app without `..`"
            ));
        }
        if !(100..=3_600_000).contains(&self.interval_ms) {
            return Err("interval must be between 0.1 s and 1 hour".into());
        }
        if !(100..=3_600_000).contains(&self.timeout_ms) {
            return Err("timeout must be between 0.1 s and 1 hour".into());
        }
        if !(1..=100).contains(&self.failures) {
            return Err("failures must be between 1 and 100".into());
        }
        Ok(())
    }
}

impl DynoSpec {
    pub fn is_web(&self) -> bool {
        self.process_type == "web" && !self.one_off
    }
}

/// The state of one dyno as its agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynoStatus {
    pub dyno_id: String,
    pub state: DynoState,
    /// The web dyno's `$PORT` on the agent's address.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub pid: Option<u32>,
    /// Exit status for `crashed`/`down`; 128+N for signal N.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Unix microseconds of the change.
    pub at: i64,
    /// Why, in words (`Boot timeout`, `Process exited`).
    #[serde(default)]
    pub reason: Option<String>,
    /// The `generation` of the spec this start ran; 0 when not known.
    #[serde(default)]
    pub generation: u32,
    /// False while an up dyno fails its health check: the router leaves it out.
    #[serde(default = "healthy_default")]
    pub healthy: bool,
}

fn healthy_default() -> bool {
    true
}

/// One sample of a running dyno's resource use, sent every few seconds (latest values only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynoStats {
    pub dyno_id: String,
    /// Unix microseconds of the sample.
    pub at: i64,
    /// Anonymous memory (RSS).
    #[serde(default)]
    pub memory_rss_bytes: u64,
    /// Page cache; 0 where the runtime cannot tell.
    #[serde(default)]
    pub memory_cache_bytes: u64,
    #[serde(default)]
    pub memory_swap_bytes: u64,
    /// The dyno size's quota (R14 above it).
    #[serde(default)]
    pub memory_quota_bytes: u64,
    /// CPU time of all the dyno's processes since it started; a rate needs two samples.
    #[serde(default)]
    pub cpu_usage_usec: u64,
    /// Processes and threads.
    #[serde(default)]
    pub pids: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u32,
    /// Host name, unique among agents.
    pub name: String,
    /// The address web dynos' ports are reachable on from the router.
    pub address: String,
    pub memory_mb: u64,
    pub cpus: u32,
    pub isolation: Isolation,
    pub agent_version: String,
    /// Every dyno the agent runs right now, so a returning coordinator adopts instead of restarting.
    pub dynos: Vec<DynoStatus>,
    /// The operator's labels for this host (`--label disk=ssd`); formations can require one.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Parses a host label `KEY=VALUE` (letters, digits, `.`, `_`, `-`; 1-63 bytes each).
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let ok = |p: &str| {
        (1..=63).contains(&p.len())
            && p.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    };
    match s.split_once('=') {
        Some((k, v)) if ok(k) && ok(v) => Ok((k.to_string(), v.to_string())),
        _ => Err(format!(
            "invalid label {s:?}: expected KEY=VALUE of letters, digits, '.', '_' and '-'"
        )),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMsg {
    Hello(Hello),
    Heartbeat {
        at: i64,
        /// The host's 1-minute load average (`/proc/loadavg`), when the agent can read it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        load_1m: Option<f64>,
    },
    DynoState(DynoStatus),
    Logs {
        lines: Vec<LogLine>,
    },
    /// The latest sample of every running dyno of the agent.
    Stats {
        stats: Vec<DynoStats>,
    },
    Error {
        message: String,
    },
}

// StartDyno is most of the traffic and is built to be sent at once: boxing it saves nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CoordinatorMsg {
    Welcome {
        protocol_version: u32,
        host_id: String,
        /// This host's own credential, issued when it joined with a join (or operator) token:
        /// the agent keeps it and presents it from then on; `hosts:remove` revokes it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential: Option<String>,
    },
    /// Idempotent: a dyno already running under this id is left alone.
    StartDyno(DynoSpec),
    /// SIGTERM to the dyno, SIGKILL after `grace_ms`; answered with `DynoState` `down`.
    StopDyno {
        dyno_id: String,
        grace_ms: u64,
    },
    Error {
        message: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {0} bytes is over the limit of {MAX_FRAME_BYTES}")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
}

fn decode<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, DecodeError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(DecodeError::TooLarge(text.len()));
    }
    Ok(serde_json::from_str(text)?)
}

/// The body of a `logs` frame, parsed directly: the tagged enum would buffer every line of
/// the frame into an intermediate tree first, the agent protocol's hottest path.
#[derive(Deserialize)]
struct LogsFrame {
    /// Declared so a second `type` is an error here too, as on the general path.
    #[serde(rename = "type")]
    _tag: LogsTag,
    lines: Vec<LogLine>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum LogsTag {
    Logs,
}

impl AgentMsg {
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        // Agents put the tag first; any other spelling takes the general path.
        if text.starts_with(r#"{"type":"logs","#) && text.len() <= MAX_FRAME_BYTES {
            let frame: LogsFrame = serde_json::from_str(text)?;
            return Ok(AgentMsg::Logs { lines: frame.lines });
        }
        decode(text)
    }
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("agent messages always serialize")
    }
}

impl CoordinatorMsg {
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        decode(text)
    }
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("coordinator messages always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_frames_decode_on_the_fast_path_and_the_general_one() {
        let line = LogLine {
            at: 1,
            app: "shop".into(),
            source: crate::LogSource::App,
            process: "web.1".into(),
            message: "hi".into(),
        };
        let m = AgentMsg::Logs {
            lines: vec![line.clone(), line],
        };
        let text = m.encode();
        assert!(text.starts_with(r#"{"type":"logs","#), "{text}");
        assert_eq!(AgentMsg::decode(&text).unwrap(), m);
        // Tag last: the general path.
        let body = &text[r#"{"type":"logs","#.len()..text.len() - 1];
        let tag_last = format!(r#"{{{body},"type":"logs"}}"#);
        assert_eq!(AgentMsg::decode(&tag_last).unwrap(), m);
        // A malformed logs frame is an error, not a panic.
        assert!(AgentMsg::decode(r#"{"type":"logs","lines":[{"at":"x"}]}"#).is_err());
    }

    #[test]
    fn round_trips_and_ignores_unknown_fields() {
        let m = AgentMsg::Heartbeat {
            at: 5,
            load_1m: None,
        };
        assert_eq!(AgentMsg::decode(&m.encode()).unwrap(), m);
        let m = AgentMsg::decode(r#"{"type":"heartbeat","at":7,"future_field":1}"#).unwrap();
        assert_eq!(
            m,
            AgentMsg::Heartbeat {
                at: 7,
                load_1m: None
            }
        );
        let stop = CoordinatorMsg::StopDyno {
            dyno_id: "d1".into(),
            grace_ms: 30_000,
        };
        assert_eq!(
            stop.encode(),
            r#"{"type":"stop_dyno","dyno_id":"d1","grace_ms":30000}"#
        );
    }

    #[test]
    fn stats_round_trip_and_default_missing_figures() {
        let m = AgentMsg::Stats {
            stats: vec![DynoStats {
                dyno_id: "d1".into(),
                at: 9,
                memory_rss_bytes: 1 << 20,
                memory_cache_bytes: 2,
                memory_swap_bytes: 3,
                memory_quota_bytes: 512 << 20,
                cpu_usage_usec: 1500,
                pids: 4,
            }],
        };
        assert_eq!(AgentMsg::decode(&m.encode()).unwrap(), m);
        let m = AgentMsg::decode(
            r#"{"type":"stats","stats":[{"dyno_id":"d2","at":1,"memory_rss_bytes":5,"gpu":1}]}"#,
        )
        .unwrap();
        let AgentMsg::Stats { stats } = m else {
            panic!("{m:?}")
        };
        assert_eq!((stats[0].memory_rss_bytes, stats[0].pids), (5, 0));
    }

    #[test]
    fn rejects_unknown_types_and_garbage() {
        let e = AgentMsg::decode(r#"{"type":"launch_missiles"}"#).unwrap_err();
        assert!(e.to_string().contains("launch_missiles"), "{e}");
        assert!(AgentMsg::decode("{not json").is_err());
        // The logs fast path refuses a second tag as the general path does.
        let twice = AgentMsg::decode(r#"{"type":"logs","type":"heartbeat","lines":[]}"#);
        assert!(twice.unwrap_err().to_string().contains("duplicate field"));
        let big = " ".repeat(MAX_FRAME_BYTES + 1);
        assert!(matches!(
            AgentMsg::decode(&big),
            Err(DecodeError::TooLarge(_))
        ));
    }
}
