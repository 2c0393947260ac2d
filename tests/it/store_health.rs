//! The store tells the truth about its health: readiness follows whether the
//! writer can commit, a store that fails and comes back recovers by itself,
//! nothing waits for ever, and SIGTERM keeps shutdown_timeout.

use crate::support::*;
use std::time::{Duration, Instant};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn routes_to(server: &MockServer) -> String {
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(server)
        .await;
    format!(
        "version: 1\nsources:\n  clickup:\n    verify: clickup\n    secret: {CLICKUP_SECRET}\n\
targets:\n  t:\n    type: http\n    url: {}/in\n    retry: {{attempts: 50, initial: 0.05, max: 0.2}}\n\
routes:\n  - name: r\n    source: clickup\n    order_by: none\n    send:\n      - target: t\n        body: {{n: '{{{{event.history_items.[0].id}}}}'}}\n",
        server.uri()
    )
}

async fn readyz(app: &TestApp) -> u16 {
    app.client
        .get(format!("{}/readyz", app.admin_url))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn post_n(app: &TestApp, n: u64) -> u16 {
    let body = clickup_event(n);
    app.client
        .post(format!("{}/hooks/clickup", app.url))
        .body(body.clone())
        .header("X-Signature", &clickup_headers(CLICKUP_SECRET, &body)[0].1)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// An SQLite store in the test's folder, whatever `CLICKUP_BRIDGE_TEST_STORE`
/// says: the test is about SQLite's own lock.
fn on_sqlite(s: &mut clickup_bridge::settings::Settings) {
    let dir = s.routes.parent().unwrap().to_path_buf();
    s.store = clickup_bridge::settings::StoreLocation::Sqlite(dir.join("data/bridge.db"));
}

/// Another process holds SQLite's write lock: readiness says 503 within
/// seconds (a read still answers, so `SELECT 1` alone would say ready),
/// webhooks answer 503 before ClickUp's 7 s, and once the lock is released
/// everything recovers without a restart and the event is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_elsewhere_is_reported_and_recovered_from() {
    use sqlx::Connection;
    let server = MockServer::start().await;
    let app = spawn_app_with(&routes_to(&server).await, on_sqlite).await;
    assert_eq!(readyz(&app).await, 200);
    assert_eq!(post_n(&app, 1).await, 200);

    let mut other = sqlx::SqliteConnection::connect(&format!(
        "sqlite://{}",
        app.dir.path().join("data/bridge.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();

    let t = Instant::now();
    assert_eq!(readyz(&app).await, 503);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "readyz took {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    assert_eq!(post_n(&app, 2).await, 503);
    assert!(
        t.elapsed() < Duration::from_secs(7),
        "webhook took {:?}",
        t.elapsed()
    );

    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    drop(other);
    wait_for(15, "ready again", || async {
        (readyz(&app).await == 200).then_some(())
    })
    .await;
    let t = Instant::now();
    assert_eq!(post_n(&app, 3).await, 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    wait_for(20, "events 1 and 3 delivered", || {
        let server = &server;
        async move {
            let ns: Vec<String> = received_at(server, "/in")
                .await
                .iter()
                .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                .collect();
            (ns.iter().any(|b| b.contains("\"1\"")) && ns.iter().any(|b| b.contains("\"3\"")))
                .then_some(())
        }
    })
    .await;
    let t = Instant::now();
    app.stop().await;
    assert!(
        t.elapsed() < Duration::from_secs(7),
        "stop took {:?}",
        t.elapsed()
    );
}

/// PostgreSQL: another session locks the tables the daemon writes. Readiness
/// says 503 within seconds (the probe is a real write; a read still
/// answers), webhooks answer 503 before ClickUp's 7 s, and once the lock is
/// released everything recovers without a restart and the events are
/// delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_lock_held_elsewhere_is_reported_and_recovered_from() {
    use sqlx::Connection;
    let server = MockServer::start().await;
    let url = crate::pg::cluster().new_database();
    let app = spawn_app_with(&routes_to(&server).await, |s| {
        s.store = clickup_bridge::settings::StoreLocation::Postgres(url.clone());
    })
    .await;
    assert_eq!(readyz(&app).await, 200);
    assert_eq!(post_n(&app, 1).await, 200);

    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("LOCK TABLE events, store_probe IN EXCLUSIVE MODE")
        .execute(&mut other)
        .await
        .unwrap();

    let t = Instant::now();
    assert_eq!(readyz(&app).await, 503);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "readyz took {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    assert_eq!(post_n(&app, 2).await, 503);
    assert!(
        t.elapsed() < Duration::from_secs(7),
        "webhook took {:?}",
        t.elapsed()
    );

    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    drop(other);
    wait_for(15, "ready again", || async {
        (readyz(&app).await == 200).then_some(())
    })
    .await;
    let t = Instant::now();
    assert_eq!(post_n(&app, 3).await, 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    wait_for(20, "events 1 and 3 delivered", || {
        let server = &server;
        async move {
            let ns: Vec<String> = received_at(server, "/in")
                .await
                .iter()
                .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                .collect();
            (ns.iter().any(|b| b.contains("\"1\"")) && ns.iter().any(|b| b.contains("\"3\"")))
                .then_some(())
        }
    })
    .await;
    let t = Instant::now();
    app.stop().await;
    assert!(
        t.elapsed() < Duration::from_secs(7),
        "stop took {:?}",
        t.elapsed()
    );
}

/// The full disk of the security probe, on a 2 MiB tmpfs: while it is full
/// readiness is 503 and webhooks are 503 (not hanging, not 200); once space
/// is freed the daemon recovers by itself, everything acknowledged is
/// delivered, and it stops within shutdown_timeout. Needs root for the mount,
/// so it is ignored by default and run by `.ci/run`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "mounts a tmpfs: needs root (run by .ci/run)"]
async fn a_full_disk_is_reported_and_recovered_from_on_a_tmpfs() {
    let mnt = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(mnt.path())
        .status()
        .unwrap();
    assert!(mounted.success(), "mount -t tmpfs needs root");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.path().to_path_buf());
    let server = MockServer::start().await;
    let store = mnt.path().join("bridge.db");
    let app = spawn_app_with(&routes_to(&server).await, |s| {
        s.store = clickup_bridge::settings::StoreLocation::Sqlite(store.clone());
        s.shutdown_timeout = 3;
    })
    .await;
    let mut acked = Vec::new();
    for n in 0..20 {
        assert_eq!(post_n(&app, n).await, 200);
        acked.push(n);
    }
    // Fill the disk.
    let filler = mnt.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    // SQLite may still reuse WAL space it holds (after a checkpoint), so a
    // few more commits can succeed; once that is used up, webhooks are
    // refused and readiness says so.
    let mut refused = 0;
    let full = Instant::now();
    for n in 100.. {
        let t = Instant::now();
        match post_n(&app, n).await {
            200 => acked.push(n),
            503 => refused += 1,
            other => panic!("event {n}: {other}"),
        }
        assert!(
            t.elapsed() < Duration::from_secs(7),
            "event {n} took {:?}",
            t.elapsed()
        );
        if refused > 0 && readyz(&app).await == 503 {
            break;
        }
        assert!(
            full.elapsed() < Duration::from_secs(30),
            "a full disk was not reported within 30 s ({refused} events refused)"
        );
    }

    std::fs::remove_file(&filler).unwrap();
    wait_for(20, "ready again", || async {
        (readyz(&app).await == 200).then_some(())
    })
    .await;
    for n in 200..210 {
        assert_eq!(post_n(&app, n).await, 200);
        acked.push(n);
    }
    wait_for(60, "everything acknowledged delivered", || {
        let (server, acked) = (&server, &acked);
        async move {
            let bodies: Vec<String> = received_at(server, "/in")
                .await
                .iter()
                .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                .collect();
            acked
                .iter()
                .all(|n| bodies.iter().any(|b| b.contains(&format!("\"{n}\""))))
                .then_some(())
        }
    })
    .await;
    let t = Instant::now();
    app.stop().await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        t.elapsed()
    );
}

/// An attempt whose record fails while the store is locked elsewhere (here
/// for longer than the 30 s the deliverer used to retry) is recorded once
/// the lock is released, so the next delivery of its ordering key (the
/// same ClickUp task) follows at once instead of waiting minutes for the
/// first one's claim to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_recorded_late_releases_its_ordering_key() {
    use sqlx::Connection;
    let server = slow_target(Duration::from_millis(1500)).await;
    let routes = format!(
        "version: 1\nsources:\n  clickup:\n    verify: clickup\n    secret: {CLICKUP_SECRET}\n\
targets:\n  t:\n    type: http\n    url: {}/in\n\
routes:\n  - name: r\n    source: clickup\n    send:\n      - target: t\n        body: {{n: '{{{{event.history_items.[0].id}}}}'}}\n",
        server.uri()
    );
    let app = spawn_app_with(&routes, on_sqlite).await;
    // Both events are about one task: the second waits for the first.
    assert_eq!(post_n(&app, 1).await, 200);
    assert_eq!(post_n(&app, 2).await, 200);
    wait_for(10, "the first request in flight", || {
        let server = &server;
        async move { (!received_at(server, "/in").await.is_empty()).then_some(()) }
    })
    .await;
    let mut other = sqlx::SqliteConnection::connect(&format!(
        "sqlite://{}",
        app.dir.path().join("data/bridge.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    // The first answer arrives while the lock is held: its record fails
    // until the lock is gone.
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert_eq!(received_at(&server, "/in").await.len(), 1);
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    drop(other);
    let released = Instant::now();
    wait_for(20, "the second event delivered", || {
        let server = &server;
        async move {
            received_at(server, "/in")
                .await
                .iter()
                .any(|r| String::from_utf8_lossy(&r.body).contains("\"2\""))
                .then_some(())
        }
    })
    .await;
    assert!(
        released.elapsed() < Duration::from_secs(15),
        "{:?}",
        released.elapsed()
    );
    let bodies = received_at(&server, "/in").await;
    assert_eq!(bodies.len(), 2, "the first was not sent twice");
    app.stop().await;
}
