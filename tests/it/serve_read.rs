//! The read side of Vital's REST API (`serve::read`) on a lake a backfill against the
//! simulator built: summaries are the rows `query` shows for the user and window (and the
//! objects events carry), grouped time series page without gap or duplicate and refuse a
//! cursor altered or made for another query, bad parameters get Vital's statuses and bodies,
//! only the user's shard and the window's partitions are opened, and Vital's own SDK parses
//! every answer (`tests/vital/check_reads.py`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::Value;
use withings_lake::events::{Builder, EventsConfig};
use withings_lake::lake::{Changed, Lake, TableId};
use withings_lake::schema::Resource;
use withings_lake::serve::read::{ReadLimits, ReadQuery, Reader, Who, series_names, summary_kinds};
use withings_lake::sync::{Engine, Mode, SyncConfig};

use crate::common::{self, NOW, ymd};
use crate::sync::{client, d, lake_at, link, run, spec};

const KEY: [u8; 32] = [7; 32];
const VITAL: &str = "5e0f2c1a-7b3d-4e9f-a1c2-d3e4f5a6b7c8";
const WHO: Who<'static> = Who { user_id: "user-0", vital_user_id: VITAL };

/// A simulator, two users backfilled over 14 days into a lake of `shards` shards.
struct World {
    _sim: common::Sim,
    dir: tempfile::TempDir,
    lake: Lake,
}

async fn world(shards: u32) -> World {
    let sim = common::start(2, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let store = link(&sim, &dir.path().join("creds"), 2).await;
    let lake = lake_at(&dir.path().join("lake"), shards).await;
    let engine = Engine::new(lake.clone(), client(&sim, 0), store, SyncConfig::default());
    // Shard by shard, as `sync::shards_split_users...` does: a run over every shard of a
    // multi-shard lake names two checkpoints alike (ManifestExists), a bug of the engine.
    let mut ok = 0;
    for i in 0..shards {
        let mut s = spec(Mode::Backfill { from: d(14), to: d(0) }, NOW);
        s.shard = Some((i, shards));
        let r = run(&engine, &s).await;
        assert_eq!(r.users.failed, 0, "{}", r.to_text());
        ok += r.users.ok;
    }
    assert_eq!(ok, 2);
    World { _sim: sim, dir, lake }
}

fn reader(lake: &Lake, page_size: usize) -> Reader {
    Reader::new(lake.clone(), KEY, ReadLimits { max_window_days: 31, page_size })
}

fn q(start: &str, end: Option<&str>) -> ReadQuery {
    ReadQuery { start_date: Some(start.into()), end_date: end.map(String::from), ..ReadQuery::default() }
}

/// Rows of a SQL query as lines of `|`-joined values.
async fn sql_lines(lake: &Lake, query: &str) -> Vec<String> {
    let ctx = withings_lake::query_session(lake).await.unwrap();
    let batches = withings_lake::query_sql(&ctx, query).await.unwrap();
    let fmt = arrow::util::display::FormatOptions::default().with_null("null");
    let mut out = Vec::new();
    for b in batches {
        let cols: Vec<_> =
            b.columns().iter().map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &fmt).unwrap()).collect();
        for r in 0..b.num_rows() {
            out.push(cols.iter().map(|c| c.value(r).to_string()).collect::<Vec<_>>().join("|"));
        }
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every (source, sample) of the pages of a grouped read, walking `next_cursor`.
async fn walk(reader: &Reader, who: Who<'_>, resource: &str, query: &ReadQuery) -> (Vec<(Value, Value)>, usize) {
    let mut out = Vec::new();
    let mut query = query.clone();
    let mut pages = 0;
    loop {
        let page = reader.grouped(who, resource, &query).await.unwrap_or_else(|e| panic!("{resource} page {pages}: {e}"));
        pages += 1;
        assert_eq!(page["next"], page["next_cursor"], "the deprecated `next` repeats `next_cursor`");
        // A page groups its samples by source; within the page, back in time order.
        let mut items = Vec::new();
        if let Some(groups) = page["groups"].get("withings") {
            for g in groups.as_array().unwrap() {
                for s in g["data"].as_array().unwrap() {
                    items.push((g["source"].clone(), s.clone()));
                }
            }
        }
        items.sort_by_cached_key(|(_, s)| text(&s["timestamp"]));
        out.extend(items);
        match page["next_cursor"].as_str() {
            Some(c) => query.next_cursor = Some(c.to_string()),
            None => return (out, pages),
        }
        assert!(pages < 10_000, "{resource}: the walk does not end");
    }
}

/// The SQL time column of a series.
fn time_of(resource: Resource) -> &'static str {
    if resource.schema().time_column == "start" { "start" } else { "timestamp" }
}

