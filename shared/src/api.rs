//! JSON shapes of the coordinator's control API (Platform API style: snake_case fields,
//! ISO 8601 UTC times, errors as `{"id": "...", "message": "..."}`).

use crate::logline::LogLine;
use crate::size::Size;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest request body the control API reads, except slug uploads.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest slug (a gzipped tar) the coordinator accepts.
pub const MAX_SLUG_BYTES: usize = 500 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// `not_found`, `invalid_params`, `unauthorized`, `conflict`, `payload_too_large`, `internal`.
    pub id: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
    /// Version of the current release, if any.
    pub release: Option<u32>,
    pub web_url: String,
    pub maintenance: bool,
    /// `web=2:standard-1x worker=1:standard-1x`
    pub formation: String,
    pub dynos_up: u32,
    pub dynos_total: u32,
    /// The Platform API's fields (what the heroku CLI reads), fixed or derived here.
    #[serde(flatten, default)]
    pub platform: AppPlatform,
}

/// An app's Platform API fields beyond ours: one region and stack, no teams or spaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AppPlatform {
    /// When the current release was created.
    #[serde(default)]
    pub released_at: Option<String>,
    #[serde(default)]
    pub git_url: Option<String>,
    /// The billing owner, as the Platform API's account reference.
    #[serde(default)]
    pub owner: Option<Owner>,
    #[serde(default)]
    pub region: Option<NamedRef>,
    #[serde(default)]
    pub stack: Option<NamedRef>,
    #[serde(default)]
    pub build_stack: Option<NamedRef>,
    /// `cedar`: without it the heroku CLI guesses from the app's name.
    #[serde(default)]
    pub generation: Option<NamedRef>,
    #[serde(default)]
    pub acm: bool,
    #[serde(default)]
    pub locked: bool,
    #[serde(default)]
    pub archived_at: Option<String>,
    #[serde(default)]
    pub team: Option<NamedRef>,
    #[serde(default)]
    pub space: Option<NamedRef>,
    #[serde(default)]
    pub organization: Option<NamedRef>,
    #[serde(default)]
    pub create_status: Option<String>,
    /// Bytes of the current release's slug.
    #[serde(default)]
    pub slug_size: Option<u64>,
    /// Always `null`: there is no git repository.
    #[serde(default)]
    pub repo_size: Option<u64>,
    /// No buildpacks, OCI images or private spaces here: `null`, `null`, `[]`, `null`, `null`.
    #[serde(default)]
    pub buildpack_provided_description: Option<String>,
    #[serde(default)]
    pub base_image_name: Option<String>,
    #[serde(default)]
    pub current_build_architecture: Vec<String>,
    #[serde(default)]
    pub buildpacks: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub internal_routing: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub id: String,
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedRef {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateApp {
    pub name: String,
    /// Who pays: eco dynos share one hour pool per owner. Defaults to `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// A release as the Platform API shapes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// Stable for the app and version; `POST /apps/{app}/releases` `{"release": ID}` rolls back to it.
    pub id: String,
    pub version: u32,
    pub description: String,
    /// The slug's sha256 as `{"id": ...}`; `null` before the first deploy.
    pub slug: Option<IdRef>,
    pub app: NamedRef,
    pub created_at: String,
    pub updated_at: String,
    /// `pending` (its release phase runs), `succeeded` or `failed`.
    pub status: String,
    pub current: bool,
    /// A rollback to it is allowed: it went live and has a slug.
    pub eligible_for_rollback: bool,
    /// Add-ons are not supported: always empty.
    #[serde(default)]
    pub addon_plan_names: Vec<String>,
    /// Always `null`: the release phase's output is in the app's log.
    #[serde(default)]
    pub output_stream_url: Option<String>,
    /// The token that made it (its name as `email`); `null` for releases older than that record.
    #[serde(default)]
    pub user: Option<Owner>,
    /// `[{"type": "slug", "id": SHA256}]`, or empty before the first deploy.
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    /// Always `null`: releases are slugs, not OCI images.
    #[serde(default)]
    pub oci_image: Option<IdRef>,
    /// Process types and commands of this release's Procfile.
    pub process_types: BTreeMap<String, String>,
}

/// What a release runs (`{"type": "slug", "id": ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

/// A reference by id alone (`{"id": ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRef {
    pub id: String,
}

