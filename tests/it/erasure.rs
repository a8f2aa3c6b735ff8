//! `forget` against a lake kept by real runs with events on: a webhook that takes everything,
//! a webhook that answers 410 (so every event it gets is dead), a files sink inside the lake or
//! at its own URL, the captured changes of a commit that was killed, and a backfill that runs
//! while `forget` waits for its shard. Afterwards no object of the lake, the files sink or the
//! credentials store names the person (their id or their Withings userid, in a key or in the
//! decoded content), and the other people's rows, events and cursors are as they were.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use chrono::DateTime;
use serde_json::Value;

use crate::common::{self, NOW};
use crate::events::{Receiver, SECRET, SECRET_ENV, lines_in};
use crate::lake_rebuild::crash_at;
use crate::sync::{bin, d, link, pipeline, text};

/// Every file under `dir` with its content decoded to text: Parquet and Arrow IPC files as
/// pretty-printed tables, everything else as it is.
fn decoded_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let decode = |path: &Path| {
        let bytes = std::fs::read(path).unwrap();
        let name = path.to_string_lossy();
        let batches: Option<Vec<RecordBatch>> = if name.ends_with(".parquet") {
            let builder =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes.clone()));
            Some(builder.unwrap().build().unwrap().map(|b| b.unwrap()).collect())
        } else if name.ends_with(".arrow") {
            let reader = arrow::ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes.clone()), None).unwrap();
            Some(reader.map(|b| b.unwrap()).collect())
        } else {
            None
        };
        match batches {
            Some(b) => pretty_format_batches(&b).unwrap().to_string(),
            None => String::from_utf8_lossy(&bytes).into_owned(),
        }
    };
    crate::common::files_under(dir).into_iter().map(|p| (p.clone(), decode(&p))).collect()
}

/// The objects under `dirs` that name any of `needles` in their path or decoded content.
fn naming(dirs: &[&Path], needles: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for dir in dirs {
        for (path, content) in decoded_files(dir) {
            let rel = path.strip_prefix(dir).unwrap().to_string_lossy().to_string();
            for n in needles {
                if rel.contains(n) || content.contains(n) {
                    out.push(format!("{} names {n}", path.display()));
                }
            }
        }
    }
    out
}

/// What the other people have: rows of every table (without bookkeeping columns), cursors,
/// outbox records and files sink lines, by user.
async fn others(lake: &Path, files: &Path, users: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let l = withings_lake::lake::Lake::open(withings_lake::storage::open(&lake.display().to_string()).unwrap()).await.unwrap();
    let ctx = withings_lake::lake::query::session(&l).await.unwrap();
    for u in users {
        let mut rows = String::new();
        for t in withings_lake::lake::TableId::all() {
            let sql = format!("SELECT * EXCLUDE (ingested_at, run_id) FROM {} WHERE user_id = '{u}'", t.sql_name());
            let b = withings_lake::lake::query::sql(&ctx, &sql).await.unwrap();
            let shown = pretty_format_batches(&b).unwrap().to_string();
            let mut lines: Vec<&str> = shown.lines().collect();
            lines.sort();
            rows.push_str(&lines.join("\n"));
        }
        out.insert(format!("{u} rows"), rows);
        out.insert(
            format!("{u} state"),
            std::fs::read_to_string(lake.join(format!("_state/users/{u}.json"))).unwrap_or_default(),
        );
        let mut outbox = Vec::new();
        for status in ["pending", "delivered", "dead"] {
            for sink in ["hook", "gone", "files"] {
                for r in lines_in(&lake.join(format!("_events/{status}/{sink}"))) {
                    if r["user_id"] == *u {
                        outbox.push(format!("{status} {sink} {} {}", r["id"], r["attempts"]));
                    }
                }
            }
        }
        outbox.sort();
        out.insert(format!("{u} outbox"), outbox.join("\n"));
        let mut lines: Vec<String> =
            lines_in(files).iter().filter(|l| l["event"]["user_id"] == *u).map(|l| l["id"].to_string()).collect();
        lines.sort();
        out.insert(format!("{u} files sink"), lines.join("\n"));
    }
    out
}

