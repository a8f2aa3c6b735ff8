//! Property tests: random but well-typed Withings responses through the harmonizers.
//!
//! One strategy per endpoint builds a JSON body (records are lists of optional fields with one
//! occasional defect each) decoded by the client's own helpers, then harmonized:
//! - getmeas: up to 30 groups, grpids sometimes colliding, groups repeated verbatim or changed;
//!   mapped, known-unmapped and unknown meastypes, body-segment positions, objectives; groups
//!   without a grpid or whose `measures` is not an array;
//! - getactivity: colliding day/source keys, malformed dates, a non-numeric field;
//! - getintradayactivity: epoch-keyed samples with random subsets of fields, non-numeric values;
//! - sleep getsummary, getworkouts: missing or reversed windows, colliding ids, unknown workout
//!   categories, `data` absent, null, an object or malformed;
//! - sleep get: known, unknown and missing states, colliding starts, series points repeated
//!   across segments with equal or different values, segments repeated verbatim (overlapping
//!   requests) or with another state, random sleep sessions.
//!
//! Properties: no panic; each batch has its schema file's Arrow schema, one batch per resource
//! the endpoint feeds; `samples_in` equals a count made here from the raw JSON and equals
//! `mapped + quarantined + unmapped`; row counts (weight, the intraday tables, hypnogram,
//! sleep_stream, activity, sleep, workouts) and, for getmeas and intraday, each class of sample
//! equal counts made here from the raw JSON; primary keys unique and rows sorted by the time
//! column; no NaN or infinity in Float64 columns; no null in non-nullable columns.
//!
//! The counts follow the `harmonize` module doc: one sample per getmeas measure (per group
//! without measures), summary record, intraday sample, sleep segment and point of its series. A
//! sleep segment repeated verbatim is one segment; a getmeas group repeated verbatim counts in
//! the classes of its original; of records sharing a key, the one modified last is kept.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::ops::Range;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use proptest::collection::vec;
use proptest::option::weighted;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value, json};
use withings_lake::harmonize::{self, Harmonized, SleepSession, codes};
use withings_lake::schema::Resource;
use withings_lake::withings::types::{Activity, Item, SleepSummary, Workout};
use withings_lake::withings::{MeasureList, SleepGet, decode_list, intraday_series};

use crate::harmonize_golden::ctx;

/// 2024-06-15 00:00 UTC: the origin of activity, intraday and sleep times.
const NIGHT: i64 = 1_718_409_600;
const MAPPED: [i64; 18] = [1, 4, 5, 6, 8, 9, 10, 11, 54, 76, 77, 88, 123, 168, 169, 170, 226, 227];
const KNOWN_UNMAPPED: [i64; 10] = [12, 71, 73, 91, 130, 135, 155, 173, 174, 175];
/// Body-composition meastypes: only their whole-body values (no position, or 7) are mapped.
const BODY: [i64; 12] = [1, 5, 6, 8, 76, 77, 88, 168, 169, 170, 226, 227];
#[rustfmt::skip]
const SLEEP_SERIES: [&str; 10] = [
    "hr", "rr", "rmssd", "sdnn_1", "snoring", "hrv_quality", "mvt_score", "chest_movement_rate", "withings_index",
    "breathing_sounds",
];
const KNOWN_SLEEP_STATES: [i64; 7] = [0, 1, 2, 3, 4, 5, 15];
/// Intraday fields some table holds, with the table.
#[rustfmt::skip]
const INTRADAY: [(&str, Resource); 7] = [
    ("steps", Resource::Steps), ("distance", Resource::Distance), ("calories", Resource::CaloriesActive),
    ("heart_rate", Resource::Heartrate), ("spo2_auto", Resource::BloodOxygen), ("rmssd", Resource::Hrv),
    ("rr", Resource::RespiratoryRate),
];

// ---------------------------------------------------------------------------------------------
// Strategies

/// One field of a record: its name and its value, `None` when absent.
type Field = BoxedStrategy<(&'static str, Option<Value>)>;

fn field<T: Into<Value>>(k: &'static str, s: impl Strategy<Value = Option<T>> + 'static) -> Field {
    s.prop_map(move |v| (k, v.map(Into::into))).boxed()
}

fn req<T: Into<Value> + std::fmt::Debug + 'static>(k: &'static str, s: impl Strategy<Value = T> + 'static) -> Field {
    field(k, s.prop_map(Some))
}

