//! The lake's part of erasing one person (GDPR; [`crate::erasure`] owns the whole): their rows
//! leave every partition file of their shard (the tables, the raw landing, the quarantine)
//! and the shard's staged changes, their id leaves every manifest, their state object goes,
//! and a manifest records the erasure under a keyed hash of the id (never the id itself).
//!
//! Everything here runs under the person's shard lease and lists the lake after the lease is
//! held: a writer that committed while the erasure waited for the lease has released it, and
//! no writer can name the person again until the erasure is done. Only the holder of a
//! user's shard writes that user's rows, staged changes, manifests and state (a commit refuses
//! rows of another shard), so other shards never hold the person.

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::{Lake, LakeError, ShardLease, keys, storage, write_parquet};

/// What an erasure removed from the lake's own objects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LakeErasure {
    pub rows_removed: usize,
    /// Partition files rewritten without the person's rows, with the rows removed from each.
    pub files_rewritten: Vec<(String, usize)>,
    /// Files that held only the person's rows.
    pub files_deleted: Vec<String>,
    /// Rows of captured changes (events not yet enqueued) removed.
    pub staged_change_rows_removed: usize,
    pub manifests_scrubbed: usize,
    /// Set by [`crate::erasure`], which removes the user's state object.
    pub state_objects_removed: usize,
}

/// `batch` without the rows whose `user_id` is `user_id`, and how many went.
fn without_user(batch: &RecordBatch, user_id: &str) -> Result<(RecordBatch, usize), arrow::error::ArrowError> {
    let Some(users) = batch.column_by_name("user_id").and_then(|c| c.as_string_opt::<i32>()) else {
        return Ok((batch.clone(), 0));
    };
    let keep: BooleanArray = users.iter().map(|u| Some(u != Some(user_id))).collect();
    let removed = keep.false_count();
    if removed == 0 {
        return Ok((batch.clone(), 0));
    }
    Ok((filter_record_batch(batch, &keep)?, removed))
}

impl Lake {
    async fn list_keys(&self, dir: &Path) -> Result<Vec<Path>, LakeError> {
        let mut keys: Vec<Path> =
            self.location.store.list(Some(dir)).map_ok(|m| m.location).try_collect().await.map_err(storage(dir))?;
        keys.sort();
        Ok(keys)
    }

    async fn delete_key(&self, key: &Path) -> Result<(), LakeError> {
        match self.location.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(storage(key)(e)),
        }
    }

    /// Removes `user_id` from everything the lake holds for the lease's shard (see the module
    /// doc): data files and staged changes, listed now that the lease is held; then the id
    /// from every manifest. Data files are rewritten by `run_id`. (The user's state object is
    /// the sync engine's: [`crate::erasure`] removes it.)
    pub async fn erase_user(&self, lease: &ShardLease, user_id: &str, run_id: &str) -> Result<LakeErasure, LakeError> {
        let mut report = LakeErasure::default();
        let shard = lease.shard;
        for key in self.list_keys(&self.location.prefix).await? {
            let Some((table, partition, s)) = keys::parse_data_file(&self.location, &key) else { continue };
            if s != shard {
                continue;
            }
            lease.renew().await?;
            let rows = self.read(table, &partition, shard).await?;
            let arrow_err = |e: arrow::error::ArrowError| LakeError::Arrow { table, source: Box::new(e) };
            let (kept, removed) = without_user(&rows, user_id).map_err(arrow_err)?;
            if removed == 0 {
                continue;
            }
            if kept.num_rows() == 0 {
                self.delete_key(&key).await?;
                report.files_deleted.push(key.to_string());
            } else {
                let file = write_parquet(table, run_id, &kept)?;
                self.location.store.put(&key, PutPayload::from(file)).await.map_err(storage(&key))?;
                report.files_rewritten.push((key.to_string(), removed));
            }
            report.rows_removed += removed;
        }

        // The users table's row of the person.
        if self.forget_user_ids(lease, user_id).await? {
            report.files_rewritten.push((super::users::file(self, shard).to_string(), 1));
            report.rows_removed += 1;
        }

        // Captured changes whose events were not enqueued yet (a commit that died).
        for key in self.list_keys(&keys::staged_changes_dir(&self.location, shard)).await? {
            lease.renew().await?;
            let corrupt = |e: arrow::error::ArrowError| LakeError::corrupt(&key, e);
            let bytes = self.location.store.get(&key).await.map_err(storage(&key))?.bytes().await.map_err(storage(&key))?;
            let reader = arrow::ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes), None).map_err(corrupt)?;
            let schema = reader.schema();
            let mut kept = Vec::new();
            let mut removed = 0;
            for b in reader {
                let (k, r) = without_user(&b.map_err(corrupt)?, user_id).map_err(corrupt)?;
                removed += r;
                if k.num_rows() > 0 {
                    kept.push(k);
                }
            }
            if removed == 0 {
                continue;
            }
            if kept.is_empty() {
                self.delete_key(&key).await?;
            } else {
                let mut buf = Vec::new();
                let mut w = arrow::ipc::writer::FileWriter::try_new(&mut buf, &schema).map_err(corrupt)?;
                for b in &kept {
                    w.write(b).map_err(corrupt)?;
                }
                w.finish().map_err(corrupt)?;
                drop(w);
                self.location.store.put(&key, PutPayload::from(buf)).await.map_err(storage(&key))?;
            }
            report.staged_change_rows_removed += removed;
        }

        // Manifests list the users of each changed partition.
        for key in self.list_keys(&self.location.key(&["_manifests"])).await? {
            if !key.as_ref().ends_with(".json") {
                continue;
            }
            lease.renew().await?;
            let bytes = self.location.store.get(&key).await.map_err(storage(&key))?.bytes().await.map_err(storage(&key))?;
            let Ok(mut m) = serde_json::from_slice::<serde_json::Value>(&bytes) else { continue };
            let mut changed = false;
            for p in m["partitions"].as_array_mut().into_iter().flatten() {
                if let Some(users) = p["users"].as_array_mut() {
                    let before = users.len();
                    users.retain(|u| u.as_str() != Some(user_id));
                    changed |= users.len() != before;
                }
            }
            if changed {
                let body = serde_json::to_vec_pretty(&m).expect("a manifest serializes");
                self.location.store.put(&key, PutPayload::from(body)).await.map_err(storage(&key))?;
                report.manifests_scrubbed += 1;
            }
        }
        Ok(report)
    }

    /// Records an erasure (`report`, which must name the person only by a keyed hash) as the
    /// manifest of `run_id`, create-only.
    pub async fn write_erasure_manifest(&self, run_id: &str, report: &impl Serialize) -> Result<(), LakeError> {
        let key = keys::manifest(&self.location, run_id, 1);
        let body = serde_json::to_vec_pretty(report).expect("a report serializes");
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        self.location.store.put_opts(&key, PutPayload::from(body), opts).await.map_err(storage(&key))?;
        Ok(())
    }
}
