//! The control API (docs/API.md): JSON over HTTP with bearer-token auth, NDJSON streams for logs
//! and one-off dynos, and the agents' websocket endpoint.

use crate::drains::{DrainSpec, DrainUrl};
use crate::store::{
    AppRow, Desired, DrainRow, DynoRow, FeatureRow, NewDyno, Queries, ReleaseRow, StoreError,
};
use crate::{Inner, Shared, new_id, now_ms, wait_for};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post, put};
use axum::{Json, Router};
use dyno_shared::api::{self as wire, MAX_REQUEST_BYTES, RunEvent};
use dyno_shared::protocol::{CoordinatorMsg, DynoState, HealthCheck};
use dyno_shared::scale::{ScaleArg, ScaleOp, parse_scale_args};
use dyno_shared::time::iso_secs;
use dyno_shared::{
    AppName, ConfigVars, DynoName, Formation, LogLine, LogSource, ProcessType, Procfile,
};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

#[derive(Clone)]
struct Api {
    inner: Shared,
    stop: watch::Receiver<bool>,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    id: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, id: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            id,
            message: message.into(),
        }
    }
    fn invalid(message: impl ToString) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_params",
            message.to_string(),
        )
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = wire::ErrorBody {
            id: self.id.to_string(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Route prefixes of Heroku features this platform does not have (they and everything below
/// them answer `not_supported`).
const UNSUPPORTED: [&str; 21] = [
    "/addons",
    "/addon-attachments",
    "/apps/{app}/addon-attachments",
    "/apps/{app}/collaborators",
    "/pipelines",
    "/pipeline-couplings",
    "/teams",
    "/organizations",
    "/spaces",
    // Heroku's own billing: ours is `GET /billing` and `GET /pricing`.
    "/account/invoices",
    "/account/invoice-address",
    "/account/credits",
    "/account/payment-method",
    "/enterprise-accounts",
    "/account/app-transfers",
    "/apps/{app}/transfers",
    "/apps/{app}/builds",
    "/apps/{app}/webhooks",
    "/apps/{app}/acm",
    "/oauth",
    "/review-apps",
];

pub fn router(inner: Shared, shutdown: watch::Receiver<bool>) -> Router {
    let max_slug = inner.config.max_slug_bytes;
    let api = Api {
        inner,
        stop: shutdown,
    };
    let slug_upload = Router::new()
        .route(
            "/apps/{app}/releases",
            post(create_release).get(list_releases),
        )
        .layer(DefaultBodyLimit::max(max_slug))
        .route("/apps/{app}/releases/{release}", get(get_release))
        .route(
            "/apps/{app}/releases/{release}/config-vars",
            get(get_release_config),
        );
    let mut authed = Router::new()
        .route("/apps", get(list_apps).post(create_app))
        .route(
            "/apps/{app}",
            get(get_app).patch(patch_app).delete(destroy_app),
        )
        .route(
            "/apps/{app}/formation",
            get(get_formation).patch(patch_formation),
        )
        .route("/apps/{app}/formation/scale", post(scale))
        .route(
            "/apps/{app}/formation/{ptype}",
            get(get_formation_type).patch(patch_formation_type),
        )
        .route(
            "/apps/{app}/dynos",
            get(list_dynos).post(create_dyno).delete(restart_all),
        )
        .route(
            "/apps/{app}/dynos/{dyno}",
            get(get_dyno).delete(restart_one),
        )
        .route("/apps/{app}/dynos/{dyno}/actions/stop", post(stop_one))
        .route("/apps/{app}/formations/{ptype}", delete(restart_type))
        .route(
            "/apps/{app}/formations/{ptype}/actions/stop",
            post(stop_type),
        )
        .route("/account", get(account))
        .route("/account/features", get(empty_list))
        .route("/regions", get(regions))
        .route("/stacks", get(stacks))
        .route("/users/~/apps", get(list_apps))
        // What Heroku has and this platform does not: a clear Platform API error, except the
        // two lists commands we support read on their way.
        .route(
            "/apps/{app}/addons",
            get(empty_list).fallback(not_supported),
        )
        .route(
            "/apps/{app}/sni-endpoints",
            get(empty_list).fallback(not_supported),
        )
        .route("/apps/{app}/addons/{*rest}", any(not_supported))
        .route("/apps/{app}/buildpack-installations", any(not_supported))
        .route("/apps/{app}/pipeline-couplings", any(not_supported))
        .route("/apps/{app}/restart", post(restart))
        .route("/apps/{app}/stop", post(stop))
        .route(
            "/apps/{app}/config-vars",
            get(get_config).patch(patch_config),
        )
        .route("/apps/{app}/run", post(run))
        .route("/apps/{app}/logs", get(logs))
        .route("/apps/{app}/log-sessions", post(create_log_session))
        .route(
            "/apps/{app}/log-drains",
            get(list_drains).post(create_drain),
        )
        .route("/apps/{app}/log-drains/{drain}", delete(delete_drain))
        .route("/apps/{app}/features", get(list_features))
        .route(
            "/apps/{app}/features/{feature}",
            get(get_feature).patch(patch_feature),
        )
        .route("/apps/{app}/requirements", get(list_requirements))
        .route(
            "/apps/{app}/requirements/{ptype}",
            put(set_requirement).delete(delete_requirement),
        )
        .route("/apps/{app}/events", get(list_events))
        .route("/apps/{app}/domains", get(list_domains).post(add_domain))
        .route(
            "/apps/{app}/domains/{domain}",
            get(get_domain).patch(patch_domain).delete(remove_domain),
        )
        .route(
            "/apps/{app}/concurrency",
            get(get_concurrency).put(set_concurrency),
        )
        .route("/apps/{app}/checks", get(list_checks))
        .route(
            "/apps/{app}/checks/{ptype}",
            put(set_check).delete(delete_check),
        )
        .route("/stream", get(change_stream))
        .route("/pricing", get(get_pricing))
        .route("/billing", get(get_billing))
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/self", get(whoami))
        .route("/tokens/{name}", delete(revoke_token))
        .route("/audit", get(list_audit))
        .route("/hosts/{host}", delete(remove_host))
        .route("/hosts", get(hosts))
        .route("/hosts/{host}/drain", post(drain_host))
        .route("/hosts/{host}/undrain", post(undrain_host))
        .route("/slugs/{id}", get(get_slug))
        .route("/agent/ws", get(agent_ws))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .merge(slug_upload);
    for prefix in UNSUPPORTED {
        authed = authed
            .route(prefix, any(not_supported))
            .route(&format!("{prefix}/{{*rest}}"), any(not_supported));
    }
    let authed = authed.route_layer(middleware::from_fn_with_state(api.clone(), auth));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        // The session's secret in the path is its credential: EventSource sends no header.
        .route("/log-stream/{secret}", get(log_stream))
        .merge(authed)
        .fallback(|req: Request| async move {
            ApiError::not_found(format!(
                "no such endpoint: {} {}",
                req.method(),
                req.uri().path()
            ))
        })
        .method_not_allowed_fallback(|req: Request| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{} is not allowed on {}", req.method(), req.uri().path()),
            )
        })
        .layer(middleware::map_response(json_errors))
        .with_state(api)
}

/// axum's extractors answer a bad query string or path segment in plain text; every error of
/// this API is JSON.
async fn json_errors(resp: Response) -> Response {
    let plain = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !plain || !resp.status().is_client_error() {
        return resp;
    }
    let status = resp.status();
    let text = match axum::body::to_bytes(resp.into_body(), 64 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let id = if status == StatusCode::BAD_REQUEST {
        "bad_request"
    } else {
        "invalid_request"
    };
    ApiError::new(status, id, text).into_response()
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Authenticates the bearer token, checks its role may make this request, and audits every
/// request that is not a read.
async fn auth(State(api): State<Api>, mut req: Request, next: Next) -> Response {
    let inner = &api.inner;
    let addr = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let ip = addr.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let audited = !matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS");
    let audit = |token: &str, status: StatusCode| {
        if audited {
            let row = crate::store::audit::AuditRow {
                at: now_ms(),
                token: token.to_string(),
                method: method.clone(),
                path: path.clone(),
                status: status.as_u16(),
                address: addr.map_or_else(String::new, |a| a.to_string()),
            };
            if let Err(e) = inner.audit.lock().expect("audit lock").insert(&row) {
                tracing::error!(error = %e, "failed to write the audit row");
            }
        }
    };
    let now = std::time::Instant::now();
    if let Some(left) = inner.failed_auth.blocked(ip, now) {
        let e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit",
            format!(
                "too many failed authentications from {ip}; try again in {} s",
                left.as_secs() + 1
            ),
        );
        audit("-", e.status);
        return e.into_response();
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string());
    let principal = match &presented {
        Some(t) => inner.authenticate(t),
        None => Err("missing `Authorization: Bearer TOKEN` header".into()),
    };
    let principal = match principal {
        Ok(p) => p,
        Err(why) => {
            // Only a presented, wrong token counts: a client that sent none (a health probe, a
            // misconfigured script) must not lock out the agents and operators at its address.
            if presented.is_some() {
                inner.failed_auth.fail(ip, now);
            }
            tracing::warn!(%ip, %method, %path, reason = %why, "refused a request");
            let e = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why);
            audit("-", e.status);
            return e.into_response();
        }
    };
    if !crate::auth::allowed(principal.role, &method, &path) {
        let e = ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the {} token {} may not {method} {path}",
                principal.role.as_str(),
                principal.name
            ),
        );
        audit(&principal.name, e.status);
        return e.into_response();
    }
    let name = principal.name.clone();
    req.extensions_mut().insert(principal);
    let resp = next.run(req).await;
    audit(&name, resp.status());
    resp
}

/// A body the server could not read: 413 naming `what` and its `limit`, else 400.
fn rejected(e: BytesRejection, what: &str, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("{what} is over the limit of {limit} bytes"),
        )
    } else {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text())
    }
}

fn body<T: for<'de> Deserialize<'de>>(b: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let b = b.map_err(|e| rejected(e, "request body", MAX_REQUEST_BYTES))?;
    // serde reads a struct from an array too; every body here is an object.
    if b.iter().find(|c| !c.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "invalid JSON body: expected an object",
        ));
    }
    serde_json::from_slice(&b).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("invalid JSON body: {e}"),
        )
    })
}

/// `body`, where no body at all means every field's default (the Platform API's clients send
/// bodyless POSTs).
fn body_or_default<T: for<'de> Deserialize<'de> + Default>(
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<T> {
    if b.as_ref().is_ok_and(|b| b.is_empty()) {
        return Ok(T::default());
    }
    body(b)
}

fn find_app(inner: &Inner, name: &str) -> ApiResult<AppRow> {
    inner
        .store()
        .read(|r| r.app(name))?
        .ok_or_else(|| ApiError::not_found(format!("no app named {name:?}")))
}

fn app_json(
    inner: &Inner,
    app: &AppRow,
    release: Option<&ReleaseRow>,
    formation: &Formation,
    dynos: &[DynoRow],
) -> wire::App {
    let mine: Vec<&DynoRow> = dynos
        .iter()
        .filter(|d| d.app_id == app.id && !d.one_off && d.desired != Desired::Stop)
        .collect();
    wire::App {
        id: app.id.clone(),
        name: app.name.clone(),
        created_at: iso_secs(app.created_at / 1000),
        updated_at: iso_secs(app.updated_at / 1000),
        release: release.map(|r| r.version),
        web_url: inner.web_url(&app.name),
        maintenance: app.maintenance,
        formation: formation.to_scale_string(),
        dynos_up: mine.iter().filter(|d| d.state == DynoState::Up).count() as u32,
        dynos_total: mine.len() as u32,
        platform: wire::AppPlatform {
            released_at: release.map(|r| iso_secs(r.created_at / 1000)),
            git_url: None,
            owner: Some(wire::Owner {
                id: derived_id("account", &app.owner),
                email: app.owner.clone(),
            }),
            region: Some(named("region", "us")),
            stack: Some(named("stack", "dyno")),
            build_stack: Some(named("stack", "dyno")),
            generation: Some(named("generation", "cedar")),
            acm: false,
            locked: false,
            archived_at: None,
            team: None,
            space: None,
            organization: None,
            create_status: Some("complete".into()),
            slug_size: release
                .and_then(|r| r.slug.as_deref())
                .and_then(|id| inner.slug_size(id)),
            repo_size: None,
            buildpack_provided_description: None,
            base_image_name: None,
            current_build_architecture: Vec::new(),
            buildpacks: None,
            internal_routing: None,
        },
    }
}

/// A stable UUID-shaped id for something the Platform API identifies and we only name.
fn derived_id(kind: &str, name: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("{kind}:{name}").as_bytes());
    let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn named(kind: &str, name: &str) -> wire::NamedRef {
    wire::NamedRef {
        id: derived_id(kind, name),
        name: name.to_string(),
    }
}

async fn list_apps(State(api): State<Api>, headers: HeaderMap) -> ApiResult<Response> {
    let inner = &api.inner;
    let out = inner.store().read(|r| {
        let dynos = r.dynos()?;
        let mut out = Vec::new();
        for a in r.apps()? {
            out.push(app_json(
                inner,
                &a,
                r.current_release(&a.id)?.as_ref(),
                &r.formation(&a.id)?,
                &dynos,
            ));
        }
        Ok(out)
    })?;
    paged(
        out,
        &headers,
        &["id", "name"],
        |a, f| match f {
            "id" => a.id.clone(),
            _ => a.name.clone(),
        },
        text_bound,
    )
}

async fn get_app(State(api): State<Api>, Path(name): Path<String>) -> ApiResult<Json<wire::App>> {
    let inner = &api.inner;
    let app = find_app(inner, &name)?;
    let out = inner.store().read(|r| {
        Ok(app_json(
            inner,
            &app,
            r.current_release(&app.id)?.as_ref(),
            &r.formation(&app.id)?,
            &r.app_dynos(&app.id)?,
        ))
    })?;
    Ok(Json(out))
}

/// `PATCH /apps/{app}` `{"maintenance": true}` (the Platform API's app update): the router
/// answers every request with H80 while the dynos keep running.
async fn patch_app(
    State(api): State<Api>,
    Path(name): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<wire::App>> {
    let req: wire::AppUpdate = body(b)?;
    let inner = &api.inner;
    let app = find_app(inner, &name)?;
    // Checked before anything changes: a request is done whole or not at all.
    if req.name.as_ref().is_some_and(|n| *n != app.name) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_supported",
            "Renaming apps is not supported by this platform: create an app with the new name and deploy to it",
        ));
    }
    if let Some(stack) = req.build_stack.as_ref().filter(|s| *s != "dyno") {
        return Err(ApiError::invalid(format!(
            "unknown stack {stack:?}: this platform has one stack, dyno"
        )));
    }
    if let Some(on) = req.maintenance {
        inner.store().transaction(|tx| {
            tx.set_maintenance(&app.id, on, now_ms())?;
            let what = if on { "on" } else { "off" };
            tx.insert_event(
                &app.id,
                now_ms(),
                "api",
                &format!("Maintenance mode {what}"),
            )
        })?;
        inner.system_log(
            &app.name,
            "api",
            format!("Maintenance mode {}", if on { "on" } else { "off" }),
        );
        inner.refresh_routes()?;
    }
    get_app(State(api), Path(name)).await
}

