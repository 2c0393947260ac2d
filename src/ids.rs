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
    /// A new, time-ordered id.
    pub fn generate() -> Self {
        DeliveryId(format!("dlv_{}", uuid::Uuid::now_v7().simple()))
    }
    /// Wraps an id read back from the store.
    pub fn from_stored(s: String) -> Self {
        DeliveryId(s)
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
