//! One absurd record never stops a shard: a fake Withings server on loopback (not the
//! simulator: it answers exactly the records given here) serves one poisoned record among good
//! ones: a sleep session ending at 1e15 or lasting 72 hours, a workout spanning five days, an
//! activity dated 2199, a measure group from 1990, one modified in 2100. Each backfill ends
//! (within a deadline, in a bounded number of requests), the poisoned record is quarantined as
//! malformed with an "implausible" detail, the good records land, and no cursor is poisoned.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::AsArray;
use axum::extract::State;
use axum::http::Uri;
use serde_json::{Value, json};
use withings_lake::credentials::{Cipher, CredentialStore, UserRecord, UserStatus};
use withings_lake::lake::query;
use withings_lake::secret::Secret;
use withings_lake::sync::{Engine, Mode, SyncConfig};
use withings_lake::withings::{ClientConfig, WithingsClient};

use crate::common::NOW;
use crate::sync::{d, lake_at, spec};

const DAY: i64 = 86_400;

/// What the fake server answers, per action, and the requests it got.
#[derive(Default)]
struct Fake {
    bodies: Mutex<std::collections::HashMap<&'static str, Value>>,
    requests: AtomicUsize,
    lastupdates: Mutex<Vec<i64>>,
}

async fn answer(State(fake): State<Arc<Fake>>, uri: Uri, body: String) -> axum::Json<Value> {
    fake.requests.fetch_add(1, Ordering::SeqCst);
    let params: std::collections::HashMap<String, String> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    if let Some(l) = params.get("lastupdate").and_then(|l| l.parse().ok()) {
        fake.lastupdates.lock().unwrap().push(l);
    }
    let action = match (uri.path(), params.get("action").map(String::as_str)) {
        ("/measure", Some("getmeas")) => "getmeas",
        ("/v2/measure", Some("getactivity")) => "getactivity",
        ("/v2/measure", Some("getintradayactivity")) => "getintradayactivity",
        ("/v2/measure", Some("getworkouts")) => "getworkouts",
        ("/v2/sleep", Some("getsummary")) => "getsummary",
        ("/v2/sleep", Some("get")) => "sleep_get",
        ("/v2/user", Some("getdevice")) => "getdevice",
        ("/v2/heart", Some("list")) => "heart_list",
        _ => return axum::Json(json!({"status": 2554, "body": {}, "error": "unknown action"})),
    };
    let body = fake.bodies.lock().unwrap().get(action).cloned().unwrap_or_else(|| json!({}));
    axum::Json(json!({"status": 0, "body": body}))
}

/// Good records of every endpoint: a measure group, an activity day, a workout, a night.
fn good() -> std::collections::HashMap<&'static str, Value> {
    let night = NOW - DAY - 8 * 3600;
    let m = NOW - 3600;
    [
        (
            "getmeas",
            json!({"timezone": "Europe/Paris", "more": 0, "offset": 0, "measuregrps": [
                {"grpid": 1, "attrib": 0, "date": NOW - DAY, "created": m, "modified": m, "category": 1, "deviceid": "scale",
                 "measures": [{"value": 70000, "type": 1, "unit": -3}]}
            ]}),
        ),
        (
            "getactivity",
            json!({"more": false, "offset": 0, "activities": [
                {"date": d(1).to_string(), "timezone": "Europe/Paris", "deviceid": "watch", "is_tracker": true, "brand": 1,
                 "steps": 4200, "modified": m}
            ]}),
        ),
        (
            "getworkouts",
            json!({"more": false, "offset": 0, "series": [
                {"id": 11, "category": 1, "timezone": "Europe/Paris", "startdate": NOW - DAY, "enddate": NOW - DAY + 3600,
                 "date": d(1).to_string(), "deviceid": "watch", "modified": m, "data": {"steps": 3000}}
            ]}),
        ),
        (
            "getsummary",
            json!({"more": false, "offset": 0, "series": [
                {"id": 21, "timezone": "Europe/Paris", "model": 32, "startdate": night, "enddate": night + 8 * 3600,
                 "date": d(1).to_string(), "created": m, "modified": m, "data": {"total_sleep_time": 25000}}
            ]}),
        ),
        ("getintradayactivity", json!({"series": {}})),
        ("sleep_get", json!({"series": [], "model": 32})),
        ("getdevice", json!({"devices": []})),
        ("heart_list", json!({"series": [], "more": false, "offset": 0})),
    ]
    .into_iter()
    .collect()
}

