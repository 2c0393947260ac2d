//! SQLite backend on rusqlite: WAL, one writer thread fed by a channel that
//! commits queued operations together (group commit), reader threads with
//! their own connections, and a checkpointer thread. The operations
//! themselves (SQL, decoding) are the shared ones in [`super::ops`]; this
//! file only schedules and runs them.
//!
//! Why threads: SQLite's calls block. The writer owns its connection on
//! one std thread, so a statement never crosses a thread (sqlx ran each
//! connection on a thread of its own and sent every query over a channel);
//! tokio's workers only send a message and await the reply. The shared
//! operations are `async` (PostgreSQL needs that); here [`Lite`] answers
//! every call at once, so the writer drives them with a `block_on` that
//! never waits. Statements are prepared once per connection and cached
//! (`prepare_cached`), and arguments bind by number (`$N` becomes `?N`),
//! never by name.
//!
//! Why group commit: SQLite has one writer at a time and each durable commit
//! costs an fsync. Inbound inserts, router results, delivery claims and
//! attempt records all queue on one channel; the writer takes everything
//! queued (up to [`MAX_BATCH`]): the inserts in one commit at
//! `synchronous=FULL` (one fsync acknowledges them all, and every 200 still
//! means "on disk"), the rest in one transaction at `NORMAL`, on the same
//! connection (see [`writer`] for why that is safe). If a group fails, its
//! operations are retried one by one so one bad operation cannot fail its
//! neighbours.
//!
//! Leases: one daemon owns an SQLite file, so leases left by a crashed
//! process are cleared when the store opens.

use super::copy::Copied;
use super::ops::{self, Done, INSERT_CHUNK, NewEvent, Op};
use super::sql::{Cell, Conn, Dialect, Row, Stmt, Value};
use super::{DbError, StoreError};
use rusqlite::types::{Null, ValueRef};
use std::borrow::Cow;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 512;

/// How long a connection waits for SQLite's lock before an operation fails
/// (it fails the whole batch at once, never op by op).
const BUSY_TIMEOUT: Duration = Duration::from_secs(3);

/// Prepared statements kept per connection. The multi-row statements of a
/// batch differ by their row count, so there are more than a handful.
const STATEMENT_CACHE: usize = 256;

/// Reader threads (each with its own connection).
const READERS: usize = 2;

/// WAL frames (pages, 4 KB each) after which the writer checkpoints the WAL
/// itself, between two batches: a sustained load must not grow the WAL
/// without bound (on a small disk that alone can fill it). About 16 MB; see
/// [`Conns::checkpoint`].
const CHECKPOINT_FRAMES: i32 = 4096;

/// Every this many new WAL frames the writer asks the checkpointer thread
/// for a checkpoint, so that the bulk of the copying is done beside the
/// writer and its own checkpoint only copies what came since (a writer
/// that copied all 4,096 frames itself stalled acceptance for tens of ms).
const NUDGE_FRAMES: i32 = 1024;

thread_local! {
    /// Frames in the WAL after the last commit of this thread's writer
    /// connection, as SQLite's WAL hook reports them ([`count_wal_frames`]).
    /// The writer thread is the only one that commits on its connection.
    static WAL_FRAMES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// The writer connection's WAL hook: SQLite calls it after each commit
/// with the number of frames in the WAL.
fn count_wal_frames(_: &rusqlite::hooks::Wal, frames: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.with(|f| f.set(frames));
    Ok(())
}

type Reply = oneshot::Sender<Result<Done, StoreError>>;

enum Msg {
    Op(Op, Reply),
    Shutdown(oneshot::Sender<()>),
}

/// A read, run on a reader thread with its connection.
type Job = Box<dyn FnOnce(&mut rusqlite::Connection) + Send>;

pub(super) struct SqliteStore {
    path: PathBuf,
    writer: mpsc::Sender<Msg>,
    /// `None` once closed: the reader threads end when it is dropped.
    read: Mutex<Option<std_mpsc::Sender<Job>>>,
    /// The writer, reader and checkpointer threads, joined on close (so no
    /// file of the store is open after it).
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// A rusqlite connection seen through the store's seam. Every call runs at
/// once, on the caller's thread; the futures it returns are already done.
pub(super) struct Lite<'a>(pub(super) &'a mut rusqlite::Connection);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            // A value that cannot be decoded is bad data, not an outage.
            rusqlite::Error::FromSqlConversionFailure(i, _, _)
            | rusqlite::Error::InvalidColumnType(i, _, _)
            | rusqlite::Error::Utf8Error(i, _) => StoreError::Corrupt {
                column: format!("#{i}"),
                detail: e.to_string(),
            },
            e => StoreError::Unavailable {
                source: Arc::new(e),
            },
        }
    }
}

