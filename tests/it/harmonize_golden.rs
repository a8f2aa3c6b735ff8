//! Golden tests: each resource harmonized from a fixture this project wrote
//! (`fixtures/withings/<endpoint>_<scenario>.json`), compared as pretty-printed tables with
//! `tests/it/golden/<endpoint>_<scenario>.txt`.
//!
//! Wide tables of a few rows are printed transposed (one line per column, one column per row)
//! so a diff names the field. The constant columns (user, run, ingestion time, provider) are checked
//! once, not in every table. `UPDATE_GOLDEN=1 cargo test` rewrites the files; review the diff.

use std::path::PathBuf;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use arrow::util::pretty::pretty_format_batches;
use serde_json::Value;
use withings_lake::harmonize::{self, Context, Harmonized, SleepSession};
use withings_lake::schema::Resource;
use withings_lake::withings::types::{Activity, Item, SleepSummary, Workout};
use withings_lake::withings::{MeasureList, SleepGet, decode_list, intraday_series};

use crate::common::own_fixture;

/// Columns equal on every row of a call; [`constants_are_filled`] checks them.
const CONSTANT: [&str; 6] = ["user_id", "withings_user_id", "source_provider", "endpoint", "ingested_at", "run_id"];

pub fn ctx() -> Context {
    Context {
        user_id: "user-1".into(),
        withings_user_id: "31000000".into(),
        run_id: "run-golden".into(),
        ingested_at: chrono::DateTime::from_timestamp(1_718_452_800, 0).unwrap(),
        time_zone: Some("Europe/Paris".into()),
        zones: Default::default(),
    }
}

fn body(name: &str) -> Value {
    own_fixture(name)["body"].clone()
}

/// A batch without its constant columns, transposed when it is wide.
pub fn show(batch: &RecordBatch) -> String {
    let keep: Vec<usize> =
        (0..batch.num_columns()).filter(|i| !CONSTANT.contains(&batch.schema().field(*i).name().as_str())).collect();
    let b = batch.project(&keep).unwrap();
    if b.num_columns() <= 10 || b.num_rows() == 0 || b.num_rows() > 6 {
        return pretty_format_batches(&[b]).unwrap().to_string();
    }
    let opts = FormatOptions::default().with_null("");
    let formatters: Vec<ArrayFormatter> =
        b.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap()).collect();
    let mut fields = vec![Field::new("column", DataType::Utf8, false)];
    fields.extend((0..b.num_rows()).map(|r| Field::new(format!("row {r}"), DataType::Utf8, false)));
    let mut cols: Vec<Arc<dyn Array>> =
        vec![Arc::new(StringArray::from_iter_values(b.schema().fields().iter().map(|f| f.name().clone())))];
    for r in 0..b.num_rows() {
        cols.push(Arc::new(StringArray::from_iter_values(formatters.iter().map(|f| f.value(r).to_string()))));
    }
    let t = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    pretty_format_batches(&[t]).unwrap().to_string()
}

use std::sync::Arc;

/// Every table of a call, its quarantine and its counts, as one text.
fn render(h: &Harmonized) -> String {
    let mut s = String::new();
    for (r, batch) in &h.tables {
        s.push_str(&format!("## {r} ({} rows)\n{}\n", batch.num_rows(), show(batch)));
    }
    s.push_str(&format!("## quarantine ({})\n", h.quarantine.len()));
    for q in &h.quarantine {
        let resource = q.resource.map_or("-", Resource::as_str);
        s.push_str(&format!("{} {resource} {}: {}\n", q.reason.as_str(), q.detail, q.raw));
    }
    let st = &h.stats;
    s.push_str(&format!(
        "## stats\nsamples_in {} mapped {} quarantined {} unmapped {:?} unknown_codes {:?} unmapped_fields {:?}\n",
        st.samples_in, st.mapped, st.quarantined, st.unmapped, st.unknown_codes, st.unmapped_fields
    ));
    s
}

fn golden(name: &str, h: &Harmonized) {
    let actual = render(h);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/golden").join(format!("{name}.txt"));
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(8)
            .map(|(i, (e, a))| format!("line {}:\n  expected {e}\n  actual   {a}", i + 1))
            .collect();
        panic!("{name} differs from {}:\n{}\n--- actual ---\n{actual}", path.display(), diff.join("\n"));
    }
    check_invariants(h);
}

