//! The dyno manager's decisions: a read-only view of desired and actual state in, a plan out.
//! Pure, so every rule is unit-tested without processes; `Coordinator::reconcile` applies plans.

use crate::store::{AppRow, Desired, DynoRow, ReleaseRow};
use dyno_shared::protocol::DynoState;
use dyno_shared::{Formation, Size};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

pub struct AppView {
    pub app: AppRow,
    pub release: Option<ReleaseRow>,
    pub formation: Formation,
    /// Web dynos of an earlier release keep serving until their replacements are up.
    pub preboot: bool,
    /// Process type -> the host label (key, value) its dynos must run on.
    pub requires: HashMap<String, (String, String)>,
    /// The owner's eco hour pool is used up for the month: eco dynos sleep.
    pub eco_sleeps: bool,
}

#[derive(Debug, Clone)]
pub struct HostView {
    pub name: String,
    pub memory_mb: u64,
    /// Its agent is connected: it can take orders and new dynos.
    pub connected: bool,
    /// Silent past the host-loss threshold: its dynos are started elsewhere. A host that is
    /// neither connected nor lost is away for a blip, and its dynos are left as they are.
    pub lost: bool,
    /// Takes no new dynos; its dynos move elsewhere one at a time.
    pub drained: bool,
    pub labels: std::collections::BTreeMap<String, String>,
}

impl HostView {
    fn satisfies(&self, requirement: Option<&(String, String)>) -> bool {
        requirement.is_none_or(|(k, v)| self.labels.get(k) == Some(v))
    }
}

pub struct View<'a> {
    pub apps: &'a [AppView],
    pub dynos: &'a [DynoRow],
    pub hosts: &'a [HostView],
    /// Unix ms.
    pub now_ms: i64,
    /// Daily cycling: a dyno up this long is replaced (start before stop). `None`: never.
    pub cycle: Option<Cycle>,
}

/// Heroku cycles dynos after 24 h plus up to 216 minutes; ours replaces before it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cycle {
    pub after: Duration,
    /// Each dyno waits a further share of this, fixed by its id, so dynos started together do
    /// not cycle together.
    pub jitter: Duration,
}

impl Cycle {
    fn due(&self, d: &DynoRow, now_ms: i64) -> bool {
        use std::hash::{Hash, Hasher};
        let Some(up_since) = d.up_since else {
            return false;
        };
        // DefaultHasher::new() has fixed keys: the same id always gets the same offset.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        d.id.hash(&mut h);
        let jitter_ms = self.jitter.as_millis() as u64;
        let offset = if jitter_ms == 0 {
            0
        } else {
            h.finish() % (jitter_ms + 1)
        };
        d.state == DynoState::Up
            && now_ms - up_since >= (self.after.as_millis() as u64 + offset) as i64
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A new dyno for a formation slot, placed on `host`.
    Create {
        app_id: String,
        process_type: String,
        idx: u32,
        size: Size,
        host: String,
    },
    /// (Re)start an existing row on `host`: crashed past its cool-off, or lost.
    Start { dyno_id: String, host: String },
    /// Ask the agent to stop it; the row stays until it reports down.
    Stop { dyno_id: String },
    /// Drop a row whose dyno is not running.
    Forget { dyno_id: String },
    /// Stop it and keep its row as `idle` until its eco pool has hours again.
    Sleep { dyno_id: String },
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// System lines to log: (app, dyno, message), e.g. `Cycling`.
    pub notes: Vec<(String, String, String)>,
    /// Formation slots no connected host has room for (`app web.3 standard-2x`).
    pub unplaced: Vec<String>,
}

/// How long a crashed dyno waits before its next start, by how many crashes in a row it has had.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    pub backoff: Vec<Duration>,
    /// A dyno up at least this long has started correctly: its crash count resets.
    pub reset_after: Duration,
}

impl Default for RestartPolicy {
    /// Heroku's Common Runtime: at once, then 20, 40, 60, 180, 320 minutes, then every 320.
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(n * 60);
        RestartPolicy {
            backoff: vec![Duration::ZERO, m(20), m(40), m(60), m(180), m(320)],
            reset_after: Duration::from_secs(10),
        }
    }
}

impl RestartPolicy {
    /// Delay before restart number `crashes` (1 = the first crash).
    pub fn delay(&self, crashes: u32) -> Duration {
        let i = (crashes.max(1) - 1) as usize;
        self.backoff
            .get(i)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::ZERO)
    }

    /// The crash count after a crash at `now_ms` of a dyno that was up since `up_since`.
    pub fn count_after_crash(&self, previous: u32, up_since: Option<i64>, now_ms: i64) -> u32 {
        let stable = up_since.is_some_and(|t| now_ms - t >= self.reset_after.as_millis() as i64);
        if stable { 1 } else { previous + 1 }
    }
}

