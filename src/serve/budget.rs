//! The application's request budget shared between a running service and batch runs.
//! Withings counts requests per application: a service and a CLI run side by side must
//! together stay under `requests_per_minute`. The leader writes what it uses to
//! `_service/budget.json` (with its lease's expiry, renewed with it; deleted when it stops),
//! and a batch run started meanwhile takes only what is left ([`left_for_batch`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::storage::Location;

/// What the leading service uses, until when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceBudget {
    pub requests_per_minute: u32,
    pub expires_at: DateTime<Utc>,
}

pub fn key(location: &Location) -> object_store::path::Path {
    location.key(&["_service", "budget.json"])
}

/// The budget a batch run may use beside a leading service: `total` minus what the service
/// uses (at least 1), or `None` when no service leads (no record, or an expired one). A
/// record that does not read counts as none (logged).
pub async fn left_for_batch(location: &Location, total: u32) -> Option<u32> {
    use object_store::ObjectStoreExt;
    let k = key(location);
    let bytes = match location.store.get(&k).await {
        Ok(r) => r.bytes().await.ok()?,
        Err(_) => return None,
    };
    let b: ServiceBudget = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(key = %k, error = %e, "the service's budget record does not read: ignored");
            return None;
        }
    };
    (b.expires_at > Utc::now()).then(|| total.saturating_sub(b.requests_per_minute).max(1))
}
