//! Events from what a commit changed, in Vital's shapes (Vital's webhook payloads, checked by `tests/vital/check_events.py` against Vital's SDK):
//! - summaries (activity, sleep, body, workouts): one `daily.data.<resource>.created|updated`
//!   per row, `data` the harmonized object (Vital's fields at their Vital paths, e.g.
//!   `heart_rate.avg_bpm`, `source.type`; the lake's other columns beside them);
//! - time series: per user, resource, source device and created/updated, `data` is
//!   `{"data": [samples], "source": {...}, "user_id"}` with at most `max_samples_per_event`
//!   samples each; a sample has `timestamp` (the start, for interval types), `start`/`end`,
//!   `value` or `systolic`/`diastolic`, `unit`, `timezone_offset` and `type`;
//! - `historical.data.<resource>.created`, `provider.connection.created|error`.
//!
//! The envelope is `{"event_type", "user_id", "client_user_id", "team_id", "data"}`; this
//! program has one id per person (the application's), so `user_id` and `client_user_id` are
//! both that id. Events of a batch come ordered by user, resource, then created before updated.
//!
//! The objects themselves (summaries, samples, `source`) come from [`super::objects`], shared
//! with the REST read side.

use std::collections::BTreeMap;

use arrow::array::AsArray;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::Event;
use super::objects::{self, SourceStyle};
use crate::lake::{Changed, TableId};
use crate::schema::{Kind, Resource};

/// (user, resource position, updated, source as JSON text): one time-series event group.
type SeriesKey = (String, usize, bool, String);

/// Builds the events of one batch; ids follow from the batch name and the event's position,
/// so rebuilding a batch (recovery) gives the same ids.
#[derive(Debug, Clone)]
pub struct Builder {
    pub team_id: String,
    pub max_samples_per_event: usize,
    /// The `source` of time series (and `logo`, `legacy_fields`: the provider object).
    source_style: SourceStyle,
    hypnogram: bool,
    sleep_stream: bool,
    sleep_cycle: bool,
    /// Application id -> Vital-style user id, for users whose id was given (others derive).
    vital_ids: std::collections::HashMap<String, String>,
    batch: String,
    at: DateTime<Utc>,
    events: Vec<Event>,
}

