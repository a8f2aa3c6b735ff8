//! The lake: hive-partitioned Parquet on any object store, one file per (resource, partition,
//! shard), and a manifest per commit.
//!
//! Commit protocol (ARCHITECTURE.md; the order is the contract readers rely on):
//! 1. for each touched partition: read the current file, apply the merge rules
//!    ([`merge::merge`]), sort by (user_id, time), and overwrite the file in one atomic put
//!    (object stores replace an object atomically; the local store writes a temporary file and
//!    renames it). A partition whose rows did not change is not rewritten; one left empty is
//!    deleted. A reader that globs `<lake>/<resource>/**/*.parquet` sees complete, deduplicated
//!    data at every moment;
//! 2. then the manifest `_manifests/<run_id>-<checkpoint>.json`, create-only: a checkpoint
//!    is committed once, and readers that wait for manifests see finished commits only;
//! 3. then (the callers' part) cursors, then events.
//!
//! Partition columns (`date`, `month`) live only in the path. Files carry zstd pages,
//! page-level statistics and the page index, and key/value metadata naming the resource, the
//! schema version and the run.

mod forget;
pub mod keys;
pub mod merge;
pub mod query;
pub mod staging;
pub mod tables;
pub mod users;

pub use forget::LakeErasure;

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Date32Type, TimestampMicrosecondType};
use arrow::error::ArrowError;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::error::{Cause, Classify, ErrorClass};
use crate::storage::Location;
pub use keys::Partition;
pub use merge::{Changed, Counts, Coverage};
pub use tables::{Endpoint, TableId};

/// Days from 0001-01-01 (chrono's day 1) to 1970-01-01 (Arrow's day 0), plus one.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// The lake format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Rows per Parquet row group: large enough for analytics scans, small enough that
/// statistics prune by user within a month file.
const ROW_GROUP_ROWS: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake storage at '{key}': {source}")]
    Storage { key: String, source: object_store::Error },
    #[error(
        "lake at '{url}' was created with {found} shards; this pipeline says {expected} (the shard count of a lake is fixed)"
    )]
    ShardCount { url: String, found: u32, expected: u32 },
    #[error("lake at '{url}' has format version {found}; this program reads version {FORMAT_VERSION}")]
    Format { url: String, found: u32 },
    #[error("no lake at '{url}' (it has no _lake.json; a sync creates one)")]
    NotALake { url: String },
    /// `reason` is the text of `source` when there is one ([`LakeError::corrupt`]).
    #[error("'{key}' is not a valid file of the lake: {reason}")]
    Corrupt { key: String, reason: String, source: Option<Cause> },
    #[error("manifest '{key}' already exists: checkpoint {checkpoint} of run {run_id} was committed before")]
    ManifestExists { key: String, run_id: String, checkpoint: u32 },
    #[error("{table}: {source}")]
    Arrow { table: TableId, source: Cause },
    #[error("shard {shard} does not exist: the lake has {shards} shards (0 to {last})", last = shards.saturating_sub(1))]
    NoSuchShard { shard: u32, shards: u32 },
    #[error("a lake needs at least one shard")]
    ZeroShards,
    #[error("shard {shard} of the lake is busy: {source}")]
    Busy { shard: u32, source: crate::lease::LeaseError },
    #[error("the lease on shard {shard} was lost (it expired and another writer took it); nothing more was written")]
    LeaseLost { shard: u32 },
    #[error(transparent)]
    Lease(crate::lease::LeaseError),
    /// `reason` is the text of `source` when there is one.
    #[error("staging folder '{path}': {reason}")]
    Staging { path: String, reason: String, source: Option<Cause> },
    #[error("user '{user_id}' belongs to shard {belongs} of {shards}, not to shard {shard} whose lease this commit holds")]
    WrongShard { user_id: String, shard: u32, belongs: u32, shards: u32 },
}

