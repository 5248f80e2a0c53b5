//! `logs`: the app's merged log, history then (with `--tail`) live lines, optionally filtered by
//! dyno or process type, source and a regular expression.

use super::Ctx;
use crate::cli::LogsArgs;
use crate::error::{ApiError, usage};
use crate::output::{Colours, log_line, use_colour};
use anyhow::{Context, Result, bail};
use dyno_shared::{DynoName, LogLine, LogSource, ProcessType};
use std::io::{BufRead, IsTerminal, Write};

/// The coordinator compiles `grep` with this limit too; checking here refuses a pattern before
/// anything is sent.
const GREP_SIZE_LIMIT: usize = 1 << 20;

/// What `GET /apps/{app}/logs` is asked for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    pub lines: u32,
    pub tail: bool,
    /// `web.1` or `web`.
    pub dyno: Option<String>,
    pub source: Option<LogSource>,
    pub grep: Option<String>,
}

impl LogQuery {
    /// Checks the arguments the way the coordinator will, so bad ones exit 2 before any request.
    pub fn from_args(args: &LogsArgs) -> Result<LogQuery> {
        let dyno = match (&args.dyno, &args.ps) {
            (Some(_), Some(_)) => {
                return Err(usage(
                    "--dyno and --ps both filter by dyno: pass one of them (-d web.1 or -p web)",
                ));
            }
            (Some(d), None) => {
                let valid = if d.contains('.') {
                    d.parse::<DynoName>().map(|d| d.to_string())
                } else {
                    d.parse::<ProcessType>().map(|t| t.to_string())
                };
                Some(valid.map_err(|e| usage(e.to_string()))?)
            }
            (None, Some(t)) => {
                if t.contains('.') {
                    return Err(usage(format!(
                        "--ps takes a process type such as web, not {t:?}; use --dyno {t} for one dyno"
                    )));
                }
                Some(
                    t.parse::<ProcessType>()
                        .map_err(|e| usage(e.to_string()))?
                        .to_string(),
                )
            }
            (None, None) => None,
        };
        let source = args
            .source
            .as_deref()
            .map(|s| {
                LogSource::parse(s).ok_or_else(|| {
                    usage(format!(
                        "invalid log source {s:?}: expected app, system (or heroku) or router"
                    ))
                })
            })
            .transpose()?;
        let grep = args.grep.clone().filter(|g| !g.is_empty());
        if let Some(g) = &grep {
            regex::RegexBuilder::new(g)
                .size_limit(GREP_SIZE_LIMIT)
                .build()
                .map_err(|e| usage(format!("invalid grep pattern {g:?}: {e}")))?;
        }
        Ok(LogQuery {
            lines: args.num,
            tail: args.tail,
            dyno,
            source,
            grep,
        })
    }

    /// The endpoint's query string parameters.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let mut q = vec![
            ("lines", self.lines.to_string()),
            ("tail", self.tail.to_string()),
        ];
        if let Some(d) = &self.dyno {
            q.push(("dyno", d.clone()));
        }
        if let Some(s) = self.source {
            q.push(("source", s.as_str().to_string()));
        }
        if let Some(g) = &self.grep {
            q.push(("grep", g.clone()));
        }
        q
    }
}

/// Turns streamed lines into what `logs` prints: heroku's text layout, coloured per dyno on a
/// terminal, or the line's JSON object with `--json`.
pub struct Printer {
    json: bool,
    colours: Option<Colours>,
}

impl Printer {
    pub fn new(json: bool, colour: bool) -> Printer {
        Printer {
            json,
            colours: colour.then(Colours::default),
        }
    }

    pub fn format(&mut self, line: &LogLine) -> Result<String> {
        if self.json {
            return Ok(serde_json::to_string(line)?);
        }
        let colour = self.colours.as_mut().map(|c| c.of(&line.process));
        Ok(log_line(line, colour))
    }
}

