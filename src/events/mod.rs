//! Change events: what a commit changed, told to downstream systems (ARCHITECTURE.md; the
//! envelopes follow Vital's, README.md "Vital compatibility").
//!
//! The path of an event, and why nothing is lost:
//! 1. a checkpoint's merge captures the rows it created or updated ([`crate::lake::Changed`]);
//!    each partition's captured rows are written under `_events/staged/` *before* the
//!    partition itself, so a commit that dies half-way still has its changes;
//! 2. after the manifest, the changes become events ([`build`]): `daily.data.<resource>.
//!    created|updated`, plus `historical.data.<resource>.created` for backfills that
//!    completed and `provider.connection.*` for links and lost authorizations;
//! 3. the events are written to the outbox, one batch file per sink (`_events/pending/<sink>/
//!    <batch>.jsonl`, filtered per sink), and only then are the staged changes deleted and the
//!    users' cursors advanced; the next run of the shard enqueues any staged changes left by a
//!    run that died;
//! 4. delivery ([`deliver`]) sends each pending event (webhooks: Svix-compatible signatures,
//!    retries on a schedule, `Retry-After` honoured; files: one JSON-lines file per batch), and
//!    settles each batch: delivered records to `delivered/`, exhausted or refused ones to
//!    `dead/`, the rest back to `pending/` with their next attempt time.
//!
//! Delivery is at least once: an event's id (`webhook-id`) is fixed when it is enqueued and
//! stays the same across retries and redeliveries, so receivers deduplicate on it. Events of
//! one (user, event type) are delivered in order: while one waits for a retry, the later
//! ones of the same user and resource wait too (a `.created` is never overtaken by the
//! `.updated` of the same row).

pub mod build;
pub mod capture;
pub mod deliver;
pub mod erase;
pub mod objects;
pub mod outbox;
pub mod sign;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Classify, ErrorClass};
use crate::secret::Secret;
use crate::storage::Location;

pub use build::Builder;
pub use deliver::{DeliverOptions, Deliverer, DeliverySummary};
pub use outbox::{Outbox, Record, Status};

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("event outbox at '{key}': {source}")]
    Storage { key: String, source: object_store::Error },
    /// `line` counts from 1.
    #[error("event outbox file '{key}' is not valid: line {line}: {source}")]
    Corrupt { key: String, line: usize, source: serde_json::Error },
    #[error("events sink '{sink}': {reason}")]
    Sink { sink: String, reason: String },
    #[error("the delivery lease (_events/delivery.lock) was lost to another process; it delivers the rest")]
    LeaseLost,
    #[error("the delivery lease is busy: {source}")]
    Busy { source: crate::lease::LeaseError },
    #[error("building events: {0}")]
    Build(String),
    #[error("event {id}: not found in the outbox (delivered or dead)")]
    UnknownEvent { id: String },
    #[error(transparent)]
    Lake(#[from] crate::lake::LakeError),
}

impl Classify for EventsError {
    fn class(&self) -> ErrorClass {
        match self {
            EventsError::Storage { .. } => ErrorClass::Transient,
            EventsError::LeaseLost | EventsError::Busy { .. } => ErrorClass::Busy,
            EventsError::Corrupt { .. } => ErrorClass::Data,
            EventsError::Build(_) => ErrorClass::Internal,
            EventsError::Sink { .. } | EventsError::UnknownEvent { .. } => ErrorClass::Config,
            EventsError::Lake(e) => e.class(),
        }
    }
}

pub(crate) fn storage(key: &object_store::path::Path) -> impl FnOnce(object_store::Error) -> EventsError + '_ {
    move |source| EventsError::Storage { key: key.to_string(), source }
}

/// One event: its envelope exactly as signed and sent, and what identifies it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `msg_...`: fixed at enqueue, the `webhook-id` of every attempt.
    pub id: String,
    pub event_type: String,
    pub user_id: String,
    pub created_at: DateTime<Utc>,
    /// The envelope `{"event_type", "user_id", "client_user_id", "team_id", "data"}` as JSON.
    pub body: String,
}

impl Event {
    /// Events with the same key are delivered in order: the user, and the event type without
    /// its `.created` / `.updated` suffix.
    pub fn ordering_key(&self) -> String {
        let family = self
            .event_type
            .strip_suffix(".created")
            .or_else(|| self.event_type.strip_suffix(".updated"))
            .unwrap_or(&self.event_type);
        format!("{}/{family}", self.user_id)
    }
}

/// Event types a sink takes: exact names and `*` wildcards (`daily.data.*`,
/// `*.created`, `*`). Empty takes everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter(pub Vec<String>);

impl Filter {
    pub fn matches(&self, event_type: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|p| glob(p, event_type))
    }
}

fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// A webhook endpoint.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    /// The HMAC key: the `whsec_` secret, base64-decoded.
    pub key: Secret,
    pub max_per_second: Option<f64>,
    pub timeout: Duration,
    /// Deliveries in flight at once (different users or resources; one key is in order).
    pub concurrency: usize,
}

