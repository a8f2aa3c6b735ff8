//! `/metrics`: Prometheus text from a per-service registry (several services can run in one
//! process, as the tests do). No label names a user.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub appli: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PriorityLabels {
    pub priority: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    pub mode: String,
    pub result: String,
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RouteLabels, Counter>,
    pub withings_requests: Family<EndpointLabels, Gauge>,
    pub limiter_wait_seconds: Gauge<f64, AtomicU64>,
    pub notifications: Family<NotificationLabels, Counter>,
    pub jobs_queued: Family<PriorityLabels, Gauge>,
    pub runs: Family<ModeLabels, Counter>,
    pub notification_to_commit: Histogram,
    pub rows_committed: Counter,
    pub events: Family<ResultLabels, Counter>,
    pub outbox_pending: Gauge,
    pub users: Family<StatusLabels, Gauge>,
    pub quiet_feeds: Counter,
    pub subscriptions_repaired: Counter,
    pub leader: Gauge,
    pub poll_period_seconds: Gauge<f64, AtomicU64>,
    pub inbox_write_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("withings_lake");
        let m = Metrics {
            registry: Registry::default(),
            http_requests: Family::default(),
            withings_requests: Family::default(),
            limiter_wait_seconds: Gauge::default(),
            notifications: Family::default(),
            jobs_queued: Family::default(),
            runs: Family::default(),
            notification_to_commit: Histogram::new(exponential_buckets(0.25, 2.0, 14)),
            rows_committed: Counter::default(),
            events: Family::default(),
            outbox_pending: Gauge::default(),
            users: Family::default(),
            quiet_feeds: Counter::default(),
            subscriptions_repaired: Counter::default(),
            leader: Gauge::default(),
            poll_period_seconds: Gauge::default(),
            inbox_write_failures: Counter::default(),
        };
        registry.register("http_requests", "HTTP requests answered, by route and status", m.http_requests.clone());
        registry.register(
            "withings_requests",
            "Requests sent to Withings since start, by endpoint and outcome",
            m.withings_requests.clone(),
        );
        registry.register(
            "limiter_wait_seconds",
            "Time requests spent waiting for the rate limiter since start (summed)",
            m.limiter_wait_seconds.clone(),
        );
        registry.register("notifications", "Withings notifications received, by appli and result", m.notifications.clone());
        registry.register("jobs_queued", "Jobs waiting, by priority (live, poll, backfill)", m.jobs_queued.clone());
        registry.register("runs", "Engine runs, by mode and result", m.runs.clone());
        registry.register(
            "notification_to_commit_seconds",
            "From a notification's arrival to the commit of its job",
            m.notification_to_commit.clone(),
        );
        registry.register("rows_committed", "Rows committed to the lake", m.rows_committed.clone());
        registry.register("events", "Change events, by result (enqueued, delivered, dead)", m.events.clone());
        registry.register("outbox_pending", "Events pending delivery after the last run", m.outbox_pending.clone());
        registry.register("users", "Linked users, by status", m.users.clone());
        registry.register("quiet_feeds", "Notification feeds found silent while polling found changes", m.quiet_feeds.clone());
        registry.register(
            "subscriptions_repaired",
            "Notification subscriptions re-created by reconcile",
            m.subscriptions_repaired.clone(),
        );
        registry.register("leader", "1 while this instance holds the leader lease", m.leader.clone());
        registry.register(
            "poll_period_seconds",
            "The effective fallback poll period (above poll_interval when the budget cannot keep up)",
            m.poll_period_seconds.clone(),
        );
        registry.register(
            "inbox_write_failures",
            "Notifications answered without an inbox entry (the poll covers them)",
            m.inbox_write_failures.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Copies the client's request accounting into the gauges.
    pub fn observe_client(&self, s: &crate::withings::Snapshot) {
        for (endpoint, counts) in &s.endpoints {
            for (outcome, n) in &counts.by_outcome {
                let labels = EndpointLabels { endpoint: endpoint.clone(), outcome: outcome.clone() };
                self.withings_requests.get_or_create(&labels).set(*n as i64);
            }
        }
        self.limiter_wait_seconds.set(s.limiter_wait_ms as f64 / 1000.0);
    }

    pub fn notification(&self, appli: &str, result: &str) {
        self.notifications.get_or_create(&NotificationLabels { appli: appli.into(), result: result.into() }).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