/// The shard of a user: the first 8 bytes of the SHA-256 of the user id, modulo the shard
/// count. Stable across versions, machines and runs (the lake's files depend on it).
pub fn shard_of(user_id: &str, shards: u32) -> u32 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(user_id.as_bytes());
    let n = u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
    (n % u64::from(shards.max(1))) as u32
}

/// Storage trouble is worth a retry; everything else needs a person.
impl Classify for LakeError {
    fn class(&self) -> ErrorClass {
        match self {
            LakeError::Busy { .. } => ErrorClass::Busy,
            LakeError::Storage { .. } | LakeError::LeaseLost { .. } | LakeError::Lease(_) => ErrorClass::Transient,
            LakeError::ShardCount { .. }
            | LakeError::Format { .. }
            | LakeError::NotALake { .. }
            | LakeError::NoSuchShard { .. }
            | LakeError::ZeroShards
            | LakeError::ManifestExists { .. } => ErrorClass::Config,
            _ => ErrorClass::Internal,
        }
    }
}

impl LakeError {
    /// The file at `key` does not decode: `source` says why.
    pub(crate) fn corrupt(key: impl ToString, source: impl std::error::Error + Send + Sync + 'static) -> LakeError {
        LakeError::Corrupt { key: key.to_string(), reason: source.to_string(), source: Some(Box::new(source)) }
    }

    /// The file at `key` does not have what it should.
    pub(crate) fn corrupt_because(key: impl ToString, reason: String) -> LakeError {
        LakeError::Corrupt { key: key.to_string(), reason, source: None }
    }
}

/// `_lake.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LakeMeta {
    pub format_version: u32,
    pub shards: u32,
    pub created_at: DateTime<Utc>,
}

/// One staged unit: rows of one table and what they cover.
#[derive(Debug, Clone)]
pub struct Unit {
    pub table: TableId,
    pub batch: RecordBatch,
    pub coverage: Coverage,
}

/// What one commit did to one partition file (a manifest entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionChange {
    /// The table's SQL name: a resource, `raw_<endpoint>` or `quarantine`.
    pub table: String,
    pub partition: String,
    pub key: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// Size of the new file (0 when the partition became empty and its file was deleted).
    pub bytes: u64,
    pub min_time: Option<String>,
    pub max_time: Option<String>,
    pub users: Vec<String>,
}

/// `_manifests/<run_id>-<checkpoint>.json`: what one commit changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub run_id: String,
    pub checkpoint: u32,
    pub shard: u32,
    pub committed_at: DateTime<Utc>,
    /// Changed partitions only.
    pub partitions: Vec<PartitionChange>,
    /// Partitions touched whose rows were already as staged.
    pub unchanged_partitions: usize,
}

/// A writer's hold on one shard of the lake: commits need it.
#[derive(Debug)]
pub struct ShardLease {
    pub shard: u32,
    lease: crate::lease::Lease,
}

impl ShardLease {
    pub async fn release(self) {
        self.lease.release().await
    }

    /// Runs `work` while the lease is renewed every quarter of its lifetime
    /// ([`crate::lease::Lease::renewing`]).
    pub async fn renewing<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        self.lease.renewing(work).await
    }

    /// Heartbeat; an error when the lease was lost (the holder must stop writing).
    pub async fn renew(&self) -> Result<(), LakeError> {
        if self.lease.renew().await.map_err(LakeError::Lease)? { Ok(()) } else { Err(LakeError::LeaseLost { shard: self.shard }) }
    }
}

/// How long a shard lease holds without a heartbeat (a commit renews it).
pub const SHARD_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(120);

/// An opened lake.
#[derive(Debug, Clone)]
pub struct Lake {
    pub location: Location,
    pub meta: LakeMeta,
    /// Partitions a commit reads, merges and writes at once. An object store answers each
    /// GET and PUT in tens of milliseconds, so a commit of thousands of partitions one at a
    /// time waits minutes on round trips: remote stores (s3, gs, az) commit 8 at a time. A
    /// local folder or memory commits one at a time (one partition in memory; the merge is
    /// the cost there, not the round trip).
    pub commit_concurrency: usize,
}

