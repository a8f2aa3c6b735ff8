//! The run report: what a run did, for people (`--report text`) and schedulers
//! (`--report json`). It never carries a token or a secret: users are named by their ids.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::plan::Estimate;
use crate::lake::Manifest;
use crate::withings::Snapshot;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RowCounts {
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct UserFailure {
    pub user_id: String,
    /// config, auth, transient, data, internal, busy.
    pub class: String,
    pub error: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct UsersReport {
    /// Users this run was for (after `--user-id`, `--users` and `--shard`).
    pub selected: usize,
    pub ok: usize,
    pub failed: usize,
    /// Not finished because the run was interrupted (SIGINT/SIGTERM); the next run resumes.
    pub interrupted: usize,
    /// Linked users skipped because they must link again.
    pub needs_reauth: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestsReport {
    /// Requests the planner decided on, per endpoint (listings, intraday days, sleep sessions).
    pub planned: BTreeMap<String, u64>,
    /// Requests sent, per endpoint (retries and token refreshes included).
    pub sent: BTreeMap<String, u64>,
    pub total_planned: u64,
    pub total_sent: u64,
    pub retries: u64,
    /// 601 answers (each paused every request of the process).
    pub rate_limited: u64,
    /// Time requests spent waiting for the rate limiter, summed over requests.
    pub limiter_wait_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_id: String,
    /// backfill, sync or refresh.
    pub mode: String,
    pub dry_run: bool,
    /// The shards this run wrote (`i` of `--shard i/N`, or every shard).
    pub shards: Vec<u32>,
    pub shard_count: u32,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    pub interrupted: bool,
    pub users: UsersReport,
    pub failures: Vec<UserFailure>,
    /// Table (SQL name) -> rows inserted/updated/deleted by this run's commits.
    pub rows: BTreeMap<String, RowCounts>,
    /// Records quarantined (malformed or unknown; see the `quarantine` table).
    pub quarantined: u64,
    pub requests: RequestsReport,
    pub checkpoints: u32,
    /// Manifest keys of this run's commits.
    pub manifests: Vec<String>,
    /// `--dry-run`: what the run would cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Estimate>,
    /// Change events (with an `[events]` section).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<EventsReport>,
}

/// What a run told downstream systems.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventsReport {
    /// Events written to the outbox, per event type.
    pub enqueued: BTreeMap<String, u64>,
    /// Events of commits that died before their outbox write, recovered by this run.
    pub recovered: u64,
    /// What delivery did during the run (more happens in later runs and `events deliver`).
    pub delivery: crate::events::DeliverySummary,
}

impl Report {
    pub fn new(run_id: &str, mode: &str, dry_run: bool, shard_count: u32) -> Report {
        let now = Utc::now();
        Report {
            run_id: run_id.to_string(),
            mode: mode.to_string(),
            dry_run,
            shards: Vec::new(),
            shard_count,
            started_at: now,
            finished_at: now,
            duration_seconds: 0.0,
            interrupted: false,
            users: UsersReport::default(),
            failures: Vec::new(),
            rows: BTreeMap::new(),
            quarantined: 0,
            requests: RequestsReport::default(),
            checkpoints: 0,
            manifests: Vec::new(),
            plan: None,
            events: None,
        }
    }

    pub(crate) fn add_manifest(&mut self, key: String, m: &Manifest) {
        self.checkpoints += 1;
        self.manifests.push(key);
        for p in &m.partitions {
            let r = self.rows.entry(p.table.clone()).or_default();
            r.inserted += p.counts.inserted as u64;
            r.updated += p.counts.updated as u64;
            r.deleted += p.counts.deleted as u64;
        }
    }

    pub(crate) fn finish(&mut self, planned: BTreeMap<String, u64>, sent: &Snapshot) {
        self.finished_at = Utc::now();
        self.duration_seconds = (self.finished_at - self.started_at).num_milliseconds() as f64 / 1000.0;
        let r = &mut self.requests;
        r.total_planned = planned.values().sum();
        r.planned = planned;
        r.sent = sent.endpoints.iter().map(|(k, v)| (k.clone(), v.requests)).collect();
        r.total_sent = sent.requests;
        r.retries = sent.retries;
        r.rate_limited = sent.rate_limited;
        r.limiter_wait_seconds = sent.limiter_wait_ms as f64 / 1000.0;
    }

    /// Rows inserted + updated + deleted in the resource tables (not the raw landing or the
    /// quarantine).
    pub fn rows_changed(&self) -> u64 {
        self.rows
            .iter()
            .filter(|(t, _)| !t.starts_with("raw_") && t.as_str() != "quarantine")
            .map(|(_, c)| c.inserted + c.updated + c.deleted)
            .sum()
    }

    /// 0 when every selected user finished, 1 (partial) when some failed or the run was
    /// interrupted before they finished.
    pub fn exit_code(&self) -> u8 {
        if self.users.failed > 0 || self.users.interrupted > 0 || self.interrupted { 1 } else { 0 }
    }

    /// A short human summary.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} {}{} · shards {:?} of {} · {:.1} s{}",
            self.mode,
            self.run_id,
            if self.dry_run { " (dry run)" } else { "" },
            self.shards,
            self.shard_count,
            self.duration_seconds,
            if self.interrupted { " · interrupted" } else { "" }
        );
        if let Some(plan) = &self.plan {
            let _ = writeln!(
                s,
                "plan for {} users: {} requests (at most), about {} s at {} requests/minute",
                plan.users, plan.total, plan.eta_seconds, plan.requests_per_minute
            );
            for (e, n) in &plan.requests {
                let _ = writeln!(s, "  {e:<22} {n:>8}");
            }
            return s;
        }
        let u = &self.users;
        let _ = writeln!(
            s,
            "users: {} selected, {} ok, {} failed, {} interrupted, {} need to link again",
            u.selected,
            u.ok,
            u.failed,
            u.interrupted,
            u.needs_reauth.len()
        );
        for f in &self.failures {
            let _ = writeln!(s, "  failed {} ({}): {}", f.user_id, f.class, f.error);
        }
        if !u.needs_reauth.is_empty() {
            let _ = writeln!(s, "  must link again: {}", u.needs_reauth.join(", "));
        }
        let r = &self.requests;
        let _ = writeln!(
            s,
            "requests: {} sent ({} planned, {} retries, {} rate-limited), {:.1} s waiting for the limiter",
            r.total_sent, r.total_planned, r.retries, r.rate_limited, r.limiter_wait_seconds
        );
        for (e, n) in &r.sent {
            let _ = writeln!(s, "  {e:<22} {n:>8}");
        }
        let _ = writeln!(s, "rows ({} checkpoints, {} quarantined):", self.checkpoints, self.quarantined);
        let _ = writeln!(s, "  {:<26} {:>9} {:>9} {:>9}", "table", "inserted", "updated", "deleted");
        for (t, c) in &self.rows {
            let _ = writeln!(s, "  {t:<26} {:>9} {:>9} {:>9}", c.inserted, c.updated, c.deleted);
        }
        if let Some(e) = &self.events {
            let d = &e.delivery;
            let _ = writeln!(
                s,
                "events: {} enqueued ({} recovered); {} delivered, {} failed attempts, {} dead, {} pending{}",
                e.enqueued.values().sum::<u64>(),
                e.recovered,
                d.delivered,
                d.failed_attempts,
                d.dead,
                d.pending,
                if d.busy { " (another process was delivering)" } else { "" }
            );
            for (t, n) in &e.enqueued {
                let _ = writeln!(s, "  {t:<40} {n:>8}");
            }
            for err in &d.errors {
                let _ = writeln!(s, "  delivery error: {err}");
            }
        }
        s
    }
}
