//! Every recorded real Withings response in `shared/fixtures/withings-real/` that has a
//! harmonizer, harmonized and checked against expectations this module derives from the raw
//! JSON itself with serde_json. The library's decoders only feed the entry points; every
//! expected count and value (rows per resource, scaled measures, sleep stages, duplicates,
//! sample totals) is re-derived here from the raw file, never through the library's mapping.
//!
//! For every file: each batch has its schema file's Arrow schema; every UTC timestamp (except
//! the context's `ingested_at`) lies within the epochs of the raw input (an interval `end` may
//! pass the last one by a day); rows are sorted by the time column; primary keys are unique;
//! Float64 cells are finite; `source_type` is in the schema's vocabulary; and
//! `samples_in == mapped + quarantined + unmapped`, with `samples_in` counted from the raw JSON.
//!
//! Per endpoint: getmeas row counts per resource, exact weight/fat/pulse/blood-pressure values
//! by grpid, plausible ranges, `manual` for attrib 2/4 and `ambiguous` for attrib 1; activity
//! steps and intensity minutes; workouts' sport slugs and categories; sleep summaries'
//! durations, type, efficiency and calendar date; sleep get's hypnogram stages, session links,
//! and stream/heart rate/respiratory rate/HRV point counts net of repeated points.
//!
//! `device.json`, `new_device.json`, `goals*.json`, `no_goals.json` and `notify_*.json` are not
//! read: getdevice, getgoals and notify feed no harmonized table.

use std::collections::{BTreeMap, HashMap, HashSet};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Date32Type, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::Value;
use withings_lake::harmonize::{self, Harmonized, QuarantineReason, SleepSession, codes};
use withings_lake::schema::Resource;
use withings_lake::withings::types::{Activity, Item, SleepSummary, Workout};
use withings_lake::withings::{MeasureList, SleepGet, decode_list};

use crate::common::real_fixture;
use crate::harmonize_golden::ctx;

const SOURCE_TYPES: [&str; 8] = ["scale", "cuff", "watch", "sleep_mat", "phone", "thermometer", "manual", "unknown"];
const SERIES: [&str; 10] = [
    "hr",
    "rr",
    "snoring",
    "sdnn_1",
    "rmssd",
    "hrv_quality",
    "mvt_score",
    "chest_movement_rate",
    "withings_index",
    "breathing_sounds",
];
const EPOCH_KEYS: [&str; 5] = ["date", "created", "modified", "startdate", "enddate"];
const BODY_TYPES: [i64; 12] = [1, 5, 6, 8, 76, 77, 88, 168, 169, 170, 226, 227];

/// Column `name` of `b`, one text per row ("" for null).
fn text(b: &RecordBatch, name: &str) -> Vec<String> {
    let col = b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
    let f = ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default()).unwrap();
    (0..b.num_rows()).map(|r| f.value(r).to_string()).collect()
}

fn f64s(b: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    b.column_by_name(name).unwrap().as_primitive::<Float64Type>().iter().collect()
}

fn i64s(b: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    b.column_by_name(name).unwrap().as_primitive::<Int64Type>().iter().collect()
}

/// A timestamp column in epoch seconds.
fn secs(b: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    b.column_by_name(name).unwrap().as_primitive::<TimestampMicrosecondType>().iter().map(|t| t.map(|t| t / 1_000_000)).collect()
}

/// Every epoch the raw JSON carries: the `EPOCH_KEYS` integers and the keys of sleep series.
fn epochs(v: &Value, out: &mut Vec<i64>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| epochs(x, out)),
        Value::Object(o) => {
            for (k, x) in o {
                if let (true, Some(t)) = (EPOCH_KEYS.contains(&k.as_str()), x.as_i64()) {
                    out.push(t);
                }
                if let (true, Some(s)) = (SERIES.contains(&k.as_str()), x.as_object()) {
                    out.extend(s.keys().map(|t| t.parse::<i64>().unwrap()));
                }
                epochs(x, out);
            }
        }
        _ => {}
    }
}

