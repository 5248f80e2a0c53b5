//! `ps`, `ps:scale`, `ps:type`, `ps:wait`, `ps:restart`, `ps:stop`.

use super::{Ctx, emit, emit_json, emit_line};
use crate::cli::WaitArgs;
use crate::client::Client;
use crate::error::{ApiError, usage};
use crate::output;
use crate::wait::not_ready;
use anyhow::Result;
use dyno_shared::api::{
    ActionResult, App, Dyno, DynoSelector, FormationItem, FormationUpdate, FormationUpdates,
    Pricing, ScaleRequest,
};
use dyno_shared::scale::parse_scale_args;
use dyno_shared::time::now_secs;
use dyno_shared::{DynoName, ProcessType, Size};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(200);

pub fn list(ctx: &Ctx) -> Result<i32> {
    let app = ctx.app()?;
    let dynos: Vec<Dyno> = ctx.client()?.get(&format!("/apps/{app}/dynos"))?;
    if ctx.json() {
        emit_json(&dynos)?;
    } else if dynos.is_empty() {
        emit_line(&format!("No dynos on {app}"))?;
    } else {
        emit(&output::ps(&dynos, now_secs()))?;
    }
    Ok(0)
}

pub fn scale(ctx: &Ctx, args: &[String], wait: &WaitArgs) -> Result<i32> {
    // Every argument is checked before anything is sent: one bad one changes nothing.
    let parsed = if args.is_empty() {
        Vec::new()
    } else {
        parse_scale_args(args).map_err(|e| usage(e.to_string()))?
    };
    let app = ctx.app()?;
    let client = ctx.client()?;
    let path = format!("/apps/{app}/formation");
    if parsed.is_empty() {
        let formation: Vec<FormationItem> = client.get(&path)?;
        if ctx.json() {
            emit_json(&formation)?;
        } else if formation.is_empty() {
            eprintln!("No process types on {app}; deploy a Procfile to add some.");
        } else {
            emit_line(&output::formation(&formation))?;
        }
        if wait.wait {
            wait_for_formation(
                &client,
                &app,
                Duration::from_secs(wait.wait_timeout),
                &mut || Ok(()),
            )?;
        }
        return Ok(0);
    }
    let request = ScaleRequest {
        args: parsed.iter().map(|a| a.to_string()).collect(),
    };
    let formation: Vec<FormationItem> = client.send("POST", &format!("{path}/scale"), &request)?;
    let changed: Vec<String> = parsed.iter().map(|a| a.process_type.to_string()).collect();
    if !ctx.json() {
        emit_line(&output::scale_done(&formation, &changed))?;
    }
    if wait.wait {
        eprint!("Waiting for dynos to be up...");
        wait_for_formation(
            &client,
            &app,
            Duration::from_secs(wait.wait_timeout),
            &mut || Ok(()),
        )
        .inspect_err(|_| eprintln!())?;
        eprintln!(" done");
    }
    if ctx.json() {
        emit_json(&formation)?;
    }
    Ok(0)
}

/// The sizes `ps:type` was asked for: one for every process type, and some for named types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeSizes {
    /// A bare `SIZE`: every process type not named otherwise.
    pub all: Option<Size>,
    /// `TYPE=SIZE`, in the order given.
    pub types: Vec<(ProcessType, Size)>,
}

/// Parses `ps:type` arguments, `TYPE=SIZE` or a bare `SIZE`, all of them before anything is
/// sent; an error names the argument.
pub fn parse_type_args<S: AsRef<str>>(args: &[S]) -> Result<TypeSizes> {
    let mut out = TypeSizes::default();
    let shape = "expected TYPE=SIZE (e.g. web=standard-2x) or a SIZE for every process type";
    for arg in args {
        let arg = arg.as_ref();
        let bad = |why: String| usage(format!("invalid argument {arg:?}: {why}"));
        match arg.split_once('=') {
            None => {
                let size = arg
                    .parse::<Size>()
                    .map_err(|e| bad(format!("{e}; {shape}")))?;
                match out.all {
                    Some(other) if other != size => {
                        return Err(bad(format!(
                            "a size for every type was given already ({other})"
                        )));
                    }
                    _ => out.all = Some(size),
                }
            }
            Some((t, s)) => {
                if t.is_empty() || s.is_empty() || s.contains('=') {
                    return Err(bad(shape.to_string()));
                }
                let ptype = t.parse::<ProcessType>().map_err(|e| bad(e.to_string()))?;
                let size = s.parse::<Size>().map_err(|e| bad(e.to_string()))?;
                match out.types.iter().find(|(p, _)| *p == ptype) {
                    Some((_, other)) if *other != size => {
                        return Err(bad(format!("{t} was given the size {other} already")));
                    }
                    Some(_) => {}
                    None => out.types.push((ptype, size)),
                }
            }
        }
    }
    Ok(out)
}