/// `$N` placeholders (the seam's, PostgreSQL's) as SQLite's `?N`, which
/// bind by number: `$N` would be a *named* parameter, numbered by first
/// appearance, so `... $2 ... $1` would swap them. Quoted text is left as
/// it is.
fn numbered(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    // Byte by byte: `$`, `'` and digits are ASCII, and no byte of a multi-byte
    // UTF-8 character is, so every cut below is on a character boundary.
    // (Char by char with a push each, this ran for ~17 K instructions on
    // every statement.)
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut copied = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\'' => quoted = !quoted,
            b'$' if !quoted && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                out.push_str(&sql[copied..i]);
                out.push('?');
                copied = i + 1;
            }
            _ => {}
        }
    }
    out.push_str(&sql[copied..]);
    Cow::Owned(out)
}

impl Lite<'_> {
    fn prepare(&self, stmt: Stmt) -> Result<rusqlite::CachedStatement<'_>, StoreError> {
        let mut st = self.0.prepare_cached(&numbered(&stmt.sql))?;
        if st.parameter_count() != stmt.args.len() {
            return Err(StoreError::Internal(
                "a statement was given another number of arguments than it has placeholders",
            ));
        }
        for (i, v) in stmt.args.into_iter().enumerate() {
            let n = i + 1;
            match v {
                Value::Int(Some(v)) => st.raw_bind_parameter(n, v)?,
                Value::Text(Some(v)) => st.raw_bind_parameter(n, v)?,
                Value::Bytes(v) => st.raw_bind_parameter(n, v)?,
                Value::Int(None) | Value::Text(None) => st.raw_bind_parameter(n, Null)?,
            }
        }
        Ok(st)
    }

    fn execute_now(&mut self, stmt: Stmt) -> Result<u64, StoreError> {
        let mut st = self.prepare(stmt)?;
        let n = st.raw_execute()?;
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }

    fn fetch_now(&mut self, stmt: Stmt) -> Result<Vec<Row>, StoreError> {
        let mut st = self.prepare(stmt)?;
        let names: Arc<[String]> = st.column_names().into_iter().map(str::to_owned).collect();
        let mut rows = st.raw_query();
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut cells = Vec::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                // SQLite types values, not columns: read each as what it holds.
                cells.push(match r.get_ref(i)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(v) => Cell::Int(v),
                    ValueRef::Text(t) => Cell::Text(
                        std::str::from_utf8(t)
                            .map_err(|e| StoreError::corrupt(name, format!("not UTF-8: {e}")))?
                            .to_owned(),
                    ),
                    ValueRef::Blob(b) => Cell::Bytes(b.to_vec()),
                    ValueRef::Real(v) => {
                        return Err(StoreError::corrupt(
                            name,
                            format!("expected an integer, text or bytes, found the real {v}"),
                        ));
                    }
                });
            }
            out.push(Row::new(names.clone(), cells));
        }
        Ok(out)
    }
}

impl Conn for Lite<'_> {
    const DIALECT: Dialect = Dialect::Sqlite;

    fn execute(&mut self, stmt: Stmt) -> impl Future<Output = Result<u64, StoreError>> + Send {
        std::future::ready(self.execute_now(stmt))
    }

    fn fetch(&mut self, stmt: Stmt) -> impl Future<Output = Result<Vec<Row>, StoreError>> + Send {
        std::future::ready(self.fetch_now(stmt))
    }
}

/// Runs a shared operation on a [`Lite`] connection: its futures are ready
/// when made, so this never waits.
fn now<T>(f: impl Future<Output = T>) -> T {
    futures_executor::block_on(f)
}