/// [`Lake::commit_concurrency`] for a store: 1 on this machine's disk or memory, 8 on any
/// other (remote) store.
fn commit_concurrency_for(location: &Location) -> usize {
    let local = ["file://", "memory://"];
    if local.iter().any(|p| location.store_url.starts_with(p)) { 1 } else { 8 }
}

/// Told, during a commit, what each partition's commit creates or updates (the rows of
/// units staged with capture), before that partition is written: a crash after the partition
/// write still finds what the hook kept. The events module registers one to announce the
/// changes ([`crate::events::capture`]); the lake itself knows nothing of events.
#[async_trait::async_trait]
pub trait CommitHook: Send + Sync {
    /// `index` is the partition's place in the commit (unique within it, in commit order).
    async fn before_partition(
        &self,
        lake: &Lake,
        shard: u32,
        index: usize,
        table: TableId,
        changed: &merge::Changed,
    ) -> Result<(), LakeError>;
}

pub(crate) fn storage(key: &object_store::path::Path) -> impl FnOnce(object_store::Error) -> LakeError + '_ {
    move |source| LakeError::Storage { key: key.to_string(), source }
}

impl Lake {
    /// Opens the lake at `location`, creating `_lake.json` with `shards` if there is none. A
    /// lake created with another shard count is an error.
    pub async fn open_or_create(location: Location, shards: u32) -> Result<Lake, LakeError> {
        if shards == 0 {
            return Err(LakeError::ZeroShards);
        }
        let key = keys::lake_meta(&location);
        let meta = LakeMeta { format_version: FORMAT_VERSION, shards, created_at: Utc::now() };
        let body = serde_json::to_vec_pretty(&meta).expect("lake meta serializes");
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match location.store.put_opts(&key, PutPayload::from(body), opts).await {
            Ok(_) => Ok(Lake { commit_concurrency: commit_concurrency_for(&location), location, meta }),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let lake = Lake::open(location).await?;
                if lake.meta.shards != shards {
                    return Err(LakeError::ShardCount {
                        url: lake.location.url.clone(),
                        found: lake.meta.shards,
                        expected: shards,
                    });
                }
                Ok(lake)
            }
            Err(e) => Err(storage(&key)(e)),
        }
    }

    /// Opens an existing lake (for readers: `query`, `tables`).
    pub async fn open(location: Location) -> Result<Lake, LakeError> {
        let key = keys::lake_meta(&location);
        let bytes = match location.store.get(&key).await {
            Ok(r) => r.bytes().await.map_err(storage(&key))?,
            Err(object_store::Error::NotFound { .. }) => return Err(LakeError::NotALake { url: location.url.clone() }),
            Err(e) => return Err(storage(&key)(e)),
        };
        let meta: LakeMeta = serde_json::from_slice(&bytes).map_err(|e| LakeError::corrupt(&key, e))?;
        if meta.format_version != FORMAT_VERSION {
            return Err(LakeError::Format { url: location.url.clone(), found: meta.format_version });
        }
        Ok(Lake { commit_concurrency: commit_concurrency_for(&location), location, meta })
    }

    /// Takes the writer lease of `shard` for `holder`, waiting up to `wait` for another
    /// writer; [`LakeError::Busy`] names the holder when the wait runs out.
    pub async fn lease_shard(&self, shard: u32, holder: &str, wait: std::time::Duration) -> Result<ShardLease, LakeError> {
        if shard >= self.meta.shards {
            return Err(LakeError::NoSuchShard { shard, shards: self.meta.shards });
        }
        let key = keys::shard_lease(&self.location, shard);
        match crate::lease::Lease::acquire(self.location.store.clone(), key, holder, SHARD_LEASE_TTL, wait).await {
            Ok(lease) => {
                self.remove_interrupted_writes(shard).await;
                Ok(ShardLease { shard, lease })
            }
            Err(source @ crate::lease::LeaseError::Busy { .. }) => Err(LakeError::Busy { shard, source }),
            Err(e) => Err(LakeError::Lease(e)),
        }
    }

    /// Every user of `batch` must belong to `shard` (a writer of shard i never touches the
    /// users of another shard, so N workers never write the same rows).
    fn check_shard(&self, shard: u32, batch: &RecordBatch) -> Result<(), LakeError> {
        let shards = self.meta.shards;
        if shards <= 1 {
            return Ok(());
        }
        let Some(users) = batch.column_by_name("user_id").and_then(|c| c.as_string_opt::<i32>()) else { return Ok(()) };
        let mut last: Option<&str> = None;
        for u in users.iter().flatten() {
            if last == Some(u) {
                continue;
            }
            last = Some(u);
            let belongs = shard_of(u, shards);
            if belongs != shard {
                return Err(LakeError::WrongShard { user_id: u.to_string(), shard, belongs, shards });
            }
        }
        Ok(())
    }

    /// On a local folder, a writer killed during a put leaves its temporary file beside the
    /// object (`<key>#<digits>`). object_store never lists it, but tools that read every file
    /// of a folder (Spark, some pyarrow settings) would, and a lake should not keep growing:
    /// the new holder of a shard removes every one whose writer is dead, wherever it is in the
    /// lake (data, raw landing, quarantine, manifests, state, leases, events), and older
    /// unattributed ones of its own shard's data files ([`crate::storage::local`]).
    async fn remove_interrupted_writes(&self, shard: u32) {
        let location = self.location.clone();
        let sweep = tokio::task::spawn_blocking(move || {
            let owned = |k: &object_store::path::Path| keys::parse_data_file(&location, k).is_some_and(|(_, _, s)| s == shard);
            location.remove_interrupted_writes(&location.prefix, crate::storage::local::Unattributed::OwnedOrOld(&owned))
        });
        if let Ok(n @ 1..) = sweep.await {
            tracing::info!(shard, removed = n, "removed the temporary files of interrupted writes");
        }
    }

    /// Deletes the lease of `shard` whoever holds it: for an operator who knows the holder is
    /// dead (a killed job) and will not wait for the lease to expire.
    pub async fn break_lease(&self, shard: u32) -> Result<(), LakeError> {
        let key = keys::shard_lease(&self.location, shard);
        match self.location.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(storage(&key)(e)),
        }
    }

    /// The partitions of `table` that have a file of `shard`.
    pub async fn partitions(&self, table: TableId, shard: u32) -> Result<Vec<Partition>, LakeError> {
        use futures::TryStreamExt;
        let dir = keys::table_dir(&self.location, table);
        let files: Vec<object_store::path::Path> =
            self.location.store.list(Some(&dir)).map_ok(|m| m.location).try_collect().await.map_err(storage(&dir))?;
        let mut out: Vec<Partition> = files
            .iter()
            .filter_map(|k| keys::parse_data_file(&self.location, k))
            .filter(|(t, _, s)| *t == table && *s == shard)
            .map(|(_, p, _)| p)
            .collect();
        out.sort();
        Ok(out)
    }

    /// The rows of one partition file of `shard` (empty when there is no file).
    pub async fn read(&self, table: impl Into<TableId>, partition: &Partition, shard: u32) -> Result<RecordBatch, LakeError> {
        let table = table.into();
        let key = keys::data_file(&self.location, table, partition, shard);
        let schema = table.schema();
        let bytes = match self.location.store.get(&key).await {
            Ok(r) => r.bytes().await.map_err(storage(&key))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(RecordBatch::new_empty(schema.arrow())),
            Err(e) => return Err(storage(&key)(e)),
        };
        let corrupt = |e: ParquetError| LakeError::corrupt(&key, e);
        let corrupt_arrow = |e: ArrowError| LakeError::corrupt(&key, e);
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(corrupt)?.build().map_err(corrupt)?;
        let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().map_err(corrupt_arrow)?;
        let batches: Vec<RecordBatch> =
            batches.iter().map(|b| merge::conform(schema, b)).collect::<Result<_, _>>().map_err(corrupt_arrow)?;
        concat_batches(&schema.arrow(), &batches).map_err(corrupt_arrow)
    }

    /// Commits staged units to the lease's shard as checkpoint `checkpoint` of `run_id`: every
    /// touched partition merged and rewritten, then the manifest (see the module doc for the
    /// order). The lease is renewed first and then at least every quarter of its lifetime,
    /// before a file is written: a writer that lost its lease stops before writing more.
    pub async fn commit(&self, lease: &ShardLease, run_id: &str, checkpoint: u32, units: &[Unit]) -> Result<Manifest, LakeError> {
        let mut plan: BTreeMap<(TableId, Partition), Vec<(RecordBatch, Coverage)>> = BTreeMap::new();
        for unit in units {
            for (p, rows) in split(unit)? {
                plan.entry((unit.table, p)).or_default().push((rows, unit.coverage.clone()));
            }
        }
        let keys: Vec<(TableId, Partition)> = plan.keys().cloned().collect();
        let load =
            |k: &(TableId, Partition)| Ok(plan.remove(k).unwrap_or_default().into_iter().map(|(b, c)| (b, c, false)).collect());
        Ok(self.apply(lease, run_id, checkpoint, keys, None, load).await?.0)
    }

    /// Commits what `staging` holds (see [`staging::Staging`]): the slices of at most
    /// [`Lake::commit_concurrency`] partitions in memory at a time. The staging area is emptied once the manifest is written.
    ///
    /// Also returns the rows that slices staged with capture created or updated. With
    /// a `hook`, each partition's captured rows go to the hook before the partition itself is
    /// written ([`CommitHook`]).
    pub async fn commit_staged(
        &self,
        lease: &ShardLease,
        run_id: &str,
        checkpoint: u32,
        staging: &mut staging::Staging,
        hook: Option<&dyn CommitHook>,
    ) -> Result<(Manifest, Vec<(TableId, merge::Changed)>), LakeError> {
        let keys = staging.partitions();
        let out = self.apply(lease, run_id, checkpoint, keys, hook, |k| staging.load(k)).await?;
        staging.clear();
        Ok(out)
    }

    /// The commit loop: for each (table, partition), `load` gives the staged slices.
    async fn apply(
        &self,
        lease: &ShardLease,
        run_id: &str,
        checkpoint: u32,
        plan: Vec<(TableId, Partition)>,
        hook: Option<&dyn CommitHook>,
        mut load: impl FnMut(&(TableId, Partition)) -> Result<Vec<(RecordBatch, Coverage, bool)>, LakeError>,
    ) -> Result<(Manifest, Vec<(TableId, merge::Changed)>), LakeError> {
        let shard = lease.shard;
        // A checkpoint commits once: find out before rewriting anything.
        let manifest_key = keys::manifest(&self.location, run_id, checkpoint);
        match self.location.store.head(&manifest_key).await {
            Ok(_) => {
                return Err(LakeError::ManifestExists { key: manifest_key.to_string(), run_id: run_id.to_string(), checkpoint });
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(storage(&manifest_key)(e)),
        }
        // The lease is checked (renewed when a quarter of its life has passed) before each
        // write; partitions commit `commit_concurrency` at a time, in plan order in the
        // manifest, and the manifest waits for all of them.
        let cx = CommitCx { shard, run_id, hook, lease: LeaseCheck { lease, renewed: tokio::sync::Mutex::new(None) } };
        cx.lease.held().await?;
        let cx = &cx;
        let mut changes = Vec::new();
        let mut captured: Vec<(TableId, merge::Changed)> = Vec::new();
        let mut unchanged = 0;
        // Staged slices are loaded in plan order as places free up (at most
        // `commit_concurrency` partitions in memory). After a failure no partition starts,
        // and those in flight finish (none is cut between its hook and its write), then the
        // first error is returned.
        use futures::StreamExt;
        let mut pending = plan.into_iter().enumerate();
        let mut inflight = futures::stream::FuturesOrdered::new();
        let mut failed: Option<LakeError> = None;
        loop {
            while failed.is_none() && inflight.len() < self.commit_concurrency.max(1) {
                let Some((i, key)) = pending.next() else { break };
                let staged = load(&key);
                inflight.push_back(async move { self.commit_partition(cx, i, key, staged?).await });
            }
            match inflight.next().await {
                None => break,
                Some(Err(e)) => {
                    failed.get_or_insert(e);
                }
                Some(Ok(_)) if failed.is_some() => {}
                Some(Ok(PartitionOutcome::Empty)) => {}
                Some(Ok(PartitionOutcome::Unchanged)) => unchanged += 1,
                Some(Ok(PartitionOutcome::Written { change, captured: c })) => {
                    changes.push(*change);
                    captured.extend(c);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }

        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            run_id: run_id.to_string(),
            checkpoint,
            shard,
            committed_at: Utc::now(),
            partitions: changes,
            unchanged_partitions: unchanged,
        };
        let key = keys::manifest(&self.location, run_id, checkpoint);
        let body = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.location.store.put_opts(&key, PutPayload::from(body), opts).await {
            Ok(_) => Ok((manifest, captured)),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Err(LakeError::ManifestExists { key: key.to_string(), run_id: run_id.to_string(), checkpoint })
            }
            Err(e) => Err(storage(&key)(e)),
        }
    }

    /// One partition of a commit: the current file merged with the staged slices, the hook
    /// told of the changes, then the file written (or deleted when left empty).
    async fn commit_partition(
        &self,
        cx: &CommitCx<'_>,
        index: usize,
        (table, partition): (TableId, Partition),
        staged: Vec<(RecordBatch, Coverage, bool)>,
    ) -> Result<PartitionOutcome, LakeError> {
        let shard = cx.shard;
        for (batch, _, _) in &staged {
            self.check_shard(shard, batch)?;
        }
        let schema = table.schema();
        let existing = self.read(table, &partition, shard).await?;
        if existing.num_rows() == 0 && staged.iter().all(|(b, _, _)| b.num_rows() == 0) {
            return Ok(PartitionOutcome::Empty); // a window over a partition that has no rows and gets none
        }
        let units: Vec<(&RecordBatch, &Coverage)> = staged.iter().map(|(b, c, _)| (b, c)).collect();
        let capture: Vec<bool> = staged.iter().map(|(_, _, c)| *c && matches!(table, TableId::Resource(_))).collect();
        let (rows, counts, changed) = merge::merge_capturing(schema, &existing, &units, &capture)
            .map_err(|e| LakeError::Arrow { table, source: Box::new(e) })?;
        drop(units);
        drop((staged, existing));
        if !counts.changed() {
            return Ok(PartitionOutcome::Unchanged);
        }
        if let (Some(changed), Some(hook)) = (&changed, cx.hook) {
            // The hook first: a crash after the partition write still finds what it kept.
            cx.lease.held().await?;
            hook.before_partition(self, shard, index, table, changed).await?;
        }
        let key = keys::data_file(&self.location, table, &partition, shard);
        cx.lease.held().await?;
        let bytes = if rows.num_rows() == 0 {
            match self.location.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => 0,
                Err(e) => return Err(storage(&key)(e)),
            }
        } else {
            let file = write_parquet(table, cx.run_id, &rows)?;
            let n = file.len() as u64;
            self.location.store.put(&key, PutPayload::from(file)).await.map_err(storage(&key))?;
            n
        };
        let (min_time, max_time) = time_range(table, &rows);
        let change = PartitionChange {
            table: table.sql_name(),
            partition: partition.folder(),
            key: key.to_string(),
            counts,
            bytes,
            min_time,
            max_time,
            users: users_of(&rows),
        };
        Ok(PartitionOutcome::Written { change: Box::new(change), captured: changed.map(|c| (table, c)) })
    }
}

