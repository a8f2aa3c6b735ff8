//! Merge rules for one partition file (ARCHITECTURE.md, "The commit protocol").
//!
//! The units a checkpoint stages for one (resource, partition) are applied in order to the
//! rows already there:
//! - [`Coverage::Upsert`]: incoming rows replace the rows with the same primary key
//!   (lastupdate-based endpoints). Keys compare nulls as equal.
//! - [`Coverage::Window`]: the user's rows from one endpoint with time in `[start, end)` are
//!   removed first, then the incoming rows are inserted (window-based endpoints such as
//!   intraday and sleep get, so data deleted upstream disappears here too).
//! - [`Coverage::Everything`]: the incoming rows replace the rebuilt users' rows (a rebuild).
//!
//! Under every rule a stored row whose key arrives again is replaced, and a key that arrives
//! twice keeps its last version: a file never holds a key twice.
//!
//! A row whose key and content (everything but `ingested_at` and `run_id`) did not change
//! keeps its stored version, so re-running a window rewrites nothing and reports nothing:
//! the lake after two identical runs equals the lake after one. The result is sorted by
//! (user_id, time, primary key).

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Date32Type, TimestampMicrosecondType};
use arrow::error::ArrowError;
use arrow::row::{RowConverter, Rows, SortField};

use crate::schema::TableSchema;

/// Columns that record when and by which run a row was written, not what it says.
const BOOKKEEPING: [&str; 2] = ["ingested_at", "run_id"];

/// What a staged unit covers, which decides the rows it replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coverage {
    /// Replace rows with the same primary key.
    Upsert,
    /// Replace `user_id`'s rows from `endpoint` whose time is in `[start, end)` (epoch seconds).
    Window { user_id: String, endpoint: String, start: i64, end: i64 },
    /// The incoming rows are all the rows `users` have in every partition they reach and in
    /// `partitions` (a rebuild from the raw landing; other users' rows stay).
    Everything { users: Vec<String>, partitions: Vec<super::Partition> },
}

/// What merging changed in one partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub rows_before: usize,
    pub rows_after: usize,
    pub inserted: usize,
    pub updated: usize,
    pub deleted: usize,
}

impl Counts {
    pub fn changed(&self) -> bool {
        self.inserted + self.updated + self.deleted > 0
    }
}

fn column<'a>(schema: &TableSchema, batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, ArrowError> {
    schema
        .index_of(name)
        .map(|i| batch.column(i))
        .ok_or_else(|| ArrowError::SchemaError(format!("{} has no column {name}", schema.resource)))
}

fn rows_of(schema: &TableSchema, batch: &RecordBatch, names: &[&str]) -> Result<Rows, ArrowError> {
    let cols: Vec<ArrayRef> = names.iter().map(|n| column(schema, batch, n).cloned()).collect::<Result<_, _>>()?;
    let converter = RowConverter::new(cols.iter().map(|c| SortField::new(c.data_type().clone())).collect())?;
    converter.convert_columns(&cols)
}

/// The time column as epoch microseconds (dates at midnight UTC).
fn time_micros(schema: &TableSchema, batch: &RecordBatch) -> Result<Vec<i64>, ArrowError> {
    let c = column(schema, batch, &schema.time_column)?;
    Ok(match c.data_type() {
        DataType::Timestamp(_, _) => c.as_primitive::<TimestampMicrosecondType>().values().to_vec(),
        DataType::Date32 => c.as_primitive::<Date32Type>().values().iter().map(|d| i64::from(*d) * 86_400_000_000).collect(),
        t => return Err(ArrowError::SchemaError(format!("time column of type {t}"))),
    })
}

/// A window replace of one unit: `[start, end)` in micros, and the unit's origin.
type Span = (i64, i64, u32);

/// The rows a merge created or changed, for change events: a key new to the partition is
/// created; a stored key whose content changed is updated. Deleted rows are not listed.
#[derive(Debug, Clone)]
pub struct Changed {
    /// The new versions, in the table's schema.
    pub rows: RecordBatch,
    /// Per row: `false` created, `true` updated.
    pub updated: Vec<bool>,
}

