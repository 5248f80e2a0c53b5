//! Snapshot tests of every view on ratatui's `TestBackend` with fixed data (a fixed "now", so
//! no time on screen moves; ids are never drawn), and tests of the state machine's key paths.

use super::data::DataSource;
use super::draw;
use super::model::{Action, AppDetail, AppRow, Interest, Msg, StreamState, TailState, Update};
use super::state::{Effect, Mode, State, View};
use dyno_shared::api::{
    App, AppBilling, BillingLine, BillingReport, DayCost, Dyno, DynoStatsJson, EcoPool,
    FormationItem, Host, Pricing, Release, SizePrice,
};
use dyno_shared::{LogLine, LogSource, Size};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::collections::BTreeMap;

/// 2026-11-23T15:13:46Z
const NOW: i64 = 1_795_446_826;

fn iso(secs_ago: i64) -> String {
    let t = NOW - secs_ago;
    let (y, mo, d) = dyno_shared::time::civil_from_days(t.div_euclid(86_400));
    let sod = t.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

fn app(name: &str, formation: &str, up: u32, total: u32, release: Option<u32>) -> App {
    App {
        id: format!("id-{name}"),
        name: name.into(),
        created_at: iso(86_400),
        updated_at: iso(600),
        release,
        web_url: format!("http://{name}.localhost:7080/"),
        maintenance: false,
        formation: formation.into(),
        dynos_up: up,
        dynos_total: total,
        platform: Default::default(),
    }
}

fn dyno(name: &str, state: &str, size: Size, secs_ago: i64, mem: Option<f64>) -> Dyno {
    let ptype = name.split('.').next().unwrap().to_string();
    Dyno {
        id: format!("00000000-{name}"),
        name: name.into(),
        process_type: ptype.clone(),
        state: state.into(),
        size,
        command: format!("dyno-probe {ptype}"),
        release: dyno_shared::api::ReleaseRef {
            id: "r3".into(),
            version: 3,
        },
        host: Some("host-1".into()),
        address: None,
        created_at: iso(secs_ago),
        updated_at: iso(secs_ago),
        restarts: if state == "crashed" { 2 } else { 0 },
        exit_code: None,
        one_off: false,
        healthy: true,
        stats: mem.map(|p| DynoStatsJson {
            memory_rss_mb: p * 5.12,
            memory_cache_mb: 0.0,
            memory_swap_mb: 0.0,
            memory_quota_mb: 512.0,
            memory_percent: p,
            cpu_percent: Some(3.0),
            pids: 2,
            at: iso(1),
        }),
        attach_url: None,
        app: None,
    }
}

fn line(secs_ago: i64, source: LogSource, process: &str, message: &str) -> LogLine {
    LogLine {
        at: (NOW - secs_ago) * 1_000_000 + 123_456,
        app: "shop".into(),
        source,
        process: process.into(),
        message: message.into(),
    }
}

fn apps() -> Vec<AppRow> {
    vec![
        AppRow {
            app: app("empty-app", "", 0, 0, None),
            crashed: Some(0),
        },
        AppRow {
            app: app("shop", "web=3:standard-2x worker=1:basic", 3, 4, Some(3)),
            crashed: Some(1),
        },
    ]
}

fn shop() -> AppDetail {
    AppDetail {
        app: app("shop", "web=3:standard-2x worker=1:basic", 3, 4, Some(3)),
        dynos: vec![
            dyno("web.1", "up", Size::Standard2x, 3_700, Some(45.0)),
            dyno("web.2", "up", Size::Standard2x, 65, Some(85.0)),
            dyno("web.3", "crashed", Size::Standard2x, 5, None),
            dyno("worker.1", "starting", Size::Basic, 2, Some(120.0)),
        ],
        formation: vec![
            FormationItem {
                id: String::new(),
                app: None,
                created_at: None,
                updated_at: None,
                dyno_size: None,
                process_type: "web".into(),
                quantity: 3,
                size: Size::Standard2x,
                command: "dyno-probe web".into(),
            },
            FormationItem {
                id: String::new(),
                app: None,
                created_at: None,
                updated_at: None,
                dyno_size: None,
                process_type: "worker".into(),
                quantity: 1,
                size: Size::Basic,
                command: "dyno-probe worker".into(),
            },
        ],
        events: vec![
            line(
                70,
                LogSource::System,
                "web.2",
                "Starting process with command `dyno-probe web`",
            ),
            line(
                65,
                LogSource::System,
                "web.2",
                "State changed from starting to up",
            ),
            line(
                5,
                LogSource::System,
                "web.3",
                "Process exited with status 1",
            ),
            line(
                5,
                LogSource::System,
                "web.3",
                "State changed from up to crashed",
            ),
        ],
    }
}

fn hosts() -> Vec<Host> {
    let h =
        |name: &str, addr: &str, state: &str, alloc: u64, drained: bool, dynos: u32, seen: i64| {
            Host {
                load_1m: Some(0.42),
                id: format!("id-{name}"),
                name: name.into(),
                address: addr.into(),
                state: state.into(),
                isolation: if name == "host-1" { "none" } else { "linux" }.into(),
                memory_mb: 8192,
                allocated_mb: alloc,
                cpus: 2,
                dynos,
                last_heartbeat: Some(iso(seen)),
                agent_version: "0.1.0".into(),
                drained,
                labels: Default::default(),
            }
        };
    vec![
        h("host-1", "127.0.0.1", "connected", 3584, false, 4, 1),
        h("host-2", "127.0.0.2", "away", 7680, true, 9, 4),
        h("host-3", "127.0.0.3", "lost", 0, false, 0, 400),
    ]
}

fn releases() -> Vec<Release> {
    (1..=3)
        .map(|v| Release {
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
            description: if v == 2 {
                "Set DATABASE_URL config vars".into()
            } else {
                format!("Deploy {v}")
            },
            slug: Some(dyno_shared::api::IdRef { id: "sha".into() }),
            created_at: iso(3600 * (4 - v as i64)),
            status: if v == 1 {
                "failed".into()
            } else {
                "succeeded".into()
            },
            current: v == 3,
            process_types: BTreeMap::from([
                ("web".to_string(), "dyno-probe web".to_string()),
                ("worker".to_string(), "dyno-probe worker".to_string()),
            ]),
        })
        .collect()
}

fn config() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "DATABASE_URL".to_string(),
            "postgres://u:secret@db/shop".to_string(),
        ),
        ("RAILS_ENV".to_string(), "production".to_string()),
    ])
}