/// Opens a connection with the store's settings, at `synchronous=FULL`
/// (the writer switches its own connection between levels per group: see
/// [`Writer::group`]).
pub(super) fn connect(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // The query planner stability guarantee: a plan does not depend on the
    // values bound. Without it SQLite reads a bound `LIMIT $n` while
    // planning, and recompiles the statement whenever that value changes:
    // the delivery claim (its limit is the free slots) was recompiled about
    // every ninth event under load, at 500K instructions each.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable {
            source: Arc::new(NoWal(mode)),
        });
    }
    conn.execute_batch("PRAGMA synchronous = FULL")?;
    // Checkpoints run in the background (see `checkpointer`), not inside a
    // commit on the writer, where they would stall every request waiting on
    // that commit.
    conn.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0; \
         PRAGMA journal_size_limit = 67108864;",
    )?;
    Ok(conn)
}

/// SQLite refused WAL mode.
#[derive(Debug, thiserror::Error)]
#[error(
    "SQLite kept journal mode {0:?} instead of WAL (is the file on a network file system?); put the store on a local disk"
)]
struct NoWal(String);

fn stopped() -> StoreError {
    StoreError::Internal("the store writer has stopped")
}

impl SqliteStore {
    pub(super) async fn open(path: &Path) -> Result<Self, StoreError> {
        // A missing folder is a mistake (a typo, a volume not mounted):
        // creating it would put the events in a fresh, empty store where the
        // operator is not looking. The file itself is created when missing.
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.is_dir()
        {
            return Err(StoreError::NoFolder(dir.to_owned()));
        }
        let owned = path.to_path_buf();
        // Opening and migrating block: off the async workers.
        let conn = tokio::task::spawn_blocking(move || open_writer(&owned))
            .await
            .map_err(|_| StoreError::Internal("opening the store panicked"))??;
        let mut threads = Vec::new();
        let (read_tx, read_rx) = std_mpsc::channel::<Job>();
        let read_rx = Arc::new(Mutex::new(read_rx));
        for i in 0..READERS {
            let conn = connect(path)?;
            let rx = read_rx.clone();
            threads.push(spawn_thread(format!("store-read-{i}"), move || {
                reader(conn, &rx);
            })?);
        }
        // The writer asks for checkpoints; the checkpointer ends with it.
        let (nudge, nudges) = std_mpsc::sync_channel::<()>(1);
        let checkpoints = connect(path)?;
        threads.push(spawn_thread("store-checkpoint".to_owned(), move || {
            checkpointer(&checkpoints, &nudges);
        })?);
        let (tx, rx) = mpsc::channel(4096);
        let conns = Conns {
            path: path.to_path_buf(),
            open: Some(Writer::new(conn)),
        };
        threads.push(spawn_thread("store-writer".to_owned(), move || {
            writer(conns, rx, &nudge);
        })?);
        Ok(SqliteStore {
            path: path.to_path_buf(),
            writer: tx,
            read: Mutex::new(Some(read_tx)),
            threads: Mutex::new(threads),
        })
    }

    /// Queues a write for the writer thread and waits for its commit.
    pub(super) async fn run(&self, op: Op) -> Result<Done, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Msg::Op(op, reply))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Runs `f` on a reader thread's connection and waits for its answer.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Lite<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = reply.send(f(&mut Lite(conn)));
        });
        lock(&self.read)
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// A connection of its own (`store copy`).
    pub(super) fn connection(&self) -> Result<rusqlite::Connection, StoreError> {
        connect(&self.path)
    }

    pub(super) async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writer.send(Msg::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        lock(&self.read).take();
        let threads = std::mem::take(&mut *lock(&self.threads));
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave an `Option` inconsistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn spawn_thread(
    name: String,
    f: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map_err(|e| StoreError::Unavailable {
            source: Arc::new(e),
        })
}

/// Opens the writer's connection, migrates, and frees the claims a previous
/// (crashed) process held.
fn open_writer(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    let mut conn = connect(path)?;
    super::migrate::sqlite(&mut conn)?;
    conn.execute_batch(
        "UPDATE events SET lease_until = NULL WHERE lease_until IS NOT NULL; \
         UPDATE deliveries SET lease_until = NULL WHERE lease_until IS NOT NULL;",
    )?;
    Ok(conn)
}

fn reader(mut conn: rusqlite::Connection, jobs: &Mutex<std_mpsc::Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job.
        let job = lock(jobs).recv();
        match job {
            Ok(job) => job(&mut conn),
            Err(_) => return,
        }
    }
}