/// Where a sink sends events.
#[derive(Debug, Clone)]
pub enum SinkKind {
    Webhook(Webhook),
    /// Manifest mode: one JSON-lines file per batch under this location.
    Files(Location),
}

/// One destination of events, with its filter and retry schedule.
#[derive(Debug, Clone)]
pub struct Sink {
    /// Names its outbox folders (`_events/pending/<name>/`).
    pub name: String,
    pub filter: Filter,
    pub kind: SinkKind,
    /// The pause after each failed attempt; when they run out the event is dead.
    pub retry_schedule: Vec<Duration>,
}

/// Vital's (Svix's) schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
pub fn default_retry_schedule() -> Vec<Duration> {
    [0u64, 5, 300, 1800, 7200, 18_000, 36_000, 36_000].into_iter().map(Duration::from_secs).collect()
}

/// The resolved `[events]` settings of a pipeline.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// The envelope's `team_id`.
    pub team_id: String,
    /// Samples per time-series event at most.
    pub max_samples_per_event: usize,
    /// Also send backfilled rows as `daily.data` events (Vital sends only
    /// `historical.data.<resource>.created` for a backfill; ETL consumers may want the rows).
    pub history_as_daily: bool,
    /// At the end of a run, wait this long at most for retries that fall due (the first
    /// retries of Vital's schedule come after 0 and 5 s).
    pub final_wait: Duration,
    /// Delivered records are kept this long (none: forever).
    pub delivered_retention: Option<Duration>,
    pub sinks: Vec<Sink>,
    /// Vital's `logo` of the Withings provider: a URL (Vital's models require a string).
    pub provider_logo: String,
    /// The provider fields Vital still documents though deprecated: `name`, `slug` and `logo`
    /// in a time series' `source`.
    pub legacy_fields: bool,
    /// `daily.data.hypnogram.*` and `historical.data.hypnogram.created` (Vital deprecated the
    /// resource; its SDK has no model for them).
    pub hypnogram_events: bool,
    /// `daily.data.sleep_stream.*` and `historical.data.sleep_stream.created` (no Vital
    /// version defines them).
    pub sleep_stream_events: bool,
    /// `daily.data.sleep_cycle.*` and `historical.data.sleep_cycle.created` (Vital's
    /// replacement of the hypnogram).
    pub sleep_cycle_events: bool,
}

/// Withings' logo, as `provider.logo` and the legacy `source.logo` carry it by default.
pub const WITHINGS_LOGO: &str = "https://www.withings.com/favicon.ico";

impl EventsConfig {
    /// How long the last delivery pass of a run (or of `link`) may start attempts: at least
    /// 10 s, so `final_wait_seconds = 0` still makes one pass.
    pub fn pass_budget(&self) -> Duration {
        self.final_wait.max(Duration::from_secs(10))
    }
}

impl Default for EventsConfig {
    fn default() -> EventsConfig {
        EventsConfig {
            team_id: "withings-lake".into(),
            max_samples_per_event: 1000,
            history_as_daily: false,
            final_wait: Duration::from_secs(10),
            delivered_retention: Some(Duration::from_secs(30 * 86_400)),
            sinks: Vec::new(),
            provider_logo: WITHINGS_LOGO.into(),
            legacy_fields: true,
            hypnogram_events: true,
            sleep_stream_events: false,
            sleep_cycle_events: true,
        }
    }
}

/// A batch name: sortable by creation time, unique per run, shard and sequence.
pub fn batch_name(at: DateTime<Utc>, origin: &str) -> String {
    format!("{}-{origin}", at.format("%Y%m%dT%H%M%S%3fZ"))
}

/// Announces a linked user (`provider.connection.created`): enqueued in the lake's outbox,
/// then delivered (waiting up to `final_wait` for quick retries). The link itself is done
/// whatever happens here; an event that is not delivered stays pending.
pub async fn announce_link(
    cfg: &EventsConfig,
    lake: &crate::lake::Lake,
    user: &crate::credentials::UserRecord,
) -> Result<DeliverySummary, EventsError> {
    use sha2::Digest;
    let now = Utc::now();
    let tag = hex::encode(&sha2::Sha256::digest(user.user_id.as_bytes())[..6]);
    let batch = batch_name(now, &format!("link-{tag}"));
    let ids = user.vital_user_id.iter().map(|v| (user.user_id.clone(), v.clone())).collect();
    let mut b = Builder::new(&batch, now, cfg).with_vital_ids(ids);
    b.connection_created(&user.user_id, &user.withings_userid, &user.scopes);
    b.missing_scopes(&user.user_id, &user.scopes);
    let outbox = Outbox::new(lake.location.clone(), cfg.sinks.clone()).with_retention(cfg.delivered_retention);
    outbox.enqueue(&batch, &b.finish()).await?;
    // Enqueued: the announcement is safe. Delivery trouble leaves it pending, reported.
    let delivery =
        async { Deliverer::new(outbox)?.deliver(DeliverOptions { wait: cfg.final_wait, budget: Some(cfg.pass_budget()) }).await };
    Ok(delivery.await.unwrap_or_else(|e| DeliverySummary { errors: vec![e.to_string()], ..Default::default() }))
}

