//! Drawing: a pure function of `State` onto a ratatui `Frame`. Only the 16 ANSI colours are
//! used; tables build only the rows on screen, so a frame costs the same with 10 or 10,000 dynos.

use super::keymap::{self, Cmd, Scope};
use super::logbuf::LogBuf;
use super::model::{StreamState, TailState};
use super::state::{Conn, FlashKind, Mode, State, View};
use dyno_shared::LogLine;
use dyno_shared::LogSource;
use dyno_shared::api::Dyno;
use dyno_shared::time::{ago, parse_iso};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, Wrap};

/// foreman's order of colours, as `dyno logs` hands them out.
pub const PALETTE: [Color; 12] = [
    Color::Cyan,
    Color::Yellow,
    Color::Green,
    Color::Magenta,
    Color::Red,
    Color::Blue,
    Color::LightCyan,
    Color::LightYellow,
    Color::LightGreen,
    Color::LightMagenta,
    Color::LightRed,
    Color::LightBlue,
];

const MASK: &str = "********";

pub fn draw(f: &mut Frame, s: &State) {
    let area = f.area();
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(f, header, s);
    match s.view().clone() {
        View::Apps => draw_apps(f, body, s),
        View::App(app) => draw_app(f, body, s, &app),
        View::Hosts => draw_hosts(f, body, s),
        View::Logs(_) => draw_logs(f, body, s),
        View::Releases(app) => draw_releases(f, body, s, &app),
        View::Config(app) => draw_config(f, body, s, &app),
        View::Billing => draw_billing(f, body, s),
    }
    draw_footer(f, footer, s);
    match &s.mode {
        Mode::Help { scroll } => draw_help(f, area, s, *scroll),
        Mode::Dialog(d) => {
            let mut lines = vec![
                Line::from(vec![
                    Span::raw("> "),
                    Span::raw(d.input.text.clone()).bold(),
                ]),
                Line::from(d.hint.clone()).fg(Color::DarkGray),
            ];
            if let Some(e) = &d.error {
                lines.push(Line::from(e.clone()).fg(Color::Red));
            }
            lines.push(Line::from("enter apply · esc cancel").fg(Color::DarkGray));
            let r = popup(f, area, &d.title, lines, Color::Cyan);
            let x = r.x + 3 + d.input.cursor as u16;
            if x < r.x + r.width.saturating_sub(1) {
                f.set_cursor_position((x, r.y + 1));
            }
        }
        Mode::Confirm(c) => {
            let lines = vec![
                Line::from(c.question.clone()).bold(),
                Line::from(""),
                Line::from(vec![
                    Span::raw("y").fg(Color::Green).bold(),
                    Span::raw(" yes   "),
                    Span::raw("n").fg(Color::Red).bold(),
                    Span::raw(" no"),
                ]),
            ];
            popup(f, area, "Confirm", lines, Color::Yellow);
        }
        _ => {}
    }
}

