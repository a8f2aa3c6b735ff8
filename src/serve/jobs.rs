//! The leader's work: the inbox (notifications, refreshes, backfills of new links) turned
//! into engine runs, the fallback poll, subscription reconcile and pending erasures.
//!
//! One run at a time, so runs of this process never wait on each other's shard leases. Live
//! work comes first: a notification's user joins (or opens) a pending job that runs
//! `coalesce` after its first entry, so a burst is one job; a poll or a backfill that is
//! running when live work comes due is cancelled (it commits what it staged and resumes
//! later), the live job runs, then the rest. Inbox entries are deleted only after the run
//! that covers them ends well for their user; after a restart or a leader change the inbox
//! is read again from the start.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::Service;
use super::api::PendingErasure;
use super::metrics::{ModeLabels, PriorityLabels, ResultLabels};
use crate::credentials::{UserRecord, UserStatus};
use crate::lease::{Lease, LeaseError};
use crate::sync::{Mode, Report, RunSpec, Users};
use crate::withings::Endpoint;

/// One inbox entry (`_service/inbox/<time>-<random>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InboxEntry {
    /// A Withings notification, as received (the user is resolved by the leader).
    Notification { received_at: DateTime<Utc>, userid: String, appli: i64, startdate: Option<i64>, enddate: Option<i64> },
    /// `POST /v2/user/refresh`.
    Refresh { received_at: DateTime<Utc>, user_id: String },
    /// A new link's backfill.
    Backfill { received_at: DateTime<Utc>, user_id: String },
}

/// The families a notification category asks for.
pub fn families_of(appli: i64) -> &'static [Endpoint] {
    match appli {
        1 | 4 => &[Endpoint::Getmeas],
        16 => &[Endpoint::Getactivity, Endpoint::Getintradayactivity, Endpoint::Getworkouts],
        44 => &[Endpoint::SleepGetsummary, Endpoint::SleepGet],
        _ => &[],
    }
}

/// The notification categories the configured families need (46, revocation, always).
pub fn applis_for(families: &BTreeSet<Endpoint>) -> Vec<i64> {
    let mut out: Vec<i64> = [1, 4, 16, 44].into_iter().filter(|a| families_of(*a).iter().any(|f| families.contains(f))).collect();
    out.push(46);
    out
}

/// A live job waiting to run.
struct Live {
    families: BTreeSet<Endpoint>,
    due: Instant,
    keys: Vec<Path>,
    /// Arrival of the notifications it holds (for the latency histogram).
    received: Vec<DateTime<Utc>>,
    /// The measurements' range the notifications named (`[start, end)`), listed again and
    /// replaced so a deletion lands too.
    window: Option<(i64, i64)>,
}

impl Live {
    fn new(due: Instant) -> Live {
        Live { families: BTreeSet::new(), due, keys: vec![], received: vec![], window: None }
    }

    fn widen(&mut self, start: i64, end: i64) {
        self.window = Some(match self.window {
            None => (start, end),
            Some((a, b)) => (a.min(start), b.max(end)),
        });
    }
}

/// How long a poll or a backfill runs before live work may cancel it (it then commits what
/// it staged and resumes later): live jobs wait at most this long for a running one.
const MIN_SLICE: Duration = Duration::from_secs(10);

/// The widest notified range taken as a window (a wider one is left to `lastupdate` and the
/// daily re-list).
const MAX_WINDOW: i64 = 31 * 86_400;

enum Work {
    Live(Vec<(String, Live)>),
    Poll(Vec<String>),
    Backfill(String),
}

pub struct Scheduler {
    svc: Arc<Service>,
    shutdown: watch::Receiver<bool>,
    holder: String,
    lease: Option<Lease>,
    renewed: Instant,
    seen: HashSet<Path>,
    live: BTreeMap<String, Live>,
    backfills: BTreeMap<String, Vec<Path>>,
    last_sync: HashMap<String, Instant>,
    verified: HashMap<String, Instant>,
    users_loaded: Option<Instant>,
    active: Vec<UserRecord>,
    last_housekeeping: Option<Instant>,
    last_erasures: Option<Instant>,
}

