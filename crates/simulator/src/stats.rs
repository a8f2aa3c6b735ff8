//! Request accounting for `/_sim/stats`: what a client really cost, per endpoint and status.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Default, Serialize)]
pub struct Stats {
    /// endpoint -> status (Withings status, or `http_NNN`, or `truncated`) -> count.
    pub requests: BTreeMap<String, BTreeMap<String, u64>>,
    pub total_requests: u64,
    /// Requests answered 601 because the sliding window was full.
    pub limit_violations: u64,
    pub faults_injected: u64,
    /// Successful refresh-token grants.
    pub auth_refreshes: u64,
    pub notifications_sent: u64,
    pub notifications_failed: u64,
}

impl Stats {
    pub fn record(&mut self, endpoint: &str, status: &str, limited: bool) {
        *self.requests.entry(endpoint.to_string()).or_default().entry(status.to_string()).or_default() += 1;
        self.total_requests += 1;
        if limited {
            self.limit_violations += 1;
        }
    }

    pub fn record_fault(&mut self, endpoint: &str, status: &str) {
        self.record(endpoint, status, false);
        self.faults_injected += 1;
    }
}
