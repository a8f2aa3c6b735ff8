//! The raw landing: the exact Withings records that fed the tables, one row per record
//! (`schemas/_raw.json`), so the tables can be rebuilt without calling Withings again.
//!
//! Keys and times are read from the raw JSON, not from the decoded record, so a record that
//! did not decode is landed too (its key is then the SHA-256 of its JSON, and a record without
//! a usable time is placed at the epoch, 1970-01-01, so that landing it again finds it).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringBuilder, TimestampMicrosecondBuilder};
use chrono::NaiveDate;
use serde_json::{Value, json};
use sha2::Digest;

use crate::harmonize::Context;
use crate::schema;
use crate::withings::Endpoint;
use crate::withings::types::{IntradaySample, Item};
use crate::withings::{MeasureList, SleepGet};

/// One record to land.
struct Record<'a> {
    key: Option<String>,
    time: Option<i64>,
    json: &'a Value,
}

fn int(v: &Value, field: &str) -> Option<i64> {
    match v.get(field)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text(v: &Value, field: &str) -> Option<String> {
    match v.get(field)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn batch(ctx: &Context, endpoint: Endpoint, context: Option<&Value>, records: Vec<Record>) -> RecordBatch {
    let n = records.len();
    let mut s: Vec<StringBuilder> = (0..5).map(|_| StringBuilder::with_capacity(n, n * 16)).collect();
    let (mut time, mut modified, mut ingested) = (
        TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"),
        TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"),
        TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"),
    );
    let mut context_col = StringBuilder::new();
    let mut json_col = StringBuilder::new();
    let mut run = StringBuilder::new();
    let now = ctx.ingested_at.timestamp_micros();
    let context = context.map(Value::to_string);
    for r in records {
        let text = r.json.to_string();
        let key = r.key.unwrap_or_else(|| format!("sha256:{}", hex::encode(sha2::Sha256::digest(text.as_bytes()))));
        s[0].append_value(&ctx.user_id);
        s[1].append_value(&ctx.withings_user_id);
        s[2].append_value(endpoint.as_str());
        s[3].append_value(key);
        time.append_value(r.time.and_then(|t| t.checked_mul(1_000_000)).unwrap_or(0));
        modified.append_option(int(r.json, "modified").and_then(|t| t.checked_mul(1_000_000)));
        context_col.append_option(context.as_deref());
        json_col.append_value(text);
        ingested.append_value(now);
        run.append_value(&ctx.run_id);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(s[0].finish()),
        Arc::new(s[1].finish()),
        Arc::new(s[2].finish()),
        Arc::new(s[3].finish()),
        Arc::new(time.finish()),
        Arc::new(modified.finish()),
        Arc::new(context_col.finish()),
        Arc::new(json_col.finish()),
        Arc::new(ingested.finish()),
        Arc::new(run.finish()),
    ];
    RecordBatch::try_new(schema::landing("_raw").arrow(), columns).expect("raw columns follow schemas/_raw.json")
}

/// Measure groups, keyed by grpid; the answer's time zone goes into `context`.
pub fn getmeas(ctx: &Context, list: &MeasureList) -> RecordBatch {
    let context = list.timezone.as_ref().map(|tz| json!({ "timezone": tz }));
    let records =
        list.groups.iter().map(|i| Record { key: text(&i.raw, "grpid"), time: int(&i.raw, "date"), json: &i.raw }).collect();
    batch(ctx, Endpoint::Getmeas, context.as_ref(), records)
}

/// Activity rows, keyed by day, device, model id, brand and model name (as the table).
pub fn getactivity(ctx: &Context, items: &[Item<crate::withings::types::Activity>]) -> RecordBatch {
    let records = items
        .iter()
        .map(|i| {
            let day = text(&i.raw, "date");
            let time = day
                .as_deref()
                .and_then(|d| NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d").ok())
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc().timestamp());
            let part = |f: &str| text(&i.raw, f).unwrap_or_else(|| "-".into());
            let device = text(&i.raw, "deviceid").or_else(|| text(&i.raw, "hash_deviceid")).unwrap_or_else(|| "-".into());
            let key = day.map(|d| format!("{d}/{device}/{}/{}/{}", part("modelid"), part("brand"), part("model")));
            Record { key, time, json: &i.raw }
        })
        .collect();
    batch(ctx, Endpoint::Getactivity, None, records)
}

/// Intraday samples, keyed by epoch and device.
pub fn getintradayactivity(ctx: &Context, series: &BTreeMap<i64, Item<IntradaySample>>) -> RecordBatch {
    let records = series
        .iter()
        .map(|(t, i)| {
            let device = text(&i.raw, "deviceid").unwrap_or_else(|| "-".into());
            Record { key: Some(format!("{t}/{device}")), time: Some(*t), json: &i.raw }
        })
        .collect();
    batch(ctx, Endpoint::Getintradayactivity, None, records)
}

/// Workouts or sleep summaries, keyed by their Withings id.
pub fn by_id<T>(ctx: &Context, endpoint: Endpoint, items: &[Item<T>]) -> RecordBatch {
    let records =
        items.iter().map(|i| Record { key: text(&i.raw, "id"), time: int(&i.raw, "startdate"), json: &i.raw }).collect();
    batch(ctx, endpoint, None, records)
}

/// Sleep get segments, keyed by start, end, state and device (two segments can share a
/// start); the answer's device class goes into `context`.
pub fn sleep_get(ctx: &Context, answer: &SleepGet) -> RecordBatch {
    let context = answer.model.map(|m| json!({ "model": m }));
    let records = answer
        .segments
        .iter()
        .map(|i| {
            let start = int(&i.raw, "startdate");
            let part = |f: &str| text(&i.raw, f).unwrap_or_else(|| "-".into());
            let key = start.map(|s| format!("{s}/{}/{}/{}", part("enddate"), part("state"), part("hash_deviceid")));
            Record { key, time: start, json: &i.raw }
        })
        .collect();
    batch(ctx, Endpoint::SleepGet, context.as_ref(), records)
}