impl Scheduler {
    pub fn new(svc: Arc<Service>, shutdown: watch::Receiver<bool>) -> Scheduler {
        Scheduler {
            svc,
            shutdown,
            holder: crate::lease::run_holder(),
            lease: None,
            renewed: Instant::now(),
            seen: HashSet::new(),
            live: BTreeMap::new(),
            backfills: BTreeMap::new(),
            last_sync: HashMap::new(),
            verified: HashMap::new(),
            users_loaded: None,
            active: Vec::new(),
            last_housekeeping: None,
            last_erasures: None,
        }
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub async fn run(mut self) {
        while !self.stopping() {
            if !self.ensure_leader().await {
                self.pause(Duration::from_secs(1).min(self.svc.cfg.leader_lease / 3)).await;
                continue;
            }
            self.scan().await;
            self.housekeeping().await;
            match self.next_work() {
                Some(work) => self.execute(work).await,
                None => {
                    let next_due = self.live.values().map(|l| l.due).min();
                    let wait = next_due.map(|d| d.saturating_duration_since(Instant::now())).unwrap_or(Duration::from_secs(1));
                    self.pause(wait.clamp(Duration::from_millis(50), Duration::from_secs(1))).await;
                }
            }
        }
        if let Some(lease) = self.lease.take() {
            let _ = self.svc.store.delete(&super::budget::key(self.svc.store.location())).await;
            lease.release().await;
        }
        self.svc.leader.store(false, Ordering::Relaxed);
        self.svc.metrics.leader.set(0);
    }

    async fn pause(&mut self, d: Duration) {
        tokio::select! {
            _ = self.svc.wake.notified() => {}
            _ = tokio::time::sleep(d) => {}
            _ = self.shutdown.changed() => {}
        }
    }

    /// Holds (or takes) the leader lease; false when another instance leads.
    async fn ensure_leader(&mut self) -> bool {
        let ttl = self.svc.cfg.leader_lease;
        if let Some(lease) = &self.lease {
            if self.renewed.elapsed() < ttl / 3 {
                return true;
            }
            match lease.renew().await {
                Ok(true) => {
                    self.renewed = Instant::now();
                    self.publish_budget().await;
                    return true;
                }
                Ok(false) => tracing::warn!("the leader lease was taken over: following"),
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the leader lease failed (retried)");
                    return true;
                }
            }
            self.lease = None;
            self.forget_work();
            return false;
        }
        let key = self.svc.store.key(&["leader.lease"]);
        match Lease::acquire(self.svc.store.location().store.clone(), key, &self.holder, ttl, Duration::ZERO).await {
            Ok(lease) => {
                tracing::info!(holder = %self.holder, "leading: this instance runs jobs");
                self.lease = Some(lease);
                self.renewed = Instant::now();
                self.publish_budget().await;
                self.svc.leader.store(true, Ordering::Relaxed);
                self.svc.metrics.leader.set(1);
                true
            }
            Err(LeaseError::Busy { .. }) => {
                self.svc.leader.store(false, Ordering::Relaxed);
                self.svc.metrics.leader.set(0);
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "the leader lease cannot be read");
                false
            }
        }
    }

    /// What this leader uses of the application's budget, for batch runs beside it.
    async fn publish_budget(&self) {
        let ttl = chrono::Duration::from_std(self.svc.cfg.leader_lease).unwrap_or_default();
        let b = super::budget::ServiceBudget {
            requests_per_minute: self.svc.engine.client().config().requests_per_minute,
            expires_at: Utc::now() + ttl,
        };
        if let Err(e) = self.svc.store.put(&super::budget::key(self.svc.store.location()), &b).await {
            tracing::warn!(error = %e, "cannot record the service's request budget (batch runs may exceed the application's)");
        }
    }

    fn forget_work(&mut self) {
        self.svc.leader.store(false, Ordering::Relaxed);
        self.svc.metrics.leader.set(0);
        self.seen.clear();
        self.live.clear();
        self.backfills.clear();
    }

    /// Reads inbox entries not seen yet into live jobs and backfills.
    async fn scan(&mut self) {
        let keys = match self.svc.store.list("inbox").await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "the inbox cannot be listed (retried)");
                return;
            }
        };
        for key in keys {
            if self.seen.contains(&key) {
                continue;
            }
            let entry: InboxEntry = match self.svc.store.get(&key).await {
                Ok(Some(e)) => e,
                Ok(None) => continue,
                Err(e) => {
                    // A torn or foreign object: kept aside, not retried forever.
                    tracing::warn!(key = %key, error = %e, "an inbox entry does not read: removed");
                    let _ = self.svc.store.delete(&key).await;
                    continue;
                }
            };
            self.seen.insert(key.clone());
            self.take(key, entry).await;
        }
        self.gauge_queues();
    }

    async fn take(&mut self, key: Path, entry: InboxEntry) {
        let coalesce = self.svc.cfg.coalesce;
        let all = self.svc.app.families.clone();
        match entry {
            InboxEntry::Notification { received_at, userid, appli, startdate, enddate } => {
                let Some(user) = self.svc.user_of_withings(&userid).await else {
                    self.svc.metrics.notification(&appli.to_string(), "unknown_user");
                    let _ = self.svc.store.delete(&key).await;
                    return;
                };
                if appli == 46 {
                    self.revoked(&user).await;
                    let _ = self.svc.store.delete(&key).await;
                    return;
                }
                let families: BTreeSet<Endpoint> = families_of(appli).iter().filter(|f| all.contains(f)).copied().collect();
                if families.is_empty() {
                    self.svc.metrics.notification(&appli.to_string(), "not_configured");
                    let _ = self.svc.store.delete(&key).await;
                    return;
                }
                let job = self.live.entry(user).or_insert_with(|| Live::new(Instant::now() + coalesce));
                if matches!(appli, 1 | 4)
                    && let Some(a) = startdate
                {
                    let b = enddate.unwrap_or(a).max(a) + 1;
                    if b - a <= MAX_WINDOW {
                        job.widen(a, b);
                    }
                }
                job.families.extend(families);
                job.keys.push(key);
                job.received.push(received_at);
            }
            InboxEntry::Refresh { user_id, .. } => {
                let job = self.live.entry(user_id).or_insert_with(|| Live::new(Instant::now()));
                // Someone waits: no coalescing delay.
                job.due = job.due.min(Instant::now());
                job.families.extend(all.iter().copied());
                job.keys.push(key);
            }
            InboxEntry::Backfill { user_id, .. } => self.backfills.entry(user_id).or_default().push(key),
        }
    }

    fn gauge_queues(&self) {
        let m = &self.svc.metrics;
        m.jobs_queued.get_or_create(&PriorityLabels { priority: "live".into() }).set(self.live.len() as i64);
        m.jobs_queued.get_or_create(&PriorityLabels { priority: "backfill".into() }).set(self.backfills.len() as i64);
    }

    /// Live jobs that may run now: due, and not for a user whose backfill is still pending
    /// (the backfill brings everything up to its end; the job runs after it, from the cursors
    /// it leaves, instead of fetching the history twice).
    fn due_live(&self) -> Vec<String> {
        let now = Instant::now();
        self.live.iter().filter(|(u, l)| l.due <= now && !self.backfills.contains_key(*u)).map(|(u, _)| u.clone()).collect()
    }

    fn next_work(&mut self) -> Option<Work> {
        let due = self.due_live();
        if !due.is_empty() {
            return Some(Work::Live(due.into_iter().filter_map(|u| self.live.remove(&u).map(|l| (u, l))).collect()));
        }
        let poll = self.poll_due();
        if !poll.is_empty() {
            return Some(Work::Poll(poll));
        }
        self.backfills.keys().next().cloned().map(Work::Backfill)
    }

    /// Users not synced for `poll_interval`, oldest first, one batch.
    fn poll_due(&mut self) -> Vec<String> {
        let interval = self.svc.cfg.poll_interval;
        let now = Instant::now();
        let mut due: Vec<(Instant, String)> = self
            .active
            .iter()
            .filter(|r| !self.backfills.contains_key(&r.user_id))
            .filter_map(|r| {
                let last = *self.last_sync.get(&r.user_id)?;
                (now.duration_since(last) >= interval).then(|| (last, r.user_id.clone()))
            })
            .collect();
        due.sort();
        // The effective period: how long the most overdue user has waited.
        let oldest = due.first().map(|(t, _)| now.duration_since(*t)).unwrap_or(interval).max(interval);
        self.svc.metrics.poll_period_seconds.set(oldest.as_secs_f64());
        self.svc.metrics.jobs_queued.get_or_create(&PriorityLabels { priority: "poll".into() }).set(due.len() as i64);
        due.into_iter().take(self.svc.cfg.poll_batch).map(|(_, u)| u).collect()
    }

    /// The linked users (re-read every minute), reconcile and erasures.
    async fn housekeeping(&mut self) {
        // Due erasures are looked for every few seconds (a grace of 0 erases at once).
        if self.last_erasures.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            self.last_erasures = Some(Instant::now());
            self.erasures().await;
        }
        if self.last_housekeeping.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
            return;
        }
        self.last_housekeeping = Some(Instant::now());
        match self.svc.engine.credentials().list().await {
            Ok(records) => {
                let mut by_status: BTreeMap<&'static str, i64> = BTreeMap::new();
                for r in &records {
                    *by_status.entry(r.status.as_str()).or_default() += 1;
                }
                for s in [UserStatus::Active, UserStatus::NeedsReauth, UserStatus::Revoked] {
                    let n = by_status.get(s.as_str()).copied().unwrap_or(0);
                    self.svc.metrics.users.get_or_create(&super::metrics::StatusLabels { status: s.as_str().into() }).set(n);
                }
                let interval = self.svc.cfg.poll_interval;
                let first = self.users_loaded.is_none();
                self.active = records.into_iter().filter(|r| r.status == UserStatus::Active).collect();
                for r in &self.active {
                    // Spread first polls over one interval (a restart does not poll everyone at once).
                    self.last_sync.entry(r.user_id.clone()).or_insert_with(|| {
                        let spread = if first { spread(&r.user_id, interval) } else { Duration::ZERO };
                        Instant::now().checked_sub(spread).unwrap_or_else(Instant::now)
                    });
                }
                self.users_loaded = Some(Instant::now());
            }
            Err(e) => tracing::warn!(error = %e, "the credentials store cannot be listed (retried)"),
        }
        if self.svc.cfg.subscribe {
            let every = self.svc.cfg.reconcile_every;
            let stale: Vec<UserRecord> = self
                .active
                .iter()
                .filter(|r| self.verified.get(&r.user_id).is_none_or(|t| t.elapsed() >= every))
                .cloned()
                .collect();
            for r in stale {
                if self.stopping() {
                    break;
                }
                reconcile_user(&self.svc, &r).await;
                self.verified.insert(r.user_id.clone(), Instant::now());
            }
        }
    }

    async fn erasures(&mut self) {
        let keys = match self.svc.store.list("erase").await {
            Ok(k) => k,
            Err(_) => return,
        };
        for key in keys {
            let Ok(Some(p)) = self.svc.store.get::<PendingErasure>(&key).await else { continue };
            if p.due_at > Utc::now() {
                continue;
            }
            let svc = &self.svc;
            let erasure = crate::erasure::Erasure {
                lake: svc.engine.lake(),
                credentials: svc.engine.credentials(),
                files_sink: svc.files_sink.clone(),
                holder: crate::lease::run_holder(),
                wait: Duration::from_secs(60),
                keyed: true,
            };
            match erasure.forget(&p.client_user_id).await {
                Ok(_) => {
                    let _ = svc.store.delete(&svc.store.key(&["users", &format!("{}.json", p.user_id)])).await;
                    let _ = svc.store.delete(&key).await;
                    tracing::info!(user_id = %p.user_id, "erased after the grace period");
                }
                Err(e) => tracing::warn!(user_id = %p.user_id, error = %e, "erasure failed (retried)"),
            }
        }
    }

    /// Appli 46: the person revoked the app at Withings.
    async fn revoked(&mut self, user_id: &str) {
        let store = self.svc.engine.credentials();
        let Ok(Some(mut record)) = store.get(user_id).await else { return };
        if record.status == UserStatus::Revoked {
            return;
        }
        record.status = UserStatus::Revoked;
        record.status_reason = Some("the person revoked the application's access at Withings (notification appli 46)".into());
        record.updated_at = Utc::now().timestamp();
        if let Err(e) = store.put(&record).await {
            tracing::warn!(user_id, error = %e, "cannot mark a revoked user");
            return;
        }
        self.svc.metrics.notification("46", "revoked");
        self.active.retain(|r| r.user_id != user_id);
        self.live.remove(user_id);
        if let Some(cfg) = self.svc.engine.events() {
            let r = crate::events::announce_connection_error(
                cfg,
                self.svc.engine.lake(),
                &record,
                "deregistered_per_provider",
                "The user revoked access at Withings",
                "Link the user again to resume syncing",
            )
            .await;
            if let Err(e) = r {
                tracing::error!(user_id, error = %e, "provider.connection.error could not be enqueued");
            }
        }
    }

    async fn execute(&mut self, work: Work) {
        let now = self.svc.now();
        match work {
            Work::Live(jobs) => {
                // One run per family set (a burst of one kind is one run for all its users).
                let mut groups: BTreeMap<BTreeSet<Endpoint>, Vec<(String, Live)>> = BTreeMap::new();
                for (u, l) in jobs {
                    groups.entry(l.families.clone()).or_default().push((u, l));
                }
                for (families, jobs) in groups {
                    let users: Vec<String> = jobs.iter().map(|(u, _)| u.clone()).collect();
                    let windows = jobs.iter().filter_map(|(u, l)| Some((u.clone(), l.window?))).collect();
                    let spec = spec(Mode::Refresh { families, windows }, users, now);
                    let outcome = self.run_engine(spec, false).await;
                    self.finish_live(jobs, outcome).await;
                }
            }
            Work::Poll(users) => {
                let spec = spec(Mode::Incremental, users.clone(), now);
                let outcome = self.run_engine(spec, true).await;
                let interrupted = matches!(&outcome, Some(Ok(r)) if r.interrupted);
                if !interrupted {
                    // A failed user is tried again next interval too, not in a loop.
                    for u in users {
                        self.last_sync.insert(u, Instant::now());
                    }
                }
            }
            Work::Backfill(user) => {
                let to = now.date_naive();
                let from = to - chrono::Duration::days(i64::from(self.svc.app.backfill_days.max(1)) - 1);
                let spec = spec(Mode::Backfill { from, to }, vec![user.clone()], now);
                let outcome = self.run_engine(spec, true).await;
                let done = matches!(&outcome, Some(Ok(r)) if !r.interrupted && !r.failures.iter().any(|f| f.user_id == user));
                let gone = matches!(&outcome, Some(Ok(r)) if r.failures.iter().any(|f| f.user_id == user && f.class == "auth"));
                if done || gone {
                    // The users list is read again now (the new user is polled from now on).
                    self.last_housekeeping = None;
                    for key in self.backfills.remove(&user).unwrap_or_default() {
                        let _ = self.svc.store.delete(&key).await;
                        self.seen.remove(&key);
                    }
                    self.last_sync.insert(user, Instant::now());
                }
            }
        }
        self.gauge_queues();
    }

    /// Runs one engine run; a preemptible one is cancelled (it commits what it staged) as
    /// soon as live work is due, and on shutdown. `None`: the run could not start.
    async fn run_engine(&mut self, spec: RunSpec, preemptible: bool) -> Option<Result<Report, crate::sync::Failed>> {
        let (cancel, cancelled) = watch::channel(false);
        let engine = self.svc.engine.clone();
        let mode = spec.mode.name();
        let fut = async move { engine.run(&spec, cancelled).await };
        tokio::pin!(fut);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let started = Instant::now();
        let outcome = loop {
            tokio::select! {
                out = &mut fut => break out,
                _ = tick.tick() => {
                    if self.stopping() {
                        let _ = cancel.send(true);
                        continue;
                    }
                    if !self.ensure_leader().await {
                        // Another instance leads now: stop writing.
                        let _ = cancel.send(true);
                        continue;
                    }
                    // A slice first: a steady stream of notifications cannot starve a backfill.
                    if preemptible && started.elapsed() >= MIN_SLICE {
                        self.scan().await;
                        if !self.due_live().is_empty() {
                            tracing::info!(mode, "live work is due: the running {mode} commits and yields");
                            let _ = cancel.send(true);
                        }
                    }
                }
            }
        };
        let result = match &outcome {
            Ok(r) if r.interrupted => "interrupted",
            Ok(r) if !r.failures.is_empty() => "partial",
            Ok(_) => "ok",
            Err(_) => "failed",
        };
        self.svc.metrics.runs.get_or_create(&ModeLabels { mode: mode.into(), result: result.into() }).inc();
        match &outcome {
            Ok(r) => self.account(r),
            Err(f) => {
                tracing::warn!(mode, error = %f.error, "a {mode} run failed");
                self.account(&f.report);
            }
        }
        Some(outcome)
    }

    fn account(&self, r: &Report) {
        let m = &self.svc.metrics;
        let rows: u64 = r.rows.values().map(|c| c.inserted + c.updated + c.deleted).sum();
        m.rows_committed.inc_by(rows);
        if let Some(ev) = &r.events {
            let enq: u64 = ev.enqueued.values().sum();
            m.events.get_or_create(&ResultLabels { result: "enqueued".into() }).inc_by(enq);
            m.events.get_or_create(&ResultLabels { result: "delivered".into() }).inc_by(ev.delivery.delivered);
            m.events.get_or_create(&ResultLabels { result: "dead".into() }).inc_by(ev.delivery.dead);
            m.outbox_pending.set(ev.delivery.pending as i64);
        }
    }

    async fn finish_live(&mut self, jobs: Vec<(String, Live)>, outcome: Option<Result<Report, crate::sync::Failed>>) {
        let failed = failed_users(&outcome);
        let interrupted = matches!(&outcome, Some(Ok(r)) if r.interrupted) || matches!(&outcome, Some(Err(_)) | None);
        let now = Utc::now();
        for (user, job) in jobs {
            let auth = matches!(&outcome, Some(Ok(r)) if r.failures.iter().any(|f| f.user_id == user && f.class == "auth"));
            let ok = !interrupted && !failed.contains(&user);
            if ok || auth {
                for key in &job.keys {
                    let _ = self.svc.store.delete(key).await;
                    self.seen.remove(key);
                }
                if ok {
                    for r in &job.received {
                        let secs = (now - *r).num_milliseconds().max(0) as f64 / 1000.0;
                        self.svc.metrics.notification_to_commit.observe(secs);
                    }
                    self.last_sync.insert(user.clone(), Instant::now());
                }
            } else if !self.stopping() {
                // Tried again in a minute, with whatever joined meanwhile.
                let again = self.live.entry(user.clone()).or_insert_with(|| Live::new(Instant::now() + Duration::from_secs(60)));
                if let Some((a, b)) = job.window {
                    again.widen(a, b);
                }
                again.families.extend(job.families);
                again.keys.extend(job.keys);
                again.received.extend(job.received);
            }
            let _ = self.svc.done.send(super::JobDone { user_id: user, ok, at: now });
        }
    }
}

