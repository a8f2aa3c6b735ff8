//! Change events from real runs against the simulator over real HTTP, delivered to a loopback
//! receiver started here: a backfill announces history only, a sync announces each change
//! once (the samples add up to the rows the commit inserted and updated), an idle run
//! announces nothing, the signatures pass the Svix library (PyPI), connection events, the
//! events of a commit that died before its outbox write are recovered, and a run killed
//! between its outbox write and delivery loses nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use withings_lake::events::{EventsConfig, Filter, Sink, SinkKind, Webhook, default_retry_schedule, sign};
use withings_lake::lake::{Coverage, TableId, Unit};
use withings_lake::schema::Resource;
use withings_lake::sync::{Engine, Mode, SyncConfig};

use crate::common::{self, NOW};
use crate::sync::{bin, client, d, exec, lake_at, link, pipeline, report_of, run, spec, text};

pub(crate) const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
pub(crate) const SECRET_ENV: &str = "WL_TEST_WEBHOOK_SECRET";

/// One request the receiver got: its headers and raw body.
#[derive(Debug, Clone)]
pub(crate) struct Got {
    headers: BTreeMap<String, String>,
    body: String,
    /// The status answered (0: it hung).
    answered: u16,
}

impl Got {
    pub(crate) fn envelope(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
    pub(crate) fn event_type(&self) -> String {
        self.envelope()["event_type"].as_str().unwrap().to_string()
    }
    pub(crate) fn id(&self) -> &str {
        &self.headers["webhook-id"]
    }
}

/// What the receiver's handler shares: the requests, and the status to answer.
type Shared = (Arc<Mutex<Vec<Got>>>, Arc<AtomicU16>);

/// A loopback webhook receiver: records every request, answers `status` (0 = hang for a
/// minute).
#[derive(Clone)]
pub(crate) struct Receiver {
    pub(crate) url: String,
    got: Arc<Mutex<Vec<Got>>>,
    pub(crate) status: Arc<AtomicU16>,
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let status = Arc::new(AtomicU16::new(200));
        let state = (got.clone(), status.clone());
        async fn hook(State((got, status)): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
            let s = status.load(Ordering::SeqCst);
            let headers = headers.iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect();
            got.lock().unwrap().push(Got { headers, body: String::from_utf8(body.to_vec()).unwrap(), answered: s });
            if s == 0 {
                tokio::time::sleep(Duration::from_secs(60)).await;
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            StatusCode::from_u16(s).unwrap()
        }
        let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, got, status }
    }

    pub(crate) fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Distinct events received and accepted (a retry repeats an id), in order.
    pub(crate) fn events(&self) -> Vec<Got> {
        let mut seen = BTreeSet::new();
        self.got().into_iter().filter(|g| g.answered == 200 && seen.insert(g.id().to_string())).collect()
    }
}

/// A simulator with `users` linked, a local lake, a receiver, and an engine whose events go
/// to the receiver (at most `max_samples` per event).
struct World {
    sim: common::Sim,
    dir: tempfile::TempDir,
    receiver: Receiver,
    store: Arc<withings_lake::credentials::CredentialStore>,
    lake: withings_lake::lake::Lake,
    engine: Engine,
}

