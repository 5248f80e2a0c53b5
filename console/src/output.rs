//! Text layouts of the CLI, as pure functions of the API's data (heroku CLI shapes).

use dyno_shared::LogLine;
use dyno_shared::Size;
use dyno_shared::api::{App, Dyno, FormationItem, Host, Release};
use dyno_shared::time::{ago, parse_iso, ps_time, rfc3339_micros};
use std::collections::BTreeMap;

/// `2026/11/23 15:08:07 +0000 (~ 30m ago)`, or the raw text if it is not a timestamp.
pub fn when(iso: &str, now: i64) -> String {
    match parse_iso(iso) {
        Some(t) => format!("{} ({})", ps_time(t), ago(now - t)),
        None => iso.to_string(),
    }
}

/// `Standard-1X`, `Performance-M`, `Eco`: how heroku prints sizes in prose.
pub fn display_size(size: Size) -> String {
    let s = size.as_str();
    match s.split_once('-') {
        Some((a, b)) => format!("{}-{}", capitalize(a), b.to_ascii_uppercase()),
        None => capitalize(s),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn dyno_index(d: &Dyno) -> u64 {
    d.name
        .rsplit_once('.')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// The `heroku ps` layout: formation dynos grouped by type, size and command, then one-offs.
pub fn ps(dynos: &[Dyno], now: i64) -> String {
    let mut sorted: Vec<&Dyno> = dynos.iter().collect();
    sorted.sort_by(|a, b| {
        (a.one_off, &a.process_type, dyno_index(a)).cmp(&(
            b.one_off,
            &b.process_type,
            dyno_index(b),
        ))
    });
    // Keys in first-seen order, so types stay alphabetical and one-offs come last.
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for d in sorted {
        let (key, line) = if d.one_off {
            (
                "run: one-off processes".to_string(),
                format!(
                    "{} ({}): {} {}: {}",
                    d.name,
                    d.size,
                    d.state,
                    when(&d.updated_at, now),
                    d.command
                ),
            )
        } else {
            (
                format!("{} ({}): {}", d.process_type, d.size, d.command),
                format!("{}: {} {}", d.name, d.state, when(&d.updated_at, now)),
            )
        };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, lines)) => lines.push(line),
            None => groups.push((key, vec![line])),
        }
    }
    let mut out = String::new();
    for (i, (key, lines)) in groups.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("=== {key} ({})\n", lines.len()));
        for l in lines {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// `web=2:standard-1x worker=1:standard-1x`, re-usable as `ps:scale` input.
pub fn formation(items: &[FormationItem]) -> String {
    let mut items: Vec<&FormationItem> = items.iter().collect();
    items.sort_by(|a, b| a.process_type.cmp(&b.process_type));
    items
        .iter()
        .map(|f| format!("{}={}:{}", f.process_type, f.quantity, f.size))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `Scaling dynos... done, now running web at 3:Standard-2X, worker at 1:Standard-1X`, listing
/// the types named in the command, as heroku does.
pub fn scale_done(items: &[FormationItem], changed: &[String]) -> String {
    let mut items: Vec<&FormationItem> = items
        .iter()
        .filter(|f| changed.is_empty() || changed.contains(&f.process_type))
        .collect();
    items.sort_by(|a, b| a.process_type.cmp(&b.process_type));
    let parts: Vec<String> = items
        .iter()
        .map(|f| {
            format!(
                "{} at {}:{}",
                f.process_type,
                f.quantity,
                display_size(f.size)
            )
        })
        .collect();
    format!("Scaling dynos... done, now running {}", parts.join(", "))
}

/// `KEY: value` lines with the values aligned; continuation lines of multi-line values too.
pub fn config_vars(vars: &BTreeMap<String, String>) -> String {
    let width = vars.keys().map(|k| k.chars().count()).max().unwrap_or(0) + 2;
    let mut out = String::new();
    for (k, v) in vars {
        let label = format!("{k}:");
        let mut lines = v.split('\n');
        out.push_str(&format!(
            "{label:<width$}{}\n",
            lines.next().unwrap_or_default()
        ));
        for rest in lines {
            out.push_str(&format!("{:width$}{rest}\n", ""));
        }
    }
    out
}

/// `=== shop Config Vars` and the vars.
pub fn config_listing(app: &str, vars: &BTreeMap<String, String>) -> String {
    format!("=== {app} Config Vars\n{}", config_vars(vars))
}

/// Columns padded to their widest cell, two spaces apart; no trailing spaces.
pub fn columns(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            let w = c.chars().count();
            match widths.get_mut(i) {
                Some(x) => *x = (*x).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut s = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    }
    out
}

/// `columns` under a header row.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut all = vec![headers.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    all.extend(rows.iter().cloned());
    columns(&all)
}

pub fn apps(apps: &[App]) -> String {
    if apps.is_empty() {
        return "No apps; create one with `dyno apps:create NAME`.\n".to_string();
    }
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                a.release.map(|v| format!("v{v}")).unwrap_or("-".into()),
                if a.formation.is_empty() {
                    "-".into()
                } else {
                    a.formation.clone()
                },
                format!("{}/{}", a.dynos_up, a.dynos_total),
            ]
        })
        .collect();
    table(&["NAME", "RELEASE", "FORMATION", "DYNOS"], &rows)
}

