//! The harmonized table schemas: `schemas/*.json`, compiled into the binary.
//!
//! Each resource file lists its own columns; `schemas/_common.json` holds the columns every
//! table carries (`head` opens each table, `tail` closes it). The registry composes them once
//! into a [`TableSchema`] with its Arrow schema. Harmonizers build their batches on that Arrow
//! schema, so a batch's schema is the file's by construction.
//!
//! Invariants checked when the registry loads (and by the tests): column names are unique,
//! the primary key, time and partition columns exist, the time column is non-null, and
//! partition columns (`date`, `month`) are never stored inside files (they live only in the
//! hive path). Types are a small fixed vocabulary of Arrow types; files change only by adding
//! nullable columns (ARCHITECTURE.md, "Words").

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

/// One harmonized table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Activity,
    BloodOxygen,
    BloodPressure,
    Body,
    CaloriesActive,
    Distance,
    Fat,
    Heartrate,
    Hrv,
    Hypnogram,
    RespiratoryRate,
    Sleep,
    SleepCycle,
    SleepStream,
    Steps,
    Vo2Max,
    Weight,
    Workouts,
}

impl Resource {
    /// All 18 resources, in alphabetical order.
    pub const ALL: [Resource; 18] = [
        Resource::Activity,
        Resource::BloodOxygen,
        Resource::BloodPressure,
        Resource::Body,
        Resource::CaloriesActive,
        Resource::Distance,
        Resource::Fat,
        Resource::Heartrate,
        Resource::Hrv,
        Resource::Hypnogram,
        Resource::RespiratoryRate,
        Resource::Sleep,
        Resource::SleepCycle,
        Resource::SleepStream,
        Resource::Steps,
        Resource::Vo2Max,
        Resource::Weight,
        Resource::Workouts,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Activity => "activity",
            Resource::BloodOxygen => "blood_oxygen",
            Resource::BloodPressure => "blood_pressure",
            Resource::Body => "body",
            Resource::CaloriesActive => "calories_active",
            Resource::Distance => "distance",
            Resource::Fat => "fat",
            Resource::Heartrate => "heartrate",
            Resource::Hrv => "hrv",
            Resource::Hypnogram => "hypnogram",
            Resource::RespiratoryRate => "respiratory_rate",
            Resource::Sleep => "sleep",
            Resource::SleepCycle => "sleep_cycle",
            Resource::SleepStream => "sleep_stream",
            Resource::Steps => "steps",
            Resource::Vo2Max => "vo2_max",
            Resource::Weight => "weight",
            Resource::Workouts => "workouts",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Resource::Activity => include_str!("../schemas/activity.json"),
            Resource::BloodOxygen => include_str!("../schemas/blood_oxygen.json"),
            Resource::BloodPressure => include_str!("../schemas/blood_pressure.json"),
            Resource::Body => include_str!("../schemas/body.json"),
            Resource::CaloriesActive => include_str!("../schemas/calories_active.json"),
            Resource::Distance => include_str!("../schemas/distance.json"),
            Resource::Fat => include_str!("../schemas/fat.json"),
            Resource::Heartrate => include_str!("../schemas/heartrate.json"),
            Resource::Hrv => include_str!("../schemas/hrv.json"),
            Resource::Hypnogram => include_str!("../schemas/hypnogram.json"),
            Resource::RespiratoryRate => include_str!("../schemas/respiratory_rate.json"),
            Resource::Sleep => include_str!("../schemas/sleep.json"),
            Resource::SleepCycle => include_str!("../schemas/sleep_cycle.json"),
            Resource::SleepStream => include_str!("../schemas/sleep_stream.json"),
            Resource::Steps => include_str!("../schemas/steps.json"),
            Resource::Vo2Max => include_str!("../schemas/vo2_max.json"),
            Resource::Weight => include_str!("../schemas/weight.json"),
            Resource::Workouts => include_str!("../schemas/workouts.json"),
        }
    }

    /// This resource's table schema.
    pub fn schema(self) -> &'static TableSchema {
        &registry()[self as usize]
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown resource name; lists the valid ones.
#[derive(Debug, thiserror::Error)]
#[error("unknown resource '{0}' (expected one of: {list})", list = Resource::ALL.map(Resource::as_str).join(", "))]
pub struct UnknownResource(pub String);