async fn forget_erases_everything_that_names_the_person(files_inside_the_lake: bool) {
    let mut cfg = common::config(4, 0);
    cfg.latency_ms = 20; // the concurrent backfill lasts long enough to be waited for
    let sim = common::start_with(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start().await;
    let gone = Receiver::start().await;
    gone.status.store(410, Ordering::SeqCst);
    let files_dir = if files_inside_the_lake { dir.path().join("lake/_events/files") } else { dir.path().join("files-sink") };
    let prefix = if files_inside_the_lake {
        "_events/files".to_string()
    } else {
        url::Url::from_directory_path(&files_dir).unwrap().to_string()
    };
    let events = format!(
        "[events]\nfinal_wait_seconds = 2\n\n[[events.webhooks]]\nname = \"hook\"\nurl = \"{}\"\nsecret_env = \"{SECRET_ENV}\"\n\n[[events.webhooks]]\nname = \"gone\"\nurl = \"{}\"\nsecret_env = \"{SECRET_ENV}\"\n\n[events.files]\nprefix = \"{prefix}\"\n",
        hook.url, gone.url
    );
    let p = pipeline(dir.path(), &sim, &events).display().to_string();
    let store = link(&sim, &dir.path().join("creds"), 4).await;
    let mut withings_ids = BTreeMap::new();
    for u in ["user-0", "user-1"] {
        withings_ids.insert(u, store.get(u).await.unwrap().unwrap().withings_userid);
    }
    let lake = dir.path().join("lake");
    let run = |args: Vec<String>| {
        let mut c = bin();
        c.env(SECRET_ENV, SECRET).args(args);
        c
    };
    let now = |later: i64| DateTime::from_timestamp(NOW + later, 0).unwrap().to_rfc3339();
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();

    // History, then a sync whose commit is killed once its changes are captured: the next
    // run would announce them, but they are still in `_events/staged/`.
    let out =
        run(strings(&["backfill", "--pipeline", &p, "--from", &d(5).to_string(), "--to", &d(0).to_string(), "--now", &now(0)]))
            .output()
            .unwrap();
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out));
    sim.advance(8 * 3600).await;
    crash_at(run(strings(&["sync", "--pipeline", &p, "--now", &now(8 * 3600)])), "after:1:/lake/_events/staged/");
    assert!(lake.join("_events/staged").exists(), "a killed commit left its captured changes");
    let staged_before = naming(&[&lake.join("_events/staged")], &["user-1"]);
    assert!(!staged_before.is_empty(), "user-1's changes are among them");
    assert!(!lines_in(&lake.join("_events/dead/gone")).is_empty(), "dead events");
    assert!(!naming(&[&files_dir], &["user-1"]).is_empty(), "the files sink has user-1's events");

    // forget user-1: nothing else moves.
    let stay = ["user-2", "user-3"];
    let before = others(&lake, &files_dir, &stay).await;
    // With the files sink in the lake, `forget` runs with a pipeline that has no [events]
    // section (an operator's erasure pipeline, the demo's lake): it still finds everything.
    let forget_with = if files_inside_the_lake {
        let text = std::fs::read_to_string(&p).unwrap();
        let path = dir.path().join("forget.toml");
        std::fs::write(&path, &text[..text.find("[events]").unwrap()]).unwrap();
        path.display().to_string()
    } else {
        p.clone()
    };
    let out =
        run(strings(&["forget", "--pipeline", &forget_with, "--user-id", "user-1", "--wait-seconds", "60"])).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["rows_removed"].as_u64().unwrap() > 0, "{report}");
    assert!(report["staged_change_rows_removed"].as_u64().unwrap() > 0, "{report}");
    assert!(report["outbox_records_removed"].as_u64().unwrap() > 0, "{report}");
    assert!(report["files_sink_events_removed"].as_u64().unwrap() > 0, "{report}");
    assert!(report["webhook_events_already_delivered"].as_u64().unwrap() > 0, "{report}");
    assert!(report["beyond_reach"].as_str().unwrap().contains("receivers"), "{report}");
    assert!(!text(&out).contains("user-1"), "the report names the person only by a keyed hash");
    assert_eq!(others(&lake, &files_dir, &stay).await, before, "the others' rows, cursors and events are untouched");
    let dirs = [lake.as_path(), files_dir.as_path(), &dir.path().join("creds")];
    let vital = withings_lake::credentials::derived_vital_user_id("user-1");
    let left = naming(&dirs, &["user-1", &withings_ids["user-1"], &vital]);
    assert!(left.is_empty(), "{left:#?}");

    // forget user-0 while a backfill of an older window runs on its shard: `forget` waits for
    // the lease, then finds what the backfill committed (rows, cursors, events) meanwhile.
    let log = std::fs::File::create(dir.path().join("backfill.log")).unwrap();
    let mut backfill = run(strings(&[
        "backfill",
        "--pipeline",
        &p,
        "--from",
        &d(25).to_string(),
        "--to",
        &d(6).to_string(),
        "--now",
        &now(8 * 3600),
    ]))
    .stdout(Stdio::null())
    .stderr(log)
    .spawn()
    .unwrap();
    let lease = lake.join("_state/leases/shard-0000.lock");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !lease.exists() {
        assert!(
            std::time::Instant::now() < deadline && backfill.try_wait().unwrap().is_none(),
            "the backfill never took its lease"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let forget = run(strings(&["forget", "--pipeline", &p, "--user-id", "user-0", "--wait-seconds", "120"]));
    let forgot = tokio::task::spawn_blocking(move || {
        let mut forget = forget;
        forget.output().unwrap()
    });
    let status = tokio::task::spawn_blocking(move || backfill.wait().unwrap()).await.unwrap();
    let out = forgot.await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(status.code().is_some(), "the backfill ran to its end ({status})");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["credentials_removed"].as_bool().unwrap(), "{report}");
    let left = naming(&dirs, &["user-0", &withings_ids["user-0"], "user-1", &withings_ids["user-1"]]);
    assert!(left.is_empty(), "{left:#?}");
    // The others kept what they had and got what the backfill fetched.
    let after = others(&lake, &files_dir, &stay).await;
    for u in stay {
        assert!(after[&format!("{u} rows")].len() > before[&format!("{u} rows")].len(), "{u}: the backfill's rows");
        assert!(!after[&format!("{u} state")].is_empty(), "{u}: cursors");
    }
    // The erasure manifests name nobody; the erasure is recorded under a keyed hash.
    let manifests: Vec<Value> = std::fs::read_dir(lake.join("_manifests"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("forget-"))
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect();
    assert_eq!(manifests.len(), 2);
    assert!(manifests.iter().all(|m| m["user_id_hmac_sha256"].as_str().is_some_and(|h| h.len() == 64)), "{manifests:?}");
    assert!(!manifests.iter().any(|m| m.get("user_id_sha256").is_some()), "no unkeyed hash of a guessable id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_with_a_files_sink_inside_the_lake_leaves_nothing_that_names_the_person() {
    forget_erases_everything_that_names_the_person(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_with_a_files_sink_outside_the_lake_leaves_nothing_that_names_the_person() {
    forget_erases_everything_that_names_the_person(false).await;
}