/// What every partition of one commit shares.
struct CommitCx<'a> {
    shard: u32,
    run_id: &'a str,
    hook: Option<&'a dyn CommitHook>,
    lease: LeaseCheck<'a>,
}

/// The shard lease, checked before each write: renewed once a quarter of its life has
/// passed since the last renewal; lost means the commit stops.
struct LeaseCheck<'a> {
    lease: &'a ShardLease,
    renewed: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

impl LeaseCheck<'_> {
    async fn held(&self) -> Result<(), LakeError> {
        let mut renewed = self.renewed.lock().await;
        if renewed.is_some_and(|t| t.elapsed() < SHARD_LEASE_TTL / 4) {
            return Ok(());
        }
        if !self.lease.lease.renew().await.map_err(LakeError::Lease)? {
            return Err(LakeError::LeaseLost { shard: self.lease.shard });
        }
        *renewed = Some(tokio::time::Instant::now());
        Ok(())
    }
}

/// What committing one partition did.
enum PartitionOutcome {
    /// No rows before and none staged.
    Empty,
    Unchanged,
    Written {
        change: Box<PartitionChange>,
        captured: Option<(TableId, merge::Changed)>,
    },
}

/// The (table, partition) pairs a unit touches (see [`split`]).
pub fn partitions_of_unit(unit: &Unit) -> Result<Vec<(TableId, Partition)>, LakeError> {
    Ok(split(unit)?.into_iter().map(|(p, _)| (unit.table, p)).collect())
}

