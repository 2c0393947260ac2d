//! Deliveries started at acceptance (`deliver::direct`): stored claimed in
//! their event's commit, handed to the worker with their slot, never
//! claimed a second time; the rest left to the worker's claim. Driven
//! through the inbound's starter and the worker's step function on a store
//! of their own, with a recording HTTP target.

use crate::support::*;
use clickup_bridge::deliver::direct::{self, Accepted};
use clickup_bridge::ids::{DeliveryId, EventId, now_millis};
use clickup_bridge::route;
use clickup_bridge::store::{DeliveryStatus, Routing};
use clickup_bridge::verify::VerifiedEvent;
use std::path::Path;
use wiremock::MockServer;

/// Routes to the mock with `concurrency` slots; `order_by` of the route.
fn routes(server: &MockServer, concurrency: u32, order_by: &str) -> String {
    format!(
        "sources:\n  clickup:\n    verify: clickup\n    secret: {CLICKUP_SECRET}\ntargets:\n  t:\n    type: http\n    url: {}/in\n    allow_http: true\n    concurrency: {concurrency}\nroutes:\n  - name: r\n    source: clickup\n    order_by: {order_by}\n    send:\n      - target: t\n        body: {{n: '{{{{event.history_items.[0].id}}}}'}}\n",
        server.uri()
    )
}

/// Event `n` accepted as the inbound accepts it: routed, reserved, stored.
async fn accept(rig: &WorkerRig, n: u64) -> (EventId, Routing, direct::Reserved, VerifiedEvent) {
    let ev = verified(n);
    let id = EventId::generate();
    let pipeline = rig.live.load();
    let head = route::EventHead {
        id: &id,
        source: "clickup",
        event_type: &ev.identity().event_type,
    };
    let mut routing = route::at_acceptance(&pipeline, &head, ev.payload()).expect("needs no task");
    let reserved = rig.starter.reserve(
        &pipeline,
        &Accepted {
            id: &id,
            source: "clickup",
            event_type: &ev.identity().event_type,
            body: ev.body(),
            received_at: now_millis(),
        },
        &mut routing,
    );
    (id, routing, reserved, ev)
}

/// `claims` and `lease_until` of a delivery, read from the file.
fn claim_columns(db: &Path, id: &DeliveryId) -> (i64, Option<i64>) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT claims, lease_until FROM deliveries WHERE id = ?1",
        [id.as_str()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

async fn delivered_once(rig: &WorkerRig, server: &MockServer, delivery: &DeliveryId, n: u64) {
    let row = wait_for(10, "the delivery to be recorded delivered", || async {
        let row = rig.store.delivery(delivery).await.ok()??;
        (row.status == DeliveryStatus::Delivered).then_some(row)
    })
    .await;
    assert_eq!(row.attempts, 1, "one attempt");
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 1, "sent once");
    let body: serde_json::Value = serde_json::from_slice(&reqs[0].body).unwrap();
    assert_eq!(
        body["n"],
        format!("{n}"),
        "rendered from the event's payload"
    );
    assert_eq!(
        claim_columns(&rig.db, delivery),
        (0, None),
        "the record ends the claim"
    );
}

/// A delivery whose target has a free slot is stored claimed in the
/// event's commit (leased, its claim counted), so the worker's claim does
/// not take it; handed over, the worker's step starts it without a claim,
/// and it is sent and recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_with_a_free_slot_is_stored_claimed_and_started_without_a_claim() {
    let server = ok_target().await;
    let mut rig = worker_rig(&routes(&server, 1, "none")).await;
    let (id, routing, reserved, mut ev) = accept(&rig, 7).await;
    assert_eq!(reserved.len(), 1, "the only delivery takes the free slot");
    let slots = rig.limits.of(&rig.live.load().targets["t"]).slots.clone();
    assert_eq!(slots.available_permits(), 0, "the slot is held from now on");
    let delivery = routing.deliveries[0].id.clone();
    let lease = routing.deliveries[0].lease_until.expect("marked claimed");
    let tree = ev.take_payload();
    let inserted = rig
        .store
        .insert_routed_event(ev, id, now_millis(), Some(routing))
        .await
        .unwrap();
    assert!(!inserted.duplicate);
    assert_eq!(
        claim_columns(&rig.db, &delivery),
        (1, Some(lease)),
        "stored leased with its claim counted, in the event's commit"
    );
    let claimed = rig
        .store
        .claim_deliveries("t", 10, now_millis(), 60_000)
        .await
        .unwrap();
    assert!(
        claimed.is_empty(),
        "the worker's claim does not take it again"
    );

    rig.starter.start(reserved, Some(tree));
    assert_eq!(
        rig.worker.step().await,
        1,
        "the step starts what was handed over"
    );
    delivered_once(&rig, &server, &delivery, 7).await;
    wait_for(5, "the slot to be free", || {
        let slots = slots.clone();
        async move { (slots.available_permits() == 1).then_some(()) }
    })
    .await;
    assert_eq!(rig.worker.step().await, 0, "nothing left to start or claim");
    rig.store.close().await;
}

