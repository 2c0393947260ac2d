//! `store copy`: every row of a stopped store into an empty one, through
//! the same seam as the rest of the store (so any pair of backends works).
//! The target is written in one transaction: a failed copy leaves it empty.

use super::StoreError;
use super::sql::{Conn, Row, Stmt, Value};

/// How a column's values are bound (PostgreSQL checks even a NULL's type).
#[derive(Clone, Copy)]
enum Kind {
    Int,
    Text,
    Bytes,
    /// Copied as NULL: a lease of the stopped store means nothing now.
    Lease,
}

struct Table {
    name: &'static str,
    order: &'static str,
    columns: &'static [(&'static str, Kind)],
}

use Kind::{Bytes, Int, Lease, Text};

/// Parents before children (deliveries reference events, attempts
/// deliveries).
const TABLES: &[Table] = &[
    Table {
        name: "events",
        order: "id",
        columns: &[
            ("id", Text),
            ("source", Text),
            ("dedupe_key", Text),
            ("event_type", Text),
            ("payload", Bytes),
            ("received_at", Int),
            ("routed_at", Int),
            ("lease_until", Lease),
            ("matched_routes", Text),
            ("route_attempts", Int),
            ("route_error", Text),
        ],
    },
    Table {
        name: "deliveries",
        order: "id",
        columns: &[
            ("id", Text),
            ("event_id", Text),
            ("route", Text),
            ("step", Int),
            ("target", Text),
            ("status", Text),
            ("attempts", Int),
            ("next_attempt_at", Int),
            ("lease_until", Lease),
            ("context", Text),
            ("last_error", Text),
            ("created_at", Int),
            ("updated_at", Int),
            ("delivered_at", Int),
            ("attempts_base", Int),
            ("claims", Int),
            ("order_key", Text),
            ("order_seq", Text),
            ("link_task", Text),
            ("link_names", Text),
            ("remember_task", Text),
            ("remember_name", Text),
        ],
    },
    Table {
        name: "attempts",
        order: "delivery_id, n",
        columns: &[
            ("delivery_id", Text),
            ("n", Int),
            ("at", Int),
            ("duration_ms", Int),
            ("status_code", Int),
            ("response", Text),
            ("error", Text),
            ("outcome", Text),
        ],
    },
    Table {
        name: "links",
        order: "task_id, name",
        columns: &[
            ("task_id", Text),
            ("name", Text),
            ("value", Text),
            ("updated_at", Int),
        ],
    },
];

/// Rows read and written per statement.
const PAGE: usize = 200;

/// What a copy moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Events (with their dedupe keys).
    pub events: u64,
    /// Deliveries.
    pub deliveries: u64,
    /// Recorded attempts.
    pub attempts: u64,
    /// Remembered links.
    pub links: u64,
}

fn value(row: &Row, column: &str, kind: Kind) -> Result<Value, StoreError> {
    Ok(match kind {
        Kind::Int => Value::Int(row.opt_int(column)?),
        Kind::Text => Value::Text(row.opt_text(column)?),
        Kind::Bytes => Value::Bytes(row.bytes(column)?),
        Kind::Lease => Value::Int(None),
    })
}

/// Refuses a target that holds any row.
pub(super) async fn ensure_empty<C: Conn>(to: &mut C) -> Result<(), StoreError> {
    for t in TABLES {
        let rows = to
            .fetch(Stmt::new(format!("SELECT COUNT(*) AS n FROM {} ", t.name)))
            .await?;
        let n: u64 = rows.first().map(|r| r.num("n")).transpose()?.unwrap_or(0);
        if n > 0 {
            return Err(StoreError::NotEmpty(format!("{n} rows in {}", t.name)));
        }
    }
    Ok(())
}

/// Copies every row of `from` into `to` (an open transaction).
pub(super) async fn copy<A: Conn, B: Conn>(from: &mut A, to: &mut B) -> Result<Copied, StoreError> {
    ensure_empty(to).await?;
    let mut copied = Copied::default();
    for t in TABLES {
        let names: Vec<&str> = t.columns.iter().map(|(n, _)| *n).collect();
        let list = names.join(", ");
        let mut offset = 0i64;
        loop {
            let rows = from
                .fetch(
                    Stmt::new(format!(
                        "SELECT {list} FROM {} ORDER BY {} LIMIT $1 OFFSET $2",
                        t.name, t.order
                    ))
                    .int(PAGE as i64)
                    .int(offset),
                )
                .await?;
            if rows.is_empty() {
                break;
            }
            let mut stmt = Stmt::new(format!(
                "INSERT INTO {} ({list}) VALUES {}",
                t.name,
                super::sql::values_rows(rows.len(), names.len(), 1)
            ));
            for r in &rows {
                for (column, kind) in t.columns {
                    stmt.args.push(value(r, column, *kind)?);
                }
            }
            let n = to.execute(stmt).await?;
            match t.name {
                "events" => copied.events += n,
                "deliveries" => copied.deliveries += n,
                "attempts" => copied.attempts += n,
                _ => copied.links += n,
            }
            offset += rows.len() as i64;
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::Cell;

    #[test]
    fn copied_columns_cover_every_column_the_store_reads() {
        let events: Vec<&str> = TABLES[0].columns.iter().map(|(n, _)| *n).collect();
        for c in super::super::ops::EVENT_COLUMNS.split(", ") {
            assert!(events.contains(&c), "{c}");
        }
        let deliveries: Vec<&str> = TABLES[1].columns.iter().map(|(n, _)| *n).collect();
        for c in super::super::ops::DELIVERY_COLUMNS.split(", ") {
            assert!(deliveries.contains(&c), "{c}");
        }
    }

    #[test]
    fn a_null_cell_keeps_its_column_type() {
        let row = Row::new(vec!["routed_at".to_owned()].into(), vec![Cell::Null]);
        assert!(matches!(
            value(&row, "routed_at", Kind::Int),
            Ok(Value::Int(None))
        ));
    }
}