/// An owner names who pays: an account, team or cost centre (`acme`, `ops@acme.example`).
fn owner_name(o: &str) -> ApiResult<String> {
    let ok = (1..=64).contains(&o.len())
        && o.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(o.to_string())
    } else {
        Err(ApiError::invalid(format!(
            "invalid owner {o:?}: use 1-64 letters, digits, '-', '_', '.' or '@'"
        )))
    }
}

/// `POST /apps` as both our CLI and the Platform API send it: the name may be left out (one is
/// made up), and the Platform API's `region`/`stack` must name what this platform has.
#[derive(Deserialize, Default)]
struct CreateAppBody {
    name: Option<String>,
    owner: Option<String>,
    region: Option<String>,
    stack: Option<String>,
}

/// `shiny-meadow-4821`: a free app name for `POST /apps` without one, picked by `seed` (40 hex
/// digits).
fn made_up_name(taken: &HashSet<String>, seed: &str) -> Option<String> {
    const ADJECTIVES: [&str; 16] = [
        "shiny", "quiet", "brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "lively",
        "misty", "nimble", "polite", "rapid", "sunny", "witty",
    ];
    const NOUNS: [&str; 16] = [
        "meadow", "river", "forest", "harbor", "canyon", "island", "lake", "valley", "summit",
        "prairie", "glacier", "lagoon", "orchard", "reef", "dune", "grove",
    ];
    for attempt in 0..32usize {
        let n = usize::from_str_radix(&seed[attempt..attempt + 8], 16).unwrap_or(attempt);
        let name = format!(
            "{}-{}-{:04}",
            ADJECTIVES[n % 16],
            NOUNS[(n / 16) % 16],
            (n / 256) % 10_000
        );
        if !taken.contains(&name) {
            return Some(name);
        }
    }
    None
}

async fn create_app(
    State(api): State<Api>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<wire::App>)> {
    let req: CreateAppBody = body_or_default(b)?;
    if let Some(r) = req.region.as_deref().filter(|r| *r != "us") {
        return Err(ApiError::invalid(format!(
            "region {r:?}: this platform has one region, us"
        )));
    }
    if let Some(s) = req.stack.as_deref().filter(|s| *s != "dyno") {
        return Err(ApiError::invalid(format!(
            "stack {s:?}: this platform has one stack, dyno"
        )));
    }
    let raw_name = match req.name {
        Some(n) => n,
        None => {
            let taken: HashSet<String> = api
                .inner
                .store()
                .read(|r| r.apps())?
                .into_iter()
                .map(|a| a.name)
                .collect();
            let seed = crate::auth::random_hex(20)
                .map_err(|e| ApiError::internal(format!("no randomness for an app name: {e}")))?;
            made_up_name(&taken, &seed)
                .ok_or_else(|| ApiError::internal("no free app name found; name the app"))?
        }
    };
    let name: AppName = raw_name.parse().map_err(ApiError::invalid)?;
    let owner = match req.owner {
        Some(o) => owner_name(&o)?,
        None => "default".to_string(),
    };
    let now = now_ms();
    let row = AppRow {
        id: new_id("app-"),
        name: name.to_string(),
        created_at: now,
        updated_at: now,
        maintenance: false,
        owner,
    };
    let inner = &api.inner;
    let created = inner.store().transaction(|tx| {
        if tx.app(name.as_str())?.is_some() {
            return Ok(false);
        }
        tx.insert_app(&row)?;
        Ok(true)
    })?;
    if !created {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("an app named {name} already exists"),
        ));
    }
    // Lines that straggled in for an earlier app of this name are not this app's history.
    inner.logs.forget(name.as_str());
    inner.system_log(name.as_str(), "api", "App created");
    inner.wake();
    Ok((
        StatusCode::CREATED,
        Json(app_json(inner, &row, None, &Formation::default(), &[])),
    ))
}

async fn destroy_app(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> ApiResult<Json<wire::App>> {
    let inner = &api.inner;
    let app = find_app(inner, &name)?;
    let out = inner.store().transaction(|tx| {
        let out = app_json(
            inner,
            &app,
            tx.current_release(&app.id)?.as_ref(),
            &tx.formation(&app.id)?,
            &tx.app_dynos(&app.id)?,
        );
        tx.delete_app(&app.id)?;
        Ok(out)
    })?;
    // Also drops its persisted lines and stops its drains (their rows went with the app's).
    inner.logs.forget(&name);
    inner.wake();
    Ok(Json(out))
}

/// The Procfile type that runs before a release goes live (Heroku's release phase).
fn release_type() -> dyno_shared::ProcessType {
    crate::RELEASE_TYPE.parse().expect("a valid process type")
}

/// A release's Platform API id: derived, so it needs no column and never changes.
fn release_id(app_id: &str, version: u32) -> String {
    derived_id("release", &format!("{app_id}/{version}"))
}

fn app_ref(app: &AppRow) -> wire::NamedRef {
    wire::NamedRef {
        id: app.id.clone(),
        name: app.name.clone(),
    }
}

/// A size as the Platform API's `dyno_size` reference.
fn dyno_size_ref(size: dyno_shared::Size) -> wire::NamedRef {
    wire::NamedRef {
        id: derived_id("dyno-size", size.as_str()),
        name: size.heroku_name().to_string(),
    }
}

/// The size a formation update names by `size` or `dyno_size` (`name` or `id`).
fn update_size(
    size: Option<&str>,
    dyno_size: Option<&wire::DynoSizeRef>,
) -> ApiResult<Option<dyno_shared::Size>> {
    let by_id = |id: &str| {
        dyno_shared::Size::ALL
            .into_iter()
            .find(|s| dyno_size_ref(*s).id == id)
            .ok_or_else(|| ApiError::invalid(format!("unknown dyno_size id {id:?}")))
    };
    let by_ref = match dyno_size {
        None => None,
        Some(wire::DynoSizeRef { name: Some(n), id }) => {
            let size: dyno_shared::Size = n.parse().map_err(ApiError::invalid)?;
            if let Some(id) = id
                && by_id(id)? != size
            {
                return Err(ApiError::invalid(format!(
                    "dyno_size id {id:?} is not the id of {n:?}"
                )));
            }
            Some(size)
        }
        Some(wire::DynoSizeRef { id: Some(id), .. }) => Some(by_id(id)?),
        Some(_) => return Err(ApiError::invalid("dyno_size needs a name or an id")),
    };
    let by_name = size
        .map(str::parse::<dyno_shared::Size>)
        .transpose()
        .map_err(ApiError::invalid)?;
    match (by_name, by_ref) {
        (Some(a), Some(b)) if a != b => Err(ApiError::invalid(format!(
            "size {a} and dyno_size {b} disagree: give one"
        ))),
        (a, b) => Ok(a.or(b)),
    }
}

fn release_json(app: &AppRow, r: &ReleaseRow, current: u32) -> wire::Release {
    let created_at = iso_secs(r.created_at / 1000);
    wire::Release {
        id: release_id(&app.id, r.version),
        version: r.version,
        description: r.description.clone(),
        slug: r.slug.clone().map(|id| wire::IdRef { id }),
        app: app_ref(app),
        updated_at: created_at.clone(),
        created_at,
        status: r.status.clone(),
        current: r.version == current,
        eligible_for_rollback: r.status == "succeeded" && r.slug.is_some(),
        addon_plan_names: Vec::new(),
        output_stream_url: None,
        artifacts: r
            .slug
            .iter()
            .map(|id| wire::Artifact {
                kind: "slug".into(),
                id: id.clone(),
            })
            .collect(),
        oci_image: None,
        user: r.made_by.as_ref().map(|name| wire::Owner {
            id: derived_id("account", name),
            email: name.clone(),
        }),
        process_types: r
            .procfile
            .processes
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

#[derive(Deserialize)]
struct ReleaseQuery {
    description: Option<String>,
}

/// `POST /apps/{app}/releases`: a slug tarball deploys; a JSON body `{"release": N}` rolls back
/// (the Platform API's shape), making a new release from vN's slug, Procfile and config.
async fn create_release(
    State(api): State<Api>,
    Path(name): Path<String>,
    Query(q): Query<ReleaseQuery>,
    headers: axum::http::HeaderMap,
    who: Option<axum::Extension<crate::auth::Principal>>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<wire::Release>)> {
    let inner = api.inner.clone();
    let app = find_app(&inner, &name)?;
    let made_by = who.map(|w| w.0.name);
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if is_json {
        // Read under the slug limit, but a JSON body gets the JSON limit.
        if b.as_ref().is_ok_and(|b| b.len() > MAX_REQUEST_BYTES) {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body is over the limit of {MAX_REQUEST_BYTES} bytes"),
            ));
        }
        let req: wire::Rollback = body(b)?;
        let release = rollback(&inner, &app, &req, made_by)?;
        return Ok((
            StatusCode::CREATED,
            Json(release_json(&app, &release, release.version)),
        ));
    }
    let slug = b.map_err(|e| rejected(e, "slug", inner.config.max_slug_bytes))?;
    let description = q.description.unwrap_or_default();
    if description.len() > 1024 {
        return Err(ApiError::invalid("description is longer than 1024 bytes"));
    }
    let worker = inner.clone();
    let (procfile, slug_id) =
        tokio::task::spawn_blocking(move || -> ApiResult<(Procfile, String)> {
            let procfile = crate::slugs::read_procfile(&slug).map_err(ApiError::invalid)?;
            let id = worker.slugs.put(&slug).map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?;
            Ok((procfile, id))
        })
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    let description = if description.is_empty() {
        format!("Deploy {}", &slug_id[..8])
    } else {
        description
    };
    let release = new_release(
        &inner,
        &app,
        Some(slug_id),
        Some(procfile),
        None,
        description,
        made_by,
    )?;
    Ok((
        StatusCode::CREATED,
        Json(release_json(&app, &release, release.version)),
    ))
}

/// The version a release key names: `3`, `v3`, or a release id of the app. `None` when it
/// is neither; an id of no release of the app is `not_found`.
fn release_version(inner: &Inner, app: &AppRow, key: &str) -> ApiResult<Option<u32>> {
    if let Ok(v) = key.strip_prefix('v').unwrap_or(key).parse::<u32>() {
        return Ok(Some(v));
    }
    if key.len() != 36 {
        return Ok(None);
    }
    let last = inner.store().read(|r| r.last_version(&app.id))?;
    (1..=last)
        .rev()
        .find(|v| release_id(&app.id, *v) == key)
        .map(Some)
        .ok_or_else(|| ApiError::not_found(format!("app {} has no release {key}", app.name)))
}

/// `GET /apps/{app}/releases/{id_or_version}`.
async fn get_release(
    State(api): State<Api>,
    Path((name, key)): Path<(String, String)>,
) -> ApiResult<Json<wire::Release>> {
    let (app, release, current) = find_release(&api.inner, &name, &key)?;
    Ok(Json(release_json(&app, &release, current)))
}

/// `GET /apps/{app}/releases/{id_or_version}/config-vars`: the config that release runs with.
async fn get_release_config(
    State(api): State<Api>,
    Path((name, key)): Path<(String, String)>,
) -> ApiResult<Json<BTreeMap<String, String>>> {
    let (_, release, _) = find_release(&api.inner, &name, &key)?;
    Ok(Json(release.config.0))
}

/// The app, the release a key names, and the current version.
fn find_release(inner: &Inner, name: &str, key: &str) -> ApiResult<(AppRow, ReleaseRow, u32)> {
    let app = find_app(inner, name)?;
    let missing = || ApiError::not_found(format!("app {} has no release {key}", app.name));
    let version = release_version(inner, &app, key)?.ok_or_else(missing)?;
    let (release, current) = inner.store().read(|r| {
        Ok((
            r.release(&app.id, version)?,
            r.current_release(&app.id)?.map_or(0, |c| c.version),
        ))
    })?;
    let release = release.ok_or_else(missing)?;
    Ok((app, release, current))
}

/// A new release with vN's slug, Procfile and config (which becomes the app's config again).
/// Its release phase does not run: vN's already ran.
fn rollback(
    inner: &Inner,
    app: &AppRow,
    req: &wire::Rollback,
    made_by: Option<String>,
) -> ApiResult<ReleaseRow> {
    let target: u32 = match &req.release {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => release_version(inner, app, s)?,
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::invalid(format!(
            "invalid release {}: expected a release id or a version such as 3 or \"v3\"",
            req.release
        ))
    })?;
    let now = now_ms();
    let release = inner.store().transaction(|tx| {
        let Some(old) = tx.release(&app.id, target)? else {
            return Ok(Err(ApiError::not_found(format!(
                "app {} has no release v{target}",
                app.name
            ))));
        };
        if old.status != "succeeded" || old.slug.is_none() {
            return Ok(Err(ApiError::invalid(format!(
                "v{target} cannot be rolled back to: it {}",
                if old.slug.is_none() {
                    "has no slug"
                } else {
                    "never went live"
                }
            ))));
        }
        let release = ReleaseRow {
            version: tx.last_version(&app.id)? + 1,
            description: format!("Rollback to v{target}"),
            created_at: now,
            status: "succeeded".into(),
            made_by,
            ..old
        };
        tx.insert_release(&release)?;
        tx.insert_event(
            &app.id,
            now,
            "api",
            &format!(
                "Release v{} created: Rollback to v{target}",
                release.version
            ),
        )?;
        tx.set_config(&app.id, &release.config)?;
        let mut formation = tx.formation(&app.id)?;
        formation
            .entries
            .retain(|t, _| release.procfile.processes.contains_key(t) && *t != release_type());
        tx.set_formation(&app.id, &formation)?;
        Ok(Ok(release))
    })??;
    inner.system_log(
        &app.name,
        "api",
        format!(
            "Release v{} created: Rollback to v{target}",
            release.version
        ),
    );
    inner.wake();
    Ok(release)
}