/// Schema equality with the schema file, the constants, the stats balance.
fn check_invariants(h: &Harmonized) {
    for (r, batch) in &h.tables {
        assert_eq!(batch.schema(), r.schema().arrow(), "{r}: batch schema differs from schemas/{r}.json");
    }
    let st = &h.stats;
    assert_eq!(
        st.samples_in,
        st.mapped + st.quarantined + st.unmapped_total(),
        "{}: samples are not conserved: {st:?}",
        h.endpoint
    );
}

pub fn getmeas(name: &str) -> Harmonized {
    let list = MeasureList::from_body(body(name)).unwrap();
    harmonize::getmeas(&ctx(), &list, &[])
}

#[test]
fn getmeas_feeds_weight_fat_blood_pressure_heartrate_blood_oxygen_vo2_max_and_body() {
    let h = getmeas("getmeas_scale_cuff_watch.json");
    golden("getmeas_scale_cuff_watch", &h);
    // Two groups in the same second stay two rows (keyed by grpid, never by time alone).
    let weights = h.tables[&Resource::Weight].column_by_name("grpid").unwrap().len();
    assert_eq!(weights, 4);
}

#[test]
fn getactivity_feeds_activity() {
    let items: Vec<Item<Activity>> = decode_list(body("getactivity_watch_and_phone.json"), "activities", "getactivity").unwrap();
    golden("getactivity_watch_and_phone", &harmonize::getactivity(&ctx(), &items));
}

#[test]
fn getintradayactivity_feeds_steps_distance_calories_heartrate_blood_oxygen_hrv_and_respiratory_rate() {
    let series = intraday_series(body("getintradayactivity_watch_vitals.json"), None).unwrap();
    golden("getintradayactivity_watch_vitals", &harmonize::getintradayactivity(&ctx(), &series));
}

fn summaries() -> Vec<Item<SleepSummary>> {
    decode_list(body("sleep_getsummary_night_and_nap.json"), "series", "sleep_getsummary").unwrap()
}

#[test]
fn sleep_getsummary_feeds_sleep() {
    golden("sleep_getsummary_night_and_nap", &harmonize::sleep_getsummary(&ctx(), &summaries()));
}

#[test]
fn sleep_get_feeds_hypnogram_sleep_stream_heartrate_hrv_and_respiratory_rate() {
    let answer = SleepGet::from_body(body("sleep_get_mat_night.json")).unwrap();
    let sessions = SleepSession::from_summaries(&summaries());
    let h = harmonize::sleep_get(&ctx(), &answer, &sessions);
    golden("sleep_get_mat_night", &h);
    // The stream links to the sleep row of the same night by its id.
    let sleep = harmonize::sleep_getsummary(&ctx(), &summaries());
    let night_id = sleep.tables[&Resource::Sleep]
        .column_by_name("id")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .value(0)
        .to_string();
    let stream = &h.tables[&Resource::SleepStream];
    let ids = stream.column_by_name("sleep_id").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
    assert!(ids.iter().flatten().all(|id| id == night_id), "every linked sample names the night's sleep row");
    assert_eq!(ids.null_count(), 2, "the stage and hr of the segment outside every session stay unlinked");
}

#[test]
fn getworkouts_feeds_workouts() {
    let items: Vec<Item<Workout>> = decode_list(body("getworkouts_run_swim_unknown.json"), "series", "getworkouts").unwrap();
    golden("getworkouts_run_swim_unknown", &harmonize::getworkouts(&ctx(), &items));
}

#[test]
fn constants_are_filled_on_every_row() {
    let h = getmeas("getmeas_scale_cuff_watch.json");
    let b = &h.tables[&Resource::Body];
    let s = show(b);
    assert!(!s.contains("user-1"), "constants are left out of goldens");
    let fmt = |c: &str| {
        let a = b.column_by_name(c).unwrap();
        let f = ArrayFormatter::try_new(a.as_ref(), &FormatOptions::default()).unwrap();
        (0..b.num_rows()).map(|r| f.value(r).to_string()).collect::<Vec<_>>()
    };
    assert!(fmt("user_id").iter().all(|v| v == "user-1"));
    assert!(fmt("withings_user_id").iter().all(|v| v == "31000000"));
    assert!(fmt("source_provider").iter().all(|v| v == "withings"));
    assert!(fmt("endpoint").iter().all(|v| v == "getmeas"));
    assert!(fmt("run_id").iter().all(|v| v == "run-golden"));
    assert!(fmt("ingested_at").iter().all(|v| v == "2024-06-15T12:00:00Z"), "{:?}", fmt("ingested_at"));
    let q = h.quarantine_batch(&ctx());
    assert_eq!(q.num_rows(), h.quarantine.len());
    assert_eq!(q.schema(), harmonize::quarantine_schema());
}

