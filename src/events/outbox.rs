//! The durable outbox, in the lake: `_events/{pending,delivered,dead}/<sink>/<batch>.jsonl`.
//!
//! An event is written to `pending/` before any attempt. A batch file is written whole
//! (object stores replace objects atomically) and never appended to; settling a batch writes
//! its delivered and dead records to new files first, then rewrites (or deletes) the pending
//! file. A crash in between leaves a record in both places: it is delivered again, with the
//! same id (at least once, never lost).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::{Event, EventsError, Sink, storage};
use crate::lake::keys;
use crate::storage::Location;

/// Where a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Delivered,
    Dead,
}

impl Status {
    pub const ALL: [Status; 3] = [Status::Pending, Status::Delivered, Status::Dead];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Dead => "dead",
        }
    }
}

/// One event for one sink, with its delivery history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub event_type: String,
    pub user_id: String,
    pub created_at: DateTime<Utc>,
    pub sink: String,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    #[serde(default)]
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// HTTP status of the last attempt (none for a network error or a file sink).
    #[serde(default)]
    pub last_status: Option<u16>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub delivered_at: Option<DateTime<Utc>>,
    /// The envelope, exactly as signed and sent.
    pub body: String,
}

impl Record {
    pub fn new(e: &Event, sink: &str) -> Record {
        Record {
            id: e.id.clone(),
            event_type: e.event_type.clone(),
            user_id: e.user_id.clone(),
            created_at: e.created_at,
            sink: sink.to_string(),
            attempts: 0,
            next_attempt_at: e.created_at,
            last_attempt_at: None,
            last_status: None,
            last_error: None,
            delivered_at: None,
            body: e.body.clone(),
        }
    }

    pub fn event(&self) -> Event {
        Event {
            id: self.id.clone(),
            event_type: self.event_type.clone(),
            user_id: self.user_id.clone(),
            created_at: self.created_at,
            body: self.body.clone(),
        }
    }
}

/// A batch file of one sink and status.
#[derive(Debug, Clone)]
pub struct BatchFile {
    pub name: String,
    pub key: object_store::path::Path,
    pub records: Vec<Record>,
}

/// The outbox of a lake, for a set of sinks.
#[derive(Debug, Clone)]
pub struct Outbox {
    pub lake: Location,
    pub sinks: Vec<Sink>,
    /// Delivered records older than this are deleted after each delivery call (none: kept).
    pub delivered_retention: Option<std::time::Duration>,
}

fn to_jsonl(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r).expect("a record serializes");
        out.push(b'\n');
    }
    out
}

impl Outbox {
    pub fn new(lake: Location, sinks: Vec<Sink>) -> Outbox {
        Outbox { lake, sinks, delivered_retention: None }
    }

    /// Deletes delivered records written more than `retention` ago.
    pub fn with_retention(mut self, retention: Option<std::time::Duration>) -> Outbox {
        self.delivered_retention = retention;
        self
    }

    /// Deletes the `delivered/` files written more than `delivered_retention` before `now`
    /// (dead ones stay until redelivered: they need a person). Returns the files deleted.
    pub async fn prune(&self, now: DateTime<Utc>) -> Result<usize, EventsError> {
        let Some(keep) = self.delivered_retention else { return Ok(0) };
        let cutoff = now - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        let mut deleted = 0;
        for sink in self.sink_names(Status::Delivered).await? {
            let dir = keys::outbox_dir(&self.lake, Status::Delivered.as_str(), &sink);
            let old: Vec<object_store::path::Path> = self
                .lake
                .store
                .list(Some(&dir))
                .try_filter(|m| futures::future::ready(m.last_modified <= cutoff))
                .map_ok(|m| m.location)
                .try_collect()
                .await
                .map_err(storage(&dir))?;
            for key in old {
                match self.lake.store.delete(&key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                    Err(e) => return Err(storage(&key)(e)),
                }
            }
        }
        Ok(deleted)
    }

    /// Writes `events` as batch `name` of every sink whose filter takes some of them, once: a
    /// sink that already has that batch pending keeps it. Returns how many records were
    /// written (events times the sinks that take them).
    pub async fn enqueue(&self, name: &str, events: &[Event]) -> Result<usize, EventsError> {
        self.enqueue_to(name, events, |_| true).await
    }

