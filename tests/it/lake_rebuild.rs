//! The raw landing and `reharmonize`: tables rebuilt from landed records equal the tables
//! harmonized directly; a rebuild of an up-to-date lake writes nothing; and a rebuild killed
//! (SIGKILL, from a crash point: while writing the shard lease, partitions, the manifest, one
//! kill after another), then re-run, leaves exactly the lake an uninterrupted rebuild leaves,
//! with no file a reader would pick up that is not part of it and no temporary file.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::util::pretty::pretty_format_batches;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use withings_lake::harmonize::{self, Context, SleepSession};
use withings_lake::lake::{Coverage, Endpoint, Lake, TableId, Unit, keys};
use withings_lake::landing as raw;
use withings_lake::schema::Resource;
use withings_lake::storage::{self, crash};
use withings_lake::withings::{MeasureList, SleepGet, decode_list, intraday_series};

use crate::common::own_fixture;
use crate::harmonize_golden::ctx;

fn body(name: &str) -> serde_json::Value {
    own_fixture(name)["body"].clone()
}

fn user(i: usize) -> Context {
    Context { user_id: format!("user-{i:03}"), withings_user_id: format!("{}", 31_000_000 + i), ..ctx() }
}

/// Every fixture's records for `c`, as raw landing units.
fn raw_units(c: &Context) -> Vec<Unit> {
    let list = MeasureList::from_body(body("getmeas_scale_cuff_watch.json")).unwrap();
    let acts = decode_list::<withings_lake::withings::types::Activity>(
        body("getactivity_watch_and_phone.json"),
        "activities",
        "getactivity",
    )
    .unwrap();
    let series = intraday_series(body("getintradayactivity_watch_vitals.json"), None).unwrap();
    let workouts = decode_list::<withings_lake::withings::types::Workout>(
        body("getworkouts_run_swim_unknown.json"),
        "series",
        "getworkouts",
    )
    .unwrap();
    let sums = decode_list::<withings_lake::withings::types::SleepSummary>(
        body("sleep_getsummary_night_and_nap.json"),
        "series",
        "sleep_getsummary",
    )
    .unwrap();
    let night = SleepGet::from_body(body("sleep_get_mat_night.json")).unwrap();
    [
        (Endpoint::Getmeas, raw::getmeas(c, &list)),
        (Endpoint::Getactivity, raw::getactivity(c, &acts)),
        (Endpoint::Getintradayactivity, raw::getintradayactivity(c, &series)),
        (Endpoint::Getworkouts, raw::by_id(c, Endpoint::Getworkouts, &workouts)),
        (Endpoint::SleepGetsummary, raw::by_id(c, Endpoint::SleepGetsummary, &sums)),
        (Endpoint::SleepGet, raw::sleep_get(c, &night)),
    ]
    .into_iter()
    .map(|(e, batch)| Unit { table: TableId::Raw(e), batch, coverage: Coverage::Upsert })
    .collect()
}

/// Rows each resource gets when the fixtures are harmonized directly for `c`.
fn direct_rows(c: &Context) -> Vec<(Resource, usize)> {
    let list = MeasureList::from_body(body("getmeas_scale_cuff_watch.json")).unwrap();
    let sums = decode_list(body("sleep_getsummary_night_and_nap.json"), "series", "sleep_getsummary").unwrap();
    let outputs = [
        harmonize::getmeas(c, &list, &[]),
        harmonize::getactivity(c, &decode_list(body("getactivity_watch_and_phone.json"), "activities", "getactivity").unwrap()),
        harmonize::getintradayactivity(c, &intraday_series(body("getintradayactivity_watch_vitals.json"), None).unwrap()),
        harmonize::getworkouts(c, &decode_list(body("getworkouts_run_swim_unknown.json"), "series", "getworkouts").unwrap()),
        harmonize::sleep_getsummary(c, &sums),
        harmonize::sleep_get(
            c,
            &SleepGet::from_body(body("sleep_get_mat_night.json")).unwrap(),
            &SleepSession::from_summaries(&sums),
        ),
    ];
    Resource::ALL.iter().map(|r| (*r, outputs.iter().map(|h| h.rows(*r)).sum())).collect()
}

/// A local lake holding only the raw landing of `users` people.
async fn landed(dir: &Path, users: usize) -> Lake {
    let lake = Lake::open_or_create(storage::open(dir.to_str().unwrap()).unwrap(), 1).await.unwrap();
    let lease = lake.lease_shard(0, "lander", Duration::ZERO).await.unwrap();
    let units: Vec<Unit> = (0..users).flat_map(|i| raw_units(&user(i))).collect();
    lake.commit(&lease, "land", 1, &units).await.unwrap();
    lease.release().await;
    lake
}

