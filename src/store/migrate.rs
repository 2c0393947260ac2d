//! SQLite migrations (`migrations/sqlite/`), applied at open.
//!
//! The bookkeeping is sqlx's, kept as it was when SQLite ran on sqlx: the
//! `_sqlx_migrations` table, one row per applied file with its SHA-384
//! checksum. A store made by an earlier version continues where it stopped,
//! and a store made by this one still opens in an earlier version. Each
//! migration runs in one transaction with its bookkeeping row, so it is
//! applied completely or not at all.

use super::StoreError;
use rusqlite::OptionalExtension;
use sha2::{Digest, Sha384};
use std::sync::Arc;

/// One migration file.
pub(super) struct Migration {
    pub(super) version: i64,
    /// The file name without the version and `.sql`, `_` as spaces.
    pub(super) description: &'static str,
    pub(super) sql: &'static str,
}

macro_rules! migrations {
    ($($version:literal $file:literal $description:literal,)*) => {
        /// Every SQLite migration, in order. A new file in
        /// `migrations/sqlite/` is added here too (a test checks the list
        /// against the folder).
        pub(super) const SQLITE: &[Migration] = &[$(Migration {
            version: $version,
            description: $description,
            sql: include_str!(concat!("../../migrations/sqlite/", $file)),
        },)*];
    };
}

migrations! {
    1 "0001_events.sql" "events",
    2 "0002_deliveries.sql" "deliveries",
    3 "0003_links_and_enrichment.sql" "links and enrichment",
    4 "0004_replay.sql" "replay",
    5 "0005_lean_indexes.sql" "lean indexes",
    6 "0006_claims.sql" "claims",
    7 "0007_store_probe.sql" "store probe",
    8 "0008_ordering.sql" "ordering",
    9 "0009_sparse_indexes.sql" "sparse indexes",
}

/// Why the store's schema cannot be brought up to date.
#[derive(Debug, thiserror::Error)]
pub(super) enum MigrateError {
    /// A migration started and did not finish.
    #[error("migration {0} was left unfinished")]
    Dirty(i64),
    /// An applied migration is not the file this version has.
    #[error("migration {0} was applied from a file that differs from this version's")]
    Modified(i64),
    /// The store was migrated by a later version.
    #[error(
        "the store has migration {0}, which this version does not know (a newer version made it)"
    )]
    Unknown(i64),
    /// A statement failed.
    #[error("migration {version}: {source}")]
    Sql {
        /// The migration.
        version: i64,
        /// SQLite's error.
        source: rusqlite::Error,
    },
}

fn failed(e: MigrateError) -> StoreError {
    StoreError::Migration {
        source: Arc::new(e),
    }
}

fn sql(version: i64) -> impl Fn(rusqlite::Error) -> StoreError {
    move |source| failed(MigrateError::Sql { version, source })
}

/// Applies the migrations `conn` lacks, after checking the ones it has.
pub(super) fn sqlite(conn: &mut rusqlite::Connection) -> Result<(), StoreError> {
    run(conn, SQLITE)
}

pub(super) fn run(
    conn: &mut rusqlite::Connection,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    // sqlx's table, as sqlx creates it.
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
);",
    )
    .map_err(sql(0))?;
    let dirty: Option<i64> = conn
        .query_row(
            "SELECT version FROM _sqlx_migrations WHERE success = false ORDER BY version LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql(0))?;
    if let Some(v) = dirty {
        return Err(failed(MigrateError::Dirty(v)));
    }
    let applied: Vec<(i64, Vec<u8>)> = {
        let mut st = conn
            .prepare("SELECT version, checksum FROM _sqlx_migrations ORDER BY version")
            .map_err(sql(0))?;
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(sql(0))?
            .collect::<Result<_, _>>()
            .map_err(sql(0))?
    };
    for (version, checksum) in &applied {
        let known = migrations
            .iter()
            .find(|m| m.version == *version)
            .ok_or_else(|| failed(MigrateError::Unknown(*version)))?;
        if Sha384::digest(known.sql).as_slice() != checksum.as_slice() {
            return Err(failed(MigrateError::Modified(*version)));
        }
    }
    for m in migrations {
        if applied.iter().any(|(v, _)| *v == m.version) {
            continue;
        }
        let started = std::time::Instant::now();
        let tx = conn.transaction().map_err(sql(m.version))?;
        tx.execute_batch(m.sql).map_err(sql(m.version))?;
        tx.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (?1, ?2, TRUE, ?3, -1)",
            rusqlite::params![m.version, m.description, Sha384::digest(m.sql).as_slice()],
        )
        .map_err(sql(m.version))?;
        tx.commit().map_err(sql(m.version))?;
        let nanos = i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX);
        conn.execute(
            "UPDATE _sqlx_migrations SET execution_time = ?1 WHERE version = ?2",
            rusqlite::params![nanos, m.version],
        )
        .map_err(sql(m.version))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_the_folder() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        assert_eq!(files.len(), SQLITE.len(), "{files:?}");
        for (file, m) in files.iter().zip(SQLITE) {
            let (version, rest) = file.split_once('_').unwrap();
            assert_eq!(version.parse::<i64>().unwrap(), m.version, "{file}");
            let description = rest.trim_end_matches(".sql").replace('_', " ");
            assert_eq!(description, m.description, "{file}");
            let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
            assert_eq!(text, m.sql, "{file}");
        }
    }

    #[test]
    fn an_edited_applied_migration_is_refused() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        sqlite(&mut conn).unwrap();
        // Run again: nothing to do.
        sqlite(&mut conn).unwrap();
        conn.execute(
            "UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 3",
            [],
        )
        .unwrap();
        let err = sqlite(&mut conn).unwrap_err();
        assert!(
            err.to_string()
                .contains("migration 3 was applied from a file that differs"),
            "{err}"
        );
    }

    #[test]
    fn a_newer_store_is_refused() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        sqlite(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99, 'later', TRUE, x'00', 0)",
            [],
        )
        .unwrap();
        let err = sqlite(&mut conn).unwrap_err();
        assert!(err.to_string().contains("migration 99"), "{err}");
    }

    #[test]
    fn a_failed_migration_changes_nothing() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        let bad = [
            Migration {
                version: 1,
                description: "ok",
                sql: "CREATE TABLE a (x INTEGER);",
            },
            Migration {
                version: 2,
                description: "bad",
                sql: "CREATE TABLE b (x INTEGER); SELEC 1;",
            },
        ];
        assert!(run(&mut conn, &bad).is_err());
        let tables: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'b'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0);
        let applied: i64 = conn
            .query_row("SELECT COUNT(*) FROM _sqlx_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(applied, 1);
    }
}
