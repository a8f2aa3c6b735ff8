//! Delivery: sends what the outbox holds, one process at a time (`_events/delivery.lock`).
//!
//! A pass goes through each sink's pending batches, oldest first:
//! - webhooks: a POST of the stored body with the Svix headers (a fresh timestamp and
//!   signature per attempt, the same id). Any 2xx within the sink's timeout is delivered. A
//!   network error, a timeout, a 3xx, a 5xx, 408, 409 or 429 is retried after the schedule's
//!   next pause (or `Retry-After`, when longer); any other 4xx (410 Gone, 400, ...) is final
//!   and the event goes to `dead/`, as does an event whose schedule ran out;
//! - files (manifest mode): the batch's due events as one JSON-lines file, replaced whole.
//!
//! Events with the same ordering key ([`super::Event::ordering_key`]) go one after the other,
//! and once one waits for a retry the later ones of that key wait with it (across batches):
//! a receiver never sees the `.updated` of a row before its `.created`. Different keys go in
//! parallel (the sink's `concurrency`), paced to `max_events_per_second`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use serde::Serialize;
use tokio::sync::{Mutex, Notify, watch};

use super::outbox::{BatchFile, Record, Status};
use super::{EventsError, Outbox, Sink, SinkKind, Webhook, sign};
use crate::lake::keys;

/// How long one delivery call keeps going.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeliverOptions {
    /// After a pass, wait for retries that fall due within this long of the start, and pass
    /// again; zero makes one pass.
    pub wait: Duration,
    /// Start no attempt after this long (the end of a run must not wait on a backlog or a
    /// hanging endpoint); none: until the pass is done.
    pub budget: Option<Duration>,
}

/// What deliveries did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeliverySummary {
    pub attempts: u64,
    pub delivered: u64,
    /// Attempts that failed and will be retried.
    pub failed_attempts: u64,
    /// Events that went to `dead/`.
    pub dead: u64,
    /// Events still pending after the last pass.
    pub pending: u64,
    /// Another process was delivering (its lease was held): nothing was sent.
    pub busy: bool,
    /// Errors of the outbox itself (storage); events stay pending.
    pub errors: Vec<String>,
    /// `delivered/` files past `delivered_retention_days`, deleted.
    pub pruned_files: usize,
}

impl DeliverySummary {
    fn add(&mut self, o: &DeliverySummary) {
        self.attempts += o.attempts;
        self.delivered += o.delivered;
        self.failed_attempts += o.failed_attempts;
        self.dead += o.dead;
        self.pending = o.pending;
        self.busy |= o.busy;
        self.errors.extend(o.errors.iter().cloned());
        self.pruned_files += o.pruned_files;
    }
}

/// One ordering key's attempts: the key, each attempt's outcome, and whether it stopped to
/// wait for a retry.
type GroupResult = (String, Vec<(usize, Outcome)>, GroupEnd);

/// The outcome of one attempt.
#[derive(Debug, Clone)]
enum Outcome {
    Delivered {
        status: Option<u16>,
    },
    Retry {
        status: Option<u16>,
        error: String,
        after: Option<Duration>,
    },
    Final {
        status: Option<u16>,
        error: String,
    },
    /// Not sent: an earlier event of its key went dead.
    Orphaned,
}

/// Sends the outbox.
#[derive(Debug)]
pub struct Deliverer {
    pub outbox: Outbox,
    clients: HashMap<String, reqwest::Client>,
    pacers: HashMap<String, Mutex<tokio::time::Instant>>,
}

pub(crate) const LEASE_TTL: Duration = Duration::from_secs(120);
/// The most of a receiver's answer that is read.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

fn is_loopback(url: &str) -> bool {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .is_some_and(|h| h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) || h == "[::1]")
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().to_string();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = DateTime::parse_from_rfc2822(&v).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