/// The invariants every harmonized file keeps (module doc).
fn check_common(file: &str, raw: &Value, h: &Harmonized, samples_in: usize) {
    let st = &h.stats;
    assert_eq!(st.samples_in, samples_in, "{file}: samples_in differs from the raw count");
    assert_eq!(st.samples_in, st.mapped + st.quarantined + st.unmapped_total(), "{file}: samples not conserved: {st:?}");
    let mut all = Vec::new();
    epochs(raw, &mut all);
    let (lo, hi) = (*all.iter().min().unwrap(), *all.iter().max().unwrap());
    for (r, b) in &h.tables {
        let schema = r.schema();
        assert_eq!(b.schema(), schema.arrow(), "{file}: {r} schema differs from schemas/{r}.json");
        for (field, col) in b.schema().fields().iter().zip(b.columns()) {
            match field.data_type() {
                DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if &**tz == "UTC" && field.name() != "ingested_at" => {
                    let slack = if field.name() == "end" { 86_400 } else { 0 };
                    for t in col.as_primitive::<TimestampMicrosecondType>().iter().flatten() {
                        let ok = t % 1_000_000 == 0 && (lo..=hi + slack).contains(&(t / 1_000_000));
                        assert!(ok, "{file}: {r}.{} = {t} us is outside the raw epochs [{lo}, {hi}]", field.name());
                    }
                }
                DataType::Float64 => {
                    let bad = col.as_primitive::<Float64Type>().iter().flatten().find(|v| !v.is_finite());
                    assert!(bad.is_none(), "{file}: {r}.{} holds {bad:?}", field.name());
                }
                _ => {}
            }
        }
        let time = b.column_by_name(&schema.time_column).unwrap();
        let keys: Vec<i64> = match time.data_type() {
            DataType::Date32 => time.as_primitive::<Date32Type>().values().iter().map(|d| i64::from(*d)).collect(),
            _ => time.as_primitive::<TimestampMicrosecondType>().values().to_vec(),
        };
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "{file}: {r} is not sorted by {}", schema.time_column);
        let pk: Vec<Vec<String>> = schema.primary_key.iter().map(|c| text(b, c)).collect();
        let mut seen = HashSet::new();
        for row in 0..b.num_rows() {
            let key = pk.iter().map(|c| c[row].as_str()).collect::<Vec<_>>().join("|");
            assert!(seen.insert(key.clone()), "{file}: {r} primary key {key} twice");
        }
        for s in text(b, "source_type") {
            assert!(SOURCE_TYPES.contains(&s.as_str()), "{file}: {r} source_type {s}");
        }
    }
}

fn int(v: &Value, key: &str) -> i64 {
    v[key].as_i64().unwrap_or_else(|| panic!("{key} is not an integer in {v}"))
}

/// `value * 10^unit` of a raw measure.
fn scaled(m: &Value) -> f64 {
    let (v, u) = (int(m, "value"), int(m, "unit"));
    if u < 0 { v as f64 / 10f64.powi(-u as i32) } else { v as f64 * 10f64.powi(u as i32) }
}

/// The whole-body measures (no position, or position 7) of a group.
fn whole_body(g: &Value) -> impl Iterator<Item = &Value> {
    g["measures"].as_array().unwrap().iter().filter(|m| m["position"].as_i64().is_none_or(|p| p == 7))
}

fn value_of(g: &Value, meastype: i64) -> Option<f64> {
    whole_body(g).find(|m| int(m, "type") == meastype).map(scaled)
}