/// Adds `record` to the list `key` of `action`'s body.
fn poison(bodies: &mut std::collections::HashMap<&'static str, Value>, action: &'static str, key: &str, record: Value) {
    bodies.get_mut(action).unwrap()[key].as_array_mut().unwrap().push(record);
}

async fn count(ctx: &datafusion::prelude::SessionContext, sql: &str) -> i64 {
    query::sql(ctx, sql).await.unwrap()[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0)
}

/// A backfill of the last three days against a fake server serving `bodies`.
async fn backfill_against(case: &str, bodies: std::collections::HashMap<&'static str, Value>, table: &str) {
    let fake = Arc::new(Fake { bodies: Mutex::new(bodies), ..Fake::default() });
    let app = axum::Router::new().fallback(answer).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        CredentialStore::open(&dir.path().join("creds").display().to_string(), Cipher::from_key([3; 32], "test")).unwrap(),
    );
    let now = chrono::Utc::now().timestamp();
    store
        .put(&UserRecord {
            user_id: "user-0".into(),
            withings_userid: "777".into(),
            scopes: vec!["user.metrics".into(), "user.activity".into(), "user.sleepevents".into()],
            access_token: Secret::new("fake-access".to_string()),
            access_expires_at: now + 10 * DAY,
            refresh_token: Secret::new("fake-refresh".to_string()),
            status: UserStatus::Active,
            status_reason: None,
            created_at: now,
            updated_at: now,
            last_refresh_at: Some(now),
            vital_user_id: None,
        })
        .await
        .unwrap();
    let client = WithingsClient::new(ClientConfig {
        base_url: base,
        client_id: "fake".into(),
        client_secret: Secret::new("fake-secret".to_string()),
        requests_per_minute: 0,
        concurrency: 2,
        ..ClientConfig::default()
    })
    .unwrap();
    let lake = lake_at(&dir.path().join("lake"), 1).await;
    let engine = Engine::new(lake.clone(), client, store, SyncConfig::default());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let backfill = spec(Mode::Backfill { from: d(3), to: d(0) }, NOW);
    let run = engine.run(&backfill, rx);
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("{case}: the backfill did not end within 60 s"))
        .unwrap();
    assert!(report.failures.is_empty() && report.users.ok == 1, "{case}: {}", report.to_text());
    let requests = fake.requests.load(Ordering::SeqCst);
    assert!(requests < 40, "{case}: {requests} requests for one user and three days");

    let ctx = query::session(&lake).await.unwrap();
    let q = "SELECT count(*) FROM quarantine WHERE reason = 'malformed' AND detail LIKE '%implausible%'";
    assert_eq!(count(&ctx, q).await, 1, "{case}: the poisoned record is quarantined, with why");
    assert_eq!(count(&ctx, &format!("SELECT count(*) FROM {table}")).await, 1, "{case}: the good record of {table} landed");
    for (t, n) in [("weight", 1), ("activity", 1), ("workouts", 1), ("sleep", 1)] {
        assert_eq!(count(&ctx, &format!("SELECT count(*) FROM {t}")).await, n, "{case}: {t}");
    }

    // The next syncs ask Withings for changes since a real time, never since the poison's
    // (the server answers every sync with the poisoned record again: the second sync's
    // `lastupdate` comes from the first sync's cursor).
    for _ in 0..2 {
        let (_tx, rx) = tokio::sync::watch::channel(false);
        engine.run(&spec(Mode::Incremental, NOW + 3600), rx).await.unwrap();
    }
    let lastupdates = fake.lastupdates.lock().unwrap().clone();
    assert!(!lastupdates.is_empty() && lastupdates.iter().all(|l| *l <= NOW + 3600), "{case}: cursors {lastupdates:?}");
}