impl FromStr for Resource {
    type Err = UnknownResource;
    fn from_str(s: &str) -> Result<Resource, UnknownResource> {
        Resource::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| UnknownResource(s.to_string()))
    }
}

/// Summary (one object per day or session) or time series (samples).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Summary,
    Timeseries,
    /// Not a resource: the raw landing and the quarantine.
    Landing,
}

/// Partition grain: `date=YYYY-MM-DD` or `month=YYYY-MM` folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grain {
    Day,
    Month,
}

impl Grain {
    /// The hive partition column this grain produces.
    pub fn partition_key(self) -> &'static str {
        match self {
            Grain::Day => "date",
            Grain::Month => "month",
        }
    }
}

/// The column types the schema files may use (a pinned subset of Arrow's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Utf8,
    Int32,
    Int64,
    Float64,
    Boolean,
    Date32,
    /// `Timestamp(Microsecond, "UTC")`.
    TimestampUtc,
    /// A list of `Int64` (sleep_cycle's offsets and stages).
    ListInt64,
}

impl ColumnType {
    const NAMES: [(&'static str, ColumnType); 8] = [
        ("Utf8", ColumnType::Utf8),
        ("Int32", ColumnType::Int32),
        ("Int64", ColumnType::Int64),
        ("Float64", ColumnType::Float64),
        ("Boolean", ColumnType::Boolean),
        ("Date32", ColumnType::Date32),
        ("Timestamp(Microsecond, UTC)", ColumnType::TimestampUtc),
        ("List(Int64)", ColumnType::ListInt64),
    ];

    pub fn name(self) -> &'static str {
        ColumnType::NAMES.iter().find(|(_, t)| *t == self).map(|(n, _)| *n).expect("every type is named")
    }

    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::Utf8 => DataType::Utf8,
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Date32 => DataType::Date32,
            ColumnType::TimestampUtc => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnType::ListInt64 => {
                DataType::List(std::sync::Arc::new(arrow::datatypes::Field::new("item", DataType::Int64, true)))
            }
        }
    }

    /// The SQL type understood by both DuckDB and DataFusion.
    pub fn sql(self) -> &'static str {
        match self {
            ColumnType::Utf8 => "VARCHAR",
            ColumnType::Int32 => "INTEGER",
            ColumnType::Int64 => "BIGINT",
            ColumnType::Float64 => "DOUBLE",
            ColumnType::Boolean => "BOOLEAN",
            ColumnType::Date32 => "DATE",
            ColumnType::TimestampUtc => "TIMESTAMP WITH TIME ZONE",
            ColumnType::ListInt64 => "BIGINT[]",
        }
    }
}

impl Serialize for ColumnType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ColumnType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ColumnType, D::Error> {
        let s = String::deserialize(d)?;
        ColumnType::NAMES.iter().find(|(n, _)| *n == s).map(|(_, t)| *t).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown column type '{s}' (expected one of: {})",
                ColumnType::NAMES.map(|(n, _)| n).join(", ")
            ))
        })
    }
}

/// One column of a schema file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: ColumnType,
    pub nullable: bool,
    /// Unit of the values, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The Vital/Junction field this column corresponds to (dotted where Vital nests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vital: Option<String>,
    pub description: String,
}

/// A resource's schema file (`schemas/<resource>.json`), as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaFile {
    resource: String,
    version: u32,
    kind: Kind,
    vital_schema: String,
    description: String,
    sources: Vec<String>,
    grain: Grain,
    partition_column: String,
    time_column: String,
    primary_key: Vec<String>,
    columns: Vec<Column>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonFile {
    #[allow(dead_code)]
    description: String,
    head: Vec<Column>,
    tail: Vec<Column>,
}