#[test]
fn real_getmeas_files_match_the_raw_groups() {
    for file in ["measurement.json", "measurement_list.json", "measurement_list_2.json", "measurement_positions.json"] {
        let Some(raw) = real_fixture(file) else { return };
        let body = if raw.is_array() { raw.clone() } else { raw["body"].clone() };
        let h = harmonize::getmeas(&ctx(), &MeasureList::from_body(body.clone()).unwrap(), &[]);
        let groups = body.as_array().or(body["measuregrps"].as_array()).unwrap();
        let samples = groups.iter().map(|g| g["measures"].as_array().unwrap().len().max(1)).sum();
        check_common(file, &raw, &h, samples);

        // Measures (category 1), one group per grpid: the last modified, the first on a tie.
        let mut kept: BTreeMap<i64, &Value> = BTreeMap::new();
        for g in groups.iter().filter(|g| g["category"].as_i64() != Some(2)) {
            match kept.get(&int(g, "grpid")) {
                Some(k) if k["modified"].as_i64() >= g["modified"].as_i64() => {}
                _ => _ = kept.insert(int(g, "grpid"), g),
            }
        }
        let has = |g: &Value, t: i64| whole_body(g).any(|m| int(m, "type") == t);
        let count = |f: &dyn Fn(&Value) -> bool| kept.values().filter(|g| f(g)).count();
        let pulses: Vec<usize> = kept.values().map(|g| whole_body(g).filter(|m| int(m, "type") == 11).count()).collect();
        assert!(pulses.iter().all(|n| *n <= 1), "{file}: a group with two pulses");
        let expected = [
            (Resource::Weight, count(&|g| has(g, 1))),
            (Resource::Fat, count(&|g| has(g, 6))),
            (Resource::BloodPressure, count(&|g| has(g, 9) && has(g, 10))),
            (Resource::Heartrate, pulses.iter().sum()),
            (Resource::BloodOxygen, count(&|g| has(g, 54))),
            (Resource::Vo2Max, count(&|g| has(g, 123))),
            // A height-only group is a body row too (it carries the height BMI needs).
            (Resource::Body, count(&|g| BODY_TYPES.iter().chain(&[4]).any(|t| has(g, *t)))),
        ];
        for (r, n) in expected {
            assert_eq!(h.rows(r), n, "{file}: {r} rows");
        }
        let objectives = h.quarantine.iter().filter(|q| q.reason == QuarantineReason::Objective).count();
        assert_eq!(objectives, groups.iter().filter(|g| g["category"].as_i64() == Some(2)).count(), "{file}: objectives");

        // Values by grpid, recomputed from the integers.
        for (r, meastype) in [(Resource::Weight, 1), (Resource::Fat, 6), (Resource::Heartrate, 11), (Resource::BloodOxygen, 54)] {
            let b = &h.tables[&r];
            for (id, v) in i64s(b, "grpid").into_iter().zip(f64s(b, "value")) {
                let (id, v) = (id.unwrap(), v.unwrap());
                assert_eq!(Some(v), value_of(kept[&id], meastype), "{file}: {r} of group {id}");
                match r {
                    Resource::Weight => assert!((2.0..=400.0).contains(&v), "{file}: weight {v} kg in group {id}"),
                    Resource::Fat => assert!((0.0..=100.0).contains(&v), "{file}: fat {v} % in group {id}"),
                    _ => {}
                }
            }
        }
        let bp = &h.tables[&Resource::BloodPressure];
        let (sys, dia) = (f64s(bp, "systolic"), f64s(bp, "diastolic"));
        for (row, id) in i64s(bp, "grpid").into_iter().enumerate() {
            let g = kept[&id.unwrap()];
            assert_eq!((sys[row], dia[row]), (value_of(g, 10), value_of(g, 9)), "{file}: blood pressure of group {id:?}");
        }
        let higher = sys.iter().zip(&dia).filter(|(s, d)| s > d).count();
        assert!(higher * 100 >= bp.num_rows() * 95, "{file}: systolic > diastolic on only {higher} of {} rows", bp.num_rows());

        // Provenance and ambiguity from the group's attrib.
        for (r, b) in h.tables.iter().filter(|(_, b)| b.num_rows() > 0) {
            let (ids, kinds, ambiguous) = (i64s(b, "grpid"), text(b, "source_type"), text(b, "ambiguous"));
            for ((id, kind), amb) in ids.into_iter().zip(kinds).zip(ambiguous) {
                let attrib = kept[&id.unwrap()]["attrib"].as_i64();
                assert_eq!(kind == "manual", matches!(attrib, Some(2 | 4)), "{file}: {r} group {id:?} is {kind}");
                assert_eq!(amb == "true", attrib == Some(1), "{file}: {r} group {id:?} attrib {attrib:?} ambiguous {amb}");
            }
        }
    }
}

#[test]
fn real_activity_has_one_row_per_record() {
    let Some(raw) = real_fixture("activity.json") else { return };
    let items: Vec<Item<Activity>> = decode_list(raw["body"].clone(), "activities", "getactivity").unwrap();
    let h = harmonize::getactivity(&ctx(), &items);
    let records = raw["body"]["activities"].as_array().unwrap();
    check_common("activity.json", &raw, &h, records.len());
    let b = &h.tables[&Resource::Activity];
    assert_eq!(b.num_rows(), records.len(), "one row per activity record");
    let (dates, models, steps) = (text(b, "calendar_date"), i64s(b, "source_device_model_id"), i64s(b, "steps"));
    let minutes = [("low", "soft"), ("medium", "moderate"), ("high", "intense")].map(|(c, k)| (f64s(b, c), k));
    for a in records {
        let row = (0..b.num_rows())
            .find(|r| dates[*r] == a["date"].as_str().unwrap() && models[*r] == a["modelid"].as_i64())
            .unwrap_or_else(|| panic!("no row for {}", a["date"]));
        assert_eq!(steps[row], a["steps"].as_i64(), "steps of {}", a["date"]);
        for (col, key) in &minutes {
            assert_eq!(col[row], a[*key].as_i64().map(|s| s as f64 / 60.0), "{key} minutes of {}", a["date"]);
        }
    }
}

