//! The audit trail, `audit.sqlite` beside `state.db`: every state-changing API request, who
//! made it, and how it ended.
//!
//! A file of its own with `synchronous=NORMAL`, so auditing a change costs no second fsync on
//! top of the change's own: in WAL mode a committed row survives a kill -9 of the coordinator
//! (a power loss can take back the last ones).

use super::{Result, StoreError, migrate};
use rusqlite::{Connection, params};
use std::path::Path;

const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    token TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status INTEGER NOT NULL,
    address TEXT NOT NULL
);
"#];

/// Rows kept; the oldest go a thousand at a time.
pub const AUDIT_KEEP: i64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Unix ms.
    pub at: i64,
    /// The token's name; `-` when none was valid.
    pub token: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub address: String,
}

pub struct AuditStore {
    conn: Connection,
}

impl AuditStore {
    pub fn open(path: &Path) -> Result<AuditStore> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<AuditStore> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<AuditStore> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn, MIGRATIONS)?;
        Ok(AuditStore { conn })
    }

    pub fn insert(&self, a: &AuditRow) -> Result<()> {
        let seq: i64 = self
            .conn
            .prepare_cached(
                "INSERT INTO audit (at, token, method, path, status, address) VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING seq",
            )?
            .query_row(
                params![a.at, a.token, a.method, a.path, a.status, a.address],
                |r| r.get(0),
            )?;
        if seq % 1000 == 0 {
            self.conn
                .execute("DELETE FROM audit WHERE seq <= ?1", [seq - AUDIT_KEEP])?;
        }
        Ok(())
    }

    /// The newest `limit` rows, oldest first.
    pub fn newest(&self, limit: usize) -> Result<Vec<AuditRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT at, token, method, path, status, address FROM
             (SELECT * FROM audit ORDER BY seq DESC LIMIT ?1) ORDER BY seq",
        )?;
        let rows = st.query_map([limit as i64], |r| {
            Ok(AuditRow {
                at: r.get(0)?,
                token: r.get(1)?,
                method: r.get(2)?,
                path: r.get(3)?,
                status: r.get(4)?,
                address: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_rows_in_order_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.sqlite");
        let a = AuditStore::open(&path).unwrap();
        for i in 0..5 {
            a.insert(&AuditRow {
                at: i,
                token: "ci".into(),
                method: "POST".into(),
                path: format!("/apps/a{i}"),
                status: 201,
                address: "127.0.0.1:5".into(),
            })
            .unwrap();
        }
        drop(a);
        let a = AuditStore::open(&path).unwrap();
        let rows = a.newest(2).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].path.as_str(), rows[1].path.as_str()),
            ("/apps/a3", "/apps/a4")
        );
    }
}