/// The rows of a unit per partition, including the partitions its coverage spans where no
/// row arrived (a window replace there deletes).
pub(crate) fn split(unit: &Unit) -> Result<Vec<(Partition, RecordBatch)>, LakeError> {
    let schema = unit.table.schema();
    let arrow_err = |e: arrow::error::ArrowError| LakeError::Arrow { table: unit.table, source: Box::new(e) };
    let parts = partitions_of(unit.table, &unit.batch).map_err(arrow_err)?;
    // Row indices per partition: one pass, whatever the number of partitions.
    let mut by_partition: BTreeMap<Partition, Vec<u32>> = BTreeMap::new();
    for (i, p) in parts.into_iter().enumerate() {
        by_partition.entry(p).or_default().push(i as u32);
    }
    let spanned = match &unit.coverage {
        Coverage::Window { start, end, .. } => window_partitions(schema.grain, *start, *end),
        Coverage::Everything { partitions, .. } => partitions.clone(),
        Coverage::Upsert => Vec::new(),
    };
    for p in spanned {
        by_partition.entry(p).or_default();
    }
    by_partition
        .into_iter()
        .map(|(p, rows)| {
            let idx = arrow::array::UInt32Array::from(rows);
            Ok((p, arrow::compute::take_record_batch(&unit.batch, &idx).map_err(arrow_err)?))
        })
        .collect()
}