/// Enqueues the events of commits of `shard` that died before their outbox write (their
/// captured changes are still under `_events/staged/`), under their own batch names, so with
/// the same event ids; a batch some sink already has (the run died after its enqueue) is left
/// as it is. The caller holds the shard's lease. `vital_ids`: the given Vital user ids
/// (application id -> UUID) of the linked users. Returns the events enqueued.
pub async fn recover(
    lake: &crate::lake::Lake,
    shard: u32,
    cfg: &EventsConfig,
    outbox: &Outbox,
    vital_ids: &std::collections::HashMap<String, String>,
) -> Result<Vec<Event>, EventsError> {
    let mut out = Vec::new();
    let staged = capture::staged_changes(lake, shard).await?;
    if staged.is_empty() {
        return Ok(out);
    }
    // The ids the lake's users table holds for the shard (written under the lease before any
    // commit), with the given ones on top.
    let mut ids: std::collections::HashMap<String, String> =
        lake.user_ids(shard).await?.into_values().map(|u| (u.user_id, u.vital_user_id)).collect();
    ids.extend(vital_ids.iter().map(|(k, v)| (k.clone(), v.clone())));
    for (batch, changes) in staged {
        let mut b = Builder::new(&batch, Utc::now(), cfg).with_vital_ids(ids.clone());
        b.daily(&changes).map_err(|e| EventsError::Build(e.to_string()))?;
        let events = b.finish();
        // Per sink: one that has the batch (pending, delivered or dead) keeps it as it is.
        let mut missing = std::collections::BTreeSet::new();
        for sink in &outbox.sinks {
            if !outbox.has_batch(&sink.name, &batch).await? {
                missing.insert(sink.name.clone());
            }
        }
        if !missing.is_empty() {
            outbox.enqueue_to(&batch, &events, |s| missing.contains(&s.name)).await?;
            tracing::warn!(shard, batch = %batch, events = events.len(), "enqueued the events of a commit that was interrupted");
            out.extend(events);
        }
        capture::clear_staged_changes(lake, shard, &batch).await?;
    }
    Ok(out)
}

/// Announces `provider.connection.error` for a linked user (`error_type` one of Vital's,
/// e.g. `deregistered_per_provider` when the person revoked the app at Withings): enqueued
/// in the outbox, then delivered like [`announce_link`]'s event.
pub async fn announce_connection_error(
    cfg: &EventsConfig,
    lake: &crate::lake::Lake,
    user: &crate::credentials::UserRecord,
    error_type: &str,
    message: &str,
    details: &str,
) -> Result<DeliverySummary, EventsError> {
    use sha2::Digest;
    let now = Utc::now();
    let tag = hex::encode(&sha2::Sha256::digest(user.user_id.as_bytes())[..6]);
    let batch = batch_name(now, &format!("connection-error-{tag}"));
    let ids = user.vital_user_id.iter().map(|v| (user.user_id.clone(), v.clone())).collect();
    let mut b = Builder::new(&batch, now, cfg).with_vital_ids(ids);
    b.connection_error(&user.user_id, error_type, message, details);
    let outbox = Outbox::new(lake.location.clone(), cfg.sinks.clone()).with_retention(cfg.delivered_retention);
    outbox.enqueue(&batch, &b.finish()).await?;
    let delivery =
        async { Deliverer::new(outbox)?.deliver(DeliverOptions { wait: cfg.final_wait, budget: Some(cfg.pass_budget()) }).await };
    Ok(delivery.await.unwrap_or_else(|e| DeliverySummary { errors: vec![e.to_string()], ..Default::default() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_take_exact_names_and_wildcards() {
        let f = Filter(vec!["daily.data.*".into(), "provider.connection.created".into()]);
        assert!(f.matches("daily.data.steps.created"));
        assert!(f.matches("provider.connection.created"));
        assert!(!f.matches("provider.connection.error"));
        assert!(!f.matches("historical.data.steps.created"));
        assert!(Filter(vec![]).matches("anything"));
        assert!(Filter(vec!["*".into()]).matches("historical.data.sleep.created"));
        let mid = Filter(vec!["*.weight.*".into()]);
        assert!(mid.matches("daily.data.weight.updated"));
        assert!(!mid.matches("daily.data.steps.updated"));
        assert!(Filter(vec!["*.created".into()]).matches("daily.data.steps.created"));
        assert!(!Filter(vec!["*.created".into()]).matches("daily.data.steps.updated"));
    }

    #[test]
    fn created_and_updated_of_one_resource_share_an_ordering_key() {
        let e = |t: &str| Event {
            id: "msg_1".into(),
            event_type: t.into(),
            user_id: "u1".into(),
            created_at: Utc::now(),
            body: "{}".into(),
        };
        assert_eq!(e("daily.data.steps.created").ordering_key(), e("daily.data.steps.updated").ordering_key());
        assert_ne!(e("daily.data.steps.created").ordering_key(), e("daily.data.weight.created").ordering_key());
    }
}