/// A dyno's release (`{"id": ..., "version": 3}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRef {
    pub id: String,
    pub version: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormationItem {
    /// Stable for the app and process type.
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type")]
    pub process_type: String,
    pub quantity: u32,
    pub size: Size,
    pub command: String,
    #[serde(default)]
    pub app: Option<NamedRef>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    /// The size as the Platform API's newer clients read it (`size` is its older form).
    #[serde(default)]
    pub dyno_size: Option<NamedRef>,
}

/// `POST /apps/{app}/formation/scale`: heroku `ps:scale` arguments, applied all or none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleRequest {
    pub args: Vec<String>,
}

/// `PATCH /apps/{app}/formation`, the Platform API's batch update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormationUpdates {
    pub updates: Vec<FormationUpdate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormationUpdate {
    #[serde(rename = "type")]
    pub process_type: String,
    #[serde(default)]
    pub quantity: Option<Quantity>,
    #[serde(default)]
    pub size: Option<String>,
    /// `{"name": "Standard-2X"}` (or its `id`): the newer form of `size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dyno_size: Option<DynoSizeRef>,
}

/// `PATCH /apps/{app}/formation/{type}`: one process type's quantity and/or size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormationTypeUpdate {
    #[serde(default)]
    pub quantity: Option<Quantity>,
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub dyno_size: Option<DynoSizeRef>,
}

/// A dyno size named by `name` or `id` (the Platform API accepts either).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynoSizeRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A formation update's quantity: a number (`3`), or a string as the heroku CLI sends it:
/// `"3"`, or relative `"+1"` / `"-1"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Quantity {
    Number(i64),
    Text(String),
}

impl Quantity {
    pub fn op(&self) -> Result<crate::scale::ScaleOp, String> {
        use crate::scale::ScaleOp;
        let bad =
            || format!("invalid quantity {self}: expected N, +N or -N (N at most 4294967295)");
        match self {
            Quantity::Number(n) => u32::try_from(*n).map(ScaleOp::Set).map_err(|_| bad()),
            Quantity::Text(t) => {
                let (op, digits): (fn(u32) -> ScaleOp, &str) = match t.as_bytes().first() {
                    Some(b'+') => (ScaleOp::Add, &t[1..]),
                    Some(b'-') => (ScaleOp::Sub, &t[1..]),
                    _ => (ScaleOp::Set, t.as_str()),
                };
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                digits.parse().map(op).map_err(|_| bad())
            }
        }
    }
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Quantity::Number(n) => write!(f, "{n}"),
            Quantity::Text(t) => write!(f, "{t:?}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dyno {
    pub id: String,
    /// `web.1`
    pub name: String,
    #[serde(rename = "type")]
    pub process_type: String,
    pub state: String,
    pub size: Size,
    pub command: String,
    pub release: ReleaseRef,
    pub host: Option<String>,
    /// `address:port` of a web dyno, once known.
    pub address: Option<String>,
    pub created_at: String,
    /// When the state last changed.
    pub updated_at: String,
    /// Crash restarts since the dyno last started cleanly.
    pub restarts: u32,
    pub exit_code: Option<i32>,
    pub one_off: bool,
    /// False while it fails its health check (it is out of the router meanwhile).
    #[serde(default = "yes")]
    pub healthy: bool,
    /// The latest resource sample of a running dyno, once its agent sent one.
    #[serde(default)]
    pub stats: Option<DynoStatsJson>,
    /// `rendezvous://HOST:PORT/SECRET` of a one-off just started with `attach: true`.
    #[serde(default)]
    pub attach_url: Option<String>,
    #[serde(default)]
    pub app: Option<NamedRef>,
}

/// A dyno's resource use as `ps --json` shows it (MB are MiB, rounded to 0.01).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DynoStatsJson {
    pub memory_rss_mb: f64,
    pub memory_cache_mb: f64,
    pub memory_swap_mb: f64,
    pub memory_quota_mb: f64,
    /// RSS plus swap as a percentage of the quota (Heroku's R14 figure).
    pub memory_percent: f64,
    /// Between the last two samples, 100 per fully used core; absent after the first sample.
    #[serde(default)]
    pub cpu_percent: Option<f64>,
    pub pids: u64,
    /// When the sample was taken.
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    pub id: String,
    pub name: String,
    pub address: String,
    /// `connected`; `away` (its agent dropped off less than the host-loss time ago: its dynos
    /// are left as they are); `lost` (its dynos were started elsewhere).
    pub state: String,
    pub isolation: String,
    pub memory_mb: u64,
    pub allocated_mb: u64,
    pub cpus: u32,
    /// The host's 1-minute load average, while its agent is connected.
    #[serde(default)]
    pub load_1m: Option<f64>,
    pub dynos: u32,
    pub last_heartbeat: Option<String>,
    pub agent_version: String,
    /// Takes no new dynos and moves its dynos elsewhere (`hosts:drain`).
    #[serde(default)]
    pub drained: bool,
    /// The agent's `--label KEY=VALUE`s.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A host name the router sends to an app (`/apps/{app}/domains`): the app's own
/// (`kind: heroku`, `APP.DOMAIN`) first, then its custom domains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    pub id: String,
    pub hostname: String,
    /// `heroku` (the app's own name under the router's domain) or `custom`.
    pub kind: String,
    /// What a custom domain's DNS should point to: the app's own host name.
    pub cname: Option<String>,
    /// Always `none`: routing is immediate, nothing to wait for.
    pub status: String,
    #[serde(default)]
    pub acm_status: Option<String>,
    #[serde(default)]
    pub acm_status_reason: Option<String>,
    #[serde(default)]
    pub sni_endpoint: Option<NamedRef>,
    pub app: NamedRef,
    pub created_at: String,
    pub updated_at: String,
}