/// Copies the WAL into the database file at once, then every second or
/// when the writer asks (every [`NUDGE_FRAMES`] frames), until the writer
/// ends. PASSIVE never blocks the writer. This keeps the database file
/// current and does most of the copying; under a sustained load it cannot
/// let SQLite start the WAL over, which the writer's own checkpoint
/// ([`Conns::checkpoint`]) does.
fn checkpointer(conn: &rusqlite::Connection, nudges: &std_mpsc::Receiver<()>) {
    loop {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
        if let Err(std_mpsc::RecvTimeoutError::Disconnected) =
            nudges.recv_timeout(Duration::from_secs(1))
        {
            return;
        }
    }
}

/// The single writer: drains the queue, then commits in two groups.
///
/// Inbound inserts go first, at `synchronous = FULL`: one commit that fsyncs
/// the WAL, after which their senders get their 200 at once. Everything else
/// (routing results, claims, attempt records, replays, pruning) follows in
/// one transaction at `synchronous = NORMAL` (the same connection; see
/// [`Conns`]): it
/// is written to the WAL before its answer, so it survives a crash of the
/// process, and a power cut can lose at most the last moments of it, until
/// the next FULL commit or the checkpoint a second later. What such a loss
/// costs: an event routed again gets the same delivery ids
/// (`DeliveryId::for_step`), and a lost attempt record sends that delivery
/// again with the same Idempotency-Key: at least once, as promised.
fn writer(mut conns: Conns, mut rx: mpsc::Receiver<Msg>, nudge: &std_mpsc::SyncSender<()>) {
    let mut plan = CheckpointPlan::new();
    let mut batch: Vec<(Op, Reply)> = Vec::with_capacity(MAX_BATCH);
    let mut shutdown: Option<oneshot::Sender<()>> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Op(op, reply) => batch.push((op, reply)),
                Msg::Shutdown(done) => {
                    shutdown = Some(done);
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let (inserts, rest): (Vec<_>, Vec<_>) = batch
            .drain(..)
            .partition(|(op, _)| matches!(op, Op::InsertEvent(_)));
        match conns.get() {
            Ok(writer) => {
                let broken = match writer.group(true, inserts) {
                    // Not tried on a store that just failed: answered now
                    // with its error, retried by their callers after the
                    // reconnect.
                    Some(e) => {
                        answer_all(rest, &e);
                        true
                    }
                    None => writer.group(false, rest).is_some(),
                };
                if broken {
                    conns.reset();
                }
            }
            Err(e) => {
                // Fail fast: every waiting sender hears at once, and the next
                // batch tries to reopen.
                tracing::error!(error = %e, "cannot reopen the store for writing");
                answer_all(inserts, &e);
                answer_all(rest, &e);
            }
        }
        // After the batch is answered: what waits meanwhile joins the next.
        let frames = WAL_FRAMES.get();
        match plan.after_batch(frames) {
            Checkpoint::Own => {
                let ran = conns.checkpoint();
                if ran {
                    WAL_FRAMES.set(0);
                }
                plan.own_done(ran, frames);
            }
            Checkpoint::Nudge => {
                // Full means one is asked for already.
                let _ = nudge.try_send(());
            }
            Checkpoint::None => {}
        }
        if shutdown.is_some() {
            break;
        }
    }
    rx.close();
    conns.reset();
    if let Some(done) = shutdown {
        let _ = done.send(());
    }
}

/// What the writer does about the WAL after a batch.
#[derive(Debug, PartialEq, Eq)]
enum Checkpoint {
    None,
    /// Ask the checkpointer thread for a checkpoint.
    Nudge,
    /// Checkpoint on the writer's own connection ([`Conns::checkpoint`]).
    Own,
}

/// When the writer checkpoints, from the frames in the WAL after each
/// batch: a nudge every [`NUDGE_FRAMES`] new frames, its own checkpoint
/// past [`CHECKPOINT_FRAMES`].
struct CheckpointPlan {
    /// The frame count at which the next nudge is due.
    next_nudge: i32,
    /// The frame count at which the writer's own checkpoint last failed:
    /// it is tried again only after another commit, so a checkpoint that
    /// fails (a full disk) is not retried, and logged, per batch.
    failed_at: Option<i32>,
}

impl CheckpointPlan {
    fn new() -> Self {
        CheckpointPlan {
            next_nudge: NUDGE_FRAMES,
            failed_at: None,
        }
    }

