//! A row-at-a-time builder for one resource's RecordBatch, on the resource's compiled-in
//! Arrow schema.
//!
//! A row is staged cell by cell and appended only when every non-null column has a value of
//! the column's type; otherwise `push` names the missing column and the row is left out (the
//! caller quarantines the record). The common columns that are constant for a harmonize call
//! (`user_id`, `withings_user_id`, `source_provider`, `endpoint`, `ingested_at`, `run_id`) are
//! filled here. `finish` sorts rows by (time column, primary key) so files and row-group
//! statistics are ordered by time within the user.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};

use super::{Context, Source, Zone};
use crate::schema::{ColumnType, Resource, TableSchema};

/// One staged value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// A constant string (units, codes, slugs): no allocation per row.
    Static(&'static str),
    /// A string shared by many rows (device, model, zone): a reference count per row.
    Shared(Arc<str>),
    /// A list of integers (sleep_cycle's offsets and stages).
    Ints(Vec<i64>),
}

impl From<Vec<i64>> for Cell {
    fn from(v: Vec<i64>) -> Cell {
        Cell::Ints(v)
    }
}

impl From<i64> for Cell {
    fn from(v: i64) -> Cell {
        Cell::Int(v)
    }
}
impl From<f64> for Cell {
    /// Non-finite values become null: a table never holds NaN or infinity.
    fn from(v: f64) -> Cell {
        if v.is_finite() { Cell::Float(v) } else { Cell::Null }
    }
}
impl From<bool> for Cell {
    fn from(v: bool) -> Cell {
        Cell::Bool(v)
    }
}
impl From<&'static str> for Cell {
    fn from(v: &'static str) -> Cell {
        Cell::Static(v)
    }
}
impl From<Arc<str>> for Cell {
    fn from(v: Arc<str>) -> Cell {
        Cell::Shared(v)
    }
}
impl From<String> for Cell {
    fn from(v: String) -> Cell {
        Cell::Str(v)
    }
}
impl<T: Into<Cell>> From<Option<T>> for Cell {
    fn from(v: Option<T>) -> Cell {
        v.map_or(Cell::Null, Into::into)
    }
}

/// Seconds since the epoch as a timestamp cell (microseconds); null when out of range.
pub(crate) fn ts(secs: i64) -> Cell {
    secs.checked_mul(1_000_000).map_or(Cell::Null, Cell::Int)
}

/// An optional epoch as a timestamp cell.
pub(crate) fn ts_opt(secs: Option<i64>) -> Cell {
    secs.map_or(Cell::Null, ts)
}

/// A date as a Date32 cell (days since 1970-01-01).
pub(crate) fn date(d: chrono::NaiveDate) -> Cell {
    let days = d.signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days();
    i32::try_from(days).map_or(Cell::Null, |d| Cell::Int(i64::from(d)))
}

