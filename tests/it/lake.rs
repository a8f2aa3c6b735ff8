//! The lake's commit protocol and merge rules, written once over a [`Location`] and run
//! against the in-memory store, a local folder and S3 (moto's server from PyPI, started by the
//! test on a free loopback port): one file per partition, manifests, upsert and window
//! replace, idempotent re-commits, the fixed shard count; and DuckDB reading the local lake
//! with nothing but hive partitioning. With `CI=true` a missing moto fails the S3 tests.

use std::process::Command;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use withings_lake::harmonize::{self, Context};
use withings_lake::lake::{Coverage, Lake, LakeError, Unit};
use withings_lake::schema::Resource;
use withings_lake::storage::{self, Location};
use withings_lake::withings::{MeasureList, intraday_series};

use crate::common::own_fixture;
use crate::harmonize_golden::ctx;

fn run(id: &str) -> Context {
    Context { run_id: id.into(), ingested_at: chrono::Utc::now(), ..ctx() }
}

fn intraday(c: &Context) -> harmonize::Harmonized {
    let series = intraday_series(own_fixture("getintradayactivity_watch_vitals.json")["body"].clone(), None).unwrap();
    harmonize::getintradayactivity(c, &series)
}

fn getmeas(c: &Context) -> harmonize::Harmonized {
    let list = MeasureList::from_body(own_fixture("getmeas_scale_cuff_watch.json")["body"].clone()).unwrap();
    harmonize::getmeas(c, &list, &[])
}

fn units(h: &harmonize::Harmonized, coverage: &Coverage) -> Vec<Unit> {
    h.tables
        .iter()
        .filter(|(_, b)| b.num_rows() > 0)
        .map(|(r, b)| Unit { table: (*r).into(), batch: b.clone(), coverage: coverage.clone() })
        .collect()
}

async fn keys(loc: &Location) -> Vec<String> {
    let mut v: Vec<String> = loc.store.list(Some(&loc.prefix)).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
    let prefix = format!("{}/", loc.prefix.as_ref());
    v = v.into_iter().map(|k| k.strip_prefix(&prefix).unwrap_or(&k).to_string()).collect();
    v.sort();
    v
}

/// The window of the intraday fixture's day, as the sync engine would send it.
fn day_window() -> Coverage {
    Coverage::Window {
        user_id: "user-1".into(),
        endpoint: "getintradayactivity".into(),
        start: 1_717_977_600,
        end: 1_718_064_000,
    }
}