    fn after_batch(&mut self, frames: i32) -> Checkpoint {
        if frames >= CHECKPOINT_FRAMES {
            if self.failed_at == Some(frames) {
                return Checkpoint::None;
            }
            return Checkpoint::Own;
        }
        if frames >= self.next_nudge {
            self.next_nudge = frames + NUDGE_FRAMES;
            return Checkpoint::Nudge;
        }
        if frames < self.next_nudge - NUDGE_FRAMES {
            // The WAL started over (the checkpointer's copy was complete).
            self.next_nudge = NUDGE_FRAMES;
        }
        Checkpoint::None
    }

    /// The writer's own checkpoint, asked for at `frames`, ran (the WAL
    /// starts over) or did not.
    fn own_done(&mut self, ran: bool, frames: i32) {
        if ran {
            *self = CheckpointPlan::new();
        } else {
            self.failed_at = Some(frames);
        }
    }
}

fn answer_all(group: Vec<(Op, Reply)>, e: &StoreError) {
    for (_, reply) in group {
        let _ = reply.send(Err(e.clone()));
    }
}

/// The writer's connection, reopened after a store-level failure.
///
/// After a failed commit (disk full, I/O error, a lock that timed out) a
/// connection may still hold SQLite's write lock or a half-open transaction,
/// and every later write would wait on it (the "database is locked by the
/// daemon itself" of a full disk). Closing it and opening a fresh one is the
/// one state known to be clean.
///
/// One connection, whose `synchronous` level is switched between the two
/// groups of a batch (FULL for inserts, NORMAL for the rest), rather than
/// one connection per level: each connection has its own page cache, and
/// a commit by one made the other read the pages it changed again (under
/// load, about 8 `pread` calls per event).
struct Conns {
    path: PathBuf,
    open: Option<Writer>,
}

/// The open connection and the `synchronous` level it is at.
struct Writer {
    conn: rusqlite::Connection,
    full: bool,
}

impl Conns {
    fn get(&mut self) -> Result<&mut Writer, StoreError> {
        let writer = match self.open.take() {
            Some(writer) => writer,
            None => {
                let conn = connect(&self.path)?;
                tracing::info!("store writer reconnected");
                Writer::new(conn)
            }
        };
        Ok(self.open.insert(writer))
    }

    /// Copies the WAL into the database file, on the writer's connection
    /// between two batches; true when it ran (false: the checkpointer
    /// thread held the checkpoint at that moment, or there is no open
    /// connection; the writer tries again after its next commit).
    ///
    /// The checkpointer thread's PASSIVE checkpoints alone do not bound the
    /// WAL under a sustained load: SQLite starts the WAL over from its
    /// beginning only when a write begins after a checkpoint copied every
    /// frame, and the writer appends frames while that thread copies, so the
    /// WAL only grew (300 MB over a 6 s bench load). Here nothing is
    /// appended during the copy, so it copies every frame (but those a
    /// reader's open snapshot still needs) and the next commit starts the
    /// WAL over: it stays near [`CHECKPOINT_FRAMES`] frames.
    fn checkpoint(&mut self) -> bool {
        let Some(w) = self.open.as_mut() else {
            return false;
        };
        // The row: busy (1 when another checkpoint held the lock), frames
        // in the WAL, frames copied.
        match w
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
        {
            Ok(busy) => busy == 0,
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed; it is tried again after the next commit");
                false
            }
        }
    }

    /// Closing rolls back whatever a connection still held; SQLite closes a
    /// file without waiting for any lock.
    fn reset(&mut self) {
        self.open = None;
    }
}

impl Writer {
    /// A connection made by [`connect`] (at `synchronous = FULL`), with the
    /// hook that counts its WAL's frames.
    fn new(conn: rusqlite::Connection) -> Self {
        conn.wal_hook(Some(count_wal_frames));
        Writer { conn, full: true }
    }

