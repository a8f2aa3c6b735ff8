//! Dispatch: one task per user job, at most `users_in_parallel` at once, each sending its
//! pieces and then its end to the committer. A task that panics sent no end: its user is
//! reported failed (class internal), by name, and the run goes on.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::fetch::{Stop, UserJob};
use super::select::Linked;
use super::{Env, Mode, Msg};
use crate::state::UserState;
use crate::withings::ErrorClass;

/// Starts the jobs of `users` in order, each when a place is free; the returned task ends
/// when every job has ended (and so drops its senders).
pub(crate) fn spawn_jobs(
    env: Arc<Env>,
    mode: Mode,
    run_id: String,
    users: Vec<(Linked, UserState)>,
    tx: mpsc::Sender<Msg>,
) -> JoinHandle<()> {
    let gate = Arc::new(Semaphore::new(env.cfg.users_in_parallel.max(1)));
    let ingested_at: DateTime<Utc> = Utc::now();
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        let mut names: HashMap<tokio::task::Id, String> = HashMap::new();
        for (user, state) in users {
            let permit = gate.clone().acquire_owned().await.expect("the gate is never closed");
            if *env.cancel.borrow() {
                let _ = tx.send(Msg::Done { user_id: user.user_id, result: Err(Stop::Interrupted) }).await;
                continue;
            }
            let user_id = user.user_id.clone();
            let job = UserJob::new(env.clone(), &mode, &run_id, ingested_at, user, state, tx.clone());
            let (tx, mode, name) = (tx.clone(), mode.clone(), user_id.clone());
            let id = tasks
                .spawn(async move {
                    let result = job.run(&mode).await;
                    drop(permit);
                    let _ = tx.send(Msg::Done { user_id, result }).await;
                })
                .id();
            names.insert(id, name);
        }
        while let Some(joined) = tasks.join_next_with_id().await {
            if let Err(e) = joined
                && e.is_panic()
                && let Some(user_id) = names.remove(&e.id())
            {
                let error = format!("internal error while syncing user '{user_id}' (a bug; see the log)");
                tracing::error!(user_id = %user_id, "a user's task panicked");
                let failed = Stop::Failed { class: ErrorClass::Internal, error, family: None };
                let _ = tx.send(Msg::Done { user_id, result: Err(failed) }).await;
            }
        }
    })
}