#[tokio::test]
async fn a_sleep_session_ending_at_1e15_is_quarantined_and_the_night_lands() {
    let mut b = good();
    let start = NOW - 2 * DAY;
    poison(
        &mut b,
        "getsummary",
        "series",
        json!({"id": 22, "startdate": start, "enddate": 1_000_000_000_000_000i64, "modified": NOW - 60, "data": {}}),
    );
    backfill_against("enddate 1e15", b, "sleep").await;
}

#[tokio::test]
async fn a_sleep_session_of_72_hours_is_quarantined() {
    let mut b = good();
    let start = NOW - 3 * DAY;
    poison(
        &mut b,
        "getsummary",
        "series",
        json!({"id": 23, "startdate": start, "enddate": start + 72 * 3600, "modified": NOW - 60, "data": {}}),
    );
    backfill_against("72-hour session", b, "sleep").await;
}

#[tokio::test]
async fn a_workout_spanning_five_days_is_quarantined() {
    let mut b = good();
    let start = NOW - 3 * DAY;
    poison(
        &mut b,
        "getworkouts",
        "series",
        json!({"id": 12, "category": 1, "startdate": start, "enddate": start + 5 * DAY, "modified": NOW - 60}),
    );
    backfill_against("five-day workout", b, "workouts").await;
}

#[tokio::test]
async fn an_activity_dated_2199_is_quarantined_and_costs_no_intraday_request() {
    let mut b = good();
    poison(
        &mut b,
        "getactivity",
        "activities",
        json!({"date": "2199-01-01", "deviceid": "watch", "is_tracker": true, "steps": 1, "modified": NOW - 60}),
    );
    backfill_against("activity in 2199", b, "activity").await;
}

#[tokio::test]
async fn a_measure_group_from_1990_is_quarantined() {
    let mut b = good();
    poison(
        &mut b,
        "getmeas",
        "measuregrps",
        json!({"grpid": 2, "attrib": 0, "date": 631_152_000, "modified": NOW - 60, "category": 1, "measures": [{"value": 71000, "type": 1, "unit": -3}]}),
    );
    backfill_against("measure from 1990", b, "weight").await;
}

#[tokio::test]
async fn a_measure_group_modified_in_2100_never_becomes_a_cursor() {
    let mut b = good();
    poison(
        &mut b,
        "getmeas",
        "measuregrps",
        json!({"grpid": 3, "attrib": 0, "date": NOW - 2 * DAY, "modified": 4_102_444_800i64, "category": 1, "measures": [{"value": 72000, "type": 1, "unit": -3}]}),
    );
    backfill_against("modified in 2100", b, "weight").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_larger_than_any_real_one_is_a_transient_error_naming_the_endpoint() {
    // A streamed body (no Content-Length) of 65 MiB of JSON whitespace: read up to the cap only.
    async fn endless() -> axum::body::Body {
        let chunk = bytes::Bytes::from(vec![b' '; 1024 * 1024]);
        let chunks = std::iter::repeat_n(chunk, 65).map(Ok::<_, std::io::Error>);
        axum::body::Body::from_stream(futures::stream::iter(chunks))
    }
    let app = axum::Router::new().fallback(endless);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = WithingsClient::new(ClientConfig {
        base_url: base,
        client_id: "fake".into(),
        client_secret: Secret::new("fake-secret".to_string()),
        max_retries: 0,
        ..ClientConfig::default()
    })
    .unwrap();
    let token = Secret::new("t".to_string());
    let err = client.getmeas(&token, &withings_lake::withings::MeasQuery::default()).await.unwrap_err();
    assert_eq!(err.label(), "too_large", "{err}");
    assert!(err.is_retryable(), "transient: {err}");
    assert!(err.to_string().starts_with("getmeas:") && err.to_string().contains("67108864"), "{err}");
}