fn draw_header(f: &mut Frame, area: Rect, s: &State) {
    let (mark, text, colour) = match &s.conn {
        Conn::Up => match &s.stream {
            StreamState::Live => ("●", "connected · live".to_string(), Color::Green),
            StreamState::Connecting => ("●", "connected".to_string(), Color::Green),
            StreamState::Down(_) => ("●", "connected · polling".to_string(), Color::Yellow),
        },
        Conn::Connecting => ("…", "connecting".to_string(), Color::Yellow),
        Conn::Down(_) => (
            "✖",
            "coordinator unreachable, reconnecting".to_string(),
            Color::Red,
        ),
    };
    let mut spans = vec![
        Span::raw(" dyno ").bold().fg(Color::Black).bg(Color::Cyan),
        Span::raw(" "),
        Span::raw(s.view().name()).bold(),
        Span::raw("  "),
        Span::raw(s.coordinator.clone()).fg(Color::DarkGray),
        Span::raw("  "),
        Span::raw(format!("{mark} {text}")).fg(colour),
    ];
    if s.read_only {
        spans.insert(
            2,
            Span::raw(" read-only ").fg(Color::Black).bg(Color::Yellow),
        );
        spans.insert(3, Span::raw(" "));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn short(cmd: Cmd, logs: bool) -> &'static str {
    match cmd {
        Cmd::Open if logs => "open",
        Cmd::Open => "open",
        Cmd::Logs => "logs",
        Cmd::Releases => "releases",
        Cmd::Config => "config",
        Cmd::Billing => "billing",
        Cmd::Prices => "prices",
        Cmd::RunOneOff => "run",
        Cmd::Scale => "scale",
        Cmd::ScaleUp => "+1",
        Cmd::ScaleDown => "-1",
        Cmd::Restart => "restart",
        Cmd::RestartType => "restart type",
        Cmd::Stop => "stop",
        Cmd::Resize => "size",
        Cmd::Drain => "drain",
        Cmd::Undrain => "undrain",
        Cmd::Rollback => "rollback",
        Cmd::Maintenance => "maint",
        Cmd::Follow => "pause/follow",
        Cmd::LogFilter => "filter",
        Cmd::Filter if logs => "search",
        Cmd::Filter => "filter",
        Cmd::Wrap => "wrap",
        Cmd::Timestamps => "time",
        Cmd::Save => "save",
        Cmd::ClearLogs => "clear",
        Cmd::Reveal => "show",
        Cmd::RevealAll => "show all",
        Cmd::SetVar => "set",
        Cmd::UnsetVar => "unset",
        Cmd::CommandBar => "view",
        Cmd::Help => "help",
        Cmd::Back => "back",
        Cmd::Quit => "quit",
        _ => "",
    }
}

fn draw_footer(f: &mut Frame, area: Rect, s: &State) {
    match &s.mode {
        Mode::Command(input) | Mode::Filter(input) => {
            let prefix = if matches!(s.mode, Mode::Command(_)) {
                ":"
            } else {
                "/"
            };
            f.render_widget(
                Paragraph::new(Line::from(vec![
                    Span::raw(prefix).fg(Color::Cyan).bold(),
                    Span::raw(input.text.clone()),
                ])),
                area,
            );
            let x = area.x + 1 + input.cursor as u16;
            if x < area.x + area.width {
                f.set_cursor_position((x, area.y));
            }
            return;
        }
        _ => {}
    }
    if let Some(fl) = &s.flash {
        let colour = match fl.kind {
            FlashKind::Info => Color::Cyan,
            FlashKind::Ok => Color::Green,
            FlashKind::Error => Color::Red,
        };
        f.render_widget(Paragraph::new(Line::from(fl.text.clone()).fg(colour)), area);
        return;
    }
    if let Conn::Down(e) = &s.conn {
        f.render_widget(Paragraph::new(Line::from(e.clone()).fg(Color::Red)), area);
        return;
    }
    if let StreamState::Down(e) = &s.stream {
        let text = format!("event stream lost ({e}); polling every second, reconnecting");
        f.render_widget(Paragraph::new(Line::from(text).fg(Color::Yellow)), area);
        return;
    }
    let scope = s.view().scope();
    let logs = scope == Scope::Logs;
    let mut spans = Vec::new();
    let mut seen = Vec::new();
    for b in keymap::bindings_for(scope, s.read_only) {
        let generic = b.scope == Scope::Global || b.scope == Scope::Table;
        let wanted =
            !generic || matches!(b.cmd, Cmd::Filter | Cmd::CommandBar | Cmd::Help | Cmd::Quit);
        let name = short(b.cmd, logs);
        if !wanted || name.is_empty() || seen.contains(&b.cmd) {
            continue;
        }
        seen.push(b.cmd);
        let key = b.label.split(' ').next().unwrap_or(b.label);
        spans.push(Span::raw(key.to_string()).fg(Color::Cyan).bold());
        spans.push(Span::raw(format!(" {name}  ")).fg(Color::DarkGray));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The body's frame: a bordered block titled with the view, the row count and the filter.
fn body_block(s: &State, title: &str, count: Option<(usize, usize)>) -> Block<'static> {
    let mut t = vec![Span::raw(format!(" {title} ")).bold()];
    if let Some((shown, total)) = count {
        let c = if shown == total {
            format!("({total}) ")
        } else {
            format!("({shown}/{total}) ")
        };
        t.push(Span::raw(c).fg(Color::DarkGray));
    }
    let filter = &s.current().filter;
    if !filter.is_empty() {
        t.push(Span::raw(format!("/{filter} ")).fg(Color::Yellow));
    }
    Block::default()
        .borders(Borders::ALL)
        .border_style(Style::default().fg(Color::DarkGray))
        .title(Line::from(t))
}

fn message(f: &mut Frame, area: Rect, text: &str, colour: Color) {
    f.render_widget(
        Paragraph::new(text.to_string())
            .fg(colour)
            .wrap(Wrap { trim: false }),
        area,
    );
}

/// What the body says when the view has no data yet.
fn placeholder(s: &State) -> (String, Color) {
    if let Some(e) = &s.failed {
        return (e.clone(), Color::Red);
    }
    match &s.conn {
        Conn::Down(_) => ("waiting for the coordinator...".into(), Color::Yellow),
        _ => ("loading...".into(), Color::DarkGray),
    }
}

/// A table of the current view's visible rows, building only those on screen.
fn table<'a>(
    f: &mut Frame,
    area: Rect,
    s: &State,
    block: Block<'a>,
    (header, widths): (&[&'a str], &[Constraint]),
    total: usize,
    row: &dyn Fn(usize) -> Row<'a>,
) {
    let inner = block.inner(area);
    f.render_widget(block, area);
    let rows = s.visible_rows();
    if rows.is_empty() {
        let text = if total == 0 {
            "nothing here".to_string()
        } else {
            "no rows match the filter (esc clears it)".to_string()
        };
        message(f, inner, &text, Color::DarkGray);
        return;
    }
    let height = (inner.height as usize).saturating_sub(1).max(1);
    let vs = s.current();
    let selected = vs.selected.min(rows.len() - 1);
    let mut offset = vs.offset.get();
    if selected < offset {
        offset = selected;
    } else if selected >= offset + height {
        offset = selected + 1 - height;
    }
    offset = offset.min(rows.len().saturating_sub(height));
    vs.offset.set(offset);
    let shown: Vec<Row> = rows
        .iter()
        .enumerate()
        .skip(offset)
        .take(height)
        .map(|(pos, &i)| {
            let r = row(i);
            if pos == selected {
                r.style(Style::default().add_modifier(Modifier::REVERSED))
            } else {
                r
            }
        })
        .collect();
    let head = Row::new(header.iter().map(|h| Cell::from(*h))).style(
        Style::default()
            .fg(Color::Cyan)
            .add_modifier(Modifier::BOLD),
    );
    f.render_widget(
        Table::new(shown, widths.to_vec())
            .header(head)
            .column_spacing(1),
        inner,
    );
}

fn state_colour(state: &str) -> Style {
    match state {
        "up" => Style::default().fg(Color::Green),
        "starting" => Style::default().fg(Color::Yellow),
        "crashed" => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        "idle" => Style::default().fg(Color::Blue),
        _ => Style::default().fg(Color::DarkGray),
    }
}

/// `45s`, `12m`, `3h4m`, `2d3h`.
pub fn span_of(secs: i64) -> String {
    let s = secs.max(0);
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m", s / 60)
    } else if s < 86_400 {
        format!("{}h{}m", s / 3600, (s / 60) % 60)
    } else {
        format!("{}d{}h", s / 86_400, (s / 3600) % 24)
    }
}

/// A bar of `width` cells and the percentage, coloured by how full it is.
fn gauge(percent: f64, width: usize) -> Line<'static> {
    let p = percent.max(0.0);
    let filled = ((p / 100.0) * width as f64).round().min(width as f64) as usize;
    let colour = if p >= 100.0 {
        Color::Red
    } else if p >= 80.0 {
        Color::Yellow
    } else {
        Color::Green
    };
    Line::from(vec![
        Span::raw("█".repeat(filled)).fg(colour),
        Span::raw("·".repeat(width - filled)).fg(Color::DarkGray),
        Span::raw(format!("{:>4.0}%", p)),
    ])
}

/// A view's box while its data has not come (or cannot).
fn draw_placeholder(f: &mut Frame, area: Rect, s: &State, title: &str) {
    let (t, c) = placeholder(s);
    let b = body_block(s, title, None);
    let inner = b.inner(area);
    f.render_widget(b, area);
    message(f, inner, &t, c);
}

fn draw_apps(f: &mut Frame, area: Rect, s: &State) {
    let Some(apps) = &s.apps else {
        draw_placeholder(f, area, s, "Apps");
        return;
    };
    let total = apps.len();
    let block = body_block(s, "Apps", Some((s.visible_rows().len(), total)));
    if apps.is_empty() {
        let inner = block.inner(area);
        f.render_widget(block, area);
        message(
            f,
            inner,
            "No apps; create one with `dyno apps:create NAME`.",
            Color::DarkGray,
        );
        return;
    }
    table(
        f,
        area,
        s,
        block,
        (
            &["NAME", "FORMATION", "DYNOS", "CRASH", "REL", "$/HOUR"],
            &[
                Constraint::Length(18),
                Constraint::Fill(1),
                Constraint::Length(6),
                Constraint::Length(5),
                Constraint::Length(5),
                Constraint::Length(6),
            ],
        ),
        total,
        &|i| {
            let r = &apps[i];
            let a = &r.app;
            let dynos_style = if a.dynos_up == a.dynos_total {
                Style::default().fg(Color::Green)
            } else {
                Style::default().fg(Color::Yellow)
            };
            let crashed = match r.crashed {
                Some(0) => Cell::from("0").fg(Color::DarkGray),
                Some(n) => Cell::from(n.to_string()).fg(Color::Red).bold(),
                None => Cell::from("?").fg(Color::DarkGray),
            };
            let mut name = a.name.clone();
            if a.maintenance {
                name.push_str(" (maint)");
            }
            Row::new(vec![
                Cell::from(name),
                Cell::from(if a.formation.is_empty() {
                    "-".to_string()
                } else {
                    a.formation.clone()
                }),
                Cell::from(format!("{}/{}", a.dynos_up, a.dynos_total)).style(dynos_style),
                crashed,
                Cell::from(a.release.map(|v| format!("v{v}")).unwrap_or("-".into())),
                Cell::from(
                    s.pricing
                        .as_ref()
                        .and_then(|p| hourly_cost(&a.formation, p))
                        .unwrap_or_else(|| "-".into()),
                ),
            ])
        },
    );
}

/// What the formation (`web=3:standard-2x worker=1:basic`) costs an hour by `pricing`, eco
/// dynos aside (their pool is paid per owner): `0.21`.
fn hourly_cost(formation: &str, pricing: &dyno_shared::api::Pricing) -> Option<String> {
    if formation.is_empty() {
        return None;
    }
    let mut total = 0.0;
    for entry in formation.split_whitespace() {
        let (_, spec) = entry.split_once('=')?;
        let (qty, size) = spec.split_once(':')?;
        let qty: f64 = qty.parse().ok()?;
        let size: dyno_shared::Size = size.parse().ok()?;
        let hourly = pricing.sizes.iter().find(|p| p.size == size)?.hourly;
        total += qty * hourly;
    }
    Some(format!("{total:.3}"))
}

fn dyno_row(d: &Dyno, now: i64, wide: bool) -> Row<'static> {
    let uptime = if d.state == "up" {
        parse_iso(&d.updated_at)
            .map(|t| span_of(now - t))
            .unwrap_or_default()
    } else {
        "-".into()
    };
    let (mem, cpu) = match &d.stats {
        Some(st) => (
            Cell::from(gauge(st.memory_percent, 6)),
            Cell::from(
                st.cpu_percent
                    .map(|c| format!("{c:.0}%"))
                    .unwrap_or("-".into()),
            ),
        ),
        None => (Cell::from("-"), Cell::from("-")),
    };
    let restarts = if d.restarts > 0 {
        Cell::from(d.restarts.to_string()).fg(Color::Yellow)
    } else {
        Cell::from("0")
    };
    let mut cells = vec![
        Cell::from(d.name.clone()),
        Cell::from(d.state.clone()).style(state_colour(&d.state)),
        Cell::from(d.size.to_string()),
    ];
    if wide {
        cells.push(Cell::from(d.host.clone().unwrap_or("-".into())));
    }
    cells.extend([Cell::from(uptime), mem, cpu, restarts]);
    if wide {
        cells.push(Cell::from(format!("v{}", d.release.version)));
    }
    Row::new(cells)
}