enum ColumnBuilder {
    Utf8(StringBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Boolean(BooleanBuilder),
    Date32(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    ListInt64(ListBuilder<Int64Builder>),
}

impl ColumnBuilder {
    fn new(t: ColumnType) -> ColumnBuilder {
        match t {
            ColumnType::Utf8 => ColumnBuilder::Utf8(StringBuilder::new()),
            ColumnType::Int32 => ColumnBuilder::Int32(Int32Builder::new()),
            ColumnType::Int64 => ColumnBuilder::Int64(Int64Builder::new()),
            ColumnType::Float64 => ColumnBuilder::Float64(Float64Builder::new()),
            ColumnType::Boolean => ColumnBuilder::Boolean(BooleanBuilder::new()),
            ColumnType::Date32 => ColumnBuilder::Date32(Date32Builder::new()),
            ColumnType::TimestampUtc => ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
            ColumnType::ListInt64 => ColumnBuilder::ListInt64(ListBuilder::new(Int64Builder::new())),
        }
    }

    /// Whether `cell` can go into this column.
    fn accepts(&self, cell: &Cell) -> bool {
        matches!(
            (self, cell),
            (_, Cell::Null)
                | (ColumnBuilder::Utf8(_), Cell::Str(_) | Cell::Static(_) | Cell::Shared(_))
                | (ColumnBuilder::Int32(_), Cell::Int(_))
                | (ColumnBuilder::Int64(_), Cell::Int(_))
                | (ColumnBuilder::Float64(_), Cell::Int(_) | Cell::Float(_))
                | (ColumnBuilder::Boolean(_), Cell::Bool(_))
                | (ColumnBuilder::Date32(_), Cell::Int(_))
                | (ColumnBuilder::Timestamp(_), Cell::Int(_))
                | (ColumnBuilder::ListInt64(_), Cell::Ints(_))
        ) && match (self, cell) {
            (ColumnBuilder::Int32(_) | ColumnBuilder::Date32(_), Cell::Int(v)) => i32::try_from(*v).is_ok(),
            _ => true,
        }
    }

    fn append(&mut self, cell: &Cell) {
        match (self, cell) {
            (ColumnBuilder::Utf8(b), Cell::Str(s)) => b.append_value(s),
            (ColumnBuilder::Utf8(b), Cell::Static(s)) => b.append_value(s),
            (ColumnBuilder::Utf8(b), Cell::Shared(s)) => b.append_value(s),
            (ColumnBuilder::Utf8(b), _) => b.append_null(),
            (ColumnBuilder::Int32(b), Cell::Int(v)) => b.append_value(*v as i32),
            (ColumnBuilder::Int32(b), _) => b.append_null(),
            (ColumnBuilder::Int64(b), Cell::Int(v)) => b.append_value(*v),
            (ColumnBuilder::Int64(b), _) => b.append_null(),
            (ColumnBuilder::Float64(b), Cell::Float(v)) => b.append_value(*v),
            (ColumnBuilder::Float64(b), Cell::Int(v)) => b.append_value(*v as f64),
            (ColumnBuilder::Float64(b), _) => b.append_null(),
            (ColumnBuilder::Boolean(b), Cell::Bool(v)) => b.append_value(*v),
            (ColumnBuilder::Boolean(b), _) => b.append_null(),
            (ColumnBuilder::Date32(b), Cell::Int(v)) => b.append_value(*v as i32),
            (ColumnBuilder::Date32(b), _) => b.append_null(),
            (ColumnBuilder::Timestamp(b), Cell::Int(v)) => b.append_value(*v),
            (ColumnBuilder::Timestamp(b), _) => b.append_null(),
            (ColumnBuilder::ListInt64(b), Cell::Ints(v)) => {
                b.values().append_slice(v);
                b.append(true);
            }
            (ColumnBuilder::ListInt64(b), _) => b.append(false),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Utf8(b) => Arc::new(b.finish()),
            ColumnBuilder::Int32(b) => Arc::new(b.finish()),
            ColumnBuilder::Int64(b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(b) => Arc::new(b.finish()),
            ColumnBuilder::Boolean(b) => Arc::new(b.finish()),
            ColumnBuilder::Date32(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
            ColumnBuilder::ListInt64(b) => Arc::new(b.finish()),
        }
    }
}

/// Builds one resource's batch.
pub(crate) struct Table {
    pub(crate) resource: Resource,
    schema: &'static TableSchema,
    builders: Vec<ColumnBuilder>,
    row: Vec<Cell>,
    /// The value of each column that is the same on every row of the call.
    constants: Vec<Option<Cell>>,
    /// Where the next `set` most likely goes: harmonizers set columns in schema order, so a
    /// name compare at the cursor usually replaces the hash lookup.
    cursor: usize,
    rows: usize,
}

impl Table {
    pub(crate) fn new(resource: Resource, ctx: &Context, endpoint: &'static str) -> Table {
        let schema = resource.schema();
        let builders = schema.columns.iter().map(|c| ColumnBuilder::new(c.data_type)).collect();
        let ingested = ctx.ingested_at.timestamp_micros();
        let mut constants = vec![None; schema.columns.len()];
        for (name, cell) in [
            ("user_id", Cell::Str(ctx.user_id.clone())),
            ("withings_user_id", Cell::Str(ctx.withings_user_id.clone())),
            ("source_provider", Cell::Static("withings")),
            ("endpoint", Cell::Static(endpoint)),
            ("ingested_at", Cell::Int(ingested)),
            ("run_id", Cell::Str(ctx.run_id.clone())),
        ] {
            let i = schema.index_of(name).unwrap_or_else(|| panic!("{resource} lacks common column {name}"));
            constants[i] = Some(cell);
        }
        Table { resource, schema, builders, row: vec![Cell::Null; schema.columns.len()], constants, cursor: 0, rows: 0 }
    }

    /// Stages a value for the current row. The column must exist in the schema file (a
    /// harmonizer naming a column its schema lacks is a bug the golden tests catch).
    pub(crate) fn set(&mut self, column: &str, value: impl Into<Cell>) {
        let i = match self.schema.columns.get(self.cursor) {
            Some(c) if c.name == column => self.cursor,
            _ => {
                self.schema.index_of(column).unwrap_or_else(|| panic!("schemas/{}.json has no column '{column}'", self.resource))
            }
        };
        self.cursor = i + 1;
        self.row[i] = value.into();
    }

    pub(crate) fn has(&self, column: &str) -> bool {
        self.schema.index_of(column).is_some()
    }

    /// Stages the provenance and local-time columns.
    pub(crate) fn provenance(&mut self, source: &Source, zone: &Zone, at: i64) {
        self.set("source_type", source.kind.as_str());
        self.set("source_device_id", source.device_id.clone());
        self.set("source_device_model", source.model.clone());
        self.set("source_device_model_id", source.model_id);
        self.set("time_zone", zone.name.clone());
        self.set("timezone_offset", zone.offset_at(at).map(i64::from));
    }

    /// Appends the staged row, or leaves it out and says which column is missing or mistyped.
    pub(crate) fn push(&mut self) -> Result<(), String> {
        self.cursor = 0;
        for (i, c) in self.schema.columns.iter().enumerate() {
            let cell = self.constants[i].as_ref().unwrap_or(&self.row[i]);
            if !c.nullable && *cell == Cell::Null {
                self.clear();
                return Err(format!("no value for required column '{}' of {}", c.name, self.resource));
            }
            if !self.builders[i].accepts(cell) {
                let msg =
                    format!("value {cell:?} does not fit column '{}' ({}) of {}", c.name, c.data_type.name(), self.resource);
                self.clear();
                return Err(msg);
            }
        }
        for ((b, cell), constant) in self.builders.iter_mut().zip(self.row.iter_mut()).zip(&self.constants) {
            b.append(constant.as_ref().unwrap_or(cell));
            *cell = Cell::Null;
        }
        self.rows += 1;
        Ok(())
    }

    fn clear(&mut self) {
        self.row.iter_mut().for_each(|c| *c = Cell::Null);
        self.cursor = 0;
    }

    /// The batch, sorted by (time column, primary key).
    pub(crate) fn finish(mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(ColumnBuilder::finish).collect();
        let batch = RecordBatch::try_new(self.schema.arrow(), columns).expect("builders follow the schema");
        if batch.num_rows() < 2 {
            return batch;
        }
        let mut keys = vec![self.schema.time_column.as_str()];
        keys.extend(self.schema.primary_key.iter().map(String::as_str).filter(|k| *k != self.schema.time_column));
        let sort: Vec<SortColumn> = keys
            .iter()
            .map(|k| SortColumn {
                values: batch.column(self.schema.index_of(k).expect("checked at load")).clone(),
                options: None,
            })
            .collect();
        let idx = lexsort_to_indices(&sort, None).expect("sortable key columns");
        take_record_batch(&batch, &idx).expect("indices in range")
    }
}