/// A number in `r`, present with probability `p`.
fn num<T: Into<Value> + std::fmt::Debug + 'static>(k: &'static str, p: f64, r: impl Strategy<Value = T> + 'static) -> Field {
    field(k, weighted(p, r))
}

fn pick<T: Into<Value> + Clone + std::fmt::Debug + 'static>(k: &'static str, choices: Vec<Option<T>>) -> Field {
    field(k, select(choices))
}

/// An object of the fields present; one time in ten, with one of `defects`: a field replaced
/// (`Some`) or removed (`None`).
fn record(fields: Vec<Field>, defects: Vec<(&'static str, Option<Value>)>) -> impl Strategy<Value = Value> {
    (fields, 0..(defects.len() * 10).max(1)).prop_map(move |(fields, d)| {
        let mut r: Map<String, Value> = fields.into_iter().filter_map(|(k, v)| Some((k.to_string(), v?))).collect();
        match defects.get(d) {
            Some((k, Some(v))) => drop(r.insert(k.to_string(), v.clone())),
            Some((k, None)) => drop(r.remove(*k)),
            None => {}
        }
        Value::Object(r)
    })
}

/// Sets `enddate` to `startdate + len` (absent when either is).
fn windowed(r: impl Strategy<Value = Value>, len: impl Strategy<Value = i64>) -> impl Strategy<Value = Value> {
    (r, weighted(0.9, len)).prop_map(|(mut r, len)| {
        if let (Some(start), Some(len)) = (r["startdate"].as_i64(), len) {
            r["enddate"] = json!(start + len);
        }
        r
    })
}

fn zone() -> Field {
    pick("timezone", vec![None, Some("Europe/Paris"), Some("America/New_York"), Some("Not/AZone")])
}

/// Epoch seconds the `modified` values count from: real ones (a record modified before 2009 or
/// after tomorrow is quarantined as implausible), close enough together to collide.
const MODIFIED: i64 = 1_700_000_000;

fn modified() -> Field {
    num("modified", 0.5, MODIFIED..MODIFIED + 4)
}

/// A list of `item`s, some repeated at the end: verbatim (an overlapping page) or changed by
/// `alter(record, m)`. Each record carries its own repeat, so shrinking drops them together.
fn listed(item: impl Strategy<Value = Value>, n: Range<usize>, alter: fn(&mut Value, i64)) -> impl Strategy<Value = Vec<Value>> {
    vec((item, weighted(0.15, weighted(0.5, 0i64..4))), n).prop_map(move |items| {
        let repeats: Vec<Value> = items
            .iter()
            .filter_map(|(r, repeat)| {
                let mut r = r.clone();
                if let Some(m) = (*repeat)? {
                    alter(&mut r, m);
                }
                Some(r)
            })
            .collect();
        items.into_iter().map(|(r, _)| r).chain(repeats).collect()
    })
}

fn measure() -> impl Strategy<Value = Value> {
    // Weight and blood pressure (9 with 10) often enough to make rows, any other code sometimes.
    let kind = prop_oneof![
        3 => select(vec![1i64, 9, 10]),
        4 => select(MAPPED.to_vec()),
        2 => select(KNOWN_UNMAPPED.to_vec()),
        1 => 500i64..600,
    ];
    let position = prop_oneof![3 => Just(None), 1 => select(vec![2i64, 7, 12]).prop_map(Some)];
    let unit = -5i64..=2;
    record(
        vec![req("type", kind), req("value", -10_000_000i64..=10_000_000), req("unit", unit), field("position", position)],
        vec![],
    )
}

fn group() -> impl Strategy<Value = Value> {
    let fields = vec![
        req("grpid", prop_oneof![1i64..200, 1_000_000i64..4_000_000_000]),
        req("date", 1_420_070_400i64..1_767_225_600), // 2015..2026
        pick("attrib", [0, 1, 2, 4, 5, 7, 8, 17].map(Some).to_vec()),
        pick("modelid", vec![None, Some(6), Some(10), Some(45), Some(93), Some(13), Some(9999)]),
        field("category", prop_oneof![6 => Just(Some(1)), 1 => Just(Some(2)), 1 => Just(None)]),
        modified(),
        pick("deviceid", vec![None, Some("scale-1"), Some("cuff-1")]),
        req("measures", vec(measure(), 0..8).prop_map(Value::Array)),
    ];
    record(fields, vec![("grpid", None), ("measures", Some(json!({ "not": "an array" })))])
}

fn getmeas_body() -> impl Strategy<Value = Value> {
    let alter = |g: &mut Value, m| {
        g["modified"] = json!(MODIFIED + m);
        if let Some(ms) = g.get_mut("measures").and_then(Value::as_array_mut) {
            ms.retain(|x| x["type"] != 1);
        }
    };
    (listed(group(), 0..30, alter), zone()).prop_map(|(groups, (_, tz))| json!({ "measuregrps": groups, "timezone": tz }))
}

fn activity() -> impl Strategy<Value = Value> {
    let date = prop_oneof![
        8 => (1u32..=12).prop_map(|d| format!("2024-06-{d:02}")),
        1 => select(vec!["2024-02-30", "yesterday", "", "2024/06/03"]).prop_map(String::from),
    ];
    let fields = vec![
        req("date", date),
        pick("deviceid", vec![None, Some("watch-1"), Some("phone-1")]),
        pick("modelid", vec![None, Some(93)]),
        pick("brand", vec![None, Some(1), Some(18)]),
        field("is_tracker", weighted(0.5, any::<bool>())),
        modified(),
        zone(),
        num("steps", 0.7, 0..30_000),
        num("distance", 0.5, 0.0..20_000.0),
        num("calories", 0.5, 0.0..3000.0),
        num("soft", 0.5, 0..20_000),
        num("hr_average", 0.3, 40..190),
        num("elevation", 0.3, 0.0..50.0),
    ];
    record(fields, vec![("date", None), ("steps", Some(json!("many")))])
}

fn intraday_body() -> impl Strategy<Value = Value> {
    let fields = vec![
        num("steps", 0.4, 0..200),
        num("distance", 0.3, 0.0..150.0),
        num("calories", 0.3, 0.0..20.0),
        num("heart_rate", 0.4, 40..180),
        num("spo2_auto", 0.2, 85.0..100.0),
        num("rmssd", 0.2, 5.0..120.0),
        num("rr", 0.2, 8.0..25.0),
        num("elevation", 0.3, 0.0..3.0),
        field("duration", weighted(0.3, prop_oneof![Just(60), Just(0), 1i64..600])),
        num("hrv_quality", 0.2, 0..100),
        pick("deviceid", vec![None, Some("watch-1"), Some("watch-2")]),
        pick("model_id", vec![None, Some(93), Some(1053)]),
    ];
    let sample = record(fields, vec![("heart_rate", Some(json!("high"))), ("distance", Some(json!("far")))]);
    vec((0i64..1440, sample), 0..40).prop_map(|samples| {
        let series: Map<String, Value> = samples.into_iter().map(|(m, s)| ((NIGHT + 60 * m).to_string(), s)).collect();
        json!({ "series": series })
    })
}

fn sleep_summary() -> impl Strategy<Value = Value> {
    let data = vec![
        num("total_sleep_time", 0.6, 0..40_000),
        num("lightsleepduration", 0.5, 0..20_000),
        num("deepsleepduration", 0.5, 0..10_000),
        num("remsleepduration", 0.5, 0..10_000),
        field("sleep_efficiency", weighted(0.4, prop_oneof![0.0..1.0, 1.0..100.0])),
        num("hr_average", 0.4, 40.0..90.0),
        num("rmssd_start_avg", 0.3, 5.0..120.0),
        num("sleep_score", 0.3, 0..100),
    ];
    let fields = vec![
        req("id", 1i64..40),
        num("startdate", 0.9, NIGHT..NIGHT + 5 * 86_400),
        pick("model", vec![None, Some(16), Some(32)]),
        pick("model_id", vec![None, Some(13), Some(63), Some(93)]),
        modified(),
        pick("date", vec![None, Some("2024-06-15"), Some("soon")]),
        zone(),
        req("data", record(data, vec![])),
    ];
    let defects = vec![("id", None), ("data", Some(json!({ "sleep_score": "great" }))), ("data", None)];
    windowed(record(fields, defects), prop_oneof![9 => 0i64..40_000, 1 => -3600i64..0])
}

fn workout() -> impl Strategy<Value = Value> {
    let data = vec![
        num("calories", 0.5, 0.0..2000.0),
        num("hr_average", 0.5, 60..190),
        num("distance", 0.5, 0.0..40_000.0),
        num("steps", 0.5, 0..20_000),
    ];
    let fields = vec![
        req("id", 1i64..40),
        field("category", weighted(0.9, prop_oneof![3 => select(vec![1i64, 2, 3, 7, 16, 187, 188, 272]), 1 => 9000i64..9100])),
        num("startdate", 0.9, NIGHT..NIGHT + 5 * 86_400),
        pick("model", vec![None, Some(json!(93)), Some(json!("1053"))]),
        pick("attrib", vec![None, Some(2), Some(7)]),
        modified(),
        zone(),
        field("data", prop_oneof![Just(None), Just(Some(Value::Null)), record(data, vec![]).prop_map(Some)]),
    ];
    let defects = vec![("id", None), ("id", Some(json!("abc"))), ("data", Some(json!({ "calories": "lots" })))];
    windowed(record(fields, defects), prop_oneof![9 => 0i64..7200, 1 => -600i64..0])
}

fn segment() -> impl Strategy<Value = Value> {
    let state = prop_oneof![6 => select(KNOWN_SLEEP_STATES.to_vec()), 1 => select(vec![7i64, 99])];
    let points = vec((0i64..240, select(vec![50.0, 55.0, 61.5, 0.0])), 0..6).prop_map(|points| {
        let points: Map<String, Value> = points.into_iter().map(|(m, v)| ((NIGHT + 60 * m).to_string(), json!(v))).collect();
        if points.is_empty() { json!([]) } else { Value::Object(points) }
    });
    let mut fields = vec![
        req("startdate", (0i64..120).prop_map(|k| NIGHT + 60 * k)),
        field("state", weighted(0.9, state)),
        pick("hash_deviceid", vec![None, Some("mat-1"), Some("watch-1")]),
        pick("model_id", vec![None, Some(13), Some(63), Some(93)]),
    ];
    fields.extend(SLEEP_SERIES.map(|k| field(k, weighted(0.3, points.clone()))));
    let defects = vec![("startdate", None), ("hr", Some(json!({ NIGHT.to_string(): "n/a" })))];
    windowed(record(fields, defects), prop_oneof![12 => 60i64..1800, 1 => -120i64..0])
}

fn sleep_get_body() -> impl Strategy<Value = (Value, Vec<SleepSession>)> {
    let sessions = vec((1i64..40, 0i64..300, 0i64..300), 0..3);
    (listed(segment(), 0..20, |s, m| s["state"] = json!(MODIFIED + m)), select(vec![None, Some(16), Some(32)]), sessions)
        .prop_map(|(segments, model, sessions)| {
            let mut sessions: Vec<SleepSession> = sessions
                .into_iter()
                .map(|(id, a, b)| SleepSession {
                    withings_id: id,
                    start: NIGHT + 60 * a,
                    end: NIGHT + 60 * (a + b),
                    device: None,
                    time_zone: None,
                    created: None,
                    modified: None,
                })
                .collect();
            sessions.sort_by_key(|s| (s.start, s.withings_id));
            (json!({ "series": segments, "model": model }), sessions)
        })
}

// ---------------------------------------------------------------------------------------------
// Independent counts from the raw JSON

/// One record per key: the greatest `modified` (absent below any value), the first on a tie.
fn winners<'a, K: Hash + Eq>(records: impl Iterator<Item = (K, &'a Value)>) -> HashMap<K, &'a Value> {
    let modified = |r: &Value| r.get("modified").and_then(Value::as_i64);
    let mut best: HashMap<K, &Value> = HashMap::new();
    for (k, r) in records {
        let kept = best.entry(k).or_insert(r);
        if modified(r) > modified(kept) {
            *kept = r;
        }
    }
    best
}