/// Records release vN+1 from the current one with a new slug/Procfile and/or config, and keeps
/// the formation in step with the Procfile (a first deploy with a `web` type gets web=1, as Heroku).
fn new_release(
    inner: &Inner,
    app: &AppRow,
    slug: Option<String>,
    procfile: Option<Procfile>,
    config_patch: Option<&wire::ConfigPatch>,
    description: String,
    made_by: Option<String>,
) -> ApiResult<ReleaseRow> {
    let now = now_ms();
    let release = inner.store().transaction(|tx| {
        // The patch applies to the config as of this transaction, so concurrent changes compose.
        let config: Option<ConfigVars> = match config_patch {
            Some(p) => match tx.config(&app.id)?.apply(p) {
                Ok(c) => Some(c),
                Err(e) => return Ok(Err(ApiError::invalid(e))),
            },
            None => None,
        };
        let current = tx.current_release(&app.id)?;
        let first_slug = current.as_ref().is_none_or(|r| r.slug.is_none()) && slug.is_some();
        let mut release = ReleaseRow {
            app_id: app.id.clone(),
            version: tx.last_version(&app.id)? + 1,
            description: description.clone(),
            slug: slug
                .clone()
                .or_else(|| current.as_ref().and_then(|r| r.slug.clone())),
            procfile: procfile
                .clone()
                .or_else(|| current.as_ref().map(|r| r.procfile.clone()))
                .unwrap_or_default(),
            config: match &config {
                Some(c) => c.clone(),
                None => tx.config(&app.id)?,
            },
            created_at: now,
            status: "succeeded".into(),
            made_by: made_by.clone(),
        };
        if release.slug.is_some() && release.procfile.command(&release_type()).is_some() {
            // Live only once its release phase exits 0.
            release.status = "pending".into();
        }
        tx.insert_release(&release)?;
        tx.insert_event(
            &app.id,
            now,
            "api",
            &format!(
                "Release v{} created: {}",
                release.version, release.description
            ),
        )?;
        if let Some(c) = &config {
            tx.set_config(&app.id, c)?;
        }
        let mut formation = tx.formation(&app.id)?;
        // `release` is the release phase, never a formation type.
        formation
            .entries
            .retain(|t, _| release.procfile.processes.contains_key(t) && *t != release_type());
        for t in release
            .procfile
            .processes
            .keys()
            .filter(|t| **t != release_type())
        {
            let quantity = u32::from(first_slug && t.is_web());
            formation
                .entries
                .entry(t.clone())
                .or_insert(dyno_shared::FormationEntry {
                    quantity,
                    size: Default::default(),
                });
        }
        tx.set_formation(&app.id, &formation)?;
        tx.touch_app(&app.id, now)?;
        Ok(Ok(release))
    })??;
    inner.system_log(
        &app.name,
        "api",
        format!(
            "Release v{} created: {}",
            release.version, release.description
        ),
    );
    if release.status == "pending" {
        inner.start_release_phase(app, &release)?;
    }
    inner.wake();
    Ok(release)
}

/// Every release, oldest first; with a Platform API `Range: version ..; max=N, order=desc`
/// header, that page (206 and `Next-Range` when more follow).
async fn list_releases(
    State(api): State<Api>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let app = find_app(&api.inner, &name)?;
    let releases = api.inner.store().read(|r| r.releases(&app.id))?;
    let current = releases
        .iter()
        .rev()
        .find(|r| r.status == "succeeded")
        .map_or(0, |r| r.version);
    let all: Vec<wire::Release> = releases
        .iter()
        .map(|r| release_json(&app, r, current))
        .collect();
    paged(
        all,
        &headers,
        &["version"],
        |r, _| i64::from(r.version),
        dyno_shared::range::numeric_bound,
    )
}

/// A `Range` whose bounds do not fit its field (`version ]abc..`): the Platform API's 416.
fn range_error(message: String) -> ApiError {
    ApiError::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "requested_range_not_satisfiable",
        message,
    )
}

/// A list under an optional Platform API `Range` on one of `fields` (`key` gives an item's value
/// of a field, `bound` reads a range bound of it): without one (or an unknown field) the whole
/// list, 200; with one, that page, 206 and `Next-Range` when more follow (the heroku CLI follows
/// it). `Accept-Ranges` always.
fn paged<T: serde::Serialize, K: Ord + std::fmt::Display>(
    items: Vec<T>,
    headers: &HeaderMap,
    fields: &[&str],
    key: impl Fn(&T, &str) -> K,
    bound: impl Fn(&str) -> Option<K>,
) -> ApiResult<Response> {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(dyno_shared::range::parse)
        .filter(|r| fields.contains(&r.field.as_str()));
    let (page, next, content_range) = match range {
        None => (items, None, None),
        Some(spec) => {
            let (page, next) =
                dyno_shared::range::page(items, |t| key(t, &spec.field), bound, &spec)
                    .map_err(range_error)?;
            let content_range = match (page.first(), page.last()) {
                (Some(f), Some(l)) => format!(
                    "{} {}..{}",
                    spec.field,
                    key(f, &spec.field),
                    key(l, &spec.field)
                ),
                _ => format!("{} ..", spec.field),
            };
            (page, next, Some(content_range))
        }
    };
    let mut resp = Json(page).into_response();
    if let Some(v) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        resp.headers_mut().insert("next-range", v);
    }
    if let Some(v) = content_range.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&fields.join(", ")) {
        resp.headers_mut().insert(header::ACCEPT_RANGES, v);
    }
    Ok(resp)
}

/// A string field's range bound: any text.
fn text_bound(b: &str) -> Option<String> {
    Some(b.to_string())
}

fn formation_json(
    app: &AppRow,
    release: Option<&ReleaseRow>,
    f: &Formation,
) -> Vec<wire::FormationItem> {
    let Some(release) = release else {
        return Vec::new();
    };
    release
        .procfile
        .processes
        .iter()
        .map(|(t, cmd)| {
            let e = f
                .entries
                .get(t)
                .copied()
                .unwrap_or(dyno_shared::FormationEntry {
                    quantity: 0,
                    size: Default::default(),
                });
            wire::FormationItem {
                id: derived_id("formation", &format!("{}/{t}", app.id)),
                process_type: t.to_string(),
                quantity: e.quantity,
                size: e.size,
                command: cmd.clone(),
                app: Some(app_ref(app)),
                created_at: Some(iso_secs(app.created_at / 1000)),
                updated_at: Some(iso_secs(app.updated_at / 1000)),
                dyno_size: Some(dyno_size_ref(e.size)),
            }
        })
        .collect()
}

/// The app's formation as its current release defines the types.
fn current_formation(inner: &Inner, app: &AppRow) -> ApiResult<Vec<wire::FormationItem>> {
    Ok(inner.store().read(|r| {
        Ok(formation_json(
            app,
            r.current_release(&app.id)?.as_ref(),
            &r.formation(&app.id)?,
        ))
    })?)
}

async fn get_formation(
    State(api): State<Api>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let app = find_app(&api.inner, &name)?;
    let out = current_formation(&api.inner, &app)?;
    paged(
        out,
        &headers,
        &["id", "type"],
        |i, f| match f {
            "id" => i.id.clone(),
            _ => i.process_type.clone(),
        },
        text_bound,
    )
}

fn apply_scale(
    inner: &Inner,
    app: &AppRow,
    args: &[ScaleArg],
) -> ApiResult<Vec<wire::FormationItem>> {
    let (items, summary) = inner.store().transaction(|tx| {
        let Some(release) = tx.current_release(&app.id)? else {
            return Ok(Err(ApiError::invalid(format!(
                "app {} has no release yet: deploy it first",
                app.name
            ))));
        };
        let next = match tx.formation(&app.id)?.apply(args, &release.procfile) {
            Ok(f) => f,
            Err(e) => return Ok(Err(ApiError::invalid(e))),
        };
        tx.set_formation(&app.id, &next)?;
        let summary = next
            .entries
            .iter()
            .map(|(t, e)| format!("{t}@{}:{}", e.quantity, e.size))
            .collect::<Vec<_>>()
            .join(" ");
        tx.insert_event(&app.id, now_ms(), "api", &format!("Scaled to {summary}"))?;
        Ok(Ok((formation_json(app, Some(&release), &next), summary)))
    })??;
    inner.system_log(&app.name, "api", format!("Scaled to {summary}"));
    inner.wake();
    Ok(items)
}

