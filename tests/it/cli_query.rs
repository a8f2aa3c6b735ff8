//! `withings-lake query`, `tables` and `forget` on a local lake: typed hive partition columns,
//! the four output formats, errors, the same counts and sums from DuckDB reading the files
//! directly, and an erasure that reaches the lake and the credentials.

use std::process::{Command, Output};

use serde_json::Value;
use withings_lake::lake::{Coverage, Lake, Unit};
use withings_lake::storage;

use crate::harmonize_golden::ctx;

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_withings-lake")).args(args).output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A local lake with the intraday and getmeas fixtures committed.
async fn lake() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open_or_create(storage::open(dir.path().to_str().unwrap()).unwrap(), 1).await.unwrap();
    let c = ctx();
    let intraday = withings_lake::withings::intraday_series(
        crate::common::own_fixture("getintradayactivity_watch_vitals.json")["body"].clone(),
        None,
    )
    .unwrap();
    let meas = withings_lake::withings::MeasureList::from_body(
        crate::common::own_fixture("getmeas_scale_cuff_watch.json")["body"].clone(),
    )
    .unwrap();
    let mut units = Vec::new();
    for h in [withings_lake::harmonize::getintradayactivity(&c, &intraday), withings_lake::harmonize::getmeas(&c, &meas, &[])] {
        for (r, b) in &h.tables {
            units.push(Unit { table: (*r).into(), batch: b.clone(), coverage: Coverage::Upsert });
        }
    }
    let lease = lake.lease_shard(0, "writer-q", std::time::Duration::ZERO).await.unwrap();
    lake.commit(&lease, "run-q", 1, &units).await.unwrap();
    dir
}

#[tokio::test]
async fn query_formats_and_typed_partitions() {
    let dir = lake().await;
    let path = dir.path().to_str().unwrap();
    let table = ok(&cli(&["query", "--lake", path, "SELECT count(*) AS n, sum(value) AS s FROM heartrate"]));
    assert!(table.contains("| 3 ") && table.contains("272.0"), "{table}");

    let json = ok(&cli(&[
        "query",
        "--lake",
        path,
        "--format",
        "json",
        "SELECT date, arrow_typeof(date) AS t, value FROM steps ORDER BY start",
    ]));
    let rows: Vec<Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["date"], "2024-06-10");
    assert_eq!(rows[0]["t"], "Date32");
    assert_eq!(rows[0]["value"], 142.0);

    let csv = ok(&cli(&[
        "query",
        "--lake",
        path,
        "--format",
        "csv",
        "SELECT grpid, value FROM weight WHERE month = '2024-06' ORDER BY grpid",
    ]));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "grpid,value");
    assert_eq!(lines.len(), 5, "{csv}");

    let out = dir.path().join("body.parquet");
    ok(&cli(&["query", "--lake", path, "--format", "parquet", "--output", out.to_str().unwrap(), "SELECT * FROM body"]));
    let file = std::fs::File::open(&out).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    assert_eq!(reader.map(|b| b.unwrap().num_rows()).sum::<usize>(), 5);

    let tables = ok(&cli(&["tables", "--lake", path, "--format", "json"]));
    let t: Vec<Value> = tables.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(t.len(), 18 + 6 + 1, "resources, raw landing per endpoint, quarantine");
    assert!(t.iter().any(|x| x["table"] == "raw_sleep_get") && t.iter().any(|x| x["table"] == "quarantine"));
    let hr = t.iter().find(|x| x["table"] == "heartrate").unwrap();
    assert_eq!((hr["rows"].as_u64(), hr["partitions"].as_u64(), hr["files"].as_u64()), (Some(3), Some(1), Some(1)));
    let sleep = t.iter().find(|x| x["table"] == "sleep").unwrap();
    assert_eq!(sleep["rows"], 0);
}

