//! The sync engine end to end against the simulator over real HTTP: backfill, incremental,
//! resume after a kill, shards, exit codes, status and the demo. Expected values are computed
//! from the simulator's own raw answers, not from the library.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Float64Type;
use chrono::{DateTime, NaiveDate};
use serde_json::Value;
use withings_lake::credentials::{Cipher, CredentialStore};
use withings_lake::lake::{Lake, TableId};
use withings_lake::link::LinkRequest;
use withings_lake::schema::Resource;
use withings_lake::secret::Secret;
use withings_lake::sync::{Engine, Mode, Report, RunSpec, SyncConfig, Users};
use withings_lake::withings::{ClientConfig, WithingsClient};
use withings_simulator::SimConfig;

use crate::common::{self, NOW, Sim};

const SECRET_VAR: &str = "WL_TEST_CLIENT_SECRET";

pub(crate) fn client(sim: &Sim, rpm: u32) -> WithingsClient {
    WithingsClient::new(ClientConfig {
        base_url: sim.base.clone(),
        client_id: "demo-client".into(),
        client_secret: Secret::new("demo-secret".to_string()),
        requests_per_minute: rpm,
        concurrency: 4,
        ..ClientConfig::default()
    })
    .unwrap()
}

/// Links simulator users `0..n` as `user-<i>` through the OAuth flow (the redirect goes to a
/// loopback callback).
pub(crate) async fn link(sim: &Sim, creds: &Path, n: usize) -> Arc<CredentialStore> {
    link_with(sim, &client(sim, 0), creds, n).await
}

/// `link` over `c` (a test of the budget links with the client that then syncs: the token
/// requests count toward the same 60-second window).
pub(crate) async fn link_with(sim: &Sim, c: &WithingsClient, creds: &Path, n: usize) -> Arc<CredentialStore> {
    let cipher = Cipher::load(&creds.with_extension("key")).unwrap();
    let store = Arc::new(CredentialStore::open(&creds.display().to_string(), cipher).unwrap());
    let mut listener = withings_lake::link::CallbackListener::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    for i in 0..n {
        let idx = i.to_string();
        let req = LinkRequest::new(
            &format!("{}/oauth2_user/authorize2", sim.base),
            "demo-client",
            "user.info,user.metrics,user.activity,user.sleepevents",
            &listener.redirect_uri,
            &format!("user-{i}"),
            &[("sim_user", &idx)],
        )
        .unwrap();
        reqwest::get(&req.url).await.unwrap().error_for_status().unwrap();
        let cb = listener.next(Duration::from_secs(10)).await.unwrap();
        req.complete(c, &store, cb, false, None).await.unwrap();
    }
    store
}

pub(crate) async fn lake_at(dir: &Path, shards: u32) -> Lake {
    Lake::open_or_create(withings_lake::storage::open(&dir.display().to_string()).unwrap(), shards).await.unwrap()
}

pub(crate) fn spec(mode: Mode, now: i64) -> RunSpec {
    RunSpec {
        mode,
        users: Users::All,
        shard: None,
        now: DateTime::from_timestamp(now, 0).unwrap(),
        lease_wait: Duration::from_secs(5),
        dry_run: false,
    }
}

pub(crate) async fn run(engine: &Engine, spec: &RunSpec) -> Report {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    engine.run(spec, rx).await.unwrap()
}

pub(crate) fn d(days_before_now: i64) -> NaiveDate {
    DateTime::from_timestamp(NOW - days_before_now * 86_400, 0).unwrap().date_naive()
}

/// Every row of a table across its partitions (shard 0), without the bookkeeping columns,
/// one line per row: equal strings mean equal tables.
pub(crate) async fn table_lines(lake: &Lake, table: TableId, shard: u32) -> Vec<String> {
    let mut out = Vec::new();
    for p in lake.partitions(table, shard).await.unwrap() {
        let b = lake.read(table, &p, shard).await.unwrap();
        let keep: Vec<usize> =
            (0..b.num_columns()).filter(|i| !["ingested_at", "run_id"].contains(&b.schema().field(*i).name().as_str())).collect();
        let b = b.project(&keep).unwrap();
        let fmt = arrow::util::display::FormatOptions::default().with_null("∅");
        let cols: Vec<_> =
            b.columns().iter().map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &fmt).unwrap()).collect();
        for r in 0..b.num_rows() {
            out.push(cols.iter().map(|c| c.value(r).to_string()).collect::<Vec<_>>().join("|"));
        }
    }
    out
}

pub(crate) async fn all_rows(lake: &Lake, r: Resource) -> RecordBatch {
    let schema = r.schema().arrow();
    let mut batches = Vec::new();
    for shard in 0..lake.meta.shards {
        for p in lake.partitions(r.into(), shard).await.unwrap() {
            batches.push(lake.read(r, &p, shard).await.unwrap());
        }
    }
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

fn f64_col<'a>(b: &'a RecordBatch, name: &str) -> &'a arrow::array::PrimitiveArray<Float64Type> {
    b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}")).as_primitive::<Float64Type>()
}

fn user_mask(b: &RecordBatch, user: &str) -> Vec<usize> {
    let u = b.column_by_name("user_id").unwrap().as_string::<i32>();
    (0..b.num_rows()).filter(|i| u.value(*i) == user).collect()
}