pub fn plan(view: &View) -> Plan {
    let mut plan = Plan::default();
    let apps: HashMap<&str, &AppView> = view.apps.iter().map(|a| (a.app.id.as_str(), a)).collect();
    let connected: HashSet<&str> = view
        .hosts
        .iter()
        .filter(|h| h.connected)
        .map(|h| h.name.as_str())
        .collect();
    // A host nobody knows any more (removed with `hosts:remove`) is as good as lost.
    let known: HashSet<&str> = view.hosts.iter().map(|h| h.name.as_str()).collect();
    let lost: HashSet<&str> = view
        .hosts
        .iter()
        .filter(|h| h.lost)
        .map(|h| h.name.as_str())
        .chain(
            view.dynos
                .iter()
                .filter_map(|d| d.host.as_deref())
                .filter(|h| !known.contains(h)),
        )
        .collect();
    let drained: HashSet<&str> = view
        .hosts
        .iter()
        .filter(|h| h.drained)
        .map(|h| h.name.as_str())
        .collect();
    let mut placer = Placer::new(view);
    // Slots (app, type, idx) still held by a row, so we know what to create.
    let mut held: HashSet<(&str, &str, u32)> = HashSet::new();
    let surge = Surge::new(view, &apps, &lost, &drained);
    let cycling = |d: &DynoRow| view.cycle.is_some_and(|c| c.due(d, view.now_ms));
    // Replacements under way per drained host: a drain moves one dyno at a time.
    let mut moving: HashMap<&str, u32> = surge.in_flight_per_drained_host();

    for d in view.dynos {
        // A dyno on a lost host counts as gone: nothing can stop it there, and its agent is told
        // to stop it if it ever comes back (its reports are then stale).
        let on_lost_host = d.host.as_deref().is_some_and(|h| lost.contains(h));
        let running = d.state.is_running() && !on_lost_host;
        let stop_or_forget = |plan: &mut Plan| {
            plan.actions.push(if running {
                Action::Stop {
                    dyno_id: d.id.clone(),
                }
            } else {
                Action::Forget {
                    dyno_id: d.id.clone(),
                }
            })
        };
        if d.desired == Desired::Stop {
            if !running || d.host.is_none() {
                plan.actions.push(Action::Forget {
                    dyno_id: d.id.clone(),
                });
            } else {
                held.insert((&d.app_id, &d.process_type, d.idx));
            }
            continue;
        }
        let Some(app) = apps.get(d.app_id.as_str()) else {
            stop_or_forget(&mut plan);
            continue;
        };
        if d.one_off {
            if !running {
                plan.actions.push(Action::Forget {
                    dyno_id: d.id.clone(),
                });
            }
            continue;
        }
        let entry = d
            .process_type
            .parse()
            .ok()
            .and_then(|t| app.formation.entries.get(&t));
        let current = app.release.as_ref().map(|r| r.version);
        let wanted = match entry {
            Some(e) => d.idx <= e.quantity && Some(d.release) == current && d.size == e.size,
            None => false,
        };
        if wanted && app.eco_sleeps && d.size == Size::Eco {
            held.insert((&d.app_id, &d.process_type, d.idx));
            if running && d.desired != Desired::Sleep {
                plan.actions.push(Action::Sleep {
                    dyno_id: d.id.clone(),
                });
            }
            continue;
        }
        // Start-before-stop: a dyno leaving a drained host, or a web dyno of an earlier release
        // with preboot on, serves until the dyno that takes its slot is up.
        if running && (surge.replaces_first(d) || (wanted && cycling(d))) {
            held.insert((&d.app_id, &d.process_type, d.idx));
            match surge.successor(d) {
                Some(n) if n.state == DynoState::Up => plan.actions.push(Action::Stop {
                    dyno_id: d.id.clone(),
                }),
                Some(_) => {}
                None => {
                    if wanted && cycling(d) {
                        plan.notes
                            .push((d.app.clone(), d.name(), "Cycling".to_string()));
                    }
                    let from = d.host.as_deref().filter(|h| drained.contains(h));
                    if let Some(h) = from {
                        let n = moving.entry(h).or_insert(0);
                        if *n > 0 {
                            continue;
                        }
                        *n += 1;
                    }
                    let e = entry.expect("replaces_first implies a formation entry");
                    match placer.place(
                        &d.app_id,
                        &d.process_type,
                        e.size,
                        app.requires.get(&d.process_type),
                    ) {
                        Some(host) => plan.actions.push(Action::Create {
                            app_id: d.app_id.clone(),
                            process_type: d.process_type.clone(),
                            idx: d.idx,
                            size: e.size,
                            host,
                        }),
                        None => plan.unplaced.push(format!(
                            "{} {} {}{}",
                            d.app,
                            d.name(),
                            e.size,
                            needs(app.requires.get(&d.process_type))
                        )),
                    }
                }
            }
            continue;
        }
        if !wanted {
            // A running dyno keeps its slot until it is down, so its replacement never overlaps it.
            if running {
                held.insert((&d.app_id, &d.process_type, d.idx));
            }
            stop_or_forget(&mut plan);
            continue;
        }
        held.insert((&d.app_id, &d.process_type, d.idx));
        let due = match d.state {
            DynoState::Crashed => d.next_start_at.is_none_or(|t| t <= view.now_ms),
            DynoState::Down | DynoState::Idle => true,
            DynoState::Starting | DynoState::Up => on_lost_host,
        };
        if due {
            let req = app.requires.get(&d.process_type);
            let fits = |h: &str| view.hosts.iter().any(|v| v.name == h && v.satisfies(req));
            let host = match &d.host {
                Some(h)
                    if connected.contains(h.as_str())
                        && !drained.contains(h.as_str())
                        && fits(h) =>
                {
                    Some(h.clone())
                }
                _ => placer.place(&d.app_id, &d.process_type, d.size, req),
            };
            match host {
                Some(host) => plan.actions.push(Action::Start {
                    dyno_id: d.id.clone(),
                    host,
                }),
                None => {
                    plan.unplaced
                        .push(format!("{} {} {}{}", d.app, d.name(), d.size, needs(req)))
                }
            }
        }
    }

    for app in view.apps {
        if app.release.is_none() {
            continue;
        }
        for (ptype, e) in &app.formation.entries {
            if app.eco_sleeps && e.size == Size::Eco {
                continue;
            }
            for idx in 1..=e.quantity {
                if held.contains(&(app.app.id.as_str(), ptype.as_str(), idx)) {
                    continue;
                }
                match placer.place(
                    &app.app.id,
                    ptype.as_str(),
                    e.size,
                    app.requires.get(ptype.as_str()),
                ) {
                    Some(host) => plan.actions.push(Action::Create {
                        app_id: app.app.id.clone(),
                        process_type: ptype.to_string(),
                        idx,
                        size: e.size,
                        host,
                    }),
                    None => plan.unplaced.push(format!(
                        "{} {ptype}.{idx} {}{}",
                        app.app.name,
                        e.size,
                        needs(app.requires.get(ptype.as_str()))
                    )),
                }
            }
        }
    }
    plan
}