/// A resource's full schema: common head columns, its own columns, common tail columns.
#[derive(Debug, Clone, Serialize)]
pub struct TableSchema {
    pub resource: String,
    /// Bumped when a column is added.
    pub version: u32,
    pub kind: Kind,
    /// The Vital/Junction schema the table follows.
    pub vital_schema: String,
    pub description: String,
    /// The Withings endpoints and fields that feed the table.
    pub sources: Vec<String>,
    pub grain: Grain,
    /// The column whose date (UTC for time series, local for summaries) picks the partition.
    pub partition_column: String,
    /// The column rows are sorted by after `user_id`.
    pub time_column: String,
    /// Columns that identify a row (nulls compare equal).
    pub primary_key: Vec<String>,
    pub columns: Vec<Column>,
    #[serde(skip)]
    arrow: SchemaRef,
    #[serde(skip)]
    index: HashMap<String, usize>,
}

impl TableSchema {
    /// The Arrow schema every batch of this resource has.
    pub fn arrow(&self) -> SchemaRef {
        self.arrow.clone()
    }

    /// Position of a column.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.index_of(name).map(|i| &self.columns[i])
    }

    /// The schema as pretty JSON (self-contained: common columns included).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a schema serializes")
    }

    /// A `CREATE TABLE` statement DuckDB and DataFusion both accept. The hive partition
    /// column is not a stored column and is named in a comment.
    pub fn to_sql(&self) -> String {
        let mut s = format!(
            "-- {}: {}, partitioned by {}= from {}, primary key ({}). Timestamps are UTC\n-- (in DataFusion, SET datafusion.execution.time_zone = 'UTC' first).\nCREATE TABLE \"{}\" (\n",
            self.resource,
            self.vital_schema,
            self.grain.partition_key(),
            self.partition_column,
            self.primary_key.join(", "),
            self.resource
        );
        let n = self.columns.len();
        for (i, c) in self.columns.iter().enumerate() {
            let null = if c.nullable { "" } else { " NOT NULL" };
            let comma = if i + 1 < n { "," } else { "" };
            s.push_str(&format!("  \"{}\" {}{null}{comma}\n", c.name, c.data_type.sql()));
        }
        s.push_str(");\n");
        s
    }
}

/// Why a schema file is unusable (a bug in `schemas/`, caught by the tests).
#[derive(Debug, thiserror::Error)]
#[error("schemas/{file}: {reason}")]
pub struct SchemaError {
    pub file: String,
    pub reason: String,
}

/// The schemas are compiled in: one that does not load is a bug.
impl crate::error::Classify for SchemaError {
    fn class(&self) -> crate::error::ErrorClass {
        crate::error::ErrorClass::Internal
    }
}

fn build(resource: Resource, common: &CommonFile) -> Result<TableSchema, SchemaError> {
    let file = format!("{}.json", resource.as_str());
    let f: SchemaFile =
        serde_json::from_str(resource.file()).map_err(|e| SchemaError { file: file.clone(), reason: e.to_string() })?;
    if f.resource != resource.as_str() {
        return Err(SchemaError { file, reason: format!("names resource '{}'", f.resource) });
    }
    let columns: Vec<Column> = common.head.iter().chain(&f.columns).chain(&common.tail).cloned().collect();
    compose(file, f, columns)
}

