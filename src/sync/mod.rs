//! The sync engine: backfill, incremental and targeted-refresh runs.
//!
//! A run selects users (all linked users, a list, or one; then those of `--shard i/N`), takes
//! the lease of each shard it writes, and fetches users concurrently over the one client (so
//! the one rate limiter). Each user's part ([`fetch`]) sends pieces (units plus the state
//! marks they make true) to the committer, which stages them (spilled to local disk) and
//! commits a checkpoint every `checkpoint_interval` and at the end:
//! 1. the lake commit (raw landing, resources, quarantine; then the manifest);
//! 2. then the state marks of the committed pieces (cursors, backfilled windows).
//!
//! So a crash or a kill never records progress that is not in the lake: a re-run re-fetches
//! at most one checkpoint's worth, and merging makes that idempotent.
//!
//! Failure scopes: a user's failure (authorization gone, Withings errors after retries) stops
//! that user only and is named in the report (exit 1). A lake or state failure stops the run
//! (exit 4); a held shard lease stops it before anything is fetched (exit 3).
//! Cancellation (SIGINT/SIGTERM): no new request starts, the staged pieces are committed, the
//! report says `interrupted`.

mod commit;
mod dispatch;
mod fetch;
mod marks;
pub mod plan;
pub mod report;
mod select;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use tokio::sync::{mpsc, watch};

use crate::credentials::{CredentialStore, TokenManager};
use crate::error::Classify;
use crate::lake::{Endpoint, Lake, LakeError, ShardLease};
use crate::schema::Resource;
use crate::state::{StateError, StateStore};
use crate::withings::{ErrorClass, Priority, WithingsClient};
use fetch::{Piece, Stop};
pub use report::Report;

/// The resolved `[sync]` settings of a pipeline.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub resources: Vec<Resource>,
    pub backfill_days: u32,
    pub backfill_limit_days: u32,
    pub checkpoint_interval: Duration,
    /// Commit early when this much is staged (bounds the staging folder's disk use).
    pub checkpoint_max_staged_bytes: u64,
    pub cursor_overlap: i64,
    pub relist_days: u32,
    pub relist_every: Option<Duration>,
    pub users_in_parallel: usize,
    pub staging_dir: Option<PathBuf>,
}

impl Default for SyncConfig {
    /// Every resource, and `[sync]`'s defaults (written once, in the pipeline file's section).
    fn default() -> SyncConfig {
        crate::pipeline::SyncSection::default().resolve(Resource::ALL.to_vec(), crate::pipeline::default_concurrency())
    }
}

/// What a run does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Historical: local dates `[from, to]`, resumable.
    Backfill { from: NaiveDate, to: NaiveDate },
    /// `lastupdate`-driven, for every selected user.
    Incremental,
    /// Incremental for some families (a notification or an operator). `windows`: per user,
    /// an epoch range `[start, end)` of measurements listed again and replaced (a
    /// notification's range: a deleted measurement leaves the lake within minutes).
    Refresh { families: BTreeSet<Endpoint>, windows: BTreeMap<String, (i64, i64)> },
}

impl Mode {
    /// Where the run's requests queue at the rate limiter: a refresh is someone waiting, a
    /// sync keeps users fresh, a backfill takes what is left.
    pub fn priority(&self) -> Priority {
        match self {
            Mode::Refresh { .. } => Priority::Live,
            Mode::Incremental => Priority::Poll,
            Mode::Backfill { .. } => Priority::Backfill,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Mode::Backfill { .. } => "backfill",
            Mode::Incremental => "sync",
            Mode::Refresh { .. } => "refresh",
        }
    }
}

/// Which users a run is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Users {
    /// Every linked user.
    All,
    /// These users (an unknown one is a failure named in the report).
    Only(Vec<String>),
}

/// One run's parameters.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub mode: Mode,
    pub users: Users,
    /// `(i, N)` of `--shard i/N`: only users whose stable hash is `i` modulo N (N must be the
    /// lake's shard count).
    pub shard: Option<(u32, u32)>,
    /// "Now" for default windows (a user's first sync, the re-list window).
    pub now: DateTime<Utc>,
    /// How long to wait for a shard lease held by another writer.
    pub lease_wait: Duration,
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialsError),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Events(#[from] crate::events::EventsError),
}

