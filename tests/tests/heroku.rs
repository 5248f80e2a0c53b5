//! The Platform API as the heroku CLI 11.10.0 speaks it (docs/HEROKU-CLI.md): the requests it
//! sends, replayed against a real coordinator and agent, and the fields it reads.

use dyno_tests::{Platform, wait_until};
use serde_json::{Value, json};
use std::time::Duration;

const ACCEPT: &str = "application/vnd.heroku+json; version=3.sdk";

fn call(
    p: &Platform,
    method: &str,
    path: &str,
    body: Option<Value>,
    range: Option<&str>,
) -> (u16, Value) {
    let mut req = ureq::request(method, &format!("{}{path}", p.url()))
        .set("Authorization", &format!("Bearer {}", p.token))
        .set("Accept", ACCEPT);
    if let Some(r) = range {
        req = req.set("Range", r);
    }
    let result = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let status = resp.status();
    let headers: Vec<(String, String)> = resp
        .headers_names()
        .into_iter()
        .filter_map(|h| resp.header(&h).map(|v| (h.clone(), v.to_string())))
        .collect();
    let text = resp.into_string().unwrap_or_default();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    let mut meta = json!({});
    for (k, v) in headers {
        meta[k.to_ascii_lowercase()] = Value::String(v);
    }
    (status, json!({"body": value, "headers": meta}))
}