    /// [`Outbox::enqueue`] for the sinks `to` takes.
    pub async fn enqueue_to(&self, name: &str, events: &[Event], to: impl Fn(&Sink) -> bool) -> Result<usize, EventsError> {
        let mut written = 0;
        for sink in self.sinks.iter().filter(|s| to(s)) {
            let records: Vec<Record> =
                events.iter().filter(|e| sink.filter.matches(&e.event_type)).map(|e| Record::new(e, &sink.name)).collect();
            if records.is_empty() {
                continue;
            }
            let key = keys::outbox_file(&self.lake, Status::Pending.as_str(), &sink.name, name);
            // Create-only: a batch is enqueued once. A second enqueue of the same name (the
            // recovery of a run that died after its enqueue) must not replace a batch that
            // holds more events or delivery history.
            let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
            match self.lake.store.put_opts(&key, PutPayload::from(to_jsonl(&records)), opts).await {
                Ok(_) => {}
                Err(object_store::Error::AlreadyExists { .. }) => {
                    tracing::warn!(sink = %sink.name, batch = name, "batch already in the outbox; kept as it is");
                    continue;
                }
                Err(e) => return Err(storage(&key)(e)),
            }
            written += records.len();
            tracing::debug!(sink = %sink.name, batch = name, events = records.len(), "events enqueued");
        }
        Ok(written)
    }

    /// The batch files of one sink and status, oldest first.
    pub async fn batches(&self, status: Status, sink: &str) -> Result<Vec<BatchFile>, EventsError> {
        let dir = keys::outbox_dir(&self.lake, status.as_str(), sink);
        let mut files: Vec<object_store::path::Path> =
            self.lake.store.list(Some(&dir)).map_ok(|m| m.location).try_collect().await.map_err(storage(&dir))?;
        files.retain(|k| k.filename().is_some_and(|f| f.ends_with(".jsonl")));
        files.sort();
        let mut out = Vec::with_capacity(files.len());
        for key in files {
            let Some(records) = self.read(&key).await? else { continue };
            let name = key.filename().and_then(|f| f.strip_suffix(".jsonl")).unwrap_or_default().to_string();
            out.push(BatchFile { name, key, records });
        }
        Ok(out)
    }

    async fn read(&self, key: &object_store::path::Path) -> Result<Option<Vec<Record>>, EventsError> {
        let bytes = match self.lake.store.get(key).await {
            Ok(r) => r.bytes().await.map_err(storage(key))?,
            // Settled by another deliverer between the listing and the read.
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(storage(key)(e)),
        };
        let mut records = Vec::new();
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate().filter(|(_, l)| !l.is_empty()) {
            let r: Record = serde_json::from_slice(line).map_err(|source| EventsError::Corrupt {
                key: key.to_string(),
                line: i + 1,
                source,
            })?;
            records.push(r);
        }
        Ok(Some(records))
    }

