//! The store through its public API.

use crate::support::*;
use clickup_bridge::settings::StoreLocation;
use clickup_bridge::store::Store;

/// The inserts below are queued together, so the writer commits them in
/// one or a few groups: copies inside one group are duplicates of the
/// first, and of events stored earlier, however the groups fall.
#[tokio::test]
async fn one_group_commit_dedupes_within_the_batch_and_against_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreLocation::Sqlite(dir.path().join("s.db")))
        .await
        .unwrap();
    let earlier = store.insert_event(verified(1), 1).await.unwrap();
    let events: Vec<_> = [1, 2, 3, 2, 4, 2].iter().map(|n| verified(*n)).collect();
    let results =
        futures_util::future::join_all(events.into_iter().map(|e| store.insert_event(e, 2))).await;
    let results: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    let dup: Vec<bool> = results.iter().map(|r| r.duplicate).collect();
    assert_eq!(dup, [true, false, false, true, false, true]);
    assert_eq!(results[0].id, earlier.id);
    assert_eq!(results[3].id, results[1].id);
    assert_eq!(results[5].id, results[1].id);
    assert_eq!(store.count_events().await.unwrap(), 4);
    store.close().await;
}

/// A stored value this version cannot read is an error naming the column,
/// never a default (an unknown status is not read as pending).
#[tokio::test]
async fn a_row_with_an_unknown_status_fails_loudly() {
    use clickup_bridge::ids::DeliveryId;
    use clickup_bridge::store::{DeliveryFilter, NewDelivery, RoutedEvent, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = Store::open(&StoreLocation::Sqlite(path.clone()))
        .await
        .unwrap();
    let ev = store.insert_event(verified(1), 1).await.unwrap();
    store
        .complete_routing(
            vec![RoutedEvent {
                event_id: ev.id.clone(),
                matched_routes: vec!["r".into()],
                deliveries: vec![NewDelivery {
                    id: DeliveryId::for_step(&ev.id, "r", 0),
                    route: "r".into(),
                    step: 0,
                    target: "t".into(),
                    context: serde_json::json!({}),
                    dead: None,
                    order: Default::default(),
                    lease_until: None,
                }],
            }]
            .into(),
            2,
        )
        .await
        .unwrap();
    store.close().await;
    // Changed behind the store's back, as a hand edit or a newer version might.
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        path.display()
    ))
    .await
    .unwrap();
    sqlx::query("UPDATE deliveries SET status = 'paused'")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);
    let store = Store::open(&StoreLocation::Sqlite(path)).await.unwrap();
    let err = store
        .deliveries(&DeliveryFilter::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { column, .. } if column == "status"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("unknown delivery status \"paused\""),
        "{err}"
    );
    store.close().await;
}

/// On both backends: a claim that ends without an attempt record counts (a
/// stopped process), a release at shutdown does not, an attempt record
/// clears the count; and the health probe commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_claims_are_counted_released_and_cleared_on_both_backends() {
    use clickup_bridge::ids::DeliveryId;
    use clickup_bridge::store::{AttemptOutcome, AttemptRecord, NewDelivery, RoutedEvent};
    let dir = tempfile::tempdir().unwrap();
    for location in [
        StoreLocation::Sqlite(dir.path().join("s.db")),
        StoreLocation::Postgres(crate::pg::cluster().new_database()),
    ] {
        let store = Store::open(&location).await.unwrap();
        store.ping().await.unwrap();
        let ev = store.insert_event(verified(1), 1_000).await.unwrap();
        let id = DeliveryId::for_step(&ev.id, "r", 0);
        store
            .complete_routing(
                vec![RoutedEvent {
                    event_id: ev.id.clone(),
                    matched_routes: vec!["r".into()],
                    deliveries: vec![NewDelivery {
                        id: id.clone(),
                        route: "r".into(),
                        step: 0,
                        target: "t".into(),
                        context: serde_json::json!({}),
                        dead: None,
                        order: Default::default(),
                        lease_until: None,
                    }],
                }]
                .into(),
                1_000,
            )
            .await
            .unwrap();
        let claims = |now: i64| {
            let store = store.clone();
            async move {
                let d = store.claim_deliveries("t", 10, now, 60_000).await.unwrap();
                d.iter().map(|d| d.unfinished_claims).collect::<Vec<_>>()
            }
        };
        // Lease expired without an attempt record: the first claim counts.
        assert_eq!(claims(1_000).await, [0], "{location:?}");
        assert_eq!(claims(1_000_000).await, [1], "{location:?}");
        // Released at shutdown: claimable at once, and not counted.
        store
            .release_deliveries(std::slice::from_ref(&id))
            .await
            .unwrap();
        assert_eq!(claims(1_000_000).await, [1], "{location:?}");
        // An attempt recorded clears the count.
        store
            .record_attempt(AttemptRecord {
                delivery_id: id.clone(),
                n: 1,
                at: 1_000_001,
                duration_ms: 1,
                status_code: Some(500),
                response: None,
                error: Some("HTTP 500".into()),
                outcome: AttemptOutcome::Retry { at: 1_000_002 },
                link: None,
            })
            .await
            .unwrap();
        assert_eq!(claims(1_000_002).await, [0], "{location:?}");
        store.ping().await.unwrap();
        store.close().await;
    }
}