#[test]
fn the_heroku_clis_requests_get_platform_api_answers() {
    let p = Platform::start();
    p.deploy("herokuish", "web: dyno-probe web\n");

    // Identity: every command asks who it is first.
    let (status, r) = call(&p, "GET", "/account", None, None);
    assert_eq!(status, 200, "{r}");
    assert!(
        r["body"]["id"].as_str().is_some_and(|id| id.len() == 36),
        "{r}"
    );
    assert_eq!(r["body"]["email"], "root");

    // apps:create without a name gets a made-up one; only our region and stack.
    let (status, r) = call(&p, "POST", "/apps", Some(json!({})), None);
    assert_eq!(status, 201, "{r}");
    let made = r["body"]["name"].as_str().unwrap().to_string();
    assert!(made.split('-').count() == 3, "{made}");
    let (status, r) = call(&p, "POST", "/apps", Some(json!({"region": "eu"})), None);
    assert_eq!(
        (status, r["body"]["id"].as_str()),
        (422, Some("invalid_params"))
    );
    let (status, _) = call(
        &p,
        "POST",
        "/apps",
        Some(json!({"name": "regional", "region": "us"})),
        None,
    );
    assert_eq!(status, 201);

    // apps:info reads the Platform API's app fields without checking them.
    let (status, r) = call(&p, "GET", "/apps/herokuish", None, None);
    assert_eq!(status, 200);
    let a = &r["body"];
    assert_eq!(a["owner"]["email"], "default", "{a}");
    let (_, me) = call(&p, "GET", "/account", None, None);
    assert_ne!(
        a["owner"]["id"], me["body"]["id"],
        "root does not own apps of `default`"
    );
    assert_eq!(
        (
            a["region"]["name"].as_str(),
            a["stack"]["name"].as_str(),
            a["generation"]["name"].as_str()
        ),
        (Some("us"), Some("dyno"), Some("cedar"))
    );
    assert!(
        a["released_at"].is_string() && a["git_url"].is_null(),
        "{a}"
    );

    // ps:scale sends quantities as strings, relative ones signed.
    let scale = |q: &str| {
        call(
            &p,
            "PATCH",
            "/apps/herokuish/formation",
            Some(json!({"updates": [{"type": "web", "quantity": q}]})),
            None,
        )
    };
    let (status, r) = scale("2");
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["body"][0]["quantity"], 2);
    let (_, r) = scale("+1");
    assert_eq!(r["body"][0]["quantity"], 3, "{r}");
    let (_, r) = scale("-2");
    assert_eq!(r["body"][0]["quantity"], 1, "{r}");
    let (status, r) = scale("three");
    assert_eq!(
        (status, r["body"]["id"].as_str()),
        (422, Some("invalid_params"))
    );
    assert!(
        r["body"]["message"].as_str().unwrap().contains("\"three\""),
        "{r}"
    );

    // releases asks for the newest page; more pages: 206 and Next-Range.
    p.dyno_ok(&["config:set", "A=1", "-a", "herokuish"]);
    p.dyno_ok(&["config:set", "B=2", "-a", "herokuish"]);
    let (status, r) = call(
        &p,
        "GET",
        "/apps/herokuish/releases",
        None,
        Some("version ..; max=2, order=desc"),
    );
    assert_eq!(status, 206, "{r}");
    let versions: Vec<u64> = r["body"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [3, 2]);
    assert_eq!(
        r["headers"]["next-range"],
        "version ]2..; max=2, order=desc"
    );
    assert_eq!(r["headers"]["accept-ranges"], "version");
    let (status, r) = call(
        &p,
        "GET",
        "/apps/herokuish/releases",
        None,
        Some("version ]2..; max=2, order=desc"),
    );
    assert_eq!(status, 200, "the last page: {r}");
    assert_eq!(r["body"].as_array().unwrap().len(), 1);
    // Without Range: the whole list, oldest first, as our own CLI reads it.
    let (status, r) = call(&p, "GET", "/apps/herokuish/releases", None, None);
    assert_eq!(status, 200);
    assert_eq!(r["body"][0]["version"], 1);

    // ps:stop and ps:restart TYPE go through the Platform API's action routes.
    p.wait_up("herokuish", &["web.1"]);
    let (status, r) = call(&p, "GET", "/apps/herokuish/dynos/web.1", None, None);
    assert_eq!(
        (status, r["body"]["name"].as_str()),
        (200, Some("web.1")),
        "{r}"
    );
    let (status, _) = call(
        &p,
        "POST",
        "/apps/herokuish/dynos/web.1/actions/stop",
        None,
        None,
    );
    assert_eq!(status, 202);
    p.wait_up("herokuish", &["web.1"]);
    let (status, _) = call(&p, "DELETE", "/apps/herokuish/formations/web", None, None);
    assert_eq!(status, 202);
    let (status, _) = call(&p, "GET", "/apps/herokuish/dynos/web.9", None, None);
    assert_eq!(status, 404);

    // logs: a log session, then its event stream, which carries no Authorization.
    let session = |body: Value| {
        let (status, r) = call(&p, "POST", "/apps/herokuish/log-sessions", Some(body), None);
        assert_eq!(status, 201, "{r}");
        r["body"]["logplex_url"].as_str().unwrap().to_string()
    };
    let read_stream = |url: &str| {
        let resp = ureq::get(url)
            .set("Accept", "text/event-stream")
            .call()
            .unwrap();
        assert_eq!(resp.header("content-type"), Some("text/event-stream"));
        resp.into_string().unwrap()
    };
    let all = read_stream(&session(json!({"lines": 100, "tail": false})));
    assert!(all.contains("\nid: ") || all.starts_with("id: "), "{all}");
    assert!(
        all.contains("data: ") && all.contains("app[web.1]"),
        "{all}"
    );
    let platform = read_stream(&session(json!({"source": "heroku", "lines": 100})));
    assert!(
        platform.contains("heroku[") && !platform.contains("app[web"),
        "{platform}"
    );
    let web1 = read_stream(&session(json!({"dyno": "web.1", "lines": 5})));
    let data_lines = web1.lines().filter(|l| l.starts_with("data: ")).count();
    assert!(data_lines <= 5 && data_lines > 0, "{web1}");
    assert!(
        web1.lines()
            .filter(|l| l.starts_with("data: "))
            .all(|l| l.contains("[web.1]")),
        "{web1}"
    );
    let bad = ureq::get(&format!("{}/log-stream/nope", p.url())).call();
    assert!(matches!(bad, Err(ureq::Error::Status(404, _))));
    let (status, _) = call(
        &p,
        "POST",
        "/apps/herokuish/log-sessions",
        Some(json!({"source": "kernel"})),
        None,
    );
    assert_eq!(status, 422);

    // What Heroku has and we do not: a clear error, except the lists supported commands read.
    let (status, r) = call(&p, "GET", "/apps/herokuish/addons", None, None);
    assert_eq!((status, r["body"].clone()), (200, json!([])));
    let (status, r) = call(&p, "GET", "/apps/herokuish/sni-endpoints", None, None);
    assert_eq!((status, r["body"].clone()), (200, json!([])));
    for (method, path) in [
        ("POST", "/apps/herokuish/addons"),
        ("GET", "/pipelines"),
        ("GET", "/teams/acme/apps"),
        ("GET", "/spaces"),
        ("GET", "/account/invoices"),
        ("POST", "/apps/herokuish/builds"),
        ("GET", "/apps/herokuish/webhooks"),
        ("POST", "/oauth/authorizations"),
    ] {
        let (status, r) = call(&p, method, path, None, None);
        assert_eq!(status, 422, "{method} {path}: {r}");
        assert_eq!(r["body"]["id"], "not_supported");
        assert!(
            r["body"]["message"]
                .as_str()
                .unwrap()
                .contains("not supported"),
            "{r}"
        );
    }
    // Malformed input gets the JSON error body too, and changes nothing.
    let (status, r) = call(&p, "GET", "/apps/herokuish/events?limit=abc", None, None);
    assert_eq!(
        (status, r["body"]["id"].as_str()),
        (400, Some("bad_request")),
        "{r}"
    );
    let (status, r) = call(&p, "GET", "/apps/%FF", None, None);
    assert_eq!(
        (status, r["body"]["id"].as_str()),
        (400, Some("bad_request")),
        "{r}"
    );
    let (status, r) = call(
        &p,
        "POST",
        "/apps/herokuish/restart",
        Some(json!([null, null])),
        None,
    );
    assert_eq!(status, 400, "an array is not a selector: {r}");
    let (status, r) = call(&p, "PUT", "/apps", None, None);
    assert_eq!(status, 405);
    assert_eq!(r["body"]["id"], "method_not_allowed", "{r}");
    let (status, r) = call(&p, "GET", "/nothing/here", None, None);
    assert_eq!(status, 404);
    assert!(
        r["body"]["message"]
            .as_str()
            .unwrap()
            .contains("/nothing/here"),
        "{r}"
    );
}

