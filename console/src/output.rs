//! Text layouts of the CLI, as pure functions of the API's data (heroku CLI shapes).

use dyno_shared::LogLine;
use dyno_shared::Size;
use dyno_shared::api::{
    App, AppFeature, BillingReport, Check, Dyno, FormationItem, Host, LogDrain, Pricing, Release,
};
use dyno_shared::time::{ago, parse_iso, ps_time, rfc3339_micros};
use serde::Serialize;
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
    size.heroku_name().to_string()
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
    columns_aligned(rows, &[])
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
    // Who made each release, once releases record it.
    let by = sorted.iter().any(|r| r.user.is_some());
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
            let mut row = vec![format!("v{}", r.version), r.description.clone()];
            if by {
                row.push(r.user.as_ref().map_or("", |u| &u.email).to_string());
            }
            row.extend([when(&r.created_at, now), mark]);
            row
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
                if h.drained {
                    format!("{} (drained)", h.state)
                } else {
                    h.state.clone()
                },
                h.isolation.clone(),
                format!("{}/{} MB", h.allocated_mb, h.memory_mb),
                if h.labels.is_empty() {
                    "-".to_string()
                } else {
                    h.labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                },
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
            "LABELS",
            "DYNOS",
            "HEARTBEAT",
        ],
        &rows,
    )
}

/// One line about a check: `GET /health every 5s, 2s timeout, 3 failures`.
pub fn check_summary(c: &Check) -> String {
    let what = match (c.path.as_deref(), c.file.as_deref()) {
        (Some(p), _) => format!("GET {p} below 500"),
        (None, Some(f)) => format!(
            "/app/{} touched within {}s",
            f.trim_start_matches('/'),
            c.timeout_secs
        ),
        (None, None) => "$PORT accepts".to_string(),
    };
    format!(
        "{what} every {}s, {}s timeout, {} failures in a row to restart",
        c.interval_secs, c.timeout_secs, c.failures
    )
}

/// `=== shop Checks` and a line per process type.
pub fn checks(app: &str, checks: &[Check]) -> String {
    let mut out = format!("=== {app} Checks\n");
    if checks.is_empty() {
        out.push_str(&format!(
            "No checks; set one with `dyno checks:set web /health -a {app}`.\n"
        ));
    }
    for c in checks {
        out.push_str(&format!(
            "{}: {}{}\n",
            c.process_type,
            check_summary(c),
            if c.default { " (default)" } else { "" }
        ));
    }
    out
}

/// `=== shop Drains` and `URL (TOKEN)` per drain, as `heroku drains` prints them.
pub fn drains(app: &str, drains: &[LogDrain]) -> String {
    if drains.is_empty() {
        return format!("No drains on {app}; add one with `dyno drains:add URL -a {app}`.\n");
    }
    let mut out = format!("=== {app} Drains\n");
    for d in drains {
        out.push_str(&format!("{} ({})\n", d.url, d.token));
    }
    out
}

/// `=== shop App Features` and `[+] name  description` per feature (`[ ]` when disabled), as
/// `heroku labs` prints them.
pub fn features(app: &str, features: &[AppFeature]) -> String {
    let mut out = format!("=== {app} App Features\n");
    if features.is_empty() {
        out.push_str("No features available.\n");
        return out;
    }
    let rows: Vec<Vec<String>> = features
        .iter()
        .map(|f| {
            vec![
                if f.enabled { "[+]" } else { "[ ]" }.to_string(),
                f.name.clone(),
                f.description.clone(),
            ]
        })
        .collect();
    out.push_str(&columns(&rows));
    out
}

/// `heroku labs:info`: the feature's name as a header, then its description, docs and state.
pub fn feature_info(f: &AppFeature) -> String {
    format!(
        "=== {}\n{}",
        f.name,
        columns(&[
            vec!["Description:".into(), f.description.clone()],
            vec!["Docs:".into(), f.doc_url.clone()],
            vec!["Enabled:".into(), f.enabled.to_string()],
            vec!["State:".into(), f.state.clone()],
        ])
    )
}

/// foreman's palette, in the order it hands colours out.
const PALETTE: [&str; 12] = [
    "36", "33", "32", "35", "31", "34", "96", "93", "92", "95", "91", "94",
];

