//! Lake rows as Vital objects: the one place that turns a batch of a resource's table into
//! the summaries and time-series samples Vital's API and webhooks carry. The change events
//! ([`super::build`]) and the REST read side (`crate::serve::read`) both use it, so an
//! object read back is the object an event announced (same fields, same values, same
//! `source`).
//!
//! - a summary row is one object: Vital's fields at their Vital paths (e.g.
//!   `heart_rate.avg_bpm`, `source.type`), the lake's other columns beside them, `date` and
//!   `created_at` filled from `calendar_date` and `updated_at`, `user_id` the Vital-style id,
//!   the fields Vital declares that Withings cannot fill as null;
//! - a time-series row is one sample (`timestamp`, the start for interval types, `start`/`end`,
//!   `value` or `systolic`/`diastolic`, `unit`, `timezone_offset`, `type`) plus the key of its
//!   source group; [`source`] builds that group's `source` object.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Date32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::schema::Resource;

/// Columns of every table that are bookkeeping, not data: never in an object.
const NOT_IN_OBJECTS: [&str; 3] = ["endpoint", "ingested_at", "run_id"];
/// Columns of every table that a time-series sample does not repeat (the group's `source` and
/// `user_id` carry them).
const GROUP_COLUMNS: [&str; 8] = [
    "user_id",
    "withings_user_id",
    "time_zone",
    "source_provider",
    "source_type",
    "source_device_id",
    "source_device_model",
    "source_device_model_id",
];
/// The columns a time series' `source` is made of, in group-key order.
const SOURCE_COLUMNS: [&str; 4] = ["source_provider", "source_type", "source_device_id", "source_device_model"];

/// How a time series' `source` names the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStyle {
    /// The provider fields Vital still documents though deprecated: `name`, `slug` and `logo`
    /// in the `source`.
    pub legacy_fields: bool,
    /// The `logo` those fields carry.
    pub logo: String,
}

impl Default for SourceStyle {
    /// As events are by default ([`super::EventsConfig::default`]).
    fn default() -> SourceStyle {
        SourceStyle::of(&super::EventsConfig::default())
    }
}

impl SourceStyle {
    /// The style of the events `cfg` configures.
    pub fn of(cfg: &super::EventsConfig) -> SourceStyle {
        SourceStyle { legacy_fields: cfg.legacy_fields, logo: cfg.provider_logo.clone() }
    }
}

/// One time-series row: its sample, and the key of its source group (rows with equal keys
/// share one `source`).
#[derive(Debug, Clone)]
pub struct SampleRow {
    pub group: String,
    pub sample: Value,
}