impl Classify for SyncError {
    fn class(&self) -> ErrorClass {
        match self {
            SyncError::Lake(e) => e.class(),
            SyncError::State(StateError::BadUserId(_)) | SyncError::Config(_) => ErrorClass::Config,
            SyncError::State(_) => ErrorClass::Transient,
            SyncError::Events(e) => e.class(),
            SyncError::Credentials(e) => match e.class() {
                ErrorClass::Auth => ErrorClass::Internal,
                c => c,
            },
        }
    }
}

/// A run that stopped on a fatal error, with the report of what it did before.
#[derive(Debug, thiserror::Error)]
#[error("the run stopped")]
pub struct Failed {
    pub report: Box<Report>,
    #[source]
    pub error: SyncError,
}

impl Classify for Failed {
    fn class(&self) -> ErrorClass {
        self.error.class()
    }
}

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub users_total: AtomicUsize,
    pub users_done: AtomicUsize,
    pub users_failed: AtomicUsize,
    pub pieces: AtomicU64,
    pub checkpoints: AtomicU64,
}

/// What every user task of a run shares.
pub(crate) struct Env {
    pub client: WithingsClient,
    pub tokens: Arc<TokenManager>,
    pub cfg: SyncConfig,
    pub families: BTreeSet<Endpoint>,
    pub now: i64,
    pub now_utc: DateTime<Utc>,
    pub cancel: watch::Receiver<bool>,
    pub progress: Arc<Progress>,
    planned: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl Env {
    pub fn planned(&self, e: Endpoint, n: u64) {
        *self.planned.lock().expect("plan lock").entry(e.as_str().to_string()).or_default() += n;
    }
}

pub(crate) enum Msg {
    Piece(Piece),
    Done { user_id: String, result: Result<(), Stop> },
}

/// Everything a run needs: the lake, its state, the client and the users' credentials.
/// Build one from a pipeline file with [`crate::pipeline::PipelineFile::engine`], or from
/// its parts with [`Engine::new`]. One engine serves any number of runs, one after another
/// or at once: their requests share the client's rate limiter, by priority; each run holds
/// the leases of the shards it writes under its own holder, so two runs of one shard take
/// turns. The [`Progress`] counters are the engine's, summed over its runs.
pub struct Engine {
    lake: Lake,
    state: StateStore,
    client: WithingsClient,
    credentials: Arc<CredentialStore>,
    tokens: Arc<TokenManager>,
    cfg: SyncConfig,
    progress: Arc<Progress>,
    /// Change events (the pipeline's `[events]`); none without.
    events: Option<crate::events::EventsConfig>,
}

/// A run's change events: where they go and the delivery running beside the run.
pub(crate) struct RunEvents {
    pub cfg: crate::events::EventsConfig,
    /// The given Vital user ids of the linked users (application id -> UUID).
    pub vital_ids: HashMap<String, String>,
    pub outbox: crate::events::Outbox,
    pub background: crate::events::deliver::Background,
    /// Batches enqueued by this run (names them).
    pub batches: AtomicU64,
}

/// What every shard of one run shares.
struct RunCtx<'a> {
    env: Arc<Env>,
    spec: &'a RunSpec,
    run_id: &'a str,
    /// The given Vital user ids of the selected users.
    vital_ids: &'a HashMap<String, String>,
    events: Option<&'a RunEvents>,
}

fn run_id(mode: &Mode) -> String {
    let mut b = [0u8; 3];
    let _ = getrandom::fill(&mut b);
    format!("{}-{}-{}", mode.name(), Utc::now().format("%Y%m%dT%H%M%SZ"), hex::encode(b))
}

impl Engine {
    pub fn new(lake: Lake, client: WithingsClient, credentials: Arc<CredentialStore>, cfg: SyncConfig) -> Engine {
        let tokens = Arc::new(TokenManager::new(credentials.clone(), client.clone()));
        Engine {
            state: StateStore::new(lake.location.clone()),
            lake,
            client,
            credentials,
            tokens,
            cfg,
            progress: Arc::new(Progress::default()),
            events: None,
        }
    }