pub fn logs(ctx: &Ctx, args: &LogsArgs) -> Result<i32> {
    let query = LogQuery::from_args(args)?;
    let app = ctx.app()?;
    let params = query.params();
    let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let reader = ctx
        .client()?
        .stream("GET", &format!("/apps/{app}/logs"), &params, None)
        .map_err(|e| {
            // A 400 here is a filter the coordinator refused (e.g. a grep pattern over its size
            // limit): bad input, like the checks above.
            match e.downcast_ref::<ApiError>() {
                Some(api) if api.status == Some(400) => usage(api.message.clone()),
                _ => e,
            }
        })?;
    let colour = use_colour(
        ctx.json(),
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let mut printer = Printer::new(ctx.json(), colour);
    let mut reader = reader;
    // Written in blocks, flushed whenever the stream has nothing more waiting: a flood costs a
    // write per block, a trickle shows each line at once.
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let mut raw = String::new();
    loop {
        raw.clear();
        if reader
            .read_line(&mut raw)
            .context("the log stream broke off")?
            == 0
        {
            break;
        }
        if !raw.trim().is_empty() {
            match serde_json::from_str::<LogLine>(&raw) {
                Ok(line) => writeln!(out, "{}", printer.format(&line)?)?,
                Err(e) => eprintln!(
                    "warning: skipping a malformed log line ({e}): {}",
                    raw.trim_end()
                ),
            }
        }
        if reader.buffer().is_empty() {
            out.flush()?;
        }
    }
    out.flush()?;
    if query.tail {
        bail!("the coordinator closed the log stream");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::error::exit_code;
    use clap::Parser;

    fn args(argv: &[&str]) -> LogsArgs {
        let mut full = vec!["dyno", "logs"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Logs(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn query(argv: &[&str]) -> Result<LogQuery> {
        LogQuery::from_args(&args(argv))
    }

    #[test]
    fn defaults_ask_for_100_lines_without_tail() {
        let q = query(&[]).unwrap();
        assert_eq!(
            q.params(),
            vec![("lines", "100".to_string()), ("tail", "false".to_string())]
        );
    }

    #[test]
    fn filters_become_query_parameters() {
        let q = query(&[
            "-n",
            "5",
            "-t",
            "-p",
            "worker",
            "-s",
            "heroku",
            "--grep",
            "tick [0-9]+$",
        ])
        .unwrap();
        assert_eq!(
            q.params(),
            vec![
                ("lines", "5".to_string()),
                ("tail", "true".to_string()),
                ("dyno", "worker".to_string()),
                ("source", "system".to_string()),
                ("grep", "tick [0-9]+$".to_string()),
            ]
        );
        assert_eq!(
            query(&["--dyno", "web.2"]).unwrap().dyno.as_deref(),
            Some("web.2")
        );
        assert_eq!(query(&["-d", "web"]).unwrap().dyno.as_deref(), Some("web"));
        assert_eq!(
            query(&["--ps", "web"]).unwrap().dyno.as_deref(),
            Some("web")
        );
        // An empty pattern filters nothing.
        assert_eq!(query(&["--grep", ""]).unwrap().grep, None);
    }

    #[test]
    fn dyno_and_ps_together_are_refused() {
        let err = Cli::try_parse_from(["dyno", "logs", "-d", "web.1", "-p", "web"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(text.contains("--dyno") && text.contains("--ps"), "{text}");
        // The check holds for callers that build the arguments themselves, too.
        let both = LogsArgs {
            dyno: Some("web.1".into()),
            ps: Some("web".into()),
            ..args(&[])
        };
        let err = LogQuery::from_args(&both).unwrap_err();
        assert_eq!(exit_code(&err), 2);
        assert!(err.to_string().contains("--dyno and --ps"), "{err}");
    }

    #[test]
    fn bad_filters_are_usage_errors_naming_the_value() {
        for (argv, needle) in [
            (&["--grep", "tick ("][..], "tick ("),
            (&["--grep", "[z-a]"][..], "[z-a]"),
            (&["-p", "web.1"][..], "--dyno web.1"),
            (&["-p", "web!"][..], "web!"),
            (&["-d", "web.x"][..], "web.x"),
            (&["-s", "kernel"][..], "kernel"),
        ] {
            let err = query(argv).unwrap_err();
            assert_eq!(exit_code(&err), 2, "{argv:?}");
            assert!(err.to_string().contains(needle), "{argv:?}: {err}");
        }
        let err = query(&["--grep", "("]).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid grep pattern \"(\""),
            "{err}"
        );
        assert!(Cli::try_parse_from(["dyno", "logs", "-n", "0"]).is_err());
    }

    fn line(process: &str, message: &str) -> LogLine {
        LogLine {
            at: 1_795_446_826_677_020,
            app: "shop".into(),
            source: LogSource::App,
            process: process.into(),
            message: message.into(),
        }
    }

    #[test]
    fn prints_heroku_layout_coloured_per_dyno_or_json() {
        let mut plain = Printer::new(false, false);
        assert_eq!(
            plain.format(&line("worker.2", "tick 7")).unwrap(),
            "2026-11-23T15:13:46.677020+00:00 app[worker.2]: tick 7"
        );
        let mut coloured = Printer::new(false, true);
        let a = coloured.format(&line("web.1", "a")).unwrap();
        let b = coloured.format(&line("web.2", "b")).unwrap();
        let a2 = coloured.format(&line("web.1", "c")).unwrap();
        assert_eq!(
            a,
            "2026-11-23T15:13:46.677020+00:00 \x1b[36mapp[web.1]:\x1b[0m a"
        );
        assert_eq!(
            b,
            "2026-11-23T15:13:46.677020+00:00 \x1b[33mapp[web.2]:\x1b[0m b"
        );
        assert!(a2.contains("\x1b[36mapp[web.1]:"), "{a2}");
        let mut json = Printer::new(true, true);
        let out = json.format(&line("web.1", "hi \"there\"")).unwrap();
        assert!(!out.contains('\n') && !out.contains('\x1b'), "{out}");
        let back: LogLine = serde_json::from_str(&out).unwrap();
        assert_eq!(back, line("web.1", "hi \"there\""));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["source"], "app");
        assert_eq!(v["process"], "web.1");
    }
}