/// Colours per process as foreman gives them: the next palette entry to each process the first
/// time it shows up, so the first dozen processes of a tail all differ.
#[derive(Debug, Default)]
pub struct Colours {
    assigned: Vec<String>,
}

impl Colours {
    /// The ANSI SGR code of `process`, assigning one if it is new.
    pub fn of(&mut self, process: &str) -> &'static str {
        let i = match self.assigned.iter().position(|p| p == process) {
            Some(i) => i,
            None => {
                self.assigned.push(process.to_string());
                self.assigned.len() - 1
            }
        };
        PALETTE[i % PALETTE.len()]
    }
}

/// Whether log lines get colours: only on a terminal, never for `--json`, and not when
/// `NO_COLOR` is set to anything but the empty string (no-color.org).
pub fn use_colour(
    json: bool,
    stdout_is_terminal: bool,
    no_color: Option<&std::ffi::OsStr>,
) -> bool {
    !json && stdout_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// `LogLine::render()` with the `SOURCE[PROCESS]:` prefix in the ANSI colour `colour` (an SGR
/// code such as `36`) when one is given.
pub fn log_line(line: &LogLine, colour: Option<&str>) -> String {
    let rendered = line.render();
    let Some(colour) = colour else {
        return rendered;
    };
    let time = rfc3339_micros(line.at);
    let Some(rest) = rendered
        .strip_prefix(time.as_str())
        .and_then(|r| r.strip_prefix(' '))
    else {
        return rendered;
    };
    match rest.find("]: ") {
        Some(end) => format!(
            "{time} \x1b[{colour}m{}\x1b[0m{}",
            &rest[..end + 2],
            &rest[end + 2..]
        ),
        None => rendered,
    }
}

// ----- money and billing -----

/// An amount rounded to cents, never `-0.00`.
fn cents(amount: f64) -> String {
    let s = format!("{amount:.2}");
    if s == "-0.00" { "0.00".to_string() } else { s }
}

/// `$` before `digits` for USD, the currency code after them otherwise; a minus sign first.
fn with_currency(digits: &str, currency: &str, prefix: &str) -> String {
    let (sign, digits) = match digits.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", digits),
    };
    if currency.eq_ignore_ascii_case("USD") {
        format!("{prefix}{sign}${digits}")
    } else {
        format!("{prefix}{sign}{digits} {currency}")
    }
}

/// `$12.34` for USD, `12.34 EUR` for any other currency.
pub fn money(amount: f64, currency: &str) -> String {
    with_currency(&cents(amount), currency, "")
}

/// A price as heroku's tables print it: `$25` when whole, else `$7.50`.
pub fn price(amount: f64, currency: &str) -> String {
    let c = cents(amount);
    let digits = c.strip_suffix(".00").unwrap_or(&c);
    with_currency(digits, currency, "")
}

/// An hourly rate to a tenth of a cent, marked as approximate: `~$0.035`.
pub fn hourly_rate(amount: f64, currency: &str) -> String {
    let s = format!("{amount:.3}");
    let s = if s == "-0.000" {
        "0.000".to_string()
    } else {
        s
    };
    with_currency(&s, currency, "~")
}

/// `1000` when whole, else `412.5`.
pub fn quantity_text(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

/// Columns as `columns` lays them out, but the columns marked in `right` aligned right (numbers).
pub fn columns_aligned(rows: &[Vec<String>], right: &[bool]) -> String {
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
            let w = widths[i];
            if right.get(i).copied().unwrap_or(false) {
                s.push_str(&format!("{c:>w$}"));
            } else {
                s.push_str(&format!("{c:<w$}"));
            }
            if i + 1 < r.len() {
                s.push_str("  ");
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    }
    out
}

/// `Billing for 2026-11 (USD, month to date, projected to month end)`; `of shop` when the report
/// is one app's.
pub fn billing_title(r: &BillingReport, app: Option<&str>) -> String {
    let mut notes = vec![r.currency.clone()];
    if r.model != "monthly" && !r.model.is_empty() {
        notes.push(format!("{} pricing", r.model));
    }
    if r.current {
        notes.push("month to date, projected to month end".to_string());
    }
    let of = app.map(|a| format!(" of {a}")).unwrap_or_default();
    format!("Billing{of} for {} ({})", r.month, notes.join(", "))
}

/// The billing table's header: the projection only for the running month.
pub fn billing_header(r: &BillingReport) -> Vec<&'static str> {
    let mut h = vec!["app", "type", "size", "dyno hours", "cost"];
    if r.current {
        h.push("projected");
    }
    h
}