#[tokio::test]
async fn lake_rebuild_from_raw_equals_direct_harmonize_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let lake = landed(dir.path(), 2).await;
    let lease = lake.lease_shard(0, "rebuilder", Duration::ZERO).await.unwrap();
    let m = withings_lake::rebuild::reharmonize(&lake, &lease, "rebuild-1", &Resource::ALL).await.unwrap();
    assert!(!m.partitions.is_empty());
    let ctx = withings_lake::lake::query::session(&lake).await.unwrap();
    for (r, n) in direct_rows(&user(0)) {
        let b = withings_lake::lake::query::sql(&ctx, &format!("SELECT count(*) FROM {r}")).await.unwrap();
        let got = b[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0) as usize;
        assert_eq!(got, 2 * n, "{r}: rebuilt rows vs directly harmonized rows for two people");
    }
    let q = withings_lake::lake::query::sql(&ctx, "SELECT count(DISTINCT reason) FROM quarantine").await.unwrap();
    assert!(q[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0) >= 4, "quarantine kept");
    let raw = withings_lake::lake::query::sql(&ctx, "SELECT count(*) FROM raw_getmeas").await.unwrap();
    assert_eq!(raw[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0), 2 * 11);

    let again = withings_lake::rebuild::reharmonize(&lake, &lease, "rebuild-2", &Resource::ALL).await.unwrap();
    assert!(again.partitions.is_empty(), "a rebuild of an up-to-date lake changes nothing: {:?}", again.partitions);
}

/// Every data file of the lake, by key, with its rows minus the bookkeeping columns.
async fn content(dir: &Path) -> Vec<(String, String)> {
    let loc = storage::open(dir.to_str().unwrap()).unwrap();
    let mut keys_found: Vec<object_store::path::Path> =
        loc.store.list(Some(&loc.prefix)).map_ok(|m| m.location).try_collect().await.unwrap();
    keys_found.sort();
    let mut out = Vec::new();
    for key in keys_found {
        let k = key.prefix_match(&loc.prefix).unwrap().map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/");
        if k.starts_with("_manifests") || k.starts_with("_state") || k == "_lake.json" {
            continue;
        }
        assert!(keys::parse_data_file(&loc, &key).is_some(), "{k} is not a data file of the lake");
        let bytes = loc.store.get(&key).await.unwrap().bytes().await.unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        let shown: Vec<RecordBatch> = batches
            .iter()
            .map(|b| {
                let keep: Vec<usize> = (0..b.num_columns())
                    .filter(|i| !["ingested_at", "run_id"].contains(&b.schema().field(*i).name().as_str()))
                    .collect();
                b.project(&keep).unwrap()
            })
            .collect();
        out.push((k, pretty_format_batches(&shown).unwrap().to_string()));
    }
    out
}

fn reharmonize(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_withings-lake"));
    c.args(["--log-format", "json", "reharmonize", "--lake", dir.to_str().unwrap(), "--lease-wait-seconds", "5"]);
    c.env_remove(crash::ENV);
    c
}

/// Runs `cmd` with the crash point `rule` armed and checks that it died there (SIGKILL, after
/// saying which write it died in), not anywhere else and not at the end.
pub(crate) fn crash_at(mut cmd: Command, rule: &str) {
    use std::os::unix::process::ExitStatusExt;
    let out = cmd.env(crash::ENV, rule).stdout(std::process::Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(9), "{rule}: the run was not killed at its crash point ({}): {stderr}", out.status);
    assert!(stderr.contains("crash point: killed"), "{rule}: killed elsewhere: {stderr}");
}

/// No file a killed write left behind, anywhere under `dir`.
pub(crate) fn assert_no_temporary_files(dir: &Path) {
    for f in crate::common::files_under(dir) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.contains('#'), "leftover temporary file {}", f.display());
    }
}

/// Where rebuilds are killed, by what they have written (not by the clock): each entry is a
/// sequence of crash points, one killed run each, then a run that finishes. The shard lease
/// (taken create-only: killed while writing it, and after linking it but before removing its
/// temporary file), partition files early and late, the manifest (while writing, linked, and
/// written but nothing after), and kills that follow each other.
const REBUILD_CRASHES: &[&[&str]] = &[
    &["during:1:/_state/leases/"],
    &["linked:1:/_state/leases/"],
    &["during:1:.parquet"],
    &["during:9:.parquet", "after:4:.parquet"],
    &["after:1:.parquet", "during:3:.parquet", "during:2:.parquet"],
    &["during:1:/_manifests/"],
    &["linked:1:/_manifests/"],
    &["after:1:/_manifests/"],
    &["linked:1:/_state/leases/", "during:5:.parquet", "linked:1:/_manifests/"],
];

#[tokio::test]
async fn lake_rebuild_killed_at_every_kind_of_write_ends_as_an_uninterrupted_one() {
    let users = 6;
    let reference = tempfile::tempdir().unwrap();
    landed(reference.path(), users).await;
    assert!(reharmonize(reference.path()).status().unwrap().success());
    let expected = content(reference.path()).await;
    let names = |v: &[(String, String)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();

    for crashes in REBUILD_CRASHES {
        let dir = tempfile::tempdir().unwrap();
        landed(dir.path(), users).await;
        for rule in *crashes {
            crash_at(reharmonize(dir.path()), rule);
        }
        // The dead holder's lease is taken over at once (its process is gone), and what its
        // writes left is removed.
        let out = reharmonize(dir.path()).output().unwrap();
        assert!(out.status.success(), "{crashes:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_no_temporary_files(dir.path());
        let got = content(dir.path()).await;
        assert_eq!(names(&got), names(&expected), "{crashes:?}: the same files, and nothing else a reader would glob");
        for ((k, a), (_, b)) in got.iter().zip(&expected) {
            assert_eq!(a, b, "{crashes:?}: {k} differs from the uninterrupted rebuild");
        }
    }
}