/// Summaries and series read back from a backfilled lake: the summaries are the rows `query`
/// shows for the user and window, in order, with Vital's user id, and equal the objects the
/// change events of those rows carry; the pages of a grouped series (7 samples each) add up
/// to the whole series and to `query`'s rows, and equal the events' samples and sources; a
/// cursor altered, cut or made for another user, series, window or key is refused; Vital's
/// SDK parses every answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_the_lake_s_rows_as_events_carry_them_paged_without_gap_and_parsed_by_vital_s_sdk() {
    let w = world(1).await;
    let (start, end) = (ymd(10), ymd(0));
    let all = reader(&w.lake, 1_000_000);
    let mut answers: Vec<Value> = Vec::new();

    // Events of the same rows (as if created), for comparison.
    let events = |resource: Resource, rows: arrow::array::RecordBatch| {
        let mut b = Builder::new("b", chrono::Utc::now(), &EventsConfig::default())
            .with_vital_ids(HashMap::from([("user-0".to_string(), VITAL.to_string())]));
        let n = rows.num_rows();
        b.daily(&[(TableId::Resource(resource), Changed { rows, updated: vec![false; n] })]).unwrap();
        b.finish().into_iter().map(|e| serde_json::from_str::<Value>(&e.body).unwrap()["data"].clone()).collect::<Vec<_>>()
    };

    for (kind, resource, field) in [
        ("activity", Resource::Activity, "steps"),
        ("sleep", Resource::Sleep, "duration"),
        ("body", Resource::Body, "weight"),
        ("workouts", Resource::Workouts, "provider_id"),
        ("sleep_cycle", Resource::SleepCycle, "sleep_id"),
    ] {
        let got = all.summary(WHO, kind, &q(&start, Some(&end))).await.unwrap();
        let objects = got[kind].as_array().unwrap_or_else(|| panic!("{kind}: {got}"));
        let time = &resource.schema().time_column;
        let filter = format!("user_id = 'user-0' AND calendar_date BETWEEN DATE '{start}' AND DATE '{end}'");
        let want =
            sql_lines(&w.lake, &format!("SELECT id, calendar_date, {field} FROM {kind} WHERE {filter} ORDER BY {time}, id"))
                .await;
        assert!(!want.is_empty() || kind == "sleep_cycle", "{kind}: the backfill made rows in the window");
        let have: Vec<String> =
            objects.iter().map(|o| format!("{}|{}|{}", text(&o["id"]), text(&o["calendar_date"]), text(&o[field]))).collect();
        assert_eq!(have, want, "{kind}: the objects are the rows query shows, in order");
        assert!(objects.iter().all(|o| o["user_id"] == VITAL && o["source"]["provider"] == "withings"), "{kind}");
        // Exactly what the events of those rows carry.
        let ctx = withings_lake::query_session(&w.lake).await.unwrap();
        let cols = resource.schema().columns.iter().map(|c| format!("\"{}\"", c.name)).collect::<Vec<_>>().join(", ");
        let rows = withings_lake::query_sql(&ctx, &format!("SELECT {cols} FROM {kind} WHERE {filter}")).await.unwrap();
        let rows = arrow::compute::concat_batches(&resource.schema().arrow(), &rows).unwrap();
        let mut from_events: BTreeMap<String, Value> = BTreeMap::new();
        for o in events(resource, rows) {
            from_events.insert(text(&o["id"]), o);
        }
        // Through JSON text, as the events were (serde_json's float parsing may move the last digit).
        let read: BTreeMap<String, Value> =
            objects.iter().map(|o| (text(&o["id"]), serde_json::from_str(&o.to_string()).unwrap())).collect();
        assert_eq!(read.keys().collect::<Vec<_>>(), from_events.keys().collect::<Vec<_>>(), "{kind}: the same objects");
        for (id, o) in &read {
            let e = from_events[id].as_object().unwrap();
            let diff: Vec<String> = o
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, v)| e.get(*k) != Some(*v))
                .map(|(k, v)| format!("{k}: read {v}, event {:?}", e.get(k)))
                .chain(e.keys().filter(|k| !o.as_object().unwrap().contains_key(*k)).map(|k| format!("{k}: only in the event")))
                .collect();
            assert!(diff.is_empty(), "{kind} {id}: read objects equal the events' objects: {diff:?}");
        }
        // Another provider has nothing; `withings` and "" have the same.
        let mut other = q(&start, Some(&end));
        other.provider = Some("oura".into());
        assert_eq!(all.summary(WHO, kind, &other).await.unwrap()[kind], serde_json::json!([]));
        other.provider = Some("withings".into());
        assert_eq!(all.summary(WHO, kind, &other).await.unwrap(), got);
        answers.push(serde_json::json!({"path": format!("summary/{kind}"), "body": got}));
    }

    // Grouped series: small pages add up to the whole, which is query's rows.
    let (gs, ge) = (ymd(3), ymd(0));
    let paged = reader(&w.lake, 7);
    for (name, resource) in [
        ("heartrate", Resource::Heartrate),
        ("steps", Resource::Steps),
        ("blood_pressure", Resource::BloodPressure),
        ("body_weight", Resource::Weight),
    ] {
        let query = q(&gs, Some(&ge));
        let (whole, one) = walk(&all, WHO, name, &query).await;
        assert_eq!(one, 1, "{name}: one page when the page is large");
        let (pages, n) = walk(&paged, WHO, name, &query).await;
        let sorted = |v: &[(Value, Value)]| {
            let mut l: Vec<String> = v.iter().map(|(a, b)| format!("{a}{b}")).collect();
            l.sort();
            l
        };
        let all_pages = sorted(&pages);
        assert_eq!(all_pages, sorted(&whole), "{name}: the pages concatenate to the whole series");
        assert!(all_pages.windows(2).all(|p| p[0] != p[1]), "{name}: no sample twice");
        let times: Vec<String> = pages.iter().map(|(_, s)| text(&s["timestamp"])).collect();
        assert!(times.windows(2).all(|p| p[0] <= p[1]), "{name}: pages follow each other in time");
        assert_eq!(n, whole.len().div_ceil(7).max(1), "{name}: pages of 7");
        let time = time_of(resource);
        let want = sql_lines(
            &w.lake,
            &format!(
                "SELECT count(*) FROM {} WHERE user_id = 'user-0' AND \"{time}\" >= TIMESTAMP '{gs} 00:00:00' AND \"{time}\" <= TIMESTAMP '{ge} 23:59:59'",
                resource.as_str()
            ),
        )
        .await;
        assert_eq!(want, [whole.len().to_string()], "{name}: as many samples as query's rows");
        let times: Vec<String> = whole.iter().map(|(_, s)| text(&s["timestamp"])).collect();
        assert!(times.windows(2).all(|p| p[0] <= p[1]), "{name}: ordered by time");
        if resource == Resource::Heartrate || resource == Resource::Steps {
            assert!(n >= 3, "{name}: {} samples make several pages", whole.len());
        }
        // The same samples and sources as the events of those rows.
        let ctx = withings_lake::query_session(&w.lake).await.unwrap();
        let cols = resource.schema().columns.iter().map(|c| format!("\"{}\"", c.name)).collect::<Vec<_>>().join(", ");
        let rows = withings_lake::query_sql(
            &ctx,
            &format!(
                "SELECT {cols} FROM {} WHERE user_id = 'user-0' AND \"{time}\" >= TIMESTAMP '{gs} 00:00:00' AND \"{time}\" <= TIMESTAMP '{ge} 23:59:59'",
                resource.as_str()
            ),
        )
        .await
        .unwrap();
        let rows = arrow::compute::concat_batches(&resource.schema().arrow(), &rows).unwrap();
        let mut from_events: Vec<String> = Vec::new();
        for e in events(resource, rows) {
            for s in e["data"].as_array().unwrap() {
                from_events.push(format!("{}{}", e["source"], s));
            }
        }
        let reparse = |v: &Value| serde_json::from_str::<Value>(&v.to_string()).unwrap();
        let mut read: Vec<String> = whole.iter().map(|(src, s)| format!("{}{}", reparse(src), reparse(s))).collect();
        from_events.sort();
        read.sort();
        assert_eq!(read, from_events, "{name}: read samples and sources equal the events'");
        let page = all.grouped(WHO, name, &query).await.unwrap();
        answers.push(serde_json::json!({"path": format!("timeseries/{name}/grouped"), "body": page}));
    }

    // Without end_date the window ends at the first page's now, and the cursor keeps it.
    let open = Reader::new(w.lake.clone(), KEY, ReadLimits { max_window_days: 100_000, page_size: 7 });
    let (pages, _) = walk(&open, WHO, "heartrate", &q(&gs, None)).await;
    let whole = walk(&all, WHO, "heartrate", &q(&gs, Some(&ymd(-1)))).await.0;
    assert_eq!(pages.len(), whole.len(), "an open window pages like a closed one");
    assert!(pages.iter().all(|p| whole.contains(p)), "an open window pages like a closed one");

    // Cursors: altered, cut, another user, series, window or key: 422 naming next_cursor.
    let query = q(&gs, Some(&ge));
    let first = paged.grouped(WHO, "heartrate", &query).await.unwrap();
    let cursor = first["next_cursor"].as_str().expect("a next page").to_string();
    let with = |c: &str, query: &ReadQuery| ReadQuery { next_cursor: Some(c.to_string()), ..query.clone() };
    let mut altered = cursor.clone().into_bytes();
    altered[5] = if altered[5] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let refused = [
        ("altered", paged.grouped(WHO, "heartrate", &with(&altered, &query)).await),
        ("cut", paged.grouped(WHO, "heartrate", &with(&cursor[..cursor.len() - 3], &query)).await),
        ("garbage", paged.grouped(WHO, "heartrate", &with("not a cursor'; --", &query)).await),
        ("other user", paged.grouped(Who { user_id: "user-1", vital_user_id: VITAL }, "heartrate", &with(&cursor, &query)).await),
        ("other series", paged.grouped(WHO, "steps", &with(&cursor, &query)).await),
        ("other window", paged.grouped(WHO, "heartrate", &with(&cursor, &q(&ymd(4), Some(&ge)))).await),
        ("other end", paged.grouped(WHO, "heartrate", &with(&cursor, &q(&gs, Some(&ymd(1))))).await),
        (
            "other key",
            Reader::new(w.lake.clone(), [8; 32], paged.limits()).grouped(WHO, "heartrate", &with(&cursor, &query)).await,
        ),
    ];
    for (what, r) in refused {
        let e = r.expect_err(what);
        assert_eq!(e.status(), 422, "{what}: {e}");
        assert_eq!(e.body()["detail"][0]["loc"], serde_json::json!(["query", "next_cursor"]), "{what}");
        assert!(e.to_string().contains("next_cursor"), "{what}: {e}");
    }
    // The deprecated `cursor` parameter works like next_cursor.
    let by_old = ReadQuery { cursor: Some(cursor.clone()), ..query.clone() };
    assert_eq!(
        paged.grouped(WHO, "heartrate", &by_old).await.unwrap(),
        paged.grouped(WHO, "heartrate", &with(&cursor, &query)).await.unwrap()
    );

    // Every series answers, and Vital's SDK parses every answer.
    for name in series_names() {
        let page = all.grouped(WHO, name, &q(&ymd(10), Some(&end))).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        answers.push(serde_json::json!({"path": format!("timeseries/{name}/grouped"), "body": page}));
    }
    for kind in summary_kinds() {
        all.summary(WHO, kind, &q(&start, Some(&end))).await.unwrap();
    }
    if common::vital_available() {
        let file = w.dir.path().join("reads.json");
        std::fs::write(&file, serde_json::to_vec(&answers).unwrap()).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vital/check_reads.py");
        let out = std::process::Command::new("python3").arg(&script).arg(&file).output().unwrap();
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("check_reads.py printed no report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
        assert!(out.status.success() && report["invalid"] == 0, "Vital's models refuse answers: {report:#}");
        assert_eq!(report["without_model"], serde_json::json!([]), "{report:#}");
        let absent: Vec<(&String, &Value)> =
            report["paths"].as_object().unwrap().iter().filter(|(_, p)| p["absent"] != serde_json::json!([])).collect();
        assert!(absent.is_empty(), "declared fields left out: {absent:?}");
        assert_eq!(report["checked"].as_u64().unwrap() as usize, answers.len());
    }
}