fn draw_app(f: &mut Frame, area: Rect, s: &State, app: &str) {
    let Some(d) = s.app_detail(app) else {
        draw_placeholder(f, area, s, app);
        return;
    };
    // The events pane shrinks first on small terminals.
    let events_h = match area.height {
        0..=14 => 0,
        15..=24 => 5,
        _ => 8,
    };
    let [summary, dynos, events] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(events_h),
    ])
    .areas(area);
    // One line of process types: `web 3×standard-2x 3 up · worker 1×basic 0 up 1 crashed`.
    let mut spans = vec![
        Span::raw(format!(" {} ", d.app.name)).bold(),
        Span::raw(
            d.app
                .release
                .map(|v| format!("v{v} "))
                .unwrap_or("no release ".into()),
        )
        .fg(Color::DarkGray),
    ];
    let mut types: Vec<_> = d.formation.iter().collect();
    types.sort_by(|a, b| a.process_type.cmp(&b.process_type));
    for (i, ft) in types.iter().enumerate() {
        let of_type: Vec<&Dyno> = d
            .dynos
            .iter()
            .filter(|x| x.process_type == ft.process_type && !x.one_off)
            .collect();
        let up = of_type.iter().filter(|x| x.state == "up").count();
        let crashed = of_type.iter().filter(|x| x.state == "crashed").count();
        if i > 0 {
            spans.push(Span::raw(" · ").fg(Color::DarkGray));
        }
        spans.push(Span::raw(format!("{}={}:{} ", ft.process_type, ft.quantity, ft.size)).bold());
        let colour = if up as u32 == ft.quantity {
            Color::Green
        } else {
            Color::Yellow
        };
        spans.push(Span::raw(format!("{up} up")).fg(colour));
        if crashed > 0 {
            spans.push(
                Span::raw(format!(" {crashed} crashed"))
                    .fg(Color::Red)
                    .bold(),
            );
        }
    }
    if d.app.maintenance {
        spans.push(Span::raw("  maintenance").fg(Color::Yellow).bold());
    }
    f.render_widget(Paragraph::new(Line::from(spans)), summary);
    let total = d.dynos.len();
    let block = body_block(s, "Dynos", Some((s.visible_rows().len(), total)));
    if d.dynos.is_empty() {
        let inner = block.inner(dynos);
        f.render_widget(block, dynos);
        message(
            f,
            inner,
            "No dynos; scale a type with `s` (web=1).",
            Color::DarkGray,
        );
    } else {
        let now = s.now;
        // Narrow terminals lose the host and release columns first.
        let wide = dynos.width >= 76;
        let (header, widths): (Vec<&str>, Vec<Constraint>) = if wide {
            (
                vec![
                    "NAME", "STATE", "SIZE", "HOST", "UPTIME", "MEMORY", "CPU", "RST", "REL",
                ],
                vec![
                    Constraint::Length(10),
                    Constraint::Length(8),
                    Constraint::Length(11),
                    Constraint::Fill(1),
                    Constraint::Length(6),
                    Constraint::Length(11),
                    Constraint::Length(4),
                    Constraint::Length(3),
                    Constraint::Length(4),
                ],
            )
        } else {
            (
                vec!["NAME", "STATE", "SIZE", "UPTIME", "MEMORY", "CPU", "RST"],
                vec![
                    Constraint::Fill(1),
                    Constraint::Length(8),
                    Constraint::Length(11),
                    Constraint::Length(6),
                    Constraint::Length(11),
                    Constraint::Length(4),
                    Constraint::Length(3),
                ],
            )
        };
        table(f, dynos, s, block, (&header, &widths), total, &|i| {
            dyno_row(&d.dynos[i], now, wide)
        });
    }
    if events_h > 0 {
        let block = Block::default()
            .borders(Borders::ALL)
            .border_style(Style::default().fg(Color::DarkGray))
            .title(Line::from(" Recent events ").bold());
        let inner = block.inner(events);
        f.render_widget(block, events);
        let n = inner.height as usize;
        let lines: Vec<Line> = d.events[d.events.len().saturating_sub(n)..]
            .iter()
            .map(|l| {
                let t = l.at / 1_000_000;
                Line::from(vec![
                    Span::raw(format!("{:>8} ", span_of(s.now - t))).fg(Color::DarkGray),
                    Span::raw(format!("{}: ", l.process)).fg(Color::Cyan),
                    Span::raw(l.message.clone()),
                ])
            })
            .collect();
        f.render_widget(Paragraph::new(lines), inner);
    }
}