/// Whether no field of an object outside `text` holds a string (the generators' only
/// malformed values); true for what is not an object.
fn numbers_only(v: &Value, text: &[&str]) -> bool {
    v.as_object().is_none_or(|o| o.iter().all(|(k, x)| text.contains(&k.as_str()) || !x.is_string()))
}

/// A window `[startdate, enddate]` that exists and does not run backwards.
fn valid_window(r: &Value) -> bool {
    matches!((r["startdate"].as_i64(), r["enddate"].as_i64()), (Some(a), Some(b)) if b >= a)
}

fn distinct<T: Hash + Eq>(items: impl Iterator<Item = T>) -> usize {
    items.collect::<HashSet<_>>().len()
}

// ---------------------------------------------------------------------------------------------
// Shared checks

/// Tables fed, sample accounting, and every batch's contents.
fn check(h: &Harmonized, feeds: &[Resource], samples_in: usize) {
    let st = &h.stats;
    assert_eq!(st.samples_in, samples_in, "{}: samples_in differs from the raw JSON's count: {st:?}", h.endpoint);
    assert_eq!(st.samples_in, st.mapped + st.quarantined + st.unmapped_total(), "{}: samples not conserved", h.endpoint);
    let mut expected = feeds.to_vec();
    expected.sort();
    assert_eq!(h.tables.keys().copied().collect::<Vec<_>>(), expected, "{}: one batch per resource fed", h.endpoint);
    for (r, batch) in &h.tables {
        check_batch(*r, batch);
    }
}