#[tokio::test]
async fn query_errors_name_the_problem() {
    let dir = lake().await;
    let path = dir.path().to_str().unwrap();
    let out = cli(&["query", "--lake", path, "SELECT nope FROM heartrate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    let empty = tempfile::tempdir().unwrap();
    let out = cli(&["query", "--lake", empty.path().to_str().unwrap(), "SELECT 1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no lake at"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&["query", "--lake", path, "--format", "parquet", "SELECT 1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--output"));
}

#[tokio::test]
async fn query_and_duckdb_agree_on_every_table() {
    if !crate::common::duckdb_available() {
        return;
    }
    let dir = lake().await;
    let path = dir.path().to_str().unwrap();
    // Every table (empty ones included), with a numeric column to sum where it has one.
    let tables: Vec<(String, String)> = withings_lake::schema::Resource::ALL
        .iter()
        .map(|r| {
            let s = r.schema();
            let numeric = |c: &&str| {
                s.column(c).is_some_and(|c| {
                    matches!(c.data_type, withings_lake::schema::ColumnType::Float64 | withings_lake::schema::ColumnType::Int64)
                })
            };
            let col = ["value", "weight", "systolic", "steps", "duration", "calories"].into_iter().find(numeric).unwrap_or("0");
            (r.as_str().to_string(), col.to_string())
        })
        .collect();
    for (table, col) in &tables {
        if !dir.path().join(table).exists() {
            // DuckDB's glob fails on a missing folder; our query answers an empty table.
            let sql = format!("SELECT count(*) AS n FROM {table}");
            let ours: Value =
                serde_json::from_str(ok(&cli(&["query", "--lake", path, "--format", "json", &sql])).trim()).unwrap();
            assert_eq!(ours["n"], 0, "{table}");
            continue;
        }
        let sql = format!("SELECT count(*) AS n, sum({col}) AS s FROM {table}");
        let ours: Value = serde_json::from_str(ok(&cli(&["query", "--lake", path, "--format", "json", &sql])).trim()).unwrap();
        let script = format!(
            "import duckdb, json\nr = duckdb.connect().execute(\"select count(*), sum({col}) from read_parquet('{path}/{table}/**/*.parquet', hive_partitioning = true)\").fetchone()\nprint(json.dumps([r[0], r[1]]))"
        );
        let out = Command::new("python3").args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "duckdb: {}", String::from_utf8_lossy(&out.stderr));
        let duck: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(ours["n"], duck[0], "{table} count");
        let (a, b) = (ours["s"].as_f64().unwrap_or(0.0), duck[1].as_f64().unwrap_or(0.0));
        assert!((a - b).abs() < 1e-9, "{table} sum: {ours} vs {duck}");
    }
}

#[tokio::test]
async fn forget_erases_a_person_from_the_lake_and_the_credentials() {
    use withings_lake::credentials::{Cipher, CredentialStore, UserRecord, UserStatus};
    use withings_lake::secret::Secret;
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(
        &pipeline,
        "[source]\nclient_id = \"demo-client\"\n[credentials]\nurl = \"creds\"\nkey_file = \"creds.key\"\n[lake]\nurl = \"lake\"\n",
    )
    .unwrap();
    // A linked person with rows in the lake.
    let store =
        CredentialStore::open(dir.path().join("creds").to_str().unwrap(), Cipher::load(&dir.path().join("creds.key")).unwrap())
            .unwrap();
    let record = UserRecord {
        user_id: "erase-me".into(),
        withings_userid: "31000042".into(),
        scopes: vec!["user.metrics".into()],
        access_token: Secret::new("a".repeat(40)),
        access_expires_at: 0,
        refresh_token: Secret::new("r".repeat(40)),
        status: UserStatus::Active,
        status_reason: None,
        created_at: 0,
        updated_at: 0,
        last_refresh_at: None,
        vital_user_id: None,
    };
    store.put(&record).await.unwrap();
    let lake = Lake::open_or_create(storage::open(dir.path().join("lake").to_str().unwrap()).unwrap(), 1).await.unwrap();
    let c = withings_lake::harmonize::Context { user_id: "erase-me".into(), ..ctx() };
    let meas = withings_lake::withings::MeasureList::from_body(
        crate::common::own_fixture("getmeas_scale_cuff_watch.json")["body"].clone(),
    )
    .unwrap();
    let h = withings_lake::harmonize::getmeas(&c, &meas, &[]);
    let units: Vec<Unit> =
        h.tables.iter().map(|(r, b)| Unit { table: (*r).into(), batch: b.clone(), coverage: Coverage::Upsert }).collect();
    let lease = lake.lease_shard(0, "writer", std::time::Duration::ZERO).await.unwrap();
    lake.commit(&lease, "run-f", 1, &units).await.unwrap();
    lease.release().await;

    let out = ok(&cli(&["forget", "--pipeline", pipeline.to_str().unwrap(), "--user-id", "erase-me"]));
    let report: Value = serde_json::from_str(&out).unwrap();
    assert!(report["rows_removed"].as_u64().unwrap() >= 12, "{report}");
    assert!(!out.contains("erase-me"), "the report names the person only by a hash: {out}");
    assert!(store.get("erase-me").await.unwrap().is_none(), "credentials removed");
    let left = ok(&cli(&[
        "query",
        "--lake",
        dir.path().join("lake").to_str().unwrap(),
        "--format",
        "json",
        "SELECT count(*) AS n FROM weight",
    ]));
    assert_eq!(serde_json::from_str::<Value>(left.trim()).unwrap()["n"], 0);
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    crate::common::files_under(dir).iter().map(|p| p.strip_prefix(dir).unwrap().display().to_string()).collect()
}

#[tokio::test]
async fn query_is_read_only_and_names_the_way_to_export() {
    let dir = lake().await;
    let path = dir.path().to_str().unwrap();
    let before = files_under(dir.path());
    let outside = tempfile::tempdir().unwrap();
    let copy_to = outside.path().join("x.csv");
    let statements = [
        ("DML", "INSERT INTO heartrate SELECT * FROM heartrate".to_string()),
        ("DML", "DELETE FROM heartrate".to_string()),
        ("DML", "UPDATE heartrate SET value = 0".to_string()),
        ("COPY", format!("COPY (SELECT * FROM heartrate) TO '{}'", copy_to.display())),
        ("COPY", format!("COPY heartrate TO '{}' STORED AS PARQUET", outside.path().join("y").display())),
        ("DDL", "CREATE TABLE t AS SELECT * FROM heartrate".to_string()),
        ("DDL", format!("CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '{}'", outside.path().display())),
        ("DDL", "DROP TABLE heartrate".to_string()),
        ("DDL", "CREATE VIEW v AS SELECT 1".to_string()),
        ("statement", "SET datafusion.execution.batch_size = 1".to_string()),
        ("statement", "PREPARE q(INT) AS SELECT $1".to_string()),
        ("DML", "EXPLAIN ANALYZE INSERT INTO heartrate SELECT * FROM heartrate".to_string()),
    ];
    for (kind, sql) in &statements {
        let out = cli(&["query", "--lake", path, sql]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{kind} must be refused: {sql}: {err}");
        assert!(err.contains("query is read-only") && err.contains("--output FILE"), "{sql}: {err}");
    }
    assert_eq!(files_under(dir.path()), before, "nothing was written into the lake");
    assert!(files_under(outside.path()).is_empty(), "nothing was written outside it");
    // Reading still works, and the export is the explicit flag.
    for sql in ["WITH h AS (SELECT value FROM heartrate) SELECT count(*) FROM h", "EXPLAIN SELECT * FROM steps", "SHOW TABLES"] {
        ok(&cli(&["query", "--lake", path, sql]));
    }
    let export = outside.path().join("hr.csv");
    ok(&cli(&["query", "--lake", path, "--format", "csv", "--output", export.to_str().unwrap(), "SELECT value FROM heartrate"]));
    assert_eq!(std::fs::read_to_string(&export).unwrap().lines().count(), 4, "a header and three rows");
}