/// How an unplaced dyno's host requirement reads in the log.
fn needs(requirement: Option<&(String, String)>) -> String {
    requirement.map_or(String::new(), |(k, v)| {
        format!(" on a host labelled {k}={v}")
    })
}

/// Places one dyno outside a plan (one-off dynos).
pub fn place_one(
    hosts: &[HostView],
    dynos: &[DynoRow],
    app_id: &str,
    ptype: &str,
    size: Size,
) -> Option<String> {
    let view = View {
        apps: &[],
        dynos,
        hosts,
        now_ms: 0,
        cycle: None,
    };
    Placer::new(&view).place(app_id, ptype, size, None)
}

/// Which running dynos are replaced start-before-stop, and by which row.
struct Surge<'a> {
    apps: &'a HashMap<&'a str, &'a AppView>,
    hosts: HashMap<&'a str, &'a HostView>,
    lost: &'a HashSet<&'a str>,
    drained: &'a HashSet<&'a str>,
    /// Wanted rows by slot (app id, process type, index).
    slots: HashMap<(&'a str, &'a str, u32), Vec<&'a DynoRow>>,
}

impl<'a> Surge<'a> {
    fn new(
        view: &'a View,
        apps: &'a HashMap<&'a str, &'a AppView>,
        lost: &'a HashSet<&'a str>,
        drained: &'a HashSet<&'a str>,
    ) -> Surge<'a> {
        let mut slots: HashMap<(&str, &str, u32), Vec<&DynoRow>> = HashMap::new();
        for d in view.dynos {
            if d.desired == Desired::Run && !d.one_off {
                slots
                    .entry((&d.app_id, &d.process_type, d.idx))
                    .or_default()
                    .push(d);
            }
        }
        Surge {
            apps,
            hosts: view.hosts.iter().map(|h| (h.name.as_str(), h)).collect(),
            lost,
            drained,
            slots,
        }
    }

    fn entry(&self, d: &DynoRow) -> Option<(&AppView, dyno_shared::FormationEntry)> {
        let app = self.apps.get(d.app_id.as_str())?;
        let t = d.process_type.parse().ok()?;
        let e = app.formation.entries.get(&t)?;
        (d.idx <= e.quantity).then_some((*app, *e))
    }

    /// Whether `d` is current: the release and size its slot wants, on a host it may stay on.
    fn settled(&self, d: &DynoRow) -> bool {
        let Some((app, e)) = self.entry(d) else {
            return false;
        };
        let on = |set: &HashSet<&str>| d.host.as_deref().is_some_and(|h| set.contains(h));
        app.release.as_ref().map(|r| r.version) == Some(d.release)
            && d.size == e.size
            && !on(self.drained)
            && !on(self.lost)
            && self.placed_as_required(d)
    }

    /// Whether `d`'s host carries the label its type requires (if any).
    fn placed_as_required(&self, d: &DynoRow) -> bool {
        let req = self
            .apps
            .get(d.app_id.as_str())
            .and_then(|a| a.requires.get(&d.process_type));
        req.is_none()
            || d.host
                .as_deref()
                .and_then(|h| self.hosts.get(h))
                .is_some_and(|h| h.satisfies(req))
    }

    /// `d` keeps its slot until a successor is up, instead of stopping first.
    fn replaces_first(&self, d: &DynoRow) -> bool {
        let Some((app, _)) = self.entry(d) else {
            return false;
        };
        if self.settled(d) {
            return false;
        }
        let on_drained = d.host.as_deref().is_some_and(|h| self.drained.contains(h));
        on_drained || !self.placed_as_required(d) || (app.preboot && d.process_type == "web")
    }

    /// The settled row that takes `d`'s slot, if one exists yet.
    fn successor(&self, d: &DynoRow) -> Option<&'a DynoRow> {
        self.slots
            .get(&(d.app_id.as_str(), d.process_type.as_str(), d.idx))?
            .iter()
            .find(|n| n.id != d.id && self.settled(n))
            .copied()
    }

    fn in_flight_per_drained_host(&self) -> HashMap<&'a str, u32> {
        let mut out = HashMap::new();
        for rows in self.slots.values() {
            for d in rows {
                let Some(h) = d.host.as_deref().filter(|h| self.drained.contains(h)) else {
                    continue;
                };
                if d.state.is_running()
                    && self.successor(d).is_some_and(|n| n.state != DynoState::Up)
                {
                    *out.entry(h).or_insert(0) += 1;
                }
            }
        }
        out
    }
}