    /// Sends change events as `events` says (see [`crate::events`]).
    pub fn with_events(mut self, events: Option<crate::events::EventsConfig>) -> Engine {
        self.events = events;
        self
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    pub fn client(&self) -> &WithingsClient {
        &self.client
    }

    pub fn credentials(&self) -> &Arc<CredentialStore> {
        &self.credentials
    }

    pub fn config(&self) -> &SyncConfig {
        &self.cfg
    }

    pub fn events(&self) -> Option<&crate::events::EventsConfig> {
        self.events.as_ref()
    }

    /// Live counters of the runs of this engine (for a progress display).
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// Runs `spec`. `cancel` turning true stops new requests; what is staged is committed.
    /// On a fatal error the report of what was done so far comes with it ([`Failed`]).
    pub async fn run(&self, spec: &RunSpec, cancel: watch::Receiver<bool>) -> Result<Report, Failed> {
        let mut report = Report::new(&run_id(&spec.mode), spec.mode.name(), spec.dry_run, self.lake.meta.shards);
        match self.run_into(spec, cancel, &mut report).await {
            Ok(()) => Ok(report),
            Err(error) => Err(Failed { report: Box::new(report), error }),
        }
    }

    /// A run's parameters that cannot work, before anything is read.
    fn check(&self, spec: &RunSpec) -> Result<(), SyncError> {
        let shards = self.lake.meta.shards;
        if let Mode::Backfill { from, to } = &spec.mode {
            if from > to {
                return Err(SyncError::Config(format!("backfill: --from {from} is after --to {to}")));
            }
            let days = (*to - *from).num_days() + 1;
            if days > i64::from(self.cfg.backfill_limit_days) {
                return Err(SyncError::Config(format!(
                    "backfill: {from}..{to} is {days} days, more than [sync] backfill_limit_days = {}",
                    self.cfg.backfill_limit_days
                )));
            }
        }
        if let Some((i, n)) = spec.shard {
            if n != shards {
                return Err(SyncError::Config(format!("--shard {i}/{n}: the lake has {shards} shards (use --shard i/{shards})")));
            }
            if i >= n {
                return Err(SyncError::Config(format!("--shard {i}/{n}: i must be below {n}")));
            }
        }
        Ok(())
    }

    /// The credentials records a run needs: every record for an every-user run; only the
    /// named users' records for a targeted one (a refresh of one user reads one record, not
    /// the store).
    async fn read_users(&self, users: &Users) -> Result<crate::credentials::Listing, SyncError> {
        match users {
            Users::All => {
                let listing = self.credentials.list_all().await?;
                // A store with no record at all syncs nobody: that is a configuration to fix,
                // not a green run.
                if listing.records.is_empty() && listing.unreadable.is_empty() {
                    return Err(SyncError::Config(format!(
                        "the credentials store {} holds no linked user: link accounts first (`withings-lake link` or `users import`)",
                        self.credentials.location()
                    )));
                }
                Ok(listing)
            }
            Users::Only(ids) => {
                let listing = self.credentials.get_many(ids).await?;
                // None of the named records opens: a wrong key, or just these records? The
                // whole store tells (a wrong key fails as configuration there).
                if listing.records.is_empty() && !listing.unreadable.is_empty() {
                    self.credentials.list_all().await?;
                }
                Ok(listing)
            }
        }
    }

    async fn run_into(&self, spec: &RunSpec, cancel: watch::Receiver<bool>, report: &mut Report) -> Result<(), SyncError> {
        self.check(spec)?;
        let listing = self.read_users(&spec.users).await?;
        let announce = self.events.is_some() && !spec.dry_run;
        let selection = select::select(&spec.users, &listing, self.lake.meta.shards, spec.shard.map(|(i, _)| i), announce);
        report.users.selected = selection.selected;
        report.users.failed = selection.failures.len();
        report.failures = selection.failures;
        report.users.needs_reauth = selection.needs_reauth;
        report.shards = match spec.shard {
            Some((i, _)) => vec![i],
            None => selection.per_shard.keys().copied().collect(),
        };
        let (per_shard, mut reauth) = (selection.per_shard, selection.reauth);
        self.progress.users_total.store(per_shard.values().map(Vec::len).sum(), Ordering::Relaxed);

        let env = Arc::new(Env {
            client: self.client.with_priority(spec.mode.priority()),
            tokens: self.tokens.clone(),
            cfg: self.cfg.clone(),
            families: plan::families_for(&self.cfg.resources),
            now: spec.now.timestamp(),
            now_utc: spec.now,
            cancel,
            progress: self.progress.clone(),
            planned: Default::default(),
        });

        if spec.dry_run {
            let mut estimate = plan::Estimate::default();
            for user in per_shard.values().flatten() {
                let state = self.state.get(&user.user_id).await?.unwrap_or_default();
                fetch::estimate(&env, &spec.mode, &state, &mut estimate);
                estimate.users += 1;
            }
            estimate.finish(self.client.config().requests_per_minute);
            report.plan = Some(estimate);
            report.finish(BTreeMap::new(), &Default::default());
            return Ok(());
        }

        // The Vital user ids given to linked users (the others derive theirs).
        let vital_ids: HashMap<String, String> =
            listing.records.iter().filter_map(|r| Some((r.user_id.clone(), r.vital_user_id.clone()?))).collect();
        let events = self.start_events(&vital_ids, report)?;
        let run =
            RunCtx { env: env.clone(), spec, run_id: &report.run_id.clone(), vital_ids: &vital_ids, events: events.as_ref() };
        let before = self.client.accounting();
        let mut outcome = Ok(());
        let mut shards = per_shard.into_iter();
        for (shard, users) in shards.by_ref() {
            let owed = reauth.remove(&shard).unwrap_or_default();
            if let Err(e) = self.run_shard(&run, shard, users, owed, report).await {
                outcome = Err(e);
                break;
            }
            if *env.cancel.borrow() {
                break;
            }
        }
        if let Some(ev) = events {
            let delivery = ev.background.finish().await;
            if let Some(r) = report.events.as_mut() {
                r.delivery = delivery;
            }
        }
        // Users of shards that never started did not finish.
        report.users.interrupted += shards.map(|(_, u)| u.len()).sum::<usize>();
        let after = self.client.accounting();
        let planned = env.planned.lock().expect("plan lock").clone();
        report.finish(planned, &diff(&before, &after));
        report.interrupted = *env.cancel.borrow();
        outcome
    }

    /// The outbox and the delivery that runs beside the run, when the engine has events.
    fn start_events(&self, vital_ids: &HashMap<String, String>, report: &mut Report) -> Result<Option<RunEvents>, SyncError> {
        let Some(cfg) = &self.events else { return Ok(None) };
        let outbox =
            crate::events::Outbox::new(self.lake.location.clone(), cfg.sinks.clone()).with_retention(cfg.delivered_retention);
        let deliverer = Arc::new(crate::events::Deliverer::new(outbox.clone())?);
        let background = crate::events::deliver::Background::spawn(deliverer, cfg.final_wait);
        report.events = Some(report::EventsReport::default());
        Ok(Some(RunEvents { cfg: cfg.clone(), vital_ids: vital_ids.clone(), outbox, background, batches: AtomicU64::new(0) }))
    }

    /// One shard: its lease, the users table, events owed from a crash, then the users' jobs
    /// and the committer until they are done.
    async fn run_shard(
        &self,
        run: &RunCtx<'_>,
        shard: u32,
        users: Vec<select::Linked>,
        reauth: Vec<select::Reauth>,
        report: &mut Report,
    ) -> Result<(), SyncError> {
        let lease = self.lake.lease_shard(shard, &crate::lease::run_holder(), run.spec.lease_wait).await?;
        let mut result = self.record_user_ids(&lease, &users, run.vital_ids).await;
        if result.is_ok()
            && let Some(ev) = run.events
        {
            result = self.recover_events(ev, shard, report).await;
        }
        if result.is_ok() {
            result = self.fill_shard(run, &lease, users, reauth, report).await;
        }
        lease.release().await;
        result
    }

    /// The users table: who each person of the shard is under every id; only those still
    /// linked now that the lease is held (a `forget` that held it before must stay done).
    async fn record_user_ids(
        &self,
        lease: &ShardLease,
        users: &[select::Linked],
        vital_ids: &HashMap<String, String>,
    ) -> Result<(), SyncError> {
        use futures::StreamExt;
        let store = &self.credentials;
        let still: std::collections::HashSet<String> = futures::stream::iter(users.iter().map(|u| u.user_id.clone()))
            .map(|u| async move { matches!(store.get(&u).await, Ok(Some(_))).then_some(u) })
            .buffer_unordered(16)
            .filter_map(|u| async move { u })
            .collect()
            .await;
        let ids: Vec<crate::lake::users::UserIds> = users
            .iter()
            .filter(|u| still.contains(&u.user_id))
            .map(|u| crate::lake::users::UserIds {
                user_id: u.user_id.clone(),
                vital_user_id: vital_ids
                    .get(&u.user_id)
                    .cloned()
                    .unwrap_or_else(|| crate::credentials::derived_vital_user_id(&u.user_id)),
                withings_user_id: u.withings_user_id.clone(),
            })
            .collect();
        self.lake.record_user_ids(lease, &ids).await?;
        Ok(())
    }

    /// Enqueues the events of commits that died before their outbox write (their captured
    /// changes are still under `_events/staged/`), under their own batch names (so the same
    /// event ids).
    async fn recover_events(&self, ev: &RunEvents, shard: u32, report: &mut Report) -> Result<(), SyncError> {
        let events = crate::events::recover(&self.lake, shard, &ev.cfg, &ev.outbox, &ev.vital_ids).await?;
        if let Some(r) = report.events.as_mut() {
            r.recovered += events.len() as u64;
            for e in &events {
                *r.enqueued.entry(e.event_type.clone()).or_default() += 1;
            }
        }
        if !events.is_empty() {
            ev.background.kick();
        }
        Ok(())
    }

    /// The shard's committer, fed by the jobs of its users until every job has ended.
    async fn fill_shard(
        &self,
        run: &RunCtx<'_>,
        lease: &ShardLease,
        users: Vec<select::Linked>,
        reauth: Vec<select::Reauth>,
        report: &mut Report,
    ) -> Result<(), SyncError> {
        let parts = commit::Parts {
            lake: &self.lake,
            state: &self.state,
            credentials: &self.credentials,
            cfg: &self.cfg,
            progress: &self.progress,
        };
        let mut committer = commit::ShardCommitter::new(parts, lease, run.run_id, run.events)?;
        let jobs = committer.load_users(users, report).await?;
        committer.owe_announcements(reauth).await?;
        let (tx, mut rx) = mpsc::channel::<Msg>(64);
        let dispatcher = dispatch::spawn_jobs(run.env.clone(), run.spec.mode.clone(), run.run_id.to_string(), jobs, tx);
        let result = committer.run(&mut rx, report).await;
        let _ = dispatcher.await;
        result
    }
}

pub(crate) fn class_name(c: ErrorClass) -> &'static str {
    match c {
        ErrorClass::Config => "config",
        ErrorClass::Auth => "auth",
        ErrorClass::Transient => "transient",
        ErrorClass::Data => "data",
        ErrorClass::Internal => "internal",
        ErrorClass::Busy => "busy",
    }
}

/// Requests made between two accounting snapshots.
fn diff(before: &crate::withings::Snapshot, after: &crate::withings::Snapshot) -> crate::withings::Snapshot {
    let mut out = after.clone();
    for (k, v) in out.endpoints.iter_mut() {
        if let Some(b) = before.endpoints.get(k) {
            v.requests -= b.requests.min(v.requests);
            v.retries -= b.retries.min(v.retries);
            for (o, n) in v.by_outcome.iter_mut() {
                *n -= b.by_outcome.get(o).copied().unwrap_or(0).min(*n);
            }
        }
    }
    out.endpoints.retain(|_, v| v.requests > 0);
    out.requests -= before.requests.min(out.requests);
    out.retries -= before.retries.min(out.retries);
    out.rate_limited -= before.rate_limited.min(out.rate_limited);
    out.limiter_wait_ms -= before.limiter_wait_ms.min(out.limiter_wait_ms);
    out
}