/// Bad parameters get Vital's statuses and bodies, naming the parameter; only the user's
/// shard and the window's partitions are opened (corrupt files elsewhere change nothing); a
/// lake failure is a 500 that says nothing of the lake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_refused_by_name_and_only_the_user_s_shard_and_window_are_read() {
    let w = world(2).await;
    let r = reader(&w.lake, 50);
    let (start, end) = (ymd(3), ymd(0));

    let missing = r.summary(WHO, "sleep", &ReadQuery::default()).await.unwrap_err();
    assert_eq!(missing.status(), 422);
    assert_eq!(
        missing.body(),
        serde_json::json!({"detail": [{"loc": ["query", "start_date"], "msg": "Field required", "type": "missing"}]})
    );
    let cases: [(&str, ReadQuery, &str); 12] = [
        ("impossible date", q("2024-02-30", None), "start_date"),
        ("impossible end", q(&start, Some("2024-06-31")), "end_date"),
        ("not a date", q("last week", None), "start_date"),
        ("end before start", q(&start, Some(&ymd(5))), "end_date"),
        ("window too long", q(&ymd(40), Some(&end)), "end_date"),
        ("open window too long", q(&ymd(40), None), "start_date"),
        ("year 1", q("0001-01-01", Some(&end)), "start_date"),
        ("year 9999", q(&start, Some("9999-12-31")), "end_date"),
        ("sql", q("2024-06-01' OR '1'='1", None), "start_date"),
        ("sql in end", q(&start, Some("2024-06-15; DROP TABLE sleep")), "end_date"),
        ("nul", q("2024-06-01\0", None), "start_date"),
        ("provider", ReadQuery { provider: Some("withings' OR 1=1 --".into()), ..q(&start, Some(&end)) }, "provider"),
    ];
    for (what, query, param) in cases {
        for result in [r.summary(WHO, "sleep", &query).await.err(), r.grouped(WHO, "heartrate", &query).await.err()] {
            let e = result.unwrap_or_else(|| panic!("{what}: accepted"));
            assert_eq!(e.status(), 422, "{what}: {e}");
            let body = e.body();
            assert_eq!(body["detail"][0]["loc"], serde_json::json!(["query", param]), "{what}: {body}");
            assert!(body["detail"][0]["msg"].is_string() && body["detail"][0]["type"] == "value_error", "{what}: {body}");
            assert!(e.to_string().starts_with(param), "{what}: {e}");
        }
    }
    for (what, e) in [
        ("summary kind", r.summary(WHO, "meal", &q(&start, None)).await.unwrap_err()),
        ("series", r.grouped(WHO, "cholesterol", &q(&start, None)).await.unwrap_err()),
        ("sql series", r.grouped(WHO, "heartrate; drop", &q(&start, None)).await.unwrap_err()),
    ] {
        assert_eq!(e.status(), 404, "{what}: {e}");
        assert_eq!(e.body(), serde_json::json!({"detail": "Not Found"}), "{what}");
    }
    // Another provider: empty answers, not errors.
    let oura = ReadQuery { provider: Some("oura".into()), ..q(&start, Some(&end)) };
    assert_eq!(
        r.grouped(WHO, "heartrate", &oura).await.unwrap(),
        serde_json::json!({"groups": {}, "next_cursor": null, "next": null})
    );
    // ISO date-times work, with or without an offset.
    let iso = q(&format!("{start}T00:00:00+00:00"), Some(&format!("{end}T23:59:59")));
    assert_eq!(
        r.grouped(WHO, "heartrate", &iso).await.unwrap(),
        r.grouped(WHO, "heartrate", &q(&start, Some(&end))).await.unwrap()
    );

    // Corrupt files in the other shard (in the window) and in the user's shard outside the
    // window: the reads do not open them.
    let shard = withings_lake::lake::shard_of("user-0", 2);
    let other = 1 - shard;
    let lake_dir = w.dir.path().join("lake");
    let before_hr = r.grouped(WHO, "heartrate", &q(&start, Some(&end))).await.unwrap();
    let before_activity = r.summary(WHO, "activity", &q(&start, Some(&end))).await.unwrap();
    assert!(!before_hr["groups"]["withings"].as_array().unwrap().is_empty());
    let month = |days: i64| ymd(days)[..7].to_string();
    let corrupt = |rel: String| {
        let p = lake_dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"this is not parquet").unwrap();
    };
    corrupt(format!("heartrate/date={}/part-{other:04}.parquet", ymd(1)));
    corrupt(format!("activity/month={}/part-{other:04}.parquet", month(1)));
    corrupt(format!("heartrate/date={}/part-{shard:04}.parquet", ymd(8)));
    corrupt(format!("heartrate/date={}/part-{shard:04}.parquet", ymd(-1)));
    corrupt(format!("activity/month=2024-04/part-{shard:04}.parquet"));
    // `query` over the whole lake does trip on them.
    let ctx = withings_lake::query_session(&w.lake).await.unwrap();
    assert!(withings_lake::query_sql(&ctx, "SELECT count(*) FROM heartrate").await.is_err(), "the corrupt files are real");
    assert_eq!(r.grouped(WHO, "heartrate", &q(&start, Some(&end))).await.unwrap(), before_hr);
    assert_eq!(r.summary(WHO, "activity", &q(&start, Some(&end))).await.unwrap(), before_activity);

    // A corrupt file the read needs: a 500 that names nothing of the lake.
    corrupt(format!("heartrate/date={}/part-{shard:04}.parquet", ymd(1)));
    let e = r.grouped(WHO, "heartrate", &q(&start, Some(&end))).await.unwrap_err();
    assert_eq!(e.status(), 500, "{e}");
    assert_eq!(e.body(), serde_json::json!({"detail": "Internal Server Error"}));
}