async fn scale(
    State(api): State<Api>,
    Path(name): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Vec<wire::FormationItem>>> {
    let req: wire::ScaleRequest = body(b)?;
    let args = parse_scale_args(&req.args).map_err(ApiError::invalid)?;
    let app = find_app(&api.inner, &name)?;
    Ok(Json(apply_scale(&api.inner, &app, &args)?))
}

/// `GET /apps/{app}/formation/{type}` (type or formation id).
async fn get_formation_type(
    State(api): State<Api>,
    Path((name, key)): Path<(String, String)>,
) -> ApiResult<Json<wire::FormationItem>> {
    let app = find_app(&api.inner, &name)?;
    let items = current_formation(&api.inner, &app)?;
    formation_item(items, &name, &key).map(Json)
}

fn formation_item(
    items: Vec<wire::FormationItem>,
    app: &str,
    key: &str,
) -> ApiResult<wire::FormationItem> {
    items
        .into_iter()
        .find(|i| i.process_type == key || i.id == key)
        .ok_or_else(|| ApiError::not_found(format!("app {app} has no process type {key}")))
}

/// `PATCH /apps/{app}/formation/{type}`: one type's quantity and/or size.
async fn patch_formation_type(
    State(api): State<Api>,
    Path((name, key)): Path<(String, String)>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<wire::FormationItem>> {
    let req: wire::FormationTypeUpdate = body(b)?;
    let size = update_size(req.size.as_deref(), req.dyno_size.as_ref())?;
    let app = find_app(&api.inner, &name)?;
    // The key may be the formation's id: find its type first.
    let current = current_formation(&api.inner, &app)?;
    let item = formation_item(current, &name, &key)?;
    let process_type: ProcessType = item.process_type.parse().map_err(ApiError::invalid)?;
    let op = match &req.quantity {
        Some(q) => q.op().map_err(ApiError::invalid)?,
        None => ScaleOp::Set(item.quantity),
    };
    let items = apply_scale(
        &api.inner,
        &app,
        &[ScaleArg {
            process_type,
            op,
            size,
        }],
    )?;
    formation_item(items, &name, &item.process_type).map(Json)
}

async fn patch_formation(
    State(api): State<Api>,
    Path(name): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Vec<wire::FormationItem>>> {
    let req: wire::FormationUpdates = body(b)?;
    let app = find_app(&api.inner, &name)?;
    let current = api.inner.store().read(|r| r.formation(&app.id))?;
    let mut args = Vec::new();
    for u in req.updates {
        let process_type: ProcessType = u.process_type.parse().map_err(ApiError::invalid)?;
        let size = update_size(u.size.as_deref(), u.dyno_size.as_ref())?;
        let op = match &u.quantity {
            Some(q) => q.op().map_err(ApiError::invalid)?,
            None => ScaleOp::Set(current.entries.get(&process_type).map_or(0, |e| e.quantity)),
        };
        args.push(ScaleArg {
            process_type,
            op,
            size,
        });
    }
    if args.is_empty() {
        return Err(ApiError::invalid("no updates given"));
    }
    Ok(Json(apply_scale(&api.inner, &app, &args)?))
}

fn dyno_json(inner: &Inner, d: &DynoRow) -> wire::Dyno {
    let address = match (&d.host, d.port) {
        (Some(h), Some(p)) => inner
            .agents
            .lock()
            .expect("agents lock")
            .get(h)
            .map(|c| format!("{}:{p}", c.address)),
        _ => None,
    };
    wire::Dyno {
        id: d.id.clone(),
        name: d.name(),
        process_type: d.process_type.clone(),
        state: d.state.as_str().to_string(),
        size: d.size,
        command: d.command.clone(),
        release: wire::ReleaseRef {
            id: release_id(&d.app_id, d.release),
            version: d.release,
        },
        host: d.host.clone(),
        address,
        created_at: iso_secs(d.created_at / 1000),
        updated_at: iso_secs(d.updated_at / 1000),
        restarts: d.restarts,
        exit_code: d.exit_code,
        one_off: d.one_off,
        healthy: d.healthy,
        // A sample outlives its dyno's run only until the final state arrives; never show it
        // for a dyno that is not running.
        stats: d
            .state
            .is_running()
            .then(|| inner.stats.json(&d.id))
            .flatten(),
        attach_url: None,
        app: Some(wire::NamedRef {
            id: d.app_id.clone(),
            name: d.app.clone(),
        }),
    }
}

async fn list_dynos(
    State(api): State<Api>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let app = find_app(&api.inner, &name)?;
    let dynos = api.inner.store().read(|r| r.app_dynos(&app.id))?;
    let out: Vec<wire::Dyno> = dynos
        .iter()
        // Dynos being stopped are gone as far as users are concerned; sleeping ones show.
        .filter(|d| d.desired != Desired::Stop)
        .map(|d| dyno_json(&api.inner, d))
        .collect();
    paged(
        out,
        &headers,
        &["id", "name"],
        |d, f| match f {
            "id" => d.id.clone(),
            _ => d.name.clone(),
        },
        text_bound,
    )
}

/// Stops the selected dynos; formation dynos are then replaced by the manager, which is how a
/// restart happens. `one_off` says whether one-off dynos may be selected.
fn stop_dynos(
    inner: &Inner,
    app_name: &str,
    sel: &wire::DynoSelector,
    one_off: bool,
    verb: &str,
) -> ApiResult<wire::ActionResult> {
    let app = find_app(inner, app_name)?;
    if let Some(d) = &sel.dyno {
        d.parse::<DynoName>().map_err(ApiError::invalid)?;
    }
    if let Some(t) = &sel.process_type {
        t.parse::<ProcessType>().map_err(ApiError::invalid)?;
    }
    let grace_ms = inner.config.stop_grace.as_millis() as u64;
    let now = now_ms();
    let chosen = inner.store().transaction(|tx| {
        let chosen: Vec<DynoRow> = tx
            .app_dynos(&app.id)?
            .into_iter()
            .filter(|d| d.desired == Desired::Run && (one_off || !d.one_off))
            .filter(|d| sel.dyno.as_ref().is_none_or(|n| &d.name() == n))
            .filter(|d| {
                sel.process_type
                    .as_ref()
                    .is_none_or(|t| &d.process_type == t)
            })
            .collect();
        for d in &chosen {
            let mut d = d.clone();
            d.desired = Desired::Stop;
            d.updated_at = now;
            tx.update_dyno(&d)?;
        }
        Ok(chosen)
    })?;
    if chosen.is_empty() && (sel.dyno.is_some() || sel.process_type.is_some()) {
        let what = sel
            .dyno
            .clone()
            .or(sel.process_type.clone())
            .unwrap_or_default();
        return Err(ApiError::not_found(format!(
            "no running dyno matches {what:?} in app {app_name}"
        )));
    }
    let mut stops = Vec::new();
    for d in &chosen {
        inner.system_log(app_name, &d.name(), format!("{verb} by api"));
        if let Some(h) = &d.host {
            stops.push((
                h.clone(),
                CoordinatorMsg::StopDyno {
                    dyno_id: d.id.clone(),
                    grace_ms,
                },
            ));
        }
    }
    // Out of the router first; SIGTERM once their requests are done.
    let _ = inner.send_after_drain(stops);
    inner.wake();
    Ok(wire::ActionResult {
        dynos: chosen.iter().map(DynoRow::name).collect(),
    })
}

/// How long a rolling restart waits for one batch to come back up before it gives up.
const BATCH_TIMEOUT: Duration = Duration::from_secs(300);

/// `POST /apps/{app}/restart` with `batch`: restarts the type's (or app's) dynos a batch at a
/// time in the background, each batch `up` again before the next one stops.
fn rolling_restart(
    inner: &Shared,
    app_name: &str,
    sel: &wire::DynoSelector,
    spec: &str,
) -> ApiResult<wire::ActionResult> {
    let app = find_app(inner, app_name)?;
    if sel.dyno.is_some() {
        return Err(ApiError::invalid(
            "a rolling restart takes a process type or the whole app, not one dyno",
        ));
    }
    if let Some(t) = &sel.process_type {
        t.parse::<ProcessType>().map_err(ApiError::invalid)?;
    }
    let mut slots: Vec<(String, u32)> = inner
        .store()
        .read(|r| r.app_dynos(&app.id))?
        .into_iter()
        .filter(|d| d.desired == Desired::Run && !d.one_off)
        .filter(|d| {
            sel.process_type
                .as_ref()
                .is_none_or(|t| &d.process_type == t)
        })
        .map(|d| (d.process_type, d.idx))
        .collect();
    slots.sort();
    slots.dedup();
    if slots.is_empty() {
        return Err(ApiError::not_found(format!(
            "no running dyno to restart in app {app_name}"
        )));
    }
    let size = wire::batch_size(spec, slots.len()).map_err(ApiError::invalid)?;
    let batches: Vec<Vec<(String, u32)>> = slots.chunks(size).map(<[_]>::to_vec).collect();
    inner.system_log(
        &app.name,
        "api",
        format!(
            "Rolling restart of {} dynos in {} batches of up to {size}",
            slots.len(),
            batches.len()
        ),
    );
    tokio::spawn(rolling(inner.clone(), app, batches));
    Ok(wire::ActionResult {
        dynos: slots.iter().map(|(t, i)| format!("{t}.{i}")).collect(),
    })
}

async fn rolling(inner: Shared, app: AppRow, batches: Vec<Vec<(String, u32)>>) {
    let total = batches.len();
    for (n, batch) in batches.iter().enumerate() {
        let in_batch = |d: &DynoRow| {
            batch
                .iter()
                .any(|(t, i)| d.process_type == *t && d.idx == *i)
        };
        let old: HashSet<String> = match inner.store().read(|r| r.app_dynos(&app.id)) {
            Ok(dynos) => dynos
                .iter()
                .filter(|d| in_batch(d))
                .map(|d| d.id.clone())
                .collect(),
            Err(e) => {
                tracing::error!(app = app.name, error = %e, "rolling restart: store failed");
                return;
            }
        };
        let names: Vec<String> = batch.iter().map(|(t, i)| format!("{t}.{i}")).collect();
        inner.system_log(
            &app.name,
            "api",
            format!(
                "Rolling restart: batch {}/{total}: {}",
                n + 1,
                names.join(", ")
            ),
        );
        for name in &names {
            let sel = wire::DynoSelector {
                dyno: Some(name.clone()),
                process_type: None,
                batch: None,
            };
            // A dyno that is gone meanwhile (scaled down) needs no restart.
            let _ = stop_dynos(&inner, &app.name, &sel, false, "Restarting");
        }
        let deadline = tokio::time::Instant::now() + BATCH_TIMEOUT;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let dynos = match inner.store().read(|r| r.app_dynos(&app.id)) {
                Ok(d) => d,
                Err(_) => return,
            };
            let back = batch.iter().all(|(t, i)| {
                dynos.iter().any(|d| {
                    d.process_type == *t
                        && d.idx == *i
                        && d.desired == Desired::Run
                        && !old.contains(&d.id)
                        && d.state == DynoState::Up
                })
            });
            // Scaled below a slot meanwhile: nothing comes back there, and that is fine.
            let gone = batch.iter().all(|(t, i)| {
                !dynos
                    .iter()
                    .any(|d| d.process_type == *t && d.idx == *i && d.desired == Desired::Run)
            });
            if back || gone {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                inner.system_log(
                    &app.name,
                    "api",
                    format!(
                        "Rolling restart stopped: batch {}/{total} was not up again within {} s",
                        n + 1,
                        BATCH_TIMEOUT.as_secs()
                    ),
                );
                return;
            }
        }
    }
    inner.system_log(&app.name, "api", "Rolling restart done");
}

async fn restart(
    State(api): State<Api>,
    Path(name): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<wire::ActionResult>> {
    let sel: wire::DynoSelector = body(b)?;
    if let Some(spec) = &sel.batch {
        return Ok(Json(rolling_restart(&api.inner, &name, &sel, spec)?));
    }
    Ok(Json(stop_dynos(
        &api.inner,
        &name,
        &sel,
        false,
        "Restarting",
    )?))
}

async fn stop(
    State(api): State<Api>,
    Path(name): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<wire::ActionResult>> {
    let sel: wire::DynoSelector = body(b)?;
    if sel.dyno.is_none() && sel.process_type.is_none() {
        return Err(ApiError::invalid(
            "name a dyno (web.1) or a process type (web) to stop",
        ));
    }
    Ok(Json(stop_dynos(&api.inner, &name, &sel, true, "Stopping")?))
}

/// `DELETE /apps/{app}/dynos`: 202, as the Platform API (the restarts happen after the answer).
async fn restart_all(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<wire::ActionResult>)> {
    Ok((
        StatusCode::ACCEPTED,
        Json(stop_dynos(
            &api.inner,
            &name,
            &wire::DynoSelector::default(),
            false,
            "Restarting",
        )?),
    ))
}

async fn restart_one(
    State(api): State<Api>,
    Path((name, dyno)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<wire::ActionResult>)> {
    Ok((
        StatusCode::ACCEPTED,
        Json(stop_dynos(
            &api.inner,
            &name,
            &selector(dyno),
            false,
            "Restarting",
        )?),
    ))
}

/// `GET /apps/{app}/dynos/{name or id}`.
async fn get_dyno(
    State(api): State<Api>,
    Path((name, dyno)): Path<(String, String)>,
) -> ApiResult<Json<wire::Dyno>> {
    let app = find_app(&api.inner, &name)?;
    let dynos = api.inner.store().read(|r| r.app_dynos(&app.id))?;
    dynos
        .iter()
        .filter(|d| d.desired != Desired::Stop)
        .find(|d| d.name() == dyno || d.id == dyno)
        .map(|d| Json(dyno_json(&api.inner, d)))
        .ok_or_else(|| ApiError::not_found(format!("no dyno {dyno:?} in {name}")))
}

/// The Platform API's `dyno-action stop`: a name with a dot is one dyno, else a type.
async fn stop_one(
    State(api): State<Api>,
    Path((name, dyno)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<wire::ActionResult>)> {
    let done = stop_dynos(&api.inner, &name, &selector(dyno), true, "Stopping")?;
    Ok((StatusCode::ACCEPTED, Json(done)))
}

/// The Platform API's formation restart: every dyno of the type.
async fn restart_type(
    State(api): State<Api>,
    Path((name, ptype)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<wire::ActionResult>)> {
    let done = stop_dynos(
        &api.inner,
        &name,
        &type_selector(ptype),
        false,
        "Restarting",
    )?;
    Ok((StatusCode::ACCEPTED, Json(done)))
}

async fn stop_type(
    State(api): State<Api>,
    Path((name, ptype)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<wire::ActionResult>)> {
    let done = stop_dynos(&api.inner, &name, &type_selector(ptype), true, "Stopping")?;
    Ok((StatusCode::ACCEPTED, Json(done)))
}

/// As in heroku: a name with a dot is one dyno (`web.1`), otherwise a process type.
fn selector(target: String) -> wire::DynoSelector {
    if target.contains('.') {
        wire::DynoSelector {
            dyno: Some(target),
            ..Default::default()
        }
    } else {
        type_selector(target)
    }
}

fn type_selector(process_type: String) -> wire::DynoSelector {
    wire::DynoSelector {
        process_type: Some(process_type),
        ..Default::default()
    }
}

/// `GET /account`: the presented token, as the Platform API's account.
async fn account(
    axum::Extension(p): axum::Extension<crate::auth::Principal>,
) -> Json<serde_json::Value> {
    // The same id an app owned by this name shows as its owner's.
    let id = derived_id("account", &p.name);
    Json(serde_json::json!({
        "id": id,
        "email": p.name,
        "name": p.name,
        "role": p.role.as_str(),
        "verified": true,
        "two_factor_authentication": false,
        "allow_tracking": false,
        "beta": false,
        "created_at": iso_secs(0),
        "updated_at": iso_secs(0),
        "suspended_at": null,
        "delinquent_at": null,
        "federated": false,
        "identity_provider": null,
        "last_login": null,
        "sms_number": null,
        "country_of_residence": null,
        "default_organization": null,
        "default_team": null,
        "eco_dynos_enabled": true,
        "mfa_enabled": false,
    }))
}

/// `GET /regions`: this platform's one region (`heroku regions`).
async fn regions() -> Json<serde_json::Value> {
    Json(serde_json::json!([{
        "id": derived_id("region", "us"),
        "name": "us",
        "description": "The hosts of this platform",
        "country": "",
        "locale": "",
        "private_capable": false,
        "provider": {"name": "self-hosted", "region": "us"},
        "created_at": iso_secs(0),
        "updated_at": iso_secs(0),
    }]))
}

/// `GET /stacks`: the one stack, `dyno` (`heroku stack`).
async fn stacks() -> Json<serde_json::Value> {
    Json(serde_json::json!([{
        "id": derived_id("stack", "dyno"),
        "name": "dyno",
        "state": "public",
        "default": true,
        "created_at": iso_secs(0),
        "updated_at": iso_secs(0),
    }]))
}

async fn empty_list() -> Json<Vec<serde_json::Value>> {
    Json(Vec::new())
}

async fn not_supported(req: Request) -> ApiError {
    let path = req.uri().path();
    let (feature, hint) = if path.contains("addon") {
        ("Add-ons are", "")
    } else if path.contains("pipeline") {
        ("Pipelines are", "")
    } else if path.starts_with("/teams") || path.starts_with("/organizations") {
        ("Teams are", "")
    } else if path.starts_with("/spaces") {
        ("Private spaces are", "")
    } else if path.contains("collaborators") {
        ("Collaborators are", "")
    } else if path.contains("buildpack") || path.contains("/builds") {
        (
            "Builds and buildpacks are",
            " Deploy a slug with `dyno deploy`.",
        )
    } else if path.contains("transfers") {
        ("App transfers are", "")
    } else if path.starts_with("/account/") || path.starts_with("/enterprise-accounts") {
        (
            "Heroku billing accounts are",
            " This platform's costs: `dyno billing` (GET /billing).",
        )
    } else if path.contains("webhooks") {
        ("App webhooks are", "")
    } else if path.contains("/acm") {
        ("Automated certificate management is", "")
    } else if path.starts_with("/oauth") {
        (
            "OAuth clients and authorizations are",
            " Make a token with `dyno tokens:create`.",
        )
    } else if path.starts_with("/review-apps") {
        ("Review apps are", "")
    } else {
        ("SSL endpoints are", "")
    };
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "not_supported",
        format!(
            "{feature} not supported by this platform ({} {path}).{hint}",
            req.method()
        ),
    )
}

async fn get_config(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> ApiResult<Json<BTreeMap<String, String>>> {
    let app = find_app(&api.inner, &name)?;
    Ok(Json(api.inner.store().read(|r| r.config(&app.id))?.0))
}

async fn patch_config(
    State(api): State<Api>,
    Path(name): Path<String>,
    who: Option<axum::Extension<crate::auth::Principal>>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<BTreeMap<String, String>>> {
    let patch: wire::ConfigPatch = body(b)?;
    let app = find_app(&api.inner, &name)?;
    if patch.is_empty() {
        return Err(ApiError::invalid("no config vars given"));
    }
    // Checked here too so an invalid patch is refused before any other work.
    ConfigVars::default()
        .apply(&patch)
        .map_err(ApiError::invalid)?;
    let set: Vec<&str> = patch
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k.as_str())
        .collect();
    let unset: Vec<&str> = patch
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k.as_str())
        .collect();
    let mut what = Vec::new();
    if !set.is_empty() {
        what.push(format!("Set {} config vars", set.join(", ")));
    }
    if !unset.is_empty() {
        what.push(format!("Remove {} config vars", unset.join(", ")));
    }
    let made_by = who.map(|w| w.0.name);
    let release = new_release(
        &api.inner,
        &app,
        None,
        None,
        Some(&patch),
        what.join("; "),
        made_by,
    )?;
    Ok(Json(release.config.0))
}

fn ndjson(rx: mpsc::Receiver<Bytes>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    resp
}

/// Most bytes of log lines in one chunk of a logs stream.
const LOG_CHUNK_BYTES: usize = 64 * 1024;

fn append_json_line<T: serde::Serialize>(buf: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(&mut *buf, v).expect("wire types serialize");
    buf.push(b'\n');
}

fn json_line<T: serde::Serialize>(v: &T) -> Bytes {
    let mut s = serde_json::to_vec(v).expect("wire types serialize");
    s.push(b'\n');
    Bytes::from(s)
}

/// Stops an attached one-off dyno whose client went away before it finished.
struct RunGuard {
    inner: Shared,
    key: (String, String),
    dyno_id: String,
    host: String,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if self
            .inner
            .runs
            .lock()
            .expect("runs lock")
            .remove(&self.key)
            .is_some()
        {
            let grace_ms = self.inner.config.stop_grace.as_millis() as u64;
            self.inner.send(
                &self.host,
                CoordinatorMsg::StopDyno {
                    dyno_id: self.dyno_id.clone(),
                    grace_ms,
                },
            );
        }
    }
}

/// Longest command a one-off dyno accepts.
pub const MAX_RUN_COMMAND_BYTES: usize = 64 * 1024;

/// An attached one-off's output and exit, and the guard that stops it when dropped.
type Attached = (RunGuard, mpsc::Receiver<RunEvent>);

/// Places and starts a one-off `run.N` dyno of the app's current release. Attached: its
/// output and exit come on the returned channel, and dropping the guard (the client went)
/// stops it; detached: its output goes to the app's logs only.
fn start_one_off(
    inner: &Shared,
    app: &AppRow,
    command: String,
    size: dyno_shared::Size,
    env: BTreeMap<String, String>,
    attached: bool,
) -> ApiResult<(DynoRow, Option<Attached>)> {
    if command.trim().is_empty() {
        return Err(ApiError::invalid("command must not be empty"));
    }
    if command.len() > MAX_RUN_COMMAND_BYTES {
        return Err(ApiError::invalid(format!(
            "command is longer than {MAX_RUN_COMMAND_BYTES} bytes"
        )));
    }
    for k in env.keys() {
        dyno_shared::config::validate_key(k).map_err(ApiError::invalid)?;
    }
    let name = &app.name;
    let now = now_ms();
    let placed = inner.store().transaction(|tx| {
        let Some(release) = tx.current_release(&app.id)?.filter(|r| r.slug.is_some()) else {
            return Ok(Err(ApiError::invalid(format!(
                "app {name} has no deployed slug yet: deploy it first"
            ))));
        };
        let dynos = tx.dynos()?;
        let hosts = inner.host_views(&tx.hosts()?, now);
        let Some(host) = crate::manager::place_one(&hosts, &dynos, &app.id, "run", size) else {
            return Ok(Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("no connected host has room for a {size} dyno"),
            )));
        };
        let in_use: HashSet<u32> = dynos
            .iter()
            .filter(|d| d.app_id == app.id && d.process_type == "run")
            .map(|d| d.idx)
            .collect();
        let idx = one_off_number(&in_use);
        let row = DynoRow::new(NewDyno {
            id: new_id("d-"),
            app,
            process_type: "run".into(),
            idx,
            release: release.version,
            host,
            size,
            command: command.clone(),
            one_off: true,
            now,
        });
        tx.insert_dyno(&row)?;
        Ok(Ok((row, release)))
    })?;
    let (row, release) = placed?;
    let mut spec = inner.spec_for(&row, &release, &Default::default());
    spec.env.extend(env);
    let key = (app.name.clone(), row.name());
    let ev_rx = attached.then(|| {
        let (ev_tx, ev_rx) = mpsc::channel::<RunEvent>(4096);
        inner
            .runs
            .lock()
            .expect("runs lock")
            .insert(key.clone(), ev_tx);
        ev_rx
    });
    let host = row.host.clone().expect("placed");
    inner.system_log(
        &app.name,
        &row.name(),
        format!("Starting process with command `{}` by api", row.command),
    );
    if !inner.send(&host, CoordinatorMsg::StartDyno(spec)) {
        inner.runs.lock().expect("runs lock").remove(&key);
        // Never started: drop its row so it neither shows in ps nor holds memory on the host.
        inner
            .store()
            .transaction(|tx| tx.delete_dyno(&row.id, row.created_at))?;
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("host {host} went away"),
        ));
    }
    let attached = ev_rx.map(|rx| {
        let guard = RunGuard {
            inner: inner.clone(),
            key,
            dyno_id: row.id.clone(),
            host,
        };
        (guard, rx)
    });
    Ok((row, attached))
}

/// A one-off's number, as Heroku's `run.4821`: random, so a name is not reused soon and
/// `logs --dyno run.N` shows that one-off's lines, not an earlier namesake's.
fn one_off_number(in_use: &HashSet<u32>) -> u32 {
    for _ in 0..64 {
        let r = crate::auth::random_hex(4)
            .ok()
            .and_then(|h| u32::from_str_radix(&h, 16).ok())
            .unwrap_or_else(|| now_ms() as u32);
        let n = 1000 + r % 9000;
        if !in_use.contains(&n) {
            return n;
        }
    }
    in_use.iter().max().map_or(1000, |m| m + 1)
}

/// `POST /apps/{app}/run`: a one-off whose output streams back as NDJSON `RunEvent`s (or,
/// `detached`, the started dyno at once).
async fn run(
    State(api): State<Api>,
    Path(name): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req: wire::RunRequest = body(b)?;
    let inner = api.inner.clone();
    let app = find_app(&inner, &name)?;
    let size = req.size.unwrap_or_default();
    let (row, attached) = start_one_off(&inner, &app, req.command, size, req.env, !req.detached)?;
    let Some((guard, mut ev_rx)) = attached else {
        // Its output goes to the app's logs; it runs until its command exits.
        return Ok((StatusCode::CREATED, Json(dyno_json(&inner, &row))).into_response());
    };
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(256);
    let mut stop = api.stop.clone();
    let dyno_name = row.name();
    tokio::spawn(async move {
        let _guard = guard;
        if out_tx
            .send(json_line(&RunEvent::Started { dyno: dyno_name }))
            .await
            .is_err()
        {
            return;
        }
        loop {
            tokio::select! {
                ev = ev_rx.recv() => {
                    let Some(ev) = ev else { break };
                    let last = matches!(ev, RunEvent::Exit { .. } | RunEvent::Error { .. });
                    if out_tx.send(json_line(&ev)).await.is_err() || last {
                        break;
                    }
                }
                _ = stop.changed() => {
                    let _ = out_tx.send(json_line(&RunEvent::Error { message: "coordinator is shutting down".into() })).await;
                    break;
                }
            }
        }
    });
    Ok(ndjson(out_rx))
}

/// `POST /apps/{app}/dynos`: the Platform API's one-off (`heroku run`, `run:detached`).
/// Attached, the answer's `attach_url` is where the client gets the output (`rendezvous`).
async fn create_dyno(
    State(api): State<Api>,
    Path(name): Path<String>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<wire::Dyno>)> {
    let req: wire::DynoCreate = body(b)?;
    let mut env = BTreeMap::new();
    for (k, v) in req.env {
        let v = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => {
                return Err(ApiError::invalid(format!(
                    "env {k}: expected a string or a number, got {other}"
                )));
            }
        };
        env.insert(k, v);
    }
    let size = match req.size.as_deref() {
        Some(s) => s.parse().map_err(ApiError::invalid)?,
        None => Default::default(),
    };
    let inner = api.inner.clone();
    let app = find_app(&inner, &name)?;
    let attach = req.attach.unwrap_or(false);
    // Made before the dyno starts, so a failure here starts nothing.
    let secret = if attach {
        Some(crate::auth::random_hex(32).map_err(|e| ApiError::internal(e.to_string()))?)
    } else {
        None
    };
    let (row, attached) = start_one_off(&inner, &app, req.command, size, env, attach)?;
    let mut out = dyno_json(&inner, &row);
    if let (Some(secret), Some((guard, events))) = (secret, attached) {
        inner.rendezvous.insert(
            secret.clone(),
            crate::rendezvous::Pending {
                guard: Box::new(guard),
                events,
            },
        );
        let (sessions, app_name, dyno) = (inner.rendezvous.clone(), app.name.clone(), row.name());
        let late = inner.clone();
        let waiting = secret.clone();
        let within = inner.config.attach_within;
        tokio::spawn(async move {
            tokio::time::sleep(within).await;
            if let Some(p) = sessions.take(&waiting) {
                late.system_log(
                    &app_name,
                    &dyno,
                    "Error R13 (Attach error) -> Failed to attach to process",
                );
                drop(p);
            }
        });
        let host = request_host(&headers).unwrap_or("127.0.0.1");
        out.attach_url = Some(format!(
            "rendezvous://{host}:{}/{secret}",
            inner.rendezvous.port()
        ));
    }
    Ok((StatusCode::CREATED, Json(out)))
}

/// The request's `Host` without its port (IPv6 brackets kept).
fn request_host(headers: &HeaderMap) -> Option<&str> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let end = if host.starts_with('[') {
        host.find(']').map_or(host.len(), |i| i + 1)
    } else {
        host.rfind(':').unwrap_or(host.len())
    };
    Some(&host[..end]).filter(|h| !h.is_empty())
}