/// Newest first: `v3  Deploy abc  2026/11/23 15:08:07 +0000 (~ 30m ago)`, the current one marked.
pub fn releases(app: &str, releases: &[Release], now: i64) -> String {
    let mut sorted: Vec<&Release> = releases.iter().collect();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.version));
    let current = sorted.iter().find(|r| r.current).map(|r| r.version);
    let mut out = match current {
        Some(v) => format!("=== {app} Releases - Current: v{v}\n"),
        None => format!("=== {app} Releases\n"),
    };
    if sorted.is_empty() {
        out.push_str("No releases yet; deploy with `dyno deploy DIR`.\n");
        return out;
    }
    let rows: Vec<Vec<String>> = sorted
        .iter()
        .map(|r| {
            let mark = if r.current {
                "current".to_string()
            } else if r.status != "succeeded" && !r.status.is_empty() {
                r.status.clone()
            } else {
                String::new()
            };
            vec![
                format!("v{}", r.version),
                r.description.clone(),
                when(&r.created_at, now),
                mark,
            ]
        })
        .collect();
    out.push_str(&columns(&rows));
    out
}

pub fn hosts(hosts: &[Host], now: i64) -> String {
    if hosts.is_empty() {
        return "No hosts; start `dyno-agent` on a machine to add one.\n".to_string();
    }
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            vec![
                h.name.clone(),
                h.address.clone(),
                h.state.clone(),
                h.isolation.clone(),
                format!("{}/{} MB", h.allocated_mb, h.memory_mb),
                h.dynos.to_string(),
                h.last_heartbeat
                    .as_deref()
                    .and_then(parse_iso)
                    .map(|t| ago(now - t))
                    .unwrap_or("never".into()),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "ADDRESS",
            "STATE",
            "ISOLATION",
            "MEMORY",
            "DYNOS",
            "HEARTBEAT",
        ],
        &rows,
    )
}

/// foreman's palette: one colour per process name.
const PALETTE: [&str; 12] = [
    "36", "33", "32", "35", "31", "34", "96", "93", "92", "95", "91", "94",
];

/// A stable colour for a process name (FNV-1a, so it is the same on every run).
pub fn colour_of(process: &str) -> &'static str {
    let mut h: u32 = 0x811c_9dc5;
    for b in process.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    PALETTE[h as usize % PALETTE.len()]
}