/// A traveller (`*_traveller.json`): New York -> London on 2026-01-11 (the 10th, flown east,
/// lasts 19 hours), London -> New York on 2026-01-21 (the 20th, flown west, lasts 29 hours),
/// New York -> London on 2026-03-29, the day London springs forward. Intraday samples every
/// 2 hours from each local midnight, weigh-ins at 07:30 local; the getmeas answer carries only
/// the current zone (London). Every sample takes the zone of its local day, so the local date
/// of `start + timezone_offset` sums to each day's activity steps.
#[test]
fn a_traveller_s_samples_take_the_zone_of_their_local_day() {
    use arrow::array::{AsArray, Float64Array};
    use arrow::datatypes::{Int32Type, TimestampMicrosecondType};
    use std::collections::BTreeMap;
    use withings_lake::harmonize::{Evidence, ZoneTimeline};

    let activity: Vec<Item<Activity>> = decode_list(body("getactivity_traveller.json"), "activities", "getactivity").unwrap();
    let mut zones = ZoneTimeline::default();
    for a in activity.iter().map(|i| i.value.as_ref().unwrap()) {
        zones.observe(a.date.parse().unwrap(), a.timezone.as_deref().unwrap(), Evidence::Wearable);
    }
    let ctx = Context { time_zone: Some("Europe/London".into()), zones: Arc::new(zones), ..ctx() };
    let series = intraday_series(body("getintradayactivity_traveller.json"), None).unwrap();
    let intraday = harmonize::getintradayactivity(&ctx, &series);
    let list = MeasureList::from_body(body("getmeas_traveller.json")).unwrap();
    let getmeas = harmonize::getmeas(&ctx, &list, &[]);

    // start | local wall clock | time_zone | timezone_offset | value, one line per row.
    let lines = |b: &RecordBatch, time: &str| -> Vec<(String, chrono::NaiveDate, f64)> {
        let t = b.column_by_name(time).unwrap().as_primitive::<TimestampMicrosecondType>();
        let z = b.column_by_name("time_zone").unwrap().as_string::<i32>();
        let o = b.column_by_name("timezone_offset").unwrap().as_primitive::<Int32Type>();
        let v = b.column_by_name("value").unwrap().as_any().downcast_ref::<Float64Array>().unwrap();
        (0..b.num_rows())
            .map(|i| {
                let at = chrono::DateTime::from_timestamp_micros(t.value(i)).unwrap();
                let local = at.naive_utc() + chrono::Duration::seconds(i64::from(o.value(i)));
                let line = format!(
                    "{} | {} | {:<16} | {:>6} | {}",
                    at.format("%Y-%m-%dT%H:%MZ"),
                    local.format("%a %Y-%m-%d %H:%M"),
                    z.value(i),
                    o.value(i),
                    v.value(i)
                );
                (line, local.date(), v.value(i))
            })
            .collect()
    };
    let steps = lines(&intraday.tables[&Resource::Steps], "start");
    let weights = lines(&getmeas.tables[&Resource::Weight], "timestamp");
    let mut text = String::from("## steps: start | local | time_zone | timezone_offset | value\n");
    for (l, _, _) in &steps {
        text.push_str(l);
        text.push('\n');
    }
    text.push_str("## weight: timestamp | local | time_zone | timezone_offset | value\n");
    for (l, _, _) in &weights {
        text.push_str(l);
        text.push('\n');
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/golden/traveller.txt");
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &text).unwrap();
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(expected == text, "traveller differs from {}:\n{text}", path.display());

    // The local-day sums equal each day's activity steps; the 19- and 29-hour days included.
    let mut sums: BTreeMap<chrono::NaiveDate, f64> = BTreeMap::new();
    for (_, day, v) in &steps {
        *sums.entry(*day).or_default() += v;
    }
    let daily: BTreeMap<chrono::NaiveDate, f64> =
        activity.iter().map(|i| i.value.as_ref().unwrap()).map(|a| (a.date.parse().unwrap(), a.steps.unwrap() as f64)).collect();
    assert_eq!(sums, daily, "local-day sums of steps against activity steps");
    // Every weigh-in reads 07:30 on its local clock but the one before the flight east.
    let local_times: Vec<&str> = weights.iter().map(|(l, _, _)| l.split(" | ").nth(1).unwrap()).collect();
    assert_eq!(local_times.iter().filter(|t| t.ends_with("07:30")).count(), 12, "{local_times:?}");
    assert!(weights.iter().any(|(l, _, _)| l.contains("Sat 2026-01-10 18:45 | America/New_York")), "{text}");
}