fn draw_hosts(f: &mut Frame, area: Rect, s: &State) {
    let Some(hosts) = &s.hosts else {
        draw_placeholder(f, area, s, "Hosts");
        return;
    };
    let total = hosts.len();
    let block = body_block(s, "Hosts", Some((s.visible_rows().len(), total)));
    let now = s.now;
    let wide = area.width >= 100;
    let mut header = vec![
        "NAME",
        "ADDRESS",
        "STATE",
        "ISOLATION",
        "MEMORY ALLOCATED",
        "DRAINED",
        "DYNOS",
    ];
    let mut widths = vec![
        Constraint::Fill(1),
        Constraint::Length(15),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(22),
        Constraint::Length(7),
        Constraint::Length(5),
    ];
    if wide {
        header.push("CPU LOAD");
        widths.push(Constraint::Length(10));
        header.push("SEEN");
        widths.push(Constraint::Length(6));
    } else {
        header[3] = "ISOL.";
        widths[3] = Constraint::Length(5);
    }
    table(f, area, s, block, (&header, &widths), total, &|i| {
        let h = &hosts[i];
        let state = match h.state.as_str() {
            "connected" => Style::default().fg(Color::Green),
            "away" => Style::default().fg(Color::Yellow).bold(),
            _ => Style::default().fg(Color::Red).bold(),
        };
        let pct = if h.memory_mb > 0 {
            h.allocated_mb as f64 * 100.0 / h.memory_mb as f64
        } else {
            0.0
        };
        let mut memory = gauge(pct, 5);
        memory.push_span(Span::raw(format!(" {}/{}M", h.allocated_mb, h.memory_mb)));
        let mut cells = vec![
            Cell::from(h.name.clone()),
            Cell::from(h.address.clone()),
            Cell::from(h.state.clone()).style(state),
            Cell::from(h.isolation.clone()),
            Cell::from(memory),
            if h.drained {
                Cell::from("yes").fg(Color::Yellow)
            } else {
                Cell::from("no").fg(Color::DarkGray)
            },
            Cell::from(h.dynos.to_string()),
        ];
        if wide {
            cells.push(match h.load_1m {
                Some(load) => {
                    let busy = load >= h.cpus.max(1) as f64;
                    Cell::from(format!("{load:.2}/{}", h.cpus)).style(if busy {
                        Style::default().fg(Color::Yellow)
                    } else {
                        Style::default()
                    })
                }
                None => Cell::from(format!("-/{}", h.cpus)).fg(Color::DarkGray),
            });
            let seen = h
                .last_heartbeat
                .as_deref()
                .and_then(parse_iso)
                .map(|t| span_of(now - t))
                .unwrap_or("never".into());
            cells.push(Cell::from(seen));
        }
        Row::new(cells)
    });
}