/// The PATCH for `sizes` against the app's formation: a named type must exist, a bare size
/// applies to every other type.
pub fn type_updates(
    app: &str,
    sizes: &TypeSizes,
    formation: &[FormationItem],
) -> Result<Vec<FormationUpdate>> {
    let known: Vec<&str> = formation.iter().map(|f| f.process_type.as_str()).collect();
    if known.is_empty() {
        anyhow::bail!("{app} has no process types; deploy a Procfile to add some");
    }
    for (t, _) in &sizes.types {
        if !known.contains(&t.as_str()) {
            return Err(usage(format!(
                "{app} has no process type {t} (its types: {})",
                known.join(", ")
            )));
        }
    }
    let update = |process_type: &str, size: Size| FormationUpdate {
        process_type: process_type.to_string(),
        quantity: None,
        size: Some(size.to_string()),
        dyno_size: None,
    };
    let mut updates: Vec<FormationUpdate> = sizes
        .types
        .iter()
        .map(|(t, s)| update(t.as_str(), *s))
        .collect();
    if let Some(all) = sizes.all {
        for t in known {
            if !sizes.types.iter().any(|(p, _)| p.as_str() == t) {
                updates.push(update(t, all));
            }
        }
    }
    Ok(updates)
}

/// `ps:type`: the app's process types with their sizes and prices; with arguments, sets sizes
/// first (all of them or none).
pub fn types(ctx: &Ctx, args: &[String]) -> Result<i32> {
    let sizes = parse_type_args(args)?;
    let app = ctx.app()?;
    let client = ctx.client()?;
    let path = format!("/apps/{app}/formation");
    let mut formation: Vec<FormationItem> = client.get(&path)?;
    // Before the change: a coordinator without prices fails the command with nothing changed.
    let pricing: Pricing = client.get("/pricing")?;
    if !args.is_empty() {
        let updates = type_updates(&app, &sizes, &formation)?;
        if !ctx.json() {
            eprint!("Changing dyno sizes of {app}...");
        }
        formation = client
            .send("PATCH", &path, &FormationUpdates { updates })
            .inspect_err(|_| {
                if !ctx.json() {
                    eprintln!();
                }
            })?;
        if !ctx.json() {
            eprintln!(" done");
        }
    }
    let items = output::dyno_type_prices(&formation, &pricing);
    if ctx.json() {
        emit_json(&items)?;
    } else if items.is_empty() {
        eprintln!("No process types on {app}; deploy a Procfile to add some.");
    } else {
        emit(&output::dyno_types(&items, &pricing))?;
    }
    Ok(0)
}

pub fn wait_command(ctx: &Ctx, timeout: u64) -> Result<i32> {
    let app = ctx.app()?;
    let client = ctx.client()?;
    eprint!("Waiting for every dyno of {app} to be up...");
    wait_for_formation(&client, &app, Duration::from_secs(timeout), &mut || Ok(()))
        .inspect_err(|_| eprintln!())?;
    eprintln!(" done");
    Ok(0)
}

/// Polls until every type has exactly its quantity of dynos `up` on the current release.
/// `tick` runs on every round, so a caller can stop the wait (e.g. on a signal).
pub fn wait_for_formation(
    client: &Client,
    app: &str,
    timeout: Duration,
    tick: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        tick()?;
        let round = (|| -> Result<Vec<String>> {
            let info: App = client.get(&format!("/apps/{app}"))?;
            let formation: Vec<FormationItem> = client.get(&format!("/apps/{app}/formation"))?;
            let dynos: Vec<Dyno> = client.get(&format!("/apps/{app}/dynos"))?;
            Ok(not_ready(&formation, &dynos, info.release))
        })();
        let problems = match round {
            Ok(p) if p.is_empty() => return Ok(()),
            Ok(p) => p,
            Err(e) => {
                // A 4xx will not fix itself; anything else may be a coordinator restarting.
                let permanent = e
                    .downcast_ref::<ApiError>()
                    .and_then(|a| a.status)
                    .is_some_and(|s| (400..500).contains(&s));
                if permanent {
                    return Err(e);
                }
                vec![format!("{e:#}")]
            }
        };
        if Instant::now() >= deadline {
            anyhow::bail!(
                "timed out after {}s waiting for the dynos of {app}: {}",
                timeout.as_secs(),
                problems.join("; ")
            );
        }
        std::thread::sleep(POLL);
    }
}

pub fn restart(
    ctx: &Ctx,
    dyno: Option<&str>,
    process_type: Option<&str>,
    batch: Option<&str>,
) -> Result<i32> {
    if let Some(b) = batch {
        // Checked here so a typo changes nothing (100: any count is fine, the share is checked).
        dyno_shared::api::batch_size(b, 100).map_err(usage)?;
    }
    let selector = DynoSelector {
        dyno: dyno.map(parse_dyno).transpose()?,
        process_type: process_type.map(parse_type).transpose()?,
        batch: batch.map(str::to_string),
    };
    let app = ctx.app()?;
    let what = match batch {
        Some(b) => format!("{} in batches of {b}", describe(&selector)),
        None => describe(&selector),
    };
    let result: ActionResult =
        ctx.client()?
            .send("POST", &format!("/apps/{app}/restart"), &selector)?;
    report(ctx, &format!("Restarting {what} on {app}"), &result)
}