/// `POST /apps/{app}/domains`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainCreate {
    pub hostname: String,
    /// Only `null` (or absent): SNI endpoints are not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni_endpoint: Option<serde_json::Value>,
}

/// `/apps/{app}/concurrency`: requests each web dyno takes at once (`None`: no limit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concurrency {
    pub web: Option<u32>,
}

/// `PATCH /apps/{app}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AppUpdate {
    /// On: the router answers H80 (maintenance page) while the dynos keep running.
    #[serde(default)]
    pub maintenance: Option<bool>,
    /// Only the app's own name: renaming is not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Only `dyno`, the one stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_stack: Option<String>,
}

/// Something that happened to an app (`GET /apps/{app}/events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339 with microseconds.
    pub at: String,
    /// `web.1`, or `api` for releases and scaling.
    pub dyno: String,
    pub message: String,
}

/// `PUT /apps/{app}/requirements/{type}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    /// `KEY=VALUE`: the type's dynos run only on hosts with this label.
    pub label: String,
}

/// `PATCH /apps/{app}/config-vars`: a value sets, `null` unsets.
pub type ConfigPatch = BTreeMap<String, Option<String>>;

/// `POST /apps/{app}/restart` and `POST /apps/{app}/stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DynoSelector {
    /// One dyno, `web.1`.
    #[serde(default)]
    pub dyno: Option<String>,
    /// Every dyno of a process type.
    #[serde(default, rename = "type")]
    pub process_type: Option<String>,
    /// Restart: a rolling restart, this many dynos at a time (`2`) or this share (`25%`), each
    /// batch up again before the next one stops.
    #[serde(default)]
    pub batch: Option<String>,
}

/// How many dynos of `total` a rolling-restart batch `spec` (`3` or `25%`) takes at a time (at
/// least one), or why the spec is not one.
pub fn batch_size(spec: &str, total: usize) -> Result<usize, String> {
    let bad =
        || format!("invalid batch {spec:?}: expected a count such as 2 or a share such as 25%");
    let n = match spec.strip_suffix('%') {
        Some(p) => {
            let p: u32 = p.parse().map_err(|_| bad())?;
            if !(1..=100).contains(&p) {
                return Err(format!("invalid batch {spec:?}: a share is 1% to 100%"));
            }
            (total * p as usize).div_ceil(100)
        }
        None => {
            let n: usize = spec.parse().map_err(|_| bad())?;
            if n == 0 {
                return Err(format!(
                    "invalid batch {spec:?}: at least one dyno at a time"
                ));
            }
            n
        }
    };
    Ok(n.clamp(1, total.max(1)))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    /// Dyno names acted on.
    pub dynos: Vec<String>,
}