/// The partition of every row: the UTC date of a timestamp, or the calendar date.
fn partitions_of(table: TableId, batch: &RecordBatch) -> Result<Vec<Partition>, arrow::error::ArrowError> {
    let schema = table.schema();
    let col = batch.column(schema.index_of(&schema.partition_column).expect("checked when the schema loads"));
    let dates: Vec<NaiveDate> = match col.data_type() {
        DataType::Timestamp(_, _) => col
            .as_primitive::<TimestampMicrosecondType>()
            .values()
            .iter()
            .map(|us| DateTime::<Utc>::from_timestamp_micros(*us).map(|t| t.date_naive()).unwrap_or_default())
            .collect(),
        DataType::Date32 => col
            .as_primitive::<Date32Type>()
            .values()
            .iter()
            .map(|d| NaiveDate::from_num_days_from_ce_opt(d.saturating_add(UNIX_EPOCH_DAYS_FROM_CE)).unwrap_or_default())
            .collect(),
        t => return Err(arrow::error::ArrowError::SchemaError(format!("partition column of type {t}"))),
    };
    Ok(dates.into_iter().map(|d| Partition::of(schema.grain, d)).collect())
}

/// The partitions a `[start, end)` window (epoch seconds) touches, one day of slack each side
/// for summaries partitioned by local date.
fn window_partitions(grain: crate::schema::Grain, start: i64, end: i64) -> Vec<Partition> {
    let day = |t: i64| DateTime::<Utc>::from_timestamp(t, 0).map(|d| d.date_naive());
    let (Some(a), Some(b)) = (day(start.saturating_sub(86_400)), day(end.saturating_add(86_400))) else { return Vec::new() };
    let mut out: Vec<Partition> = a.iter_days().take_while(|d| *d <= b).map(|d| Partition::of(grain, d)).collect();
    out.dedup();
    out
}