impl Deliverer {
    pub fn new(outbox: Outbox) -> Result<Deliverer, EventsError> {
        let mut clients = HashMap::new();
        let mut pacers = HashMap::new();
        for s in &outbox.sinks {
            if let SinkKind::Webhook(h) = &s.kind {
                let mut b = reqwest::Client::builder()
                    .timeout(h.timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("withings-lake/", env!("CARGO_PKG_VERSION")));
                if is_loopback(&h.url) {
                    b = b.no_proxy();
                }
                let c = b.build().map_err(|e| EventsError::Sink { sink: s.name.clone(), reason: e.without_url().to_string() })?;
                clients.insert(s.name.clone(), c);
                pacers.insert(s.name.clone(), Mutex::new(tokio::time::Instant::now()));
            }
        }
        Ok(Deliverer { outbox, clients, pacers })
    }

    /// The outbox and the files sinks (which may live outside the lake) are written by
    /// committers and deliverers; a process killed half-way through a write there leaves a
    /// temporary file, removed here once its writer is dead (a `events deliver` schedule
    /// cleans up without ever holding a shard).
    async fn remove_interrupted_writes(&self) {
        use crate::storage::local::Unattributed;
        let lake = &self.outbox.lake;
        let mut dirs = vec![(lake.clone(), keys::events_dir(lake), true)];
        for s in &self.outbox.sinks {
            if let SinkKind::Files(l) = &s.kind {
                // A files sink may share its folder with others: only our dead writers' files.
                dirs.push((l.clone(), l.prefix.clone(), false));
            }
        }
        let _ = tokio::task::spawn_blocking(move || {
            for (loc, dir, ours) in dirs {
                let rule = if ours { Unattributed::OwnedOrOld(&|_| false) } else { Unattributed::Keep };
                loc.remove_interrupted_writes(&dir, rule);
            }
        })
        .await;
    }

    /// Delivers what is due, then waits for retries due within `opts.wait` and delivers those.
    /// When another process holds the delivery lease nothing is sent (`busy`).
    pub async fn deliver(&self, opts: DeliverOptions) -> Result<DeliverySummary, EventsError> {
        let mut summary = DeliverySummary::default();
        let key = keys::delivery_lease(&self.outbox.lake);
        let lease = match crate::lease::Lease::acquire(
            self.outbox.lake.store.clone(),
            key,
            &crate::lease::process_holder(),
            LEASE_TTL,
            Duration::ZERO,
        )
        .await
        {
            Ok(l) => l,
            Err(crate::lease::LeaseError::Busy { holder, .. }) => {
                tracing::info!(holder = %holder, "another process is delivering events; leaving them to it");
                summary.busy = true;
                return Ok(summary);
            }
            Err(crate::lease::LeaseError::Storage { key, source }) => return Err(EventsError::Storage { key, source }),
        };
        self.remove_interrupted_writes().await;
        let started = tokio::time::Instant::now();
        let deadline = started + opts.wait;
        let budget = opts.budget.map(|b| started + b);
        let result = async {
            loop {
                let (pass, next_due) = self.pass(&lease, budget).await?;
                summary.add(&pass);
                let Some(due) = next_due else { break };
                let wait = (due - Utc::now()).to_std().unwrap_or_default();
                let at = tokio::time::Instant::now() + wait;
                if at > deadline {
                    break;
                }
                // Sleep in slices so the lease stays renewed.
                while tokio::time::Instant::now() < at {
                    tokio::time::sleep_until(at.min(tokio::time::Instant::now() + LEASE_TTL / 4)).await;
                    held(&lease).await?;
                }
            }
            Ok::<(), EventsError>(())
        }
        .await;
        if result.is_ok() {
            // Best effort: a failed prune is retried by the next delivery.
            match self.outbox.prune(Utc::now()).await {
                Ok(n) => summary.pruned_files = n,
                Err(e) => {
                    tracing::warn!(error = %e, "pruning delivered events failed");
                    summary.errors.push(e.to_string());
                }
            }
        }
        lease.release().await;
        result?;
        Ok(summary)
    }

