//! The shard committer: the one writer of a shard while its lease is held. It loads the
//! states of the shard's users, stages the pieces that user jobs send (spilled to local
//! disk), and commits a checkpoint every `checkpoint_interval`, when staging passes
//! `checkpoint_max_staged_bytes`, and at the end:
//! 1. the lake commit (raw landing, resources, quarantine; then the manifest);
//! 2. the change events of that commit, into the outbox;
//! 3. then the state marks of the committed pieces (cursors, backfilled windows).
//!
//! It keeps the shard lease alive between checkpoints, and it runs for as long as anyone
//! holds a sender of its channel: a one-shot run drops its last sender when its last user
//! job ends; a long-lived process keeps one and hands clones to the jobs it starts.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::fetch::{Piece, Stop};
use super::marks::{Mark, apply};
use super::report::{self, Report};
use super::select::{Linked, Reauth};
use super::{Msg, Progress, RunEvents, SyncConfig, SyncError, class_name};
use crate::credentials::{CredentialStore, UserStatus};
use crate::lake::staging::Staging;
use crate::lake::{Lake, LakeError, SHARD_LEASE_TTL, ShardLease};
use crate::state::{StateError, StateStore, UserState};
use crate::withings::ErrorClass;

/// What the committer needs from the engine, borrowed for the life of the shard.
pub(crate) struct Parts<'a> {
    pub lake: &'a Lake,
    pub state: &'a StateStore,
    pub credentials: &'a CredentialStore,
    pub cfg: &'a SyncConfig,
    pub progress: &'a Progress,
}

pub(crate) struct ShardCommitter<'a> {
    parts: Parts<'a>,
    lease: &'a ShardLease,
    run_id: &'a str,
    events: Option<&'a RunEvents>,
    staging: Staging,
    checkpoints: u32,
    /// Marks of staged pieces, applied once those pieces are committed.
    marks: Vec<(String, Vec<Mark>)>,
    /// The states of the shard's users as committed (marks applied).
    states: HashMap<String, UserState>,
    /// When the next timed checkpoint is due (a checkpoint for any reason pushes it back).
    next_checkpoint: tokio::time::Instant,
}