/// The schemas of the lake's own tables: the raw landing (`schemas/_raw.json`, one table per
/// endpoint) and the quarantine (`schemas/_quarantine.json`). They have no common columns.
pub fn landing(name: &str) -> &'static TableSchema {
    static RAW: OnceLock<TableSchema> = OnceLock::new();
    static RAW_DENSE: OnceLock<TableSchema> = OnceLock::new();
    static QUARANTINE: OnceLock<TableSchema> = OnceLock::new();
    let load = |file: &str, text: &str| {
        let f: SchemaFile = serde_json::from_str(text).unwrap_or_else(|e| panic!("compiled-in schemas/{file} is invalid: {e}"));
        let columns = f.columns.clone();
        compose(file.to_string(), f, columns).unwrap_or_else(|e| panic!("compiled-in schema is invalid: {e}"))
    };
    match name {
        "_raw" => RAW.get_or_init(|| load("_raw.json", include_str!("../schemas/_raw.json"))),
        // The dense endpoints (intraday, sleep get: a record per minute or so) land by day,
        // like the tables they feed: a month of a cohort's intraday records is millions of rows.
        "_raw_dense" => RAW_DENSE.get_or_init(|| {
            let mut s = load("_raw.json", include_str!("../schemas/_raw.json"));
            s.grain = Grain::Day;
            s
        }),
        "_quarantine" => QUARANTINE.get_or_init(|| load("_quarantine.json", include_str!("../schemas/_quarantine.json"))),
        other => panic!("no landing table '{other}'"),
    }
}

fn compose(file: String, f: SchemaFile, columns: Vec<Column>) -> Result<TableSchema, SchemaError> {
    let err = |reason: String| SchemaError { file: file.clone(), reason };
    let mut index = HashMap::new();
    for (i, c) in columns.iter().enumerate() {
        if index.insert(c.name.clone(), i).is_some() {
            return Err(err(format!("column '{}' twice (common columns come from _common.json)", c.name)));
        }
        if c.name == "date" || c.name == "month" {
            return Err(err(format!("column '{}' is a hive partition column and may not be stored", c.name)));
        }
    }
    for k in f.primary_key.iter().chain([&f.time_column, &f.partition_column]) {
        if !index.contains_key(k) {
            return Err(err(format!("key column '{k}' is not a column")));
        }
    }
    let time = &columns[index[&f.time_column]];
    if time.nullable || !matches!(time.data_type, ColumnType::TimestampUtc | ColumnType::Date32) {
        return Err(err(format!("time column '{}' must be a non-null timestamp or date", time.name)));
    }
    let fields: Vec<Field> = columns.iter().map(|c| Field::new(&c.name, c.data_type.arrow(), c.nullable)).collect();
    Ok(TableSchema {
        resource: f.resource,
        version: f.version,
        kind: f.kind,
        vital_schema: f.vital_schema,
        description: f.description,
        sources: f.sources,
        grain: f.grain,
        partition_column: f.partition_column,
        time_column: f.time_column,
        primary_key: f.primary_key,
        columns,
        arrow: Arc::new(Schema::new(fields)),
        index,
    })
}

/// Loads and checks every schema file. The files are compiled in, so an error here is a bug
/// in `schemas/` that the unit test below reports with the file named.
pub fn load() -> Result<Vec<TableSchema>, SchemaError> {
    let common: CommonFile = serde_json::from_str(include_str!("../schemas/_common.json"))
        .map_err(|e| SchemaError { file: "_common.json".into(), reason: e.to_string() })?;
    Resource::ALL.iter().map(|r| build(*r, &common)).collect()
}

fn registry() -> &'static [TableSchema] {
    static REGISTRY: OnceLock<Vec<TableSchema>> = OnceLock::new();
    REGISTRY.get_or_init(|| load().unwrap_or_else(|e| panic!("compiled-in schema is invalid: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_file_loads_with_the_common_columns() {
        let all = load().unwrap();
        assert_eq!(all.len(), 18);
        for t in &all {
            for c in
                ["user_id", "withings_user_id", "source_provider", "source_type", "source_device_id", "ingested_at", "run_id"]
            {
                assert!(t.index_of(c).is_some(), "{} lacks {c}", t.resource);
            }
            assert_eq!(t.arrow().fields().len(), t.columns.len());
        }
        assert_eq!("sleep_stream".parse::<Resource>().unwrap(), Resource::SleepStream);
        let e = "sleeps".parse::<Resource>().unwrap_err().to_string();
        assert!(e.contains("'sleeps'") && e.contains("sleep_stream"), "{e}");
    }
}
