//! The bodies of the fuzz targets: each takes one input and panics when an invariant breaks.
//!
//! Shared by the cargo-fuzz binaries (`fuzz/fuzz_targets/*.rs`) and the corpus replay test that
//! CI runs on stable (`router/tests/fuzz_corpus.rs`), both through `#[path]`. Only `dyno-shared`,
//! `dyno-router` and `serde_json` may be used here: those are what the replay test can reach.
#![allow(dead_code)]

use dyno_router::fuzzing;
use dyno_router::{Backend, RouteTable};
use dyno_shared::config::{self, ConfigError, ConfigVars, MAX_CONFIG_BYTES};
use dyno_shared::logline::{self, LogLine, LogSource, MAX_LINE_BYTES};
use dyno_shared::protocol::{AgentMsg, CoordinatorMsg, DecodeError, MAX_FRAME_BYTES};
use dyno_shared::scale::{self, Formation, MAX_QUANTITY, ScaleArg, ScaleError, ScaleOp};
use dyno_shared::{ProcessType, Procfile, ProcfileError, Size, time};
use std::collections::{BTreeMap, BTreeSet};

/// A target's body: panics when the input breaks an invariant.
pub type Check = fn(&[u8]);

/// Every target: its name (the fuzz binary and its `corpus/` directory) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("procfile", procfile),
    ("scale", scale),
    ("config", config),
    ("logline", logline),
    ("agent_msg", agent_msg),
    ("coordinator_msg", coordinator_msg),
    ("router_host", router_host),
    ("router_log", router_log),
];

// ---- Procfile ----

/// `Procfile::parse`: whatever parses holds valid, non-reserved types with trimmed one-line
/// commands, one per meaningful line; it parses again from its own `TYPE: COMMAND` rendering and
/// survives the JSON a release is stored as. Errors name a line that exists.
pub fn procfile(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lines = text.lines().count();
    match Procfile::parse(&text) {
        Err(err) => {
            let _ = err.to_string();
            match err {
                ProcfileError::Malformed { line, .. }
                | ProcfileError::BadType { line, .. }
                | ProcfileError::EmptyCommand { line, .. }
                | ProcfileError::Reserved { line } => assert!((1..=lines).contains(&line)),
                ProcfileError::Duplicate { line, first, .. } => {
                    assert!((1..=lines).contains(&line));
                    assert!((1..line).contains(&first));
                }
                ProcfileError::Empty => {}
                ProcfileError::TooLarge => {
                    assert!(text.len() > dyno_shared::procfile::MAX_PROCFILE_BYTES)
                }
                ProcfileError::Missing => panic!("parse never reports a missing Procfile"),
            }
        }
        Ok(p) => {
            assert!(!p.processes.is_empty());
            let meaningful = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .count();
            assert_eq!(p.processes.len(), meaningful, "one process type per line");
            for (ptype, command) in &p.processes {
                assert_eq!(ptype.as_str().parse::<ProcessType>().as_ref(), Ok(ptype));
                assert_ne!(ptype.as_str(), "run");
                assert!(!command.is_empty());
                assert_eq!(command.trim(), command);
                assert!(!command.contains('\n'));
                assert_eq!(p.command(ptype), Some(command.as_str()));
            }
            let rendered: String = p
                .processes
                .iter()
                .map(|(ptype, command)| format!("{ptype}: {command}\n"))
                .collect();
            assert_eq!(Procfile::parse(&rendered).as_ref(), Ok(&p), "{rendered:?}");
            let json = serde_json::to_string(&p).expect("a Procfile serializes");
            assert_eq!(
                serde_json::from_str::<Procfile>(&json).ok().as_ref(),
                Some(&p)
            );
        }
    }
}

// ---- ps:scale ----