async fn commit_layout_and_idempotence(loc: Location) {
    let lake = Lake::open_or_create(loc.clone(), 4).await.unwrap();
    let lease = lake.lease_shard(2, "writer-a", Duration::ZERO).await.unwrap();
    let first = run("run-1");
    let mut all = units(&intraday(&first), &day_window());
    all.extend(units(&getmeas(&first), &Coverage::Upsert));
    let m = lake.commit(&lease, "run-1", 1, &all).await.unwrap();

    let files = keys(&loc).await;
    for expected in [
        "_lake.json",
        "_manifests/run-1-000001.json",
        "steps/date=2024-06-10/part-0002.parquet",
        "heartrate/date=2024-06-10/part-0002.parquet",
        "weight/month=2024-06/part-0002.parquet",
        "body/month=2024-01/part-0002.parquet",
        "body/month=2024-06/part-0002.parquet",
    ] {
        assert!(files.iter().any(|f| f == expected), "{expected} missing from {files:?}");
    }
    // heartrate gets rows from two endpoints in one partition: one file.
    let hr = m.partitions.iter().find(|p| p.table == "heartrate").unwrap();
    assert_eq!((hr.counts.rows_before, hr.counts.inserted, hr.counts.rows_after), (0, 3, 3));
    assert_eq!(hr.users, vec!["user-1".to_string()]);
    let stored_manifest: serde_json::Value = serde_json::from_slice(
        &loc.store.get(&loc.key(&["_manifests", "run-1-000001.json"])).await.unwrap().bytes().await.unwrap(),
    )
    .unwrap();
    assert_eq!(stored_manifest["partitions"].as_array().unwrap().len(), m.partitions.len());

    // Rows read back: the harmonized rows, sorted, no partition column inside the file.
    let weights = lake.read(Resource::Weight, &m_partition("month", "2024-06"), 2).await.unwrap();
    assert_eq!(weights.num_rows(), 4);
    assert!(weights.schema().column_with_name("month").is_none() && weights.schema().column_with_name("date").is_none());
    let ts = weights.column_by_name("timestamp").unwrap().as_primitive::<TimestampMicrosecondType>();
    assert!(ts.values().windows(2).all(|w| w[0] <= w[1]), "rows sorted by time");

    // Files are zstd-compressed with page statistics, the page index and our metadata.
    let file = loc.store.get(&loc.key(&["weight", "month=2024-06", "part-0002.parquet"])).await.unwrap().bytes().await.unwrap();
    let options = parquet::arrow::arrow_reader::ArrowReaderOptions::new()
        .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required);
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new_with_options(file, options).unwrap();
    let meta = builder.metadata();
    let kv: std::collections::BTreeMap<String, String> = meta
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .iter()
        .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(kv["withings_lake.table"], "weight");
    assert_eq!(kv["withings_lake.schema_version"], "1");
    assert_eq!(kv["withings_lake.run_id"], "run-1");
    let col = meta.row_group(0).column(0);
    assert!(matches!(col.compression(), parquet::basic::Compression::ZSTD(_)), "{:?}", col.compression());
    assert!(col.statistics().is_some());
    assert!(meta.column_index().is_some() && meta.offset_index().is_some(), "page index written");

    // The same data again, from a later run: nothing changes, nothing is rewritten.
    let before: Vec<u8> =
        loc.store.get(&loc.key(&["weight", "month=2024-06", "part-0002.parquet"])).await.unwrap().bytes().await.unwrap().to_vec();
    let second = run("run-2");
    let mut again = units(&intraday(&second), &day_window());
    again.extend(units(&getmeas(&second), &Coverage::Upsert));
    let m2 = lake.commit(&lease, "run-2", 1, &again).await.unwrap();
    assert!(m2.partitions.is_empty(), "{:?}", m2.partitions);
    assert_eq!(m2.unchanged_partitions, m.partitions.len());
    let after: Vec<u8> =
        loc.store.get(&loc.key(&["weight", "month=2024-06", "part-0002.parquet"])).await.unwrap().bytes().await.unwrap().to_vec();
    assert_eq!(before, after, "an unchanged partition keeps its bytes");

    // A checkpoint commits once.
    let e = lake.commit(&lease, "run-2", 1, &again).await.unwrap_err();
    assert!(matches!(e, LakeError::ManifestExists { .. }), "{e}");

    // The shard count is fixed at creation.
    let e = Lake::open_or_create(loc.clone(), 8).await.unwrap_err();
    assert!(e.to_string().contains("4 shards") && e.to_string().contains("8"), "{e}");
}

fn m_partition(grain: &str, value: &str) -> withings_lake::lake::Partition {
    let grain = if grain == "month" { withings_lake::schema::Grain::Month } else { withings_lake::schema::Grain::Day };
    withings_lake::lake::Partition { grain, value: value.into() }
}