/// Without a free slot, or as a later step of its route, a delivery is
/// stored unclaimed and the worker claims it as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_without_a_free_slot_or_behind_an_earlier_step_is_left_to_the_claim() {
    // No free slot: a request in flight holds the only one.
    let server = ok_target().await;
    let mut rig = worker_rig(&routes(&server, 1, "none")).await;
    let slots = rig.limits.of(&rig.live.load().targets["t"]).slots.clone();
    let busy = slots.clone().try_acquire_owned().unwrap();
    let (id, routing, reserved, ev) = accept(&rig, 8).await;
    assert!(reserved.is_empty(), "no slot, no start");
    assert_eq!(routing.deliveries[0].lease_until, None);
    let delivery = routing.deliveries[0].id.clone();
    rig.store
        .insert_routed_event(ev, id, now_millis(), Some(routing))
        .await
        .unwrap();
    assert_eq!(
        claim_columns(&rig.db, &delivery),
        (0, None),
        "stored unclaimed"
    );
    assert_eq!(rig.worker.step().await, 0, "still no free slot");
    drop(busy);
    assert_eq!(rig.worker.step().await, 1, "claimed once the slot is free");
    delivered_once(&rig, &server, &delivery, 8).await;
    rig.store.close().await;

    // A later step of a route waits for the earlier one: only the claim
    // checks that.
    let server = ok_target().await;
    let text = routes(&server, 4, "none").replace(
        "        body: {n: '{{event.history_items.[0].id}}'}\n",
        "        body: {n: '{{event.history_items.[0].id}}'}\n      - target: t\n        body: {second: true}\n",
    );
    let rig = worker_rig(&text).await;
    let (_, routing, reserved, _) = accept(&rig, 9).await;
    assert_eq!(routing.deliveries.len(), 2);
    assert_eq!(reserved.len(), 1, "the first step only");
    assert!(routing.deliveries[0].lease_until.is_some());
    assert_eq!(routing.deliveries[1].lease_until, None);
    reserved.cancel();
    rig.store.close().await;
}

