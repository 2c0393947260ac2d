//! The third baseline, **durable**: the naive forwarder made durable in the
//! least costly way that keeps the two promises the daemon keeps on its hot
//! path, so that the bench can say what storing costs on this machine apart
//! from everything else the daemon does.
//!
//! - An event is answered 200 only once it is in SQLite and the WAL is
//!   fsynced (`synchronous = FULL`, group commit: one writer thread takes
//!   whatever is queued, commits it in one transaction, then answers all of
//!   it).
//! - A delivery's outcome is stored: when the sink has answered 2xx, the
//!   writer marks the row delivered in its next transaction, so a restart
//!   delivers only what was not (pending rows are sent again at start).
//!
//! It is what a careful hand-written service would be: rusqlite with cached
//! statements on one writer thread, one table with its rowid and no index,
//! deliveries held in memory (a semaphore of the daemon's sink
//! `concurrency`). It has none of the daemon's other work: no routes or
//! templates, no dedupe, no attempt history, no retry schedule or dead
//! letters, no ordering keys, no admin indexes, no logs.

use crate::baselines::message;
use crate::common::{Res, baseline_answer, signature_refusal};
use actix_web::{HttpRequest, HttpResponse, web};
use rusqlite::Connection;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::{Semaphore, oneshot};

/// Most messages in one transaction.
const MOST_PER_COMMIT: usize = 512;

enum Msg {
    /// Store an event; answer its rowid once the commit is fsynced.
    Insert {
        body: web::Bytes,
        done: oneshot::Sender<Result<i64, String>>,
    },
    /// The sink took event `id`.
    Delivered(i64),
}

pub struct Durable {
    writer: mpsc::Sender<Msg>,
    slots: Semaphore,
    client: reqwest::Client,
    url: reqwest::Url,
}

impl Durable {
    /// Opens (or creates) the store at `path`, starts its writer thread, and
    /// returns the rows a previous run did not deliver, with their messages.
    pub fn open(
        path: &Path,
        concurrency: usize,
        client: reqwest::Client,
        url: reqwest::Url,
    ) -> Res<(Durable, Vec<(i64, String)>)> {
        let conn = Connection::open(path)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("{} is not in WAL mode ({mode})", path.display()).into());
        }
        conn.execute_batch(
            "PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS events (
                 id INTEGER PRIMARY KEY,
                 body BLOB NOT NULL,
                 delivered INTEGER NOT NULL DEFAULT 0
             );",
        )?;
        let mut pending = Vec::new();
        {
            let mut stmt = conn.prepare("SELECT id, body FROM events WHERE delivered = 0")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
            for row in rows {
                let (id, body) = row?;
                let v: Value = serde_json::from_slice(&body)?;
                pending.push((id, message(&v)));
            }
        }
        let (writer, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("durable-writer".into())
            .spawn(move || write_loop(conn, rx))?;
        let durable = Durable {
            writer,
            slots: Semaphore::new(concurrency.max(1)),
            client,
            url,
        };
        Ok((durable, pending))
    }
}

/// The writer thread: block for the first message, take what else is
/// queued, commit it as one transaction, answer the inserts.
fn write_loop(mut conn: Connection, rx: mpsc::Receiver<Msg>) {
    let mut batch = Vec::with_capacity(MOST_PER_COMMIT);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MOST_PER_COMMIT {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let outcome = commit(&mut conn, &batch).map_err(|e| e.to_string());
        let mut ids = outcome.as_ref().ok().map(|ids| ids.iter());
        for m in batch.drain(..) {
            if let Msg::Insert { done, .. } = m {
                let answer = match (&outcome, ids.as_mut().and_then(Iterator::next)) {
                    (Ok(_), Some(id)) => Ok(*id),
                    (Err(e), _) => Err(e.clone()),
                    (Ok(_), None) => Err("the commit returned fewer ids than inserts".into()),
                };
                let _ = done.send(answer);
            }
        }
    }
}

/// One transaction: the inserts (their rowids, in order) and the marks.
fn commit(conn: &mut Connection, batch: &[Msg]) -> rusqlite::Result<Vec<i64>> {
    let tx = conn.transaction()?;
    let mut ids = Vec::with_capacity(batch.len());
    {
        let mut insert = tx.prepare_cached("INSERT INTO events (body) VALUES (?1)")?;
        let mut mark = tx.prepare_cached("UPDATE events SET delivered = 1 WHERE id = ?1")?;
        for m in batch {
            match m {
                Msg::Insert { body, .. } => {
                    insert.execute([&body[..]])?;
                    ids.push(tx.last_insert_rowid());
                }
                Msg::Delivered(id) => {
                    mark.execute([id])?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(ids)
}

/// Verify, parse, store (fsynced), answer 200; the delivery runs after.
pub async fn handle(state: web::Data<Durable>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Some(refusal) = signature_refusal(&req, &body) {
        return refusal;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().finish();
    };
    let text = message(&v);
    let (done, stored) = oneshot::channel();
    if state.writer.send(Msg::Insert { body, done }).is_err() {
        return HttpResponse::ServiceUnavailable().finish();
    }
    match stored.await {
        Ok(Ok(id)) => {
            actix_web::rt::spawn(deliver(state, id, text));
            baseline_answer()
        }
        _ => HttpResponse::ServiceUnavailable().finish(),
    }
}

/// POST the message to the sink until it takes it (a slot per request in
/// flight), then have the writer mark it delivered.
pub async fn deliver(state: web::Data<Durable>, id: i64, text: String) {
    let body = json!({ "text": text });
    loop {
        let taken = {
            let Ok(_slot) = state.slots.acquire().await else {
                return;
            };
            match state
                .client
                .post(state.url.clone())
                .json(&body)
                .send()
                .await
            {
                Ok(resp) if resp.status().is_success() => resp.bytes().await.is_ok(),
                _ => false,
            }
        };
        if taken {
            let _ = state.writer.send(Msg::Delivered(id));
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