    /// One pass over every sink. Returns what it did and when the earliest waiting event
    /// falls due. With `budget`, no attempt starts after it (the rest stay pending).
    async fn pass(
        &self,
        lease: &crate::lease::Lease,
        budget: Option<tokio::time::Instant>,
    ) -> Result<(DeliverySummary, Option<DateTime<Utc>>), EventsError> {
        let mut summary = DeliverySummary::default();
        let mut next_due: Option<DateTime<Utc>> = None;
        // Names the delivered/dead files of this pass: unique even for passes of one millisecond.
        let mut tag = [0u8; 3];
        let _ = getrandom::fill(&mut tag);
        let pass_name = format!("{}{}", Utc::now().format("%Y%m%dT%H%M%S%3fZ"), hex::encode(tag));
        let guard = LeaseGuard { lease, renewed: Mutex::new(tokio::time::Instant::now()), lost: AtomicBool::new(false) };
        for sink in &self.outbox.sinks {
            let mut keys = Keys { budget, ..Keys::default() };
            if matches!(sink.kind, SinkKind::Webhook(_)) {
                keys.dead = self.outbox.dead_keys(&sink.name).await?;
            }
            for batch in self.outbox.batches(Status::Pending, &sink.name).await? {
                guard.renew().await;
                if guard.lost.load(Ordering::SeqCst) {
                    return Err(EventsError::LeaseLost);
                }
                let (records, dead_at, due) = match &sink.kind {
                    SinkKind::Webhook(h) => self.webhook_batch(sink, h, &batch, &mut keys, &guard, &mut summary).await,
                    SinkKind::Files(location) => files_batch(sink, location, &batch, &mut summary).await,
                };
                if let Some(d) = due {
                    next_due = Some(next_due.map_or(d, |n| n.min(d)));
                }
                let (mut delivered, mut dead, mut remaining) = (Vec::new(), Vec::new(), Vec::new());
                for (i, r) in records.into_iter().enumerate() {
                    if r.delivered_at.is_some() {
                        delivered.push(r);
                    } else if dead_at.contains(&i) {
                        dead.push(r);
                    } else {
                        remaining.push(r);
                    }
                }
                summary.delivered += delivered.len() as u64;
                summary.dead += dead.len() as u64;
                summary.pending += remaining.len() as u64;
                for r in &dead {
                    tracing::warn!(sink = %sink.name, event_id = %r.id, event_type = %r.event_type, user_id = %r.user_id,
                        attempts = r.attempts, error = r.last_error.as_deref().unwrap_or(""), "event is dead");
                }
                let files_failed = matches!(sink.kind, SinkKind::Files(_)) && !remaining.is_empty();
                self.outbox.settle(&sink.name, &batch, &pass_name, &delivered, &dead, &remaining).await?;
                if guard.lost.load(Ordering::SeqCst) {
                    return Err(EventsError::LeaseLost);
                }
                if files_failed {
                    break; // later files wait for this one: consumers read them in order
                }
            }
        }
        Ok((summary, next_due))
    }