/// `LogLine::render()` with the `SOURCE[PROCESS]:` prefix coloured when `colour` is set.
pub fn log_line(line: &LogLine, colour: bool) -> String {
    let rendered = line.render();
    if !colour {
        return rendered;
    }
    let time = rfc3339_micros(line.at);
    let Some(rest) = rendered
        .strip_prefix(time.as_str())
        .and_then(|r| r.strip_prefix(' '))
    else {
        return rendered;
    };
    match rest.find("]: ") {
        Some(end) => format!(
            "{time} \x1b[{}m{}\x1b[0m{}",
            colour_of(&line.process),
            &rest[..end + 2],
            &rest[end + 2..]
        ),
        None => rendered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dyno_shared::LogSource;

    const NOW: i64 = 1_795_446_826; // 2026-11-23T15:13:46Z

    fn dyno(name: &str, state: &str, updated: &str, one_off: bool) -> Dyno {
        let ptype = name.split('.').next().unwrap().to_string();
        Dyno {
            id: format!("id-{name}"),
            name: name.into(),
            process_type: ptype.clone(),
            state: state.into(),
            size: Size::Standard1x,
            command: if one_off {
                "bash".into()
            } else {
                format!("dyno-probe {ptype}")
            },
            release: 3,
            host: Some("local".into()),
            address: None,
            created_at: updated.into(),
            updated_at: updated.into(),
            restarts: 0,
            exit_code: None,
            one_off,
            stats: None,
        }
    }

    #[test]
    fn ps_groups_like_heroku() {
        let dynos = vec![
            dyno("worker.1", "crashed", "2026-11-23T15:13:40Z", false),
            dyno("web.10", "starting", "2026-11-23T15:13:00Z", false),
            dyno("run.1", "up", "2026-11-23T15:12:46Z", true),
            dyno("web.2", "up", "2026-11-23T14:43:46Z", false),
            dyno("web.1", "up", "2026-11-23T14:43:40Z", false),
        ];
        let expected = "\
=== web (standard-1x): dyno-probe web (3)
web.1: up 2026/11/23 14:43:40 +0000 (~ 30m ago)
web.2: up 2026/11/23 14:43:46 +0000 (~ 30m ago)
web.10: starting 2026/11/23 15:13:00 +0000 (~ 46s ago)

=== worker (standard-1x): dyno-probe worker (1)
worker.1: crashed 2026/11/23 15:13:40 +0000 (~ 6s ago)

=== run: one-off processes (1)
run.1 (standard-1x): up 2026/11/23 15:12:46 +0000 (~ 1m ago): bash
";
        assert_eq!(ps(&dynos, NOW), expected);
        assert_eq!(ps(&[], NOW), "");
    }

    #[test]
    fn ps_splits_a_type_whose_dynos_differ_in_size() {
        let mut big = dyno("web.2", "up", "2026-11-23T15:13:46Z", false);
        big.size = Size::Standard2x;
        let dynos = vec![dyno("web.1", "up", "2026-11-23T15:13:46Z", false), big];
        let out = ps(&dynos, NOW);
        assert!(out.contains("=== web (standard-1x): dyno-probe web (1)\nweb.1: up"));
        assert!(out.contains("=== web (standard-2x): dyno-probe web (1)\nweb.2: up"));
    }

    fn item(t: &str, q: u32, size: Size) -> FormationItem {
        FormationItem {
            process_type: t.into(),
            quantity: q,
            size,
            command: "x".into(),
        }
    }

    #[test]
    fn formation_and_scale_messages() {
        let items = vec![
            item("worker", 1, Size::Standard1x),
            item("web", 3, Size::Standard2x),
        ];
        assert_eq!(formation(&items), "web=3:standard-2x worker=1:standard-1x");
        assert_eq!(
            scale_done(&items, &["web".into(), "worker".into()]),
            "Scaling dynos... done, now running web at 3:Standard-2X, worker at 1:Standard-1X"
        );
        assert_eq!(
            scale_done(&items, &["web".into()]),
            "Scaling dynos... done, now running web at 3:Standard-2X"
        );
        assert_eq!(display_size(Size::PerformanceM), "Performance-M");
        assert_eq!(display_size(Size::Eco), "Eco");
        assert_eq!(formation(&[]), "");
    }

    #[test]
    fn config_values_align() {
        let mut vars = BTreeMap::new();
        vars.insert("DATABASE_URL".to_string(), "postgres://db".to_string());
        vars.insert("A".to_string(), "1".to_string());
        vars.insert("CERT".to_string(), "line1\nline2".to_string());
        assert_eq!(
            config_listing("shop", &vars),
            "=== shop Config Vars\n\
             A:            1\n\
             CERT:         line1\n\
             \x20             line2\n\
             DATABASE_URL: postgres://db\n"
        );
        assert_eq!(config_vars(&BTreeMap::new()), "");
    }

    #[test]
    fn releases_newest_first_with_current_marked() {
        let rel = |v: u32, current: bool| Release {
            version: v,
            description: format!("Deploy {v}"),
            slug: None,
            created_at: "2026-11-23T15:13:46Z".into(),
            status: "succeeded".into(),
            current,
            process_types: BTreeMap::new(),
        };
        let out = releases("shop", &[rel(1, false), rel(2, true)], NOW);
        assert_eq!(
            out,
            "=== shop Releases - Current: v2\n\
             v2  Deploy 2  2026/11/23 15:13:46 +0000 (~ 0s ago)  current\n\
             v1  Deploy 1  2026/11/23 15:13:46 +0000 (~ 0s ago)\n"
        );
    }

    #[test]
    fn tables_pad_columns() {
        let t = table(
            &["NAME", "DYNOS"],
            &[
                vec!["sample".into(), "3/3".into()],
                vec!["ab".into(), "".into()],
            ],
        );
        assert_eq!(t, "NAME    DYNOS\nsample  3/3\nab\n");
    }

    #[test]
    fn log_prefix_is_coloured_per_process() {
        let l = LogLine {
            at: 1_795_446_826_677_020,
            app: "shop".into(),
            source: LogSource::App,
            process: "web.1".into(),
            message: "a]: b".into(),
        };
        assert_eq!(log_line(&l, false), l.render());
        let c = colour_of("web.1");
        assert_eq!(
            log_line(&l, true),
            format!("2026-11-23T15:13:46.677020+00:00 \x1b[{c}mapp[web.1]:\x1b[0m a]: b")
        );
        assert_eq!(colour_of("web.1"), colour_of("web.1"));
        let distinct: std::collections::BTreeSet<_> =
            ["web.1", "web.2", "worker.1", "router", "api"]
                .iter()
                .map(|p| colour_of(p))
                .collect();
        assert!(distinct.len() > 1);
    }
}