/// `parse_scale_args` on the input's whitespace-separated words: every argument or none; what
/// parses prints and parses back to itself, with a valid size. Applied to an empty formation
/// (whose Procfile has every named type but `run`), the result or the error matches the
/// arguments, stays within the limits, and `to_scale_string` rebuilds it.
pub fn scale(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let args: Vec<&str> = text.split_whitespace().collect();
    let parsed = match scale::parse_scale_args(&args) {
        Err(err) => {
            let _ = err.to_string();
            if args.is_empty() {
                assert_eq!(err, ScaleError::Empty);
            }
            return;
        }
        Ok(parsed) => parsed,
    };
    assert_eq!(parsed.len(), args.len());
    let types: BTreeSet<&ProcessType> = parsed.iter().map(|a| &a.process_type).collect();
    assert_eq!(types.len(), parsed.len(), "a type named twice was accepted");
    for (arg, raw) in parsed.iter().zip(&args) {
        assert!(raw.starts_with(arg.process_type.as_str()));
        let (ScaleOp::Set(n) | ScaleOp::Add(n) | ScaleOp::Sub(n)) = arg.op;
        assert!(n < 1_000_000_000, "{raw}: at most 9 digits");
        if let Some(size) = arg.size {
            assert!(Size::ALL.contains(&size));
            assert_eq!(size.as_str().parse::<Size>(), Ok(size));
        }
        let shown = arg.to_string();
        assert_eq!(shown.parse::<ScaleArg>().as_ref(), Ok(arg), "{shown}");
    }

    let procfile_text: String = types
        .iter()
        .filter(|t| t.as_str() != "run")
        .map(|t| format!("{t}: run-{t}\n"))
        .collect();
    let procfile = Procfile::parse(&procfile_text).unwrap_or_default();
    let empty = Formation::default();
    match empty.apply(&parsed, &procfile) {
        Ok(formation) => {
            assert_formation_limits(&formation);
            assert_eq!(formation.entries.len(), parsed.len());
            for arg in &parsed {
                let entry = formation.entries[&arg.process_type];
                let expected = match arg.op {
                    ScaleOp::Set(n) | ScaleOp::Add(n) => n,
                    ScaleOp::Sub(n) => {
                        assert_eq!(n, 0, "scaled below 0");
                        0
                    }
                };
                assert_eq!(entry.quantity, expected);
                assert_eq!(entry.size, arg.size.unwrap_or_default());
            }
            if !formation.entries.is_empty() {
                let again = formation.to_scale_string();
                let words: Vec<&str> = again.split_whitespace().collect();
                let reparsed = scale::parse_scale_args(&words).expect("to_scale_string parses");
                assert_eq!(empty.apply(&reparsed, &procfile).as_ref(), Ok(&formation));
            }
            // Again from there: relative changes now start from the first result.
            if let Ok(twice) = formation.apply(&parsed, &procfile) {
                assert_formation_limits(&twice);
            }
        }
        Err(err) => match &err {
            ScaleError::UnknownType { ptype, .. } => {
                assert!(!procfile.processes.keys().any(|k| k.as_str() == ptype));
            }
            ScaleError::Negative { ptype, current } => {
                assert_eq!(*current, 0);
                assert!(parsed.iter().any(|a| a.process_type.as_str() == ptype
                    && matches!(a.op, ScaleOp::Sub(n) if n > 0)));
            }
            ScaleError::TooMany { quantity, .. } => assert!(*quantity > i64::from(MAX_QUANTITY)),
            ScaleError::NotHorizontal { size, .. } => assert!(!size.scales_horizontally()),
            other => panic!("apply cannot fail with {other:?}"),
        },
    }
}

fn assert_formation_limits(formation: &Formation) {
    for entry in formation.entries.values() {
        assert!(entry.quantity <= MAX_QUANTITY);
        assert!(entry.quantity <= 1 || entry.size.scales_horizontally());
    }
}

// ---- config vars ----

