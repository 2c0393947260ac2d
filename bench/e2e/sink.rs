//! The Slack stand-in: an actix-web server in the bench process (pinned
//! with the load generator) that answers `POST /slack` with 200 `ok`, or 503
//! while `fail` is set. For every message it keeps the arrival time, the
//! event number `#N` parsed from the text and the `Idempotency-Key`, and
//! counts repeated keys and repeated events.

use crate::common::{Configure, ID_BASE, nearest_rank};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Default)]
pub struct SinkInner {
    /// (pool index, arrival) of every message answered 200, in arrival order.
    arrivals: Vec<(u32, Instant)>,
    /// Pool indices seen (answered 200).
    seen: HashSet<u32>,
    /// Idempotency-Key values seen (answered 200).
    keys: HashSet<String>,
}

/// The Slack stand-in.
#[derive(Default)]
pub struct Sink {
    /// Answer 503 instead of 200.
    pub fail: AtomicBool,
    /// Messages answered 503.
    refused: AtomicU64,
    /// Messages answered 200.
    ok: AtomicU64,
    /// 200 messages whose Idempotency-Key was seen before.
    dup_keys: AtomicU64,
    /// 200 messages whose `#N` was seen before.
    dup_events: AtomicU64,
    /// 200 messages without an Idempotency-Key.
    no_key: AtomicU64,
    /// Messages that are not `{"text": "... (#N)"}` with a known N.
    unparsable: AtomicU64,
    inner: Mutex<SinkInner>,
}

impl Sink {
    pub fn reset(&self) {
        for c in [
            &self.refused,
            &self.ok,
            &self.dup_keys,
            &self.dup_events,
            &self.no_key,
            &self.unparsable,
        ] {
            c.store(0, Ordering::SeqCst);
        }
        *lock(&self.inner) = SinkInner::default();
    }

    pub fn distinct(&self) -> usize {
        lock(&self.inner).seen.len()
    }

    /// How many of `accepted` the sink has not received yet.
    pub fn missing(&self, accepted: &[(u32, Instant)]) -> usize {
        let inner = lock(&self.inner);
        accepted
            .iter()
            .filter(|(i, _)| !inner.seen.contains(i))
            .count()
    }

    pub fn arrivals(&self) -> Vec<(u32, Instant)> {
        lock(&self.inner).arrivals.clone()
    }