/// A store file made while SQLite ran on sqlx (its migrator, its
/// `_sqlx_migrations` rows for 0001-0008, an event in it) opens, keeps its
/// rows and takes new ones; and a file this version made still passes
/// sqlx's migrator (same bookkeeping, same checksums), so going back a
/// version works too.
#[tokio::test]
async fn a_store_made_by_sqlx_opens_and_a_new_one_still_opens_in_sqlx() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.db");
    let url = |p: &std::path::Path| format!("sqlite://{}?mode=rwc", p.display());
    let mut conn = sqlx::SqliteConnection::connect(&url(&old)).await.unwrap();
    sqlx::migrate!("migrations/sqlite")
        .run(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (id, source, dedupe_key, event_type, payload, received_at) \
         VALUES ('evt_old', 'clickup', 'k-old', 'taskCreated', x'7b7d', 5)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let store = Store::open(&StoreLocation::Sqlite(old.clone()))
        .await
        .unwrap();
    let kept = store
        .event(&clickup_bridge::ids::EventId::from_stored("evt_old".into()))
        .await
        .unwrap()
        .expect("the old event is still there");
    assert_eq!(kept.payload, b"{}");
    assert_eq!(kept.dedupe_key, "k-old");
    assert!(!store.insert_event(verified(1), 6).await.unwrap().duplicate);
    assert_eq!(store.count_events().await.unwrap(), 2);
    store.close().await;

    let new = dir.path().join("new.db");
    let store = Store::open(&StoreLocation::Sqlite(new.clone()))
        .await
        .unwrap();
    store.insert_event(verified(2), 7).await.unwrap();
    store.close().await;
    let mut conn = sqlx::SqliteConnection::connect(&url(&new)).await.unwrap();
    sqlx::migrate!("migrations/sqlite")
        .run(&mut conn)
        .await
        .unwrap();
    let applied: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, description FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(applied.len(), 9, "{applied:?}");
    assert_eq!(applied[2], (3, "links and enrichment".to_owned()));
    assert_eq!(applied[8], (9, "sparse indexes".to_owned()));
    conn.close().await.unwrap();
}