/// Chooses hosts: enough free memory, then the fewest dynos of the same app and type, then the
/// most free memory. Tracks what this plan already placed.
struct Placer {
    /// Candidate hosts: name, memory capacity, labels.
    hosts: Vec<(String, u64, std::collections::BTreeMap<String, String>)>,
    /// MB allocated per candidate host, by index into `hosts`.
    allocated: Vec<u64>,
    /// Dynos per candidate host (by index) of each app and process type.
    same_type: HashMap<(String, String), Vec<u32>>,
}

impl Placer {
    fn new(view: &View) -> Placer {
        let hosts: Vec<(String, u64, std::collections::BTreeMap<String, String>)> = view
            .hosts
            .iter()
            .filter(|h| h.connected && !h.drained)
            .map(|h| (h.name.clone(), h.memory_mb, h.labels.clone()))
            .collect();
        let index: HashMap<&str, usize> = hosts
            .iter()
            .enumerate()
            .map(|(i, (name, _, _))| (name.as_str(), i))
            .collect();
        let mut allocated = vec![0; hosts.len()];
        let mut same_type: HashMap<(String, String), Vec<u32>> = HashMap::new();
        for d in view.dynos {
            let Some(&i) = d.host.as_deref().and_then(|h| index.get(h)) else {
                continue;
            };
            if d.desired == Desired::Run {
                allocated[i] += d.size.memory_mb();
                same_type
                    .entry((d.app_id.clone(), d.process_type.clone()))
                    .or_insert_with(|| vec![0; hosts.len()])[i] += 1;
            }
        }
        Placer {
            hosts,
            allocated,
            same_type,
        }
    }