/// Schema equality, non-null columns, finite floats, time order and unique primary keys.
fn check_batch(r: Resource, b: &RecordBatch) {
    let schema = r.schema();
    assert_eq!(b.schema(), schema.arrow(), "{r}: batch schema differs from schemas/{r}.json");
    for (field, col) in b.schema().fields().iter().zip(b.columns()) {
        assert!(field.is_nullable() || col.null_count() == 0, "{r}.{}: nulls in a non-nullable column", field.name());
        if let Some(f) = col.as_primitive_opt::<Float64Type>() {
            assert!(f.iter().flatten().all(f64::is_finite), "{r}.{}: NaN or infinite value", field.name());
        }
    }
    let time = arrow::compute::cast(b.column_by_name(&schema.time_column).unwrap(), &DataType::Int64).unwrap();
    assert!(time.as_primitive::<Int64Type>().values().is_sorted(), "{r}: rows not sorted by {}", schema.time_column);
    let opts = FormatOptions::default().with_null("<null>");
    let keys: Vec<ArrayFormatter> = schema
        .primary_key
        .iter()
        .map(|k| ArrayFormatter::try_new(b.column_by_name(k).unwrap().as_ref(), &opts).unwrap())
        .collect();
    let mut seen = HashSet::new();
    for row in 0..b.num_rows() {
        let key: Vec<String> = keys.iter().map(|f| f.value(row).to_string()).collect();
        assert!(seen.insert(key.clone()), "{r}: primary key {:?} = {key:?} twice", schema.primary_key);
    }
}