#[test]
fn real_workouts_keep_every_workout_and_category() {
    let Some(raw) = real_fixture("workouts.json") else { return };
    let items: Vec<Item<Workout>> = decode_list(raw["body"].clone(), "series", "getworkouts").unwrap();
    let h = harmonize::getworkouts(&ctx(), &items);
    let records = raw["body"]["series"].as_array().unwrap();
    check_common("workouts.json", &raw, &h, records.len());
    let by_id: HashMap<String, &Value> = records.iter().map(|w| (w["id"].to_string(), w)).collect();
    let b = &h.tables[&Resource::Workouts];
    assert_eq!(b.num_rows(), by_id.len(), "one row per workout id");
    let (ids, slugs, cats) = (text(b, "provider_id"), text(b, "sport_slug"), i64s(b, "withings_category"));
    let (starts, ends) = (secs(b, "time_start"), secs(b, "time_end"));
    for row in 0..b.num_rows() {
        let w = by_id[&ids[row]];
        assert!(!slugs[row].is_empty(), "workout {} has no sport slug", ids[row]);
        assert_eq!(cats[row], w["category"].as_i64(), "workout {} keeps its category", ids[row]);
        assert_eq!((starts[row], ends[row]), (w["startdate"].as_i64(), w["enddate"].as_i64()));
        match cats[row].and_then(codes::workout_category) {
            Some((slug, _)) => assert_eq!(slugs[row], slug, "workout {}", ids[row]),
            None => assert_eq!(slugs[row], "other", "workout {} of unknown category {:?}", ids[row], cats[row]),
        }
    }
}

#[test]
fn real_sleep_summaries_are_one_row_per_night() {
    for file in ["sleep_summary.json", "sleep_summary_no_datafields.json"] {
        let Some(raw) = real_fixture(file) else { return };
        let items: Vec<Item<SleepSummary>> = decode_list(raw["body"].clone(), "series", "sleep_getsummary").unwrap();
        let h = harmonize::sleep_getsummary(&ctx(), &items);
        let series = raw["body"]["series"].as_array().unwrap();
        check_common(file, &raw, &h, series.len());
        assert!(h.quarantine.is_empty(), "{file}: {:?}", h.quarantine.first().map(|q| &q.detail));
        let b = &h.tables[&Resource::Sleep];
        assert_eq!(b.num_rows(), series.len(), "{file}: one row per summary");
        let by_id: HashMap<i64, &Value> = series.iter().map(|s| (int(s, "id"), s)).collect();
        let (ids, durations, kinds, dates) =
            (i64s(b, "withings_sleep_id"), i64s(b, "duration"), text(b, "type"), text(b, "calendar_date"));
        let (starts, efficiency) = (secs(b, "bedtime_start"), f64s(b, "efficiency"));
        for row in 0..b.num_rows() {
            let s = by_id[&ids[row].unwrap()];
            let duration = int(s, "enddate") - int(s, "startdate");
            assert_eq!(durations[row], Some(duration), "{file}: duration of {}", s["id"]);
            assert_eq!(starts[row], Some(int(s, "startdate")), "{file}: bedtime_start of {}", s["id"]);
            assert_eq!(kinds[row] == "long_sleep", duration >= 10_800, "{file}: type of {} ({duration} s)", s["id"]);
            assert!(efficiency[row].is_none_or(|e| (0.0..=1.0).contains(&e)), "{file}: efficiency {:?}", efficiency[row]);
            assert_eq!(dates[row], s["date"].as_str().unwrap(), "{file}: calendar_date of {}", s["id"]);
        }
    }
}

/// Vital's stage for a Withings sleep state (reference 7.1): (state, stage).
const STAGES: [(i64, i64); 7] = [(0, 4), (1, 2), (2, 1), (3, 3), (4, 5), (5, -1), (15, 4)];