fn draw_releases(f: &mut Frame, area: Rect, s: &State, app: &str) {
    let title = format!("Releases of {app}");
    let Some(rel) = s.releases_of(app) else {
        draw_placeholder(f, area, s, &title);
        return;
    };
    let total = rel.len();
    let block = body_block(s, &title, Some((s.visible_rows().len(), total)));
    if rel.is_empty() {
        let inner = block.inner(area);
        f.render_widget(block, area);
        message(
            f,
            inner,
            "No releases yet; deploy with `dyno deploy DIR`.",
            Color::DarkGray,
        );
        return;
    }
    let now = s.now;
    table(
        f,
        area,
        s,
        block,
        (
            &["VERSION", "STATUS", "DESCRIPTION", "CREATED", "TYPES"],
            &[
                Constraint::Length(7),
                Constraint::Length(9),
                Constraint::Fill(2),
                Constraint::Length(12),
                Constraint::Fill(1),
            ],
        ),
        total,
        &|i| {
            let r = &rel[i];
            let status = if r.current {
                Cell::from("current").fg(Color::Green).bold()
            } else if r.status == "succeeded" {
                Cell::from(r.status.clone()).fg(Color::DarkGray)
            } else {
                Cell::from(r.status.clone()).fg(Color::Red)
            };
            Row::new(vec![
                Cell::from(format!("v{}", r.version)),
                status,
                Cell::from(r.description.clone()),
                Cell::from(
                    parse_iso(&r.created_at)
                        .map(|t| ago(now - t))
                        .unwrap_or_default(),
                ),
                Cell::from(
                    r.process_types
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
            ])
        },
    );
}

fn draw_config(f: &mut Frame, area: Rect, s: &State, app: &str) {
    let title = format!("Config vars of {app}");
    let Some(vars) = s.config_of(app) else {
        draw_placeholder(f, area, s, &title);
        return;
    };
    let total = vars.len();
    let block = body_block(s, &title, Some((s.visible_rows().len(), total)));
    if vars.is_empty() {
        let inner = block.inner(area);
        f.render_widget(block, area);
        message(f, inner, "No config vars.", Color::DarkGray);
        return;
    }
    let entries: Vec<(&String, &String)> = vars.iter().collect();
    table(
        f,
        area,
        s,
        block,
        (
            &["KEY", "VALUE"],
            &[Constraint::Length(28), Constraint::Fill(1)],
        ),
        total,
        &|i| {
            let (k, v) = entries[i];
            let shown = s.reveal_all || s.revealed.contains(k);
            let value = if shown {
                Cell::from(v.replace('\n', "⏎"))
            } else {
                Cell::from(MASK).fg(Color::DarkGray)
            };
            Row::new(vec![Cell::from(k.clone()).fg(Color::Cyan), value])
        },
    );
}

/// This month's cost per app, process type and size with subtotals (the table `dyno billing`
/// prints), a chart of the cost per day when there is room, then the eco pools and the total
/// with its projection. `p` swaps the lines for a bigger chart and the price table.
fn draw_billing(f: &mut Frame, area: Rect, s: &State) {
    let Some(report) = &s.billing else {
        draw_placeholder(f, area, s, "Billing");
        return;
    };
    let rows = s.billing_rows();
    let title = crate::output::billing_title(report, None);
    let count = (!s.billing_prices).then(|| (s.visible_rows().len(), rows.len()));
    let block = body_block(s, &title, count);
    let inner = block.inner(area);
    f.render_widget(block, area);
    if s.billing_prices {
        draw_prices(f, inner, s, report);
        return;
    }
    let pools = crate::output::eco_pool_rows(report);
    let pools_h = if pools.is_empty() {
        0
    } else {
        pools.len() as u16 + 2
    };
    // The chart takes the room the lines leave: a blank, its title, at least two rows of
    // bars and the days, at most six rows of bars.
    let lines_h = rows.len().max(1) as u16 + 1;
    let spare = inner.height.saturating_sub(lines_h + pools_h + 2);
    let chart_h = if report.daily.is_empty() || spare < 5 {
        0
    } else {
        spare.min(9)
    };
    let [lines_area, chart_area, pools_area, total_area] = Layout::vertical([
        Constraint::Min(2),
        Constraint::Length(chart_h),
        Constraint::Length(pools_h),
        Constraint::Length(2),
    ])
    .areas(inner);
    if rows.is_empty() {
        message(
            f,
            lines_area,
            &format!("No dyno usage in {} yet.", report.month),
            Color::DarkGray,
        );
    } else {
        billing_lines(f, lines_area, s, report, &rows);
    }
    if chart_h > 0 {
        let mut lines = vec![Line::from("")];
        lines.extend(day_chart(report, chart_area.width, chart_h - 3));
        f.render_widget(Paragraph::new(lines), chart_area);
    }
    if pools_h > 0 {
        let mut all = vec![vec![
            "ECO POOL".to_string(),
            "HOURS USED / LIMIT".to_string(),
            "COST".to_string(),
        ]];
        all.extend(pools);
        let text = crate::output::columns_aligned(&all, &[false, true, true, false]);
        let mut lines = vec![Line::from("")];
        for (i, l) in text.lines().enumerate() {
            let exhausted = i > 0 && report.eco_pools[i - 1].exhausted;
            lines.push(if i == 0 {
                Line::from(l.to_string()).fg(Color::Cyan).bold()
            } else if exhausted {
                Line::from(l.to_string()).fg(Color::Red)
            } else {
                Line::from(l.to_string())
            });
        }
        f.render_widget(Paragraph::new(lines), pools_area);
    }
    f.render_widget(
        Paragraph::new(vec![
            Line::from(""),
            Line::from(crate::output::billing_total(report)).bold(),
        ]),
        total_area,
    );
}

/// The billing lines as a table of the view's visible rows.
fn billing_lines(
    f: &mut Frame,
    area: Rect,
    s: &State,
    report: &dyno_shared::api::BillingReport,
    rows: &[crate::output::BillingRow],
) {
    // Number columns as wide as their widest cell and a gap, aligned right under a
    // right-aligned head.
    let names = crate::output::billing_header(report);
    let width = |i: usize| {
        let widest = rows
            .iter()
            .map(|r| r.cells[i].chars().count())
            .chain([names[i].len()])
            .max()
            .unwrap_or(0);
        let gap = if crate::output::BILLING_RIGHT[i] {
            1
        } else {
            0
        };
        (widest + gap) as u16
    };
    let heads: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let n = n.to_uppercase();
            if crate::output::BILLING_RIGHT[i] {
                format!("{n:>w$}", w = width(i) as usize)
            } else {
                n
            }
        })
        .collect();
    let header: Vec<&str> = heads.iter().map(String::as_str).collect();
    let mut widths = vec![
        Constraint::Fill(1),
        Constraint::Length(width(1).max(8)),
        Constraint::Length(width(2).max(11)),
    ];
    widths.extend((3..names.len()).map(|i| Constraint::Length(width(i))));
    table(
        f,
        area,
        s,
        Block::default(),
        (&header, &widths),
        rows.len(),
        &|i| {
            let r = &rows[i];
            let cells = r.cells.iter().enumerate().map(|(c, text)| {
                let line = Line::from(text.clone());
                let line = if crate::output::BILLING_RIGHT[c] {
                    line.right_aligned()
                } else {
                    line
                };
                let cell = Cell::from(line);
                if r.subtotal && c == 1 {
                    cell.fg(Color::DarkGray)
                } else {
                    cell
                }
            });
            let row = Row::new(cells.collect::<Vec<_>>());
            if r.subtotal { row.bold() } else { row }
        },
    );
}