/// Each line is `KEY=VALUE` (`parse_assignment`) or `-KEY` (an unset). An assignment that
/// parses has a valid key and renders back to its line; one that does not is rejected for the
/// right reason. All lines applied as one change: a valid result has valid keys, no NUL, fits
/// the size limit, holds exactly the change, is a fixed point of the change and survives JSON.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut changes: BTreeMap<String, Option<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(key) = line.strip_prefix('-') {
            changes.insert(key.to_string(), None);
            continue;
        }
        match config::parse_assignment(line) {
            Ok((key, value)) => {
                assert_eq!(config::validate_key(&key), Ok(()));
                assert!(!key.contains('='));
                assert_eq!(format!("{key}={value}"), line);
                changes.insert(key, Some(value));
            }
            Err(err) => {
                let _ = err.to_string();
                match line.split_once('=') {
                    None => assert_eq!(err, ConfigError::Syntax(line.to_string())),
                    Some((key, _)) => assert_eq!(Err(err), config::validate_key(key)),
                }
            }
        }
    }
    let base = ConfigVars::default();
    match base.apply(&changes) {
        Ok(vars) => {
            assert!(vars.total_bytes() <= MAX_CONFIG_BYTES);
            for (key, value) in &vars.0 {
                assert_eq!(config::validate_key(key), Ok(()));
                assert!(!value.contains('\0'));
            }
            for (key, change) in &changes {
                assert_eq!(vars.0.get(key), change.as_ref());
            }
            assert_eq!(
                vars.0.len(),
                changes.values().filter(|v| v.is_some()).count()
            );
            assert_eq!(vars.apply(&changes).as_ref(), Ok(&vars));
            let json = serde_json::to_string(&vars).expect("config vars serialize");
            assert_eq!(
                serde_json::from_str::<ConfigVars>(&json).ok().as_ref(),
                Some(&vars)
            );
        }
        Err(err) => {
            let _ = err.to_string();
            match &err {
                ConfigError::BadKey(key) | ConfigError::Reserved(key) => {
                    assert!(changes.contains_key(key));
                    assert_eq!(config::validate_key(key).as_ref(), Err(&err));
                }
                ConfigError::Nul(key) => {
                    assert!(changes[key].as_deref().is_some_and(|v| v.contains('\0')));
                }
                ConfigError::TooLarge(total) => assert!(*total > MAX_CONFIG_BYTES),
                ConfigError::Syntax(_) => panic!("apply never reports syntax"),
            }
        }
    }
}

// ---- log lines and timestamps ----

/// `split_long` (an output line cut into stored lines), `LogSource::parse`, `parse_iso` on the
/// input, and `LogLine::render` of a line built from it: pieces are at most `MAX_LINE_BYTES`,
/// cut as late as a char boundary allows, and concatenate back to the input; a source parses
/// back from its name; a rendered line ends with `[process]: message`, and in years 0-9999 its
/// timestamp is RFC 3339 that `parse_iso` reads back.
pub fn logline(data: &[u8]) {
    let (at, rest) = match data.split_first_chunk::<8>() {
        Some((at, rest)) => (i64::from_le_bytes(*at), rest),
        None => (0, data),
    };
    let text = String::from_utf8_lossy(rest);

    let pieces = logline::split_long(&text);
    assert!(!pieces.is_empty());
    assert_eq!(pieces.concat(), text);
    for (i, piece) in pieces.iter().enumerate() {
        assert!(piece.len() <= MAX_LINE_BYTES);
        if i + 1 < pieces.len() {
            // Only backs off to the char boundary before the limit.
            assert!(piece.len() > MAX_LINE_BYTES - 4);
        }
    }

    for word in text.split_whitespace().take(16) {
        if let Some(source) = LogSource::parse(word) {
            let name = if word == "heroku" { "system" } else { word };
            assert_eq!(source.as_str(), name);
        }
        let _ = time::parse_iso(word);
    }
    let _ = time::parse_iso(&text);

    let (process, message) = text.split_once('\n').unwrap_or(("web.1", &text));
    for source in [LogSource::App, LogSource::System, LogSource::Router] {
        let line = LogLine {
            at,
            app: "shop".to_string(),
            source,
            process: process.to_string(),
            message: message.to_string(),
        };
        let rendered = line.render();
        assert!(rendered.ends_with(&format!("[{process}]: {message}")));
        let stamp = time::rfc3339_micros(at);
        assert!(rendered.starts_with(&format!("{stamp} ")));
        // 0000-01-01T00:00:00Z ..= 9999-12-31T23:59:59.999999Z
        if (-62_167_219_200_000_000..=253_402_300_799_999_999).contains(&at) {
            assert_eq!(stamp.len(), 32, "{stamp}");
            assert_eq!(time::parse_iso(&stamp), Some(at.div_euclid(1_000_000)));
            let secs = at.div_euclid(1_000_000);
            assert_eq!(time::parse_iso(&time::iso_secs(secs)), Some(secs));
        }
    }
}