    pub fn counts(&self) -> SinkCounts {
        let inner = lock(&self.inner);
        SinkCounts {
            ok: self.ok.load(Ordering::SeqCst),
            refused: self.refused.load(Ordering::SeqCst),
            distinct_events: inner.seen.len() as u64,
            distinct_keys: inner.keys.len() as u64,
            dup_keys: self.dup_keys.load(Ordering::SeqCst),
            dup_events: self.dup_events.load(Ordering::SeqCst),
            no_key: self.no_key.load(Ordering::SeqCst),
            unparsable: self.unparsable.load(Ordering::SeqCst),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SinkCounts {
    pub ok: u64,
    pub refused: u64,
    pub distinct_events: u64,
    pub distinct_keys: u64,
    pub dup_keys: u64,
    pub dup_events: u64,
    pub no_key: u64,
    pub unparsable: u64,
}

impl SinkCounts {
    pub fn json(&self) -> Value {
        json!({
            "answered_200": self.ok,
            "answered_503": self.refused,
            "distinct_events": self.distinct_events,
            "distinct_idempotency_keys": self.distinct_keys,
            "duplicate_idempotency_keys": self.dup_keys,
            "duplicate_events": self.dup_events,
            "without_idempotency_key": self.no_key,
            "unparsable": self.unparsable,
        })
    }
}

/// The pool index in `{"text": "... (#N)"}`.
fn message_index(body: &[u8]) -> Option<u32> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let text = v.get("text")?.as_str()?;
    let rest = &text[text.rfind("(#")? + 2..];
    let n: u64 = rest[..rest.find(')')?].parse().ok()?;
    u32::try_from(n.checked_sub(ID_BASE)?).ok()
}

async fn sink_slack(sink: web::Data<Sink>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let at = Instant::now();
    if sink.fail.load(Ordering::Relaxed) {
        sink.refused.fetch_add(1, Ordering::Relaxed);
        return HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("unavailable");
    }
    sink.ok.fetch_add(1, Ordering::Relaxed);
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok());
    let index = message_index(&body);
    {
        let mut inner = lock(&sink.inner);
        match key {
            Some(k) => {
                if !inner.keys.insert(k.to_owned()) {
                    sink.dup_keys.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                sink.no_key.fetch_add(1, Ordering::Relaxed);
            }
        }
        match index {
            Some(i) => {
                if !inner.seen.insert(i) {
                    sink.dup_events.fetch_add(1, Ordering::Relaxed);
                }
                inner.arrivals.push((i, at));
            }
            None => {
                sink.unparsable.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

pub fn sink_config(sink: Arc<Sink>) -> Configure {
    Arc::new(move |c: &mut web::ServiceConfig| {
        c.app_data(web::Data::from(sink.clone()))
            .route("/slack", web::post().to(sink_slack));
    })
}

// ---------------------------------------------------------------- what arrived

pub fn percentile_signed_ms(sorted_us: &[i64], p: f64) -> f64 {
    nearest_rank(sorted_us, p).map_or(f64::NAN, |us| us as f64 / 1000.0)
}

pub fn signed_us(from: Instant, to: Instant) -> i64 {
    if to >= from {
        i64::try_from(to.duration_since(from).as_micros()).unwrap_or(i64::MAX)
    } else {
        -i64::try_from(from.duration_since(to).as_micros()).unwrap_or(i64::MAX)
    }
}

/// What the sink got compared with what the clients had accepted.
#[derive(Clone, Debug, Default)]
pub struct Delivery {
    /// Distinct accepted events.
    pub accepted: u64,
    /// Accepted events the sink never got (answered 200).
    pub missing: u64,
    /// Messages for events no client saw accepted (stored, then the answer failed).
    pub extra: u64,
    pub first_arrival: Option<Instant>,
    pub last_arrival: Option<Instant>,
    /// Acceptance→arrival (µs, signed) of the events accepted in the window.
    pub e2e_us: Vec<i64>,
    /// Of those, how many arrived before their client had read the 200.
    pub arrived_before_answer: u64,
}

pub fn compare(
    accepted: &[(u32, Instant)],
    arrivals: &[(u32, Instant)],
    window: (Instant, Instant),
) -> Delivery {
    let len = accepted
        .iter()
        .chain(arrivals)
        .map(|(i, _)| *i as usize + 1)
        .max()
        .unwrap_or(0);
    let mut first_arrival: Vec<Option<Instant>> = vec![None; len];
    for (i, at) in arrivals {
        let slot = &mut first_arrival[*i as usize];
        if slot.is_none() {
            *slot = Some(*at);
        }
    }
    let mut is_accepted = vec![false; len];
    let mut d = Delivery {
        first_arrival: arrivals.iter().map(|(_, t)| *t).min(),
        last_arrival: arrivals.iter().map(|(_, t)| *t).max(),
        ..Delivery::default()
    };
    for (i, acc) in accepted {
        let i = *i as usize;
        if is_accepted[i] {
            continue;
        }
        is_accepted[i] = true;
        d.accepted += 1;
        match first_arrival[i] {
            None => d.missing += 1,
            Some(arr) => {
                if *acc >= window.0 && *acc <= window.1 {
                    let us = signed_us(*acc, arr);
                    if us < 0 {
                        d.arrived_before_answer += 1;
                    }
                    d.e2e_us.push(us);
                }
            }
        }
    }
    d.extra = first_arrival
        .iter()
        .zip(&is_accepted)
        .filter(|(arr, acc)| arr.is_some() && !**acc)
        .count() as u64;
    d.e2e_us.sort_unstable();
    d
}

/// Waits until the sink has every accepted event (true) or the deadline passed.
pub async fn wait_all_arrived(sink: &Sink, accepted: &[(u32, Instant)], deadline: Instant) -> bool {
    let want = accepted
        .iter()
        .map(|(i, _)| *i)
        .collect::<HashSet<u32>>()
        .len();
    loop {
        if sink.distinct() >= want && sink.missing(accepted) == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn secs_between(a: Option<Instant>, b: Option<Instant>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b >= a => Some(b.duration_since(a).as_secs_f64()),
        _ => None,
    }
}