impl Builder {
    pub fn new(batch: &str, at: DateTime<Utc>, cfg: &super::EventsConfig) -> Builder {
        Builder {
            team_id: cfg.team_id.clone(),
            max_samples_per_event: cfg.max_samples_per_event.max(1),
            source_style: SourceStyle::of(cfg),
            hypnogram: cfg.hypnogram_events,
            sleep_stream: cfg.sleep_stream_events,
            sleep_cycle: cfg.sleep_cycle_events,
            vital_ids: Default::default(),
            batch: batch.to_string(),
            at,
            events: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn finish(self) -> Vec<Event> {
        self.events
    }

    /// The Vital-style user ids of the people whose id was given (application id -> UUID);
    /// the others get the id derived from their application id.
    pub fn with_vital_ids(mut self, ids: std::collections::HashMap<String, String>) -> Builder {
        self.vital_ids = ids;
        self
    }

    /// The Vital-style `user_id` of an application id.
    fn vital(&self, user_id: &str) -> String {
        self.vital_ids.get(user_id).cloned().unwrap_or_else(|| crate::credentials::derived_vital_user_id(user_id))
    }

    /// Whether events of `resource` are sent (hypnogram and sleep_stream are settings).
    fn announces(&self, resource: Resource) -> bool {
        match resource {
            Resource::Hypnogram => self.hypnogram,
            Resource::SleepStream => self.sleep_stream,
            Resource::SleepCycle => self.sleep_cycle,
            _ => true,
        }
    }

    /// Vital's provider object (`ClientFacingProvider`).
    fn provider(&self) -> Value {
        json!({ "name": "Withings", "slug": "withings", "logo": self.source_style.logo })
    }

    fn push(&mut self, event_type: String, user_id: &str, data: Value) {
        use sha2::Digest;
        let seq = self.events.len();
        let digest = sha2::Sha256::digest(format!("{}:{seq}", self.batch).as_bytes());
        let id = format!("msg_{}", &hex::encode(digest)[..27]);
        // Vital's identity: `user_id` the Vital-style UUID, `client_user_id` the application's.
        let envelope = json!({
            "event_type": event_type,
            "user_id": self.vital(user_id),
            "client_user_id": user_id,
            "team_id": self.team_id,
            "data": data,
        });
        self.events.push(Event {
            id,
            event_type,
            user_id: user_id.to_string(),
            created_at: self.at,
            body: serde_json::to_string(&envelope).expect("an envelope serializes"),
        });
    }

    /// `daily.data.<resource>.created|updated` for the captured changes of a commit.
    pub fn daily(&mut self, changes: &[(TableId, Changed)]) -> Result<(), arrow::error::ArrowError> {
        // (user, resource, updated) -> summaries; (user, resource, updated, source) -> samples.
        type Key = (String, usize, bool);
        let mut summaries: BTreeMap<Key, Vec<Value>> = BTreeMap::new();
        let mut series: BTreeMap<SeriesKey, (Value, Vec<Value>)> = BTreeMap::new();
        for (table, changed) in changes {
            let TableId::Resource(resource) = table else { continue };
            if !self.announces(*resource) {
                continue;
            }
            let order = Resource::ALL.iter().position(|r| r == resource).unwrap_or(usize::MAX);
            let rows = &changed.rows;
            let users = rows
                .column_by_name("user_id")
                .ok_or_else(|| arrow::error::ArrowError::SchemaError(format!("{resource} has no column user_id")))?
                .as_string::<i32>();
            match resource.schema().kind {
                Kind::Summary => {
                    let objects = objects::summaries(*resource, rows, |u| self.vital(u))?;
                    for ((i, updated), o) in changed.updated.iter().enumerate().zip(objects) {
                        summaries.entry((users.value(i).to_string(), order, *updated)).or_default().push(o);
                    }
                }
                Kind::Timeseries => {
                    let samples = objects::samples(*resource, rows)?;
                    for ((i, updated), row) in changed.updated.iter().enumerate().zip(samples) {
                        let entry = match series.entry((users.value(i).to_string(), order, *updated, row.group)) {
                            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                            std::collections::btree_map::Entry::Vacant(e) => {
                                e.insert((objects::source(rows, i, &self.source_style)?, Vec::new()))
                            }
                        };
                        entry.1.push(row.sample);
                    }
                }
                Kind::Landing => {}
            }
        }
        // Merge both maps in (user, resource, created-before-updated) order.
        let mut keys: Vec<Key> = summaries.keys().cloned().collect();
        keys.extend(series.keys().map(|(u, o, up, _)| (u.clone(), *o, *up)));
        keys.sort();
        keys.dedup();
        for (user, order, updated) in keys {
            let resource = Resource::ALL[order];
            let event_type = format!("daily.data.{}.{}", resource.as_str(), if updated { "updated" } else { "created" });
            if let Some(objects) = summaries.remove(&(user.clone(), order, updated)) {
                for o in objects {
                    self.push(event_type.clone(), &user, o);
                }
            }
            let groups: Vec<SeriesKey> =
                series.keys().filter(|(u, o, up, _)| *u == user && *o == order && *up == updated).cloned().collect();
            for g in groups {
                let (source, mut samples) = series.remove(&g).expect("listed above");
                let t = |v: &Value| v.get("timestamp").and_then(Value::as_str).unwrap_or_default().to_string();
                samples.sort_by_cached_key(t);
                for chunk in samples.chunks(self.max_samples_per_event) {
                    let mut data = json!({ "data": chunk, "source": source, "user_id": self.vital(&user) });
                    if self.source_style.legacy_fields {
                        // The provider object Vital's older time-series events carried.
                        data["provider"] = self.provider();
                    }
                    self.push(event_type.clone(), &user, data);
                }
            }
        }
        Ok(())
    }

    /// `historical.data.<resource>.created`: the backfill of that (user, resource) is done
    /// over `[start, end]`.
    pub fn historical(&mut self, user_id: &str, resource: Resource, start: DateTime<Utc>, end: DateTime<Utc>) {
        if !self.announces(resource) {
            return;
        }
        let data = json!({
            "user_id": self.vital(user_id),
            "start_date": start.to_rfc3339(),
            "end_date": end.to_rfc3339(),
            "is_final": true,
            "provider": "withings",
        });
        self.push(format!("historical.data.{}.created", resource.as_str()), user_id, data);
    }

    /// `provider.connection.created`, with each resource available or not under the granted
    /// scopes.
    pub fn connection_created(&mut self, user_id: &str, withings_userid: &str, scopes: &[String]) {
        let mut availability = Map::new();
        for r in Resource::ALL {
            let needed = scopes_for(r);
            let ok = needed.iter().all(|s| scopes.iter().any(|g| g == s));
            let mut v = json!({ "status": if ok { "available" } else { "unavailable" } });
            if !ok {
                let denied: Vec<&str> = needed.iter().copied().filter(|s| !scopes.iter().any(|g| g == s)).collect();
                v["scope_requirements"] = json!({
                    "user_granted": { "required": [], "optional": [] },
                    "user_denied": { "required": denied, "optional": [] },
                });
            }
            availability.insert(r.as_str().to_string(), v);
        }
        let data = json!({
            "user_id": self.vital(user_id),
            "provider": self.provider(),
            "source": self.provider(),
            "external_user_id": withings_userid,
            "resource_availability": availability,
        });
        self.push("provider.connection.created".into(), user_id, data);
    }

    /// `provider.connection.error` with `required_scopes_not_granted` when the person left out
    /// scopes some resource needs (the link stands; those resources are unavailable, as
    /// `provider.connection.created` says). Returns whether one was added.
    pub fn missing_scopes(&mut self, user_id: &str, scopes: &[String]) -> bool {
        let mut denied: Vec<&str> = Vec::new();
        let mut unavailable: Vec<&str> = Vec::new();
        for r in Resource::ALL {
            let missing: Vec<&str> = scopes_for(r).into_iter().filter(|s| !scopes.iter().any(|g| g == s)).collect();
            if !missing.is_empty() {
                unavailable.push(r.as_str());
                denied.extend(missing);
            }
        }
        denied.sort();
        denied.dedup();
        if denied.is_empty() {
            return false;
        }
        let message = format!("the Withings authorization leaves out {}", denied.join(", "));
        let details = format!("unavailable until the person links again granting them: {}", unavailable.join(", "));
        self.connection_error(user_id, "required_scopes_not_granted", &message, &details);
        true
    }

    /// `provider.connection.error` in Vital's shape (`provider` the slug, `error_details` a
    /// string): `error_type` one of Vital's (`token_refresh_failed`,
    /// `deregistered_per_provider`, `required_scopes_not_granted`, ...), `message` what
    /// happened (Withings' words where it said something), `details` what to do about it.
    pub fn connection_error(&mut self, user_id: &str, error_type: &str, message: &str, details: &str) {
        let data = json!({
            "user_id": self.vital(user_id),
            "provider": "withings",
            "message": message,
            "error_type": error_type,
            "error_details": details,
        });
        self.push("provider.connection.error".into(), user_id, data);
    }
}

/// The Withings scopes a resource's endpoints need.
fn scopes_for(r: Resource) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = crate::withings::Endpoint::feeding(&[r]).into_iter().map(|e| e.scope()).collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_batch_and_position() {
        let at = Utc::now();
        let cfg = super::super::EventsConfig { team_id: "team".into(), max_samples_per_event: 10, ..Default::default() };
        let mut a = Builder::new("b-1", at, &cfg);
        a.connection_error("u1", "token_refresh_failed", "link again", "refused");
        a.connection_error("u1", "token_refresh_failed", "link again", "refused");
        let mut b = Builder::new("b-1", at, &cfg);
        b.connection_error("u1", "token_refresh_failed", "link again", "refused");
        let (a, b) = (a.finish(), b.finish());
        assert_eq!(a[0].id, b[0].id);
        assert_ne!(a[0].id, a[1].id);
        assert!(a[0].id.starts_with("msg_") && a[0].id.len() == 31);
        let env: Value = serde_json::from_str(&a[0].body).unwrap();
        assert_eq!(env["event_type"], "provider.connection.error");
        assert_eq!(env["data"]["error_type"], "token_refresh_failed");
        assert_eq!(env["team_id"], "team");
    }

    #[test]
    fn connection_created_names_unavailable_resources() {
        let mut b = Builder::new("b", Utc::now(), &super::super::EventsConfig::default());
        b.connection_created("u1", "123", &["user.metrics".into(), "user.activity".into()]);
        let env: Value = serde_json::from_str(&b.finish()[0].body).unwrap();
        let avail = &env["data"]["resource_availability"];
        assert_eq!(avail["weight"]["status"], "available");
        assert_eq!(avail["steps"]["status"], "available");
        assert_eq!(avail["sleep"]["status"], "unavailable");
        assert_eq!(avail["sleep"]["scope_requirements"]["user_denied"]["required"][0], "user.sleepevents");
        assert_eq!(env["data"]["external_user_id"], "123");
    }

    #[test]
    fn scopes_left_out_are_a_connection_error_naming_them() {
        let mut b = Builder::new("b", Utc::now(), &super::super::EventsConfig::default());
        assert!(b.missing_scopes("u1", &["user.metrics".into(), "user.activity".into()]));
        assert!(!b.missing_scopes("u1", &["user.metrics".into(), "user.activity".into(), "user.sleepevents".into()]));
        let events = b.finish();
        assert_eq!(events.len(), 1);
        let env: Value = serde_json::from_str(&events[0].body).unwrap();
        assert_eq!(env["event_type"], "provider.connection.error");
        assert_eq!(env["data"]["error_type"], "required_scopes_not_granted");
        assert!(env["data"]["message"].as_str().unwrap().contains("user.sleepevents"));
        assert!(env["data"]["error_details"].as_str().unwrap().contains("sleep_cycle"));
    }
}