#[derive(Deserialize)]
struct LogsQuery {
    lines: Option<usize>,
    #[serde(default)]
    tail: bool,
    dyno: Option<String>,
    source: Option<String>,
    grep: Option<String>,
}

async fn logs(
    State(api): State<Api>,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    find_app(&api.inner, &name)?;
    let n = q.lines.unwrap_or(100);
    if n > crate::loghub::RING_LINES {
        return Err(ApiError::invalid(format!(
            "lines must be at most {}",
            crate::loghub::RING_LINES
        )));
    }
    let source = match q.source.as_deref() {
        None => None,
        Some(s) => Some(LogSource::parse(s).ok_or_else(|| {
            ApiError::invalid(format!(
                "unknown log source {s:?}: expected app, system or router"
            ))
        })?),
    };
    if let Some(d) = &q.dyno
        && d.parse::<DynoName>().is_err()
        && d.parse::<ProcessType>().is_err()
    {
        return Err(ApiError::invalid(format!(
            "invalid dyno filter {d:?}: expected a dyno (web.1) or a process type (web)"
        )));
    }
    let grep = match q.grep.as_deref() {
        None | Some("") => None,
        Some(p) => Some(
            crate::loghub::compile_grep(p)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e))?,
        ),
    };
    let filter = crate::loghub::LogFilter {
        platform_only: false,
        dyno: q.dyno,
        source,
        grep,
    };
    let (history, mut live) = api.inner.logs.subscribe(&name, n, &filter);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let stop = api.stop.clone();
    let tail = q.tail;
    tokio::spawn(async move {
        // Lines go out in chunks of whatever is waiting (up to LOG_CHUNK_BYTES): one write per
        // line cannot keep up with a flood, one per chunk can.
        let mut chunk: Vec<u8> = Vec::with_capacity(LOG_CHUNK_BYTES);
        for line in history {
            append_json_line(&mut chunk, &line);
            if chunk.len() >= LOG_CHUNK_BYTES
                && tx
                    .send(Bytes::from(std::mem::take(&mut chunk)))
                    .await
                    .is_err()
            {
                return;
            }
        }
        if !chunk.is_empty()
            && tx
                .send(Bytes::from(std::mem::take(&mut chunk)))
                .await
                .is_err()
        {
            return;
        }
        if !tail {
            return;
        }
        let lagged = |n: u64| LogLine {
            at: dyno_shared::time::now_micros(),
            app: name.clone(),
            source: LogSource::System,
            process: "logplex".into(),
            message: format!(
                "Error L10 (output buffer overflow) -> this tail fell behind and lost {n} lines"
            ),
        };
        use tokio::sync::broadcast::error::{RecvError, TryRecvError};
        let stopped = wait_for(stop);
        tokio::pin!(stopped);
        loop {
            let first = tokio::select! {
                r = live.recv() => r,
                _ = &mut stopped => return,
                _ = tx.closed() => return,
            };
            match first {
                Ok(l) if filter.matches(&l) => append_json_line(&mut chunk, &l),
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => append_json_line(&mut chunk, &lagged(n)),
                Err(RecvError::Closed) => return,
            }
            let mut closed = false;
            while chunk.len() < LOG_CHUNK_BYTES {
                match live.try_recv() {
                    Ok(l) if filter.matches(&l) => append_json_line(&mut chunk, &l),
                    Ok(_) => {}
                    Err(TryRecvError::Lagged(n)) => append_json_line(&mut chunk, &lagged(n)),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => {
                        closed = true;
                        break;
                    }
                }
            }
            if !chunk.is_empty()
                && tx
                    .send(Bytes::from(std::mem::take(&mut chunk)))
                    .await
                    .is_err()
            {
                return;
            }
            if closed {
                return;
            }
        }
    });
    Ok(ndjson(rx))
}