    /// Attempts the due events of one webhook batch. Returns the records, updated, which of
    /// them are dead, and when the earliest waiting one falls due.
    async fn webhook_batch(
        &self,
        sink: &Sink,
        hook: &Webhook,
        batch: &BatchFile,
        keys: &mut Keys,
        guard: &LeaseGuard<'_>,
        summary: &mut DeliverySummary,
    ) -> Settled {
        let now = Utc::now();
        let mut records = batch.records.clone();
        let mut dead = HashSet::new();
        let mut next_due: Option<DateTime<Utc>> = None;
        // Groups of due records, one per ordering key, in order.
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        let mut group_of: HashMap<String, usize> = HashMap::new();
        let orphan = |r: &mut Record| {
            r.last_error = Some(ORPHANED.to_string());
        };
        for (i, r) in records.iter_mut().enumerate() {
            let key = r.event().ordering_key();
            // Later than a dead event of its key (a redelivered one is as old as it was).
            if keys.dead.get(&key).is_some_and(|t| r.created_at > *t) {
                orphan(r);
                dead.insert(i);
                continue;
            }
            if keys.blocked.contains(&key) {
                continue;
            }
            if r.next_attempt_at > now {
                keys.blocked.insert(key);
                next_due = Some(next_due.map_or(r.next_attempt_at, |n| n.min(r.next_attempt_at)));
                continue;
            }
            let g = *group_of.entry(key.clone()).or_insert_with(|| {
                groups.push((key, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(i);
        }
        let client = &self.clients[&sink.name];
        let pacer = &self.pacers[&sink.name];
        let snapshot = &records;
        let budget = keys.budget;
        let results: Vec<GroupResult> = futures::stream::iter(groups)
            .map(|(key, idx)| async move {
                let mut out = Vec::new();
                let mut end = GroupEnd::Done;
                for (n, &i) in idx.iter().enumerate() {
                    if budget.is_some_and(|b| tokio::time::Instant::now() >= b) || guard.lost.load(Ordering::SeqCst) {
                        end = GroupEnd::Waiting; // out of time: the rest stay pending, in order
                        break;
                    }
                    if let Some(rate) = hook.max_per_second.filter(|r| *r > 0.0) {
                        let at = {
                            let mut next = pacer.lock().await;
                            let at = (*next).max(tokio::time::Instant::now());
                            *next = at + Duration::from_secs_f64(1.0 / rate);
                            at
                        };
                        tokio::time::sleep_until(at).await;
                        if budget.is_some_and(|b| tokio::time::Instant::now() >= b) {
                            end = GroupEnd::Waiting;
                            break;
                        }
                    }
                    guard.renew().await;
                    let outcome = post(client, hook, &snapshot[i]).await;
                    let exhausted = sink.retry_schedule.get(snapshot[i].attempts as usize).is_none();
                    let stop = match &outcome {
                        Outcome::Delivered { .. } => None,
                        Outcome::Retry { .. } if !exhausted => Some(GroupEnd::Waiting),
                        Outcome::Retry { .. } | Outcome::Final { .. } | Outcome::Orphaned => Some(GroupEnd::Dead),
                    };
                    out.push((i, outcome));
                    if let Some(e) = stop {
                        if e == GroupEnd::Dead {
                            // The later events of this key go dead with it, unsent: redelivered
                            // together they keep their order.
                            out.extend(idx[n + 1..].iter().map(|j| (*j, Outcome::Orphaned)));
                        }
                        end = e;
                        break;
                    }
                }
                (key, out, end)
            })
            .buffer_unordered(hook.concurrency.max(1))
            .collect()
            .await;
        let attempted_at = Utc::now();
        for (key, outcomes, end) in results {
            match end {
                GroupEnd::Waiting => {
                    keys.blocked.insert(key);
                }
                GroupEnd::Dead => {
                    let t = outcomes.first().map(|(i, _)| records[*i].created_at).unwrap_or(now);
                    let oldest = keys.dead.entry(key).or_insert(t);
                    *oldest = (*oldest).min(t);
                }
                GroupEnd::Done => {}
            }
            for (i, o) in outcomes {
                let r = &mut records[i];
                if matches!(o, Outcome::Orphaned) {
                    orphan(r);
                    dead.insert(i);
                    continue;
                }
                r.attempts += 1;
                r.last_attempt_at = Some(attempted_at);
                summary.attempts += 1;
                match o {
                    Outcome::Orphaned => unreachable!("handled above"),
                    Outcome::Delivered { status } => {
                        r.last_status = status;
                        r.last_error = None;
                        r.delivered_at = Some(attempted_at);
                    }
                    Outcome::Final { status, error } => {
                        r.last_status = status;
                        r.last_error = Some(error);
                        dead.insert(i);
                    }
                    Outcome::Retry { status, error, after } => {
                        r.last_status = status;
                        summary.failed_attempts += 1;
                        match sink.retry_schedule.get(r.attempts as usize - 1) {
                            None => {
                                r.last_error = Some(format!("{error} (after {} attempts)", r.attempts));
                                dead.insert(i);
                            }
                            Some(pause) => {
                                let pause = (*pause).max(after.unwrap_or_default().min(Duration::from_secs(86_400)));
                                r.next_attempt_at =
                                    attempted_at + chrono::Duration::from_std(pause).unwrap_or(chrono::Duration::zero());
                                r.last_error = Some(error);
                                next_due = Some(next_due.map_or(r.next_attempt_at, |n| n.min(r.next_attempt_at)));
                                tracing::info!(sink = %sink.name, event_id = %r.id, attempts = r.attempts,
                                    status = ?r.last_status, next_attempt_at = %r.next_attempt_at,
                                    error = r.last_error.as_deref().unwrap_or(""), "event delivery failed; will retry");
                            }
                        }
                    }
                }
            }
        }
        (records, dead, next_due)
    }
}

/// Why an event went dead unsent.
const ORPHANED: &str = "not sent: an earlier event of this user and resource went dead (redeliver them together)";

/// How a group of one ordering key ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupEnd {
    /// Every event was answered (delivered, or dead for its own reason).
    Done,
    /// One waits for a retry (or the budget ran out): the key's later events wait too.
    Waiting,
    /// One went dead: the key's later events go dead with it.
    Dead,
}

/// A pass's view of the ordering keys of one sink.
#[derive(Debug, Default)]
struct Keys {
    /// Keys with an event waiting: their later events wait.
    blocked: HashSet<String>,
    /// Keys with an event in `dead/`, and the creation time of the oldest: their later events
    /// go dead unsent.
    dead: HashMap<String, DateTime<Utc>>,
    budget: Option<tokio::time::Instant>,
}

/// The delivery lease during a pass: renewed every quarter of its lifetime, from any task.
struct LeaseGuard<'a> {
    lease: &'a crate::lease::Lease,
    renewed: Mutex<tokio::time::Instant>,
    lost: AtomicBool,
}

impl LeaseGuard<'_> {
    async fn renew(&self) {
        let mut at = self.renewed.lock().await;
        if at.elapsed() < LEASE_TTL / 4 {
            return;
        }
        match self.lease.renew().await {
            Ok(true) => *at = tokio::time::Instant::now(),
            Ok(false) => self.lost.store(true, Ordering::SeqCst),
            Err(e) => tracing::warn!(error = %e, "renewing the delivery lease failed; will try again"),
        }
    }
}

/// Renews the delivery lease; a deliverer that lost it (it expired and another took it) stops
/// before sending more. A storage error on the renewal is passed over (the lease has time).
async fn held(lease: &crate::lease::Lease) -> Result<(), EventsError> {
    match lease.renew().await {
        Ok(true) | Err(_) => Ok(()),
        Ok(false) => Err(EventsError::LeaseLost),
    }
}

/// A batch after a pass: its records, which are dead, and when the next one falls due.
type Settled = (Vec<Record>, HashSet<usize>, Option<DateTime<Utc>>);

async fn post(client: &reqwest::Client, hook: &Webhook, r: &Record) -> Outcome {
    let ts = Utc::now().timestamp();
    let mut req = client.post(&hook.url).header(reqwest::header::CONTENT_TYPE, "application/json").body(r.body.clone());
    for (name, value) in sign::headers(&hook.key, &r.id, ts, r.body.as_bytes()) {
        req = req.header(name, value);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            let code = Some(status.as_u16());
            let after = retry_after(&resp);
            // Read (and drop) the answer so the connection can be reused; a receiver's answer
            // is an acknowledgement, never more than 64 KiB.
            // A 2xx is a delivery whatever follows it; a large error page is a failed attempt.
            if let Err(crate::withings::CappedRead::TooLarge) = crate::withings::read_capped(resp, MAX_ANSWER_BYTES).await
                && !status.is_success()
            {
                return Outcome::Retry {
                    status: code,
                    error: format!("the endpoint answered {status} with more than {MAX_ANSWER_BYTES} bytes (not read)"),
                    after,
                };
            }
            if status.is_success() {
                Outcome::Delivered { status: code }
            } else if status.is_client_error() && !matches!(status.as_u16(), 408 | 409 | 429) {
                Outcome::Final { status: code, error: format!("the endpoint answered {status} (final: not retried)") }
            } else {
                Outcome::Retry { status: code, error: format!("the endpoint answered {status}"), after }
            }
        }
        Err(e) if e.is_timeout() => {
            Outcome::Retry { status: None, error: format!("no answer within {} s", hook.timeout.as_secs_f64()), after: None }
        }
        Err(e) => {
            Outcome::Retry { status: None, error: format!("could not reach the endpoint: {}", e.without_url()), after: None }
        }
    }
}