/// Which billing columns hold numbers (aligned right).
pub const BILLING_RIGHT: [bool; 6] = [false, false, false, true, true, true];

/// One row of the billing table: a process type and size of an app, or an app's subtotal.
#[derive(Debug, Clone, PartialEq)]
pub struct BillingRow {
    pub app: String,
    pub subtotal: bool,
    /// As `billing_header` names them.
    pub cells: Vec<String>,
}

/// The billing table's rows: each app's lines, then its subtotal when it has more than one.
pub fn billing_rows(r: &BillingReport) -> Vec<BillingRow> {
    let mut rows = Vec::new();
    let cur = &r.currency;
    let row = |app: &str, ptype: String, size: String, hours: f64, cost: f64, projected: f64| {
        let mut cells = vec![
            app.to_string(),
            ptype,
            size,
            format!("{hours:.2}"),
            money(cost, cur),
        ];
        if r.current {
            cells.push(money(projected, cur));
        }
        cells
    };
    for a in &r.apps {
        for l in &a.lines {
            rows.push(BillingRow {
                app: a.app.clone(),
                subtotal: false,
                cells: row(
                    &a.app,
                    l.process_type.clone(),
                    display_size(l.size),
                    l.dyno_hours,
                    l.cost,
                    l.projected,
                ),
            });
        }
        if a.lines.len() > 1 {
            let hours = a.lines.iter().map(|l| l.dyno_hours).sum();
            rows.push(BillingRow {
                app: a.app.clone(),
                subtotal: true,
                cells: row(
                    &a.app,
                    "subtotal".into(),
                    String::new(),
                    hours,
                    a.cost,
                    a.projected,
                ),
            });
        }
    }
    rows
}

/// The eco pools' rows: owner, `hours used / limit`, cost, and `exhausted` when so.
pub fn eco_pool_rows(r: &BillingReport) -> Vec<Vec<String>> {
    r.eco_pools
        .iter()
        .map(|p| {
            vec![
                p.owner.clone(),
                format!("{:.2} / {}", p.hours_used, quantity_text(p.hours_limit)),
                money(p.cost, &r.currency),
                if p.exhausted { "exhausted" } else { "" }.to_string(),
            ]
        })
        .collect()
}

/// `Total: $62.00 month to date, $110.00 projected to month end` (a past month: its total).
pub fn billing_total(r: &BillingReport) -> String {
    if r.current {
        format!(
            "Total: {} month to date, {} projected to month end",
            money(r.cost, &r.currency),
            money(r.projected, &r.currency)
        )
    } else {
        format!("Total: {}", money(r.cost, &r.currency))
    }
}

/// `dyno billing`: the heading, a line per app, process type and size with subtotals, the eco
/// pools and the total.
pub fn billing(r: &BillingReport, app: Option<&str>) -> String {
    let mut out = format!("=== {}\n", billing_title(r, app));
    let rows = billing_rows(r);
    if rows.is_empty() {
        out.push_str(&format!("No dyno usage in {}.\n", r.month));
    } else {
        let mut all = vec![
            billing_header(r)
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>(),
        ];
        all.extend(rows.into_iter().map(|r| r.cells));
        out.push_str(&columns_aligned(&all, &BILLING_RIGHT));
    }
    if !r.eco_pools.is_empty() {
        out.push_str("\n=== Eco pools\n");
        let mut all = vec![vec![
            "owner".to_string(),
            "hours used / limit".to_string(),
            "cost".to_string(),
        ]];
        all.extend(eco_pool_rows(r));
        out.push_str(&columns_aligned(&all, &[false, true, true, false]));
    }
    out.push('\n');
    out.push_str(&billing_total(r));
    out.push('\n');
    out
}

/// A process type of an app with its size's price: what `ps:type` shows (and prints with --json).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DynoTypePrice {
    #[serde(rename = "type")]
    pub process_type: String,
    pub quantity: u32,
    pub size: Size,
    /// One dyno's cost per hour; `None` when the price table does not list the size.
    pub hourly: Option<f64>,
    /// The most one dyno costs in a month; `None` when nothing caps it.
    pub max_monthly: Option<f64>,
    pub currency: String,
}