/// Ordered by the task (the default): a delivery whose task has nothing
/// pending at that target is started at acceptance; the next event's, while
/// the first is pending, is stored unclaimed by the commit and waits its
/// turn; of two in one group commit only the earlier keeps its claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_delivery_is_started_at_acceptance_only_when_nothing_of_its_key_is_pending() {
    // The target takes 300 ms: the first is still in flight (pending)
    // when the step that started it claims, so the second waits.
    let server = slow_target(std::time::Duration::from_millis(300)).await;
    let text = routes(&server, 4, "none").replace("    order_by: none\n", "");
    let mut rig = worker_rig(&text).await;
    let (id1, routing1, mut reserved1, ev1) = accept(&rig, 21).await;
    let (id2, routing2, mut reserved2, ev2) = accept(&rig, 22).await;
    assert_eq!(
        routing1.deliveries[0].order.key, routing2.deliveries[0].order.key,
        "one task"
    );
    assert!(routing1.deliveries[0].order.key.is_some());
    assert_eq!(
        (reserved1.len(), reserved2.len()),
        (1, 1),
        "both reserve a slot"
    );
    let (d1, d2) = (
        routing1.deliveries[0].id.clone(),
        routing2.deliveries[0].id.clone(),
    );
    // Queued together: one group commit or two, the earlier keeps its claim.
    let (a, b) = tokio::join!(
        rig.store
            .insert_routed_event(ev1, id1, now_millis(), Some(routing1)),
        rig.store
            .insert_routed_event(ev2, id2, now_millis(), Some(routing2)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.unclaimed.is_empty(), "nothing of its key was pending");
    assert_eq!(b.unclaimed, vec![d2.clone()], "the first one is pending");
    assert_eq!(claim_columns(&rig.db, &d1).0, 1, "stored claimed");
    assert_eq!(claim_columns(&rig.db, &d2), (0, None), "stored unclaimed");
    reserved1.forget(&a.unclaimed);
    reserved2.forget(&b.unclaimed);
    assert!(reserved2.is_empty(), "its slot is given back");
    rig.starter.start(reserved1, None);
    drop(reserved2);

    assert_eq!(
        rig.worker.step().await,
        1,
        "the first starts; the second waits"
    );
    // The worker's step, driven until the second is delivered: it is
    // claimed once the first one's attempt is recorded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (r1, r2) = loop {
        rig.worker.step().await;
        let r1 = rig.store.delivery(&d1).await.unwrap().unwrap();
        let r2 = rig.store.delivery(&d2).await.unwrap().unwrap();
        if r2.status == DeliveryStatus::Delivered {
            break (r1, r2);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second delivery was not delivered: {r2:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(r1.status, DeliveryStatus::Delivered);
    assert!(r1.delivered_at <= r2.delivered_at);
    let reqs = server.received_requests().await.unwrap();
    let ns: Vec<String> = reqs
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["n"].to_string())
        .collect();
    assert_eq!(ns, ["\"21\"", "\"22\""], "in order, each once");
    rig.store.close().await;
}

/// A duplicate starts nothing: its reservation, cancelled, gives its slot
/// back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_reservation_frees_its_slot() {
    let server = ok_target().await;
    let rig = worker_rig(&routes(&server, 1, "none")).await;
    let slots = rig.limits.of(&rig.live.load().targets["t"]).slots.clone();
    let (_, _, reserved, _) = accept(&rig, 10).await;
    assert_eq!(slots.available_permits(), 0);
    reserved.cancel();
    assert_eq!(slots.available_permits(), 1);
    rig.store.close().await;
}

/// A request that ends after its event was committed but before its
/// deliveries were started (its commit answered too late, the sender hung
/// up): dropping the reservation has the worker release them, so they are
/// claimed at once rather than after their lease, and sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_of_a_request_that_ended_before_starting_them_are_released_and_claimed() {
    let server = ok_target().await;
    let mut rig = worker_rig(&routes(&server, 1, "none")).await;
    let (id, routing, reserved, ev) = accept(&rig, 12).await;
    let delivery = routing.deliveries[0].id.clone();
    rig.store
        .insert_routed_event(ev, id, now_millis(), Some(routing))
        .await
        .unwrap();
    assert_eq!(claim_columns(&rig.db, &delivery).0, 1, "stored claimed");
    drop(reserved);
    assert_eq!(
        rig.worker.step().await,
        1,
        "released, then claimed, in one step"
    );
    delivered_once(&rig, &server, &delivery, 12).await;
    rig.store.close().await;
}

/// Stopping with deliveries handed over but not started releases their
/// claims: claimable at once, and not counted as a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_handed_over_but_not_started_at_shutdown_are_released() {
    let server = ok_target().await;
    let rig = worker_rig(&routes(&server, 1, "none")).await;
    let (id, routing, reserved, ev) = accept(&rig, 11).await;
    assert_eq!(reserved.len(), 1);
    let delivery = routing.deliveries[0].id.clone();
    rig.store
        .insert_routed_event(ev, id, now_millis(), Some(routing))
        .await
        .unwrap();
    rig.starter.start(reserved, None);
    let cancel = tokio_util::sync::CancellationToken::new();
    cancel.cancel();
    let WorkerRig {
        store, db, worker, ..
    } = rig;
    worker.run(cancel, std::time::Duration::from_secs(1)).await;
    assert_eq!(claim_columns(&db, &delivery), (0, None), "released");
    assert!(server.received_requests().await.unwrap().is_empty());
    let claimed = store
        .claim_deliveries("t", 10, now_millis(), 60_000)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "claimable at once");
    assert_eq!(claimed[0].unfinished_claims, 0, "not counted as a crash");
    store.close().await;
}