fn set_path(obj: &mut Map<String, Value>, path: &str, v: Value) {
    match path.split_once('.') {
        None => {
            obj.insert(path.to_string(), v);
        }
        Some((head, rest)) => {
            let child = obj.entry(head.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            set_path(child.as_object_mut().expect("an object"), rest, v);
        }
    }
}

/// One value of a lake column as JSON: timestamps as RFC 3339 (`+00:00`), dates as
/// `YYYY-MM-DD`, NaN as null.
fn value_at(c: &ArrayRef, i: usize) -> Value {
    if c.is_null(i) {
        return Value::Null;
    }
    match c.data_type() {
        DataType::Utf8 => Value::from(c.as_string::<i32>().value(i)),
        DataType::Int32 => Value::from(c.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => Value::from(c.as_primitive::<Int64Type>().value(i)),
        DataType::Float64 => {
            serde_json::Number::from_f64(c.as_primitive::<Float64Type>().value(i)).map_or(Value::Null, Value::Number)
        }
        DataType::Boolean => Value::from(c.as_boolean().value(i)),
        DataType::Date32 => {
            let d = c.as_primitive::<Date32Type>().value(i);
            chrono::NaiveDate::from_num_days_from_ce_opt(d + 719_163).map_or(Value::Null, |d| Value::from(d.to_string()))
        }
        DataType::Timestamp(_, _) => {
            let us = c.as_primitive::<TimestampMicrosecondType>().value(i);
            DateTime::<Utc>::from_timestamp_micros(us).map_or(Value::Null, |t| Value::from(t.to_rfc3339()))
        }
        DataType::List(_) => {
            let items = c.as_list::<i32>().value(i);
            Value::Array((0..items.len()).map(|j| value_at(&items, j)).collect())
        }
        t => Value::from(format!("<{t}>")),
    }
}

fn column<'a>(resource: Resource, rows: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, ArrowError> {
    rows.column_by_name(name).ok_or_else(|| ArrowError::SchemaError(format!("{resource} has no column {name}")))
}

/// The summary objects of `rows` (a batch of `resource`'s table, a summary), one per row in
/// row order. `vital` maps an application id (the `user_id` column) to the Vital-style
/// `user_id` the object carries.
pub fn summaries(resource: Resource, rows: &RecordBatch, vital: impl Fn(&str) -> String) -> Result<Vec<Value>, ArrowError> {
    let schema = resource.schema();
    let users = column(resource, rows, "user_id")?.as_string::<i32>();
    // (column, Vital path; several columns on one path make an array, in schema order:
    // workouts' `hr_zones`).
    let plan: Vec<(&ArrayRef, &str, bool)> = schema
        .columns
        .iter()
        .filter(|c| !NOT_IN_OBJECTS.contains(&c.name.as_str()))
        .map(|c| {
            let path = c.vital.as_deref().unwrap_or(c.name.as_str());
            let shared = c.vital.is_some() && schema.columns.iter().filter(|o| o.vital == c.vital).count() > 1;
            Ok((column(resource, rows, &c.name)?, path, shared))
        })
        .collect::<Result<_, ArrowError>>()?;
    let mut out = Vec::with_capacity(rows.num_rows());
    for i in 0..rows.num_rows() {
        let mut o = Map::new();
        for (c, path, shared) in &plan {
            let v = value_at(c, i);
            if *shared {
                if let Value::Array(a) = o.entry(path.to_string()).or_insert_with(|| Value::Array(Vec::new())) {
                    a.push(v);
                }
            } else if path.contains('.') {
                set_path(&mut o, path, v);
            } else {
                o.entry(path.to_string()).or_insert(v);
            }
        }
        // Vital's summaries carry `date` (the calendar date at midnight UTC) and
        // `created_at`; the lake has `calendar_date` and `updated_at`.
        if !o.contains_key("date")
            && let Some(day) = o.get("calendar_date").and_then(Value::as_str)
        {
            let date = format!("{day}T00:00:00+00:00");
            o.insert("date".into(), Value::from(date));
        }
        if o.get("created_at").is_none_or(Value::is_null)
            && let Some(u) = o.get("updated_at").cloned()
        {
            o.insert("created_at".into(), u);
        }
        // Vital's `user_id` in the object too; the application's id stays in the envelope's
        // `client_user_id`.
        o.insert("user_id".into(), Value::from(vital(users.value(i))));
        vital_values(resource, &mut o);
        out.push(Value::Object(o));
    }
    Ok(out)
}

/// The samples of `rows` (a batch of `resource`'s table, a time series), one per row in row
/// order, each with its source group's key.
pub fn samples(resource: Resource, rows: &RecordBatch) -> Result<Vec<SampleRow>, ArrowError> {
    let schema = resource.schema();
    let source_cols: Vec<&ArrayRef> = SOURCE_COLUMNS.iter().map(|c| column(resource, rows, c)).collect::<Result<_, _>>()?;
    fn text(c: &ArrayRef, i: usize) -> &str {
        if c.is_null(i) { "" } else { c.as_string::<i32>().value(i) }
    }
    let plan: Vec<(&ArrayRef, &str)> = schema
        .columns
        .iter()
        .filter(|c| !NOT_IN_OBJECTS.contains(&c.name.as_str()) && !GROUP_COLUMNS.contains(&c.name.as_str()))
        .map(|c| Ok((column(resource, rows, &c.name)?, c.vital.as_deref().unwrap_or(c.name.as_str()))))
        .collect::<Result<_, ArrowError>>()?;
    let start = plan.iter().position(|(_, p)| *p == "start");
    let has_timestamp = plan.iter().any(|(_, p)| *p == "timestamp");
    let metric = plan.iter().position(|(_, p)| *p == "metric");
    let mut out = Vec::with_capacity(rows.num_rows());
    for i in 0..rows.num_rows() {
        let mut sample = Map::new();
        for (c, path) in &plan {
            sample.insert(path.to_string(), value_at(c, i));
        }
        if !has_timestamp && let Some(s) = start {
            sample.insert("timestamp".into(), value_at(plan[s].0, i));
        }
        let kind = metric.map(|m| value_at(plan[m].0, i)).unwrap_or(Value::Null);
        sample.entry("type".to_string()).or_insert(kind);
        sample.entry("timezone_offset".to_string()).or_insert(Value::Null);
        // Vital's sample `id` (its own row id): none here.
        sample.entry("id".to_string()).or_insert(Value::Null);
        if resource == Resource::BloodPressure {
            // Vital's `grouping` of a reading: none from Withings.
            sample.entry("grouping".to_string()).or_insert(Value::Null);
        }
        whole_counts(resource, &mut sample);
        let group = source_cols.iter().map(|c| text(c, i)).collect::<Vec<_>>().join("\u{1f}");
        out.push(SampleRow { group, sample: Value::Object(sample) });
    }
    Ok(out)
}

/// The `source` of row `i` of `rows` (a batch of a time series): Vital's
/// `ClientFacingSource`, with the legacy provider fields when `style` asks for them.
pub fn source(rows: &RecordBatch, i: usize, style: &SourceStyle) -> Result<Value, ArrowError> {
    let cols: Vec<&ArrayRef> = SOURCE_COLUMNS
        .iter()
        .map(|c| rows.column_by_name(c).ok_or_else(|| ArrowError::SchemaError(format!("no column {c}"))))
        .collect::<Result<_, _>>()?;
    let v = |k: usize| value_at(cols[k], i);
    let mut source = json!({"provider": v(0), "type": v(1), "device_id": v(2), "device_model": v(3)});
    if style.legacy_fields {
        source["name"] = json!("Withings");
        source["slug"] = json!("withings");
        source["logo"] = json!(style.logo);
    }
    Ok(source)
}

/// Fields Vital's models declare for a summary that Withings data cannot fill: present as
/// null rather than absent (a handler reading them finds a null, as from Vital).
fn unfilled(r: Resource) -> &'static [&'static str] {
    match r {
        Resource::Activity => &["daily_movement", "wheelchair_push", "wheelchair_use"],
        Resource::Body => &["waist_circumference_centimeter"],
        Resource::Sleep => &["hr_dip", "hr_resting", "skin_temperature", "sleep_stream", "state", "temperature_delta"],
        // hr_zones: Vital's six zones (<50 % to 90 %+ of max HR) are not Withings' four.
        Resource::Workouts => &[
            "hr_zones",
            "average_speed",
            "average_watts",
            "device_watts",
            "elev_high",
            "elev_low",
            "map",
            "max_speed",
            "max_watts",
            "moving_time",
            "title",
            "total_elevation_gain",
            "weighted_average_watts",
        ],
        _ => &[],
    }
}