fn stage(state: i64) -> Option<i64> {
    STAGES.iter().find(|(s, _)| *s == state).map(|(_, v)| *v)
}

#[test]
fn real_sleep_get_segments_and_series_are_conserved() {
    let Some(summary) = real_fixture("sleep_summary.json") else { return };
    let nights = summary["body"]["series"].as_array().unwrap();
    for file in ["sleep.json", "sleep_no_datafields.json"] {
        let Some(raw) = real_fixture(file) else { return };
        let segments = raw["body"]["series"].as_array().unwrap();
        let (first, last) =
            (segments.iter().map(|s| int(s, "startdate")).min(), segments.iter().map(|s| int(s, "enddate")).max());
        let overlapping: Vec<&Value> =
            nights.iter().filter(|n| Some(int(n, "startdate")) <= last && Some(int(n, "enddate")) >= first).collect();
        let items: Vec<Item<SleepSummary>> = decode_list(summary["body"].clone(), "series", "sleep_getsummary").unwrap();
        let sessions = if overlapping.is_empty() { Vec::new() } else { SleepSession::from_summaries(&items) };
        let h = harmonize::sleep_get(&ctx(), &SleepGet::from_body(raw["body"].clone()).unwrap(), &sessions);

        // Expected rows: a stage per segment of known state (first per device and start); a
        // point per (device, series, epoch) seen first, however many segments repeat it.
        let (mut starts, mut points, mut total_points, mut stages) = (HashSet::new(), HashMap::<_, HashSet<_>>::new(), 0, 0);
        let mut by_start = segments.to_vec();
        by_start.sort_by_key(|s| int(s, "startdate"));
        for s in by_start.iter().filter(|s| int(s, "enddate") >= int(s, "startdate")) {
            let device = s["hash_deviceid"].as_str();
            let first_start = starts.insert((device, int(s, "startdate")));
            stages += usize::from(first_start && s["state"].as_i64().and_then(stage).is_some());
            for key in SERIES {
                for t in s[key].as_object().into_iter().flat_map(|o| o.keys()) {
                    total_points += 1;
                    points.entry(key).or_default().insert((device, t.clone()));
                }
            }
        }
        // sleep_cycle rows span their session (from getsummary): its epochs count as raw too.
        let with_sessions = serde_json::json!([raw, overlapping]);
        check_common(file, &with_sessions, &h, segments.len() + total_points);
        let quarantined_segments = h.quarantine.iter().filter(|q| q.resource == Some(Resource::Hypnogram)).count();
        assert_eq!(h.rows(Resource::Hypnogram) + quarantined_segments, segments.len(), "{file}: segments");
        assert_eq!(h.rows(Resource::Hypnogram), stages, "{file}: hypnogram rows");
        let unique: usize = points.values().map(HashSet::len).sum();
        assert_eq!(h.rows(Resource::SleepStream), stages + unique, "{file}: sleep_stream rows");
        for (r, key) in [(Resource::Heartrate, "hr"), (Resource::RespiratoryRate, "rr"), (Resource::Hrv, "rmssd")] {
            assert_eq!(h.rows(r), points.get(key).map_or(0, HashSet::len), "{file}: {r} rows");
        }

        // Each stage against its raw segment, and linked to the night whose window holds it.
        let raw_by_start: HashMap<i64, &Value> = segments.iter().map(|s| (int(s, "startdate"), s)).collect();
        let b = &h.tables[&Resource::Hypnogram];
        let (rows_start, values, states, links) =
            (secs(b, "start"), i64s(b, "value"), i64s(b, "withings_state"), i64s(b, "withings_sleep_id"));
        for row in 0..b.num_rows() {
            let start = rows_start[row].unwrap();
            let state = raw_by_start[&start]["state"].as_i64();
            assert!(values[row].is_some_and(|v| [-1, 1, 2, 3, 4, 5].contains(&v)), "{file}: stage {:?}", values[row]);
            assert_eq!((values[row], states[row]), (state.and_then(stage), state), "{file}: segment at {start}");
            let night = overlapping
                .iter()
                .filter(|n| int(n, "startdate") <= start && start <= int(n, "enddate"))
                .min_by_key(|n| (int(n, "startdate"), int(n, "id")))
                .map(|n| int(n, "id"));
            assert_eq!(links[row], night, "{file}: sleep link of the segment at {start}");
        }
    }
}