async fn window_replace_and_upsert(loc: Location) {
    let lake = Lake::open_or_create(loc.clone(), 1).await.unwrap();
    let lease = lake.lease_shard(0, "writer-a", Duration::ZERO).await.unwrap();
    let c = run("run-a");
    lake.commit(&lease, "run-a", 1, &units(&intraday(&c), &day_window())).await.unwrap();

    // Upstream, the second step minute disappeared: the window replace removes it.
    let c2 = run("run-b");
    let h = intraday(&c2);
    let steps = h.tables[&Resource::Steps].slice(0, 1);
    let m = lake
        .commit(&lease, "run-b", 1, &[Unit { table: Resource::Steps.into(), batch: steps, coverage: day_window() }])
        .await
        .unwrap();
    let p = &m.partitions[0];
    assert_eq!((p.counts.rows_before, p.counts.deleted, p.counts.rows_after, p.counts.inserted), (2, 1, 1, 0));
    let kept = lake.read(Resource::Steps, &m_partition("date", "2024-06-10"), 0).await.unwrap();
    assert_eq!(kept.num_rows(), 1);
    // The surviving row did not change, so it keeps the run that first wrote it.
    assert_eq!(kept.column_by_name("run_id").unwrap().as_string::<i32>().value(0), "run-a");

    // A key arriving twice (overlapping pages) and again under a window: still one row each.
    let twice = arrow::compute::concat_batches(&kept.schema(), [&kept, &kept]).unwrap();
    let m = lake
        .commit(&lease, "run-b2", 1, &[Unit { table: Resource::Steps.into(), batch: twice, coverage: day_window() }])
        .await
        .unwrap();
    assert!(m.partitions.is_empty(), "same rows, nothing changed: {:?}", m.partitions);
    assert_eq!(lake.read(Resource::Steps, &m_partition("date", "2024-06-10"), 0).await.unwrap().num_rows(), 1);

    // A window over a day where nothing arrived empties it and deletes its file.
    let m = lake
        .commit(
            &lease,
            "run-c",
            1,
            &[Unit {
                table: Resource::Steps.into(),
                batch: RecordBatch::new_empty(Resource::Steps.schema().arrow()),
                coverage: day_window(),
            }],
        )
        .await
        .unwrap();
    assert_eq!((m.partitions[0].counts.deleted, m.partitions[0].bytes), (1, 0));
    assert!(!keys(&loc).await.iter().any(|k| k.starts_with("steps/")));

    // Upsert: a corrected weight updates one row and leaves the others as they were.
    let c = run("run-d");
    lake.commit(&lease, "run-d", 1, &units(&getmeas(&c), &Coverage::Upsert)).await.unwrap();
    let mut body = own_fixture("getmeas_scale_cuff_watch.json")["body"].clone();
    body["measuregrps"][1]["measures"][0]["value"] = serde_json::json!(72500);
    let h = harmonize::getmeas(&run("run-e"), &MeasureList::from_body(body).unwrap(), &[]);
    let m = lake
        .commit(
            &lease,
            "run-e",
            1,
            &[Unit { table: Resource::Weight.into(), batch: h.tables[&Resource::Weight].clone(), coverage: Coverage::Upsert }],
        )
        .await
        .unwrap();
    let p = &m.partitions[0];
    assert_eq!((p.counts.updated, p.counts.inserted, p.counts.deleted, p.counts.rows_after), (1, 0, 0, 4));
    let w = lake.read(Resource::Weight, &m_partition("month", "2024-06"), 0).await.unwrap();
    let runs: Vec<&str> = w.column_by_name("run_id").unwrap().as_string::<i32>().iter().flatten().collect();
    assert_eq!(runs.iter().filter(|r| **r == "run-e").count(), 1, "{runs:?}");
}

#[tokio::test]
async fn lake_memory_commit_layout_and_idempotence() {
    commit_layout_and_idempotence(storage::open("memory://lake-layout").unwrap()).await;
}

#[tokio::test]
async fn lake_local_commit_layout_and_idempotence() {
    let dir = tempfile::tempdir().unwrap();
    commit_layout_and_idempotence(storage::open(dir.path().to_str().unwrap()).unwrap()).await;
}

#[tokio::test]
async fn lake_memory_window_replace_and_upsert() {
    window_replace_and_upsert(storage::open("memory://lake-merge").unwrap()).await;
}

#[tokio::test]
async fn lake_local_window_replace_and_upsert() {
    let dir = tempfile::tempdir().unwrap();
    window_replace_and_upsert(storage::open(dir.path().to_str().unwrap()).unwrap()).await;
}

