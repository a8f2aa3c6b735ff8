//! Capturing a commit's changes for its events: the events module's [`CommitHook`]. During a
//! commit, each partition's created and updated rows are written under
//! `_events/staged/shard-<i>/<batch>/` before the partition itself, so the events of a commit
//! that dies half-way can be recovered ([`staged_changes`]); once a batch's events are in the
//! outbox its captured changes are deleted ([`clear_staged_changes`]).

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload};

use crate::lake::{CommitHook, Lake, LakeError, TableId, keys, merge, storage};

/// The hook of one checkpoint: its captured changes go under its batch name.
pub struct Capture<'a> {
    pub batch: &'a str,
}

#[async_trait::async_trait]
impl CommitHook for Capture<'_> {
    async fn before_partition(
        &self,
        lake: &Lake,
        shard: u32,
        index: usize,
        table: TableId,
        changed: &merge::Changed,
    ) -> Result<(), LakeError> {
        let key = keys::staged_change_file(&lake.location, shard, self.batch, index, table);
        let body = changed_to_ipc(table, changed)?;
        lake.location.store.put(&key, PutPayload::from(body)).await.map_err(storage(&key))?;
        Ok(())
    }
}

/// The captured changes of `shard` whose events were not enqueued (a run died between
/// its commit and its outbox write): per batch, the changed rows of each table.
pub async fn staged_changes(lake: &Lake, shard: u32) -> Result<Vec<(String, Vec<(TableId, merge::Changed)>)>, LakeError> {
    use futures::TryStreamExt;
    let dir = keys::staged_changes_dir(&lake.location, shard);
    let mut files: Vec<object_store::path::Path> =
        lake.location.store.list(Some(&dir)).map_ok(|m| m.location).try_collect().await.map_err(storage(&dir))?;
    files.sort();
    let mut out: Vec<(String, Vec<(TableId, merge::Changed)>)> = Vec::new();
    for key in files {
        let rel: Vec<String> = match key.prefix_match(&dir) {
            Some(parts) => parts.map(|p| p.as_ref().to_string()).collect(),
            None => continue,
        };
        let [batch, file] = &rel[..] else { continue };
        let corrupt = |e: ArrowError| LakeError::corrupt(&key, e);
        let table = file
            .strip_suffix(".arrow")
            .and_then(|f| f.split_once('-'))
            .and_then(|(_, t)| t.parse::<crate::schema::Resource>().ok())
            .map(TableId::Resource)
            .ok_or_else(|| LakeError::corrupt_because(&key, "not a staged change file".into()))?;
        let bytes = lake.location.store.get(&key).await.map_err(storage(&key))?.bytes().await.map_err(storage(&key))?;
        let reader = arrow::ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes), None).map_err(corrupt)?;
        for b in reader {
            let b = b.map_err(corrupt)?;
            let changed = changed_from_ipc(table, &b).map_err(corrupt)?;
            match out.last_mut() {
                Some((name, v)) if name == batch => v.push((table, changed)),
                _ => out.push((batch.clone(), vec![(table, changed)])),
            }
        }
    }
    Ok(out)
}

/// Deletes the captured changes of one batch (once its events are in the outbox).
pub async fn clear_staged_changes(lake: &Lake, shard: u32, batch: &str) -> Result<(), LakeError> {
    use futures::{StreamExt, TryStreamExt};
    let dir = keys::staged_changes(&lake.location, shard, batch);
    let files: Vec<object_store::path::Path> =
        lake.location.store.list(Some(&dir)).map_ok(|m| m.location).try_collect().await.map_err(storage(&dir))?;
    let store = &lake.location.store;
    let mut deletes = futures::stream::iter(files).map(|k| async move { (store.delete(&k).await, k) }).buffer_unordered(16);
    while let Some((r, k)) = deletes.next().await {
        match r {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(storage(&k)(e)),
        }
    }
    Ok(())
}

/// Column of a staged change file that says created (false) or updated (true).
const UPDATED_COLUMN: &str = "_withings_lake_updated";

/// A partition's captured changes as one Arrow IPC file: the rows, plus whether each was
/// created or updated.
pub(crate) fn changed_to_ipc(table: TableId, changed: &merge::Changed) -> Result<Bytes, LakeError> {
    let err = |e: arrow::error::ArrowError| LakeError::Arrow { table, source: Box::new(e) };
    let mut fields: Vec<arrow::datatypes::FieldRef> = changed.rows.schema().fields().iter().cloned().collect();
    fields.push(std::sync::Arc::new(arrow::datatypes::Field::new(UPDATED_COLUMN, DataType::Boolean, false)));
    let mut columns = changed.rows.columns().to_vec();
    columns.push(std::sync::Arc::new(arrow::array::BooleanArray::from(changed.updated.clone())));
    let batch = RecordBatch::try_new(std::sync::Arc::new(arrow::datatypes::Schema::new(fields)), columns).map_err(err)?;
    let mut buf = Vec::new();
    let mut w = arrow::ipc::writer::FileWriter::try_new(&mut buf, &batch.schema()).map_err(err)?;
    w.write(&batch).map_err(err)?;
    w.finish().map_err(err)?;
    drop(w);
    Ok(Bytes::from(buf))
}

pub(crate) fn changed_from_ipc(table: TableId, batch: &RecordBatch) -> Result<merge::Changed, arrow::error::ArrowError> {
    let n = batch.num_columns();
    let flags = batch.column(n - 1).as_boolean_opt().ok_or_else(|| {
        arrow::error::ArrowError::SchemaError(format!(
            "the last column of a staged change file of {table} is not {UPDATED_COLUMN}"
        ))
    })?;
    let updated: Vec<bool> = (0..flags.len()).map(|i| flags.value(i)).collect();
    let rows = merge::conform(table.schema(), &batch.project(&(0..n - 1).collect::<Vec<_>>())?)?;
    Ok(merge::Changed { rows, updated })
}
