//! The users table: who each person is under every id, `<lake>/_users/part-<shard>.parquet`
//! (one file per shard, replaced whole), queryable as `users` and readable by any Parquet
//! engine (`read_parquet('<lake>/_users/*.parquet')`). A row per linked user of the shard:
//! `user_id` (the application's id, the one every table carries), `vital_user_id` (the
//! Vital-style UUID events carry as `user_id`) and `withings_user_id`. Written by the shard's
//! lease holder at the start of each run; `forget` removes the person's row.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload, path::Path};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{Lake, LakeError, ShardLease, storage};

/// One person under their three ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UserIds {
    pub user_id: String,
    pub vital_user_id: String,
    pub withings_user_id: String,
}

/// The users table's schema.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("vital_user_id", DataType::Utf8, false),
        Field::new("withings_user_id", DataType::Utf8, false),
    ]))
}

/// The folder of the users table.
pub fn dir(lake: &Lake) -> Path {
    lake.location.key(&["_users"])
}

pub(crate) fn file(lake: &Lake, shard: u32) -> Path {
    lake.location.key(&["_users", &format!("part-{shard:04}.parquet")])
}

impl Lake {
    /// The users of `shard` as the users table holds them, by application id.
    pub async fn user_ids(&self, shard: u32) -> Result<BTreeMap<String, UserIds>, LakeError> {
        let key = file(self, shard);
        let bytes = match self.location.store.get(&key).await {
            Ok(r) => r.bytes().await.map_err(storage(&key))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(BTreeMap::new()),
            Err(e) => return Err(storage(&key)(e)),
        };
        let corrupt = |e: parquet::errors::ParquetError| LakeError::corrupt(&key, e);
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(corrupt)?.build().map_err(corrupt)?;
        let mut out = BTreeMap::new();
        for b in reader {
            let b = b.map_err(|e| LakeError::corrupt(&key, e))?;
            let col = |name: &str| -> Result<StringArray, LakeError> {
                let c = b.column_by_name(name).ok_or_else(|| LakeError::corrupt_because(&key, format!("no column {name}")))?;
                c.as_string_opt::<i32>()
                    .cloned()
                    .ok_or_else(|| LakeError::corrupt_because(&key, format!("column {name} is not text")))
            };
            let (u, v, w) = (col("user_id")?, col("vital_user_id")?, col("withings_user_id")?);
            for i in 0..b.num_rows() {
                let ids = UserIds {
                    user_id: u.value(i).to_string(),
                    vital_user_id: v.value(i).to_string(),
                    withings_user_id: w.value(i).to_string(),
                };
                out.insert(ids.user_id.clone(), ids);
            }
        }
        Ok(out)
    }

    /// Adds or updates `users` in the lease's shard's users table (written only when
    /// something changed). Returns whether the file was written.
    pub async fn record_user_ids(&self, lease: &ShardLease, users: &[UserIds]) -> Result<bool, LakeError> {
        // A file that does not read (rewritten by hand, a torn copy) is not worth a shard's
        // sync: it is written again from this run's users (the others return with their runs).
        let mut all = match self.user_ids(lease.shard).await {
            Err(e @ LakeError::Corrupt { .. }) => {
                tracing::warn!(shard = lease.shard, error = %e, "the users table does not read: writing it again");
                BTreeMap::new()
            }
            other => other?,
        };
        let mut changed = false;
        for u in users {
            if all.get(&u.user_id) != Some(u) {
                all.insert(u.user_id.clone(), u.clone());
                changed = true;
            }
        }
        if changed {
            self.write_user_ids(lease, &all).await?;
        }
        Ok(changed)
    }

    /// Removes `user_id` from the lease's shard's users table. Returns whether it was there.
    pub(crate) async fn forget_user_ids(&self, lease: &ShardLease, user_id: &str) -> Result<bool, LakeError> {
        let mut all = self.user_ids(lease.shard).await?;
        if all.remove(user_id).is_none() {
            return Ok(false);
        }
        self.write_user_ids(lease, &all).await?;
        Ok(true)
    }

    async fn write_user_ids(&self, lease: &ShardLease, all: &BTreeMap<String, UserIds>) -> Result<(), LakeError> {
        let key = file(self, lease.shard);
        if !lease.lease.renew().await.map_err(LakeError::Lease)? {
            return Err(LakeError::LeaseLost { shard: lease.shard });
        }
        if all.is_empty() {
            return match self.location.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(storage(&key)(e)),
            };
        }
        let text = |f: fn(&UserIds) -> &str| Arc::new(StringArray::from_iter_values(all.values().map(f))) as _;
        let batch =
            RecordBatch::try_new(schema(), vec![text(|u| &u.user_id), text(|u| &u.vital_user_id), text(|u| &u.withings_user_id)])
                .map_err(|e| LakeError::corrupt(&key, e))?;
        let mut buf = Vec::new();
        let err = |e: parquet::errors::ParquetError| LakeError::corrupt(&key, e);
        let mut w = ArrowWriter::try_new(&mut buf, schema(), None).map_err(err)?;
        w.write(&batch).map_err(err)?;
        w.close().map_err(err)?;
        self.location.store.put(&key, PutPayload::from(Bytes::from(buf))).await.map_err(storage(&key))?;
        Ok(())
    }
}