/// Manifest mode: the due events of a batch as one JSON-lines file `<prefix>/<batch>.jsonl`,
/// a line per event: `{"id", "event_type", "created_at", "event": <envelope>}`.
async fn files_batch(
    sink: &Sink,
    location: &crate::storage::Location,
    batch: &BatchFile,
    summary: &mut DeliverySummary,
) -> Settled {
    let now = Utc::now();
    let mut records = batch.records.clone();
    let mut dead = HashSet::new();
    let due: Vec<usize> = (0..records.len()).filter(|i| records[*i].next_attempt_at <= now).collect();
    if due.is_empty() {
        let next = records.iter().map(|r| r.next_attempt_at).min();
        return (records, dead, next);
    }
    let mut body = Vec::new();
    for i in &due {
        let r = &records[*i];
        let line = format!(
            "{{\"id\":{},\"event_type\":{},\"created_at\":{},\"event\":{}}}\n",
            serde_json::Value::from(r.id.as_str()),
            serde_json::Value::from(r.event_type.as_str()),
            serde_json::Value::from(r.created_at.to_rfc3339()),
            r.body
        );
        body.extend_from_slice(line.as_bytes());
    }
    let key = location.key(&[&format!("{}.jsonl", batch.name)]);
    let result = location.store.put(&key, PutPayload::from(body)).await;
    let at = Utc::now();
    let mut next_due = None;
    for i in due {
        let r = &mut records[i];
        r.attempts += 1;
        r.last_attempt_at = Some(at);
        summary.attempts += 1;
        match &result {
            Ok(_) => {
                r.delivered_at = Some(at);
                r.last_error = None;
            }
            Err(e) => {
                summary.failed_attempts += 1;
                let error = format!("writing '{key}': {e}");
                match sink.retry_schedule.get(r.attempts as usize - 1) {
                    None => {
                        r.last_error = Some(error);
                        dead.insert(i);
                    }
                    Some(p) => {
                        r.next_attempt_at = at + chrono::Duration::from_std(*p).unwrap_or(chrono::Duration::zero());
                        r.last_error = Some(error);
                        next_due = Some(next_due.map_or(r.next_attempt_at, |n: DateTime<Utc>| n.min(r.next_attempt_at)));
                    }
                }
            }
        }
    }
    (records, dead, next_due)
}