fn assert_rows(h: &Harmonized, r: Resource, expected: usize) {
    assert_eq!(h.rows(r), expected, "{}: {r} rows differ from the raw JSON's count; stats {:?}", h.endpoint, h.stats);
}

// ---------------------------------------------------------------------------------------------
// Properties, one function per endpoint

fn getmeas_conserves_every_measure(body: &Value) {
    use Resource::*;
    let h = harmonize::getmeas(&ctx(), &MeasureList::from_body(body.clone()).unwrap(), &[]);
    let groups = body["measuregrps"].as_array().unwrap();
    let samples = |g: &Value| g["measures"].as_array().map_or(1, |m| m.len().max(1));
    check(&h, &[Weight, Fat, BloodPressure, Heartrate, BloodOxygen, Vo2Max, Body], groups.iter().map(samples).sum());
    // Decodable measure groups, one per grpid.
    let measures = groups.iter().filter(|g| g["category"] != 2 && g.get("measures").is_none_or(Value::is_array));
    let kept = winners(measures.filter_map(|g| Some((g["grpid"].as_i64()?, g))));
    let whole_body_weight = |m: &Value| m["type"] == 1 && (m.get("position").is_none() || m["position"] == 7);
    let weights = kept.values().filter(|g| g["measures"].as_array().is_some_and(|ms| ms.iter().any(whole_body_weight)));
    assert_rows(&h, Weight, weights.count());
    // Every measure in its class; a group repeated verbatim shares its original's fate, any other
    // group is quarantined whole (malformed, an objective, or a conflicting duplicate).
    let mut expected = [0; 3];
    for g in groups {
        let fate = match g["grpid"].as_i64().and_then(|id| kept.get(&id)) {
            Some(k) if *k == g => group_fate(g),
            _ => [0, samples(g), 0],
        };
        (0..3).for_each(|i| expected[i] += fate[i]);
    }
    let st = &h.stats;
    assert_eq!([st.mapped, st.quarantined, st.unmapped_total()], expected, "[mapped, quarantined, unmapped]: {st:?}");
}