/// `POST /apps/{app}/run`: a one-off dyno; the response streams `RunEvent`s as NDJSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    pub command: String,
    /// Answer at once with the started `Dyno` (201); its output goes to the app's logs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub detached: bool,
    #[serde(default)]
    pub size: Option<Size>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// `POST /apps/{app}/dynos`, the Platform API's one-off dyno (what `heroku run` sends).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DynoCreate {
    pub command: String,
    /// Stream the output to the client (over the rendezvous `attach_url`); otherwise the
    /// output goes to the app's logs only.
    #[serde(default)]
    pub attach: Option<bool>,
    /// Strings, or numbers (the heroku CLI sends `COLUMNS` and `LINES` as numbers).
    #[serde(default)]
    pub env: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub size: Option<String>,
    /// Accepted and ignored: a one-off is always `run.N`.
    #[serde(default, rename = "type")]
    pub process_type: Option<String>,
    /// Accepted and ignored: dynos have no terminal here.
    #[serde(default)]
    pub force_no_tty: Option<bool>,
    /// Seconds the one-off may run before it is stopped.
    #[serde(default)]
    pub time_to_live: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    Started { dyno: String },
    Line { line: LogLine },
    Exit { code: i32 },
    Error { message: String },
}

/// A process type's health check (`GET /apps/{app}/checks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    #[serde(rename = "type")]
    pub process_type: String,
    /// `tcp` ($PORT accepts), `http` (GET path answers below 500) or `file` (heartbeat file).
    pub kind: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub file: Option<String>,
    pub interval_secs: f64,
    pub timeout_secs: f64,
    /// Failures in a row before the dyno is killed and replaced.
    pub failures: u32,
    /// The check every web dyno gets when none is set.
    #[serde(default)]
    pub default: bool,
}

/// `PUT /apps/{app}/checks/{type}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CheckUpdate {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub interval_secs: Option<f64>,
    #[serde(default)]
    pub timeout_secs: Option<f64>,
    #[serde(default)]
    pub failures: Option<u32>,
}

/// `POST /apps/{app}/releases` with JSON: roll back to a release (`3`, `"3"` or `"v3"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollback {
    pub release: serde_json::Value,
}

/// One streamed log item (`GET /apps/{app}/logs`, NDJSON).
pub type LogItem = LogLine;

/// `POST /apps/{app}/log-drains`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateLogDrain {
    pub url: String,
}

/// A log drain, shaped like the Platform API's `log-drain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogDrain {
    pub id: String,
    /// `syslog://HOST:PORT`, `syslog+tls://HOST:PORT`, `https://...` or `http://...`.
    pub url: String,
    /// `d.` and a UUID; the HOSTNAME of every frame sent to this drain.
    pub token: String,
    pub created_at: String,
    pub updated_at: String,
    /// Always null: drains here are never add-on provisioned.
    #[serde(default)]
    pub addon: Option<serde_json::Value>,
}

/// An app feature (`labs`), shaped like the Platform API's `app-feature`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppFeature {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub doc_url: String,
    pub enabled: bool,
    /// `public`, `beta` or `alpha`.
    pub state: String,
    pub created_at: String,
    pub updated_at: String,
}

/// `PATCH /apps/{app}/features/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureUpdate {
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// `GET /pricing`: the price table in effect now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pricing {
    /// `monthly` (a monthly price per size, charged per second at monthly/720 per hour and capped
    /// at the monthly price per dyno and month) or `dyno-hour` (the 2011 model: a price per
    /// dyno-hour, the first `free_hours_per_app` of each app's month free).
    pub model: String,
    pub currency: String,
    /// When this table took effect (ISO 8601); usage before it is priced by the table before.
    pub effective_from: String,
    pub sizes: Vec<SizePrice>,
    /// Eco dynos draw on a pool of hours per owner and month, for one flat price.
    pub eco_pool_hours: f64,
    pub eco_pool_price: f64,
    /// The `dyno-hour` model's price of one dyno-hour, and its free hours per app and month.
    pub dyno_hour_price: f64,
    pub free_hours_per_app: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SizePrice {
    pub size: Size,
    /// Cost of one hour of one dyno (0 for eco: its pool is paid per owner).
    pub hourly: f64,
    /// The most one dyno of this size costs in a month; `None` where nothing caps it.
    pub max_monthly: Option<f64>,
    /// Dyno-hours one hour of this size counts as in the `dyno-hour` model.
    pub units: f64,
}