/// A log session: what `GET /log-stream/{secret}` streams, for clients that cannot send a
/// bearer token (the heroku CLI's EventSource).
pub struct LogSession {
    app: String,
    filter: crate::loghub::LogFilter,
    lines: usize,
    tail: bool,
    created: std::time::Instant,
    connected: bool,
}

/// An unconnected session expires after this; a connected one (it reconnects while tailing)
/// an hour after it was made.
const LOG_SESSION_UNUSED: Duration = Duration::from_secs(5 * 60);
const LOG_SESSION_MAX: Duration = Duration::from_secs(3600);

#[derive(Deserialize, Default)]
struct LogSessionCreate {
    dyno: Option<String>,
    source: Option<String>,
    lines: Option<usize>,
    #[serde(default)]
    tail: bool,
}

async fn create_log_session(
    State(api): State<Api>,
    Path(name): Path<String>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let req: LogSessionCreate = body_or_default(b)?;
    find_app(&api.inner, &name)?;
    let (source, platform_only) = match req.source.as_deref() {
        None => (None, false),
        Some("heroku") => (None, true),
        Some(s) => (
            Some(LogSource::parse(s).ok_or_else(|| {
                ApiError::invalid(format!(
                    "unknown log source {s:?}: expected app, heroku, system or router"
                ))
            })?),
            false,
        ),
    };
    if let Some(d) = &req.dyno
        && d.parse::<DynoName>().is_err()
        && d.parse::<ProcessType>().is_err()
        && !matches!(d.as_str(), "router" | "api" | "manager")
    {
        return Err(ApiError::invalid(format!(
            "invalid dyno filter {d:?}: expected a dyno (web.1) or a process type (web)"
        )));
    }
    let secret = crate::auth::random_hex(32)
        .map_err(|e| ApiError::internal(format!("no randomness for a log session: {e}")))?;
    let session = LogSession {
        app: name.clone(),
        filter: crate::loghub::LogFilter {
            dyno: req.dyno,
            source,
            platform_only,
            grep: None,
        },
        // Heroku caps the history rather than refusing a bigger one.
        lines: req.lines.unwrap_or(100).min(crate::loghub::RING_LINES),
        tail: req.tail,
        created: std::time::Instant::now(),
        connected: false,
    };
    {
        let mut sessions = api.inner.log_sessions.lock().expect("log sessions lock");
        sessions.retain(|_, s| s.live());
        if sessions.len() >= 10_000 {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "too many open log sessions; try again shortly",
            ));
        }
        sessions.insert(secret.clone(), session);
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let scheme = if api.inner.api_pin().is_some() {
        "https"
    } else {
        "http"
    };
    let now = iso_secs(now_ms() / 1000);
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "id": &secret[..32],
            "logplex_url": format!("{scheme}://{host}/log-stream/{secret}"),
            "created_at": now,
            "updated_at": now,
        })),
    ))
}

impl LogSession {
    fn live(&self) -> bool {
        let age = self.created.elapsed();
        if self.connected {
            age < LOG_SESSION_MAX
        } else {
            age < LOG_SESSION_UNUSED
        }
    }
}

/// Server-sent events of a log session: `id:` the line's time (µs), `data:` the line as
/// Heroku renders it; history, then (tailing) live lines and a keep-alive comment every 15 s.
async fn log_stream(
    State(api): State<Api>,
    Path(secret): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (app, filter, lines, tail) = {
        let mut sessions = api.inner.log_sessions.lock().expect("log sessions lock");
        match sessions.get_mut(&secret).filter(|s| s.live()) {
            Some(s) => {
                s.connected = true;
                (s.app.clone(), s.filter.clone(), s.lines, s.tail)
            }
            None => return Err(ApiError::not_found("no such log session (or it expired)")),
        }
    };
    // A reconnecting client says what it saw last; it gets only what came after.
    let seen: Option<i64> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let (history, mut live) = api.inner.logs.subscribe(&app, lines, &filter);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let stop = api.stop.clone();
    let event = |l: &LogLine| {
        let mut s = format!("id: {}\n", l.at);
        for part in l.render().split('\n') {
            s.push_str("data: ");
            s.push_str(part);
            s.push('\n');
        }
        s.push('\n');
        Bytes::from(s)
    };
    tokio::spawn(async move {
        for line in history.iter().filter(|l| seen.is_none_or(|s| l.at > s)) {
            if tx.send(event(line)).await.is_err() {
                return;
            }
        }
        if !tail {
            return;
        }
        let stopped = wait_for(stop);
        tokio::pin!(stopped);
        loop {
            let next = tokio::select! {
                r = live.recv() => r,
                () = tokio::time::sleep(Duration::from_secs(15)) => {
                    if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                        return;
                    }
                    continue;
                }
                _ = &mut stopped => return,
                _ = tx.closed() => return,
            };
            match next {
                Ok(l) if filter.matches(&l) => {
                    if tx.send(event(&l)).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let mut resp = ndjson(rx);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

fn drain_json(d: &DrainRow) -> wire::LogDrain {
    wire::LogDrain {
        id: d.id.clone(),
        url: d.url.clone(),
        token: d.token.clone(),
        created_at: iso_secs(d.created_at / 1000),
        updated_at: iso_secs(d.updated_at / 1000),
        addon: None,
    }
}

async fn list_drains(
    State(api): State<Api>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let app = find_app(&api.inner, &name)?;
    let rows = api.inner.store().read(|r| r.drains(&app.id))?;
    let out: Vec<wire::LogDrain> = rows.iter().map(drain_json).collect();
    paged(
        out,
        &headers,
        &["id", "url"],
        |d, f| match f {
            "id" => d.id.clone(),
            _ => d.url.clone(),
        },
        text_bound,
    )
}

/// `d.` and a random UUID (version 4 layout), as Heroku's drain tokens look.
fn drain_token() -> ApiResult<String> {
    let hex = crate::auth::random_hex(24).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("failed to make a drain token: {e}"),
        )
    })?;
    Ok(format!(
        "d.{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    ))
}

async fn create_drain(
    State(api): State<Api>,
    Path(name): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<wire::LogDrain>)> {
    let req: wire::CreateLogDrain = body(b)?;
    let url: DrainUrl = req.url.parse().map_err(ApiError::invalid)?;
    let inner = &api.inner;
    let app = find_app(inner, &name)?;
    let now = now_ms();
    let row = DrainRow {
        id: new_id("ld-"),
        app_id: app.id.clone(),
        app: app.name.clone(),
        url: req.url.clone(),
        token: drain_token()?,
        created_at: now,
        updated_at: now,
    };
    let added = inner.store().transaction(|tx| {
        if tx.drains(&app.id)?.iter().any(|d| d.url == row.url) {
            return Ok(false);
        }
        tx.insert_drain(&row)?;
        Ok(true)
    })?;
    if !added {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("app {name} already has a drain to {}", row.url),
        ));
    }
    inner.drains.start(DrainSpec {
        id: row.id.clone(),
        app: app.name.clone(),
        url,
        token: row.token.clone(),
    });
    Ok((StatusCode::CREATED, Json(drain_json(&row))))
}

/// `DELETE /apps/{app}/log-drains/{id, url or token}`.
async fn delete_drain(
    State(api): State<Api>,
    Path((name, key)): Path<(String, String)>,
) -> ApiResult<Json<wire::LogDrain>> {
    let inner = &api.inner;
    let app = find_app(inner, &name)?;
    let removed = inner.store().transaction(|tx| {
        let found = tx
            .drains(&app.id)?
            .into_iter()
            .find(|d| d.id == key || d.url == key || d.token == key);
        if let Some(d) = &found {
            tx.delete_drain(&d.id)?;
        }
        Ok(found)
    })?;
    let Some(row) = removed else {
        return Err(ApiError::not_found(format!(
            "app {name} has no drain {key:?}"
        )));
    };
    inner.drains.stop(&row.id);
    Ok(Json(drain_json(&row)))
}

/// What `labs` offers.
struct FeatureInfo {
    name: &'static str,
    display_name: &'static str,
    description: &'static str,
    doc_url: &'static str,
    state: &'static str,
}

/// Heroku's name for start-before-stop deploys of web dynos.
pub const PREBOOT: &str = "preboot";

const FEATURES: &[FeatureInfo] = &[
    FeatureInfo {
        name: crate::metrics::FEATURE,
        display_name: "Runtime metrics",
        description: "Log each dyno's load and memory use every 20 seconds",
        doc_url: "https://devcenter.heroku.com/articles/log-runtime-metrics",
        state: "public",
    },
    FeatureInfo {
        name: PREBOOT,
        display_name: "Preboot",
        description: "Start new web dynos and route to them before the old ones get SIGTERM",
        doc_url: "https://devcenter.heroku.com/articles/preboot",
        state: "public",
    },
];

fn feature_info(name: &str) -> ApiResult<&'static FeatureInfo> {
    let name = if name == crate::metrics::FEATURE_ALIAS {
        crate::metrics::FEATURE
    } else {
        name
    };
    FEATURES.iter().find(|f| f.name == name).ok_or_else(|| {
        let known: Vec<&str> = FEATURES.iter().map(|f| f.name).collect();
        ApiError::not_found(format!(
            "no feature named {name:?}; available: {}",
            known.join(", ")
        ))
    })
}

fn feature_json(app: &AppRow, info: &FeatureInfo, rows: &[FeatureRow]) -> wire::AppFeature {
    let row = rows.iter().find(|r| r.name == info.name);
    let (created, updated) = row.map_or((app.created_at, app.created_at), |r| {
        (r.created_at, r.updated_at)
    });
    wire::AppFeature {
        id: format!("feature-{}", info.name),
        name: info.name.to_string(),
        display_name: info.display_name.to_string(),
        description: info.description.to_string(),
        doc_url: info.doc_url.to_string(),
        enabled: row.is_some_and(|r| r.enabled),
        state: info.state.to_string(),
        created_at: iso_secs(created / 1000),
        updated_at: iso_secs(updated / 1000),
    }
}

async fn list_features(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<wire::AppFeature>>> {
    let app = find_app(&api.inner, &name)?;
    let rows = api.inner.store().read(|r| r.features(&app.id))?;
    Ok(Json(
        FEATURES
            .iter()
            .map(|f| feature_json(&app, f, &rows))
            .collect(),
    ))
}

async fn get_feature(
    State(api): State<Api>,
    Path((name, feature)): Path<(String, String)>,
) -> ApiResult<Json<wire::AppFeature>> {
    let app = find_app(&api.inner, &name)?;
    let info = feature_info(&feature)?;
    let rows = api.inner.store().read(|r| r.features(&app.id))?;
    Ok(Json(feature_json(&app, info, &rows)))
}

async fn patch_feature(
    State(api): State<Api>,
    Path((name, feature)): Path<(String, String)>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<wire::AppFeature>> {
    let req: wire::FeatureUpdate = body(b)?;
    let app = find_app(&api.inner, &name)?;
    let info = feature_info(&feature)?;
    let now = now_ms();
    let rows = api.inner.store().transaction(|tx| {
        tx.set_feature(&app.id, info.name, req.enabled, now)?;
        tx.features(&app.id)
    })?;
    Ok(Json(feature_json(&app, info, &rows)))
}

fn token_json(t: &crate::store::TokenRow) -> wire::Token {
    wire::Token {
        name: t.name.clone(),
        role: t.role.clone(),
        host: t.host.clone(),
        created_at: iso_secs(t.created_at / 1000),
        revoked_at: t.revoked_at.map(|r| iso_secs(r / 1000)),
    }
}

async fn list_tokens(State(api): State<Api>) -> ApiResult<Json<Vec<wire::Token>>> {
    let tokens = api.inner.store().read(|r| r.tokens())?;
    Ok(Json(tokens.iter().map(token_json).collect()))
}

async fn create_token(
    State(api): State<Api>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<wire::CreatedToken>)> {
    use crate::auth::Role;
    let req: wire::CreateToken = body(b)?;
    if !crate::auth::valid_token_name(&req.name) || req.name == "root" || req.name == "-" {
        return Err(ApiError::invalid(format!(
            "invalid token name {:?}: use 1-64 letters, digits, '-', '_', '.' or '@' (not root)",
            req.name
        )));
    }
    let role = match Role::parse(&req.role) {
        Some(r @ (Role::Operate | Role::Read | Role::Join)) => r,
        _ => {
            return Err(ApiError::invalid(format!(
                "invalid role {:?}: expected operate, read or join (agents get theirs by joining)",
                req.role
            )));
        }
    };
    let secret = crate::auth::new_secret(role)
        .map_err(|e| ApiError::internal(format!("no randomness for a token: {e}")))?;
    let row = crate::store::TokenRow {
        name: req.name.clone(),
        role: role.as_str().into(),
        hash: crate::auth::hash(&secret),
        host: None,
        created_at: now_ms(),
        revoked_at: None,
    };
    if !api.inner.store().transaction(|tx| tx.insert_token(&row))? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "a token named {:?} exists (revoked ones keep their names)",
                req.name
            ),
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(wire::CreatedToken {
            token: token_json(&row),
            secret,
            fingerprint: api.inner.api_pin().map(|p| p.to_string()),
        }),
    ))
}

