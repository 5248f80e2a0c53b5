//! `labs`, `labs:enable`, `labs:disable`, `labs:info`: an app's optional features.

use super::{Ctx, emit, emit_json, emit_line};
use crate::error::usage;
use crate::output;
use anyhow::Result;
use dyno_shared::api::{AppFeature, FeatureUpdate};

/// Feature names are lowercase letters, digits and dashes (`runtime-metrics`).
fn feature_name(raw: &str) -> Result<&str> {
    let ok = !raw.is_empty()
        && raw.len() <= 100
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !raw.starts_with('-');
    if ok {
        Ok(raw)
    } else {
        Err(usage(format!(
            "invalid feature name {raw:?}: expected lowercase letters, digits and dashes, as `dyno labs` lists them"
        )))
    }
}

pub fn list(ctx: &Ctx) -> Result<i32> {
    let app = ctx.app()?;
    let features: Vec<AppFeature> = ctx.client()?.get(&format!("/apps/{app}/features"))?;
    if ctx.json() {
        emit_json(&features)?;
    } else {
        emit(&output::features(&app, &features))?;
    }
    Ok(0)
}

pub fn info(ctx: &Ctx, feature: &str) -> Result<i32> {
    let name = feature_name(feature)?;
    let app = ctx.app()?;
    let f: AppFeature = ctx.client()?.get(&format!("/apps/{app}/features/{name}"))?;
    if ctx.json() {
        emit_json(&f)?;
    } else {
        emit(&output::feature_info(&f))?;
    }
    Ok(0)
}

/// `labs:enable` and `labs:disable`.
pub fn set(ctx: &Ctx, feature: &str, enabled: bool) -> Result<i32> {
    let name = feature_name(feature)?;
    let app = ctx.app()?;
    let f: AppFeature = ctx.client()?.send(
        "PATCH",
        &format!("/apps/{app}/features/{name}"),
        &FeatureUpdate { enabled },
    )?;
    if ctx.json() {
        emit_json(&f)?;
    } else {
        let verb = if enabled { "Enabling" } else { "Disabling" };
        emit_line(&format!("{verb} {} for {app}... done", f.name))?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::error::exit_code;
    use clap::Parser;

    #[test]
    fn parses_heroku_shapes() {
        let cli = Cli::try_parse_from(["dyno", "labs", "-a", "shop"]).unwrap();
        assert!(matches!(cli.command, Command::Labs));
        for (cmd, want) in [
            ("labs:enable", "enable"),
            ("labs:disable", "disable"),
            ("labs:info", "info"),
        ] {
            let cli = Cli::try_parse_from(["dyno", cmd, "runtime-metrics", "-a", "shop"]).unwrap();
            let (got, feature) = match cli.command {
                Command::LabsEnable { feature } => ("enable", feature),
                Command::LabsDisable { feature } => ("disable", feature),
                Command::LabsInfo { feature } => ("info", feature),
                other => panic!("{other:?}"),
            };
            assert_eq!((got, feature.as_str()), (want, "runtime-metrics"));
            assert_eq!(cli.global.app.as_deref(), Some("shop"));
            assert!(
                Cli::try_parse_from(["dyno", cmd]).is_err(),
                "{cmd} needs a feature"
            );
        }
    }

    #[test]
    fn feature_names_are_checked_before_they_reach_a_path() {
        assert_eq!(feature_name("runtime-metrics").unwrap(), "runtime-metrics");
        assert_eq!(
            feature_name("log-runtime-metrics").unwrap(),
            "log-runtime-metrics"
        );
        for bad in ["", "Runtime", "a/b", "../x", "-x", "a b"] {
            let err = feature_name(bad).unwrap_err();
            assert_eq!(exit_code(&err), 2, "{bad:?}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
}