async fn leases_serialize_writers(loc: Location) {
    let lake = Lake::open_or_create(loc.clone(), 2).await.unwrap();
    let a = lake.lease_shard(1, "writer-a", Duration::ZERO).await.unwrap();
    // Another writer on the same shard waits, then is told who holds it.
    let e = lake.lease_shard(1, "writer-b", Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(e, LakeError::Busy { shard: 1, .. }) && e.to_string().contains("writer-a"), "{e}");
    // Other shards are free.
    lake.lease_shard(0, "writer-b", Duration::ZERO).await.unwrap().release().await;
    // Released, the shard goes to the waiting writer.
    let waiting = {
        let lake = lake.clone();
        tokio::spawn(async move { lake.lease_shard(1, "writer-b", Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.release().await;
    let b = waiting.await.unwrap().unwrap();

    // Two writers committing to one shard one after the other never lose an update (user-2
    // belongs to shard 1 of 2).
    let c = Context { user_id: "user-2".into(), ..run("run-b") };
    let h = intraday(&c);
    let steps = h.tables[&Resource::Steps].clone();
    lake.commit(&b, "run-b", 1, &[Unit { table: Resource::Steps.into(), batch: steps.slice(0, 1), coverage: Coverage::Upsert }])
        .await
        .unwrap();
    b.release().await;
    let a = lake.lease_shard(1, "writer-a", Duration::ZERO).await.unwrap();
    lake.commit(&a, "run-a", 1, &[Unit { table: Resource::Steps.into(), batch: steps.slice(1, 1), coverage: Coverage::Upsert }])
        .await
        .unwrap();
    assert_eq!(lake.read(Resource::Steps, &m_partition("date", "2024-06-10"), 1).await.unwrap().num_rows(), 2);
    // A commit never writes a user into another shard's files.
    let wrong = intraday(&run("run-c")).tables[&Resource::Steps].clone();
    let e = lake
        .commit(&a, "run-c", 1, &[Unit { table: Resource::Steps.into(), batch: wrong, coverage: Coverage::Upsert }])
        .await
        .unwrap_err();
    assert!(matches!(e, LakeError::WrongShard { shard: 1, belongs: 0, .. }) && e.to_string().contains("user-1"), "{e}");
    a.release().await;
}

#[tokio::test]
async fn lake_memory_leases_serialize_writers() {
    leases_serialize_writers(storage::open("memory://lake-leases").unwrap()).await;
}

#[tokio::test]
async fn lake_local_leases_serialize_writers() {
    let dir = tempfile::tempdir().unwrap();
    leases_serialize_writers(storage::open(dir.path().to_str().unwrap()).unwrap()).await;
}

#[tokio::test]
async fn lake_s3_leases_serialize_writers() {
    let Some(moto) = Moto::start().await else { return };
    leases_serialize_writers(moto.location("leases").await).await;
}

/// Every object of the lake, with its bytes.
async fn objects(loc: &Location) -> Vec<(String, Vec<u8>)> {
    let paths: Vec<object_store::path::Path> =
        loc.store.list(Some(&loc.prefix)).map_ok(|m| m.location).try_collect().await.unwrap();
    let mut out = Vec::new();
    for p in paths {
        let bytes = loc.store.get(&p).await.unwrap().bytes().await.unwrap().to_vec();
        out.push((p.to_string(), bytes));
    }
    out
}

async fn forget_erases_one_person(loc: Location) {
    let lake = Lake::open_or_create(loc.clone(), 2).await.unwrap();
    let gone = Context { user_id: "erase-me-4".into(), ..run("run-1") };
    let stays = run("run-1");
    // Both people belong to shard 0 of 2 (a stable hash of the id), so they share files; a
    // third person in shard 1 stays too.
    let other = Context { user_id: "user-2".into(), ..run("run-1") };
    for (i, c, shard) in [(0, &gone, 0), (1, &stays, 0), (2, &other, 1)] {
        let lease = lake.lease_shard(shard, "writer", Duration::ZERO).await.unwrap();
        let mut all = units(&intraday(c), &day_window_of(&c.user_id));
        if c.user_id != "user-1" {
            // user-1 has no measures: the getmeas files hold the erased person alone and go.
            all.extend(units(&getmeas(c), &Coverage::Upsert));
        }
        lake.commit(&lease, &format!("run-{i}"), 1, &all).await.unwrap();
        lease.release().await;
    }
    // The erased person's weights again, in a later commit of the same files.
    let lease = lake.lease_shard(0, "writer", Duration::ZERO).await.unwrap();
    lake.commit(
        &lease,
        "run-mixed",
        1,
        &[Unit {
            table: Resource::Weight.into(),
            batch: getmeas(&gone).tables[&Resource::Weight].clone(),
            coverage: Coverage::Upsert,
        }],
    )
    .await
    .unwrap();
    lease.release().await;
    let state = withings_lake::state::StateStore::new(loc.clone());
    for u in ["erase-me-4", "user-1", "user-2"] {
        state.put(&withings_lake::state::UserState { user_id: u.into(), ..Default::default() }).await.unwrap();
    }
    let before: usize = stays_rows(&lake).await;

    let cipher = withings_lake::credentials::Cipher::from_key([7; 32], "test");
    let credentials = withings_lake::credentials::CredentialStore::open("memory://erasure-credentials", cipher).unwrap();
    let erasure = withings_lake::erasure::Erasure {
        lake: &lake,
        credentials: &credentials,
        files_sink: None,
        holder: "eraser".into(),
        wait: Duration::from_secs(5),
        keyed: true,
    };
    let report = erasure.forget("erase-me-4").await.unwrap();
    let l = &report.lake;
    assert!(l.rows_removed > 0 && !l.files_deleted.is_empty() && !l.files_rewritten.is_empty(), "{report:?}");
    assert!(l.manifests_scrubbed >= 2, "{report:?}");
    assert_eq!(report.user_id_hmac_sha256.map(|h| h.len()), Some(64));
    for (key, bytes) in objects(&loc).await {
        assert!(!String::from_utf8_lossy(&bytes).contains("erase-me-4"), "{key} still names the person");
        if key.ends_with(".parquet") {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
                .unwrap()
                .build()
                .unwrap();
            for b in reader {
                let b = b.unwrap();
                let users = b.column_by_name("user_id").unwrap().as_string::<i32>();
                assert!(users.iter().all(|u| u != Some("erase-me-4")), "{key} still has the person's rows");
            }
        }
    }
    assert_eq!(stays_rows(&lake).await, before, "the other person's rows are untouched");
    assert_eq!(
        state.users().await.unwrap(),
        vec!["user-1".to_string(), "user-2".to_string()],
        "the person's sync state is gone, the others' stay"
    );
}

/// Rows of user-1 across every table and shard.
async fn stays_rows(lake: &Lake) -> usize {
    let ctx = withings_lake::lake::query::session(lake).await.unwrap();
    let mut n = 0;
    for r in Resource::ALL {
        let b =
            withings_lake::lake::query::sql(&ctx, &format!("SELECT count(*) FROM {r} WHERE user_id = 'user-1'")).await.unwrap();
        n += b[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0) as usize;
    }
    n
}

fn day_window_of(user: &str) -> Coverage {
    Coverage::Window { user_id: user.into(), endpoint: "getintradayactivity".into(), start: 1_717_977_600, end: 1_718_064_000 }
}

#[tokio::test]
async fn lake_memory_forget_erases_one_person() {
    forget_erases_one_person(storage::open("memory://lake-forget").unwrap()).await;
}

#[tokio::test]
async fn lake_local_forget_erases_one_person() {
    let dir = tempfile::tempdir().unwrap();
    forget_erases_one_person(storage::open(dir.path().to_str().unwrap()).unwrap()).await;
}

#[tokio::test]
async fn lake_s3_forget_erases_one_person() {
    let Some(moto) = Moto::start().await else { return };
    forget_erases_one_person(moto.location("forget").await).await;
}

/// A moto S3 server on a free loopback port, killed on drop.
struct Moto {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto, or `None` (with a printed reason) when it is not installed outside CI.
    async fn start() -> Option<Moto> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let port_arg = port.to_string();
        let quiet = |mut c: Command| c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn();
        // The console script, else the module (a fresh pyenv may not have its shim yet).
        let spawned = quiet({
            let mut c = Command::new("moto_server");
            c.args(["-H", "127.0.0.1", "-p", &port_arg]);
            c
        })
        .or_else(|_| {
            let has_module =
                Command::new("python3").args(["-c", "import moto.server"]).output().is_ok_and(|o| o.status.success());
            if !has_module {
                return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "python3 cannot import moto.server"));
            }
            quiet({
                let mut c = Command::new("python3");
                c.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port_arg]);
                c
            })
        });
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "CI=true but moto_server cannot start: {e}");
                eprintln!("skipping: moto_server is not installed (pip install 'moto[server]'): {e}");
                return None;
            }
        };
        let mut moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}") };
        let http = reqwest::Client::new();
        // A deadline, not an expectation: four servers may start at once on a loaded machine.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < until {
            if http.get(&moto.endpoint).send().await.is_ok() {
                return Some(moto);
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited ({status}) before it answered on {}", moto.endpoint);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("moto_server did not answer on {} within 60 s", moto.endpoint);
    }

    /// A fresh bucket, opened as a lake location under a prefix (as a pipeline would).
    async fn location(&self, bucket: &str) -> Location {
        let status = reqwest::Client::new().put(format!("{}/{bucket}", self.endpoint)).send().await.unwrap().status();
        assert!(status.is_success(), "creating bucket {bucket}: {status}");
        let options: std::collections::BTreeMap<String, String> = [
            ("endpoint", self.endpoint.as_str()),
            ("region", "us-east-1"),
            ("allow_http", "true"),
            ("access_key_id", "testing"),
            ("secret_access_key", "testing"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        storage::open_with(&format!("s3://{bucket}/lake"), &options).unwrap()
    }
}

#[tokio::test]
async fn lake_s3_commit_layout_and_idempotence() {
    let Some(moto) = Moto::start().await else { return };
    commit_layout_and_idempotence(moto.location("layout").await).await;
}

#[tokio::test]
async fn lake_s3_window_replace_and_upsert() {
    let Some(moto) = Moto::start().await else { return };
    window_replace_and_upsert(moto.location("merge").await).await;
}

#[tokio::test]
async fn lake_local_reads_in_duckdb_with_hive_partitioning_only() {
    if !crate::common::duckdb_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open_or_create(storage::open(dir.path().to_str().unwrap()).unwrap(), 2).await.unwrap();
    let lease = lake.lease_shard(0, "writer-duck", Duration::ZERO).await.unwrap();
    let c = run("run-duck");
    let mut all = units(&intraday(&c), &day_window());
    all.extend(units(&getmeas(&c), &Coverage::Upsert));
    lake.commit(&lease, "run-duck", 1, &all).await.unwrap();
    let script = "import duckdb, json, sys\n\
        con = duckdb.connect()\n\
        out = {}\n\
        for t, col in [('heartrate', 'timestamp'), ('weight', 'timestamp'), ('body', 'timestamp'), ('steps', 'start')]:\n\
        \x20   src = f\"read_parquet('{sys.argv[1]}/{t}/**/*.parquet', hive_partitioning = true)\"\n\
        \x20   n, users, kind = con.execute(f'select count(*), count(distinct user_id), any_value(typeof(\"{col}\")) from {src}').fetchone()\n\
        \x20   out[t] = [n, users, kind]\n\
        print(json.dumps(out))\n";
    let out = Command::new("python3").args(["-c", script]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "duckdb: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = |r: Resource| {
        let h = if matches!(r, Resource::Weight | Resource::Body) { getmeas(&c) } else { intraday(&c) };
        let mut n = h.rows(r);
        if r == Resource::Heartrate {
            n += getmeas(&c).rows(r);
        }
        n
    };
    for (t, r) in
        [("heartrate", Resource::Heartrate), ("weight", Resource::Weight), ("body", Resource::Body), ("steps", Resource::Steps)]
    {
        assert_eq!(v[t][0], rows(r), "{t}: {v}");
        assert_eq!(v[t][1], 1, "{t}");
        assert_eq!(v[t][2], "TIMESTAMP WITH TIME ZONE", "{t}");
    }
}

#[tokio::test]
async fn lake_staged_commit_equals_a_direct_one_and_cleans_up() {
    let direct = Lake::open_or_create(storage::open("memory://lake-direct").unwrap(), 1).await.unwrap();
    let staged = Lake::open_or_create(storage::open("memory://lake-staged").unwrap(), 1).await.unwrap();
    let c = run("run-s");
    let mut all = units(&intraday(&c), &day_window());
    all.extend(units(&getmeas(&c), &Coverage::Upsert));

    let lease = direct.lease_shard(0, "w", Duration::ZERO).await.unwrap();
    let expected = direct.commit(&lease, "run-s", 1, &all).await.unwrap();

    let root = tempfile::tempdir().unwrap();
    let mut staging = withings_lake::lake::staging::Staging::new(Some(root.path()), "run-s").unwrap();
    // Half the units spilled to disk (one compressed file per partition), half still held in
    // memory: the commit reads both, in staging order.
    let (first, second) = all.split_at(all.len() / 2);
    for u in first {
        staging.stage(u).unwrap();
    }
    staging.spill().unwrap();
    let files = std::fs::read_dir(staging.dir()).unwrap().count();
    let partitions: std::collections::BTreeSet<_> =
        first.iter().flat_map(|u| withings_lake::lake::partitions_of_unit(u).unwrap()).collect();
    assert!(files > 0 && files <= partitions.len(), "{files} files for {} partitions", partitions.len());
    for u in second {
        staging.stage(u).unwrap();
    }
    assert!(staging.bytes() > 0 && !staging.is_empty());
    assert_eq!(std::fs::read_dir(staging.dir()).unwrap().count(), files, "small units wait in memory");
    let lease = staged.lease_shard(0, "w", Duration::ZERO).await.unwrap();
    let (got, changes) = staged.commit_staged(&lease, "run-s", 1, &mut staging, None).await.unwrap();
    assert!(changes.is_empty(), "nothing was staged for capture");
    let summary = |m: &withings_lake::lake::Manifest| {
        m.partitions.iter().map(|p| (p.table.clone(), p.partition.clone(), p.counts)).collect::<Vec<_>>()
    };
    assert_eq!(summary(&got), summary(&expected));
    assert!(staging.is_empty() && std::fs::read_dir(staging.dir()).unwrap().count() == 0, "a commit empties the staging folder");
    let dir = staging.dir().to_path_buf();
    drop(staging);
    assert!(!dir.exists(), "dropping the staging area removes its folder");
}