async fn whoami(axum::Extension(p): axum::Extension<crate::auth::Principal>) -> Json<wire::Whoami> {
    Json(wire::Whoami {
        name: p.name,
        role: p.role.as_str().into(),
    })
}

async fn revoke_token(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> ApiResult<Json<wire::Token>> {
    let now = now_ms();
    let row = api.inner.store().transaction(|tx| {
        if !tx.revoke_token(&name, now)? {
            return Ok(None);
        }
        Ok(tx.tokens()?.into_iter().find(|t| t.name == name))
    })?;
    api.inner.forget_tokens();
    match row {
        Some(t) => {
            tracing::warn!(token = %t.name, "token revoked");
            Ok(Json(token_json(&t)))
        }
        None => Err(ApiError::not_found(format!("no live token named {name:?}"))),
    }
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<usize>,
}

async fn list_audit(
    State(api): State<Api>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Vec<wire::AuditEntry>>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::invalid("limit must be 1 to 10000"));
    }
    let rows = api.inner.audit.lock().expect("audit lock").newest(limit)?;
    Ok(Json(
        rows.into_iter()
            .map(|a| wire::AuditEntry {
                at: dyno_shared::time::rfc3339_micros(a.at * 1000),
                token: a.token,
                method: a.method,
                path: a.path,
                status: a.status,
                address: a.address,
            })
            .collect(),
    ))
}

/// `hosts:remove`: revoke the host's credentials and forget it; its dynos start elsewhere.
async fn remove_host(
    State(api): State<Api>,
    Path(host): Path<String>,
) -> ApiResult<Json<Vec<wire::Host>>> {
    if !api.inner.remove_host(&host)? {
        return Err(ApiError::not_found(format!("no host named {host:?}")));
    }
    Ok(Json(host_list(&api.inner)?))
}

async fn hosts(State(api): State<Api>) -> ApiResult<Json<Vec<wire::Host>>> {
    Ok(Json(host_list(&api.inner)?))
}

fn host_list(inner: &Inner) -> ApiResult<Vec<wire::Host>> {
    let (hosts, dynos) = inner.store().read(|r| Ok((r.hosts()?, r.dynos()?)))?;
    let live = inner.liveness(&hosts, now_ms());
    let agents = inner.agents.lock().expect("agents lock");
    let out = hosts
        .into_iter()
        .map(|h| {
            let mine: Vec<&DynoRow> = dynos
                .iter()
                .filter(|d| d.host.as_deref() == Some(h.name.as_str()) && d.desired == Desired::Run)
                .collect();
            let conn = agents.get(&h.name);
            wire::Host {
                id: h.name.clone(),
                address: h.address.clone(),
                state: live
                    .get(&h.name)
                    .map_or("lost", crate::Liveness::as_str)
                    .into(),
                isolation: h.isolation.clone(),
                memory_mb: h.memory_mb,
                allocated_mb: mine.iter().map(|d| d.size.memory_mb()).sum(),
                cpus: h.cpus,
                load_1m: conn.and_then(|c| c.load_1m),
                dynos: mine.len() as u32,
                last_heartbeat: Some(iso_secs(
                    conn.map_or(h.last_seen, |c| c.last_heartbeat) / 1000,
                )),
                agent_version: h.agent_version.clone(),
                drained: h.drained,
                labels: h.labels,
                name: h.name,
            }
        })
        .collect();
    Ok(out)
}

/// A custom domain: lowercase letters, digits, `-` and dots, optionally `*.` first; no ports.
fn valid_hostname(h: &str) -> bool {
    let rest = h.strip_prefix("*.").unwrap_or(h);
    (1..=253).contains(&rest.len())
        && rest.contains('.')
        && rest.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        })
}

/// The app's own host name (`kind: heroku`) and its custom domains, by host name.
fn app_domains(inner: &Inner, app: &AppRow) -> ApiResult<Vec<wire::Domain>> {
    let own = format!("{}.{}", app.name, inner.config.domain);
    let custom = inner.store().read(|r| r.app_domains(&app.id))?;
    let domain = |hostname: String, custom: bool, at: i64| wire::Domain {
        id: derived_id("domain", &hostname),
        kind: if custom { "custom" } else { "heroku" }.into(),
        cname: custom.then(|| own.clone()),
        status: "none".into(),
        acm_status: None,
        acm_status_reason: None,
        sni_endpoint: None,
        app: app_ref(app),
        created_at: iso_secs(at / 1000),
        updated_at: iso_secs(at / 1000),
        hostname,
    };
    let mut out = vec![domain(own.clone(), false, app.created_at)];
    out.extend(custom.into_iter().map(|(h, at)| domain(h, true, at)));
    Ok(out)
}

/// `GET /apps/{app}/domains`, with `Range: id ..` or `hostname ..` pages (both by host name).
async fn list_domains(
    State(api): State<Api>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let app = find_app(&api.inner, &name)?;
    let all = app_domains(&api.inner, &app)?;
    // Both page by host name: the CLI asks for `id ..` and only needs one page to fit.
    paged(
        all,
        &headers,
        &["id", "hostname"],
        |d, _| d.hostname.clone(),
        text_bound,
    )
}

/// A domain of the app by id or host name.
fn find_domain(inner: &Inner, name: &str, key: &str) -> ApiResult<(AppRow, wire::Domain)> {
    let app = find_app(inner, name)?;
    let key = key.to_ascii_lowercase();
    app_domains(inner, &app)?
        .into_iter()
        .find(|d| d.id == key || d.hostname == key)
        .map(|d| (app, d))
        .ok_or_else(|| ApiError::not_found(format!("app {name} has no domain {key}")))
}

async fn get_domain(
    State(api): State<Api>,
    Path((name, key)): Path<(String, String)>,
) -> ApiResult<Json<wire::Domain>> {
    Ok(Json(find_domain(&api.inner, &name, &key)?.1))
}

/// `POST /apps/{app}/domains` `{"hostname": "www.example.com"}`: the router sends requests for
/// that Host to the app.
async fn add_domain(
    State(api): State<Api>,
    Path(name): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<wire::Domain>)> {
    let req: wire::DomainCreate = body(b)?;
    if req.sni_endpoint.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_supported",
            "SNI endpoints are not supported by this platform: give sni_endpoint null",
        ));
    }
    let hostname = req.hostname.to_ascii_lowercase();
    if !valid_hostname(&hostname) {
        return Err(ApiError::invalid(format!(
            "invalid hostname {:?}: expected a domain name such as www.example.com or *.example.com",
            req.hostname
        )));
    }
    let inner = &api.inner;
    let own = &inner.config.domain;
    if hostname == *own || hostname.ends_with(&format!(".{own}")) {
        return Err(ApiError::invalid(format!(
            "{hostname} is under the router's own domain {own}, where APP.{own} names app APP: \
             add a domain outside it"
        )));
    }
    let app = find_app(inner, &name)?;
    let added = inner
        .store()
        .transaction(|tx| tx.add_domain(&hostname, &app.id, now_ms()))?;
    if !added {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("{hostname} already routes to an app"),
        ));
    }
    inner.refresh_routes()?;
    let (_, domain) = find_domain(inner, &name, &hostname)?;
    Ok((StatusCode::CREATED, Json(domain)))
}

/// `PATCH /apps/{app}/domains/{domain}`: only `sni_endpoint: null` (no SNI endpoints here).
async fn patch_domain(
    State(api): State<Api>,
    Path((name, key)): Path<(String, String)>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<wire::Domain>> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct DomainUpdate {
        sni_endpoint: Option<serde_json::Value>,
    }
    let req: DomainUpdate = body(b)?;
    if req.sni_endpoint.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_supported",
            "SNI endpoints are not supported by this platform: give sni_endpoint null",
        ));
    }
    Ok(Json(find_domain(&api.inner, &name, &key)?.1))
}

/// `DELETE /apps/{app}/domains/{id_or_hostname}`; the app's own host name stays.
async fn remove_domain(
    State(api): State<Api>,
    Path((name, key)): Path<(String, String)>,
) -> ApiResult<Json<wire::Domain>> {
    let inner = &api.inner;
    let (app, domain) = find_domain(inner, &name, &key)?;
    if domain.kind != "custom" {
        return Err(ApiError::invalid(format!(
            "{} is the app's own host name and cannot be removed",
            domain.hostname
        )));
    }
    if !inner
        .store()
        .transaction(|tx| tx.remove_domain(&domain.hostname, &app.id))?
    {
        return Err(ApiError::not_found(format!(
            "app {name} has no domain {}",
            domain.hostname
        )));
    }
    inner.refresh_routes()?;
    Ok(Json(domain))
}