    /// Runs a group at `synchronous = FULL` (`durable`) or NORMAL: see
    /// [`run_group`]. The level changes between transactions, never inside
    /// one; a failure to change it is the group's failure.
    fn group(&mut self, durable: bool, group: Vec<(Op, Reply)>) -> Option<StoreError> {
        if group.is_empty() {
            return None;
        }
        if self.full != durable {
            let level = if durable {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            if let Err(e) = self
                .conn
                .prepare_cached(level)
                .and_then(|mut st| st.raw_execute())
            {
                let e = StoreError::from(e);
                tracing::error!(error = %e, "cannot set the store's sync level; nothing of this batch was committed");
                answer_all(group, &e);
                return Some(e);
            }
            self.full = durable;
        }
        run_group(&mut self.conn, group)
    }
}

/// Whether an error is about the database as a whole (lock, disk, file
/// system) rather than one operation's data: then retrying the batch's
/// operations one by one would only wait the lock timeout once per
/// operation, and the connections are reopened.
fn store_level(e: &StoreError) -> bool {
    let StoreError::Unavailable { source } = e else {
        return false;
    };
    store_level_cause(source)
}

fn store_level_cause(source: &DbError) -> bool {
    match source.downcast_ref::<rusqlite::Error>() {
        // Primary result codes: BUSY 5, LOCKED 6, NOMEM 7, READONLY 8,
        // IOERR 10, CORRUPT 11, FULL 13, CANTOPEN 14, PROTOCOL 15, NOTADB 26.
        Some(rusqlite::Error::SqliteFailure(f, _)) => {
            matches!(f.extended_code & 0xff, 5..=8 | 10 | 11 | 13..=15 | 26)
        }
        Some(_) => false,
        // Not the driver's: the store's own (a stall), about the store.
        None => true,
    }
}

/// Runs a group of operations together and answers each; when the group
/// fails, its operations are retried one by one so one bad operation cannot
/// fail its neighbours. Returns the store-level error after which the
/// connections must be reopened, if there was one.
fn run_group(conn: &mut rusqlite::Connection, mut group: Vec<(Op, Reply)>) -> Option<StoreError> {
    if group.is_empty() {
        return None;
    }
    let ops: Vec<&Op> = group.iter().map(|(op, _)| op).collect();
    match run_batch(conn, &ops) {
        Ok(results) => {
            for ((_, reply), r) in group.drain(..).zip(results) {
                let _ = reply.send(Ok(r));
            }
            None
        }
        Err(e) if group.len() > 1 && !store_level(&e) => {
            tracing::warn!(error = %e, batch = group.len(), "store batch failed; retrying its operations one by one");
            let mut broken: Option<StoreError> = None;
            for (op, reply) in group.drain(..) {
                let r = match &broken {
                    // Not tried on a store that just failed.
                    Some(e) => Err(e.clone()),
                    None => match run_batch(conn, &[&op]) {
                        Ok(mut v) => v.pop().ok_or_else(ops::unexpected),
                        Err(e) => {
                            if store_level(&e) {
                                broken = Some(e.clone());
                            }
                            Err(e)
                        }
                    },
                };
                let _ = reply.send(r);
            }
            broken
        }
        Err(e) => {
            tracing::error!(error = %e, batch = group.len(), "store write failed; nothing of this batch was committed");
            answer_all(group, &e);
            store_level(&e).then_some(e)
        }
    }
}

fn run_batch(conn: &mut rusqlite::Connection, batch: &[&Op]) -> Result<Vec<Done>, StoreError> {
    let inserts: Vec<&NewEvent> = batch
        .iter()
        .filter_map(|op| match op {
            Op::InsertEvent(e) => Some(e),
            _ => None,
        })
        .collect();
    let one_statement = inserts.len() <= INSERT_CHUNK
        && inserts
            .iter()
            .all(|e| e.routing.as_ref().is_none_or(|r| r.deliveries.is_empty()));
    if inserts.len() == batch.len() && one_statement {
        // Inserts without deliveries, one statement: it is its own
        // transaction, so the BEGIN and COMMIT are saved.
        return Ok(now(ops::insert_events(&mut Lite(conn), &inserts))?
            .into_iter()
            .map(Done::Inserted)
            .collect());
    }
    in_transaction(conn, |c| now(ops::run_ops(c, batch)))
}

/// Runs `f` in one transaction: committed when it succeeds, rolled back
/// when it or the commit fails.
fn in_transaction<T>(
    conn: &mut rusqlite::Connection,
    f: impl FnOnce(&mut Lite<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    // Through the statement cache: `execute_batch` compiles its text anew
    // every time, and these run once per group commit.
    conn.prepare_cached("BEGIN")?.execute([])?;
    let out = f(&mut Lite(conn)).and_then(|v| {
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(v)
    });
    if out.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    out
}

/// `store copy` into an SQLite store: every row of `from` in one
/// transaction of `to`.
pub(super) async fn copy_into<A: Conn>(
    from: &mut A,
    mut to: rusqlite::Connection,
) -> Result<Copied, StoreError> {
    to.execute_batch("BEGIN")?;
    let out = super::copy::copy(from, &mut Lite(&mut to)).await;
    match out {
        Ok(copied) => {
            to.execute_batch("COMMIT")?;
            Ok(copied)
        }
        Err(e) => {
            let _ = to.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_bind_by_number() {
        assert_eq!(numbered("SELECT 1"), "SELECT 1");
        assert_eq!(
            numbered("x = $2 AND y = $10 AND z = '$1' AND w = $1"),
            "x = ?2 AND y = ?10 AND z = '$1' AND w = ?1"
        );
        // Multi-byte text before, inside and after quotes stays intact.
        assert_eq!(
            numbered("é = $1 AND n = 'ü$2' AND ß = $3"),
            "é = ?1 AND n = 'ü$2' AND ß = ?3"
        );
        assert_eq!(numbered("a = $"), "a = $");
    }

    #[test]
    fn out_of_order_placeholders_get_their_own_values() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        let rows = now(Lite(&mut conn).fetch(
            Stmt::new("SELECT $2 AS b, $1 AS a, $2 AS b2")
                .int(1)
                .text("two"),
        ))
        .unwrap();
        assert_eq!(rows[0].int("a").unwrap(), 1);
        assert_eq!(rows[0].text("b").unwrap(), "two");
        assert_eq!(rows[0].text("b2").unwrap(), "two");
    }

    /// The delivery claim binds its limit; a new limit must not recompile
    /// it (the query planner stability guarantee, set in `connect`).
    #[test]
    fn a_cached_claim_is_not_recompiled_when_its_limit_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = connect(&dir.path().join("s.db")).unwrap();
        super::super::migrate::sqlite(&mut conn).unwrap();
        let sql = super::super::ops::claim_sql(Dialect::Sqlite);
        for limit in [1, 7, 2, 300] {
            now(Lite(&mut conn).fetch(Stmt::new(sql.clone()).text("t").int(5).int(limit))).unwrap();
        }
        let st = conn.prepare_cached(&numbered(&sql)).unwrap();
        assert_eq!(
            st.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "recompiled when the bound limit changed"
        );
        assert!(
            st.get_status(rusqlite::StatementStatus::VmStep) > 0,
            "the statement looked at is the one that ran"
        );
    }

    /// Nudges every 1,024 new frames, its own checkpoint past 4,096; one
    /// that failed is tried again only after another commit.
    #[test]
    fn the_writer_nudges_then_checkpoints_itself_and_does_not_retry_a_failure_per_batch() {
        let mut plan = CheckpointPlan::new();
        assert_eq!(plan.after_batch(100), Checkpoint::None);
        assert_eq!(plan.after_batch(NUDGE_FRAMES), Checkpoint::Nudge);
        assert_eq!(plan.after_batch(NUDGE_FRAMES + 10), Checkpoint::None);
        assert_eq!(plan.after_batch(2 * NUDGE_FRAMES + 10), Checkpoint::Nudge);
        // The checkpointer's copy completed and the WAL started over.
        assert_eq!(plan.after_batch(50), Checkpoint::None);
        assert_eq!(plan.after_batch(NUDGE_FRAMES), Checkpoint::Nudge);

        assert_eq!(plan.after_batch(CHECKPOINT_FRAMES + 7), Checkpoint::Own);
        plan.own_done(false, CHECKPOINT_FRAMES + 7);
        // No commit since (a full disk): not tried again.
        assert_eq!(plan.after_batch(CHECKPOINT_FRAMES + 7), Checkpoint::None);
        assert_eq!(plan.after_batch(CHECKPOINT_FRAMES + 7), Checkpoint::None);
        // A commit later, it is.
        assert_eq!(plan.after_batch(CHECKPOINT_FRAMES + 40), Checkpoint::Own);
        plan.own_done(true, CHECKPOINT_FRAMES + 40);
        assert_eq!(plan.after_batch(0), Checkpoint::None);
        assert_eq!(plan.after_batch(NUDGE_FRAMES), Checkpoint::Nudge);
    }

    #[test]
    fn a_missing_argument_is_a_bug_not_a_null() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        let err =
            now(Lite(&mut conn).fetch(Stmt::new("SELECT $1 AS a, $2 AS b").int(1))).unwrap_err();
        assert!(matches!(err, StoreError::Internal(_)), "{err}");
    }
}
