//! Erasure of one person (GDPR): their rows leave every partition file of every shard (the
//! tables, the raw landing and the quarantine), their
//! id leaves every manifest and state object, and a manifest records what was removed under
//! a hash of the id (never the id itself). After it, no object of the lake names the person.
//!
//! Each shard is rewritten under its writer lease, so erasure never races a commit.

use std::time::Duration;

use arrow::array::{AsArray, BooleanArray};
use arrow::compute::filter_record_batch;
use chrono::Utc;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::{Lake, LakeError, keys, storage, write_parquet};

/// What an erasure removed (the erasure manifest).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ForgetReport {
    /// SHA-256 of the user id: lets an auditor match a request without the lake naming anyone.
    pub user_id_sha256: String,
    pub completed_at: Option<chrono::DateTime<Utc>>,
    pub rows_removed: usize,
    /// Partition files rewritten without the person's rows, with the rows removed from each.
    pub files_rewritten: Vec<(String, usize)>,
    /// Files that held only the person's rows.
    pub files_deleted: Vec<String>,
    pub manifests_scrubbed: usize,
    pub state_objects_removed: usize,
}

impl Lake {
    /// Removes `user_id` from the lake (see the module doc). Takes each shard's lease in turn,
    /// waiting up to `wait` for a running writer.
    pub async fn forget(&self, user_id: &str, holder: &str, wait: Duration) -> Result<ForgetReport, LakeError> {
        let mut report =
            ForgetReport { user_id_sha256: hex::encode(sha2::Sha256::digest(user_id.as_bytes())), ..ForgetReport::default() };
        let all: Vec<Path> = self
            .location
            .store
            .list(Some(&self.location.prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|e| LakeError::Storage { key: self.location.prefix.to_string(), source: e })?;
        let run_id = format!("forget-{}", Utc::now().format("%Y%m%dT%H%M%S%.6fZ"));

        for shard in 0..self.meta.shards {
            let lease = self.lease_shard(shard, holder, wait).await?;
            for key in &all {
                let Some((table, partition, s)) = keys::parse_data_file(&self.location, key) else { continue };
                if s != shard {
                    continue;
                }
                lease.renew().await?;
                let rows = self.read(table, &partition, shard).await?;
                let users = rows.column_by_name("user_id").expect("every table has user_id").as_string::<i32>();
                let keep: BooleanArray = users.iter().map(|u| Some(u != Some(user_id))).collect();
                let removed = keep.false_count();
                if removed == 0 {
                    continue;
                }
                let arrow_err = |e: arrow::error::ArrowError| LakeError::Arrow { table, reason: e.to_string() };
                let kept = filter_record_batch(&rows, &keep).map_err(arrow_err)?;
                if kept.num_rows() == 0 {
                    match self.location.store.delete(key).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(storage(key)(e)),
                    }
                    report.files_deleted.push(key.to_string());
                } else {
                    let file = write_parquet(table, &run_id, &kept)?;
                    self.location.store.put(key, PutPayload::from(file)).await.map_err(storage(key))?;
                    report.files_rewritten.push((key.to_string(), removed));
                }
                report.rows_removed += removed;
            }
            lease.release().await;
        }

        // Manifests list the users of each changed partition; state objects are per user.
        let manifests = self.location.key(&["_manifests"]);
        let state_key = crate::state::StateStore::new(self.location.clone()).key_of(user_id);
        for key in &all {
            if key.prefix_matches(&manifests) && key.as_ref().ends_with(".json") {
                let bytes = self.location.store.get(key).await.map_err(storage(key))?.bytes().await.map_err(storage(key))?;
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
                    self.location.store.put(key, PutPayload::from(body)).await.map_err(storage(key))?;
                    report.manifests_scrubbed += 1;
                }
            } else if Some(key) == state_key.as_ref() {
                match self.location.store.delete(key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => report.state_objects_removed += 1,
                    Err(e) => return Err(storage(key)(e)),
                }
            }
        }

        report.completed_at = Some(Utc::now());
        let key = keys::manifest(&self.location, &run_id, 1);
        let body = serde_json::to_vec_pretty(&report).expect("a report serializes");
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        self.location.store.put_opts(&key, PutPayload::from(body), opts).await.map_err(storage(&key))?;
        Ok(report)
    }
}