async fn get_concurrency(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> ApiResult<Json<wire::Concurrency>> {
    let app = find_app(&api.inner, &name)?;
    let limit = api
        .inner
        .store()
        .read(|r| r.concurrency())?
        .get(&app.id)
        .copied();
    Ok(Json(wire::Concurrency { web: limit }))
}

/// `PUT /apps/{app}/concurrency` `{"web": 1}` (`null`: no limit): requests a web dyno takes at
/// once; more wait at the router, in order.
async fn set_concurrency(
    State(api): State<Api>,
    Path(name): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<wire::Concurrency>> {
    let req: wire::Concurrency = body(b)?;
    if req.web.is_some_and(|n| !(1..=10_000).contains(&n)) {
        return Err(ApiError::invalid(
            "a web dyno's concurrency is 1 to 10000 requests, or null for no limit",
        ));
    }
    let inner = &api.inner;
    let app = find_app(inner, &name)?;
    inner.store().transaction(|tx| {
        tx.set_concurrency(&app.id, req.web)?;
        let what = req.web.map_or("no limit".to_string(), |n| n.to_string());
        tx.insert_event(
            &app.id,
            now_ms(),
            "api",
            &format!("Web concurrency: {what}"),
        )
    })?;
    inner.refresh_routes()?;
    Ok(Json(req))
}

#[derive(Deserialize)]
struct EventsQuery {
    limit: Option<usize>,
}

/// The app's newest events (state changes, releases, scaling, moves), oldest first.
/// NDJSON of `StreamItem`s as things change, a ping every 15 s, until the client hangs up.
async fn change_stream(State(api): State<Api>) -> ApiResult<Response> {
    let mut rx = api.inner.stream.subscribe();
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(64);
    let mut stop = api.stop.clone();
    tokio::spawn(async move {
        loop {
            let item = tokio::select! {
                r = rx.recv() => match r {
                    Ok(item) => item,
                    // Fell behind: the client refetches everything it shows.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => wire::StreamItem::Apps,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                () = tokio::time::sleep(Duration::from_secs(15)) => wire::StreamItem::Ping,
                _ = stop.changed() => break,
            };
            if out_tx.send(json_line(&item)).await.is_err() {
                break;
            }
        }
    });
    Ok(ndjson(out_rx))
}

async fn get_pricing(State(api): State<Api>) -> ApiResult<Json<wire::Pricing>> {
    let history = api.inner.store().read(|r| r.pricing_history())?;
    let from = history.last().map_or(0, |(at, _)| *at);
    Ok(Json(api.inner.pricing().to_api(from)))
}

#[derive(Deserialize)]
struct BillingQuery {
    month: Option<String>,
    app: Option<String>,
}

/// Usage and cost of a month (default: this one), per app, process type and size.
async fn get_billing(
    State(api): State<Api>,
    Query(q): Query<BillingQuery>,
) -> ApiResult<Json<wire::BillingReport>> {
    use crate::billing::{FormationNow, Month, PricingVersion, bill};
    let now = now_ms();
    let month = match &q.month {
        Some(m) => Month::parse(m).map_err(ApiError::invalid)?,
        None => Month::containing(now),
    };
    let (intervals, history, formation, known) = api.inner.store().read(|r| {
        let mut formation = Vec::new();
        let mut known = HashSet::new();
        for app in r.apps()? {
            known.insert(app.name.clone());
            if r.current_release(&app.id)?.is_none() {
                continue;
            }
            for (ptype, e) in r.formation(&app.id)?.entries {
                formation.push(FormationNow {
                    app_id: app.id.clone(),
                    app: app.name.clone(),
                    owner: app.owner.clone(),
                    process_type: ptype.to_string(),
                    size: e.size,
                    quantity: e.quantity,
                });
            }
        }
        Ok((
            r.usage_between(month.start_ms(), month.end_ms(), false)?,
            r.pricing_history()?,
            formation,
            known,
        ))
    })?;
    if let Some(a) = &q.app
        && !known.contains(a)
        && !intervals.iter().any(|i| &i.app == a)
    {
        return Err(ApiError::not_found(format!(
            "no app named {a:?} (and no usage by one in {month})"
        )));
    }
    let mut versions = Vec::new();
    for (from_ms, spec) in history {
        match serde_json::from_str(&spec) {
            Ok(table) => versions.push(PricingVersion { from_ms, table }),
            Err(e) => tracing::error!("a recorded price table does not parse, skipped: {e}"),
        }
    }
    if versions.is_empty() {
        versions.push(PricingVersion {
            from_ms: 0,
            table: api.inner.pricing(),
        });
    }
    Ok(Json(bill(
        month,
        now,
        &intervals,
        &versions,
        &formation,
        q.app.as_deref(),
    )))
}

async fn list_events(
    State(api): State<Api>,
    Path(name): Path<String>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<Vec<wire::Event>>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=crate::store::EVENTS_PER_APP).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be 1 to {}",
            crate::store::EVENTS_PER_APP
        )));
    }
    let app = find_app(&api.inner, &name)?;
    let events = api.inner.store().read(|r| r.events(&app.id, limit))?;
    Ok(Json(
        events
            .into_iter()
            .map(|(at, dyno, message)| wire::Event {
                at: dyno_shared::time::rfc3339_micros(at * 1000),
                dyno,
                message,
            })
            .collect(),
    ))
}

/// `{"web": "disk=ssd"}`: the host label each process type requires.
async fn list_requirements(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> ApiResult<Json<BTreeMap<String, String>>> {
    let app = find_app(&api.inner, &name)?;
    let all = api.inner.store().read(|r| r.requirements())?;
    Ok(Json(
        all.into_iter()
            .filter(|((a, _), _)| *a == app.id)
            .map(|((_, t), (k, v))| (t, format!("{k}={v}")))
            .collect(),
    ))
}

/// `PUT /apps/{app}/requirements/{type}` `{"label":"disk=ssd"}`: the type's dynos run only on
/// hosts with that label; those elsewhere move, each replacement up before the old one stops.
async fn set_requirement(
    State(api): State<Api>,
    Path((name, ptype)): Path<(String, String)>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<BTreeMap<String, String>>> {
    let req: wire::Requirement = body(b)?;
    let t: ProcessType = ptype.parse().map_err(ApiError::invalid)?;
    let (k, v) = dyno_shared::protocol::parse_label(&req.label).map_err(ApiError::invalid)?;
    let app = find_app(&api.inner, &name)?;
    api.inner
        .store()
        .transaction(|tx| tx.set_requirement(&app.id, t.as_str(), &k, &v))?;
    api.inner.system_log(
        &app.name,
        "api",
        format!("{t} dynos now run only on hosts labelled {k}={v}"),
    );
    api.inner.wake();
    list_requirements(State(api), Path(name)).await
}

async fn delete_requirement(
    State(api): State<Api>,
    Path((name, ptype)): Path<(String, String)>,
) -> ApiResult<Json<BTreeMap<String, String>>> {
    let app = find_app(&api.inner, &name)?;
    if !api
        .inner
        .store()
        .transaction(|tx| tx.delete_requirement(&app.id, &ptype))?
    {
        return Err(ApiError::not_found(format!(
            "app {name} has no requirement for {ptype}"
        )));
    }
    api.inner.wake();
    list_requirements(State(api), Path(name)).await
}

fn check_json(process_type: &str, c: &HealthCheck, default: bool) -> wire::Check {
    wire::Check {
        process_type: process_type.to_string(),
        kind: match (&c.path, &c.file) {
            (Some(_), _) => "http",
            (None, Some(_)) => "file",
            (None, None) => "tcp",
        }
        .to_string(),
        path: c.path.clone(),
        file: c.file.clone(),
        interval_secs: c.interval_ms as f64 / 1000.0,
        timeout_secs: c.timeout_ms as f64 / 1000.0,
        failures: c.failures,
        default,
    }
}

/// The app's checks: the configured ones, and the default `$PORT` check of a web type without one.
async fn list_checks(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<wire::Check>>> {
    let app = find_app(&api.inner, &name)?;
    let (checks, release) = api
        .inner
        .store()
        .read(|r| Ok((r.checks()?, r.current_release(&app.id)?)))?;
    let mut out: Vec<wire::Check> = checks
        .iter()
        .filter(|((a, _), _)| *a == app.id)
        .map(|((_, t), c)| check_json(t, c, false))
        .collect();
    let has_web = release.is_some_and(|r| r.procfile.processes.keys().any(|t| t.is_web()));
    if has_web && !out.iter().any(|c| c.process_type == "web") {
        out.push(check_json("web", &HealthCheck::default_web(), true));
    }
    out.sort_by(|a, b| a.process_type.cmp(&b.process_type));
    Ok(Json(out))
}

/// `PUT /apps/{app}/checks/{type}`: applies to the type's dynos as they (re)start.
async fn set_check(
    State(api): State<Api>,
    Path((name, ptype)): Path<(String, String)>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<wire::Check>> {
    let req: wire::CheckUpdate = body(b)?;
    let t: dyno_shared::ProcessType = ptype.parse().map_err(ApiError::invalid)?;
    let secs = |s: f64, what: &str| -> ApiResult<u64> {
        if s.is_finite() && s > 0.0 {
            Ok((s * 1000.0).round() as u64)
        } else {
            Err(ApiError::invalid(format!(
                "{what} must be a positive number of seconds"
            )))
        }
    };
    let check = HealthCheck {
        path: req.path,
        file: req.file,
        interval_ms: secs(req.interval_secs.unwrap_or(5.0), "interval")?,
        timeout_ms: secs(req.timeout_secs.unwrap_or(2.0), "timeout")?,
        failures: req.failures.unwrap_or(3),
    };
    check.validate().map_err(ApiError::invalid)?;
    if check.path.is_some() && !t.is_web() {
        return Err(ApiError::invalid(format!(
            "{t} dynos have no $PORT: give them a heartbeat file instead of a path"
        )));
    }
    let app = find_app(&api.inner, &name)?;
    api.inner
        .store()
        .transaction(|tx| tx.set_check(&app.id, t.as_str(), &check))?;
    api.inner.system_log(
        &app.name,
        "api",
        format!("Health check of {t} set; it applies as its dynos restart"),
    );
    Ok(Json(check_json(t.as_str(), &check, false)))
}

async fn delete_check(
    State(api): State<Api>,
    Path((name, ptype)): Path<(String, String)>,
) -> ApiResult<Json<wire::Check>> {
    let app = find_app(&api.inner, &name)?;
    let removed = api.inner.store().transaction(|tx| {
        let check = tx.checks()?.remove(&(app.id.clone(), ptype.clone()));
        if check.is_some() {
            tx.delete_check(&app.id, &ptype)?;
        }
        Ok(check)
    })?;
    match removed {
        Some(c) => Ok(Json(check_json(&ptype, &c, false))),
        None => Err(ApiError::not_found(format!(
            "app {name} has no check for {ptype}"
        ))),
    }
}

async fn drain_host(
    State(api): State<Api>,
    Path(host): Path<String>,
) -> ApiResult<Json<wire::Host>> {
    set_drained(&api, &host, true)
}

async fn undrain_host(
    State(api): State<Api>,
    Path(host): Path<String>,
) -> ApiResult<Json<wire::Host>> {
    set_drained(&api, &host, false)
}

/// A drained host takes no new dynos; the manager moves its dynos off one at a time, each
/// replacement up before the old one stops.
fn set_drained(api: &Api, host: &str, drained: bool) -> ApiResult<Json<wire::Host>> {
    let inner = &api.inner;
    if !inner
        .store()
        .transaction(|tx| tx.set_host_drained(host, drained))?
    {
        return Err(ApiError::not_found(format!("no host named {host:?}")));
    }
    tracing::info!(host, drained, "host drain changed");
    inner.wake();
    host_list(inner)?
        .into_iter()
        .find(|h| h.name == host)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no host named {host:?}")))
}

async fn get_slug(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<Response> {
    let path = api.inner.slugs.path(&id).map_err(ApiError::invalid)?;
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let mut resp = Response::new(Body::from(bytes));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/gzip"),
            );
            Ok(resp)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ApiError::not_found(format!("no slug {id}")))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("failed to read slug {id}: {e}"),
        )),
    }
}

async fn agent_ws(
    State(api): State<Api>,
    headers: HeaderMap,
    mut req: Request,
) -> ApiResult<Response> {
    let is_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
    let (true, Some(key)) = (is_upgrade, key) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "this endpoint speaks websocket only",
        ));
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "connection cannot be upgraded",
        ));
    };
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let principal = req
        .extensions()
        .get::<crate::auth::Principal>()
        .cloned()
        .ok_or_else(|| ApiError::internal("no principal on an authenticated request"))?;
    let inner = api.inner.clone();
    let stop = api.stop.clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io = hyper_util::rt::TokioIo::new(upgraded);
                let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    io,
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    Some(crate::agents::ws_config()),
                )
                .await;
                crate::agents::session(inner, ws, peer, principal, stop).await;
            }
            Err(e) => tracing::warn!(error = %e, "agent websocket upgrade failed"),
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header"),
    );
    Ok(resp)
}
