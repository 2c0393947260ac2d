//! Prefixed ids (`evt_...`), time-ordered (UUID v7), as newtypes.

use std::fmt;

/// The id of a stored event, `evt_` + a UUID v7 in hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(String);

impl EventId {
    /// A new, time-ordered id.
    pub fn generate() -> Self {
        EventId(format!("evt_{}", uuid::Uuid::now_v7().simple()))
    }
    /// Wraps an id read back from the store.
    pub fn from_stored(s: String) -> Self {
        EventId(s)
    }
    /// The smallest id made at or after `ms` (Unix ms): ids sort by time.
    pub fn floor(ms: i64) -> String {
        format!("evt_{:012x}", ms.clamp(0, 0xffff_ffff_ffff))
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The id of a delivery, `dlv_` + a UUID v7; also its `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(String);

impl DeliveryId {
    /// The id of send step `step` of `route` for `event`: the event's
    /// time-ordered UUID followed by a hash of the route and step. The same
    /// inputs always give the same id, so an event routed twice (after a
    /// power cut lost the first routing) gets the same Idempotency-Keys.
    pub fn for_step(event: &EventId, route: &str, step: u32) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(route.as_bytes());
        h.update([0]);
        h.update(step.to_be_bytes());
        let suffix = hex::encode(&h.finalize()[..6]);
        let base = event
            .as_str()
            .strip_prefix("evt_")
            .unwrap_or(event.as_str());
        DeliveryId(format!("dlv_{base}{suffix}"))
    }
    /// Wraps an id read back from the store.
    pub fn from_stored(s: String) -> Self {
        DeliveryId(s)
    }
    /// The smallest id of an event made at or after `ms` (Unix ms).
    pub fn floor(ms: i64) -> String {
        format!("dlv_{:012x}", ms.clamp(0, 0xffff_ffff_ffff))
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_are_stable_per_step_and_ordered_by_event_time() {
        let a = EventId::generate();
        let b = EventId::generate();
        assert_eq!(
            DeliveryId::for_step(&a, "r", 0),
            DeliveryId::for_step(&a, "r", 0)
        );
        assert_ne!(
            DeliveryId::for_step(&a, "r", 0),
            DeliveryId::for_step(&a, "r", 1)
        );
        assert_ne!(
            DeliveryId::for_step(&a, "r", 0),
            DeliveryId::for_step(&a, "s", 0)
        );
        assert!(
            DeliveryId::for_step(&a, "z", 9) < DeliveryId::for_step(&b, "a", 0),
            "later events sort later"
        );
        assert!(
            DeliveryId::for_step(&a, "r", 0)
                .as_str()
                .starts_with("dlv_")
        );
    }

    #[test]
    fn a_floor_sorts_between_the_ids_made_before_and_after_it() {
        let before = EventId::generate();
        let t = now_millis() + 2;
        while now_millis() < t + 1 {
            std::hint::spin_loop();
        }
        let after = EventId::generate();
        let floor = EventId::floor(t);
        assert!(before.as_str() < floor.as_str(), "{before} < {floor}");
        assert!(floor.as_str() <= after.as_str(), "{floor} <= {after}");
        let d = DeliveryId::for_step(&after, "r", 0);
        assert!(DeliveryId::floor(t).as_str() <= d.as_str());
        assert!(DeliveryId::for_step(&before, "r", 0).as_str() < DeliveryId::floor(t).as_str());
    }
}
