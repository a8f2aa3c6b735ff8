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

mod fetch;
pub mod plan;
pub mod report;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::credentials::{CredentialStore, TokenManager, UserStatus};
use crate::harmonize::Context;
use crate::lake::staging::Staging;
use crate::lake::{Endpoint, Lake, LakeError, SHARD_LEASE_TTL, ShardLease, shard_of};
use crate::schema::Resource;
use crate::state::{StateError, StateStore, UserState};
use crate::withings::{ErrorClass, WithingsClient};
use fetch::{Mark, Piece, Stop, UserJob};
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
    fn default() -> SyncConfig {
        SyncConfig {
            resources: Resource::ALL.to_vec(),
            backfill_days: 90,
            backfill_limit_days: 3660,
            checkpoint_interval: Duration::from_secs(300),
            checkpoint_max_staged_bytes: 1024 * 1024 * 1024,
            cursor_overlap: 300,
            relist_days: 30,
            relist_every: Some(Duration::from_secs(86_400)),
            users_in_parallel: 4,
            staging_dir: None,
        }
    }
}

/// What a run does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Historical: local dates `[from, to]`, resumable.
    Backfill { from: NaiveDate, to: NaiveDate },
    /// `lastupdate`-driven, for every selected user.
    Incremental,
    /// Incremental for some families (a notification or an operator).
    Refresh { families: BTreeSet<Endpoint> },
}