/// Days of a `2026-11` month; `None` when it does not parse.
fn days_in_month(month: &str) -> Option<u32> {
    let (y, m) = month.split_once('-')?;
    let (y, m): (i64, u32) = (y.parse().ok()?, m.parse().ok()?);
    if !(1..=12).contains(&m) {
        return None;
    }
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    Some(
        (dyno_shared::time::days_from_civil(ny, nm, 1)
            - dyno_shared::time::days_from_civil(y, m, 1)) as u32,
    )
}

/// The month's cost per UTC day as a bar chart `width` wide: a title line, `bars` rows of bars
/// (eighths of a cell high) with the largest day's cost beside the top, and the days under it.
/// Days to come are left empty, so the chart also shows how far the month is.
pub fn day_chart(
    report: &dyno_shared::api::BillingReport,
    width: u16,
    bars: u16,
) -> Vec<Line<'static>> {
    use crate::output::money;
    let cur = &report.currency;
    let days = days_in_month(&report.month)
        .unwrap_or(report.daily.len() as u32)
        .max(report.daily.len() as u32)
        .max(1) as usize;
    let mut cost = vec![None::<f64>; days];
    for d in &report.daily {
        if let Some(day) = d.date.get(8..10).and_then(|x| x.parse::<usize>().ok())
            && (1..=days).contains(&day)
        {
            cost[day - 1] = Some(d.cost);
        }
    }
    let max = cost.iter().flatten().copied().fold(0.0_f64, f64::max);
    let top = money(max, cur);
    let axis_w = top.chars().count().max(2) + 1;
    let room = (width as usize).saturating_sub(axis_w + 1);
    // Two columns a day (a bar and a gap) when they fit, else one.
    let step = if days * 2 <= room { 2 } else { 1 };
    let shown = days.min(room / step);
    let mut title = vec![Span::raw("DAILY COST").fg(Color::Cyan).bold()];
    if let Some((i, c)) = cost
        .iter()
        .enumerate()
        .filter_map(|(i, c)| Some((i, (*c)?)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
    {
        let month = report.month.get(5..7).unwrap_or("");
        title.push(Span::raw(format!(
            "  most {} on {month}-{:02}",
            money(c, cur),
            i + 1
        )));
        if report.current
            && let Some(last) = report.daily.last()
        {
            title.push(Span::raw(format!(
                ", {} so far today",
                money(last.cost, cur)
            )));
        }
    }
    let mut out = vec![Line::from(title)];
    let today = if report.current {
        report.daily.len().checked_sub(1)
    } else {
        None
    };
    const PARTS: [&str; 9] = [" ", "▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"];
    let rows = bars.max(1) as usize;
    for r in 0..rows {
        let from_bottom = rows - 1 - r;
        let label = if r == 0 {
            top.clone()
        } else if from_bottom == 0 {
            money(0.0, cur)
        } else {
            String::new()
        };
        let mut spans = vec![Span::raw(format!("{label:>w$}", w = axis_w - 1)).fg(Color::DarkGray)];
        spans.push(Span::raw("│").fg(Color::DarkGray));
        for (day, c) in cost.iter().enumerate().take(shown) {
            let eighths = match c {
                Some(c) if max > 0.0 => {
                    let e = (c / max * (rows * 8) as f64).round() as usize;
                    // A day that cost something shows, however little.
                    if *c > 0.0 { e.max(1) } else { e }
                }
                _ => 0,
            };
            let part = eighths.saturating_sub(from_bottom * 8).min(8);
            let colour = if Some(day) == today {
                Color::Yellow
            } else {
                Color::Green
            };
            spans.push(Span::raw(PARTS[part]).fg(colour));
            if step == 2 {
                spans.push(Span::raw(" "));
            }
        }
        out.push(Line::from(spans));
    }
    // The days: 1, then every fifth, each under its bar.
    let mut axis = format!("{:>w$}", "", w = axis_w);
    for day in 1..=shown {
        if day == 1 || day % 5 == 0 {
            let at = axis_w + (day - 1) * step;
            let text = day.to_string();
            if axis.chars().count() <= at {
                while axis.chars().count() < at {
                    axis.push(' ');
                }
                axis.push_str(&text);
            }
        }
    }
    out.push(Line::from(axis).fg(Color::DarkGray));
    out
}

/// The price table in effect, as `GET /pricing` gives it: per size the cost of an hour and the
/// most a dyno costs in a month (with the dyno-hour model, the dyno-hours an hour counts as),
/// and the eco pool.
pub fn price_lines(p: &dyno_shared::api::Pricing) -> Vec<Line<'static>> {
    use crate::output::{display_size, hourly_rate, money, price, quantity_text};
    let cur = &p.currency;
    let since = p.effective_from.get(..10).unwrap_or(&p.effective_from);
    let mut out = vec![Line::from(vec![
        Span::raw("PRICES").fg(Color::Cyan).bold(),
        Span::raw(format!("  {} model, {cur}, since {since}", p.model)),
    ])];
    let hour_model = p.model == "dyno-hour";
    let mut head = vec![
        "SIZE".to_string(),
        "COST/HOUR".to_string(),
        "MAX/MONTH".to_string(),
    ];
    if hour_model {
        head.push("DYNO-HOURS/HOUR".to_string());
    }
    let mut rows = vec![head];
    for sp in &p.sizes {
        let hourly = if sp.size == dyno_shared::Size::Eco && sp.hourly == 0.0 {
            "eco pool".to_string()
        } else {
            hourly_rate(sp.hourly, cur)
        };
        let mut row = vec![
            display_size(sp.size),
            hourly,
            sp.max_monthly
                .map(|m| price(m, cur))
                .unwrap_or("-".to_string()),
        ];
        if hour_model {
            row.push(quantity_text(sp.units));
        }
        rows.push(row);
    }
    let text = crate::output::columns_aligned(&rows, &[false, true, true, true]);
    for (i, l) in text.lines().enumerate() {
        out.push(if i == 0 {
            Line::from(l.to_string()).fg(Color::Cyan)
        } else {
            Line::from(l.to_string())
        });
    }
    out.push(Line::from(format!(
        "Eco pool: {} dyno hours a month per owner for {}",
        quantity_text(p.eco_pool_hours),
        price(p.eco_pool_price, cur)
    )));
    if hour_model {
        out.push(Line::from(format!(
            "{} per dyno-hour; the first {} of each app's month free",
            money(p.dyno_hour_price, cur),
            quantity_text(p.free_hours_per_app)
        )));
    }
    out
}