fn log_lines() -> Vec<LogLine> {
    let mut v = vec![
        line(
            30,
            LogSource::System,
            "web.1",
            "State changed from starting to up",
        ),
        line(29, LogSource::App, "web.1", "listening on 40123"),
        line(
            28,
            LogSource::Router,
            "router",
            "at=info method=GET path=/ status=200 dyno=web.1",
        ),
    ];
    for i in 0..8 {
        v.push(line(
            27 - i,
            LogSource::App,
            "worker.1",
            &format!("worker tick {i}"),
        ));
        v.push(line(
            27 - i,
            LogSource::App,
            "web.2",
            &format!("GET /orders/{i} status=200"),
        ));
    }
    v.push(line(3, LogSource::App, "web.2", "a long line that goes on and on past the right edge of an eighty column terminal, so wrapping matters"));
    v
}

fn billing_line(t: &str, size: Size, hours: f64, cost: f64, projected: f64) -> BillingLine {
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

fn billing_report() -> BillingReport {
    BillingReport {
        month: "2026-11".into(),
        currency: "USD".into(),
        model: "monthly".into(),
        generated_at: iso(0),
        daily: daily(),
        current: true,
        apps: vec![
            AppBilling {
                app: "blog".into(),
                owner: "bob".into(),
                lines: vec![billing_line("web", Size::Eco, 412.5, 0.0, 0.0)],
                cost: 0.0,
                projected: 0.0,
            },
            AppBilling {
                app: "shop".into(),
                owner: "acme".into(),
                lines: vec![
                    billing_line("web", Size::Standard2x, 1598.25, 110.99, 150.0),
                    billing_line("worker", Size::Basic, 532.75, 5.18, 7.0),
                    billing_line("run", Size::Standard1x, 1.25, 0.04, 0.04),
                ],
                cost: 116.21,
                projected: 157.04,
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
        cost: 126.21,
        projected: 167.04,
    }
}

/// 2026-11-01 to today (the 23rd): a quiet start, the eco pools' $10 on the day they were
/// first drawn on, more dynos from the 10th, and today so far. Sums to the report's $126.21.
fn daily() -> Vec<DayCost> {
    let mut cost: Vec<f64> = (1..=23)
        .map(|d| match d {
            1..=4 => 2.5,
            5 => 12.5,
            6..=9 => 3.0,
            _ => 6.5,
        })
        .collect();
    let before_today: f64 = cost[..22].iter().sum();
    cost[22] = 126.21 - before_today;
    cost.iter()
        .enumerate()
        .map(|(i, c)| DayCost {
            date: format!("2026-11-{:02}", i + 1),
            cost: (c * 100.0).round() / 100.0,
        })
        .collect()
}

fn pricing() -> Pricing {
    let size = |size: Size, monthly: f64| SizePrice {
        size,
        hourly: if size == Size::Eco {
            0.0
        } else {
            monthly / 720.0
        },
        max_monthly: Some(monthly),
        units: 1.0,
    };
    Pricing {
        model: "monthly".into(),
        currency: "USD".into(),
        effective_from: "2026-11-01T00:00:00Z".into(),
        sizes: vec![
            size(Size::Eco, 5.0),
            size(Size::Basic, 7.0),
            size(Size::Standard1x, 25.0),
            size(Size::Standard2x, 50.0),
            size(Size::PerformanceM, 250.0),
            size(Size::PerformanceL, 500.0),
        ],
        eco_pool_hours: 1000.0,
        eco_pool_price: 5.0,
        dyno_hour_price: 0.05,
        free_hours_per_app: 750.0,
    }
}

fn state_on(view: View) -> State {
    let mut s = State::new("http://127.0.0.1:7070", false, view, NOW);
    s.start();
    s.update(Msg::Connection(Ok(())));
    s.update(Msg::Data(Update::Apps(apps())));
    s.update(Msg::Data(Update::App(Box::new(shop()))));
    s.update(Msg::Data(Update::Hosts(hosts())));
    s.update(Msg::Data(Update::Releases {
        app: "shop".into(),
        releases: releases(),
    }));
    s.update(Msg::Data(Update::Config {
        app: "shop".into(),
        vars: config(),
    }));
    s.update(Msg::Data(Update::Billing(Box::new(billing_report()))));
    s.update(Msg::Data(Update::Pricing(Box::new(pricing()))));
    s
}

fn key(s: &mut State, code: KeyCode) -> Vec<Effect> {
    s.update(Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

fn ch(s: &mut State, c: char) -> Vec<Effect> {
    key(s, KeyCode::Char(c))
}

fn typed(s: &mut State, text: &str) -> Vec<Effect> {
    let mut out = Vec::new();
    for c in text.chars() {
        out.extend(ch(s, c));
    }
    out
}

fn render(s: &State, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| draw::draw(f, s)).unwrap();
    t.backend().to_string()
}

#[test]
fn snapshot_apps() {
    let s = state_on(View::Apps);
    insta::assert_snapshot!("apps_80x24", render(&s, 80, 24));
}

#[test]
fn snapshot_app() {
    let s = state_on(View::App("shop".into()));
    insta::assert_snapshot!("app_80x24", render(&s, 80, 24));
    insta::assert_snapshot!("app_120x30", render(&s, 120, 30));
}

#[test]
fn snapshot_hosts() {
    let s = state_on(View::Hosts);
    insta::assert_snapshot!("hosts_80x24", render(&s, 80, 24));
    insta::assert_snapshot!("hosts_120x12", render(&s, 120, 12));
}

#[test]
fn snapshot_releases_and_config() {
    let mut s = state_on(View::Releases("shop".into()));
    insta::assert_snapshot!("releases_80x24", render(&s, 80, 24));
    s.go(View::Config("shop".into()));
    s.update(Msg::Data(Update::Config {
        app: "shop".into(),
        vars: config(),
    }));
    let masked = render(&s, 80, 24);
    assert!(!masked.contains("secret"), "{masked}");
    insta::assert_snapshot!("config_masked_80x24", masked);
    // Down to RAILS_ENV, show it: only that value is readable.
    ch(&mut s, 'j');
    ch(&mut s, 'm');
    let one = render(&s, 80, 24);
    assert!(
        one.contains("production") && !one.contains("secret"),
        "{one}"
    );
    ch(&mut s, 'M');
    assert!(render(&s, 80, 24).contains("postgres://u:secret@db/shop"));
}

#[test]
fn snapshot_billing() {
    let mut s = state_on(View::Apps);
    let effects = ch(&mut s, '$');
    assert!(
        matches!(
            effects.as_slice(),
            [Effect::Watch(Interest::Billing), Effect::Tail(None, _)]
        ),
        "{effects:?}"
    );
    assert_eq!(s.view(), &View::Billing);
    let screen = render(&s, 80, 24);
    insta::assert_snapshot!("billing_80x24", screen);
    for text in [
        "Billing for 2026-11 (USD, month to date, projected to month end)",
        "$157.04",
        "carol",
        "exhausted",
        "Total: $126.21 month to date, $167.04 projected to month end",
    ] {
        assert!(screen.contains(text), "{text:?} in\n{screen}");
    }
    assert!(
        screen.lines().any(|l| l.contains("shop")
            && l.contains("subtotal")
            && l.contains("2132.25")
            && l.contains("$116.21")),
        "{screen}"
    );
    // A past month (as `:billing` never asks for, but the report may say) has no projection.
    let mut past = billing_report();
    past.current = false;
    s.update(Msg::Data(Update::Billing(Box::new(past))));
    let screen = render(&s, 80, 24);
    assert!(screen.contains("│Total: $126.21   "), "{screen}");
    assert!(!screen.to_lowercase().contains("projected"), "{screen}");
    // The filter keeps the rows of matching apps; enter opens the selected row's app, esc
    // comes back.
    s.update(Msg::Data(Update::Billing(Box::new(billing_report()))));
    ch(&mut s, '/');
    typed(&mut s, "shop");
    key(&mut s, KeyCode::Enter);
    assert_eq!(s.visible_rows(), vec![1, 2, 3, 4]);
    ch(&mut s, 'j');
    key(&mut s, KeyCode::Enter);
    assert_eq!(s.view(), &View::App("shop".into()));
    key(&mut s, KeyCode::Esc);
    assert_eq!(s.view(), &View::Billing);
    key(&mut s, KeyCode::Esc); // clears the filter
    key(&mut s, KeyCode::Esc);
    assert_eq!(s.view(), &View::Apps);
    // `:billing` from anywhere, and the coordinator's error while there is no report yet.
    let mut s = State::new("http://x", true, View::Hosts, NOW);
    s.start();
    ch(&mut s, ':');
    typed(&mut s, "bil");
    assert!(matches!(
        key(&mut s, KeyCode::Enter).as_slice(),
        [Effect::Watch(Interest::Billing), _]
    ));
    s.update(Msg::Data(Update::Failed("no such path /billing".into())));
    assert!(render(&s, 80, 24).contains("no such path /billing"));
}

#[test]
fn billing_stays_in_read_only_mode() {
    let mut s = State::new("http://x", true, View::Apps, NOW);
    s.start();
    s.update(Msg::Data(Update::Apps(apps())));
    let footer = render(&s, 80, 24);
    assert!(footer.contains("$ billing"), "{footer}");
    ch(&mut s, '$');
    assert_eq!(s.view(), &View::Billing);
    s.update(Msg::Data(Update::Billing(Box::new(billing_report()))));
    let screen = render(&s, 80, 24);
    assert!(
        screen.contains(" read-only ") && screen.contains("$157.04"),
        "{screen}"
    );
}

fn logs_state() -> State {
    let mut s = state_on(View::Apps);
    s.go(View::Logs("shop".into()));
    let generation = match s.go(View::Logs("shop".into())).as_slice() {
        [_, Effect::Tail(Some(app), g)] => {
            assert_eq!(app, "shop");
            *g
        }
        other => panic!("{other:?}"),
    };
    s.update(Msg::LogState {
        generation,
        state: TailState::Live,
    });
    s.update(Msg::LogLines {
        generation,
        lines: log_lines(),
    });
    s
}

#[test]
fn snapshot_logs() {
    let mut s = logs_state();
    insta::assert_snapshot!("logs_80x24", render(&s, 80, 24));
    ch(&mut s, 'w');
    insta::assert_snapshot!("logs_wrapped_80x24", render(&s, 80, 24));
    ch(&mut s, 'w');
    // Filter to the web type and search: only matching lines, matches highlighted.
    ch(&mut s, 'f');
    key(&mut s, KeyCode::Char('u')); // typed into the prefilled (empty) input
    key(&mut s, KeyCode::Backspace);
    typed(&mut s, "web");
    key(&mut s, KeyCode::Enter);
    ch(&mut s, '/');
    typed(&mut s, "orders/[0-3]");
    key(&mut s, KeyCode::Enter);
    ch(&mut s, 't');
    let screen = render(&s, 80, 24);
    insta::assert_snapshot!("logs_filtered_80x24", screen);
    assert!(!screen.contains("worker tick"), "{screen}");
    // The matched text is highlighted, the rest of the line is not.
    let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
    t.draw(|f| draw::draw(f, &s)).unwrap();
    let buf = t.backend().buffer().clone();
    let row = (0..24)
        .find(|y| {
            (0..80)
                .map(|x| buf[(x, *y)].symbol().to_string())
                .collect::<String>()
                .contains("GET /orders/0")
        })
        .unwrap();
    let text: String = (0..80)
        .map(|x| buf[(x, row)].symbol().to_string())
        .collect();
    let start = text.find("orders/0").unwrap() as u16;
    assert_eq!(buf[(start, row)].bg, ratatui::style::Color::Yellow);
    assert_ne!(buf[(1, row)].bg, ratatui::style::Color::Yellow);
}

#[test]
fn snapshot_help_dialog_confirm_and_status() {
    let mut s = state_on(View::App("shop".into()));
    ch(&mut s, '?');
    let help = render(&s, 80, 24);
    insta::assert_snapshot!("help_app_80x24", help);
    key(&mut s, KeyCode::Esc);
    ch(&mut s, 's');
    typed(&mut s, "web=5:standard-2x");
    insta::assert_snapshot!("scale_dialog_80x24", render(&s, 80, 24));
    key(&mut s, KeyCode::Esc);
    ch(&mut s, 'r');
    insta::assert_snapshot!("confirm_restart_80x24", render(&s, 80, 24));
    key(&mut s, KeyCode::Esc);
    s.update(Msg::Connection(Err(
        "cannot reach the coordinator at http://127.0.0.1:7070: Connection refused".into(),
    )));
    insta::assert_snapshot!("coordinator_down_80x24", render(&s, 80, 24));
}

#[test]
fn snapshot_read_only_and_small_terminal() {
    let mut s = State::new("http://127.0.0.1:7070", true, View::App("shop".into()), NOW);
    s.start();
    s.update(Msg::Connection(Ok(())));
    s.update(Msg::Data(Update::App(Box::new(shop()))));
    let screen = render(&s, 60, 14);
    insta::assert_snapshot!("app_read_only_60x14", screen);
    assert!(
        !screen.contains("scale") && !screen.contains("restart"),
        "{screen}"
    );
    ch(&mut s, '?');
    let help = render(&s, 80, 40);
    assert!(
        !help.contains("restart") && !help.contains("scale"),
        "{help}"
    );
}

#[test]
fn thousand_dynos_render_only_the_window_and_follow_the_selection() {
    let mut detail = shop();
    detail.dynos = (1..=1000)
        .map(|i| dyno(&format!("web.{i}"), "up", Size::Standard1x, 60, Some(10.0)))
        .collect();
    let mut s = State::new(
        "http://127.0.0.1:7070",
        false,
        View::App("shop".into()),
        NOW,
    );
    s.start();
    s.update(Msg::Data(Update::App(Box::new(detail))));
    key(&mut s, KeyCode::End);
    let screen = render(&s, 80, 24);
    assert!(screen.contains("web.1000"), "{screen}");
    assert!(!screen.contains("web.1 "), "{screen}");
    ch(&mut s, '/');
    typed(&mut s, "web.99");
    key(&mut s, KeyCode::Enter);
    let screen = render(&s, 80, 24);
    assert!(screen.contains("(11/1000)"), "{screen}");
}

// ----- the state machine -----

#[test]
fn colon_jumps_to_views_and_esc_goes_back() {
    let mut s = state_on(View::Apps);
    ch(&mut s, ':');
    let effects = {
        typed(&mut s, "logs shop");
        key(&mut s, KeyCode::Enter)
    };
    assert_eq!(s.view(), &View::Logs("shop".into()));
    assert!(
        matches!(effects.as_slice(), [Effect::Watch(Interest::Logs(l)), Effect::Tail(Some(a), _)] if a == "shop" && l == "shop")
    );
    ch(&mut s, ':');
    typed(&mut s, "ho");
    let effects = key(&mut s, KeyCode::Enter);
    assert_eq!(s.view(), &View::Hosts);
    assert!(matches!(
        effects.as_slice(),
        [Effect::Watch(Interest::Hosts), Effect::Tail(None, _)]
    ));
    key(&mut s, KeyCode::Esc);
    assert_eq!(s.view(), &View::Logs("shop".into()));
    key(&mut s, KeyCode::Esc);
    assert_eq!(s.view(), &View::Apps);
    // `:a` is ambiguous, `:nope` unknown, `:app` without an app and nothing selected... picks
    // the selected app.
    ch(&mut s, ':');
    typed(&mut s, "a");
    key(&mut s, KeyCode::Enter);
    assert!(
        s.flash.as_ref().unwrap().text.contains("could be"),
        "{:?}",
        s.flash
    );
    ch(&mut s, ':');
    typed(&mut s, "nope");
    key(&mut s, KeyCode::Enter);
    assert!(
        s.flash.as_ref().unwrap().text.contains("no view"),
        "{:?}",
        s.flash
    );
    ch(&mut s, 'j');
    ch(&mut s, ':');
    typed(&mut s, "app");
    key(&mut s, KeyCode::Enter);
    assert_eq!(s.view(), &View::App("shop".into()));
    ch(&mut s, ':');
    typed(&mut s, "q");
    assert_eq!(key(&mut s, KeyCode::Enter), vec![Effect::Quit]);
}

#[test]
fn slash_filters_the_table_and_esc_clears_it() {
    let mut s = state_on(View::Apps);
    ch(&mut s, '/');
    typed(&mut s, "sho");
    assert_eq!(s.visible_rows(), vec![1]);
    key(&mut s, KeyCode::Enter);
    assert!(matches!(s.mode, Mode::Normal));
    assert_eq!(s.selected_app().as_deref(), Some("shop"));
    // esc clears the filter before it goes back.
    key(&mut s, KeyCode::Esc);
    assert_eq!(s.visible_rows(), vec![0, 1]);
    assert_eq!(s.view(), &View::Apps);
}

#[test]
fn scale_dialog_sends_the_arguments_and_asks_before_scaling_down() {
    let mut s = state_on(View::App("shop".into()));
    ch(&mut s, 's');
    typed(&mut s, "web=nine");
    assert!(key(&mut s, KeyCode::Enter).is_empty());
    let Mode::Dialog(d) = &s.mode else {
        panic!("the dialog stays open on an error")
    };
    assert!(
        d.error.as_ref().unwrap().contains("web=nine"),
        "{:?}",
        d.error
    );
    key(&mut s, KeyCode::Char('u')); // plain u is typed
    s.update(Msg::Key(KeyEvent::new(
        KeyCode::Char('u'),
        KeyModifiers::CONTROL,
    )));
    typed(&mut s, "web=5 worker+1");
    assert_eq!(
        key(&mut s, KeyCode::Enter),
        vec![Effect::Act(Action::Scale {
            app: "shop".into(),
            args: vec!["web=5".into(), "worker+1".into()],
        })]
    );
    // Fewer dynos than now: a confirmation first.
    ch(&mut s, 's');
    typed(&mut s, "web=1");
    assert!(key(&mut s, KeyCode::Enter).is_empty());
    assert!(matches!(&s.mode, Mode::Confirm(c) if c.question.contains("Fewer web")));
    assert!(ch(&mut s, 'n').is_empty());
    assert!(matches!(s.mode, Mode::Normal));
    // + scales the selected type at once, - asks.
    assert_eq!(
        ch(&mut s, '+'),
        vec![Effect::Act(Action::Scale {
            app: "shop".into(),
            args: vec!["web+1".into()],
        })]
    );
    assert!(ch(&mut s, '-').is_empty());
    assert_eq!(
        ch(&mut s, 'y'),
        vec![Effect::Act(Action::Scale {
            app: "shop".into(),
            args: vec!["web-1".into()],
        })]
    );
}

#[test]
fn restart_stop_and_resize_confirm_then_act_and_show_the_result() {
    let mut s = state_on(View::App("shop".into()));
    ch(&mut s, 'j');
    assert!(ch(&mut s, 'r').is_empty());
    assert_eq!(
        key(&mut s, KeyCode::Enter),
        vec![Effect::Act(Action::Restart {
            app: "shop".into(),
            dyno: Some("web.2".into()),
            process_type: None,
        })]
    );
    s.update(Msg::ActionDone {
        label: "Restart web.2 of shop".into(),
        result: Ok("web.2".into()),
    });
    assert_eq!(
        s.flash.as_ref().unwrap().text,
        "Restart web.2 of shop: done, web.2"
    );
    ch(&mut s, 'R');
    assert_eq!(
        ch(&mut s, 'y'),
        vec![Effect::Act(Action::Restart {
            app: "shop".into(),
            dyno: None,
            process_type: Some("web".into()),
        })]
    );
    ch(&mut s, 'x');
    assert_eq!(
        ch(&mut s, 'y'),
        vec![Effect::Act(Action::Stop {
            app: "shop".into(),
            dyno: "web.2".into(),
        })]
    );
    s.update(Msg::ActionDone {
        label: "Stop web.2 of shop".into(),
        result: Err("no running dyno matches \"web.2\" in app shop".into()),
    });
    let screen = render(&s, 80, 24);
    assert!(
        screen.contains("Stop web.2 of shop failed: no running dyno"),
        "{screen}"
    );
    ch(&mut s, 'z');
    typed(&mut s, "huge");
    key(&mut s, KeyCode::Enter);
    assert!(matches!(&s.mode, Mode::Dialog(d) if d.error.is_some()));
    s.update(Msg::Key(KeyEvent::new(
        KeyCode::Char('u'),
        KeyModifiers::CONTROL,
    )));
    typed(&mut s, "performance-m");
    assert!(key(&mut s, KeyCode::Enter).is_empty());
    assert_eq!(
        ch(&mut s, 'y'),
        vec![Effect::Act(Action::Resize {
            app: "shop".into(),
            process_type: "web".into(),
            size: "performance-m".into(),
        })]
    );
}

#[test]
fn releases_roll_back_and_the_app_toggles_maintenance() {
    let mut s = state_on(View::Releases("shop".into()));
    ch(&mut s, 'b');
    assert!(matches!(&s.mode, Mode::Confirm(_)), "asks first");
    let effects = ch(&mut s, 'y');
    assert!(
        matches!(effects.as_slice(), [Effect::Act(Action::Rollback { app, .. })] if app == "shop"),
        "{effects:?}"
    );
    let mut s = state_on(View::App("shop".into()));
    ch(&mut s, 'M');
    assert_eq!(
        ch(&mut s, 'y'),
        vec![Effect::Act(Action::Maintenance {
            app: "shop".into(),
            on: true,
        })]
    );
    let mut ro = state_on(View::Releases("shop".into()));
    ro.read_only = true;
    assert!(ch(&mut ro, 'b').is_empty() && ch(&mut ro, 'y').is_empty());
}

#[test]
fn hosts_drain_and_config_set_unset() {
    let mut s = state_on(View::Hosts);
    ch(&mut s, 'd');
    assert_eq!(
        ch(&mut s, 'y'),
        vec![Effect::Act(Action::Drain {
            host: "host-1".into(),
            drained: true,
        })]
    );
    let mut s = state_on(View::Config("shop".into()));
    ch(&mut s, 'e');
    // Prefilled with the selected key.
    typed(&mut s, "postgres://new");
    key(&mut s, KeyCode::Enter);
    assert_eq!(
        ch(&mut s, 'y'),
        vec![Effect::Act(Action::SetVar {
            app: "shop".into(),
            key: "DATABASE_URL".into(),
            value: Some("postgres://new".into()),
        })]
    );
    ch(&mut s, 'D');
    assert_eq!(
        ch(&mut s, 'y'),
        vec![Effect::Act(Action::SetVar {
            app: "shop".into(),
            key: "DATABASE_URL".into(),
            value: None,
        })]
    );
}

#[test]
fn read_only_ignores_action_keys() {
    let mut s = State::new("http://x", true, View::App("shop".into()), NOW);
    s.start();
    s.update(Msg::Data(Update::App(Box::new(shop()))));
    for c in ['s', 'r', 'R', 'x', 'z', '+', '-', 'o'] {
        assert!(ch(&mut s, c).is_empty(), "{c}");
        assert!(matches!(s.mode, Mode::Normal), "{c}");
    }
}

#[test]
fn only_changes_redraw_and_stale_data_is_ignored() {
    let mut s = state_on(View::App("shop".into()));
    s.dirty = false;
    s.update(Msg::Data(Update::App(Box::new(shop()))));
    assert!(!s.dirty, "the same data again is no change");
    s.update(Msg::Connection(Ok(())));
    assert!(!s.dirty);
    let mut other = shop();
    other.app.name = "other".into();
    s.update(Msg::Data(Update::App(Box::new(other))));
    assert!(!s.dirty);
    assert_eq!(s.app.as_ref().unwrap().app.name, "shop");
    let mut changed = shop();
    changed.dynos[2].state = "up".into();
    s.update(Msg::Data(Update::App(Box::new(changed))));
    assert!(s.dirty);
    // Lines of an old tail (a previous Logs visit) are dropped.
    let mut s = logs_state();
    let before = s.logs.as_ref().unwrap().len();
    s.update(Msg::LogLines {
        generation: 0,
        lines: log_lines(),
    });
    assert_eq!(s.logs.as_ref().unwrap().len(), before);
}

#[test]
fn esc_and_a_quick_key_arrive_as_alt_and_still_work() {
    let mut s = state_on(View::App("shop".into()));
    s.update(Msg::Key(KeyEvent::new(
        KeyCode::Char('j'),
        KeyModifiers::ALT,
    )));
    assert_eq!(s.view(), &View::Apps);
    assert_eq!(s.current().selected, 1);
}

#[test]
fn enter_on_a_dyno_opens_its_logs_and_save_writes_them() {
    let mut s = state_on(View::App("shop".into()));
    ch(&mut s, 'j');
    key(&mut s, KeyCode::Enter);
    assert_eq!(s.view(), &View::Logs("shop".into()));
    assert_eq!(
        s.logs.as_ref().unwrap().filter.dyno.as_deref(),
        Some("web.2")
    );
    let mut s = logs_state();
    ch(&mut s, 'f');
    typed(&mut s, "worker");
    key(&mut s, KeyCode::Enter);
    assert_eq!(ch(&mut s, 'S'), vec![Effect::SaveLogs]);
    let dir = tempfile::tempdir().unwrap();
    let (path, n) = super::save_logs(&s, dir.path()).unwrap();
    assert_eq!(n, 8);
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.starts_with("2026-11-23T15:13:19.123456+00:00 app[worker.1]: worker tick 0\n"),
        "{text}"
    );
}

/// A data source that records what the loop asked for.
#[derive(Default)]
struct Recorder {
    calls: Vec<String>,
}

impl DataSource for Recorder {
    fn watch(&mut self, interest: Interest) {
        self.calls.push(format!("watch {interest:?}"));
    }
    fn refresh(&mut self) {
        self.calls.push("refresh".into());
    }
    fn tail(&mut self, app: Option<&str>, _generation: u64) {
        self.calls.push(format!("tail {app:?}"));
    }
    fn act(&mut self, action: Action) {
        self.calls.push(format!("act {}", action.describe()));
    }
}

#[test]
fn the_loop_runs_on_test_backend_until_q() {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let mut s = State::new("http://127.0.0.1:7070", false, View::Apps, NOW);
    let mut rec = Recorder::default();
    tx.send(Msg::Connection(Ok(()))).unwrap();
    tx.send(Msg::Data(Update::Apps(apps()))).unwrap();
    for c in ['j', 'r', 'y'] {
        tx.send(Msg::Key(KeyEvent::new(
            KeyCode::Char(c),
            KeyModifiers::NONE,
        )))
        .unwrap();
    }
    // Quit once the loop has drawn what the keys did.
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let _ = tx.send(Msg::Key(KeyEvent::new(
            KeyCode::Char('q'),
            KeyModifiers::NONE,
        )));
    });
    let mut frames = Vec::new();
    super::run_loop(
        &mut terminal,
        &mut s,
        &rx,
        &mut rec,
        &mut || Ok(()),
        Some(&mut frames),
    )
    .unwrap();
    assert_eq!(
        rec.calls,
        ["watch Apps", "tail None", "act Restart every dyno of shop"]
    );
    assert!(!frames.is_empty());
    let screen = terminal.backend().to_string();
    assert!(screen.contains("Restart every dyno of shop..."), "{screen}");
}

#[test]
fn snapshot_billing_daily_chart_and_prices() {
    let mut s = state_on(View::Billing);
    let screen = render(&s, 80, 24);
    // The lines leave room for the chart: the 5th's eco pools are the highest bar.
    assert!(
        screen.contains("DAILY COST  most $12.50 on 11-05, $7.21 so far today"),
        "{screen}"
    );
    assert!(screen.contains("$12.50│"), "{screen}");
    // Without room (a smaller terminal), the table keeps its lines and the chart goes.
    let small = render(&s, 80, 18);
    assert!(!small.contains("DAILY COST"), "{small}");
    assert!(small.contains("Total: $126.21"), "{small}");
    // `p`: a taller chart and the price table; `p` or esc back to the lines.
    ch(&mut s, 'p');
    let prices = render(&s, 80, 24);
    insta::assert_snapshot!("billing_prices_80x24", prices);
    for text in [
        "PRICES  monthly model, USD, since 2026-11-01",
        "Standard-2X",
        "~$0.069",
        "$250",
        "Eco pool: 1000 dyno hours a month per owner for $5",
    ] {
        assert!(prices.contains(text), "{text:?} in\n{prices}");
    }
    assert!(!prices.contains("subtotal"), "{prices}");
    key(&mut s, KeyCode::Esc);
    assert!(!s.billing_prices);
    assert_eq!(s.view(), &View::Billing);
    ch(&mut s, 'p');
    ch(&mut s, 'p');
    assert!(render(&s, 80, 24).contains("subtotal"));
    // The dyno-hour model shows units and the hour price; no report days, no chart.
    let mut p = pricing();
    p.model = "dyno-hour".into();
    s.update(Msg::Data(Update::Pricing(Box::new(p))));
    let mut r = billing_report();
    r.daily.clear();
    s.update(Msg::Data(Update::Billing(Box::new(r))));
    ch(&mut s, 'p');
    let screen = render(&s, 80, 24);
    assert!(
        screen.contains("No daily costs for 2026-11 yet."),
        "{screen}"
    );
    assert!(screen.contains("DYNO-HOURS/HOUR"), "{screen}");
    assert!(
        screen.contains("$0.05 per dyno-hour; the first 750 of each app's month free"),
        "{screen}"
    );
}

#[test]
fn the_day_chart_scales_to_the_biggest_day_and_marks_the_days() {
    let r = billing_report();
    let lines: Vec<String> = super::draw::day_chart(&r, 78, 4)
        .iter()
        .map(|l| l.to_string())
        .collect();
    assert_eq!(lines.len(), 6, "{lines:#?}");
    // 30 days of November, two columns each, after a 7-wide axis ("$12.50│").
    let axis = &lines[5];
    assert_eq!(axis.find(" 1 ").map(|i| i + 1), Some(7), "{axis:?}");
    assert_eq!(axis.find("30"), Some(7 + 29 * 2), "{axis:?}");
    // The 5th reaches the top row; a quiet day does not.
    let top: Vec<char> = lines[1].chars().collect();
    assert_eq!(top[7 + 4 * 2], '█', "{:?}", lines[1]);
    assert_eq!(top[7], ' ', "{:?}", lines[1]);
    // Every day so far has a bar at the bottom, days to come none.
    let bottom: Vec<char> = lines[4].chars().collect();
    assert!((0..23).all(|d| bottom[7 + d * 2] != ' '), "{:?}", lines[4]);
    assert!((23..30).all(|d| bottom[7 + d * 2] == ' '), "{:?}", lines[4]);
    // A narrow chart gives each day one column.
    let narrow = super::draw::day_chart(&r, 40, 2);
    assert!(narrow[1..].iter().all(|l| l.width() <= 40), "{narrow:#?}");
    assert!(
        narrow[3].to_string().contains("1   5    10   15"),
        "{narrow:#?}"
    );
}

#[test]
fn o_runs_a_one_off_and_opens_its_logs() {
    let mut s = state_on(View::App("shop".into()));
    ch(&mut s, 'o');
    insta::assert_snapshot!("run_dialog_80x24", render(&s, 80, 24));
    // An empty command is refused in the dialog.
    assert!(key(&mut s, KeyCode::Enter).is_empty());
    assert!(matches!(&s.mode, Mode::Dialog(d) if d.error.is_some()));
    typed(&mut s, "dyno-probe echo hi there");
    assert_eq!(
        key(&mut s, KeyCode::Enter),
        vec![Effect::Act(Action::Run {
            app: "shop".into(),
            command: "dyno-probe echo hi there".into(),
        })]
    );
    assert!(matches!(s.mode, Mode::Normal), "no confirmation for a run");
    assert_eq!(
        s.flash.as_ref().unwrap().text,
        "Run dyno-probe echo hi there in shop..."
    );
    // Started: the Logs view narrowed to the new dyno, its name and command below.
    let effects = s.update(Msg::RunStarted {
        app: "shop".into(),
        dyno: "run.3".into(),
        command: "dyno-probe echo hi there".into(),
    });
    assert_eq!(s.view(), &View::Logs("shop".into()));
    let generation = match effects.as_slice() {
        [Effect::Watch(Interest::Logs(a)), Effect::Tail(Some(t), g)]
            if a == "shop" && t == "shop" =>
        {
            *g
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(
        s.logs.as_ref().unwrap().filter.dyno.as_deref(),
        Some("run.3")
    );
    s.update(Msg::LogState {
        generation,
        state: TailState::Live,
    });
    let mut with_run = shop();
    let mut run = dyno("run.3", "up", Size::Standard1x, 1, None);
    run.one_off = true;
    with_run.dynos.push(run);
    with_run.events.clear();
    s.update(Msg::Data(Update::App(Box::new(with_run))));
    let mut lines = log_lines();
    lines.push(line(
        1,
        LogSource::System,
        "run.3",
        "Starting process with command `dyno-probe echo hi there` by api",
    ));
    lines.push(line(0, LogSource::App, "run.3", "hi there"));
    s.update(Msg::LogLines { generation, lines });
    let screen = render(&s, 80, 24);
    insta::assert_snapshot!("logs_run_80x24", screen);
    assert!(screen.contains("app[run.3]: hi there"), "{screen}");
    assert!(!screen.contains("worker tick"), "{screen}");
    assert!(
        screen.contains("Started run.3: dyno-probe echo hi there"),
        "{screen}"
    );
    assert!(screen.contains(" run.3 up "), "{screen}");
    // The coordinator's refusal shows as any action's.
    s.update(Msg::ActionDone {
        label: "Run nope in shop".into(),
        result: Err("no release to run: deploy first".into()),
    });
    assert!(render(&s, 80, 24).contains("Run nope in shop failed: no release to run"));
    // Unfiltered, the Logs header has the app's release and dynos up.
    ch(&mut s, 'f');
    s.update(Msg::Key(KeyEvent::new(
        KeyCode::Char('u'),
        KeyModifiers::CONTROL,
    )));
    key(&mut s, KeyCode::Enter);
    assert!(render(&s, 80, 24).contains(" v3 · 3/5 up "));
}

#[test]
fn the_header_says_whether_the_event_stream_is_live() {
    let mut s = state_on(View::Apps);
    assert!(render(&s, 80, 24).contains("● connected "));
    s.dirty = false;
    s.update(Msg::Stream(StreamState::Live));
    assert!(s.dirty);
    let live = render(&s, 80, 24);
    assert!(live.contains("● connected · live"), "{live}");
    s.update(Msg::Stream(StreamState::Down(
        "HTTP 404: no such path /stream".into(),
    )));
    let down = render(&s, 80, 24);
    insta::assert_snapshot!("stream_down_80x24", down);
    assert!(down.contains("● connected · polling"), "{down}");
    assert!(
        down.contains("event stream lost (HTTP 404: no such path /stream); polling"),
        "{down}"
    );
    // A lost coordinator says so first.
    s.update(Msg::Connection(Err("cannot reach the coordinator".into())));
    let gone = render(&s, 80, 24);
    assert!(
        gone.contains("coordinator unreachable") && !gone.contains("event stream lost"),
        "{gone}"
    );
}