/// [mapped, quarantined, unmapped] measures of a kept group, by the module doc: unknown codes
/// and conflicting repeats of a meastype are quarantined, known codes no table holds (and body
/// segments) unmapped, a meastype repeated with its value shares the first's fate, and a
/// blood pressure needs both 9 and 10.
fn group_fate(g: &Value) -> [usize; 3] {
    let ms = g["measures"].as_array().map_or(&[][..], Vec::as_slice);
    if ms.is_empty() {
        return [0, 0, 1];
    }
    let exact = |m: &Value| i128::from(m["value"].as_i64().unwrap()) * 10i128.pow((m["unit"].as_i64().unwrap() + 5) as u32);
    let (mut first, mut pressure, mut fate) = (HashMap::new(), Vec::new(), [0; 3]);
    for m in ms {
        let t = m["type"].as_i64().unwrap();
        let segment = BODY.contains(&t) && m.get("position").is_some_and(|p| *p != 7);
        let class = if KNOWN_UNMAPPED.contains(&t) || segment {
            2
        } else if !MAPPED.contains(&t) || *first.entry(t).or_insert(exact(m)) != exact(m) {
            1
        } else {
            0
        };
        match class {
            0 if t == 9 || t == 10 => pressure.push(t),
            _ => fate[class] += 1,
        }
    }
    fate[if pressure.contains(&9) && pressure.contains(&10) { 0 } else { 1 }] += pressure.len();
    fate
}

fn getactivity_keeps_one_row_per_day_and_source(records: &[Value]) {
    let items: Vec<Item<Activity>> = decode_list(json!({ "activities": records }), "activities", "getactivity").unwrap();
    let h = harmonize::getactivity(&ctx(), &items);
    check(&h, &[Resource::Activity], records.len());
    let parses = |d: &str| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok();
    let valid =
        records.iter().filter(|a| numbers_only(a, &["date", "timezone", "deviceid"]) && a["date"].as_str().is_some_and(parses));
    let keys = valid.map(|a| format!("{}/{}/{}/{}", a["date"], a["deviceid"], a["modelid"], a["brand"]));
    assert_rows(&h, Resource::Activity, distinct(keys));
}

fn getintradayactivity_maps_each_field_to_its_table(body: &Value) {
    let h = harmonize::getintradayactivity(&ctx(), &intraday_series(body.clone(), None).unwrap());
    let samples: Vec<&Value> = body["series"].as_object().unwrap().values().collect();
    check(&h, &INTRADAY.map(|(_, r)| r), samples.len());
    let decodable: Vec<&Value> = samples.into_iter().filter(|s| numbers_only(s, &["deviceid"])).collect();
    for (field, r) in INTRADAY {
        assert_rows(&h, r, decodable.iter().filter(|s| s[field].is_number()).count());
    }
    let with_mapped_field = decodable.iter().filter(|s| INTRADAY.iter().any(|(f, _)| s[f].is_number())).count();
    assert_eq!(h.stats.mapped, with_mapped_field, "samples with a mapped field are mapped: {:?}", h.stats);
    assert_eq!(h.stats.unmapped_total(), decodable.len() - with_mapped_field, "the others are unmapped: {:?}", h.stats);
}

fn sleep_getsummary_keeps_one_row_per_session(records: &[Value]) {
    let items: Vec<Item<SleepSummary>> = decode_list(json!({ "series": records }), "series", "sleep_getsummary").unwrap();
    let h = harmonize::sleep_getsummary(&ctx(), &items);
    check(&h, &[Resource::Sleep], records.len());
    let valid = records.iter().filter(|s| s["id"].is_i64() && numbers_only(&s["data"], &[]) && valid_window(s));
    assert_rows(&h, Resource::Sleep, distinct(valid.map(|s| s["id"].as_i64())));
}

