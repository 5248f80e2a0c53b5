//! `billing`: a month's dyno usage and cost per app, process type and size.

use super::{Ctx, emit, emit_json};
use crate::error::{ApiError, usage};
use crate::output;
use anyhow::Result;
use dyno_shared::api::BillingReport;

/// How `billing` prints the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Csv,
}

/// Checks a `--month`: `YYYY-MM` with a month from 01 to 12.
pub fn parse_month(raw: &str) -> Result<String> {
    let b = raw.as_bytes();
    let shaped = b.len() == 7
        && b[4] == b'-'
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[5..].iter().all(u8::is_ascii_digit);
    let month_ok = shaped && (1..=12).contains(&raw[5..].parse::<u32>().unwrap_or(0));
    if month_ok {
        Ok(raw.to_string())
    } else {
        Err(usage(format!(
            "invalid month {raw:?}: expected YYYY-MM with a month from 01 to 12, e.g. 2026-11"
        )))
    }
}

pub fn billing(ctx: &Ctx, month: Option<&str>, csv: bool) -> Result<i32> {
    // Checked before any request; without -a (or DYNO_APP) the report covers every app.
    if csv && ctx.json() {
        // clap catches `billing --json --csv`, not `--json billing --csv`.
        return Err(usage("--csv and --json cannot be used together"));
    }
    let month = month.map(parse_month).transpose()?;
    let app = ctx.app_opt()?;
    let format = if csv {
        Format::Csv
    } else if ctx.json() {
        Format::Json
    } else {
        Format::Text
    };
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(m) = &month {
        query.push(("month", m));
    }
    if let Some(a) = &app {
        query.push(("app", a));
    }
    let client = ctx.client()?;
    // Kept as it came for --json, so fields this build does not know are not lost.
    let raw: serde_json::Value = client.get_query("/billing", &query)?;
    if format == Format::Json {
        emit_json(&raw)?;
        return Ok(0);
    }
    let report: BillingReport = serde_json::from_value(raw).map_err(|e| ApiError {
        status: None,
        id: String::new(),
        message: format!("unexpected answer from {}/billing: {e}", client.base()),
    })?;
    match format {
        Format::Csv => emit(&output::billing_csv(&report))?,
        _ => emit(&output::billing(&report, app.as_deref()))?,
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit_code;

    #[test]
    fn months_are_yyyy_mm_with_a_real_month() {
        for good in ["2026-11", "2026-01", "2026-12", "1999-09"] {
            assert_eq!(parse_month(good).unwrap(), good);
        }
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-11",
            "2026/11",
            "2026-11-01",
            "",
            "abcd-ef",
            "2026-+1",
            " 2026-11",
            "２０２６-11",
        ] {
            let err = parse_month(bad).unwrap_err();
            assert_eq!(exit_code(&err), 2, "{bad:?}");
            let text = err.to_string();
            assert!(text.contains(&format!("{bad:?}")), "{bad:?}: {text}");
            assert!(text.contains("YYYY-MM"), "{text}");
        }
    }
}