/// Applies `units` to `existing` (the stored rows, already in the table's current schema).
/// Returns the new rows, sorted, and what changed.
pub fn merge(
    schema: &TableSchema,
    existing: &RecordBatch,
    units: &[(&RecordBatch, &Coverage)],
) -> Result<(RecordBatch, Counts), ArrowError> {
    merge_capturing(schema, existing, units, &[]).map(|(rows, counts, _)| (rows, counts))
}

/// [`merge`], also returning the rows created or updated by the units whose `capture` flag is
/// set (a unit without a flag is not captured).
///
/// One pass, whatever the number of units: every row (stored, then each unit's in order)
/// survives when it is the last occurrence of its key and no later unit's coverage removes
/// it. That is what applying the units one after the other gives, at the cost of one
/// concatenation and one key encoding (a checkpoint can stage hundreds of units, one per
/// user and day, into one partition).
pub fn merge_capturing(
    schema: &TableSchema,
    existing: &RecordBatch,
    units: &[(&RecordBatch, &Coverage)],
    capture: &[bool],
) -> Result<(RecordBatch, Counts, Option<Changed>), ArrowError> {
    let captured = |o: u32| o > 0 && capture.get(o as usize - 1).copied().unwrap_or(false);
    let mut created: Vec<u32> = Vec::new();
    let mut updated: Vec<u32> = Vec::new();
    let mut parts: Vec<&RecordBatch> = Vec::with_capacity(units.len() + 1);
    parts.push(existing);
    parts.extend(units.iter().map(|(b, _)| *b));
    let all = concat_batches(&schema.arrow(), parts.iter().copied())?;
    let n = all.num_rows();
    // Origin of each row: 0 for the stored rows, k + 1 for unit k.
    let mut origin: Vec<u32> = Vec::with_capacity(n);
    for (o, b) in parts.iter().enumerate() {
        origin.extend(std::iter::repeat_n(o as u32, b.num_rows()));
    }

    // Coverage: per (user, endpoint) the units' windows (in micros); per user the latest
    // rebuild.
    let mut windows: HashMap<(&str, &str), Vec<Span>> = HashMap::new();
    let mut rebuilt: HashMap<&str, u32> = HashMap::new();
    for (k, (_, coverage)) in units.iter().enumerate() {
        let o = k as u32 + 1;
        match coverage {
            Coverage::Upsert => {}
            Coverage::Window { user_id, endpoint, start, end } => {
                let w = (start.saturating_mul(1_000_000), end.saturating_mul(1_000_000), o);
                windows.entry((user_id.as_str(), endpoint.as_str())).or_default().push(w);
            }
            Coverage::Everything { users, .. } => {
                for u in users {
                    rebuilt.insert(u.as_str(), o);
                }
            }
        }
    }
    let users = column(schema, &all, "user_id")?.as_string::<i32>();
    let (endpoints, times) = if windows.is_empty() {
        (None, Vec::new())
    } else {
        (Some(column(schema, &all, "endpoint")?.as_string::<i32>()), time_micros(schema, &all)?)
    };
    let removed = |i: usize| -> bool {
        let (o, u) = (origin[i], users.value(i));
        if rebuilt.get(u).is_some_and(|k| *k > o) {
            return true;
        }
        let Some(eps) = endpoints else { return false };
        windows.get(&(u, eps.value(i))).is_some_and(|ws| ws.iter().any(|(a, b, k)| *k > o && times[i] >= *a && times[i] < *b))
    };

    let keys: Vec<&str> = schema.primary_key.iter().map(String::as_str).collect();
    let key_rows = rows_of(schema, &all, &keys)?;
    let mut last: HashMap<&[u8], usize> = HashMap::with_capacity(n);
    for i in 0..n {
        last.insert(key_rows.row(i).data(), i);
    }
    let keep = BooleanArray::from((0..n).map(|i| last[key_rows.row(i).data()] == i && !removed(i)).collect::<Vec<bool>>());
    // Compare the survivors with what was stored (rows 0..before of `all`), by key and, for
    // a key that arrived again, by content: an unchanged row keeps its stored version. Only
    // the re-arrived pairs are encoded for the content comparison.
    let before = existing.num_rows();
    let stored: HashMap<&[u8], usize> = (0..before).map(|i| (key_rows.row(i).data(), i)).collect();
    let mut counts = Counts { rows_before: before, ..Counts::default() };
    let mut picks: Vec<u32> = Vec::with_capacity(n);
    let mut pairs: Vec<(usize, usize)> = Vec::new(); // (position in picks, stored row)
    let mut still_there = 0;
    for j in (0..n).filter(|j| keep.value(*j)) {
        match stored.get(key_rows.row(j).data()) {
            Some(&s) if s == j => {
                still_there += 1; // the stored row itself, untouched
            }
            Some(&s) => {
                still_there += 1;
                pairs.push((picks.len(), s));
            }
            None => {
                counts.inserted += 1;
                if captured(origin[j]) {
                    created.push(j as u32);
                }
            }
        }
        picks.push(j as u32);
    }
    counts.deleted = before.saturating_sub(still_there);
    if !pairs.is_empty() {
        let content: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).filter(|c| !BOOKKEEPING.contains(c)).collect();
        let idx: Vec<u32> = pairs.iter().map(|(_, s)| *s as u32).chain(pairs.iter().map(|(p, _)| picks[*p])).collect();
        let sample = take_record_batch(&all, &arrow::array::UInt32Array::from(idx))?;
        let rows = rows_of(schema, &sample, &content)?;
        let m = pairs.len();
        for (k, (p, s)) in pairs.iter().enumerate() {
            if rows.row(k) == rows.row(m + k) {
                picks[*p] = *s as u32; // same content: keep the stored version
            } else {
                counts.updated += 1;
                if captured(origin[picks[*p] as usize]) {
                    updated.push(picks[*p]);
                }
            }
        }
    }
    counts.rows_after = picks.len();
    let changed = if created.is_empty() && updated.is_empty() {
        None
    } else {
        let flags: Vec<bool> =
            std::iter::repeat_n(false, created.len()).chain(std::iter::repeat_n(true, updated.len())).collect();
        created.extend(updated);
        let rows = take_record_batch(&all, &arrow::array::UInt32Array::from(created))?;
        Some(Changed { rows, updated: flags })
    };

    // Sorted by (user_id, time, key): sort the picks by those columns, then one take.
    let mut order = vec!["user_id", schema.time_column.as_str()];
    for k in &keys {
        if !order.contains(k) {
            order.push(k);
        }
    }
    let picks = arrow::array::UInt32Array::from(picks);
    if picks.len() >= 2 {
        let sort: Vec<SortColumn> = order
            .iter()
            .map(|k| {
                let c = column(schema, &all, k)?;
                Ok(SortColumn { values: arrow::compute::take(c.as_ref(), &picks, None)?, options: None })
            })
            .collect::<Result<_, ArrowError>>()?;
        let perm = lexsort_to_indices(&sort, None)?;
        let sorted = arrow::compute::take(&picks, &perm, None)?;
        return Ok((take_record_batch(&all, sorted.as_primitive::<arrow::datatypes::UInt32Type>())?, counts, changed));
    }
    Ok((take_record_batch(&all, &picks)?, counts, changed))
}

/// `batch` in `schema`'s columns: columns a newer version added are null in older files.
pub fn conform(schema: &TableSchema, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let target = schema.arrow();
    if batch.schema().fields() == target.fields() {
        return Ok(batch.clone());
    }
    let columns = target
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => Err(ArrowError::SchemaError(format!(
                "{}.{} is stored as {} but the schema says {}",
                schema.resource,
                f.name(),
                c.data_type(),
                f.data_type()
            ))),
            None if f.is_nullable() => Ok(arrow::array::new_null_array(f.data_type(), batch.num_rows())),
            None => Err(ArrowError::SchemaError(format!("{}.{} is missing from a stored file", schema.resource, f.name()))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(target, columns)
}