/// Delivery in the background of a run: a pass after each checkpoint ([`Background::kick`]),
/// and a last one at the end that waits for retries due soon ([`Background::finish`]).
pub struct Background {
    notify: Arc<Notify>,
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<DeliverySummary>,
}

impl Background {
    pub fn spawn(deliverer: Arc<Deliverer>, final_wait: Duration) -> Background {
        let notify = Arc::new(Notify::new());
        let (stop, mut stopped) = watch::channel(false);
        let n = notify.clone();
        let handle = tokio::spawn(async move {
            let mut total = DeliverySummary::default();
            let run = async |wait: Duration, budget: Duration, total: &mut DeliverySummary| match deliverer
                .deliver(DeliverOptions { wait, budget: Some(budget) })
                .await
            {
                Ok(s) => total.add(&s),
                Err(e) => {
                    tracing::warn!(error = %e, "event delivery failed; the events stay pending");
                    total.errors.push(e.to_string());
                }
            };
            loop {
                tokio::select! {
                    // A pass after a checkpoint: at most 30 s of attempts (more are left for the
                    // next one), so the end of a run never waits long on a backlog.
                    _ = n.notified() => run(Duration::ZERO, Duration::from_secs(30), &mut total).await,
                    _ = stopped.changed() => {
                        run(final_wait, final_wait.max(Duration::from_secs(10)), &mut total).await;
                        break;
                    }
                }
            }
            total
        });
        Background { notify, stop, handle }
    }

    /// Asks for a pass (after a checkpoint's events are enqueued).
    pub fn kick(&self) {
        self.notify.notify_one();
    }

    /// The last pass, then what every pass did.
    pub async fn finish(self) -> DeliverySummary {
        let _ = self.stop.send(true);
        self.handle
            .await
            .unwrap_or_else(|e| DeliverySummary { errors: vec![format!("event delivery task: {e}")], ..Default::default() })
    }
}