    /// The sinks that have a folder under `status` (configured or not: a sink removed from
    /// the pipeline keeps its records).
    pub(crate) async fn sink_names(&self, status: Status) -> Result<Vec<String>, EventsError> {
        let dir = keys::outbox_status_dir(&self.lake, status.as_str());
        let listed = self.lake.store.list_with_delimiter(Some(&dir)).await.map_err(storage(&dir))?;
        let mut names: Vec<String> = listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect();
        for s in &self.sinks {
            if !names.contains(&s.name) {
                names.push(s.name.clone());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Whether `sink` already has batch `name` anywhere (pending, or settled by a pass).
    pub async fn has_batch(&self, sink: &str, name: &str) -> Result<bool, EventsError> {
        for status in Status::ALL {
            let dir = keys::outbox_dir(&self.lake, status.as_str(), sink);
            let files: Vec<object_store::path::Path> =
                self.lake.store.list(Some(&dir)).map_ok(|m| m.location).try_collect().await.map_err(storage(&dir))?;
            let pending = format!("{name}.jsonl");
            let settled = format!("{name}-");
            if files.iter().any(|k| k.filename().is_some_and(|f| f == pending || f.starts_with(&settled))) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The ordering keys of `sink`'s dead events, with the creation time of the oldest: the
    /// key's later events go dead unsent until they are redelivered (a receiver never gets an
    /// update of a row it never got).
    pub async fn dead_keys(&self, sink: &str) -> Result<std::collections::HashMap<String, DateTime<Utc>>, EventsError> {
        let mut out: std::collections::HashMap<String, DateTime<Utc>> = Default::default();
        for b in self.batches(Status::Dead, sink).await? {
            for r in &b.records {
                let t = out.entry(r.event().ordering_key()).or_insert(r.created_at);
                *t = (*t).min(r.created_at);
            }
        }
        Ok(out)
    }

    /// Every record with `status`, oldest batch first.
    pub async fn list(&self, status: Status) -> Result<Vec<Record>, EventsError> {
        let mut out = Vec::new();
        for sink in self.sink_names(status).await? {
            for b in self.batches(status, &sink).await? {
                out.extend(b.records);
            }
        }
        Ok(out)
    }

    /// Settles one pending batch after a delivery pass: `delivered` and `dead` records go to
    /// their folders (as `<batch>-<pass>`), `remaining` replace the pending file (deleted when
    /// empty).
    pub async fn settle(
        &self,
        sink: &str,
        batch: &BatchFile,
        pass: &str,
        delivered: &[Record],
        dead: &[Record],
        remaining: &[Record],
    ) -> Result<(), EventsError> {
        for (status, records) in [(Status::Delivered, delivered), (Status::Dead, dead)] {
            if records.is_empty() {
                continue;
            }
            let key = keys::outbox_file(&self.lake, status.as_str(), sink, &format!("{}-{pass}", batch.name));
            self.lake.store.put(&key, PutPayload::from(to_jsonl(records))).await.map_err(storage(&key))?;
        }
        if remaining.is_empty() {
            match self.lake.store.delete(&batch.key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(storage(&batch.key)(e)),
            }
        } else if remaining != batch.records.as_slice() {
            self.lake.store.put(&batch.key, PutPayload::from(to_jsonl(remaining))).await.map_err(storage(&batch.key))?;
        }
        Ok(())
    }

    /// Puts records back in `pending/` with fresh attempts: the dead ones (`all_dead`), or
    /// those with the given ids (dead or delivered). Dead records leave `dead/`; delivered
    /// ones stay there (their history), and a new attempt is queued. Returns the records
    /// queued again.
    pub async fn redeliver(&self, ids: &[String], all_dead: bool, now: DateTime<Utc>) -> Result<Vec<Record>, EventsError> {
        let mut queued: BTreeMap<String, Vec<Record>> = BTreeMap::new();
        let mut found: std::collections::BTreeSet<String> = Default::default();
        let mut rewrites: Vec<(BatchFile, Vec<Record>)> = Vec::new();
        for status in [Status::Dead, Status::Delivered] {
            for sink in self.sink_names(status).await? {
                for b in self.batches(status, &sink).await? {
                    let (take, keep): (Vec<Record>, Vec<Record>) =
                        b.records.iter().cloned().partition(|r| ids.contains(&r.id) || (all_dead && status == Status::Dead));
                    if take.is_empty() {
                        continue;
                    }
                    for mut r in take {
                        if !found.insert(format!("{}/{}", r.sink, r.id)) {
                            continue; // already queued from dead/
                        }
                        r.attempts = 0;
                        r.next_attempt_at = now;
                        r.last_error = None;
                        r.last_status = None;
                        r.delivered_at = None;
                        queued.entry(r.sink.clone()).or_default().push(r);
                    }
                    if status == Status::Dead {
                        rewrites.push((b, keep));
                    }
                }
            }
        }
        for id in ids {
            if !found.iter().any(|f| f.rsplit('/').next() == Some(id.as_str())) {
                return Err(EventsError::UnknownEvent { id: id.clone() });
            }
        }
        let name = super::batch_name(now, &format!("redeliver-{}", hex::encode(rand4())));
        let mut out = Vec::new();
        for (sink, records) in queued {
            let key = keys::outbox_file(&self.lake, Status::Pending.as_str(), &sink, &name);
            self.lake.store.put(&key, PutPayload::from(to_jsonl(&records))).await.map_err(storage(&key))?;
            out.extend(records);
        }
        // Only once they are pending again do they leave dead/.
        for (b, keep) in rewrites {
            if keep.is_empty() {
                match self.lake.store.delete(&b.key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(storage(&b.key)(e)),
                }
            } else {
                self.lake.store.put(&b.key, PutPayload::from(to_jsonl(&keep))).await.map_err(storage(&b.key))?;
            }
        }
        Ok(out)
    }
}

fn rand4() -> [u8; 4] {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    b
}