impl Mode {
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

impl SyncError {
    pub fn class(&self) -> ErrorClass {
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

impl Failed {
    pub fn class(&self) -> ErrorClass {
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
pub struct Engine {
    pub lake: Lake,
    pub state: StateStore,
    pub client: WithingsClient,
    pub credentials: Arc<CredentialStore>,
    pub tokens: Arc<TokenManager>,
    pub cfg: SyncConfig,
    pub progress: Arc<Progress>,
    /// Change events (the pipeline's `[events]`); none without.
    pub events: Option<crate::events::EventsConfig>,
}

/// A user who must link again, whose loss of authorization may still need announcing.
struct Reauth {
    user_id: String,
    message: String,
    /// The credentials record's `updated_at`.
    version: i64,
}

/// A run's change events: where they go and the delivery running beside the run.
struct RunEvents {
    cfg: crate::events::EventsConfig,
    /// The given Vital user ids of the linked users (application id -> UUID).
    vital_ids: HashMap<String, String>,
    outbox: crate::events::Outbox,
    background: crate::events::deliver::Background,
    /// Batches enqueued by this run (names them).
    batches: AtomicU64,
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

    /// Runs `spec`. `cancel` turning true stops new requests; what is staged is committed.
    /// On a fatal error the report of what was done so far comes with it ([`Failed`]).
    pub async fn run(&self, spec: &RunSpec, cancel: watch::Receiver<bool>) -> Result<Report, Failed> {
        let mut report = Report::new(&run_id(&spec.mode), spec.mode.name(), spec.dry_run, self.lake.meta.shards);
        match self.run_into(spec, cancel, &mut report).await {
            Ok(()) => Ok(report),
            Err(error) => Err(Failed { report: Box::new(report), error }),
        }
    }

    async fn run_into(&self, spec: &RunSpec, cancel: watch::Receiver<bool>, report: &mut Report) -> Result<(), SyncError> {
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
        let id = report.run_id.clone();

        // Users: linked records, then the selection, then the shard. A store with no record at
        // all syncs nobody: that is a configuration to fix, not a green run.
        let listing = self.credentials.list_all().await?;
        let linked = &listing.records;
        if linked.is_empty() && listing.unreadable.is_empty() && matches!(spec.users, Users::All) {
            return Err(SyncError::Config(format!(
                "the credentials store {} holds no linked user: link accounts first (`withings-lake link` or `users import`)",
                self.credentials.location()
            )));
        }
        let unreadable: HashMap<&str, &str> = listing.unreadable.iter().map(|(u, why)| (u.as_str(), why.as_str())).collect();
        let by_id: HashMap<&str, &crate::credentials::UserRecord> = linked.iter().map(|r| (r.user_id.as_str(), r)).collect();
        let wanted: Vec<String> = match &spec.users {
            Users::All => {
                let mut all: Vec<String> = linked.iter().map(|r| r.user_id.clone()).collect();
                all.extend(listing.unreadable.iter().map(|(u, _)| u.clone()));
                all
            }
            Users::Only(ids) => {
                let mut seen = BTreeSet::new();
                ids.iter().filter(|u| seen.insert(u.as_str())).cloned().collect()
            }
        };
        let mut per_shard: BTreeMap<u32, Vec<(String, String)>> = BTreeMap::new();
        // Users who must link again, per shard: their loss of authorization is announced once
        // (`provider.connection.error`), from state, so a crash never loses it.
        let mut reauth: BTreeMap<u32, Vec<Reauth>> = BTreeMap::new();
        for user_id in wanted {
            let shard = shard_of(&user_id, shards);
            if spec.shard.is_some_and(|(i, _)| i != shard) {
                continue;
            }
            report.users.selected += 1;
            match by_id.get(user_id.as_str()) {
                None if unreadable.contains_key(user_id.as_str()) => {
                    // One corrupt record fails its user, by name, never silently.
                    report.users.failed += 1;
                    report.failures.push(report::UserFailure {
                        user_id: user_id.clone(),
                        class: "data".into(),
                        error: unreadable[user_id.as_str()].to_string(),
                    });
                }
                None => {
                    report.users.failed += 1;
                    report.failures.push(report::UserFailure {
                        user_id: user_id.clone(),
                        class: "auth".into(),
                        error: format!("user '{user_id}' is not linked (no credentials record)"),
                    });
                }
                Some(r) if r.status != UserStatus::Active => {
                    report.users.needs_reauth.push(user_id.clone());
                    if self.events.is_some() && !spec.dry_run {
                        let message = r.status_reason.clone().unwrap_or_else(|| r.status.as_str().to_string());
                        reauth.entry(shard).or_default().push(Reauth {
                            user_id: user_id.clone(),
                            message,
                            version: r.updated_at,
                        });
                        per_shard.entry(shard).or_default();
                    }
                    // A user named on the command line who cannot be synced is a failure; in
                    // an every-user run they are listed, not failed again each run.
                    if matches!(spec.users, Users::Only(_)) {
                        report.users.failed += 1;
                        report.failures.push(report::UserFailure {
                            user_id: user_id.clone(),
                            class: "auth".into(),
                            error: format!(
                                "user '{user_id}' must link their Withings account again: {}",
                                r.status_reason.as_deref().unwrap_or(r.status.as_str())
                            ),
                        });
                    }
                }
                Some(r) => per_shard.entry(shard).or_default().push((user_id.clone(), r.withings_userid.clone())),
            }
        }
        report.shards = match spec.shard {
            Some((i, _)) => vec![i],
            None => per_shard.keys().copied().collect(),
        };
        self.progress.users_total.store(per_shard.values().map(Vec::len).sum(), Ordering::Relaxed);

        let env = Arc::new(Env {
            client: self.client.clone(),
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
            for users in per_shard.values() {
                for (user_id, _) in users {
                    let state = self.state.get(user_id).await?.unwrap_or_default();
                    fetch::estimate(&env, &spec.mode, &state, &mut estimate);
                    estimate.users += 1;
                }
            }
            estimate.finish(self.client.config().requests_per_minute);
            report.plan = Some(estimate);
            report.finish(BTreeMap::new(), &Default::default());
            return Ok(());
        }

        // The Vital user ids given to linked users (the others derive theirs).
        let vital_ids: HashMap<String, String> =
            linked.iter().filter_map(|r| Some((r.user_id.clone(), r.vital_user_id.clone()?))).collect();
        let events = match &self.events {
            Some(cfg) => {
                let outbox = crate::events::Outbox::new(self.lake.location.clone(), cfg.sinks.clone())
                    .with_retention(cfg.delivered_retention);
                let deliverer = Arc::new(crate::events::Deliverer::new(outbox.clone())?);
                let background = crate::events::deliver::Background::spawn(deliverer, cfg.final_wait);
                report.events = Some(report::EventsReport::default());
                Some(RunEvents { cfg: cfg.clone(), vital_ids: vital_ids.clone(), outbox, background, batches: AtomicU64::new(0) })
            }
            None => None,
        };
        let before = self.client.accounting();
        let mut outcome = Ok(());
        let mut shards = per_shard.into_iter();
        for (shard, users) in shards.by_ref() {
            let owed = reauth.remove(&shard).unwrap_or_default();
            if let Err(e) = self.run_shard(&env, spec, &id, shard, users, owed, &vital_ids, events.as_ref(), report).await {
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

    #[allow(clippy::too_many_arguments)]
    async fn run_shard(
        &self,
        env: &Arc<Env>,
        spec: &RunSpec,
        run_id: &str,
        shard: u32,
        users: Vec<(String, String)>,
        reauth: Vec<Reauth>,
        vital_ids: &HashMap<String, String>,
        events: Option<&RunEvents>,
        report: &mut Report,
    ) -> Result<(), SyncError> {
        let lease = self.lake.lease_shard(shard, &crate::lease::process_holder(), spec.lease_wait).await?;
        // The users table: who each person of the shard is under every id; only those still
        // linked now that the lease is held (a `forget` that held it before must stay done).
        let still: std::collections::HashSet<String> = {
            use futures::StreamExt;
            let store = &self.credentials;
            futures::stream::iter(users.iter().map(|(u, _)| u.clone()))
                .map(|u| async move { matches!(store.get(&u).await, Ok(Some(_))).then_some(u) })
                .buffer_unordered(16)
                .filter_map(|u| async move { u })
                .collect()
                .await
        };
        let ids: Vec<crate::lake::users::UserIds> = users
            .iter()
            .filter(|(user_id, _)| still.contains(user_id))
            .map(|(user_id, withings_user_id)| crate::lake::users::UserIds {
                user_id: user_id.clone(),
                vital_user_id: vital_ids
                    .get(user_id)
                    .cloned()
                    .unwrap_or_else(|| crate::credentials::derived_vital_user_id(user_id)),
                withings_user_id: withings_user_id.clone(),
            })
            .collect();
        let mut result = match spec.dry_run {
            true => Ok(()),
            false => self.lake.record_user_ids(&lease, &ids).await.map(|_| ()).map_err(SyncError::from),
        };
        if result.is_ok()
            && let Some(ev) = events
        {
            result = self.recover_events(ev, shard, report).await;
        }
        if result.is_ok() {
            result = self.fill_shard(env, spec, run_id, &lease, users, reauth, events, report).await;
        }
        lease.release().await;
        result
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

    #[allow(clippy::too_many_arguments)]
    async fn fill_shard(
        &self,
        env: &Arc<Env>,
        spec: &RunSpec,
        run_id: &str,
        lease: &ShardLease,
        users: Vec<(String, String)>,
        reauth: Vec<Reauth>,
        events: Option<&RunEvents>,
        report: &mut Report,
    ) -> Result<(), SyncError> {
        use futures::StreamExt;
        let shard = lease.shard;
        let mut states: HashMap<String, UserState> = HashMap::new();
        let mut jobs = Vec::new();
        // States are read after the lease is taken (a previous holder may just have written
        // them), 16 at a time, renewing the lease as the reads go.
        let store = &self.state;
        let mut loaded = futures::stream::iter(users)
            .map(|(user_id, withings_user_id)| async move {
                let state = store.get(&user_id).await;
                (user_id, withings_user_id, state)
            })
            .buffered(16);
        let mut renewed = tokio::time::Instant::now();
        while let Some((user_id, withings_user_id, state)) = loaded.next().await {
            if renewed.elapsed() > SHARD_LEASE_TTL / 4 {
                lease.renew().await?;
                renewed = tokio::time::Instant::now();
            }
            let state = match state {
                Ok(s) => s.unwrap_or_else(|| UserState { user_id: user_id.clone(), ..UserState::default() }),
                Err(e @ StateError::Corrupt { .. }) => {
                    report.users.failed += 1;
                    report.failures.push(report::UserFailure { user_id, class: "data".into(), error: e.to_string() });
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            states.insert(user_id.clone(), state.clone());
            jobs.push((user_id, withings_user_id, state));
        }

        // Losses of authorization not yet announced (their states are loaded so the mark that
        // records the announcement updates them, not a blank state).
        let mut marks: Vec<(String, Vec<Mark>)> = Vec::new();
        let mut loaded = futures::stream::iter(reauth)
            .map(|r| async move {
                let state = store.get(&r.user_id).await;
                (r, state)
            })
            .buffered(16);
        while let Some((r, state)) = loaded.next().await {
            if renewed.elapsed() > SHARD_LEASE_TTL / 4 {
                lease.renew().await?;
                renewed = tokio::time::Instant::now();
            }
            let state = match state {
                Ok(s) => s.unwrap_or_else(|| UserState { user_id: r.user_id.clone(), ..UserState::default() }),
                Err(e @ StateError::Corrupt { .. }) => {
                    // Its announcement waits for the state to be repaired; the shard goes on.
                    tracing::warn!(user_id = %r.user_id, error = %e, "cannot read the state of a user who must link again");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            // Announced when this loss was not (a state from before events is a baseline:
            // such a user was never seen connected under events, so nothing is owed).
            let owed = match state.reauth_announced {
                None => false,
                Some(v) => v != r.version,
            };
            if state.reauth_announced.is_none() {
                marks.push((r.user_id.clone(), vec![Mark::ReauthBaseline(r.version)]));
                states.insert(r.user_id, state);
                continue;
            }
            if owed {
                marks.push((
                    r.user_id.clone(),
                    vec![Mark::ConnectionError {
                        error_type: "token_refresh_failed",
                        message: r.message,
                        record_version: r.version,
                    }],
                ));
            }
            states.insert(r.user_id, state);
        }

        let (tx, mut rx) = mpsc::channel::<Msg>(64);
        let gate = Arc::new(Semaphore::new(self.cfg.users_in_parallel.max(1)));
        let ingested_at = Utc::now();
        let dispatcher = {
            let (env, mode, run_id) = (env.clone(), spec.mode.clone(), run_id.to_string());
            let historical = matches!(spec.mode, Mode::Backfill { .. });
            tokio::spawn(async move {
                let mut tasks = tokio::task::JoinSet::new();
                let mut names: HashMap<tokio::task::Id, String> = HashMap::new();
                for (user_id, withings_user_id, state) in jobs {
                    let user_id_of_task = user_id.clone();
                    let permit = gate.clone().acquire_owned().await.expect("the gate is never closed");
                    if *env.cancel.borrow() {
                        let _ = tx.send(Msg::Done { user_id, result: Err(Stop::Interrupted) }).await;
                        continue;
                    }
                    let ctx = Context {
                        user_id: user_id.clone(),
                        withings_user_id: withings_user_id.clone(),
                        run_id: run_id.clone(),
                        ingested_at,
                        time_zone: state.time_zone.clone(),
                        zones: std::sync::Arc::new(state.zones.clone()),
                    };
                    let heights = state
                        .height
                        .and_then(|h| crate::harmonize::scaled(h.value, h.unit).map(|v| (h.at, v)))
                        .into_iter()
                        .collect();
                    let (restamp_getmeas, restamp_intraday) = (state.restamp_getmeas.0.clone(), state.restamp_intraday.0.clone());
                    let job = UserJob {
                        env: env.clone(),
                        user_id: user_id.clone(),
                        restamp_getmeas,
                        restamp_intraday,
                        intraday_fetched: Default::default(),
                        held: None,
                        state,
                        tx: tx.clone(),
                        ctx,
                        heights,
                        current: Default::default(),
                        historical,
                    };
                    let (tx, mode) = (tx.clone(), mode.clone());
                    let id = tasks
                        .spawn(async move {
                            let result = job.run(&mode).await;
                            drop(permit);
                            let _ = tx.send(Msg::Done { user_id, result }).await;
                        })
                        .id();
                    names.insert(id, user_id_of_task);
                }
                // A task that panicked sent no Done: report its user as failed.
                while let Some(joined) = tasks.join_next_with_id().await {
                    if let Err(e) = joined
                        && e.is_panic()
                        && let Some(user_id) = names.remove(&e.id())
                    {
                        let error = format!("internal error while syncing user '{user_id}' (a bug; see the log)");
                        tracing::error!(user_id = %user_id, "a user's task panicked");
                        let _ = tx
                            .send(Msg::Done {
                                user_id,
                                result: Err(Stop::Failed { class: ErrorClass::Internal, error, family: None }),
                            })
                            .await;
                    }
                }
            })
        };

        let mut staging = Staging::new(self.cfg.staging_dir.as_deref(), &format!("{run_id}-{shard}"))?;
        let mut checkpoint = 0u32;
        let mut next_checkpoint = tokio::time::Instant::now() + self.cfg.checkpoint_interval;
        let mut heartbeat = tokio::time::interval(SHARD_LEASE_TTL / 4);
        heartbeat.tick().await;
        let mut failed: Result<(), SyncError> = Ok(());
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Piece(p)) => {
                        if failed.is_err() {
                            continue; // drain: the run is ending
                        }
                        report.quarantined += p.quarantined;
                        let capture = events.is_some_and(|ev| !p.historical || ev.cfg.history_as_daily);
                        for u in &p.units {
                            if let Err(e) = staging.stage_capturing(u, capture) {
                                failed = Err(e.into());
                            }
                        }
                        if !p.marks.is_empty() {
                            marks.push((p.user_id, p.marks));
                        }
                        if failed.is_ok() && staging.bytes() > self.cfg.checkpoint_max_staged_bytes {
                            if let Err(e) = self.checkpoint(lease, run_id, &mut checkpoint, &mut staging, &mut marks, &mut states, events, report).await {
                                failed = Err(e);
                                rx.close();
                            }
                            next_checkpoint = tokio::time::Instant::now() + self.cfg.checkpoint_interval;
                        }
                    }
                    Some(Msg::Done { user_id, result }) => {
                        self.progress.users_done.fetch_add(1, Ordering::Relaxed);
                        match result {
                            Ok(()) => report.users.ok += 1,
                            Err(Stop::Interrupted) | Err(Stop::Closed) => report.users.interrupted += 1,
                            Err(Stop::Failed { class, error, family }) => {
                                self.progress.users_failed.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(user_id = %user_id, error = %error, "user failed");
                                report.users.failed += 1;
                                report.failures.push(report::UserFailure { user_id: user_id.clone(), class: class_name(class).into(), error: error.clone() });
                                let mut ms = Vec::new();
                                if class == ErrorClass::Auth
                                    && events.is_some()
                                    && let Ok(Some(r)) = self.credentials.get(&user_id).await
                                    && r.status != UserStatus::Active
                                {
                                    let message = r.status_reason.unwrap_or_else(|| r.status.as_str().to_string());
                                    ms.push(Mark::ConnectionError { error_type: "token_refresh_failed", message, record_version: r.updated_at });
                                }
                                if let Some(f) = family {
                                    ms.push(Mark::Error(f, error));
                                }
                                if !ms.is_empty() {
                                    marks.push((user_id, ms));
                                }
                            }
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(next_checkpoint), if failed.is_ok() => {
                    if let Err(e) = self.checkpoint(lease, run_id, &mut checkpoint, &mut staging, &mut marks, &mut states, events, report).await {
                        failed = Err(e);
                        rx.close();
                    }
                    next_checkpoint = tokio::time::Instant::now() + self.cfg.checkpoint_interval;
                },
                _ = heartbeat.tick(), if failed.is_ok() => {
                    if let Err(e) = renew_with_retries(lease).await {
                        failed = Err(e.into());
                        rx.close();
                    }
                }
            }
        }
        let _ = dispatcher.await;
        failed?;
        self.checkpoint(lease, run_id, &mut checkpoint, &mut staging, &mut marks, &mut states, events, report).await?;
        tracing::info!(shard, checkpoints = checkpoint, "shard done");
        Ok(())
    }

    /// Commits what is staged, then records the marks of the committed pieces.
    #[allow(clippy::too_many_arguments)]
    async fn checkpoint(
        &self,
        lease: &ShardLease,
        run_id: &str,
        checkpoint: &mut u32,
        staging: &mut Staging,
        marks: &mut Vec<(String, Vec<Mark>)>,
        states: &mut HashMap<String, UserState>,
        events: Option<&RunEvents>,
        report: &mut Report,
    ) -> Result<(), SyncError> {
        let batch = events.map(|ev| {
            let n = ev.batches.fetch_add(1, Ordering::Relaxed) + 1;
            crate::events::batch_name(Utc::now(), &format!("{run_id}-s{:04}-{n:06}", lease.shard))
        });
        let mut changes = Vec::new();
        if !staging.is_empty() {
            *checkpoint += 1;
            let (manifest, changed) = self.lake.commit_staged(lease, run_id, *checkpoint, staging, batch.as_deref()).await?;
            let key = crate::lake::keys::manifest(&self.lake.location, run_id, *checkpoint).to_string();
            tracing::info!(checkpoint = *checkpoint, partitions = manifest.partitions.len(), manifest = %key, "checkpoint committed");
            report.add_manifest(key, &manifest);
            self.progress.checkpoints.fetch_add(1, Ordering::Relaxed);
            changes = changed;
        }
        // Events after the commit and before the cursors: a crash in between re-fetches and
        // finds nothing new, so the events must be in the outbox first.
        if let (Some(ev), Some(batch)) = (events, &batch) {
            let mut b = crate::events::Builder::new(batch, Utc::now(), &ev.cfg).with_vital_ids(ev.vital_ids.clone());
            b.daily(&changes).map_err(|e| crate::events::EventsError::Build(e.to_string()))?;
            for (user_id, ms) in marks.iter() {
                for m in ms {
                    match m {
                        Mark::Historical { resources, start, end } => {
                            let t = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).unwrap_or_default();
                            for r in resources {
                                b.historical(user_id, *r, t(*start), t(*end));
                            }
                        }
                        Mark::ConnectionError { error_type, message, .. } => {
                            b.connection_error(user_id, error_type, message, "the user must link their Withings account again")
                        }
                        _ => {}
                    }
                }
            }
            let built = b.finish();
            if !built.is_empty() {
                ev.outbox.enqueue(batch, &built).await?;
                if let Some(r) = report.events.as_mut() {
                    for e in &built {
                        *r.enqueued.entry(e.event_type.clone()).or_default() += 1;
                    }
                }
                tracing::info!(batch = %batch, events = built.len(), "events enqueued");
            }
            if !changes.is_empty() {
                self.lake.clear_staged_changes(lease.shard, batch).await?;
            }
            if !built.is_empty() {
                ev.background.kick();
            }
        }
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let now = Utc::now();
        for (user_id, ms) in marks.drain(..) {
            let state =
                states.entry(user_id.clone()).or_insert_with(|| UserState { user_id: user_id.clone(), ..UserState::default() });
            for m in ms {
                apply(state, m, now, self.cfg.cursor_overlap);
            }
            touched.insert(user_id);
        }
        use futures::StreamExt;
        let store = &self.state;
        let states = &*states;
        let mut writes = futures::stream::iter(touched).map(|u| async move { store.put(&states[&u]).await }).buffer_unordered(16);
        let mut renewed = tokio::time::Instant::now();
        while let Some(written) = writes.next().await {
            written?;
            if renewed.elapsed() > SHARD_LEASE_TTL / 4 {
                renew_with_retries(lease).await?;
                renewed = tokio::time::Instant::now();
            }
        }
        Ok(())
    }
}

fn apply(state: &mut UserState, m: Mark, now: DateTime<Utc>, overlap: i64) {
    match m {
        Mark::Cursor(e, v, handled) => {
            let f = state.families.entry(e.as_str().to_string()).or_default();
            let cursor = f.cursor.map_or(v, |c| c.max(v));
            f.cursor = Some(cursor);
            f.recent.extend(handled);
            f.recent.retain(|_, m| *m > cursor - overlap);
        }
        Mark::CursorIfNone(e, v) => {
            let f = state.families.entry(e.as_str().to_string()).or_default();
            if f.cursor.is_none() {
                f.cursor = Some(v);
            }
        }
        Mark::Backfilled(e, r) => state.families.entry(e.as_str().to_string()).or_default().add_backfilled(r),
        Mark::Relisted(e, at) => state.families.entry(e.as_str().to_string()).or_default().relisted_at = Some(at),
        Mark::Success(e) => {
            let f = state.families.entry(e.as_str().to_string()).or_default();
            f.last_success = Some(now);
            f.last_error = None;
        }
        Mark::Error(e, msg) => state.families.entry(e.as_str().to_string()).or_default().last_error = Some(msg),
        Mark::TimeZone(tz) => state.time_zone = Some(tz),
        Mark::Zones { days, changed } => {
            for (day, zone, evidence) in days {
                state.zones.observe(day, &zone, evidence);
            }
            state.restamp_getmeas.0.extend(changed.iter().copied());
            state.restamp_intraday.0.extend(changed);
        }
        Mark::Restamped { getmeas, intraday } => {
            state.restamp_getmeas.0.retain(|d| !getmeas.contains(d));
            state.restamp_intraday.0.retain(|d| !intraday.contains(d));
        }
        Mark::Height(h) => {
            if state.height.is_none_or(|s| s.at <= h.at) {
                state.height = Some(h);
            }
        }
        Mark::HeightLookedUp => state.height_looked_up = true,
        Mark::Historical { resources, .. } => {
            state.historical_announced.get_or_insert_default().extend(resources.iter().map(|r| r.as_str().to_string()))
        }
        Mark::AnnouncedBaseline(done) => {
            if state.historical_announced.is_none() {
                state.historical_announced = Some(done);
            }
        }
        Mark::ReauthBaseline(v) => {
            if state.reauth_announced.is_none() {
                state.reauth_announced = Some(v);
            }
        }
        Mark::SeenConnected => {
            if state.reauth_announced.is_none() {
                state.reauth_announced = Some(0);
            }
        }
        Mark::ConnectionError { record_version, .. } => state.reauth_announced = Some(record_version),
    }
}

/// A heartbeat that survives a passing storage error: three tries over about 7 seconds (the
/// lease has 90 s left at a heartbeat). A lease taken by someone else fails at once.
async fn renew_with_retries(lease: &ShardLease) -> Result<(), LakeError> {
    let mut pause = Duration::from_secs(1);
    for attempt in 0.. {
        match lease.renew().await {
            Ok(()) => return Ok(()),
            Err(e @ LakeError::LeaseLost { .. }) => return Err(e),
            Err(e) if attempt >= 2 => return Err(e),
            Err(e) => {
                tracing::warn!(shard = lease.shard, error = %e, "shard lease heartbeat failed, retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
    unreachable!("the loop returns")
}

fn class_name(c: ErrorClass) -> &'static str {
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