fn failed_users(outcome: &Option<Result<Report, crate::sync::Failed>>) -> HashSet<String> {
    match outcome {
        Some(Ok(r)) => r.failures.iter().map(|f| f.user_id.clone()).collect(),
        Some(Err(f)) => f.report.failures.iter().map(|f| f.user_id.clone()).collect(),
        None => HashSet::new(),
    }
}

fn spec(mode: Mode, users: Vec<String>, now: DateTime<Utc>) -> RunSpec {
    RunSpec { mode, users: Users::Only(users), shard: None, now, lease_wait: Duration::from_secs(60), dry_run: false }
}

/// A stable fraction of `interval` for `user` (spreads first polls).
fn spread(user: &str, interval: Duration) -> Duration {
    use sha2::Digest;
    let h = sha2::Sha256::digest(user.as_bytes());
    let f = u16::from_be_bytes([h[0], h[1]]) as f64 / 65_536.0;
    interval.mul_f64(f)
}

/// Lists the user's subscriptions and subscribes what the configured resources need and is
/// missing (only our callback URL is ever touched).
pub async fn reconcile_user(svc: &Service, record: &UserRecord) {
    let url = svc.notify_url();
    let want = applis_for(&svc.app.families);
    let tokens = svc.engine.client().clone();
    let manager = crate::credentials::TokenManager::new(svc.engine.credentials().clone(), tokens.clone());
    let listed = manager
        .with_token(&record.user_id, |t| {
            let c = tokens.clone();
            async move { c.notify_list(&t, None).await }
        })
        .await;
    let have: BTreeSet<i64> = match listed {
        Ok(items) => items.into_iter().filter_map(|i| i.value.ok()).filter(|p| p.callbackurl == url).map(|p| p.appli).collect(),
        Err(e) => {
            tracing::warn!(user_id = %record.user_id, error = %e, "listing notification subscriptions failed (reconcile retried later)");
            return;
        }
    };
    let first = have.is_empty();
    for appli in want.into_iter().filter(|a| !have.contains(a)) {
        let r = manager
            .with_token(&record.user_id, |t| {
                let (c, u) = (tokens.clone(), url.clone());
                async move { c.notify_subscribe(&t, &u, appli, "withings-lake").await }
            })
            .await;
        match r {
            Ok(()) => {
                if !first {
                    svc.metrics.subscriptions_repaired.inc();
                    tracing::warn!(user_id = %record.user_id, appli, "a notification subscription was missing: subscribed again");
                }
            }
            Err(e) => {
                tracing::warn!(user_id = %record.user_id, appli, error = %e, "subscribing notifications failed (reconcile retried later)")
            }
        }
    }
}