async fn world(users: usize, max_samples: usize) -> World {
    let sim = common::start(users, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let store = link(&sim, &dir.path().join("creds"), users).await;
    let lake = lake_at(&dir.path().join("lake"), 1).await;
    let engine = Engine::new(lake.clone(), client(&sim, 0), store.clone(), SyncConfig::default())
        .with_events(Some(events_config(&receiver.url, max_samples)));
    World { sim, dir, receiver, store, lake, engine }
}

fn events_config(url: &str, max_samples: usize) -> EventsConfig {
    EventsConfig {
        team_id: "team-test".into(),
        max_samples_per_event: max_samples,
        history_as_daily: false,
        final_wait: Duration::from_secs(5),
        delivered_retention: None,
        sinks: vec![Sink {
            name: "hook".into(),
            filter: Filter::default(),
            kind: SinkKind::Webhook(Webhook {
                url: url.to_string(),
                key: sign::key_of(SECRET).unwrap(),
                max_per_second: None,
                timeout: Duration::from_secs(5),
                concurrency: 4,
            }),
            retry_schedule: default_retry_schedule(),
        }],
        ..EventsConfig::default()
    }
}

/// Whether python3 can import svix (PyPI); with `CI=true` it must.
fn svix_available() -> bool {
    common::python_module("svix", "svix")
}

/// Verifies every request with the Svix library, once with the `svix-*` headers only and once
/// with the `webhook-*` headers only, and checks that a changed body is refused. Returns the
/// number verified.
fn svix_verify(dir: &Path, got: &[Got]) -> usize {
    let requests: Vec<Value> = got.iter().map(|g| json!({"headers": g.headers, "body": g.body})).collect();
    let file = dir.join("requests.json");
    std::fs::write(&file, serde_json::to_vec(&requests).unwrap()).unwrap();
    let script = r#"
import json, sys
from svix.webhooks import Webhook, WebhookVerificationError
wh = Webhook(sys.argv[1])
n = 0
for r in json.load(open(sys.argv[2])):
    for prefix in ("svix-", "webhook-"):
        h = {k: v for k, v in r["headers"].items() if k.startswith(prefix)}
        assert len(h) == 3, h
        wh.verify(r["body"], h)  # raises unless the signature and timestamp are right
    try:
        wh.verify(r["body"] + " ", {k: v for k, v in r["headers"].items() if k.startswith("svix-")})
        raise SystemExit("a changed body was accepted")
    except WebhookVerificationError:
        pass
    n += 1
print(n)
"#;
    let out = std::process::Command::new("python3").args(["-c", script, SECRET]).arg(&file).output().unwrap();
    assert!(out.status.success(), "svix refused a delivery: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The resources whose history is announced by default: all but sleep_stream (no Vital
/// version defines its events; `sleep_stream_events` turns them on).
const ANNOUNCED: usize = 17;

fn samples(g: &Got) -> usize {
    g.envelope()["data"]["data"].as_array().map(Vec::len).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_announces_history_a_sync_each_change_once_and_an_idle_run_nothing() {
    let World { sim, dir, receiver, store: _store, lake, engine } = world(2, 100).await;

    // A backfill: one historical.data.<resource>.created per user and resource, no rows.
    let (from, to) = (d(34), d(0));
    let backfill = run(&engine, &spec(Mode::Backfill { from, to }, NOW)).await;
    let ev = backfill.events.as_ref().expect("an events report");
    assert!(ev.enqueued.keys().all(|t| t.starts_with("historical.data.")), "{}", backfill.to_text());
    assert_eq!(ev.enqueued.values().sum::<u64>(), 2 * ANNOUNCED as u64, "{}", backfill.to_text());
    assert_eq!(ev.delivery.delivered, 2 * ANNOUNCED as u64, "{}", backfill.to_text());
    let history = receiver.events();
    assert_eq!(history.len(), 2 * ANNOUNCED);
    for g in &history {
        let e = g.envelope();
        assert_eq!(e["team_id"], "team-test");
        // Vital's identity: a UUID `user_id` derived from the application's id (no Vital id
        // was given), the application's id in `client_user_id`.
        let app = e["client_user_id"].as_str().unwrap();
        assert!(app.starts_with("user-"), "{e}");
        assert_eq!(e["user_id"], withings_lake::credentials::derived_vital_user_id(app));
        assert_eq!(e["data"]["provider"], "withings");
        assert_eq!(e["data"]["user_id"], e["user_id"]);
        let (s, end) = (e["data"]["start_date"].as_str().unwrap(), e["data"]["end_date"].as_str().unwrap());
        assert!(s.starts_with(&(from - chrono::Days::new(1)).to_string()) || s.starts_with(&from.to_string()), "{s}");
        assert!(end > s && end[..10] >= *to.to_string(), "{s} .. {end} for {from} .. {to}");
    }
    let per_type: BTreeSet<String> = history.iter().map(Got::event_type).collect();
    assert_eq!(per_type.len(), ANNOUNCED, "one per resource: {per_type:?}");

    // +8 h: late data. Each change is announced once, as created or updated.
    sim.advance(8 * 3600).await;
    let later = NOW + 8 * 3600;
    let sync = run(&engine, &spec(Mode::Incremental, later)).await;
    let ev = sync.events.as_ref().unwrap();
    assert!(ev.enqueued.keys().all(|t| t.starts_with("daily.data.")), "{}", sync.to_text());
    assert_eq!(ev.delivery.dead + ev.delivery.pending, 0, "{}", sync.to_text());
    let daily: Vec<Got> = receiver.events().into_iter().skip(history.len()).collect();
    assert_eq!(daily.len() as u64, ev.enqueued.values().sum::<u64>());
    // Per resource: the samples (or summaries) of created and updated events are exactly the
    // rows the commits inserted and updated.
    let mut announced: BTreeMap<(String, &str), u64> = BTreeMap::new();
    for g in &daily {
        let t = g.event_type();
        let parts: Vec<&str> = t.split('.').collect();
        let resource = parts[2].parse::<Resource>().unwrap();
        let n = match resource.schema().kind {
            withings_lake::schema::Kind::Summary => 1,
            _ => samples(g) as u64,
        };
        let kind = if t.ends_with(".created") { "inserted" } else { "updated" };
        *announced.entry((resource.as_str().to_string(), kind)).or_default() += n;
        assert!(samples(g) <= 100, "chunked to 100 samples: {t} has {}", samples(g));
    }
    for r in Resource::ALL {
        let rows = sync.rows.get(r.as_str()).cloned().unwrap_or_default();
        let got = |k| announced.get(&(r.as_str().to_string(), k)).copied().unwrap_or(0);
        assert_eq!(got("inserted"), rows.inserted, "{r}: created samples vs rows inserted");
        assert_eq!(got("updated"), rows.updated, "{r}: updated samples vs rows updated");
    }
    assert!(sync.rows["steps"].inserted > 100, "enough steps to need several chunks: {}", sync.to_text());
    assert!(daily.iter().filter(|g| g.event_type() == "daily.data.steps.created").count() >= 2);
    // A time-series event in Vital's sample shape.
    let steps = daily.iter().find(|g| g.event_type() == "daily.data.steps.created").unwrap().envelope();
    assert_eq!(steps["data"]["source"]["provider"], "withings");
    assert_eq!(steps["data"]["user_id"], steps["user_id"]);
    let s = &steps["data"]["data"][0];
    for k in ["timestamp", "start", "end", "value", "unit", "timezone_offset", "type"] {
        assert!(s.get(k).is_some(), "sample without {k}: {s}");
    }
    assert_eq!(s["timestamp"], s["start"]);
    let times: Vec<&str> = steps["data"]["data"].as_array().unwrap().iter().map(|s| s["timestamp"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "samples in time order");
    // A summary carries the harmonized object at Vital's paths.
    if let Some(a) = daily.iter().find(|g| g.event_type().starts_with("daily.data.activity.")) {
        let a = a.envelope();
        assert!(a["data"]["id"].is_string() && a["data"]["calendar_date"].is_string(), "{a}");
        assert_eq!(a["data"]["source"]["provider"], "withings");
        assert!(a["data"].get("heart_rate").is_some_and(Value::is_object), "{a}");
    }
    // Within one user and resource, a created never comes after an updated of the same run.
    let mut seen_updated: BTreeSet<(String, String)> = BTreeSet::new();
    for g in &daily {
        let t = g.event_type();
        let key = (g.envelope()["user_id"].as_str().unwrap().to_string(), t.rsplit_once('.').unwrap().0.to_string());
        if t.ends_with(".updated") {
            seen_updated.insert(key);
        } else {
            assert!(!seen_updated.contains(&key), "{t} after an updated of the same resource");
        }
    }

    // No change, no event.
    let before = receiver.got().len();
    let idle = run(&engine, &spec(Mode::Incremental, later)).await;
    assert_eq!(idle.rows_changed(), 0, "{}", idle.to_text());
    assert!(idle.events.as_ref().unwrap().enqueued.is_empty(), "{}", idle.to_text());
    assert_eq!(receiver.got().len(), before);
    let pending = std::fs::read_dir(dir.path().join("lake/_events/pending/hook")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(pending, 0, "everything was delivered");
    assert!(
        withings_lake::events::capture::staged_changes(&lake, 0).await.unwrap().is_empty(),
        "staged changes are cleared once enqueued"
    );

    // The Svix library accepts every delivery, under either header family.
    if svix_available() {
        let got = receiver.got();
        assert_eq!(svix_verify(dir.path(), &got), got.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_of_a_commit_that_died_before_its_outbox_write_are_recovered() {
    let World { sim, dir, receiver, store: _store, lake, engine } = world(1, 1000).await;
    run(&engine, &spec(Mode::Backfill { from: d(3), to: d(0) }, NOW)).await;
    let announced = receiver.got().len();

    // A run commits changed weights and dies before writing its outbox: its captured changes
    // stay under _events/staged/.
    let weight = crate::sync::all_rows(&lake, Resource::Weight).await;
    assert!(weight.num_rows() >= 2);
    let batch = "20240615T120000000Z-crashed-run-s0000-000001";
    let changes = commit_and_die(&lake, &weight, 0.5, batch).await;
    // The next run of the shard enqueues and delivers them: two weight updates.
    let next = run(&engine, &spec(Mode::Incremental, NOW)).await;
    let ev = next.events.as_ref().unwrap();
    assert!(ev.recovered >= 1, "{}", next.to_text());
    assert!(withings_lake::events::capture::staged_changes(&lake, 0).await.unwrap().is_empty(), "recovered intents are cleared");
    // Recovered under the batch's own name: the ids are those a rebuild of the batch gives.
    let mut b = withings_lake::events::Builder::new(batch, chrono::Utc::now(), &events_config("http://127.0.0.1:1", 1000));
    b.daily(&changes).unwrap();
    let ids: BTreeSet<String> = b.finish().into_iter().map(|e| e.id).collect();
    assert_eq!(ev.recovered, ids.len() as u64, "{}", next.to_text());
    let got: Vec<Got> = receiver.events().into_iter().skip(announced).filter(|g| ids.contains(g.id())).collect();
    assert_eq!(got.len(), ids.len(), "every recovered event is delivered");
    assert!(got.iter().all(|g| g.event_type() == "daily.data.weight.updated"));
    let values: Vec<f64> = got
        .iter()
        .flat_map(|g| {
            g.envelope()["data"]["data"].as_array().unwrap().iter().map(|s| s["value"].as_f64().unwrap()).collect::<Vec<_>>()
        })
        .collect();
    let stored = weight.column_by_name("value").unwrap().as_any().downcast_ref::<arrow::array::Float64Array>().unwrap();
    let mut expected: Vec<f64> = (0..2).map(|i| stored.value(i) + 0.5).collect();
    let mut values = values;
    values.sort_by(f64::total_cmp);
    expected.sort_by(f64::total_cmp);
    assert_eq!(values, expected, "the recovered events carry the committed values");

    // `events deliver` recovers them too (the shard's lease is free), then delivers.
    let batch = "20240615T130000000Z-crashed-run-s0000-000002";
    let changes = commit_and_die(&lake, &weight, 1.0, batch).await;
    let mut b = withings_lake::events::Builder::new(
        batch,
        chrono::Utc::now(),
        &EventsConfig { team_id: "withings-lake".into(), max_samples_per_event: 500, ..EventsConfig::default() },
    );
    b.daily(&changes).unwrap();
    let ids: BTreeSet<String> = b.finish().into_iter().map(|e| e.id).collect();
    let p = pipeline(dir.path(), &sim, &events_section(&receiver.url, 5.0)).display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        bin().env(SECRET_ENV, SECRET).args(["events", "deliver", "--pipeline", &p, "--wait-seconds", "2"]).output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("interrupted commit"), "{}", text(&out));
    let delivered: BTreeSet<String> = receiver.events().iter().map(|g| g.id().to_string()).collect();
    assert!(ids.is_subset(&delivered), "the recovered events are delivered with the ids of their batch");
    assert!(withings_lake::events::capture::staged_changes(&lake, 0).await.unwrap().is_empty());
}

/// Commits `weight`'s first two rows with `delta` added to their values, capturing the changes
/// under `batch`, as a run that then dies before its outbox write: the intent stays.
async fn commit_and_die(
    lake: &withings_lake::lake::Lake,
    weight: &arrow::array::RecordBatch,
    delta: f64,
    batch: &str,
) -> Vec<(TableId, withings_lake::lake::Changed)> {
    let changed = weight.slice(0, 2);
    let idx = changed.schema().index_of("value").unwrap();
    let values =
        arrow::compute::kernels::numeric::add(changed.column(idx), &arrow::array::Float64Array::new_scalar(delta)).unwrap();
    let mut cols = changed.columns().to_vec();
    cols[idx] = values;
    let changed = arrow::array::RecordBatch::try_new(changed.schema(), cols).unwrap();
    let staging_root = tempfile::tempdir().unwrap();
    let mut staging = withings_lake::lake::staging::Staging::new(Some(staging_root.path()), "crashed").unwrap();
    staging
        .stage_capturing(&Unit { table: TableId::Resource(Resource::Weight), batch: changed, coverage: Coverage::Upsert }, true)
        .unwrap();
    let lease = lake.lease_shard(0, "crashed-run", Duration::ZERO).await.unwrap();
    let run_id = batch.split_once('-').unwrap().1;
    let (manifest, changes) = lake
        .commit_staged(&lease, run_id, 1, &mut staging, Some(&withings_lake::events::capture::Capture { batch }))
        .await
        .unwrap();
    assert_eq!(manifest.partitions.iter().map(|p| p.counts.updated).sum::<usize>(), 2);
    assert_eq!(changes.len(), 1);
    assert_eq!(withings_lake::events::capture::staged_changes(lake, 0).await.unwrap().len(), 1, "the intent is in the lake");
    lease.release().await;
    changes
}

/// The pipeline's [events] section for the binary tests.
fn events_section(url: &str, timeout_s: f64) -> String {
    format!(
        "[events]\nmax_samples_per_event = 500\nfinal_wait_seconds = 1\n\n[[events.webhooks]]\nname = \"hook\"\nurl = \"{url}\"\nsecret_env = \"{SECRET_ENV}\"\ntimeout_seconds = {timeout_s}\nretry_schedule_seconds = [0, 1, 1]\n\n[events.files]\nprefix = \"_events/files\"\nevent_types = [\"provider.connection.*\", \"historical.data.*\"]\n"
    )
}

pub(crate) fn lines_in(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    for f in files {
        for l in std::fs::read_to_string(&f).unwrap().lines() {
            out.push(serde_json::from_str(l).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_between_outbox_and_delivery_loses_nothing_and_a_lost_authorization_is_announced() {
    let sim = common::start(2, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    receiver.status.store(0, Ordering::SeqCst); // hang: the run's delivery cannot finish
    let p = pipeline(dir.path(), &sim, &events_section(&receiver.url, 30.0)).display().to_string();
    let store = link(&sim, &dir.path().join("creds"), 2).await;
    let now = chrono::DateTime::from_timestamp(NOW, 0).unwrap().to_rfc3339();
    let args = |cmd: &str, extra: &[&str]| {
        let mut v: Vec<String> = [cmd, "--pipeline", &p].iter().map(|s| s.to_string()).collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    // The backfill's events reach the outbox; the receiver hangs; the process is killed.
    let mut child = bin()
        .env(SECRET_ENV, SECRET)
        .args(args("backfill", &["--from", &d(3).to_string(), "--to", &d(0).to_string(), "--now", &now]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pending_dir = dir.path().join("lake/_events/pending/hook");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if std::fs::read_dir(&pending_dir).map(|d| d.count()).unwrap_or(0) > 0 && !receiver.got().is_empty() {
            break; // written, and one attempt in flight
        }
        assert!(std::time::Instant::now() < deadline, "the outbox was never written");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let pending: Vec<Value> = lines_in(&pending_dir);
    assert_eq!(pending.len(), 2 * ANNOUNCED, "every historical event is in the outbox");

    // `events list` shows them pending; `events deliver` (the killed process's delivery lease
    // is taken over) delivers every one, with the ids written before the kill.
    let list = ["events", "list", "--pipeline", &p, "--status", "pending", "--format", "json"];
    let list = exec(list.iter().map(|s| s.to_string()).collect()).await;
    assert_eq!(list.status.code(), Some(0), "{}", text(&list));
    let listed: Value = serde_json::from_slice(&list.stdout).unwrap();
    let per_sink =
        |sink: &str| listed.as_array().unwrap().iter().filter(|r| r["sink"] == sink && r["status"] == "pending").count();
    assert_eq!((per_sink("hook"), per_sink("files")), (2 * ANNOUNCED, 2 * ANNOUNCED), "the webhook's and the files' copies");
    receiver.status.store(200, Ordering::SeqCst);
    let deliver = tokio::task::spawn_blocking({
        let p = p.clone();
        move || {
            bin().env(SECRET_ENV, SECRET).args(["events", "deliver", "--pipeline", &p, "--wait-seconds", "5"]).output().unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(deliver.status.code(), Some(0), "{}", text(&deliver));
    let ids: BTreeSet<String> = pending.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    let delivered: BTreeSet<String> =
        receiver.got().iter().filter(|g| g.headers.contains_key("webhook-id")).map(|g| g.id().to_string()).collect();
    assert!(ids.is_subset(&delivered), "{} of {} delivered", ids.intersection(&delivered).count(), ids.len());
    assert_eq!(lines_in(&pending_dir).len(), 0);
    // Manifest mode wrote the historical events as files (their filter), one per batch.
    let files = lines_in(&dir.path().join("lake/_events/files"));
    assert_eq!(files.len(), 2 * ANNOUNCED, "{files:?}");
    assert!(
        files.iter().all(|l| l["event"]["event_type"].as_str().unwrap().starts_with("historical.data.") && l["id"].is_string())
    );

    // A user revokes the authorization: the sync announces provider.connection.error.
    let user1 = store.get("user-1").await.unwrap().unwrap();
    client(&sim, 0).revoke_user(&user1.withings_userid).await.unwrap();
    let out = tokio::task::spawn_blocking({
        let a = args("sync", &["--report", "json", "--now", &now]);
        move || bin().env(SECRET_ENV, SECRET).args(&a).output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = report_of(&out);
    assert_eq!(report["events"]["enqueued"]["provider.connection.error"], 1, "{report}");
    let errors: Vec<Got> = receiver.events().into_iter().filter(|g| g.event_type() == "provider.connection.error").collect();
    assert_eq!(errors.len(), 1);
    let e = errors[0].envelope();
    assert_eq!(e["client_user_id"], "user-1");
    assert_eq!(e["user_id"], withings_lake::credentials::derived_vital_user_id("user-1"));
    assert_eq!(e["data"]["error_type"], "token_refresh_failed");
    assert_eq!(e["data"]["provider"], "withings", "a string, as Vital's model says");
    assert!(e["data"]["error_details"].is_string());
    assert!(lines_in(&dir.path().join("lake/_events/files")).iter().any(|l| l["event_type"] == "provider.connection.error"));
    for secret in [SECRET, "demo-secret", user1.refresh_token.expose(), user1.access_token.expose()] {
        assert!(!text(&out).contains(secret) && !text(&deliver).contains(secret), "a secret reached the output");
        assert!(!receiver.got().iter().any(|g| g.body.contains(secret)), "a secret reached an event");
    }
}

#[tokio::test]
async fn bad_events_settings_are_configuration_errors_that_name_the_webhook_not_the_secret() {
    let sim = common::start(1, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let run_with = |extra: String, secret: Option<&'static str>| {
        let p = pipeline(dir.path(), &sim, &extra).display().to_string();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut c = bin();
                if let Some(s) = secret {
                    c.env(SECRET_ENV, s);
                }
                c.args(["sync", "--pipeline", &p]).output().unwrap()
            })
            .await
            .unwrap()
        }
    };
    let hook = |body: &str| {
        format!(
            "[events]\n\n[[events.webhooks]]\nname = \"crm\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret_env = \"{SECRET_ENV}\"\n{body}\n"
        )
    };
    // The secret's variable is not set.
    let out = run_with(hook(""), None).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains(SECRET_ENV) && text(&out).contains("crm"), "{}", text(&out));
    // A secret that is not whsec_ + base64: named by its variable, never repeated.
    let out = run_with(hook(""), Some("whsec_!!not-base64 hunter2")).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains(SECRET_ENV) && !text(&out).contains("hunter2"), "{}", text(&out));
    // An unknown key, and a zero concurrency.
    let out = run_with(hook("retries = 3"), Some(SECRET)).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("retries"), "{}", text(&out));
    let out = run_with(hook("concurrency = 0"), Some(SECRET)).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // [events] with nowhere to send.
    let out = run_with("[events]\nteam_id = \"t\"\n".into(), Some(SECRET)).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("[events]"), "{}", text(&out));
    // A webhook over http:// to another host: health data in clear text, refused unless said.
    let remote = "[events]\n\n[[events.webhooks]]\nname = \"crm\"\nurl = \"http://hooks.example.com/h\"\nsecret_env = \"WL_TEST_WEBHOOK_SECRET\"\n";
    let out = run_with(remote.into(), Some(SECRET)).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("allow_insecure") && text(&out).contains("crm"), "{}", text(&out));
    let out = run_with(format!("{remote}allow_insecure = true\n"), Some(SECRET)).await;
    assert!(!text(&out).contains("allow_insecure"), "accepted when said: {}", text(&out));
    // A files sink "inside the lake" that climbs out of it.
    for prefix in ["../outside", "/etc/withings", "_events/../../x"] {
        let out = run_with(format!("[events]\n\n[events.files]\nprefix = \"{prefix}\"\n"), Some(SECRET)).await;
        assert_eq!(out.status.code(), Some(2), "{prefix}: {}", text(&out));
        assert!(text(&out).contains("inside the lake"), "{prefix}: {}", text(&out));
    }
    // ... or that writes into a folder the lake itself uses (the outbox, manifests, a table).
    for prefix in ["_events/pending/x", "_manifests", "steps/files", "_state"] {
        let out = run_with(format!("[events]\n\n[events.files]\nprefix = \"{prefix}\"\n"), Some(SECRET)).await;
        assert_eq!(out.status.code(), Some(2), "{prefix}: {}", text(&out));
        assert!(text(&out).contains("the lake itself uses"), "{prefix}: {}", text(&out));
    }
    assert!(!dir.path().join("outside").exists());
    // `events deliver` without an [events] section has nowhere to deliver to.
    let p = pipeline(dir.path(), &sim, "").display().to_string();
    let out = exec(vec!["events".into(), "deliver".into(), "--pipeline".into(), p]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_that_failed_part_way_announces_every_resource_when_it_completes_and_each_once() {
    let World { sim, dir: _dir, receiver, store: _store, lake: _lake, engine } = world(1, 1000).await;
    let window = Mode::Backfill { from: d(5), to: d(0) };

    // getmeas and getactivity commit, then getworkouts fails: only activity is complete (its
    // one family is done) and announced; weight's rows are in, its announcement waits.
    sim.admin_post("/_sim/faults", json!({"kind": "status_2554", "count": 1000, "endpoint": "getworkouts"})).await;
    let failed = run(&engine, &spec(window.clone(), NOW)).await;
    assert_eq!(failed.users.failed, 1, "{}", failed.to_text());
    assert!(failed.rows.get("weight").is_some_and(|r| r.inserted > 0), "{}", failed.to_text());
    let first: Vec<String> = receiver.events().iter().map(Got::event_type).collect();
    assert_eq!(first, vec!["historical.data.activity.created".to_string()], "only what is complete");
    // The window announced ends now at the latest, never in the future.
    let end = receiver.events()[0].envelope()["data"]["end_date"].as_str().unwrap().to_string();
    assert!(chrono::DateTime::parse_from_rfc3339(&end).unwrap().timestamp() <= NOW, "{end}");

    // The re-run fetches what is missing and announces the other resources (weight too, whose
    // rows came in the failed run), each once.
    sim.admin_post("/_sim/faults", json!({"clear": true})).await;
    let ok = run(&engine, &spec(window.clone(), NOW)).await;
    assert_eq!(ok.users.ok, 1, "{}", ok.to_text());
    let types: BTreeSet<String> = receiver.events().iter().map(Got::event_type).collect();
    assert_eq!(types.len(), ANNOUNCED, "{types:?}");
    assert!(types.contains("historical.data.weight.created"));
    // Done and announced: the same window again, and a sync, announce nothing more.
    let again = run(&engine, &spec(window, NOW)).await;
    assert!(again.events.unwrap().enqueued.is_empty());
    let sync = run(&engine, &spec(Mode::Incremental, NOW)).await;
    assert!(!sync.events.unwrap().enqueued.keys().any(|t| t.starts_with("historical.")));
    assert_eq!(receiver.events().iter().filter(|g| g.event_type().starts_with("historical.")).count(), ANNOUNCED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_authorization_is_announced_once_even_when_the_run_that_found_it_died() {
    let World { sim: _sim, dir: _dir, receiver, store, lake: _lake, engine } = world(2, 1000).await;
    run(&engine, &spec(Mode::Incremental, NOW)).await;
    // The run that discovered the loss died before announcing it: the credentials record
    // says needs_reauth, nothing was sent.
    let mut user1 = store.get("user-1").await.unwrap().unwrap();
    user1.status = withings_lake::credentials::UserStatus::NeedsReauth;
    user1.status_reason = Some("Withings refused the refresh token".into());
    user1.updated_at += 1;
    store.put(&user1).await.unwrap();
    let before = receiver.events().len();
    let next = run(&engine, &spec(Mode::Incremental, NOW)).await;
    assert_eq!(next.users.needs_reauth, vec!["user-1".to_string()], "{}", next.to_text());
    let errors: Vec<Got> =
        receiver.events().into_iter().skip(before).filter(|g| g.event_type() == "provider.connection.error").collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].envelope()["data"]["message"], "Withings refused the refresh token");
    // Once: the next runs do not repeat it.
    run(&engine, &spec(Mode::Incremental, NOW)).await;
    let all: usize = receiver.events().iter().filter(|g| g.event_type() == "provider.connection.error").count();
    assert_eq!(all, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linking_an_account_announces_provider_connection_created() {
    use std::io::BufRead;
    let sim = common::start(1, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let p = pipeline(dir.path(), &sim, &events_section(&receiver.url, 5.0)).display().to_string();
    let mut child = bin()
        .env(SECRET_ENV, SECRET)
        // A team moving off Vital keeps the person's Vital user id (given in upper case: it is
        // stored in its canonical form).
        .args(["link", "--pipeline", &p, "--user-id", "alice", "--vital-user-id", "0B4A2A3E-5C1D-4F8E-9A6B-2F3C4D5E6F70"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (url, mut stdout) = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        (line, stdout)
    })
    .await
    .unwrap();
    assert!(reqwest::get(url.trim()).await.unwrap().status().is_success());
    let out = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = receiver.events();
    assert_eq!(got.len(), 1, "{got:?}");
    let e = got[0].envelope();
    assert_eq!(e["event_type"], "provider.connection.created");
    assert_eq!(
        (e["user_id"].as_str(), e["client_user_id"].as_str()),
        (Some("0b4a2a3e-5c1d-4f8e-9a6b-2f3c4d5e6f70"), Some("alice"))
    );
    assert_eq!(e["data"]["user_id"], e["user_id"]);
    assert!(e["data"]["provider"]["logo"].as_str().is_some_and(|l| l.starts_with("https://")), "{e}");
    assert_eq!(e["data"]["provider"]["slug"], "withings");
    assert!(e["data"]["external_user_id"].is_string());
    assert_eq!(e["data"]["resource_availability"]["weight"]["status"], "available");
    // The files sink takes provider.connection.* too.
    let files = lines_in(&dir.path().join("lake/_events/files"));
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["id"].as_str(), Some(got[0].id()), "one event, one id, whatever the sink");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_events_past_their_retention_are_pruned_and_dead_ones_kept() {
    use withings_lake::events::{Builder, DeliverOptions, Deliverer, Outbox, Status};
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let location = withings_lake::storage::open(&dir.path().display().to_string()).unwrap();
    let sinks = events_config(&receiver.url, 10).sinks;
    let mut b = Builder::new("20260101T000000000Z-a", chrono::Utc::now(), &events_config(&receiver.url, 10));
    b.connection_error("u1", "token_refresh_failed", "link again", "gone");
    b.connection_error("u2", "token_refresh_failed", "link again", "gone");
    let events = b.finish();
    // Kept: a retention of a day keeps what was just delivered.
    let outbox = Outbox::new(location.clone(), sinks.clone()).with_retention(Some(Duration::from_secs(86_400)));
    outbox.enqueue("20260101T000000000Z-a", &events[..1]).await.unwrap();
    let s = Deliverer::new(outbox.clone()).unwrap().deliver(DeliverOptions::default()).await.unwrap();
    assert_eq!((s.delivered, s.pruned_files), (1, 0));
    // A dead one (410) stays whatever the retention; the delivered one goes at zero retention.
    receiver.status.store(410, Ordering::SeqCst);
    outbox.enqueue("20260101T000000001Z-b", &events[1..]).await.unwrap();
    let outbox = outbox.with_retention(Some(Duration::ZERO));
    let s = Deliverer::new(outbox.clone()).unwrap().deliver(DeliverOptions::default()).await.unwrap();
    assert_eq!((s.dead, s.pruned_files), (1, 1), "{s:?}");
    assert!(outbox.list(Status::Delivered).await.unwrap().is_empty());
    assert_eq!(outbox.list(Status::Dead).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_enqueued_after_its_created_went_dead_waits_in_dead_until_redelivered() {
    use withings_lake::events::{DeliverOptions, Deliverer, Event, Outbox, Status};
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let location = withings_lake::storage::open(&dir.path().display().to_string()).unwrap();
    let outbox = Outbox::new(location, events_config(&receiver.url, 10).sinks);
    let deliver = || async { Deliverer::new(outbox.clone()).unwrap().deliver(DeliverOptions::default()).await.unwrap() };
    let at = |s: i64| chrono::DateTime::from_timestamp(NOW + s, 0).unwrap();
    let event = |id: &str, t: &str, s: i64| Event {
        id: id.into(),
        event_type: t.into(),
        user_id: "u1".into(),
        created_at: at(s),
        body: json!({"event_type": t, "user_id": "u1"}).to_string(),
    };
    // The .created is refused for good (410).
    receiver.status.store(410, Ordering::SeqCst);
    outbox.enqueue("20240615T120000000Z-a", &[event("msg_c", "daily.data.steps.created", 0)]).await.unwrap();
    assert_eq!(deliver().await.dead, 1);
    // A later run's .updated of the same resource: not sent, it joins the .created in dead/.
    receiver.status.store(200, Ordering::SeqCst);
    outbox.enqueue("20240615T130000000Z-b", &[event("msg_u", "daily.data.steps.updated", 3600)]).await.unwrap();
    let s = deliver().await;
    assert_eq!((s.attempts, s.dead), (0, 1), "{s:?}");
    assert!(receiver.got().iter().all(|g| g.id() != "msg_u"));
    // Redelivering only the .created sends it (it is not later than itself) ...
    outbox.redeliver(&["msg_c".into()], false, chrono::Utc::now()).await.unwrap();
    assert_eq!(deliver().await.delivered, 1);
    // ... and then the rest, in order.
    outbox.redeliver(&[], true, chrono::Utc::now()).await.unwrap();
    assert_eq!(deliver().await.delivered, 1);
    let order: Vec<String> = receiver.events().iter().map(|g| g.id().to_string()).collect();
    assert_eq!(order, vec!["msg_c".to_string(), "msg_u".to_string()]);
    assert!(outbox.list(Status::Dead).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_synced_before_events_existed_is_not_flooded_with_history_when_they_start() {
    let World { sim: _sim, dir, receiver, store: _store, lake: _lake, engine } = world(1, 1000).await;
    run(&engine, &spec(Mode::Backfill { from: d(3), to: d(0) }, NOW)).await;
    let announced = receiver.events().len();
    assert_eq!(announced, ANNOUNCED);
    // The state as a version without events wrote it: no announcement records.
    let file = dir.path().join("lake/_state/users/user-0.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let o = state.as_object_mut().unwrap();
    assert!(o.remove("historical_announced").is_some() && o.remove("reauth_announced").is_some());
    std::fs::write(&file, serde_json::to_vec(&state).unwrap()).unwrap();
    // What was complete counts as announced: the next runs send no history again.
    let sync = run(&engine, &spec(Mode::Incremental, NOW)).await;
    assert!(!sync.events.unwrap().enqueued.keys().any(|t| t.starts_with("historical.")));
    let again = run(&engine, &spec(Mode::Backfill { from: d(3), to: d(0) }, NOW)).await;
    assert!(again.events.unwrap().enqueued.is_empty());
    let state: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(state["historical_announced"].as_array().map(Vec::len), Some(18), "{state}");
    assert_eq!(state["reauth_announced"], 0, "seen connected");
}

/// Every event a backfill (its rows sent as daily events too), a later sync with late data, a
/// link and a lost authorization produce, through the typed webhook models of Vital's own
/// Python SDK (`tests/vital/check_events.py`): no validation error, and the only event types
/// without a model are the hypnogram ones (on by default, kept on purpose).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_passes_the_models_of_vital_s_own_sdk() {
    if !common::vital_available() {
        return;
    }
    let sim = common::start(2, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let store = link(&sim, &dir.path().join("creds"), 2).await;
    let lake = lake_at(&dir.path().join("lake"), 1).await;
    let files = dir.path().join("events");
    let cfg = EventsConfig {
        team_id: "team-vital".into(),
        max_samples_per_event: 500,
        history_as_daily: true,
        final_wait: Duration::from_secs(1),
        sinks: vec![Sink {
            name: "files".into(),
            filter: Filter::default(),
            kind: SinkKind::Files(withings_lake::storage::open(&files.display().to_string()).unwrap()),
            retry_schedule: default_retry_schedule(),
        }],
        ..EventsConfig::default()
    };
    // user-0 came from Vital with its id; user-1 gets a derived one.
    const FROM_VITAL: &str = "5e0f2c1a-7b3d-4e9f-a1c2-d3e4f5a6b7c8";
    let mut user0 = store.get("user-0").await.unwrap().unwrap();
    user0.vital_user_id = Some(FROM_VITAL.into());
    store.put(&user0).await.unwrap();
    for u in ["user-0", "user-1"] {
        let record = store.get(u).await.unwrap().unwrap();
        withings_lake::events::announce_link(&cfg, &lake, &record).await.unwrap();
    }
    let engine = Engine::new(lake.clone(), client(&sim, 0), store.clone(), SyncConfig::default()).with_events(Some(cfg));
    let r = run(&engine, &spec(Mode::Backfill { from: d(14), to: d(0) }, NOW)).await;
    assert_eq!(r.users.ok, 2, "{}", r.to_text());
    sim.advance(8 * 3600).await;
    let r = run(&engine, &spec(Mode::Incremental, NOW + 8 * 3600)).await;
    assert_eq!(r.users.ok, 2, "{}", r.to_text());
    let mut user1 = store.get("user-1").await.unwrap().unwrap();
    user1.status = withings_lake::credentials::UserStatus::NeedsReauth;
    user1.status_reason = Some("Withings refused the refresh token".into());
    user1.updated_at += 1;
    store.put(&user1).await.unwrap();
    run(&engine, &spec(Mode::Incremental, NOW + 8 * 3600)).await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vital/check_events.py");
    let out = std::process::Command::new("python3").arg(&script).arg(&files).output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check_events.py printed no report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let types = report["types"].as_object().unwrap();
    let bad: Vec<(&String, &Value)> = types.iter().filter(|(_, t)| t["invalid"].as_u64() != Some(0)).collect();
    assert!(bad.is_empty() && out.status.success(), "Vital's models refuse events: {bad:#?}");
    // Fields Vital declares and we cannot fill are there, as null.
    let absent: Vec<(&String, &Value)> = types
        .iter()
        .filter(|(_, t)| t["absent"].as_array().is_some_and(|a| !a.is_empty()))
        .map(|(k, t)| (k, &t["absent"]))
        .collect();
    assert!(absent.is_empty(), "declared fields left out: {absent:?}");
    let without: BTreeSet<&str> = report["without_model"].as_object().unwrap().keys().map(String::as_str).collect();
    assert!(
        without.iter().all(|t| t.starts_with("daily.data.hypnogram.") || *t == "historical.data.hypnogram.created"),
        "event types without a Vital model: {without:?}"
    );
    assert!(!without.is_empty(), "hypnogram events are on by default");
    // Every kind of event was there to check: each resource daily, historical, both connection events.
    for r in Resource::ALL.into_iter().filter(|r| !matches!(r, Resource::Hypnogram | Resource::SleepStream)) {
        assert!(
            types.contains_key(&format!("daily.data.{r}.created")),
            "no daily.data.{r}.created was checked: {:?}",
            types.keys()
        );
        assert!(types.contains_key(&format!("historical.data.{r}.created")), "no historical.data.{r}.created");
    }
    assert!(
        types.contains_key("provider.connection.created") && types.contains_key("provider.connection.error"),
        "{:?}",
        types.keys()
    );
    assert!(types.contains_key("daily.data.activity.updated"), "late data arrives as updates");
    assert!(!without.iter().any(|t| t.contains("sleep_stream")), "sleep_stream events are off by default");
    // The users table maps the ids, for DataFusion and for DuckDB alike.
    let ctx = withings_lake::lake::query::session(&lake).await.unwrap();
    let rows =
        withings_lake::lake::query::sql(&ctx, "SELECT user_id, vital_user_id, withings_user_id FROM users ORDER BY user_id")
            .await
            .unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&rows).unwrap().to_string();
    assert!(text.contains(&format!("| user-0  | {FROM_VITAL} | 31000000")), "{text}");
    let derived = withings_lake::credentials::derived_vital_user_id("user-1");
    assert!(text.contains(&format!("| user-1  | {derived} | 31000001")), "{text}");
    if crate::common::duckdb_available() {
        let glob = dir.path().join("lake/_users/*.parquet");
        let script = format!(
            "import duckdb\nprint(duckdb.connect().execute(\"select vital_user_id from read_parquet('{}') where user_id = 'user-0'\").fetchone()[0])",
            glob.display()
        );
        let out = std::process::Command::new("python3").args(["-c", &script]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), FROM_VITAL, "{}", String::from_utf8_lossy(&out.stderr));
    }
    // Every event names the person by the Vital id, in the envelope and in `data`.
    for line in lines_in(&files) {
        let e = &line["event"];
        let want = match e["client_user_id"].as_str().unwrap() {
            "user-0" => FROM_VITAL.to_string(),
            other => withings_lake::credentials::derived_vital_user_id(other),
        };
        assert_eq!(e["user_id"], want.as_str(), "{}", e["event_type"]);
        if let Some(u) = e["data"].get("user_id") {
            assert_eq!(u, want.as_str(), "{}", e["event_type"]);
        }
        // Values as Vital writes them: step counts are integers, sleep efficiency a percentage.
        let t = e["event_type"].as_str().unwrap();
        if t.starts_with("daily.data.steps.") {
            assert!(e["data"]["data"].as_array().unwrap().iter().all(|s| s["value"].is_i64()), "{e}");
        }
        if t.starts_with("daily.data.sleep.")
            && let Some(x) = e["data"]["efficiency"].as_f64()
        {
            assert!((1.0..=100.0).contains(&x), "efficiency {x} is a percentage");
        }
    }
}
