//! `clickup-bridge store copy`: a stopped SQLite store into an empty
//! PostgreSQL database, through the binary as a user runs it.

use crate::pg::cluster;
use crate::support::*;
use clickup_bridge::ids::DeliveryId;
use clickup_bridge::settings::StoreLocation;
use clickup_bridge::store::{
    AttemptOutcome, AttemptRecord, DeliveryFilter, DeliveryStatus, Link, NewDelivery, RoutedEvent,
    Store,
};

/// Three events; two routed with a delivery each: one delivered after a
/// failed attempt (with a link), one pending for a retry; one unrouted.
async fn fill(store: &Store) -> Vec<clickup_bridge::store::Inserted> {
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(
            store
                .insert_event(verified(n), 1_000 + n as i64)
                .await
                .unwrap(),
        );
    }
    let claimed = store.claim_events(2, 2_000, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let routed = claimed
        .iter()
        .map(|e| RoutedEvent {
            event_id: e.id.clone(),
            matched_routes: vec!["r".into()],
            deliveries: vec![NewDelivery {
                id: DeliveryId::for_step(&e.id, "r", 0),
                route: "r".into(),
                step: 0,
                target: "t".into(),
                context: serde_json::json!({"n": e.received_at}),
                dead: None,
                order: Default::default(),
                lease_until: None,
            }],
        })
        .collect::<Vec<_>>();
    store.complete_routing(routed.into(), 2_000).await.unwrap();
    let d = store
        .claim_deliveries("t", 10, 3_000, 60_000)
        .await
        .unwrap();
    assert_eq!(d.len(), 2);
    let record = |id: &DeliveryId, n, outcome, link| AttemptRecord {
        delivery_id: id.clone(),
        n,
        at: 3_000 + i64::from(n),
        duration_ms: 5,
        status_code: Some(if outcome == AttemptOutcome::Delivered {
            200
        } else {
            503
        }),
        response: Some("answer".into()),
        error: None,
        outcome,
        link,
    };
    store
        .record_attempt(record(
            &d[0].id,
            1,
            AttemptOutcome::Retry { at: 3_001 },
            None,
        ))
        .await
        .unwrap();
    store
        .record_attempt(record(
            &d[1].id,
            1,
            AttemptOutcome::Retry {
                at: 9_000_000_000_000,
            },
            None,
        ))
        .await
        .unwrap();
    let again = store
        .claim_deliveries("t", 10, 4_000, 60_000)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    let link = Link {
        task_id: "task-1".into(),
        name: "jira_issue".into(),
        value: "OPS-7".into(),
    };
    store
        .record_attempt(record(
            &again[0].id,
            2,
            AttemptOutcome::Delivered,
            Some(link),
        ))
        .await
        .unwrap();
    ids
}

#[tokio::test]
async fn a_stopped_sqlite_store_moves_into_an_empty_postgres_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bridge.db");
    let sqlite = Store::open(&StoreLocation::Sqlite(db.clone()))
        .await
        .unwrap();
    let ids = fill(&sqlite).await;
    let before = sqlite.deliveries(&DeliveryFilter::default()).await.unwrap();
    sqlite.close().await;

    let url = cluster().new_database();
    let from = format!("sqlite://{}", db.display());
    let (code, out, err) =
        run_output(std::process::Command::new(bin()).args(["store", "copy", &from, &url]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        format!("copied 3 events, 2 deliveries, 3 attempts, 1 link from {from} into {url}")
    );

    let pg = Store::open(&StoreLocation::Postgres(url.clone()))
        .await
        .unwrap();
    // Dedupe memory: the same event again is a duplicate of the copied one.
    let again = pg.insert_event(verified(2), 5_000).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.id, ids[1].id);
    let after = pg.deliveries(&DeliveryFilter::default()).await.unwrap();
    let view = |v: &[clickup_bridge::store::DeliveryRow]| {
        v.iter()
            .map(|d| (d.id.to_string(), d.status, d.attempts, d.next_attempt_at))
            .collect::<Vec<_>>()
    };
    assert_eq!(view(&after), view(&before));
    assert!(after.iter().any(|d| d.status == DeliveryStatus::Pending));
    let delivered = after
        .iter()
        .find(|d| d.status == DeliveryStatus::Delivered)
        .unwrap();
    assert_eq!(pg.attempts(&delivered.id).await.unwrap().len(), 2);
    assert_eq!(pg.links("task-1").await.unwrap()["jira_issue"], "OPS-7");
    // Pending work carries on: the unrouted event is claimable.
    assert_eq!(pg.claim_events(10, 6_000, 60_000).await.unwrap().len(), 1);
    pg.close().await;

    // A second copy into the same database is refused, and changes nothing.
    let (code, _, err) =
        run_output(std::process::Command::new(bin()).args(["store", "copy", &from, &url]));
    assert_eq!(code, 2);
    assert!(
        err.contains("the target store is not empty (3 rows in events)"),
        "{err}"
    );
}

#[test]
fn a_missing_sqlite_file_is_refused_and_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nope.db");
    let from = format!("sqlite://{}", db.display());
    let to = format!("sqlite://{}", dir.path().join("to.db").display());
    let (code, _, err) =
        run_output(std::process::Command::new(bin()).args(["store", "copy", &from, &to]));
    assert_eq!(code, 2);
    assert!(err.contains("there is no SQLite store at"), "{err}");
    assert!(!db.exists());
}