/// `p` in the Billing view: the daily chart as tall as the room allows and the price table.
fn draw_prices(f: &mut Frame, area: Rect, s: &State, report: &dyno_shared::api::BillingReport) {
    let prices = match &s.pricing {
        Some(p) => price_lines(p),
        None => vec![
            Line::from("No price table from the coordinator (GET /pricing).").fg(Color::DarkGray),
        ],
    };
    let prices_h = prices.len() as u16;
    let chart_h = area.height.saturating_sub(prices_h + 1).min(12);
    let [chart_area, _, prices_area] = Layout::vertical([
        Constraint::Length(chart_h),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(area);
    if report.daily.is_empty() {
        message(
            f,
            chart_area,
            &format!("No daily costs for {} yet.", report.month),
            Color::DarkGray,
        );
    } else if chart_h >= 3 {
        f.render_widget(
            Paragraph::new(day_chart(report, chart_area.width, chart_h - 2)),
            chart_area,
        );
    }
    f.render_widget(Paragraph::new(prices), prices_area);
}

/// `15:13:46.677` of a line's unix microseconds.
fn short_time(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let ms = micros.rem_euclid(1_000_000) / 1000;
    let sod = secs.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}.{ms:03}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

fn log_line<'a>(buf: &LogBuf, l: &'a LogLine) -> Line<'a> {
    let mut spans = Vec::with_capacity(6);
    if buf.timestamps {
        spans.push(Span::raw(short_time(l.at)).fg(Color::DarkGray));
        spans.push(Span::raw(" "));
    }
    let source = match l.source {
        LogSource::App => "app",
        LogSource::System | LogSource::Router => "heroku",
    };
    let colour = PALETTE[buf.colour_of(&l.process) as usize % PALETTE.len()];
    spans.push(Span::raw(format!("{source}[{}]:", l.process)).fg(colour));
    spans.push(Span::raw(" "));
    match &buf.search {
        None => spans.push(Span::raw(l.message.as_str())),
        Some(re) => {
            let mut at = 0;
            for m in re.find_iter(&l.message) {
                if m.start() > at {
                    spans.push(Span::raw(&l.message[at..m.start()]));
                }
                if m.end() > m.start() {
                    spans.push(
                        Span::raw(&l.message[m.start()..m.end()])
                            .fg(Color::Black)
                            .bg(Color::Yellow),
                    );
                }
                at = m.end();
            }
            if at < l.message.len() {
                spans.push(Span::raw(&l.message[at..]));
            }
        }
    }
    Line::from(spans)
}

/// The Logs view's top right: the dyno the lines are narrowed to and its state (a one-off
/// started from the console: `run.3 up`), else the app's release and dynos up.
fn logs_status(s: &State, buf: &LogBuf) -> Option<Line<'static>> {
    let d = s.app_detail(&buf.app)?;
    if let Some(name) = buf.filter.dyno.as_deref().filter(|n| n.contains('.'))
        && let Some(x) = d.dynos.iter().find(|x| x.name == name)
    {
        return Some(Line::from(vec![
            Span::raw(format!(" {name} ")),
            Span::styled(x.state.clone(), state_colour(&x.state)),
            Span::raw(" "),
        ]));
    }
    let up = d.dynos.iter().filter(|x| x.state == "up").count();
    let release = d
        .app
        .release
        .map(|v| format!("v{v} · "))
        .unwrap_or_default();
    Some(Line::from(format!(" {release}{up}/{} up ", d.dynos.len())).fg(Color::DarkGray))
}