    fn place(
        &mut self,
        app_id: &str,
        ptype: &str,
        size: Size,
        requirement: Option<&(String, String)>,
    ) -> Option<String> {
        let need = size.memory_mb();
        let n = self.hosts.len();
        let same = self
            .same_type
            .entry((app_id.to_string(), ptype.to_string()))
            .or_insert_with(|| vec![0; n]);
        let (_, _, best) = self
            .hosts
            .iter()
            .enumerate()
            .filter(|(_, (_, _, labels))| requirement.is_none_or(|(k, v)| labels.get(k) == Some(v)))
            .filter_map(|(i, (name, cap, _))| {
                let free = cap.saturating_sub(self.allocated[i]);
                (free >= need).then_some((same[i], std::cmp::Reverse(free), (name.as_str(), i)))
            })
            .min()?;
        let i = best.1;
        self.allocated[i] += need;
        same[i] += 1;
        Some(self.hosts[i].0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dyno_shared::scale::parse_scale_args;
    use dyno_shared::{ConfigVars, Procfile};

    fn app_view(formation: &[&str], version: u32) -> AppView {
        let procfile = Procfile::parse("web: w\nworker: k").unwrap();
        let formation = Formation::default()
            .apply(&parse_scale_args(formation).unwrap(), &procfile)
            .unwrap();
        AppView {
            app: AppRow {
                id: "a1".into(),
                name: "shop".into(),
                created_at: 0,
                updated_at: 0,
                maintenance: false,
                owner: "default".into(),
            },
            release: Some(ReleaseRow {
                app_id: "a1".into(),
                version,
                description: String::new(),
                slug: Some("s".into()),
                procfile,
                config: ConfigVars::default(),
                created_at: 0,
                status: "succeeded".into(),
                made_by: None,
            }),
            formation,
            preboot: false,
            requires: HashMap::new(),
            eco_sleeps: false,
        }
    }

    fn dyno(id: &str, ptype: &str, idx: u32, state: DynoState, host: &str) -> DynoRow {
        DynoRow {
            id: id.into(),
            app_id: "a1".into(),
            app: "shop".into(),
            process_type: ptype.into(),
            idx,
            release: 1,
            host: Some(host.into()),
            state,
            desired: Desired::Run,
            port: None,
            size: Size::Standard1x,
            command: "w".into(),
            one_off: false,
            exit_code: None,
            reason: None,
            restarts: 0,
            next_start_at: None,
            created_at: 0,
            updated_at: 0,
            up_since: None,
            generation: 1,
            healthy: true,
        }
    }

    fn hosts(n: usize) -> Vec<HostView> {
        (1..=n)
            .map(|i| HostView {
                name: format!("h{i}"),
                memory_mb: 4096,
                connected: true,
                lost: false,
                drained: false,
                labels: Default::default(),
            })
            .collect()
    }

    fn run(apps: &[AppView], dynos: &[DynoRow], hosts: &[HostView]) -> Plan {
        plan(&View {
            apps,
            dynos,
            hosts,
            now_ms: 1_000_000,
            cycle: None,
        })
    }

    #[test]
    fn creates_missing_dynos_spread_across_hosts() {
        let p = run(&[app_view(&["web=2", "worker=1"], 1)], &[], &hosts(2));
        let web_hosts: Vec<&str> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Create {
                    process_type, host, ..
                } if process_type == "web" => Some(host.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(p.actions.len(), 3);
        assert_eq!(web_hosts.len(), 2);
        assert_ne!(web_hosts[0], web_hosts[1], "web dynos share a host");
    }

    #[test]
    fn scaling_up_leaves_matching_dynos_alone() {
        let dynos = [
            dyno("d1", "web", 1, DynoState::Up, "h1"),
            dyno("d2", "worker", 1, DynoState::Up, "h1"),
        ];
        let p = run(&[app_view(&["web=3", "worker=1"], 1)], &dynos, &hosts(1));
        assert_eq!(p.actions.len(), 2);
        assert!(p.actions.iter().all(|a| matches!(a,
            Action::Create { process_type, idx, .. } if process_type == "web" && *idx > 1)));
    }

    #[test]
    fn scaling_down_stops_the_highest_indexes() {
        let dynos = [
            dyno("d1", "web", 1, DynoState::Up, "h1"),
            dyno("d2", "web", 2, DynoState::Up, "h1"),
            dyno("d3", "web", 3, DynoState::Crashed, "h1"),
        ];
        let p = run(&[app_view(&["web=1"], 1)], &dynos, &hosts(1));
        assert_eq!(
            p.actions,
            vec![
                Action::Stop {
                    dyno_id: "d2".into()
                },
                Action::Forget {
                    dyno_id: "d3".into()
                },
            ]
        );
    }

    #[test]
    fn new_release_replaces_dynos() {
        let dynos = [dyno("d1", "web", 1, DynoState::Up, "h1")];
        let p = run(&[app_view(&["web=1"], 2)], &dynos, &hosts(1));
        assert_eq!(
            p.actions,
            vec![Action::Stop {
                dyno_id: "d1".into()
            }]
        );
    }

    #[test]
    fn stopping_dyno_holds_its_slot_until_down() {
        let mut d = dyno("d1", "web", 1, DynoState::Up, "h1");
        d.desired = Desired::Stop;
        assert!(
            run(&[app_view(&["web=1"], 1)], &[d.clone()], &hosts(1))
                .actions
                .is_empty()
        );
        d.state = DynoState::Down;
        let p = run(&[app_view(&["web=1"], 1)], &[d], &hosts(1));
        assert_eq!(p.actions.len(), 2);
        assert!(matches!(p.actions[0], Action::Forget { .. }));
        assert!(matches!(p.actions[1], Action::Create { idx: 1, .. }));
    }

    #[test]
    fn crashed_dynos_wait_for_their_cool_off() {
        let mut d = dyno("d1", "web", 1, DynoState::Crashed, "h1");
        d.next_start_at = Some(2_000_000);
        let apps = [app_view(&["web=1"], 1)];
        assert!(run(&apps, &[d.clone()], &hosts(1)).actions.is_empty());
        d.next_start_at = Some(999_999);
        assert_eq!(
            run(&apps, &[d], &hosts(1)).actions,
            vec![Action::Start {
                dyno_id: "d1".into(),
                host: "h1".into()
            }]
        );
    }

    #[test]
    fn lost_dynos_restart_and_move_off_disconnected_hosts() {
        let d = dyno("d1", "worker", 1, DynoState::Down, "gone");
        let p = run(&[app_view(&["worker=1"], 1)], &[d], &hosts(1));
        assert_eq!(
            p.actions,
            vec![Action::Start {
                dyno_id: "d1".into(),
                host: "h1".into()
            }]
        );
    }

    #[test]
    fn dynos_of_a_lost_host_move_and_an_away_host_keeps_its_own() {
        let up = |id: &str, idx: u32, host: &str| dyno(id, "web", idx, DynoState::Up, host);
        let mut hs = hosts(3);
        // h1 is away for a blip: its dyno stays, nothing is started in its place.
        hs[0].connected = false;
        let dynos = [up("d1", 1, "h1"), up("d2", 2, "h2")];
        let p = run(&[app_view(&["web=2"], 1)], &dynos, &hs);
        assert_eq!(p, Plan::default());
        // h1 is lost: its dyno starts elsewhere under the same id, not beside web.2.
        hs[0].lost = true;
        let p = run(&[app_view(&["web=2"], 1)], &dynos, &hs);
        assert_eq!(
            p.actions,
            vec![Action::Start {
                dyno_id: "d1".into(),
                host: "h3".into()
            }]
        );
    }

    #[test]
    fn unwanted_dynos_of_a_lost_host_are_forgotten_not_waited_for() {
        let mut hs = hosts(2);
        hs[0].connected = false;
        hs[0].lost = true;
        let mut stopping = dyno("d1", "web", 1, DynoState::Up, "h1");
        stopping.desired = Desired::Stop;
        let mut one_off = dyno("d2", "run", 1, DynoState::Up, "h1");
        one_off.one_off = true;
        let extra = dyno("d3", "web", 3, DynoState::Up, "h1");
        let p = run(&[app_view(&["web=1"], 1)], &[stopping, one_off, extra], &hs);
        let forgotten: Vec<&Action> = p
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Forget { .. }))
            .collect();
        assert_eq!(forgotten.len(), 3, "{:?}", p.actions);
        // web.1's slot is free again: a new web.1 goes to the connected host.
        assert!(p.actions.contains(&Action::Create {
            app_id: "a1".into(),
            process_type: "web".into(),
            idx: 1,
            size: Size::Standard1x,
            host: "h2".into()
        }));
    }

    fn creates(p: &Plan) -> Vec<(&str, u32, &str)> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::Create {
                    process_type,
                    idx,
                    host,
                    ..
                } => Some((process_type.as_str(), *idx, host.as_str())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_drained_host_hands_over_one_dyno_at_a_time_start_before_stop() {
        let mut hs = hosts(3);
        hs[0].drained = true;
        let app = [app_view(&["web=2", "worker=1"], 1)];
        let web1 = dyno("d1", "web", 1, DynoState::Up, "h1");
        let worker1 = dyno("d2", "worker", 1, DynoState::Up, "h1");
        let web2 = dyno("d3", "web", 2, DynoState::Up, "h2");
        let p = run(&app, &[web1.clone(), worker1.clone(), web2.clone()], &hs);
        // One replacement, never on the drained host, nothing stopped yet.
        assert_eq!(creates(&p), vec![("web", 1, "h3")], "{:?}", p.actions);
        assert_eq!(p.actions.len(), 1);

        // Its replacement is booting: wait, and start no second move.
        let mut new1 = dyno("d4", "web", 1, DynoState::Starting, "h3");
        let rows = [web1.clone(), worker1.clone(), web2.clone(), new1.clone()];
        assert_eq!(run(&app, &rows, &hs), Plan::default());

        // Up: the old one stops; the next dyno moves.
        new1.state = DynoState::Up;
        let rows = [web1, worker1, web2, new1];
        let p = run(&app, &rows, &hs);
        assert!(p.actions.contains(&Action::Stop {
            dyno_id: "d1".into()
        }));
        assert_eq!(creates(&p).len(), 1, "{:?}", p.actions);
        assert_eq!(creates(&p)[0].0, "worker");
        assert_ne!(creates(&p)[0].2, "h1");
    }

    #[test]
    fn preboot_starts_new_web_dynos_before_stopping_the_old_release() {
        let mut app = app_view(&["web=2", "worker=1"], 2);
        app.preboot = true;
        let app = [app];
        let old = |id: &str, t: &str, idx: u32, h: &str| {
            let mut d = dyno(id, t, idx, DynoState::Up, h);
            d.release = 1;
            d
        };
        let rows = [
            old("d1", "web", 1, "h1"),
            old("d2", "web", 2, "h2"),
            old("d3", "worker", 1, "h1"),
        ];
        let p = run(&app, &rows, &hosts(2));
        // Web: new dynos first, old ones untouched. Workers restart as usual (stop first).
        let mut c = creates(&p);
        c.sort();
        assert_eq!(
            c.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>(),
            [("web", 1), ("web", 2)]
        );
        assert_eq!(
            p.actions
                .iter()
                .filter(|a| matches!(a, Action::Stop { .. }))
                .collect::<Vec<_>>(),
            [&Action::Stop {
                dyno_id: "d3".into()
            }]
        );
        // web.1's replacement is up, web.2's still booting: only old web.1 stops.
        let mut new1 = dyno("d4", "web", 1, DynoState::Up, "h2");
        new1.release = 2;
        let mut new2 = dyno("d5", "web", 2, DynoState::Starting, "h1");
        new2.release = 2;
        let rows = [
            old("d1", "web", 1, "h1"),
            old("d2", "web", 2, "h2"),
            new1,
            new2,
        ];
        let p = run(&app, &rows, &hosts(2));
        assert!(p.actions.contains(&Action::Stop {
            dyno_id: "d1".into()
        }));
        assert!(!p.actions.contains(&Action::Stop {
            dyno_id: "d2".into()
        }));
        assert!(
            creates(&p).iter().all(|c| c.0 == "worker"),
            "{:?}",
            p.actions
        );
    }

    #[test]
    fn a_required_label_places_and_moves_dynos_start_before_stop() {
        let mut hs = hosts(3);
        hs[2].labels.insert("zone".into(), "b".into());
        let mut app = app_view(&["web=2"], 1);
        app.requires
            .insert("web".into(), ("zone".into(), "b".into()));
        let app = [app];
        // New dynos: only the labelled host.
        let p = run(&app, &[], &hs);
        assert_eq!(creates(&p), vec![("web", 1, "h3"), ("web", 2, "h3")]);
        // A dyno elsewhere gets its replacement first, then stops.
        let old = dyno("d1", "web", 1, DynoState::Up, "h1");
        let p = run(&app, std::slice::from_ref(&old), &hs);
        assert!(creates(&p).contains(&("web", 1, "h3")), "{:?}", p.actions);
        assert!(!p.actions.contains(&Action::Stop {
            dyno_id: "d1".into()
        }));
        let new = dyno("d2", "web", 1, DynoState::Up, "h3");
        let p = run(&app, &[old, new], &hs);
        assert!(p.actions.contains(&Action::Stop {
            dyno_id: "d1".into()
        }));
        // No host has the label: nothing placed, said so.
        hs[2].labels.clear();
        let p = run(&app, &[], &hs);
        assert!(p.actions.is_empty());
        assert_eq!(p.unplaced.len(), 2);
    }

    #[test]
    fn dynos_up_a_day_are_cycled_start_before_stop() {
        let app = [app_view(&["web=1"], 1)];
        let mut d = dyno("d1", "web", 1, DynoState::Up, "h1");
        let day = Duration::from_secs(24 * 3600);
        d.up_since = Some(1_000_000 - day.as_millis() as i64);
        let view = |dynos: &[DynoRow], jitter| {
            plan(&View {
                apps: &app,
                dynos,
                hosts: &hosts(2),
                now_ms: 1_000_000,
                cycle: Some(Cycle { after: day, jitter }),
            })
        };
        let p = view(std::slice::from_ref(&d), Duration::ZERO);
        assert_eq!(creates(&p).len(), 1, "{:?}", p.actions);
        assert_eq!(
            p.notes,
            vec![("shop".into(), "web.1".into(), "Cycling".into())]
        );
        // Its successor is up: the old one stops; the successor is not cycled.
        let mut n = dyno("d2", "web", 1, DynoState::Up, "h2");
        n.up_since = Some(999_000);
        let p = view(&[d.clone(), n], Duration::ZERO);
        assert_eq!(
            p.actions,
            vec![Action::Stop {
                dyno_id: "d1".into()
            }]
        );
        assert!(p.notes.is_empty());
        // With jitter the wait is longer than a day for some ids, never shorter.
        let young = {
            let mut y = d.clone();
            y.up_since = Some(1_000_000 - day.as_millis() as i64 + 1);
            y
        };
        assert!(view(&[young], Duration::from_secs(3600)).actions.is_empty());
    }

    #[test]
    fn respects_memory_capacity() {
        let mut hs = hosts(1);
        hs[0].memory_mb = 1024;
        let p = run(&[app_view(&["web=3"], 1)], &[], &hs);
        assert_eq!(p.actions.len(), 2);
        assert_eq!(p.unplaced, vec!["shop web.3 standard-1x".to_string()]);
        assert!(run(&[app_view(&["web=1"], 1)], &[], &[]).unplaced.len() == 1);
    }

    #[test]
    fn dynos_of_destroyed_apps_stop_and_one_offs_are_forgotten_when_done() {
        let d = dyno("d1", "web", 1, DynoState::Up, "h1");
        let mut o = dyno("d2", "run", 1, DynoState::Down, "h1");
        o.one_off = true;
        let p = run(&[], &[d], &hosts(1));
        assert_eq!(
            p.actions,
            vec![Action::Stop {
                dyno_id: "d1".into()
            }]
        );
        let p = run(&[app_view(&["web=0"], 1)], &[o], &hosts(1));
        assert_eq!(
            p.actions,
            vec![Action::Forget {
                dyno_id: "d2".into()
            }]
        );
    }

    #[test]
    fn eco_dynos_sleep_while_their_pool_is_used_up_and_wake_when_it_is_not() {
        let mut app = app_view(&["web=1:eco", "worker=1"], 1);
        app.eco_sleeps = true;
        let mut web = dyno("d1", "web", 1, DynoState::Up, "h1");
        web.size = Size::Eco;
        let worker = dyno("d2", "worker", 1, DynoState::Up, "h1");
        let p = run(
            std::slice::from_ref(&app),
            &[web.clone(), worker.clone()],
            &hosts(1),
        );
        assert_eq!(
            p.actions,
            vec![Action::Sleep {
                dyno_id: "d1".into()
            }],
            "only the eco dyno sleeps"
        );
        // Asleep: nothing to do, and no replacement for its slot.
        web.desired = Desired::Sleep;
        web.state = DynoState::Idle;
        let p = run(
            std::slice::from_ref(&app),
            &[web.clone(), worker.clone()],
            &hosts(1),
        );
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        let p = run(
            std::slice::from_ref(&app),
            std::slice::from_ref(&worker),
            &hosts(1),
        );
        assert!(
            p.actions.is_empty(),
            "no eco dyno is created: {:?}",
            p.actions
        );
        // A new month: the pool has hours again.
        app.eco_sleeps = false;
        let p = run(std::slice::from_ref(&app), &[web, worker], &hosts(1));
        assert_eq!(
            p.actions,
            vec![Action::Start {
                dyno_id: "d1".into(),
                host: "h1".into()
            }]
        );
    }

    #[test]
    fn dynos_of_a_removed_host_start_elsewhere() {
        // h9 is in no view: removed with hosts:remove.
        let d = dyno("d1", "web", 1, DynoState::Up, "h9");
        let p = run(&[app_view(&["web=1"], 1)], &[d], &hosts(1));
        assert_eq!(
            p.actions,
            vec![Action::Start {
                dyno_id: "d1".into(),
                host: "h1".into()
            }]
        );
    }

    #[test]
    fn restart_policy_backs_off_and_resets() {
        let p = RestartPolicy::default();
        assert_eq!(p.delay(1), Duration::ZERO);
        assert_eq!(p.delay(2), Duration::from_secs(20 * 60));
        assert_eq!(p.delay(6), Duration::from_secs(320 * 60));
        assert_eq!(p.delay(60), Duration::from_secs(320 * 60));
        assert_eq!(p.count_after_crash(3, Some(0), 5_000), 4);
        assert_eq!(p.count_after_crash(3, Some(0), 10_000), 1);
        assert_eq!(p.count_after_crash(3, None, 10_000), 4);
    }
}