// ---- agent protocol ----

/// A frame from an agent, as the coordinator reads it (`AgentMsg::decode`). What decodes agrees
/// with plain serde decoding (the `logs` fast path must not change the meaning of a frame),
/// re-encodes tag first and decodes to the same message; what the coordinator then does with
/// it (render log lines, report errors) does not panic.
pub fn agent_msg(data: &[u8]) {
    // Websocket text frames are UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let decoded = AgentMsg::decode(text);
    if text.len() <= MAX_FRAME_BYTES {
        let general = serde_json::from_str::<AgentMsg>(text);
        match (&decoded, &general) {
            (Ok(fast), Ok(plain)) => assert_eq!(fast, plain),
            (Err(err), Ok(plain)) => {
                panic!("decode refuses a frame serde reads as {plain:?}: {err}")
            }
            (Ok(fast), Err(err)) => {
                panic!("decode reads {fast:?} from a frame serde refuses: {err}")
            }
            (Err(_), Err(_)) => {}
        }
    }
    let msg = match decoded {
        Ok(msg) => msg,
        Err(err) => {
            assert_decode_error(&err, text);
            return;
        }
    };
    let encoded = msg.encode();
    assert!(encoded.starts_with(r#"{"type":""#), "{encoded}");
    assert_eq!(
        AgentMsg::decode(&encoded).ok().as_ref(),
        Some(&msg),
        "{encoded}"
    );
    match &msg {
        AgentMsg::Logs { lines } => {
            for line in lines {
                let _ = line.render();
                let _ = logline::split_long(&line.message);
            }
        }
        AgentMsg::DynoState(status) => {
            let _ = status.state.as_str();
        }
        AgentMsg::Hello(hello) => {
            let _ = hello.isolation.as_str();
            for status in &hello.dynos {
                let _ = status.state.as_str();
            }
        }
        AgentMsg::Heartbeat { .. } | AgentMsg::Stats { .. } | AgentMsg::Error { .. } => {}
    }
}

/// A frame from the coordinator, as the agent reads it (`CoordinatorMsg::decode`): what decodes
/// re-encodes tag first and decodes to the same message; a dyno spec's check validates or not
/// without panicking.
pub fn coordinator_msg(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let msg = match CoordinatorMsg::decode(text) {
        Ok(msg) => msg,
        Err(err) => {
            assert_decode_error(&err, text);
            return;
        }
    };
    let encoded = msg.encode();
    assert!(encoded.starts_with(r#"{"type":""#), "{encoded}");
    assert_eq!(
        CoordinatorMsg::decode(&encoded).ok().as_ref(),
        Some(&msg),
        "{encoded}"
    );
    if let CoordinatorMsg::StartDyno(spec) = &msg {
        let _ = spec.is_web();
        if let Some(check) = &spec.check {
            let _ = check.validate();
        }
    }
}

fn assert_decode_error(err: &DecodeError, text: &str) {
    // Both sides send this text back as an `error` frame.
    let _ = err.to_string();
    if let DecodeError::TooLarge(len) = err {
        assert_eq!(*len, text.len());
        assert!(*len > MAX_FRAME_BYTES);
    }
}

// ---- router ----

/// A script against the route table, one command a line:
///
/// ```text
/// app NAME                  set_backends (one backend)
/// remove NAME               remove_app
/// maintenance NAME on|off   set_maintenance
/// domains NAME D1,D2,...    set_domains (the rest of the line, split at commas)
/// suffix .DOMAIN            the domain suffix of later queries (default `.localhost`)
/// host HOST                 route HOST (the rest of the line, verbatim)
/// ```
///
/// Every `host` answer matches a model of the table (custom domain, then `APP.DOMAIN`, then a
/// wildcard custom domain); at the end every app's own host and every exact custom domain
/// routes to its owner, and `domains` lists what was last set.
pub fn router_host(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let table = RouteTable::new();
    let mut model = RouteModel::default();
    let mut suffix = ".localhost".to_string();
    for line in text.lines().take(64) {
        let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
        let (name, args) = rest.split_once(' ').unwrap_or((rest, ""));
        match command {
            "app" => {
                let backend = Backend {
                    dyno: "web.1".to_string(),
                    addr: ([127, 0, 0, 1], 5000).into(),
                };
                table.set_backends(name, vec![backend]);
                model.apps.insert(name.to_string());
            }
            "remove" => {
                table.remove_app(name);
                model.apps.remove(name);
                model.set.remove(name);
                model.domains.retain(|_, owner| owner != name);
            }
            "maintenance" => {
                let on = args == "on";
                table.set_maintenance(name, on);
                if on {
                    model.apps.insert(name.to_string());
                }
            }
            "domains" => {
                let listed: Vec<String> = args.split(',').map(str::to_string).collect();
                table.set_domains(name, listed.clone());
                let normal: Vec<String> = listed
                    .iter()
                    .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
                    .filter(|d| !d.is_empty())
                    .collect();
                model.apps.insert(name.to_string());
                model.domains.retain(|_, owner| owner != name);
                for domain in &normal {
                    model.domains.insert(domain.clone(), name.to_string());
                }
                model.set.insert(name.to_string(), normal);
            }
            "suffix" => suffix = rest.to_string(),
            "host" => assert_route(&table, &model, rest, &suffix),
            _ => {}
        }
    }
    for (domain, owner) in &model.domains {
        assert!(
            model.apps.contains(owner),
            "{domain} is owned by a removed app"
        );
        assert_route(&table, &model, domain, &suffix);
        if !domain.starts_with("*.") {
            assert_eq!(
                fuzzing::route(&table, domain, &suffix).as_ref(),
                Some(owner)
            );
        }
    }
    for app in &model.apps {
        assert_route(&table, &model, &format!("{app}{suffix}"), &suffix);
        let set = model.set.get(app).cloned().unwrap_or_default();
        assert_eq!(table.domains(app), set);
    }
}

#[derive(Default)]
struct RouteModel {
    /// Apps in the table.
    apps: BTreeSet<String>,
    /// Custom domain (normalised) -> owning app.
    domains: BTreeMap<String, String>,
    /// Each app's custom domains as last set (normalised).
    set: BTreeMap<String, Vec<String>>,
}

impl RouteModel {
    fn route(&self, host: &str, suffix: &str) -> Option<String> {
        if let Some(owner) = self.domains.get(host) {
            return self.apps.get(owner).cloned();
        }
        if let Some(app) = host.strip_suffix(suffix)
            && !app.is_empty()
            && !app.contains('.')
        {
            return self.apps.get(app).cloned();
        }
        let (_, parent) = host.split_once('.')?;
        let owner = self.domains.get(&format!("*.{parent}"))?;
        self.apps.get(owner).cloned()
    }
}

fn assert_route(table: &RouteTable, model: &RouteModel, host: &str, suffix: &str) {
    let got = fuzzing::route(table, host, suffix);
    assert_eq!(
        got,
        model.route(host, suffix),
        "host {host:?} suffix {suffix:?}"
    );
    if let Some(app) = &got {
        assert!(model.apps.contains(app));
    }
}

/// Request fields, one a line: method, path, host, X-Request-Id, X-Forwarded-For. A client's
/// request id is kept exactly when it is 20-200 of `[A-Za-z0-9+/=-]`; in the router's log line
/// the forwarded-for value (the client's to choose) stays inside its quotes, with quotes and
/// backslashes removed.
pub fn router_log(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.splitn(5, '\n');
    let mut next = || fields.next().unwrap_or("");
    let (method, path, host, id, fwd) = (next(), next(), next(), next(), next());

    let valid = (20..=200).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-'));
    assert_eq!(fuzzing::valid_request_id(id), valid, "{id:?}");
    // The router replaces an invalid id with a generated UUID.
    let id = if valid {
        id
    } else {
        "00000000-0000-0000-0000-000000000000"
    };

    let line = fuzzing::log_line(method, path, host, id, fwd);
    let head = format!("at=info method={method} path={path} host={host} request_id={id} fwd=\"");
    let value = line.strip_prefix(&head).expect("fields in order");
    let shown: String = fwd.chars().filter(|c| !matches!(c, '"' | '\\')).collect();
    assert_eq!(
        value,
        format!("{shown}\" dyno=web.1 connect=0ms service=0ms status=200 bytes=0 protocol=http")
    );
}
