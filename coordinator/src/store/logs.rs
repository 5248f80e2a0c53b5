//! The persisted copy of the per-app log rings: `logs.sqlite` beside `state.db`, with a
//! connection of its own that only the log writer thread uses (`loghub::LogWriter`).
//!
//! A separate file rather than a table in `state.db`: that database runs `synchronous=FULL` and
//! every API write and manager pass takes its one write lock, while log lines arrive by the
//! thousand per second. Here lines land in batches, one transaction per flush, with
//! `synchronous=NORMAL`: in WAL mode a committed batch survives a kill -9 of the coordinator
//! (only a power loss can take the last ones back), and neither file waits on the other's fsyncs.

use super::{Result, StoreError, migrate};
use dyno_shared::{LogLine, LogSource};
use rusqlite::{Connection, params};
use std::collections::{HashMap, HashSet};
use std::path::Path;

const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE log_lines (
    seq INTEGER PRIMARY KEY,
    app TEXT NOT NULL,
    at INTEGER NOT NULL,
    source TEXT NOT NULL,
    process TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX log_lines_app ON log_lines(app, seq);
"#];

/// One change to the persisted rings, applied in the order they were made.
#[derive(Debug, Clone, PartialEq)]
pub enum LogOp {
    Line(LogLine),
    /// Drop every line of the app (it was destroyed).
    Forget(String),
}

pub struct LogStore {
    conn: Connection,
}

impl LogStore {
    pub fn open(path: &Path) -> Result<LogStore> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<LogStore> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<LogStore> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn, MIGRATIONS)?;
        Ok(LogStore { conn })
    }

    /// Every app's persisted lines, oldest first, at most `keep` per app.
    pub fn load(&self, keep: usize) -> Result<HashMap<String, Vec<LogLine>>> {
        let mut st = self
            .conn
            .prepare("SELECT app, at, source, process, message FROM log_lines ORDER BY app, seq")?;
        let mut rows = st.query([])?;
        let mut out: HashMap<String, Vec<LogLine>> = HashMap::new();
        while let Some(r) = rows.next()? {
            let source: String = r.get(2)?;
            let line = LogLine {
                app: r.get(0)?,
                at: r.get(1)?,
                source: LogSource::parse(&source).ok_or_else(|| StoreError::Corrupt {
                    what: "log_lines.source",
                    detail: source.clone(),
                })?,
                process: r.get(3)?,
                message: r.get(4)?,
            };
            out.entry(line.app.clone()).or_default().push(line);
        }
        for lines in out.values_mut() {
            let extra = lines.len().saturating_sub(keep);
            lines.drain(..extra);
        }
        Ok(out)
    }

    /// Applies `ops` in one transaction, then trims each app it touched to its last `keep` lines.
    pub fn apply(&mut self, ops: &[LogOp], keep: usize) -> Result<()> {
        let tx = self.conn.transaction()?;
        let mut touched: HashSet<&str> = HashSet::new();
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO log_lines (app, at, source, process, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut forget = tx.prepare_cached("DELETE FROM log_lines WHERE app = ?1")?;
            for op in ops {
                match op {
                    LogOp::Line(l) => {
                        insert.execute(params![
                            l.app,
                            l.at,
                            l.source.as_str(),
                            l.process,
                            l.message
                        ])?;
                        touched.insert(&l.app);
                    }
                    LogOp::Forget(app) => {
                        forget.execute([app])?;
                    }
                }
            }
            // Everything at or below the (keep+1)-th newest line goes; fewer lines give NULL,
            // which deletes nothing.
            let mut trim = tx.prepare_cached(
                "DELETE FROM log_lines WHERE app = ?1 AND seq <= \
                 (SELECT seq FROM log_lines WHERE app = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            )?;
            for app in touched {
                trim.execute(params![app, keep as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Drops the lines of apps not in `apps` (destroyed while lines were still arriving);
    /// returns how many lines went.
    pub fn retain_apps(&mut self, apps: &HashSet<String>) -> Result<usize> {
        let stored: Vec<String> = {
            let mut st = self.conn.prepare("SELECT DISTINCT app FROM log_lines")?;
            st.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        let mut removed = 0;
        for app in stored.iter().filter(|a| !apps.contains(*a)) {
            removed += self
                .conn
                .execute("DELETE FROM log_lines WHERE app = ?1", [app])?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(app: &str, n: usize) -> LogLine {
        LogLine {
            at: n as i64,
            app: app.into(),
            source: if n.is_multiple_of(2) {
                LogSource::App
            } else {
                LogSource::Router
            },
            process: "web.1".into(),
            message: format!("line {n}"),
        }
    }

    #[test]
    fn keeps_the_newest_lines_per_app_in_order() {
        let mut s = LogStore::open_in_memory().unwrap();
        let ops: Vec<LogOp> = (0..25)
            .map(|n| LogOp::Line(line(if n % 5 == 0 { "b" } else { "a" }, n)))
            .collect();
        s.apply(&ops, 10).unwrap();
        s.apply(&[LogOp::Line(line("a", 99))], 10).unwrap();
        let all = s.load(10).unwrap();
        let a: Vec<i64> = all["a"].iter().map(|l| l.at).collect();
        assert_eq!(a, vec![14, 16, 17, 18, 19, 21, 22, 23, 24, 99]);
        assert_eq!(all["b"].len(), 5);
        assert_eq!(all["a"][0], line("a", 14), "every field round-trips");
        // A smaller keep on load still returns the newest.
        assert_eq!(s.load(2).unwrap()["a"].last().unwrap().at, 99);
    }

    #[test]
    fn forget_and_retain_drop_an_apps_lines() {
        let mut s = LogStore::open_in_memory().unwrap();
        s.apply(
            &[
                LogOp::Line(line("a", 1)),
                LogOp::Line(line("b", 2)),
                LogOp::Line(line("c", 3)),
                LogOp::Forget("a".into()),
                LogOp::Line(line("c", 4)),
            ],
            10,
        )
        .unwrap();
        let all = s.load(10).unwrap();
        assert!(!all.contains_key("a"));
        assert_eq!(all["c"].len(), 2);
        let keep: HashSet<String> = ["c".to_string()].into();
        assert_eq!(s.retain_apps(&keep).unwrap(), 1);
        assert_eq!(s.load(10).unwrap().keys().collect::<Vec<_>>(), vec!["c"]);
    }

    #[test]
    fn survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs.sqlite");
        LogStore::open(&path)
            .unwrap()
            .apply(&[LogOp::Line(line("a", 1))], 10)
            .unwrap();
        assert_eq!(
            LogStore::open(&path).unwrap().load(10).unwrap()["a"].len(),
            1
        );
    }
}