fn draw_logs(f: &mut Frame, area: Rect, s: &State) {
    let Some(buf) = &s.logs else { return };
    let mut title = vec![Span::raw(format!(" Logs {} ", buf.app)).bold()];
    if buf.following() {
        title.push(Span::raw("following ").fg(Color::Green));
    } else {
        title.push(
            Span::raw(format!("paused (+{} new) ", buf.new_while_paused))
                .fg(Color::Black)
                .bg(Color::Yellow),
        );
        title.push(Span::raw(" "));
    }
    let filter = buf.filter.describe();
    if !filter.is_empty() {
        title.push(Span::raw(format!("filter: {filter} ")).fg(Color::Yellow));
    }
    if let Some(re) = &buf.search {
        title.push(Span::raw(format!("/{}/ ", re.as_str())).fg(Color::Yellow));
    }
    if buf.wrap {
        title.push(Span::raw("wrap ").fg(Color::DarkGray));
    }
    match &s.tail {
        TailState::Live => {}
        TailState::Connecting => title.push(Span::raw("connecting... ").fg(Color::Yellow)),
        TailState::Broken(e) => title.push(Span::raw(format!("tail lost: {e} ")).fg(Color::Red)),
    }
    let mut block = Block::default()
        .borders(Borders::ALL)
        .border_style(Style::default().fg(Color::DarkGray))
        .title(Line::from(title));
    if let Some(status) = logs_status(s, buf) {
        block = block.title_top(status.right_aligned());
    }
    let block = block.title_bottom(
        Line::from(format!(" {} lines ", buf.len()))
            .fg(Color::DarkGray)
            .right_aligned(),
    );
    let inner = block.inner(area);
    f.render_widget(block, area);
    let h = inner.height as usize;
    let w = inner.width.max(1) as usize;
    if h == 0 {
        return;
    }
    let window = buf.window(h);
    if window.is_empty() {
        let text = if buf.is_empty() {
            "no lines yet"
        } else {
            "no lines match (f: filter, /: search)"
        };
        message(f, inner, text, Color::DarkGray);
        return;
    }
    let lines: Vec<Line> = window.iter().map(|(_, l)| log_line(buf, l)).collect();
    if buf.wrap {
        // Keep the newest lines at the bottom: skip the rows that overflow at the top.
        let rows: usize = lines.iter().map(|l| l.width().max(1).div_ceil(w)).sum();
        let skip = rows.saturating_sub(h) as u16;
        f.render_widget(
            Paragraph::new(Text::from(lines))
                .wrap(Wrap { trim: false })
                .scroll((skip, 0)),
            inner,
        );
    } else {
        f.render_widget(Paragraph::new(Text::from(lines)), inner);
    }
}

fn draw_help(f: &mut Frame, area: Rect, s: &State, scroll: u16) {
    let scope = s.view().scope();
    let mut lines: Vec<Line> = Vec::new();
    let mut scopes = vec![scope];
    if scope != Scope::Logs {
        scopes.push(Scope::Table);
    }
    scopes.push(Scope::Global);
    for sc in scopes {
        let items: Vec<_> = keymap::BINDINGS
            .iter()
            .filter(|b| b.scope == sc && !(s.read_only && b.action))
            .collect();
        if items.is_empty() {
            continue;
        }
        if !lines.is_empty() {
            lines.push(Line::from(""));
        }
        lines.push(Line::from(sc.title()).bold().fg(Color::Cyan));
        for b in items {
            lines.push(Line::from(vec![
                Span::raw(format!("  {:<12}", b.label)).fg(Color::Yellow),
                Span::raw(b.help),
            ]));
        }
    }
    lines.push(Line::from(""));
    lines.push(Line::from("Views (:NAME)").bold().fg(Color::Cyan));
    for (n, arg) in keymap::VIEW_NAMES {
        lines.push(Line::from(vec![
            Span::raw(format!("  :{n:<11}")).fg(Color::Yellow),
            Span::raw(*arg),
        ]));
    }
    lines.push(Line::from(""));
    lines.push(Line::from("Typing").bold().fg(Color::Cyan));
    for (k, what) in [
        ("enter", "apply"),
        ("esc", "cancel"),
        ("ctrl-u", "clear the line"),
        ("← → home end", "move"),
    ] {
        lines.push(Line::from(vec![
            Span::raw(format!("  {k:<12}")).fg(Color::Yellow),
            Span::raw(what),
        ]));
    }
    let w = area.width.saturating_sub(4).min(76);
    let h = area.height.saturating_sub(2);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + 1,
        width: w,
        height: h,
    };
    f.render_widget(Clear, r);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(Style::default().fg(Color::Cyan))
        .title(Line::from(" Keys (any key closes; j/k scroll) ").bold());
    let max_scroll = (lines.len() as u16).saturating_sub(h.saturating_sub(2));
    f.render_widget(
        Paragraph::new(Text::from(lines))
            .block(block)
            .scroll((scroll.min(max_scroll), 0)),
        r,
    );
}

/// A centred box sized to its text; returns its rectangle.
fn popup(f: &mut Frame, area: Rect, title: &str, lines: Vec<Line<'static>>, colour: Color) -> Rect {
    let w = area.width.saturating_sub(4).clamp(10, 72);
    let inner_w = (w - 2) as usize;
    let rows: usize = lines
        .iter()
        .map(|l| l.width().max(1).div_ceil(inner_w.max(1)))
        .sum();
    let h = ((rows + 2) as u16).min(area.height);
    let r = Rect {
        x: area.x + (area.width.saturating_sub(w)) / 2,
        y: area.y + (area.height.saturating_sub(h)) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, r);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(Style::default().fg(colour))
        .title(Line::from(format!(" {title} ")).bold());
    f.render_widget(
        Paragraph::new(Text::from(lines))
            .block(block)
            .wrap(Wrap { trim: false }),
        r,
    );
    r
}