/// A summary object in Vital's values: sleep `efficiency` on the scale Vital's schema states
/// (a percentage, `100 * total / duration`; the lake keeps the 0-1 ratio), and the fields it
/// declares that we cannot fill as null.
fn vital_values(r: Resource, o: &mut Map<String, Value>) {
    if r == Resource::Sleep
        && let Some(e) = o.get("efficiency").and_then(Value::as_f64)
    {
        let pct = (e * 100.0 * 1e6).round() / 1e6;
        o.insert("efficiency".into(), serde_json::Number::from_f64(pct).map_or(Value::Null, Value::Number));
    }
    for f in unfilled(r) {
        o.entry(f.to_string()).or_insert(Value::Null);
    }
    if r == Resource::SleepCycle {
        // ClientFacingSleepCycle wants the source's fields at the top level too.
        let source = o.get("source").cloned().unwrap_or(Value::Null);
        for (top, key) in [("source_provider", "provider"), ("source_type", "type"), ("source_device_id", "device_id")] {
            o.entry(top.to_string()).or_insert_with(|| source.get(key).cloned().unwrap_or(Value::Null));
        }
        o.entry("source_app_id".to_string()).or_insert(Value::Null);
    }
}

/// Counts as integers where Vital's examples are integers (steps, systolic, diastolic, heart
/// rate in bpm), when the value is whole.
fn whole_counts(r: Resource, sample: &mut Map<String, Value>) {
    let fields: &[&str] = match r {
        Resource::Steps | Resource::Heartrate => &["value"],
        Resource::BloodPressure => &["systolic", "diastolic"],
        _ => return,
    };
    for f in fields {
        if let Some(v) = sample.get(*f).and_then(Value::as_f64).filter(|v| v.fract() == 0.0 && v.abs() < 9.0e15) {
            sample.insert(f.to_string(), Value::from(v as i64));
        }
    }
}