impl<'a> ShardCommitter<'a> {
    pub fn new(
        parts: Parts<'a>,
        lease: &'a ShardLease,
        run_id: &'a str,
        events: Option<&'a RunEvents>,
    ) -> Result<ShardCommitter<'a>, SyncError> {
        let staging = Staging::new(parts.cfg.staging_dir.as_deref(), &format!("{run_id}-{}", lease.shard))?;
        let next_checkpoint = tokio::time::Instant::now() + parts.cfg.checkpoint_interval;
        Ok(ShardCommitter {
            parts,
            lease,
            run_id,
            events,
            staging,
            checkpoints: 0,
            marks: Vec::new(),
            states: HashMap::new(),
            next_checkpoint,
        })
    }

    /// Reads the states of `users` (after the lease is taken: a previous holder may just have
    /// written them), 16 at a time, renewing the lease as the reads go. A corrupt state fails
    /// its user (in `report`); the others are returned, ready for their jobs.
    pub async fn load_users(&mut self, users: Vec<Linked>, report: &mut Report) -> Result<Vec<(Linked, UserState)>, SyncError> {
        let store = self.parts.state;
        let mut loaded = futures::stream::iter(users)
            .map(|u| async move {
                let state = store.get(&u.user_id).await;
                (u, state)
            })
            .buffered(16);
        let mut renewed = tokio::time::Instant::now();
        let mut jobs = Vec::new();
        while let Some((u, state)) = loaded.next().await {
            if renewed.elapsed() > SHARD_LEASE_TTL / 4 {
                self.lease.renew().await?;
                renewed = tokio::time::Instant::now();
            }
            let state = match state {
                Ok(s) => s.unwrap_or_else(|| UserState { user_id: u.user_id.clone(), ..UserState::default() }),
                Err(e @ StateError::Corrupt { .. }) => {
                    report.users.failed += 1;
                    report.failures.push(report::UserFailure { user_id: u.user_id, class: "data".into(), error: e.to_string() });
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            self.states.insert(u.user_id.clone(), state.clone());
            jobs.push((u, state));
        }
        Ok(jobs)
    }

    /// Losses of authorization not yet announced: their states are loaded (so the mark that
    /// records the announcement updates them, not a blank state) and the owed
    /// `provider.connection.error` marks are queued for the next checkpoint.
    pub async fn owe_announcements(&mut self, reauth: Vec<Reauth>) -> Result<(), SyncError> {
        let store = self.parts.state;
        let mut loaded = futures::stream::iter(reauth)
            .map(|r| async move {
                let state = store.get(&r.user_id).await;
                (r, state)
            })
            .buffered(16);
        let mut renewed = tokio::time::Instant::now();
        while let Some((r, state)) = loaded.next().await {
            if renewed.elapsed() > SHARD_LEASE_TTL / 4 {
                self.lease.renew().await?;
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
            // A state from before events is a baseline: such a user was never seen connected
            // under events, so nothing is owed.
            match state.reauth_announced {
                None => self.marks.push((r.user_id.clone(), vec![Mark::ReauthBaseline(r.version)])),
                Some(v) if v != r.version => self.marks.push((
                    r.user_id.clone(),
                    vec![Mark::ConnectionError {
                        error_type: "token_refresh_failed",
                        message: r.message,
                        record_version: r.version,
                    }],
                )),
                Some(_) => {}
            }
            self.states.insert(r.user_id, state);
        }
        Ok(())
    }

    /// Receives pieces and job endings until every sender is gone, committing on the way;
    /// then commits what is left. A fatal error stops receiving (the jobs see the channel
    /// closed) and is returned once the senders are gone.
    pub async fn run(mut self, rx: &mut mpsc::Receiver<Msg>, report: &mut Report) -> Result<(), SyncError> {
        let cfg = self.parts.cfg;
        self.next_checkpoint = tokio::time::Instant::now() + cfg.checkpoint_interval;
        let mut heartbeat = tokio::time::interval(SHARD_LEASE_TTL / 4);
        heartbeat.tick().await;
        let mut failed: Result<(), SyncError> = Ok(());
        loop {
            let step = tokio::select! {
                msg = rx.recv() => match msg {
                    // After a failure pieces are drained (the run is ending); job ends still count.
                    Some(Msg::Piece(_)) if failed.is_err() => Ok(()),
                    Some(Msg::Piece(p)) => self.stage(p, report).await,
                    Some(Msg::Done { user_id, result }) => {
                        self.job_done(user_id, result, report).await;
                        Ok(())
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(self.next_checkpoint), if failed.is_ok() => {
                    let done = self.checkpoint(report).await;
                    self.next_checkpoint = tokio::time::Instant::now() + cfg.checkpoint_interval;
                    done
                },
                _ = heartbeat.tick(), if failed.is_ok() => renew_with_retries(self.lease).await.map_err(SyncError::from),
            };
            if let Err(e) = step {
                failed = Err(e);
                rx.close();
            }
        }
        failed?;
        self.checkpoint(report).await?;
        tracing::info!(shard = self.lease.shard, checkpoints = self.checkpoints, "shard done");
        Ok(())
    }

    /// Stages a piece; commits early when staging passed its byte bound.
    async fn stage(&mut self, p: Piece, report: &mut Report) -> Result<(), SyncError> {
        report.quarantined += p.quarantined;
        let capture = self.events.is_some_and(|ev| !p.historical || ev.cfg.history_as_daily);
        for u in &p.units {
            self.staging.stage_capturing(u, capture)?;
        }
        if !p.marks.is_empty() {
            self.marks.push((p.user_id, p.marks));
        }
        if self.staging.bytes() > self.parts.cfg.checkpoint_max_staged_bytes {
            self.checkpoint(report).await?;
            self.next_checkpoint = tokio::time::Instant::now() + self.parts.cfg.checkpoint_interval;
        }
        Ok(())
    }

    /// A user's job ended: counts it; a failure is reported by name, recorded against the
    /// family that failed, and a lost authorization is announced.
    async fn job_done(&mut self, user_id: String, result: Result<(), Stop>, report: &mut Report) {
        self.parts.progress.users_done.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => report.users.ok += 1,
            Err(Stop::Interrupted) | Err(Stop::Closed) => report.users.interrupted += 1,
            Err(Stop::Failed { class, error, family }) => {
                self.parts.progress.users_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(user_id = %user_id, error = %error, "user failed");
                report.users.failed += 1;
                report.failures.push(report::UserFailure {
                    user_id: user_id.clone(),
                    class: class_name(class).into(),
                    error: error.clone(),
                });
                let mut ms = Vec::new();
                if class == ErrorClass::Auth
                    && self.events.is_some()
                    && let Ok(Some(r)) = self.parts.credentials.get(&user_id).await
                    && r.status != UserStatus::Active
                {
                    let message = r.status_reason.unwrap_or_else(|| r.status.as_str().to_string());
                    ms.push(Mark::ConnectionError { error_type: "token_refresh_failed", message, record_version: r.updated_at });
                }
                if let Some(f) = family {
                    ms.push(Mark::Error(f, error));
                }
                if !ms.is_empty() {
                    self.marks.push((user_id, ms));
                }
            }
        }
    }

    /// Commits what is staged, enqueues its events, then records the marks of the committed
    /// pieces.
    pub async fn checkpoint(&mut self, report: &mut Report) -> Result<(), SyncError> {
        let (lake, lease) = (self.parts.lake, self.lease);
        let batch = self.events.map(|ev| {
            let n = ev.batches.fetch_add(1, Ordering::Relaxed) + 1;
            crate::events::batch_name(Utc::now(), &format!("{}-s{:04}-{n:06}", self.run_id, lease.shard))
        });
        let mut changes = Vec::new();
        if !self.staging.is_empty() {
            self.checkpoints += 1;
            let (manifest, changed) = {
                let capture = batch.as_deref().map(|batch| crate::events::capture::Capture { batch });
                let hook = capture.as_ref().map(|c| c as &dyn crate::lake::CommitHook);
                lake.commit_staged(lease, self.run_id, self.checkpoints, &mut self.staging, hook).await?
            };
            let key = crate::lake::keys::manifest(&lake.location, self.run_id, self.checkpoints).to_string();
            tracing::info!(checkpoint = self.checkpoints, partitions = manifest.partitions.len(), manifest = %key, "checkpoint committed");
            report.add_manifest(key, &manifest);
            self.parts.progress.checkpoints.fetch_add(1, Ordering::Relaxed);
            changes = changed;
        }
        // Events after the commit and before the cursors: a crash in between re-fetches and
        // finds nothing new, so the events must be in the outbox first.
        if let (Some(ev), Some(batch)) = (self.events, &batch) {
            let built = self.build_events(ev, batch, &changes)?;
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
                crate::events::capture::clear_staged_changes(lake, lease.shard, batch).await?;
            }
            if !built.is_empty() {
                ev.background.kick();
            }
        }
        self.record_marks().await
    }

    /// The events of one checkpoint: the daily changes of its commit, and the historical
    /// completions and lost authorizations its marks record.
    fn build_events(
        &self,
        ev: &RunEvents,
        batch: &str,
        changes: &[(crate::lake::TableId, crate::lake::merge::Changed)],
    ) -> Result<Vec<crate::events::Event>, SyncError> {
        let mut b = crate::events::Builder::new(batch, Utc::now(), &ev.cfg).with_vital_ids(ev.vital_ids.clone());
        b.daily(changes).map_err(|e| crate::events::EventsError::Build(e.to_string()))?;
        let t = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).unwrap_or_default();
        for (user_id, ms) in &self.marks {
            for m in ms {
                match m {
                    Mark::Historical { resources, start, end } => {
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
        Ok(b.finish())
    }

    /// Applies the marks of the committed pieces and writes the states they touched.
    async fn record_marks(&mut self) -> Result<(), SyncError> {
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let now = Utc::now();
        for (user_id, ms) in self.marks.drain(..) {
            let state = self
                .states
                .entry(user_id.clone())
                .or_insert_with(|| UserState { user_id: user_id.clone(), ..UserState::default() });
            for m in ms {
                apply(state, m, now, self.parts.cfg.cursor_overlap);
            }
            touched.insert(user_id);
        }
        let (store, states) = (self.parts.state, &self.states);
        let mut writes = futures::stream::iter(touched).map(|u| async move { store.put(&states[&u]).await }).buffer_unordered(16);
        let mut renewed = tokio::time::Instant::now();
        while let Some(written) = writes.next().await {
            written?;
            if renewed.elapsed() > SHARD_LEASE_TTL / 4 {
                renew_with_retries(self.lease).await?;
                renewed = tokio::time::Instant::now();
            }
        }
        Ok(())
    }
}

/// A heartbeat that survives a passing storage error: three tries over about 7 seconds (the
/// lease has 90 s left at a heartbeat). A lease taken by someone else fails at once.
async fn renew_with_retries(lease: &ShardLease) -> Result<(), LakeError> {
    let mut pause = std::time::Duration::from_secs(1);
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