/// Data requests per endpoint the simulator saw (token requests left out).
async fn sim_requests(sim: &Sim) -> BTreeMap<String, u64> {
    let stats = sim.stats().await;
    stats["requests"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(e, _)| !["requesttoken", "getnonce", "revoke"].contains(&e.as_str()))
        .map(|(e, by)| (e.clone(), by.as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum()))
        .collect()
}

#[tokio::test]
async fn backfill_agrees_with_what_the_simulator_served_and_costs_what_was_planned() {
    let sim = common::start(2, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let store = link(&sim, &dir.path().join("creds"), 2).await;
    let lake = lake_at(&dir.path().join("lake"), 1).await;
    let engine = Engine::new(lake.clone(), client(&sim, 0), store.clone(), SyncConfig::default());
    let before = sim_requests(&sim).await;
    let (from, to) = (d(13), d(0));
    let report = run(&engine, &spec(Mode::Backfill { from, to }, NOW)).await;
    assert_eq!((report.users.ok, report.users.failed), (2, 0), "{}", report.to_text());
    assert_eq!(report.exit_code(), 0);

    // The simulator saw exactly the planned requests, and no 601.
    let after = sim_requests(&sim).await;
    let seen: BTreeMap<String, u64> =
        after.iter().map(|(e, n)| (e.clone(), n - before.get(e).copied().unwrap_or(0))).filter(|(_, n)| *n > 0).collect();
    assert_eq!(seen, report.requests.planned, "{}", report.to_text());
    assert_eq!(report.requests.sent, report.requests.planned);
    assert_eq!(sim.stats().await["limit_violations"], 0);
    assert!(report.requests.planned["getintradayactivity"] >= 10, "{}", report.to_text());

    // Expected values from the simulator's raw answers, with each user's own token.
    let (start, end) = (
        from.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp(),
        to.succ_opt().unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp(),
    );
    let weight = all_rows(&lake, Resource::Weight).await;
    let activity = all_rows(&lake, Resource::Activity).await;
    let steps = all_rows(&lake, Resource::Steps).await;
    let sleep = all_rows(&lake, Resource::Sleep).await;
    for user in ["user-0", "user-1"] {
        let token = store.get(user).await.unwrap().unwrap().access_token.expose().to_string();
        let (s, e) = (start.to_string(), (end - 1).to_string());
        let meas =
            sim.body("/measure", &token, &[("action", "getmeas"), ("category", "1"), ("startdate", &s), ("enddate", &e)]).await;
        let kgs: Vec<f64> = meas["measuregrps"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["measures"].as_array().unwrap().iter())
            .filter(|m| m["type"] == 1)
            .map(|m| m["value"].as_f64().unwrap() * 10f64.powi(m["unit"].as_i64().unwrap() as i32))
            .collect();
        let rows = user_mask(&weight, user);
        assert_eq!(rows.len(), kgs.len(), "{user}: weight rows");
        let lake_sum: f64 = rows.iter().map(|i| f64_col(&weight, "value").value(*i)).sum();
        assert!((lake_sum - kgs.iter().sum::<f64>()).abs() < 1e-6, "{user}: weight sum");

        let (fs, ts) = (from.to_string(), to.to_string());
        let act = sim
            .body(
                "/v2/measure",
                &token,
                &[("action", "getactivity"), ("startdateymd", &fs), ("enddateymd", &ts), ("data_fields", "steps")],
            )
            .await;
        let acts = act["activities"].as_array().unwrap();
        let rows = user_mask(&activity, user);
        assert_eq!(rows.len(), acts.len(), "{user}: activity rows");
        let served: i64 = acts.iter().map(|a| a["steps"].as_i64().unwrap_or(0)).sum();
        let col = activity.column_by_name("steps").unwrap().as_primitive::<arrow::datatypes::Int64Type>();
        let stored: i64 = rows.iter().map(|i| col.value(*i)).sum();
        assert_eq!(stored, served, "{user}: activity steps");

        // Intraday steps of every wearable day, in that day's local window.
        let mut served_steps = 0i64;
        let mut served_samples = 0usize;
        for a in acts.iter().filter(|a| a["is_tracker"] == true) {
            let day: NaiveDate = a["date"].as_str().unwrap().parse().unwrap();
            let (a0, b0) = withings_lake::sync::plan::local_day(a["timezone"].as_str(), day);
            for (x, y) in withings_lake::withings::day_chunks(a0, b0) {
                let (xs, ys) = (x.to_string(), (y - 1).to_string());
                let body = sim
                    .body(
                        "/v2/measure",
                        &token,
                        &[("action", "getintradayactivity"), ("startdate", &xs), ("enddate", &ys), ("data_fields", "steps")],
                    )
                    .await;
                for (k, v) in body["series"].as_object().into_iter().flatten() {
                    let t: i64 = k.parse().unwrap();
                    if t >= x && t < y && v.get("steps").is_some_and(|s| !s.is_null()) {
                        served_samples += 1;
                        served_steps += v["steps"].as_i64().unwrap_or(0);
                    }
                }
            }
        }
        let rows = user_mask(&steps, user);
        assert_eq!(rows.len(), served_samples, "{user}: steps samples");
        let stored: f64 = rows.iter().map(|i| f64_col(&steps, "value").value(*i)).sum();
        assert_eq!(stored as i64, served_steps, "{user}: intraday steps");

        let summ = sim
            .body(
                "/v2/sleep",
                &token,
                &[("action", "getsummary"), ("startdateymd", &fs), ("enddateymd", &ts), ("data_fields", "total_sleep_time")],
            )
            .await;
        assert_eq!(user_mask(&sleep, user).len(), summ["series"].as_array().unwrap().len(), "{user}: sleep rows");
    }

    // The raw landing holds every listed record, and a re-run of the same window is free:
    // every window is already backfilled, nothing is fetched and nothing changes.
    let raw = lake.partitions(TableId::Raw(withings_lake::lake::Endpoint::Getactivity), 0).await.unwrap();
    assert!(!raw.is_empty());
    let again = run(&engine, &spec(Mode::Backfill { from, to }, NOW)).await;
    assert_eq!(again.requests.total_sent, 0, "{}", again.to_text());
    assert_eq!(again.rows_changed(), 0);
}

/// A sync right after a backfill (nothing new: the clock is frozen) costs what any idle sync
/// costs, the four listings a user: the backfill's listings count as the day's getmeas
/// re-list, and the records it handled inside the cursor overlap are not fetched again.
#[tokio::test]
async fn a_sync_right_after_a_backfill_costs_four_listings_a_user() {
    let users = 4;
    let sim = common::start(users, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let store = link(&sim, &dir.path().join("creds"), users).await;
    let lake = lake_at(&dir.path().join("lake"), 1).await;
    let engine = Engine::new(lake.clone(), client(&sim, 0), store, SyncConfig::default());
    // 35 days: the backfill covers the 30-day re-list window.
    run(&engine, &spec(Mode::Backfill { from: d(34), to: d(0) }, NOW)).await;
    let sync = run(&engine, &spec(Mode::Incremental, NOW)).await;
    let u = users as u64;
    let listings = BTreeMap::from([
        ("getactivity".to_string(), u),
        ("getmeas".to_string(), u),
        ("getworkouts".to_string(), u),
        ("sleep_getsummary".to_string(), u),
    ]);
    assert_eq!(sync.requests.sent, listings, "{}", sync.to_text());
    assert_eq!(sync.rows_changed(), 0, "{}", sync.to_text());
}

#[tokio::test]
async fn incremental_after_a_clock_advance_picks_up_late_data_and_nothing_else() {
    let sim = common::start(2, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let store = link(&sim, &dir.path().join("creds"), 2).await;
    let lake = lake_at(&dir.path().join("lake"), 1).await;
    let engine = Engine::new(lake.clone(), client(&sim, 0), store.clone(), SyncConfig::default());
    // 35 days: the incremental's daily getmeas re-list (30 days) stays inside the backfill.
    let (from, to) = (d(34), d(0));
    run(&engine, &spec(Mode::Backfill { from, to }, NOW)).await;

    sim.advance(8 * 3600).await;
    let later = NOW + 8 * 3600;
    let sync = run(&engine, &spec(Mode::Incremental, later)).await;
    assert_eq!(sync.users.ok, 2, "{}", sync.to_text());
    assert!(sync.rows["steps"].inserted > 0, "late intraday data arrives: {}", sync.to_text());
    let intraday = sync.requests.sent.get("getintradayactivity").copied().unwrap_or(0);
    assert!((1..=4).contains(&intraday), "only the changed days are re-fetched: {}", sync.to_text());

    // The lake now equals a fresh backfill made after the advance.
    let dir2 = tempfile::tempdir().unwrap();
    let store2 = link(&sim, &dir2.path().join("creds"), 2).await;
    let fresh = lake_at(&dir2.path().join("lake"), 1).await;
    let engine2 = Engine::new(fresh.clone(), client(&sim, 0), store2, SyncConfig::default());
    let to2 = DateTime::from_timestamp(later, 0).unwrap().date_naive();
    run(&engine2, &spec(Mode::Backfill { from, to: to2 }, later)).await;
    for r in Resource::ALL {
        let (a, b) = (table_lines(&lake, r.into(), 0).await, table_lines(&fresh, r.into(), 0).await);
        assert_eq!(a.len(), b.len(), "{r}: rows after incremental vs fresh backfill");
        assert!(a == b, "{r}: the incremental lake differs from a fresh backfill");
    }

    // Nothing new: an idle user costs the four listings, and nothing changes.
    let idle = run(&engine, &spec(Mode::Incremental, later)).await;
    assert_eq!(idle.requests.total_sent, 8, "{}", idle.to_text());
    assert_eq!(idle.rows_changed(), 0, "{}", idle.to_text());
}

#[tokio::test]
async fn a_historical_backfill_leaves_no_gap_and_a_refresh_of_activity_refetches_its_intraday() {
    let sim = common::start(1, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let store = link(&sim, &dir.path().join("creds"), 1).await;
    let lake = lake_at(&dir.path().join("lake"), 1).await;
    let engine = Engine::new(lake.clone(), client(&sim, 0), store, SyncConfig::default());
    // A window that ends 10 days ago: its first cursor must not hide the 10 days after it.
    run(&engine, &spec(Mode::Backfill { from: d(20), to: d(10) }, NOW)).await;
    let days_with_steps = |b: &RecordBatch| -> std::collections::BTreeSet<NaiveDate> {
        let t = b.column_by_name("start").unwrap().as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        t.values().iter().map(|v| DateTime::from_timestamp_micros(*v).unwrap().date_naive()).collect()
    };
    let before = days_with_steps(&all_rows(&lake, Resource::Steps).await);
    assert!(before.iter().all(|day| *day <= d(9)), "{before:?}");
    let sync = run(&engine, &spec(Mode::Incremental, NOW)).await;
    let after = days_with_steps(&all_rows(&lake, Resource::Steps).await);
    let later: Vec<_> = after.iter().filter(|day| **day > d(9)).collect();
    assert!(later.len() >= 5, "the days after the window arrive: {after:?} {}", sync.to_text());

    // refresh --families getactivity: the listing's cursor decides the intraday days, so the
    // refresh brings the intraday of changed days too (else they would be missed for good).
    sim.advance(4 * 3600).await;
    let mut s = spec(
        Mode::Refresh { families: [withings_lake::lake::Endpoint::Getactivity].into(), windows: Default::default() },
        NOW + 4 * 3600,
    );
    s.users = Users::Only(vec!["user-0".into()]);
    let r = run(&engine, &s).await;
    assert!(r.requests.sent.get("getintradayactivity").copied().unwrap_or(0) >= 1, "{}", r.to_text());
    assert!(!r.requests.sent.contains_key("getmeas"), "{}", r.to_text());
    // A user named on the command line who is not linked fails the run (exit 1).
    s.users = Users::Only(vec!["nobody".into()]);
    let r = run(&engine, &s).await;
    assert_eq!((r.users.failed, r.exit_code()), (1, 1), "{}", r.to_text());
}

#[tokio::test]
async fn shards_split_users_and_a_run_checks_the_shard_count() {
    let sim = common::start(4, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let store = link(&sim, &dir.path().join("creds"), 4).await;
    let lake = lake_at(&dir.path().join("lake"), 2).await;
    let cfg = SyncConfig { resources: vec![Resource::Weight, Resource::Activity], ..SyncConfig::default() };
    let engine = Engine::new(lake.clone(), client(&sim, 0), store, cfg);
    let mut seen = Vec::new();
    for i in 0..2 {
        let mut s = spec(Mode::Backfill { from: d(6), to: d(0) }, NOW);
        s.shard = Some((i, 2));
        let r = run(&engine, &s).await;
        assert_eq!(r.shards, vec![i]);
        seen.push(r.users.selected);
        let w = all_rows(&lake, Resource::Weight).await;
        let users = w.column_by_name("user_id").unwrap().as_string::<i32>();
        for u in users.iter().flatten() {
            assert!(withings_lake::lake::shard_of(u, 2) <= i, "{u} written by shard {i}");
        }
        for p in lake.partitions(Resource::Weight.into(), i).await.unwrap() {
            let b = lake.read(Resource::Weight, &p, i).await.unwrap();
            for u in b.column_by_name("user_id").unwrap().as_string::<i32>().iter().flatten() {
                assert_eq!(withings_lake::lake::shard_of(u, 2), i, "{u} in shard {i}'s file");
            }
        }
    }
    assert_eq!(seen.iter().sum::<usize>(), 4, "every user in exactly one shard");
    // Resources outside [sync] resources are not written, and intraday is never fetched.
    assert!(lake.partitions(Resource::Steps.into(), 0).await.unwrap().is_empty());
    let mut s = spec(Mode::Incremental, NOW);
    s.shard = Some((0, 3));
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let err = engine.run(&s, rx).await.unwrap_err();
    assert!(err.error.to_string().contains("the lake has 2 shards"), "{}", err.error);
}

#[tokio::test]
async fn dry_run_plans_without_a_request_and_a_rate_limited_backfill_never_trips_the_limit() {
    let mut cfg = common::config(1, 12);
    cfg.history_days = 30;
    let sim = common::start_with(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let limited = client(&sim, 12);
    let store = link_with(&sim, &limited, &dir.path().join("creds"), 1).await;
    let lake = lake_at(&dir.path().join("lake"), 1).await;
    let engine = Engine::new(lake.clone(), limited, store, SyncConfig::default());
    let before = sim.stats().await["total_requests"].as_u64().unwrap();
    let mut s = spec(Mode::Backfill { from: d(4), to: d(0) }, NOW);
    s.dry_run = true;
    let plan = run(&engine, &s).await;
    let est = plan.plan.clone().unwrap();
    assert_eq!(sim.stats().await["total_requests"].as_u64().unwrap(), before, "a dry run sends nothing");
    assert_eq!(est.requests["getmeas"], 2, "one listing and the height lookup");
    assert_eq!(est.requests["getintradayactivity"], 5);
    assert_eq!(est.eta_seconds, est.total * 60 / 12);
    assert!(plan.to_text().contains("plan for 1 users"));

    // More requests than the 12/minute window holds: the limiter waits, Withings never says 601.
    s.dry_run = false;
    let r = run(&engine, &s).await;
    assert!(r.requests.total_sent > 12, "{}", r.to_text());
    assert!(r.requests.total_sent <= est.total, "the estimate is an upper bound: {}", r.to_text());
    assert_eq!(r.requests.rate_limited, 0);
    assert_eq!(sim.stats().await["limit_violations"], 0);
    assert!(r.requests.limiter_wait_seconds > 1.0, "{}", r.to_text());
}

// ---- the binary: exit codes, resume after a kill, status, the demo ----

pub(crate) fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_withings-lake"));
    c.env(SECRET_VAR, "demo-secret").env_remove("WITHINGS_LAKE_KEY").args(["--log-format", "json"]);
    c
}

pub(crate) async fn exec(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || bin().args(&args).output().unwrap()).await.unwrap()
}

pub(crate) fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

pub(crate) fn pipeline(dir: &Path, sim: &Sim, extra: &str) -> PathBuf {
    let path = dir.join("pipeline.toml");
    std::fs::write(
        &path,
        format!(
            "[source]\napi_base_url = \"{}\"\nclient_id = \"demo-client\"\nclient_secret_env = \"{SECRET_VAR}\"\nrequests_per_minute = 6000\nconcurrency = 2\n\n[credentials]\nurl = \"creds\"\nkey_file = \"creds.key\"\n\n[lake]\nurl = \"lake\"\n\n{extra}\n",
            sim.base
        ),
    )
    .unwrap();
    path
}

pub(crate) fn report_of(o: &Output) -> Value {
    let line = String::from_utf8_lossy(&o.stdout).lines().last().map(str::to_string).unwrap_or_default();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("no JSON report ({e}): {}", text(o)))
}

#[tokio::test]
async fn exit_codes_come_from_real_situations() {
    let sim = common::start(2, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &sim, "").display().to_string();
    let store = link(&sim, &dir.path().join("creds"), 2).await;
    let now = DateTime::from_timestamp(NOW, 0).unwrap().to_rfc3339();
    let sync = |extra: &[&str]| {
        let mut v: Vec<String> =
            ["sync", "--pipeline", &p, "--report", "json", "--now", &now].iter().map(|s| s.to_string()).collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    // 0: every user synced.
    let ok = exec(sync(&[])).await;
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert_eq!(report_of(&ok)["users"]["ok"], 2);

    // 1: a user revoked the authorization at Withings; the report names them, the other
    // user is synced.
    let user1 = store.get("user-1").await.unwrap().unwrap();
    client(&sim, 0).revoke_user(&user1.withings_userid).await.unwrap();
    let partial = exec(sync(&[])).await;
    assert_eq!(partial.status.code(), Some(1), "{}", text(&partial));
    let r = report_of(&partial);
    assert_eq!(r["users"]["ok"], 1, "{r}");
    assert_eq!(r["failures"][0]["user_id"], "user-1", "{r}");
    assert_eq!(r["failures"][0]["class"], "auth", "{r}");
    // Known to need a new link: skipped and listed, not a new failure.
    let after = exec(sync(&[])).await;
    assert_eq!(after.status.code(), Some(0), "{}", text(&after));
    assert_eq!(report_of(&after)["users"]["needs_reauth"][0], "user-1");
    let status = exec(vec!["status".into(), "--pipeline".into(), p.clone(), "--format".into(), "json".into()]).await;
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    let st: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(st["needs_reauth"], serde_json::json!(["user-1"]));
    let u0 = st["users"].as_array().unwrap().iter().find(|u| u["user_id"] == "user-0").unwrap();
    let gm = u0["families"].as_array().unwrap().iter().find(|f| f["family"] == "getmeas").unwrap();
    assert!(gm["cursor"].is_string() && gm["lag_seconds"].as_i64().unwrap() >= 0 && gm["last_error"].is_null(), "{gm}");
    let table = exec(vec!["status".into(), "--pipeline".into(), p.clone()]).await;
    assert!(text(&table).contains("must link again: user-1"), "{}", text(&table));

    // 3: another writer holds the shard lease.
    let lake = Lake::open(withings_lake::storage::open(&dir.path().join("lake").display().to_string()).unwrap()).await.unwrap();
    let held = lake.lease_shard(0, "airflow-task-7", Duration::ZERO).await.unwrap();
    let busy = exec(sync(&[])).await;
    assert_eq!(busy.status.code(), Some(3), "{}", text(&busy));
    assert!(text(&busy).contains("airflow-task-7"), "{}", text(&busy));
    held.release().await;

    // 2: a key the pipeline format does not have, named with its file.
    let bad = pipeline(dir.path(), &sim, "[sync]\ncheckpoint_every = 5\n").display().to_string();
    let out = exec(vec!["sync".into(), "--pipeline".into(), bad.clone()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("checkpoint_every") && text(&out).contains("pipeline.toml"), "{}", text(&out));
    let out = exec(vec!["backfill".into(), "--pipeline".into(), p.clone(), "--shard".into(), "0/5".into()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    for o in [&ok, &partial, &after, &busy] {
        for secret in ["demo-secret", user1.refresh_token.expose(), user1.access_token.expose()] {
            assert!(!text(o).contains(secret), "a secret reached the output");
        }
    }
}

/// Files and rows of every resource and raw table, for comparing two lakes.
pub(crate) async fn snapshot(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let lake = Lake::open(withings_lake::storage::open(&dir.display().to_string()).unwrap()).await.unwrap();
    let mut out = BTreeMap::new();
    for t in TableId::all() {
        if t == TableId::Quarantine {
            continue;
        }
        out.insert(t.sql_name(), table_lines(&lake, t, 0).await);
    }
    out
}

fn manifests(lake: &Path) -> usize {
    std::fs::read_dir(lake.join("_manifests")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn a_killed_backfill_resumes_to_the_same_lake_and_sigterm_commits_before_exiting() {
    let mut cfg: SimConfig = common::config(3, 0);
    // Slow enough (about 3 s per backfill) that the kill and the signal land mid-run.
    cfg.latency_ms = 50;
    let sim = common::start_with(cfg).await;
    let now = DateTime::from_timestamp(NOW, 0).unwrap().to_rfc3339();
    let backfill = |p: &str| -> Vec<String> {
        ["backfill", "--pipeline", p, "--from", &d(20).to_string(), "--to", &d(0).to_string(), "--report", "json", "--now", &now]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let sync_cfg = "[sync]\ncheckpoint_interval_seconds = 1\n";

    // The reference: one uninterrupted run.
    let whole = tempfile::tempdir().unwrap();
    let p = pipeline(whole.path(), &sim, sync_cfg).display().to_string();
    link(&sim, &whole.path().join("creds"), 3).await;
    let out = exec(backfill(&p)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let full_requests = report_of(&out)["requests"]["total_sent"].as_u64().unwrap();

    // SIGKILL right after the first checkpoint recorded progress (a crash point: the kill lands
    // there whatever the machine's load), then the same command again.
    let killed = tempfile::tempdir().unwrap();
    let p = pipeline(killed.path(), &sim, sync_cfg).display().to_string();
    link(&sim, &killed.path().join("creds"), 3).await;
    let lake_dir = killed.path().join("lake");
    let mut cmd = bin();
    cmd.args(backfill(&p));
    tokio::task::spawn_blocking(move || crate::lake_rebuild::crash_at(cmd, "after:1:/lake/_state/users/")).await.unwrap();
    assert!(manifests(&lake_dir) >= 1, "the backfill committed a checkpoint before it was killed");
    let resumed = exec(backfill(&p)).await;
    assert_eq!(resumed.status.code(), Some(0), "the dead writer's lease does not block: {}", text(&resumed));
    let resumed_requests = report_of(&resumed)["requests"]["total_sent"].as_u64().unwrap();
    assert!(resumed_requests < full_requests, "committed windows are skipped: {resumed_requests} vs {full_requests}");
    let (a, b) = (snapshot(&whole.path().join("lake")).await, snapshot(&lake_dir).await);
    for (t, rows) in &a {
        assert_eq!(rows.len(), b[t].len(), "{t}: rows");
        assert!(rows == &b[t], "{t}: the resumed lake differs from the uninterrupted one");
    }

    // SIGTERM: the run stops fetching, commits what it staged, reports `interrupted`, exits 1.
    let termed = tempfile::tempdir().unwrap();
    let p = pipeline(termed.path(), &sim, "[sync]\ncheckpoint_interval_seconds = 3600\n").display().to_string();
    link(&sim, &termed.path().join("creds"), 3).await;
    let served = |m: BTreeMap<String, u64>| m.values().sum::<u64>();
    let before = served(sim_requests(&sim).await);
    // stderr to a file: a pipe nobody reads while the run goes on could fill and stall it.
    let log = termed.path().join("stderr.log");
    let mut child = bin().args(backfill(&p)).stdout(Stdio::piped()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    // The signal comes once the run has done half its requests (by the simulator's count, not
    // a clock), so it has staged pieces to commit and work left to stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while served(sim_requests(&sim).await) - before < full_requests / 2 {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before the signal");
        assert!(std::time::Instant::now() < deadline, "the run never got half way");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(manifests(&termed.path().join("lake")), 0, "nothing committed before the signal (hourly checkpoints)");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(out.status.code(), Some(1), "{}{logged}", text(&out));
    let r = report_of(&out);
    assert_eq!(r["interrupted"], true, "{r}");
    assert!(manifests(&termed.path().join("lake")) >= 1, "the staged pieces were committed");
    let rest = exec(backfill(&p)).await;
    assert_eq!(rest.status.code(), Some(0), "{}", text(&rest));
    let c = snapshot(&termed.path().join("lake")).await;
    assert!(a == c, "finishing an interrupted backfill gives the same lake");
}

#[cfg(feature = "simulator")]
#[tokio::test]
async fn the_demo_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = exec(vec![
        "demo".into(),
        "--dir".into(),
        dir.path().display().to_string(),
        "--users".into(),
        "2".into(),
        "--days".into(),
        "5".into(),
    ])
    .await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    for want in ["linked demo-user-1", "linked demo-user-2", "backfill", "incremental sync", "avg_daily_steps", "demo-user-2"] {
        assert!(all.contains(want), "missing '{want}': {all}");
    }
    assert!(dir.path().join("demo-lake/_lake.json").exists());
    // Every event the demo wrote passes Vital's own SDK models (only hypnogram has none).
    if common::vital_available() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vital/check_events.py");
        let files = dir.path().join("demo-lake/_events/files");
        let out = Command::new("python3").arg(script).arg(&files).output().unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(out.status.success() && report["invalid"] == 0, "{report:#}");
        assert!(report["events"].as_u64().unwrap() > 50, "{report:#}");
        let without = report["without_model"].as_object().unwrap();
        assert!(without.keys().all(|t| t.contains(".hypnogram.")), "{report:#}");
    }
    // A folder that is not a previous demo's is never deleted.
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(other.path().join("demo-lake")).unwrap();
    std::fs::write(other.path().join("demo-lake/precious.csv"), "keep me").unwrap();
    let refused = exec(vec!["demo".into(), "--dir".into(), other.path().display().to_string()]).await;
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("precious.csv") && other.path().join("demo-lake/precious.csv").exists());
    // A second demo replaces the first one's folders.
    let again = exec(vec![
        "demo".into(),
        "--dir".into(),
        dir.path().display().to_string(),
        "--users".into(),
        "1".into(),
        "--days".into(),
        "2".into(),
    ])
    .await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
}

#[test]
fn shipped_pipeline_files_parse_and_the_example_names_every_sync_key() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    for f in ["example.toml", "s3.toml", "local-simulator.toml"] {
        let p = withings_lake::pipeline::PipelineFile::load(&dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        p.sync_config().unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    let example = std::fs::read_to_string(dir.join("example.toml")).unwrap();
    for key in [
        "resources",
        "backfill_days",
        "backfill_limit_days",
        "checkpoint_interval_seconds",
        "checkpoint_max_staged_mb",
        "cursor_overlap_seconds",
        "relist_days",
        "relist_every_hours",
        "users_in_parallel",
        "staging_dir",
        "requests_per_minute",
        "concurrency",
        "client_secret_env",
        "shards",
        "key_file",
        "team_id",
        "max_samples_per_event",
        "history_as_daily",
        "final_wait_seconds",
        "delivered_retention_days",
        "name",
        "url",
        "secret_env",
        "event_types",
        "max_events_per_second",
        "timeout_seconds",
        "retry_schedule_seconds",
        "prefix",
        // [serve]: every key.
        "listen",
        "public_url",
        "api_keys_env",
        "notify_secret_env",
        "signing_key_env",
        "redirect_urls",
        "link_token_minutes",
        "coalesce_seconds",
        "poll_interval_seconds",
        "poll_batch",
        "refreshes_per_hour",
        "erasure_grace_hours",
        "leader_lease_seconds",
        "reconcile_hours",
        "read_max_days",
        "read_page_size",
        "drain_seconds",
        "subscribe",
        "batch_share_percent",
    ] {
        assert!(example.contains(&format!("{key} =")), "example.toml does not show {key}");
    }
    // Its [events] section resolves once the secret's variable is set.
    let p = withings_lake::pipeline::PipelineFile::load(&dir.join("example.toml")).unwrap();
    let err = p.resolve_events().unwrap_err().to_string();
    assert!(err.contains("WITHINGS_LAKE_WEBHOOK_SECRET") && err.contains("analytics"), "{err}");
    let p = withings_lake::pipeline::PipelineFile::load(&dir.join("s3.toml")).unwrap();
    assert_eq!((p.shards(), p.sync_config().unwrap().resources.len()), (4, 18));
}

#[tokio::test]
async fn a_missing_or_wrong_key_an_empty_store_and_a_corrupt_record_are_never_green() {
    use std::os::unix::fs::PermissionsExt;
    let sim = common::start(2, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &sim, "").display().to_string();
    let now = DateTime::from_timestamp(NOW, 0).unwrap().to_rfc3339();
    let sync = || -> Vec<String> {
        ["sync", "--pipeline", &p, "--report", "json", "--now", &now].iter().map(|s| s.to_string()).collect()
    };

    // No linked user at all: nothing to sync is a configuration to fix.
    let out = exec(sync()).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("holds no linked user"), "{}", text(&out));

    link(&sim, &dir.path().join("creds"), 2).await;
    let key = dir.path().join("creds.key");
    let saved = std::fs::read(&key).unwrap();

    // The key file is missing (a new worker, a typo): no key is created beside the records.
    std::fs::remove_file(&key).unwrap();
    let out = exec(sync()).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    for want in ["holds 2 records", "creds.key", "WITHINGS_LAKE_KEY", "creds"] {
        assert!(text(&out).contains(want), "missing '{want}': {}", text(&out));
    }
    assert!(!key.exists(), "no new key was created while the store holds records");

    // Another key: no record opens.
    std::fs::write(&key, hex::encode([9u8; 32])).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = exec(sync()).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("none of its 2 records opens") && text(&out).contains("creds.key"), "{}", text(&out));

    // A key file others can read is refused.
    std::fs::write(&key, &saved).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = exec(sync()).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("chmod 600"), "{}", text(&out));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // One corrupt record among good ones: that user fails, by name; the other is synced.
    std::fs::write(dir.path().join("creds/users/user-1.cred"), b"WLC1 not a record at all, just bytes").unwrap();
    let out = exec(sync()).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r = report_of(&out);
    assert_eq!(r["users"]["ok"], 1, "{r}");
    assert_eq!(r["failures"][0]["user_id"], "user-1", "{r}");
    assert_eq!(r["failures"][0]["class"], "data", "{r}");

    // Without the key a person can still be erased (records are deleted unread); the manifest
    // then has no hash of the id, and still no key is created.
    std::fs::remove_file(&key).unwrap();
    let out = exec(vec!["forget".into(), "--pipeline".into(), p.clone(), "--user-id".into(), "user-0".into()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["credentials_removed"].as_bool().unwrap() && report["user_id_hmac_sha256"].is_null(), "{report}");
    assert!(report["rows_removed"].as_u64().unwrap() > 0, "{report}");
    assert!(!dir.path().join("creds/users/user-0.cred").exists() && !key.exists());
}

/// Every numeric key of a pipeline file, by section.
const NUMERIC_KEYS: &[(&str, &str)] = &[
    ("source", "requests_per_minute"),
    ("source", "concurrency"),
    ("lake", "shards"),
    ("sync", "backfill_days"),
    ("sync", "backfill_limit_days"),
    ("sync", "checkpoint_interval_seconds"),
    ("sync", "checkpoint_max_staged_mb"),
    ("sync", "cursor_overlap_seconds"),
    ("sync", "relist_days"),
    ("sync", "relist_every_hours"),
    ("sync", "users_in_parallel"),
    ("events", "max_samples_per_event"),
    ("events", "final_wait_seconds"),
    ("events", "delivered_retention_days"),
    ("webhook", "max_events_per_second"),
    ("webhook", "timeout_seconds"),
    ("webhook", "concurrency"),
    ("webhook", "retry_schedule_seconds"),
];

/// A pipeline file with `key = value` in its section (and every section present).
fn numeric_pipeline(dir: &Path, sim: &Sim, section: &str, key: &str, value: &str) -> PathBuf {
    let at = |s: &str| if s == section { format!("{key} = {value}\n") } else { String::new() };
    let text = format!(
        "[source]\napi_base_url = \"{}\"\nclient_id = \"demo-client\"\nclient_secret_env = \"{SECRET_VAR}\"\n{}\n[credentials]\nurl = \"creds\"\nkey_file = \"creds.key\"\n\n[lake]\nurl = \"lake\"\n{}\n[sync]\n{}\n[events]\n{}\n[[events.webhooks]]\nname = \"hook\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret_env = \"WL_TEST_WEBHOOK_SECRET\"\n{}",
        sim.base,
        at("source"),
        at("lake"),
        at("sync"),
        at("events"),
        at("webhook")
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn every_numeric_setting_is_accepted_or_refused_by_name_never_a_panic() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(common::start(1, 0));
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(link(&sim, &dir.path().join("creds"), 1));
    let now = DateTime::from_timestamp(NOW, 0).unwrap().to_rfc3339();
    let run = |section: &str, key: &str, value: &str| -> Output {
        let p = numeric_pipeline(dir.path(), &sim, section, key, value);
        bin()
            .env("WL_TEST_WEBHOOK_SECRET", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
            .args(["sync", "--dry-run", "--pipeline", p.to_str().unwrap(), "--now", &now])
            .output()
            .unwrap()
    };
    let check = |section: &str, key: &str, value: &str| -> Result<(), String> {
        let out = run(section, key, value);
        let all = text(&out);
        // 2 names its cause: the file and key for a number out of range, the lake for a shard
        // count that differs from the lake's, and so on.
        match out.status.code() {
            Some(0) => Ok(()),
            Some(2) if all.contains("error: ") && !all.contains("panicked") => Ok(()),
            code => Err(format!("{key} = {value}: exit {code:?} (0, or 2 with its cause): {all}")),
        }
    };
    // The values that panicked before, each a configuration error naming its key.
    for (section, key, value) in [
        ("webhook", "timeout_seconds", "nan"),
        ("webhook", "timeout_seconds", "inf"),
        ("webhook", "timeout_seconds", "1e300"),
        ("webhook", "retry_schedule_seconds", "[1e300]"),
        ("webhook", "max_events_per_second", "1e-300"),
        ("sync", "checkpoint_interval_seconds", "18446744073709551615"),
        ("sync", "backfill_days", "100000000"),
    ] {
        let out = run(section, key, value);
        assert_eq!(out.status.code(), Some(2), "{key} = {value}: {}", text(&out));
        assert!(text(&out).contains(key) && text(&out).contains("pipeline.toml"), "{key} = {value}: {}", text(&out));
    }
    // Flags: out-of-range waits and a zero budget are usage errors; `unlimited` needs loopback.
    let p = numeric_pipeline(dir.path(), &sim, "", "", "").display().to_string();
    for args in [
        vec!["events", "deliver", "--pipeline", &p, "--wait-seconds", "18446744073709551615"],
        vec!["sync", "--pipeline", &p, "--lease-wait-seconds", "18446744073709551615"],
        vec!["sync", "--pipeline", &p, "--requests-per-minute", "0"],
    ] {
        let out = bin().env("WL_TEST_WEBHOOK_SECRET", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
    let out = bin()
        .env("WL_TEST_WEBHOOK_SECRET", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
        .args(["sync", "--dry-run", "--pipeline", &p, "--requests-per-minute", "unlimited", "--now", &now])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "unlimited against the loopback simulator: {}", text(&out));

    // Random values for every key: accepted (exit 0) or refused by name (exit 2), never 101.
    let values = prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("-inf".to_string()),
        Just("18446744073709551615".to_string()),
        Just("9223372036854775807".to_string()),
        Just("[1e308, -0.0]".to_string()),
        any::<u64>().prop_map(|v| v.to_string()),
        (0u64..100_000).prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        (-1e6f64..1e6).prop_map(|v| format!("{v:?}")),
    ];
    // A fixed seed: the same 150 cases on every run (a failure is reproducible, never luck).
    let mut runner = proptest::test_runner::TestRunner::new_with_rng(
        proptest::test_runner::Config { cases: 150, failure_persistence: None, ..proptest::test_runner::Config::default() },
        proptest::test_runner::TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    runner
        .run(&(proptest::sample::select(NUMERIC_KEYS), values), |((section, key), value)| {
            let value = if key == "retry_schedule_seconds" && !value.starts_with('[') { format!("[{value}]") } else { value };
            check(section, key, &value).map_err(proptest::test_runner::TestCaseError::fail)
        })
        .unwrap();
}