#[test]
fn releases_dynos_formation_and_domains_have_the_platform_api_shapes() {
    let rendezvous = dyno_tests::free_port();
    let p = Platform::start_with_coordinator_args(&[
        "--rendezvous-listen",
        &format!("127.0.0.1:{rendezvous}"),
    ]);
    p.deploy("shapes", "web: dyno-probe web\n");
    p.dyno_ok(&["config:set", "A=1", "-a", "shapes"]);
    p.dyno_ok(&["config:set", "A=2", "-a", "shapes"]);

    // Releases: ids, eligible_for_rollback, slug as {id}; found by version, `vN` or id.
    let (_, r) = call(
        &p,
        "GET",
        "/apps/shapes/releases",
        None,
        Some("version ..; max=10, order=desc"),
    );
    let list = r["body"].as_array().unwrap().clone();
    assert_eq!(list.len(), 3, "{r}");
    let v2 = &list[1];
    assert_eq!(v2["version"], 2);
    assert!(v2["id"].as_str().is_some_and(|id| id.len() == 36), "{v2}");
    assert_eq!(v2["eligible_for_rollback"], true, "{v2}");
    assert!(
        v2["slug"]["id"].as_str().is_some_and(|s| s.len() == 64),
        "{v2}"
    );
    assert_eq!(v2["app"]["name"], "shapes");
    assert_eq!(v2["user"]["email"], "root", "who made it: {v2}");
    assert_eq!(v2["addon_plan_names"], json!([]));
    let id2 = v2["id"].as_str().unwrap().to_string();
    for key in ["2", "v2", id2.as_str()] {
        let (status, r) = call(
            &p,
            "GET",
            &format!("/apps/shapes/releases/{key}"),
            None,
            None,
        );
        assert_eq!(
            (status, r["body"]["id"].as_str()),
            (200, Some(id2.as_str())),
            "{key}"
        );
    }
    let (status, _) = call(&p, "GET", "/apps/shapes/releases/9", None, None);
    assert_eq!(status, 404);
    let (status, _) = call(
        &p,
        "GET",
        "/apps/shapes/releases/00000000-0000-0000-0000-000000000000",
        None,
        None,
    );
    assert_eq!(status, 404);
    // releases:info shows that release's own config.
    let (status, r) = call(
        &p,
        "GET",
        "/apps/shapes/releases/v2/config-vars",
        None,
        None,
    );
    assert_eq!((status, r["body"].clone()), (200, json!({"A": "1"})));

    // rollback names the release by id; the new release runs v2's config.
    let (status, r) = call(
        &p,
        "POST",
        "/apps/shapes/releases",
        Some(json!({"release": id2})),
        None,
    );
    assert_eq!(status, 201, "{r}");
    assert_eq!(r["body"]["version"], 4);
    assert_eq!(r["body"]["description"], "Rollback to v2");
    assert_eq!(p.json(&["config", "-a", "shapes"])["A"], "1");

    // ps:wait compares each dyno's release.version with the newest release.
    wait_until("web.1 on v4", Duration::from_secs(30), || {
        let d = p.dynos("shapes");
        (d.len() == 1 && d[0]["release"]["version"] == 4 && d[0]["state"] == "up").then_some(())
    });
    let d = &p.dynos("shapes")[0];
    let (_, v4) = call(&p, "GET", "/apps/shapes/releases/4", None, None);
    assert_eq!(d["release"]["id"], v4["body"]["id"], "{d}");
    assert_eq!(d["app"]["name"], "shapes", "{d}");
    assert_eq!(
        v4["body"]["artifacts"][0]["id"], v4["body"]["slug"]["id"],
        "the slug is the release's artifact"
    );

    // Every list pages under Range; Next-Range leads to the rest, without it all of it.
    p.dyno_ok(&["ps:scale", "web=3", "-a", "shapes"]);
    for (path, field) in [
        ("/apps/shapes/dynos", "name"),
        ("/apps", "name"),
        ("/apps/shapes/formation", "type"),
    ] {
        let (_, all) = call(&p, "GET", path, None, None);
        let all = all["body"].as_array().unwrap().clone();
        let mut seen = Vec::new();
        let mut range = format!("{field} ..; max=1");
        loop {
            let (status, r) = call(&p, "GET", path, None, Some(&range));
            assert!(status == 200 || status == 206, "{path}: {r}");
            assert_eq!(
                r["body"].as_array().unwrap().len(),
                1,
                "{path} {range}: {r}"
            );
            seen.push(r["body"][0][field].clone());
            if status == 200 {
                break;
            }
            range = r["headers"]["next-range"].as_str().unwrap().to_string();
        }
        let mut want: Vec<Value> = all.iter().map(|x| x[field].clone()).collect();
        want.sort_by_key(|v| v.as_str().unwrap().to_string());
        assert_eq!(seen, want, "{path}: pages hold every item once, in order");
    }

    // One formation type by its own route; dyno_size is the newer form of size.
    let (status, r) = call(&p, "GET", "/apps/shapes/formation/web", None, None);
    assert_eq!(
        (status, r["body"]["dyno_size"]["name"].as_str()),
        (200, Some("Standard-1X")),
        "{r}"
    );
    let (status, r) = call(
        &p,
        "PATCH",
        "/apps/shapes/formation/web",
        Some(json!({"quantity": 2, "dyno_size": {"name": "standard-2x"}})),
        None,
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (r["body"]["quantity"].as_u64(), r["body"]["size"].as_str()),
        (Some(2), Some("Standard-2X"))
    );
    let std2x_id = r["body"]["dyno_size"]["id"].clone();
    for (body, want) in [
        (json!({"dyno_size": {"name": "huge"}}), 422),
        (json!({"dyno_size": {"name": "eco", "id": std2x_id}}), 422),
        (json!({"size": "eco", "dyno_size": {"name": "basic"}}), 422),
        (json!({"quantity": 1, "sise": "eco"}), 400),
    ] {
        let (status, r) = call(
            &p,
            "PATCH",
            "/apps/shapes/formation/web",
            Some(body.clone()),
            None,
        );
        assert_eq!(status, want, "{body}: {r}");
    }
    let (_, f) = call(&p, "GET", "/apps/shapes/formation/web", None, None);
    assert_eq!(f["body"]["quantity"], 2, "refused updates changed nothing");
    let (status, _) = call(&p, "GET", "/apps/shapes/formation/clock", None, None);
    assert_eq!(status, 404);
    p.dyno_ok(&["ps:scale", "web=1:standard-1x", "-a", "shapes"]);
    wait_until("web.1 at its new size", Duration::from_secs(30), || {
        p.dynos("shapes")
            .iter()
            .any(|d| d["name"] == "web.1" && d["size"] == "Standard-1X" && d["state"] == "up")
            .then_some(())
    });
    // Restarts are accepted (202) and happen after the answer, as on Heroku.
    let (status, _) = call(&p, "DELETE", "/apps/shapes/dynos/web.1", None, None);
    assert_eq!(status, 202);
    let (status, r) = call(
        &p,
        "GET",
        "/apps/shapes/releases",
        None,
        Some("version ]abc..; max=2"),
    );
    assert_eq!(
        (status, r["body"]["id"].as_str()),
        (416, Some("requested_range_not_satisfiable")),
        "{r}"
    );

    // Formation items carry an id and the app.
    let (_, f) = call(&p, "GET", "/apps/shapes/formation", None, None);
    let web = &f["body"][0];
    assert!(web["id"].as_str().is_some_and(|id| id.len() == 36), "{web}");
    assert_eq!(
        (web["type"].as_str(), web["app"]["name"].as_str()),
        (Some("web"), Some("shapes"))
    );

    // Domains: the app's own host first (kind heroku), then custom ones pointing at it.
    let (status, r) = call(
        &p,
        "POST",
        "/apps/shapes/domains",
        Some(json!({"hostname": "www.shapes.test", "sni_endpoint": null})),
        None,
    );
    assert_eq!(status, 201, "{r}");
    assert_eq!(
        (
            r["body"]["kind"].as_str(),
            r["body"]["cname"].as_str(),
            r["body"]["status"].as_str()
        ),
        (Some("custom"), Some("shapes.localhost"), Some("none"))
    );
    let (status, r) = call(
        &p,
        "POST",
        "/apps/shapes/domains",
        Some(json!({"hostname": "api.shapes.test", "sni_endpoint": "my-cert"})),
        None,
    );
    assert_eq!(
        (status, r["body"]["id"].as_str()),
        (422, Some("not_supported"))
    );
    // PATCH /apps: the app's own name and stack only; anything else is refused, nothing changes.
    for (body, status) in [
        (json!({"name": "shapes", "maintenance": false}), 200),
        (json!({"name": "renamed", "maintenance": true}), 422),
        (json!({"build_stack": "heroku-24"}), 422),
        (json!({"build_stack": "dyno"}), 200),
        (json!({"maintenanse": true}), 400),
    ] {
        let (got, r) = call(&p, "PATCH", "/apps/shapes", Some(body.clone()), None);
        assert_eq!(got, status, "{body}: {r}");
    }
    let (_, app) = call(&p, "GET", "/apps/shapes", None, None);
    assert_eq!(
        app["body"]["maintenance"], false,
        "the refused PATCH changed nothing"
    );
    let (_, r) = call(&p, "GET", "/regions", None, None);
    assert_eq!(r["body"][0]["name"], "us");
    let (_, r) = call(&p, "GET", "/stacks", None, None);
    assert_eq!(r["body"][0]["name"], "dyno");
    // Names under the router's domain belong to apps by name.
    for taken in ["shapes.localhost", "other.localhost"] {
        let (status, _) = call(
            &p,
            "POST",
            "/apps/shapes/domains",
            Some(json!({"hostname": taken})),
            None,
        );
        assert_eq!(status, 422, "{taken}");
    }
    let (status, r) = call(
        &p,
        "GET",
        "/apps/shapes/domains",
        None,
        Some("id ..; max=1000;"),
    );
    assert_eq!(status, 200, "everything fits: the CLI stops on a 200: {r}");
    let kinds: Vec<(&str, &str)> = r["body"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["hostname"].as_str().unwrap(), d["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("shapes.localhost", "heroku"),
            ("www.shapes.test", "custom")
        ]
    );
    let (status, r) = call(
        &p,
        "GET",
        "/apps/shapes/domains",
        None,
        Some("id ..; max=1;"),
    );
    assert_eq!(status, 206, "{r}");
    let next = r["headers"]["next-range"].as_str().unwrap().to_string();
    let (status, r) = call(&p, "GET", "/apps/shapes/domains", None, Some(&next));
    assert_eq!(
        (status, r["body"][0]["hostname"].as_str()),
        (200, Some("www.shapes.test"))
    );
    let id = r["body"][0]["id"].as_str().unwrap().to_string();
    let (status, _) = call(&p, "GET", &format!("/apps/shapes/domains/{id}"), None, None);
    assert_eq!(status, 200);
    let path = format!("/apps/shapes/domains/{id}");
    let (status, _) = call(
        &p,
        "PATCH",
        &path,
        Some(json!({"sni_endpoint": null})),
        None,
    );
    assert_eq!(status, 200);
    let (status, r) = call(&p, "PATCH", &path, Some(json!({"sni_endpoint": "c"})), None);
    assert_eq!(
        (status, r["body"]["id"].as_str()),
        (422, Some("not_supported"))
    );
    let (status, _) = call(
        &p,
        "DELETE",
        "/apps/shapes/domains/shapes.localhost",
        None,
        None,
    );
    assert_eq!(status, 422, "the app's own host name stays");
    let (status, _) = call(
        &p,
        "DELETE",
        &format!("/apps/shapes/domains/{id}"),
        None,
        None,
    );
    assert_eq!(status, 200);
    let (_, r) = call(&p, "GET", "/apps/shapes/domains", None, None);
    assert_eq!(r["body"].as_array().unwrap().len(), 1, "{r}");

    // run:detached: a one-off whose output goes to the logs; env numbers are taken as text.
    let (status, r) = call(
        &p,
        "POST",
        "/apps/shapes/dynos",
        Some(json!({"command": "echo cols=$COLUMNS", "attach": false,
                    "env": {"COLUMNS": 80, "TERM": "xterm"}})),
        None,
    );
    assert_eq!(status, 201, "{r}");
    let name = r["body"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("run."), "{r}");
    assert!(r["body"]["attach_url"].is_null(), "{r}");
    wait_until(
        "the detached one-off's output in the logs",
        Duration::from_secs(30),
        || {
            let logs = p.dyno_ok(&["logs", "-a", "shapes", "-n", "200"]);
            logs.contains(&format!("app[{name}]: cols=80"))
                .then_some(())
        },
    );
    let (status, r) = call(
        &p,
        "POST",
        "/apps/shapes/dynos",
        Some(json!({"command": "true", "env": {"A": [1]}})),
        None,
    );
    assert_eq!(
        (status, r["body"]["id"].as_str()),
        (422, Some("invalid_params")),
        "{r}"
    );
    // Attached: a single-use rendezvous URL on the host the client asked.
    let (status, r) = call(
        &p,
        "POST",
        "/apps/shapes/dynos",
        Some(json!({"command": "sleep 1", "attach": true})),
        None,
    );
    assert_eq!(status, 201, "{r}");
    let url = r["body"]["attach_url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("rendezvous://127.0.0.1:{rendezvous}/")),
        "{url}"
    );
}

#[test]
fn an_attached_one_off_nobody_attaches_to_is_stopped_with_r13() {
    let p = Platform::start_with_coordinator_args(&["--attach-within-secs", "2"]);
    p.deploy("lonely", "web: dyno-probe web\n");
    let (status, r) = call(
        &p,
        "POST",
        "/apps/lonely/dynos",
        Some(json!({"command": "dyno-probe sleep 600", "attach": true})),
        None,
    );
    assert_eq!(status, 201, "{r}");
    let name = r["body"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("run."), "{r}");
    // Nobody attaches: after 2 s the one-off is stopped, with R13 in the app's log.
    let r13 = format!("heroku[{name}]: Error R13 (Attach error) -> Failed to attach to process");
    wait_until("R13 in the app's log", Duration::from_secs(30), || {
        let logs = p.dyno_ok(&["logs", "-a", "lonely", "-n", "200"]);
        logs.contains(&r13).then_some(())
    });
    wait_until("the one-off gone", Duration::from_secs(30), || {
        p.dynos("lonely")
            .iter()
            .all(|d| d["name"] != name.as_str())
            .then_some(())
    });
}