/// `GET /billing?month=YYYY-MM[&app=NAME]`: usage and cost of a month (UTC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BillingReport {
    /// `2026-11`
    pub month: String,
    pub currency: String,
    pub model: String,
    /// ISO 8601; the usage of dynos running now counts up to this moment.
    pub generated_at: String,
    /// True for the month that is running: `projected` adds the current formation to its end.
    pub current: bool,
    pub apps: Vec<AppBilling>,
    pub eco_pools: Vec<EcoPool>,
    pub cost: f64,
    pub projected: f64,
    /// Cost per UTC day of the month, up to today (the whole month once it is over); an eco
    /// pool's price falls on the day it was first drawn on.
    #[serde(default)]
    pub daily: Vec<DayCost>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayCost {
    /// `2026-11-29`
    pub date: String,
    pub cost: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppBilling {
    pub app: String,
    pub owner: String,
    /// One per process type and size the app used (or runs) this month.
    pub lines: Vec<BillingLine>,
    pub cost: f64,
    pub projected: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BillingLine {
    /// `web`, `worker`; one-off dynos as `run`, release phases as `release`.
    #[serde(rename = "type")]
    pub process_type: String,
    pub size: Size,
    /// Wall-clock seconds dynos of this type and size existed (starting, up or crashed).
    pub dyno_seconds: u64,
    pub dyno_hours: f64,
    /// Month to date.
    pub cost: f64,
    /// Month to date plus the current formation until the month ends.
    pub projected: f64,
    /// Dynos of this type and size in the formation now.
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EcoPool {
    pub owner: String,
    pub hours_used: f64,
    pub hours_limit: f64,
    pub cost: f64,
    /// The pool ran out: the owner's eco dynos sleep until the month ends.
    pub exhausted: bool,
}

/// `GET /tokens`: an API token (never its secret, which is stored hashed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub name: String,
    /// `operate` (everything), `read` (GETs but config vars, tokens and audit), `join` (agents
    /// joining) or `agent` (one host's own credential).
    pub role: String,
    /// The host an `agent` credential belongs to.
    #[serde(default)]
    pub host: Option<String>,
    pub created_at: String,
    #[serde(default)]
    pub revoked_at: Option<String>,
}

/// `POST /tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateToken {
    pub name: String,
    pub role: String,
}

/// The answer to `POST /tokens`: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub token: Token,
    pub secret: String,
    /// The API certificate's fingerprint when it speaks TLS: clients pin it
    /// (`SECRET@FINGERPRINT` carries both).
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// `GET /tokens/self`: who the presented token is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    pub name: String,
    pub role: String,
}

/// `GET /audit`: one state-changing request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: String,
    /// The token's name; `-` when none was valid.
    pub token: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub address: String,
}

/// `GET /stream`: one NDJSON line per change, pushed as it happens, so a console refreshes what
/// changed instead of polling everything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamItem {
    /// A new row of an app's events (`GET /apps/{app}/events`): a dyno's state, a release,
    /// scaling, a host loss.
    Event {
        seq: i64,
        app: String,
        #[serde(flatten)]
        event: Event,
    },
    /// The apps were created or destroyed.
    Apps,
    /// A host joined, left, went away or lost, was drained or removed.
    Hosts,
    /// Nothing happened for a while; the connection is alive.
    Ping,
}

#[cfg(test)]
mod quantity_tests {
    use super::*;
    use crate::scale::ScaleOp;

    #[test]
    fn quantities_come_as_numbers_or_as_the_heroku_cli_sends_them() {
        let q = |json: &str| serde_json::from_str::<Quantity>(json).unwrap().op();
        assert_eq!(q("3"), Ok(ScaleOp::Set(3)));
        assert_eq!(q(r#""3""#), Ok(ScaleOp::Set(3)));
        assert_eq!(q(r#""+1""#), Ok(ScaleOp::Add(1)));
        assert_eq!(q(r#""-2""#), Ok(ScaleOp::Sub(2)));
        for bad in [
            "-1",
            r#""""#,
            r#""+""#,
            r#""three""#,
            r#""1.5""#,
            "4294967296",
        ] {
            let e = q(bad).unwrap_err();
            assert!(e.contains("invalid quantity"), "{bad}: {e}");
        }
    }
}
