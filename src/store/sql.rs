//! The backend seam: statements as text plus typed arguments, rows as typed
//! cells. The shared store logic ([`super::ops`]) builds [`Stmt`]s and reads
//! [`Row`]s; a backend only runs them on its connections ([`Conn`]).
//!
//! SQL is written once with `$N` placeholders, which PostgreSQL binds by
//! number (the SQLite backend turns them into SQLite's `?N`). What truly
//! differs per database is a [`Dialect`] constant on the connection type. A
//! backend on another driver implements [`Conn`] (two methods) and nothing
//! in `ops` changes: SQLite moved from sqlx to rusqlite that way.

use super::StoreError;
use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

/// A bound value. Nulls are typed: PostgreSQL checks a parameter's type
/// against its column even when the value is NULL.
#[derive(Debug, Clone)]
pub(super) enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Vec<u8>),
}

/// One statement and its arguments, in placeholder order.
#[derive(Debug, Clone)]
pub(super) struct Stmt {
    pub(super) sql: Cow<'static, str>,
    pub(super) args: Vec<Value>,
}

impl Stmt {
    pub(super) fn new(sql: impl Into<Cow<'static, str>>) -> Self {
        Stmt {
            sql: sql.into(),
            args: Vec::new(),
        }
    }

    pub(super) fn int(mut self, v: i64) -> Self {
        self.args.push(Value::Int(Some(v)));
        self
    }

    pub(super) fn opt_int(mut self, v: Option<i64>) -> Self {
        self.args.push(Value::Int(v));
        self
    }

    pub(super) fn text(mut self, v: impl Into<String>) -> Self {
        self.args.push(Value::Text(Some(v.into())));
        self
    }

    pub(super) fn opt_text(mut self, v: Option<&str>) -> Self {
        self.args.push(Value::Text(v.map(str::to_owned)));
        self
    }

    pub(super) fn bytes(mut self, v: &[u8]) -> Self {
        self.args.push(Value::Bytes(v.to_vec()));
        self
    }
}

/// `($s, $s+1, ...), (...)`: `rows` tuples of `width` placeholders starting
/// at `$start`. Only placeholders are formatted into SQL; values are bound.
pub(super) fn values_rows(rows: usize, width: usize, start: usize) -> String {
    (0..rows)
        .map(|r| {
            let cols: Vec<String> = (0..width)
                .map(|c| format!("${}", start + r * width + c))
                .collect();
            format!("({})", cols.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `$start, ..., $start+n-1`.
pub(super) fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A column value as read.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// One result row: cells by column name.
#[derive(Debug, Clone)]
pub(super) struct Row {
    names: Arc<[String]>,
    cells: Vec<Cell>,
}

impl Row {
    pub(super) fn new(names: Arc<[String]>, cells: Vec<Cell>) -> Self {
        Row { names, cells }
    }

    fn cell(&self, column: &str) -> Result<&Cell, StoreError> {
        self.names
            .iter()
            .position(|n| n == column)
            .and_then(|i| self.cells.get(i))
            .ok_or_else(|| StoreError::corrupt(column, "the column is missing from the result"))
    }

    pub(super) fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        match self.cell(column)? {
            Cell::Null => Ok(None),
            Cell::Int(v) => Ok(Some(*v)),
            other => Err(StoreError::corrupt(
                column,
                format!("expected an integer, found {other:?}"),
            )),
        }
    }

    pub(super) fn int(&self, column: &str) -> Result<i64, StoreError> {
        self.opt_int(column)?
            .ok_or_else(|| StoreError::corrupt(column, "expected an integer, found NULL"))
    }

    /// A non-negative integer that fits `T` (counts, attempt numbers).
    pub(super) fn num<T: TryFrom<i64>>(&self, column: &str) -> Result<T, StoreError> {
        let v = self.int(column)?;
        T::try_from(v).map_err(|_| StoreError::corrupt(column, format!("{v} is out of range")))
    }

    pub(super) fn opt_num<T: TryFrom<i64>>(&self, column: &str) -> Result<Option<T>, StoreError> {
        self.opt_int(column)?
            .map(|v| {
                T::try_from(v)
                    .map_err(|_| StoreError::corrupt(column, format!("{v} is out of range")))
            })
            .transpose()
    }

    pub(super) fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        match self.cell(column)? {
            Cell::Null => Ok(None),
            Cell::Text(v) => Ok(Some(v.clone())),
            other => Err(StoreError::corrupt(
                column,
                format!("expected text, found {other:?}"),
            )),
        }
    }

    pub(super) fn text(&self, column: &str) -> Result<String, StoreError> {
        self.opt_text(column)?
            .ok_or_else(|| StoreError::corrupt(column, "expected text, found NULL"))
    }

    pub(super) fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        match self.cell(column)? {
            Cell::Bytes(v) => Ok(v.clone()),
            // SQLite keeps what was written; a text payload is still bytes.
            Cell::Text(v) => Ok(v.clone().into_bytes()),
            other => Err(StoreError::corrupt(
                column,
                format!("expected bytes, found {other:?}"),
            )),
        }
    }
}

/// What differs between the SQL dialects the store speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    /// One writer owns the file: claims need no row locks.
    Sqlite,
    /// Many instances: claims lock rows with `FOR UPDATE SKIP LOCKED`.
    Postgres,
}

impl Dialect {
    /// Appended to a claim's SELECT: lock the rows taken (of table alias
    /// `of`, when the SELECT joins), skipping rows another instance holds.
    pub(super) fn skip_locked(self, of: Option<&str>) -> String {
        match (self, of) {
            (Dialect::Sqlite, _) => String::new(),
            (Dialect::Postgres, None) => " FOR UPDATE SKIP LOCKED".to_owned(),
            (Dialect::Postgres, Some(t)) => format!(" FOR UPDATE OF {t} SKIP LOCKED"),
        }
    }
}

impl Dialect {
    /// Rows per multi-row statement, at most `most`. SQLite compiles each
    /// distinct statement text, and one of 5 rows is not one of 6: a cached
    /// one-row statement run once per row costs less than compiling (under
    /// callgrind, compiling was 7 % of the daemon's instructions). PostgreSQL
    /// pays a round trip per statement, so it takes many rows per statement.
    pub(super) fn rows_per_statement(self, most: usize) -> usize {
        match self {
            Dialect::Sqlite => 1,
            Dialect::Postgres => most,
        }
    }

    /// SQL that is true when text `hay` contains text `needle`.
    pub(super) fn contains(self, hay: &str, needle: &str) -> String {
        match self {
            Dialect::Sqlite => format!("instr({hay}, {needle}) > 0"),
            Dialect::Postgres => format!("strpos({hay}, {needle}) > 0"),
        }
    }
}

/// A connection (or transaction) that runs statements: all a backend must
/// provide to the shared logic.
pub(super) trait Conn: Send {
    /// The dialect this connection speaks.
    const DIALECT: Dialect;

    /// Runs a statement; returns the number of rows it changed.
    fn execute(&mut self, stmt: Stmt) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Runs a query; returns its rows.
    fn fetch(&mut self, stmt: Stmt) -> impl Future<Output = Result<Vec<Row>, StoreError>> + Send;
}