/// On both backends: an event routed at acceptance is stored routed with its
/// deliveries in its own commit (the router has nothing to claim); its
/// duplicate, routed again by the inbound, adds nothing; an event stored
/// without routing is the router's, as before. Inserted together so that
/// SQLite's writer commits them in one group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_routed_at_acceptance_are_stored_with_their_deliveries_in_one_commit() {
    use clickup_bridge::ids::{DeliveryId, EventId};
    use clickup_bridge::store::{DeliveryFilter, DeliveryStatus, NewDelivery, Routing};
    let routing = |id: &EventId| Routing {
        matched_routes: vec!["r".into()],
        deliveries: (0..2)
            .map(|step| NewDelivery {
                id: DeliveryId::for_step(id, "r", step),
                route: "r".into(),
                step,
                target: "t".into(),
                context: serde_json::json!({"step": step}),
                dead: None,
                order: Default::default(),
                lease_until: None,
            })
            .collect(),
    };
    let dir = tempfile::tempdir().unwrap();
    for location in [
        StoreLocation::Sqlite(dir.path().join("s.db")),
        StoreLocation::Postgres(crate::pg::cluster().new_database()),
    ] {
        let store = Store::open(&location).await.unwrap();
        let ids: Vec<EventId> = (0..3).map(|_| EventId::generate()).collect();
        let inserts = [
            (verified(1), ids[0].clone(), Some(routing(&ids[0]))),
            (verified(1), ids[1].clone(), Some(routing(&ids[1]))),
            (verified(2), ids[2].clone(), None),
        ];
        let results = futures_util::future::join_all(
            inserts
                .into_iter()
                .map(|(ev, id, r)| store.insert_routed_event(ev, id, 1_000, r)),
        )
        .await;
        let results: Vec<_> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            results.iter().map(|r| r.duplicate).collect::<Vec<_>>(),
            [false, true, false]
        );
        assert_eq!(results[1].id, ids[0]);
        let stored = store.deliveries(&DeliveryFilter::default()).await.unwrap();
        let mut got: Vec<(String, String, &str)> = stored
            .iter()
            .map(|d| (d.id.to_string(), d.event_id.to_string(), d.status.as_str()))
            .collect();
        got.sort();
        let mut want: Vec<(String, String, &str)> = (0..2)
            .map(|s| {
                let id = DeliveryId::for_step(&ids[0], "r", s).to_string();
                (id, ids[0].to_string(), DeliveryStatus::Pending.as_str())
            })
            .collect();
        want.sort();
        assert_eq!(got, want, "only the first copy's deliveries");
        assert_eq!(
            store.matched_routes(&ids[0]).await.unwrap(),
            Some(vec!["r".to_owned()])
        );
        assert_eq!(store.matched_routes(&ids[2]).await.unwrap(), None);
        let claimed = store.claim_events(10, 2_000, 60_000).await.unwrap();
        assert_eq!(
            claimed.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
            [ids[2].clone()],
            "the router claims only the event stored unrouted"
        );
        let due = store
            .claim_deliveries("t", 10, 2_000, 60_000)
            .await
            .unwrap();
        assert_eq!(due.len(), 1, "step 1 waits behind step 0");
        assert_eq!(due[0].context, serde_json::json!({"step": 0}));
        store.close().await;
    }
}

/// SQLite: a sustained write load does not grow the WAL without bound. The
/// background checkpointer alone never let SQLite start the WAL over while
/// the writer kept appending (300 MB over a 6 s bench load); the writer's
/// own checkpoint once the WAL holds 4,096 frames (16 MB) does. 64
/// inserters keep the writer busy with no pause for 10,240 events, whose
/// commits write about 260 MB of WAL frames (the WAL reached that size
/// before); the WAL file (which SQLite reuses from its start and does not
/// shrink) must stay near 16 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sustained_write_load_keeps_the_sqlite_wal_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = std::sync::Arc::new(
        Store::open(&StoreLocation::Sqlite(path.clone()))
            .await
            .unwrap(),
    );
    const TASKS: u64 = 64;
    const EACH: u64 = 160;
    let events: Vec<Vec<_>> = (0..TASKS)
        .map(|t| (0..EACH).map(|i| verified(t * EACH + i)).collect())
        .collect();
    let wal = dir.path().join("s.db-wal");
    let max_wal = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks: Vec<_> = events
        .into_iter()
        .map(|mine| {
            let (store, wal, max_wal) = (store.clone(), wal.clone(), max_wal.clone());
            tokio::spawn(async move {
                for e in mine {
                    assert!(!store.insert_event(e, 1).await.unwrap().duplicate);
                    let len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                    max_wal.fetch_max(len, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.count_events().await.unwrap(), TASKS * EACH);
    let max_wal = max_wal.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("largest WAL seen: {max_wal} bytes");
    assert!(
        max_wal < 24 << 20,
        "the WAL grew to {max_wal} bytes over {} events",
        TASKS * EACH
    );
    store.close().await;
}