/// The formation's types, sorted, each with its size's price from `pricing`.
pub fn dyno_type_prices(formation: &[FormationItem], pricing: &Pricing) -> Vec<DynoTypePrice> {
    let mut items: Vec<DynoTypePrice> = formation
        .iter()
        .map(|f| {
            let p = pricing.sizes.iter().find(|p| p.size == f.size);
            DynoTypePrice {
                process_type: f.process_type.clone(),
                quantity: f.quantity,
                size: f.size,
                hourly: p.map(|p| p.hourly),
                max_monthly: p.and_then(|p| p.max_monthly),
                currency: pricing.currency.clone(),
            }
        })
        .collect();
    items.sort_by(|a, b| a.process_type.cmp(&b.process_type));
    items
}

/// `heroku ps:type`: `=== Dyno Types` (type, size, quantity, one dyno's cost per hour and most
/// per month) and `=== Dyno Totals` (dynos per size), then what eco and dyno-hour pricing mean.
pub fn dyno_types(items: &[DynoTypePrice], pricing: &Pricing) -> String {
    let cur = &pricing.currency;
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            let hourly = match i.hourly {
                Some(h) if i.size == Size::Eco && h == 0.0 => "eco pool".to_string(),
                Some(h) => hourly_rate(h, cur),
                None => "-".to_string(),
            };
            vec![
                i.process_type.clone(),
                display_size(i.size),
                i.quantity.to_string(),
                hourly,
                i.max_monthly
                    .map(|m| price(m, cur))
                    .unwrap_or("-".to_string()),
            ]
        })
        .collect();
    let mut out = String::from("=== Dyno Types\n");
    out.push_str(&table(
        &["type", "size", "qty", "cost/hour", "max cost/month"],
        &rows,
    ));
    let mut totals: Vec<(Size, u32)> = Vec::new();
    for i in items {
        match totals.iter_mut().find(|(s, _)| *s == i.size) {
            Some((_, n)) => *n += i.quantity,
            None => totals.push((i.size, i.quantity)),
        }
    }
    totals.sort_by_key(|(s, _)| Size::ALL.iter().position(|x| x == s));
    let rows: Vec<Vec<String>> = totals
        .iter()
        .map(|(s, n)| vec![display_size(*s), n.to_string()])
        .collect();
    out.push_str("\n=== Dyno Totals\n");
    out.push_str(&table(&["type", "total"], &rows));
    let mut notes = Vec::new();
    if items.iter().any(|i| i.size == Size::Eco) {
        notes.push(format!(
            "Eco dynos draw on their owner's pool of {} dyno hours a month, {} for the pool.",
            quantity_text(pricing.eco_pool_hours),
            price(pricing.eco_pool_price, cur)
        ));
    }
    if pricing.model == "dyno-hour" && pricing.free_hours_per_app > 0.0 {
        notes.push(format!(
            "Priced per dyno-hour: the first {} dyno-hours of each app's month are free.",
            quantity_text(pricing.free_hours_per_app)
        ));
    }
    if !notes.is_empty() {
        out.push('\n');
        for n in notes {
            out.push_str(&n);
            out.push('\n');
        }
    }
    out
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `dyno billing --csv`: an invoice with a line per app, size and month (the process types of
/// one size summed); eco pools are billed per owner and are not in it.
pub fn billing_csv(r: &BillingReport) -> String {
    let mut out = String::from("month,app,owner,size,dyno_hours,cost,currency\n");
    for a in &r.apps {
        let mut sizes: Vec<(Size, f64, f64)> = Vec::new();
        for l in &a.lines {
            match sizes.iter_mut().find(|(s, _, _)| *s == l.size) {
                Some((_, hours, cost)) => {
                    *hours += l.dyno_hours;
                    *cost += l.cost;
                }
                None => sizes.push((l.size, l.dyno_hours, l.cost)),
            }
        }
        sizes.sort_by_key(|(s, _, _)| Size::ALL.iter().position(|x| x == s));
        for (size, hours, cost) in sizes {
            let fields = [
                r.month.clone(),
                a.app.clone(),
                a.owner.clone(),
                size.to_string(),
                format!("{hours:.2}"),
                cents(cost),
                r.currency.clone(),
            ];
            let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            out.push_str(&line.join(","));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dyno_shared::LogSource;
    use std::collections::BTreeSet;

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
            release: dyno_shared::api::ReleaseRef {
                id: "r3".into(),
                version: 3,
            },
            host: Some("local".into()),
            address: None,
            created_at: updated.into(),
            updated_at: updated.into(),
            restarts: 0,
            exit_code: None,
            one_off,
            healthy: true,
            stats: None,
            attach_url: None,
            app: None,
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
            id: String::new(),
            app: None,
            created_at: None,
            updated_at: None,
            dyno_size: None,
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
            id: format!("r{}", v),
            app: dyno_shared::api::NamedRef {
                id: "a".into(),
                name: "shop".into(),
            },
            updated_at: String::new(),
            eligible_for_rollback: true,
            addon_plan_names: Vec::new(),
            output_stream_url: None,
            user: None,
            artifacts: Vec::new(),
            oci_image: None,
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
        // Releases that record who made them show the token's name.
        let mut by_root = rel(3, true);
        by_root.user = Some(dyno_shared::api::Owner {
            id: "x".into(),
            email: "root".into(),
        });
        let out = releases("shop", &[rel(2, false), by_root], NOW);
        assert!(
            out.contains("v3  Deploy 3  root  2026/11/23 15:13:46 +0000 (~ 0s ago)  current\n"),
            "{out}"
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
        assert_eq!(
            log_line(&l, None),
            "2026-11-23T15:13:46.677020+00:00 app[web.1]: a]: b"
        );
        assert_eq!(
            log_line(&l, Some("36")),
            "2026-11-23T15:13:46.677020+00:00 \x1b[36mapp[web.1]:\x1b[0m a]: b"
        );
        let system = LogLine {
            source: LogSource::System,
            process: "api".into(),
            message: "Deploy v2".into(),
            ..l.clone()
        };
        assert_eq!(
            log_line(&system, Some("33")),
            "2026-11-23T15:13:46.677020+00:00 \x1b[33mheroku[api]:\x1b[0m Deploy v2"
        );
    }

    #[test]
    fn colours_are_handed_out_in_order_of_appearance() {
        let mut c = Colours::default();
        let first: Vec<&str> = ["web.1", "web.2", "worker.1", "router"]
            .iter()
            .map(|p| c.of(p))
            .collect();
        assert_eq!(first, ["36", "33", "32", "35"]);
        // A process keeps its colour.
        assert_eq!(c.of("web.2"), "33");
        assert_eq!(c.of("web.1"), "36");
        // Twelve processes get twelve colours; the thirteenth starts the palette again.
        for i in 5..=12 {
            c.of(&format!("run.{i}"));
        }
        let distinct: BTreeSet<&str> = (5..=12)
            .map(|i| c.of(&format!("run.{i}")))
            .chain(first.iter().copied())
            .collect();
        assert_eq!(distinct.len(), 12);
        assert_eq!(c.of("run.13"), "36");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(use_colour(false, true, None));
        assert!(!use_colour(false, false, None), "piped");
        assert!(!use_colour(true, true, None), "--json");
        assert!(!use_colour(false, true, Some(OsStr::new("1"))));
        // no-color.org: an empty NO_COLOR does not count.
        assert!(use_colour(false, true, Some(OsStr::new(""))));
    }

    fn drain(url: &str, token: &str) -> LogDrain {
        LogDrain {
            id: "ld-1".into(),
            url: url.into(),
            token: token.into(),
            created_at: "2026-11-23T15:13:46Z".into(),
            updated_at: "2026-11-23T15:13:46Z".into(),
            addon: None,
        }
    }

    #[test]
    fn drains_list_url_and_token() {
        assert_eq!(
            drains(
                "shop",
                &[
                    drain("syslog://logs.example.com:514", "d.1"),
                    drain("https://user:pw@example.com/logs", "d.2"),
                ]
            ),
            "=== shop Drains\n\
             syslog://logs.example.com:514 (d.1)\n\
             https://user:pw@example.com/logs (d.2)\n"
        );
        assert_eq!(
            drains("shop", &[]),
            "No drains on shop; add one with `dyno drains:add URL -a shop`.\n"
        );
    }

    fn feature(name: &str, enabled: bool) -> AppFeature {
        AppFeature {
            id: format!("feature-{name}"),
            name: name.into(),
            display_name: name.into(),
            description: format!("What {name} does"),
            doc_url: format!("https://example.com/{name}"),
            enabled,
            state: "public".into(),
            created_at: "2026-11-23T15:13:46Z".into(),
            updated_at: "2026-11-23T15:13:46Z".into(),
        }
    }

    #[test]
    fn features_show_enabled_marks_and_info() {
        assert_eq!(
            features(
                "shop",
                &[feature("runtime-metrics", true), feature("x", false)]
            ),
            "=== shop App Features\n\
             [+]  runtime-metrics  What runtime-metrics does\n\
             [ ]  x                What x does\n"
        );
        assert_eq!(
            features("shop", &[]),
            "=== shop App Features\nNo features available.\n"
        );
        assert_eq!(
            feature_info(&feature("runtime-metrics", false)),
            "=== runtime-metrics\n\
             Description:  What runtime-metrics does\n\
             Docs:         https://example.com/runtime-metrics\n\
             Enabled:      false\n\
             State:        public\n"
        );
    }

    // ----- billing and ps:type -----

    use dyno_shared::api::{AppBilling, BillingLine, EcoPool, SizePrice};

    fn bline(t: &str, size: Size, hours: f64, cost: f64, projected: f64) -> BillingLine {
        BillingLine {
            process_type: t.into(),
            size,
            dyno_seconds: (hours * 3600.0) as u64,
            dyno_hours: hours,
            cost,
            projected,
            quantity: 1,
        }
    }

    fn report(current: bool, currency: &str) -> BillingReport {
        BillingReport {
            month: "2026-11".into(),
            currency: currency.into(),
            model: "monthly".into(),
            generated_at: "2026-11-23T15:13:46Z".into(),
            daily: Vec::new(),
            current,
            apps: vec![
                AppBilling {
                    app: "shop".into(),
                    owner: "Acme, \"Inc\"".into(),
                    lines: vec![
                        bline("web", Size::Standard2x, 1065.5, 73.99, 99.99),
                        bline("worker", Size::Standard1x, 532.75, 18.5, 25.0),
                        bline("run", Size::Standard1x, 1.25, 0.043, 0.043),
                    ],
                    cost: 92.533,
                    projected: 125.033,
                },
                AppBilling {
                    app: "blog".into(),
                    owner: "bob".into(),
                    lines: vec![bline("web", Size::Eco, 412.5, 0.0, 0.0)],
                    cost: 0.0,
                    projected: 0.0,
                },
            ],
            eco_pools: vec![
                EcoPool {
                    owner: "bob".into(),
                    hours_used: 412.5,
                    hours_limit: 1000.0,
                    cost: 5.0,
                    exhausted: false,
                },
                EcoPool {
                    owner: "carol".into(),
                    hours_used: 1000.0,
                    hours_limit: 1000.0,
                    cost: 5.0,
                    exhausted: true,
                },
            ],
            cost: 102.533,
            projected: 135.033,
        }
    }

    #[test]
    fn money_has_the_dollar_sign_or_the_currency_code() {
        assert_eq!(money(12.34, "USD"), "$12.34");
        assert_eq!(money(12.345_1, "usd"), "$12.35");
        assert_eq!(money(0.0, "USD"), "$0.00");
        assert_eq!(money(-0.001, "USD"), "$0.00", "no negative zero");
        assert_eq!(money(-3.5, "USD"), "-$3.50");
        assert_eq!(money(1234.5, "EUR"), "1234.50 EUR");
        assert_eq!(money(-3.5, "EUR"), "-3.50 EUR");
        assert_eq!(price(25.0, "USD"), "$25");
        assert_eq!(price(7.5, "USD"), "$7.50");
        assert_eq!(price(250.0, "CHF"), "250 CHF");
        assert_eq!(hourly_rate(25.0 / 720.0, "USD"), "~$0.035");
        assert_eq!(hourly_rate(50.0 / 720.0, "EUR"), "~0.069 EUR");
        assert_eq!(hourly_rate(0.0, "USD"), "~$0.000");
    }

    #[test]
    fn billing_lists_lines_subtotals_pools_and_the_projection() {
        assert_eq!(
            billing(&report(true, "USD"), None),
            "\
=== Billing for 2026-11 (USD, month to date, projected to month end)
app   type      size         dyno hours    cost  projected
shop  web       Standard-2X     1065.50  $73.99     $99.99
shop  worker    Standard-1X      532.75  $18.50     $25.00
shop  run       Standard-1X        1.25   $0.04      $0.04
shop  subtotal                  1599.50  $92.53    $125.03
blog  web       Eco              412.50   $0.00      $0.00

=== Eco pools
owner  hours used / limit   cost
bob         412.50 / 1000  $5.00
carol      1000.00 / 1000  $5.00  exhausted

Total: $102.53 month to date, $135.03 projected to month end
"
        );
    }

    #[test]
    fn a_past_month_has_no_projection() {
        let mut r = report(false, "EUR");
        r.month = "2026-10".into();
        r.eco_pools.clear();
        r.apps.truncate(1);
        r.apps[0].lines.truncate(1);
        let out = billing(&r, Some("shop"));
        assert_eq!(
            out,
            "\
=== Billing of shop for 2026-10 (EUR)
app   type  size         dyno hours       cost
shop  web   Standard-2X     1065.50  73.99 EUR

Total: 102.53 EUR
"
        );
        r.apps.clear();
        r.model = "dyno-hour".into();
        assert!(
            billing(&r, None).starts_with(
                "=== Billing for 2026-10 (EUR, dyno-hour pricing)\nNo dyno usage in 2026-10.\n"
            ),
            "{}",
            billing(&r, None)
        );
    }

    #[test]
    fn csv_sums_the_types_of_a_size_and_quotes_fields() {
        let csv = billing_csv(&report(true, "USD"));
        assert_eq!(
            csv,
            "month,app,owner,size,dyno_hours,cost,currency\n\
             2026-11,shop,\"Acme, \"\"Inc\"\"\",standard-1x,534.00,18.54,USD\n\
             2026-11,shop,\"Acme, \"\"Inc\"\"\",standard-2x,1065.50,73.99,USD\n\
             2026-11,blog,bob,eco,412.50,0.00,USD\n"
        );
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        let mut empty = report(false, "USD");
        empty.apps.clear();
        assert_eq!(
            billing_csv(&empty),
            "month,app,owner,size,dyno_hours,cost,currency\n"
        );
    }

    fn pricing() -> Pricing {
        Pricing {
            model: "monthly".into(),
            currency: "USD".into(),
            effective_from: "2026-01-01T00:00:00Z".into(),
            sizes: Size::ALL
                .iter()
                .map(|&size| {
                    let monthly = size.monthly_cents() as f64 / 100.0;
                    let eco = size == Size::Eco;
                    SizePrice {
                        size,
                        hourly: if eco { 0.0 } else { monthly / 720.0 },
                        max_monthly: if eco { None } else { Some(monthly) },
                        units: 1.0,
                    }
                })
                .collect(),
            eco_pool_hours: 1000.0,
            eco_pool_price: 5.0,
            dyno_hour_price: 0.05,
            free_hours_per_app: 750.0,
        }
    }

    #[test]
    fn ps_type_shows_prices_and_totals_per_size() {
        let mut formation = vec![
            item("worker", 1, Size::Standard1x),
            item("web", 2, Size::Standard1x),
        ];
        let p = pricing();
        let items = dyno_type_prices(&formation, &p);
        assert_eq!(
            dyno_types(&items, &p),
            "\
=== Dyno Types
type    size         qty  cost/hour  max cost/month
web     Standard-1X  2    ~$0.035    $25
worker  Standard-1X  1    ~$0.035    $25

=== Dyno Totals
type         total
Standard-1X  3
"
        );
        formation.push(item("clock", 1, Size::Eco));
        formation.push(item("big", 0, Size::PerformanceL));
        let mut p = pricing();
        p.sizes.retain(|s| s.size != Size::PerformanceL);
        let items = dyno_type_prices(&formation, &p);
        assert_eq!(items[0].process_type, "big");
        assert_eq!(items[0].hourly, None, "not in the price table");
        assert_eq!(
            dyno_types(&items, &p),
            "\
=== Dyno Types
type    size           qty  cost/hour  max cost/month
big     Performance-L  0    -          -
clock   Eco            1    eco pool   -
web     Standard-1X    2    ~$0.035    $25
worker  Standard-1X    1    ~$0.035    $25

=== Dyno Totals
type           total
Eco            1
Standard-1X    3
Performance-L  0

Eco dynos draw on their owner's pool of 1000 dyno hours a month, $5 for the pool.
"
        );
        let json = serde_json::to_value(&items[1]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "clock", "quantity": 1, "size": "Eco", "hourly": 0.0,
                "max_monthly": null, "currency": "USD"})
        );
    }
}