pub fn stop(ctx: &Ctx, target: &str) -> Result<i32> {
    // As in heroku: a dot means one dyno, otherwise a process type.
    let selector = if target.contains('.') {
        DynoSelector {
            dyno: Some(parse_dyno(target)?),
            process_type: None,
            batch: None,
        }
    } else {
        DynoSelector {
            dyno: None,
            process_type: Some(parse_type(target)?),
            batch: None,
        }
    };
    let app = ctx.app()?;
    let what = describe(&selector);
    let result: ActionResult =
        ctx.client()?
            .send("POST", &format!("/apps/{app}/stop"), &selector)?;
    report(ctx, &format!("Stopping {what} on {app}"), &result)
}

fn parse_dyno(s: &str) -> Result<String> {
    s.parse::<DynoName>()
        .map(|d| d.to_string())
        .map_err(|e| usage(e.to_string()))
}

fn parse_type(s: &str) -> Result<String> {
    s.parse::<ProcessType>()
        .map(|t| t.to_string())
        .map_err(|e| usage(e.to_string()))
}

fn describe(selector: &DynoSelector) -> String {
    match (&selector.dyno, &selector.process_type) {
        (Some(d), _) => format!("{d} dyno"),
        (None, Some(t)) => format!("{t} dynos"),
        (None, None) => "dynos".to_string(),
    }
}

fn report(ctx: &Ctx, action: &str, result: &ActionResult) -> Result<i32> {
    if ctx.json() {
        emit_json(result)?;
    } else {
        emit_line(&format!("{action}... done"))?;
        if result.dynos.is_empty() {
            eprintln!("(no dynos matched)");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit_code;

    fn item(t: &str, size: Size) -> FormationItem {
        FormationItem {
            id: String::new(),
            app: None,
            created_at: None,
            updated_at: None,
            dyno_size: None,
            process_type: t.into(),
            quantity: 1,
            size,
            command: "x".into(),
        }
    }

    fn pt(s: &str) -> ProcessType {
        s.parse().unwrap()
    }

    #[test]
    fn type_arguments_parse_types_and_bare_sizes() {
        let s = parse_type_args(&["web=standard-2x", "worker=PL"]).unwrap();
        assert_eq!(s.all, None);
        assert_eq!(
            s.types,
            [
                (pt("web"), Size::Standard2x),
                (pt("worker"), Size::PerformanceL)
            ]
        );
        let s = parse_type_args(&["2X"]).unwrap();
        assert_eq!(s.all, Some(Size::Standard2x));
        assert!(s.types.is_empty());
        // Saying the same thing twice is fine.
        let s = parse_type_args(&["basic", "web=eco", "web=eco", "basic"]).unwrap();
        assert_eq!(s.all, Some(Size::Basic));
        assert_eq!(s.types, [(pt("web"), Size::Eco)]);
        assert_eq!(parse_type_args::<&str>(&[]).unwrap(), TypeSizes::default());
    }

    #[test]
    fn a_bad_type_argument_is_named_and_exits_2() {
        for (args, bad, why) in [
            (
                &["web=standard-2x", "worker=huge"][..],
                "worker=huge",
                "unknown dyno size",
            ),
            (&["huge"], "huge", "unknown dyno size"),
            (&["web"], "web", "TYPE=SIZE"),
            (&["web="], "web=", "TYPE=SIZE"),
            (&["=basic"], "=basic", "TYPE=SIZE"),
            (&["web=basic=eco"], "web=basic=eco", "TYPE=SIZE"),
            (&["w.b=basic"], "w.b=basic", "process type"),
            (&["free"], "free", "unknown dyno size"),
            (&["web=basic", "web=eco"], "web=eco", "already"),
            (&["basic", "eco"], "eco", "already"),
        ] {
            let err = parse_type_args(args).unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("invalid argument {bad:?}: ")),
                "{args:?}: {text}"
            );
            assert!(text.contains(why), "{args:?}: {text}");
            assert_eq!(exit_code(&err), 2, "{args:?}");
        }
    }

    #[test]
    fn updates_cover_named_types_and_the_rest_get_the_bare_size() {
        let formation = [
            item("web", Size::Standard1x),
            item("worker", Size::Standard1x),
            item("clock", Size::Basic),
        ];
        let sizes = parse_type_args(&["standard-2x", "web=performance-m"]).unwrap();
        let updates = type_updates("shop", &sizes, &formation).unwrap();
        let got: Vec<(&str, Option<dyno_shared::api::Quantity>, Option<&str>)> = updates
            .iter()
            .map(|u| {
                (
                    u.process_type.as_str(),
                    u.quantity.clone(),
                    u.size.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("web", None, Some("performance-m")),
                ("worker", None, Some("standard-2x")),
                ("clock", None, Some("standard-2x")),
            ]
        );
        let err = type_updates(
            "shop",
            &parse_type_args(&["wrker=basic"]).unwrap(),
            &formation,
        )
        .unwrap_err();
        assert_eq!(exit_code(&err), 2);
        assert_eq!(
            err.to_string(),
            "shop has no process type wrker (its types: web, worker, clock)"
        );
        assert!(type_updates("shop", &parse_type_args(&["eco"]).unwrap(), &[]).is_err());
    }
}