fn getworkouts_keeps_one_row_per_workout(records: &[Value]) {
    let items: Vec<Item<Workout>> = decode_list(json!({ "series": records }), "series", "getworkouts").unwrap();
    let h = harmonize::getworkouts(&ctx(), &items);
    check(&h, &[Resource::Workouts], records.len());
    let valid = records.iter().filter(|w| w["id"].is_i64() && numbers_only(&w["data"], &[]) && valid_window(w));
    let kept = winners(valid.map(|w| (w["id"].as_i64(), w)));
    assert_rows(&h, Resource::Workouts, kept.len());
    let unknown = kept.values().filter(|w| w["category"].as_i64().is_some_and(|c| codes::workout_category(c).is_none()));
    assert_eq!(h.stats.unknown_codes.values().sum::<usize>(), unknown.count(), "unknown categories, once per row");
}

fn sleep_get_conserves_segments_and_points(body: &Value, sessions: &[SleepSession]) {
    use Resource::*;
    let h = harmonize::sleep_get(&ctx(), &SleepGet::from_body(body.clone()).unwrap(), sessions);
    // A segment repeated verbatim (two overlapping requests) is one segment.
    let mut segments: Vec<&Value> = Vec::new();
    for s in body["series"].as_array().unwrap() {
        if !segments.contains(&s) {
            segments.push(s);
        }
    }
    let points = |s: &Value| SLEEP_SERIES.iter().filter_map(|k| s[k].as_object()).map(Map::len).sum::<usize>();
    check(
        &h,
        &[Hypnogram, SleepCycle, SleepStream, Heartrate, Hrv, RespiratoryRate],
        segments.iter().map(|s| 1 + points(s)).sum(),
    );
    segments.retain(|s| valid_window(s) && SLEEP_SERIES.iter().all(|k| numbers_only(&s[k], &[])));
    // Hypnogram: segments with a known state, the first of each device and start.
    let known = segments.iter().filter(|s| s["state"].as_i64().is_some_and(|x| KNOWN_SLEEP_STATES.contains(&x)));
    let stages = distinct(known.map(|s| (s["hash_deviceid"].to_string(), s["startdate"].as_i64())));
    assert_rows(&h, Hypnogram, stages);
    // sleep_stream: a stage row per hypnogram row, a row per (metric, device, epoch) of the series.
    let mut series_points = HashSet::new();
    for s in &segments {
        for k in SLEEP_SERIES {
            series_points
                .extend(s[k].as_object().into_iter().flat_map(Map::keys).map(|t| (k, s["hash_deviceid"].to_string(), t)));
        }
    }
    assert_rows(&h, SleepStream, stages + series_points.len());
}

proptest! {
    // No regression files (a failure prints its minimal input); shrink far enough to read it.
    #![proptest_config(ProptestConfig { failure_persistence: None, max_shrink_iters: 4096, ..ProptestConfig::with_cases(64) })]

    #[test]
    fn getmeas_props(body in getmeas_body()) {
        getmeas_conserves_every_measure(&body);
    }

    #[test]
    fn getactivity_props(records in listed(activity(), 0..30, |a, m| a["modified"] = json!(MODIFIED + m))) {
        getactivity_keeps_one_row_per_day_and_source(&records);
    }

    #[test]
    fn getintradayactivity_props(body in intraday_body()) {
        getintradayactivity_maps_each_field_to_its_table(&body);
    }

    #[test]
    fn sleep_getsummary_props(records in listed(sleep_summary(), 0..30, |s, m| s["modified"] = json!(MODIFIED + m))) {
        sleep_getsummary_keeps_one_row_per_session(&records);
    }

    #[test]
    fn getworkouts_props(records in listed(workout(), 0..30, |w, m| {
        w["modified"] = json!(MODIFIED + m);
        w["category"] = json!(9000 + m);
    })) {
        getworkouts_keeps_one_row_per_workout(&records);
    }

    #[test]
    fn sleep_get_props((body, sessions) in sleep_get_body()) {
        sleep_get_conserves_segments_and_points(&body, &sessions);
    }
}
