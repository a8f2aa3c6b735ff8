//! Per-run request accounting: what the run cost in requests, per endpoint and outcome, how
//! many were retries, and how long tasks waited for the rate limiter. Run reports print it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct EndpointCounts {
    /// outcome (`0`, a Withings status, `http_502`, `not_json`, `network`, ...) -> requests.
    pub by_outcome: BTreeMap<String, u64>,
    pub requests: u64,
    pub retries: u64,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Snapshot {
    pub endpoints: BTreeMap<String, EndpointCounts>,
    pub requests: u64,
    pub retries: u64,
    /// 601 answers received (each one paused every task).
    pub rate_limited: u64,
    pub limiter_wait_ms: u64,
}

#[derive(Debug, Default)]
pub struct Accounting {
    inner: Mutex<Snapshot>,
}

impl Accounting {
    pub fn record(&self, endpoint: &str, outcome: &str, retry: bool, waited: Duration) {
        let mut s = self.inner.lock().expect("accounting lock");
        let e = s.endpoints.entry(endpoint.to_string()).or_default();
        *e.by_outcome.entry(outcome.to_string()).or_default() += 1;
        e.requests += 1;
        if retry {
            e.retries += 1;
        }
        s.requests += 1;
        if retry {
            s.retries += 1;
        }
        if outcome == "601" {
            s.rate_limited += 1;
        }
        s.limiter_wait_ms += waited.as_millis() as u64;
    }

    pub fn snapshot(&self) -> Snapshot {
        self.inner.lock().expect("accounting lock").clone()
    }
}