/// The change events of every golden fixture's rows (as created), a historical event and both
/// connection events, compared with `tests/it/golden/events.jsonl` (one pretty envelope per
/// event): the shapes a webhook handler receives, reviewable in a diff. Also run through
/// Vital's SDK models when python3 has `vital`.
#[test]
fn the_events_of_the_golden_rows_match_their_golden_file() {
    use withings_lake::events::{Builder, EventsConfig};
    use withings_lake::lake::{Changed, TableId};

    let activity: Vec<Item<Activity>> =
        decode_list(body("getactivity_watch_and_phone.json"), "activities", "getactivity").unwrap();
    let workouts: Vec<Item<Workout>> = decode_list(body("getworkouts_run_swim_unknown.json"), "series", "getworkouts").unwrap();
    let answer = SleepGet::from_body(body("sleep_get_mat_night.json")).unwrap();
    let sessions = SleepSession::from_summaries(&summaries());
    let calls = [
        getmeas("getmeas_scale_cuff_watch.json"),
        harmonize::getactivity(&ctx(), &activity),
        harmonize::getintradayactivity(&ctx(), &intraday_series(body("getintradayactivity_watch_vitals.json"), None).unwrap()),
        harmonize::sleep_getsummary(&ctx(), &summaries()),
        harmonize::sleep_get(&ctx(), &answer, &sessions),
        harmonize::getworkouts(&ctx(), &workouts),
    ];
    let mut changes: Vec<(TableId, Changed)> = Vec::new();
    for h in &calls {
        for (r, batch) in &h.tables {
            if batch.num_rows() > 0 {
                changes.push(((*r).into(), Changed { rows: batch.clone(), updated: vec![false; batch.num_rows()] }));
            }
        }
    }
    let at = chrono::DateTime::from_timestamp(1_718_452_800, 0).unwrap();
    let cfg = EventsConfig {
        team_id: "team-golden".into(),
        max_samples_per_event: 3,
        sleep_stream_events: true,
        ..EventsConfig::default()
    };
    let mut b = Builder::new("20240615T120000000Z-golden", at, &cfg)
        .with_vital_ids([("user-1".to_string(), "0b4a2a3e-5c1d-4f8e-9a6b-2f3c4d5e6f70".to_string())].into());
    b.daily(&changes).unwrap();
    b.historical("user-1", Resource::Weight, at - chrono::Duration::days(30), at);
    b.connection_created("user-1", "31000000", &["user.metrics".into(), "user.activity".into()]);
    b.connection_error(
        "user-1",
        "token_refresh_failed",
        "Withings refused the refresh token",
        "the user must link their Withings account again",
    );
    let mut text = String::new();
    for e in b.finish() {
        let v: Value = serde_json::from_str(&e.body).unwrap();
        text.push_str(&serde_json::to_string_pretty(&v).unwrap());
        text.push('\n');
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/golden/events.json");
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &text).unwrap();
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(expected == text, "events differ from {} (UPDATE_GOLDEN=1 rewrites it; review the diff)", path.display());

    if crate::common::vital_available() {
        // One envelope per line for the checker.
        let lines: String = text
            .split("\n}\n")
            .filter(|c| !c.trim().is_empty())
            .map(|c| serde_json::to_string(&serde_json::from_str::<Value>(&format!("{c}\n}}")).unwrap()).unwrap() + "\n")
            .collect();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("events.jsonl"), lines).unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vital/check_events.py");
        let out = std::process::Command::new("python3").arg(script).arg(dir.path()).output().unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["invalid"], 0, "{report:#}");
        assert!(out.status.success(), "{report:#}");
    }
}