fn write_parquet(table: TableId, run_id: &str, rows: &RecordBatch) -> Result<Bytes, LakeError> {
    let schema = table.schema();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("zstd level 3")))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_key_value_metadata(Some(vec![
            KeyValue::new("withings_lake.table".into(), table.sql_name()),
            KeyValue::new("withings_lake.schema_version".into(), schema.version.to_string()),
            KeyValue::new("withings_lake.format_version".into(), FORMAT_VERSION.to_string()),
            KeyValue::new("withings_lake.run_id".into(), run_id.to_string()),
        ]))
        .build();
    let err = |e: parquet::errors::ParquetError| LakeError::Arrow { table, source: Box::new(e) };
    let mut buf = Vec::with_capacity(rows.get_array_memory_size() / 4);
    let mut writer = ArrowWriter::try_new(&mut buf, schema.arrow(), Some(props)).map_err(err)?;
    writer.write(rows).map_err(err)?;
    writer.close().map_err(err)?;
    Ok(Bytes::from(buf))
}

/// The smallest and largest value of the time column, as RFC 3339 text or a date.
fn time_range(table: TableId, rows: &RecordBatch) -> (Option<String>, Option<String>) {
    let schema = table.schema();
    let col = rows.column(schema.index_of(&schema.time_column).expect("checked when the schema loads"));
    let ts = |us: Option<i64>| us.and_then(DateTime::<Utc>::from_timestamp_micros).map(|t| t.to_rfc3339());
    let day = |d: Option<i32>| {
        d.and_then(|d| NaiveDate::from_num_days_from_ce_opt(d.saturating_add(UNIX_EPOCH_DAYS_FROM_CE))).map(|d| d.to_string())
    };
    match col.data_type() {
        DataType::Timestamp(_, _) => {
            let a = col.as_primitive::<TimestampMicrosecondType>();
            (ts(arrow::compute::min(a)), ts(arrow::compute::max(a)))
        }
        DataType::Date32 => {
            let a = col.as_primitive::<Date32Type>();
            (day(arrow::compute::min(a)), day(arrow::compute::max(a)))
        }
        _ => (None, None),
    }
}

fn users_of(rows: &RecordBatch) -> Vec<String> {
    let users = rows.column_by_name("user_id").map(|c| c.as_string::<i32>().iter().flatten().map(str::to_string).collect());
    let mut v: Vec<String> = users.unwrap_or_default();
    v.sort();
    v.dedup();
    v
}
