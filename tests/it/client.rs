//! The Withings client against the real-shaped fixtures and, over loopback, the simulator.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use withings_lake::error::{Classify, ErrorClass};
use withings_lake::secret::Secret;
use withings_lake::withings::types::{self, Item};
use withings_lake::withings::{ClientConfig, MeasQuery, StatusKind, Window, WithingsClient, WithingsError, decode_envelope};
use withings_simulator::SimConfig;

use crate::common::{self, NOW, Sim, ymd};

fn client(sim: &Sim, per_minute: u32) -> WithingsClient {
    WithingsClient::new(ClientConfig {
        base_url: sim.base.clone(),
        client_id: "demo-client".into(),
        client_secret: Secret::new("demo-secret"),
        requests_per_minute: per_minute,
        retry_base: Duration::from_millis(20),
        rate_limit_pause: Duration::from_millis(100),
        ..ClientConfig::default()
    })
    .unwrap()
}

fn all_ok<T: std::fmt::Debug>(items: &[Item<T>], what: &str) {
    for i in items {
        assert!(i.value.is_ok(), "{what}: {:?} for {}", i.value, i.raw);
    }
}

fn decode_list<T: serde::de::DeserializeOwned + withings_lake::withings::types::Plausible + std::fmt::Debug>(
    body: &Value,
    key: &str,
    what: &str,
) -> usize {
    let items: Vec<Item<T>> = body[key].as_array().unwrap().iter().cloned().map(Item::decode).collect();
    all_ok(&items, what);
    items.len()
}

#[test]
fn real_fixtures_decode_into_client_types() {
    let Some(measurement) = common::real_fixture("measurement.json") else { return };
    let bytes = |v: &Value| serde_json::to_vec(v).unwrap();
    let body = decode_envelope("getmeas", &bytes(&measurement)).unwrap();
    assert_eq!(decode_list::<types::MeasureGroup>(&body, "measuregrps", "measurement.json"), 2);
    for name in ["measurement_list.json", "measurement_list_2.json", "measurement_positions.json"] {
        let groups = common::real_fixture(name).unwrap();
        // Groups-only files, wrapped as a getmeas body.
        let envelope = json!({"status": 0, "body": {"measuregrps": groups, "more": 0, "offset": 0}});
        let body = decode_envelope("getmeas", &bytes(&envelope)).unwrap();
        assert!(decode_list::<types::MeasureGroup>(&body, "measuregrps", name) > 0);
    }
    /// Decodes the list under a key of a body; returns how many records it had.
    type DecodeList = fn(&Value, &str, &str) -> usize;
    let cases: [(&str, &str, DecodeList); 8] = [
        ("activity.json", "activities", decode_list::<types::Activity>),
        ("workouts.json", "series", decode_list::<types::Workout>),
        ("sleep.json", "series", decode_list::<types::SleepSegment>),
        ("sleep_no_datafields.json", "series", decode_list::<types::SleepSegment>),
        ("sleep_summary.json", "series", decode_list::<types::SleepSummary>),
        ("sleep_summary_no_datafields.json", "series", decode_list::<types::SleepSummary>),
        ("device.json", "devices", decode_list::<types::Device>),
        ("new_device.json", "devices", decode_list::<types::Device>),
    ];
    for (name, key, decode) in cases {
        let body = decode_envelope("fixture", &bytes(&common::real_fixture(name).unwrap())).unwrap();
        assert!(decode(&body, key, name) > 0, "{name}");
    }
    let notify = decode_envelope("notify_list", &bytes(&common::real_fixture("notify_list.json").unwrap())).unwrap();
    assert_eq!(decode_list::<types::NotifyProfile>(&notify, "profiles", "notify_list.json"), 1);
    for name in ["notify_subscribe.json", "notify_revoke.json"] {
        assert_eq!(decode_envelope("notify", &bytes(&common::real_fixture(name).unwrap())).unwrap(), json!({}));
    }
    for name in ["goals.json", "goals_1.json", "goals_2.json", "no_goals.json"] {
        let body = decode_envelope("getgoals", &bytes(&common::real_fixture(name).unwrap())).unwrap();
        types::goals_of(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // The quirks: a real summary keeps its values, a sleep segment its series.
    let summary = decode_envelope("s", &bytes(&common::real_fixture("sleep_summary.json").unwrap())).unwrap();
    let first: types::SleepSummary = serde_json::from_value(summary["series"][0].clone()).unwrap();
    assert_eq!(first.data.sleep_efficiency, Some(0.86));
    let sleep = decode_envelope("s", &bytes(&common::real_fixture("sleep.json").unwrap())).unwrap();
    let seg: types::SleepSegment = serde_json::from_value(sleep["series"][0].clone()).unwrap();
    assert_eq!(seg.hr.unwrap().get(&1_618_691_453), Some(&70.0));
}

#[test]
fn envelope_errors_are_classified_and_name_the_endpoint() {
    let e = decode_envelope("getmeas", br#"{"status":401,"body":{},"error":"invalid_token"}"#).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Auth);
    assert!(e.to_string().starts_with("getmeas: Withings status 401"), "{e}");
    let e =
        decode_envelope("requesttoken", br#"{"status":601,"body":{"wait_seconds":12},"error":"Same arguments"}"#).unwrap_err();
    assert!(matches!(e, WithingsError::Status { wait_seconds: Some(12), kind: StatusKind::RateLimited, .. }));
    assert_eq!(e.class(), ErrorClass::Transient);
    let e = decode_envelope("getactivity", b"<html>502</html>").unwrap_err();
    assert!(matches!(e, WithingsError::NotJson { .. }) && e.is_retryable(), "{e}");
    let e = decode_envelope("getactivity", br#"{"status":0,"body":{"activ"#).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
    let e = decode_envelope("getmeas", br#"{"status":2555,"body":{}}"#).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Auth, "2555 is Unauthorized");
    let e = decode_envelope("getmeas", br#"{"status":4242,"body":{}}"#).unwrap_err();
    assert_eq!(e.kind(), Some(StatusKind::Unknown));
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn every_endpoint_decodes_from_the_simulator() {
    let sim = common::start(2, 0).await;
    let c = client(&sim, 0);
    let token = Secret::new(sim.access(0).await);
    let meas = c.getmeas(&token, &MeasQuery::default()).await.unwrap();
    assert_eq!(meas.timezone.as_deref(), Some("Europe/Paris"));
    assert!(meas.groups.len() > 50);
    all_ok(&meas.groups, "getmeas");
    let window = Window::Dates { from: ymd(20).parse().unwrap(), to: ymd(0).parse().unwrap() };
    let acts = c.getactivity(&token, window).await.unwrap();
    all_ok(&acts, "getactivity");
    assert!(acts.iter().any(|a| a.value.as_ref().unwrap().hr_average.is_some()), "data_fields were sent");
    let intraday = c.getintradayactivity(&token, NOW - 3 * 86_400, NOW).await.unwrap();
    assert!(intraday.len() > 300, "three 24 h requests: {}", intraday.len());
    assert!(intraday.values().all(|i| i.value.is_ok()));
    assert!(intraday.values().any(|i| i.value.as_ref().unwrap().spo2_auto.is_some()), "every field requested");
    let workouts = c.getworkouts(&token, window).await.unwrap();
    all_ok(&workouts, "getworkouts");
    assert!(workouts.iter().all(|w| w.value.as_ref().unwrap().data.is_some()), "data_fields were sent");
    let sleep = c.sleep_get(&token, NOW - 86_400, NOW).await.unwrap();
    all_ok(&sleep.segments, "sleep get");
    let starts: Vec<i64> = sleep.segments.iter().map(|s| s.value.as_ref().unwrap().startdate).collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "sorted, once each");
    assert!(sleep.segments.iter().any(|s| s.value.as_ref().unwrap().rmssd.is_some()));
    let nights = c.sleep_getsummary(&token, window).await.unwrap();
    all_ok(&nights, "getsummary");
    assert!(nights.iter().all(|n| n.value.as_ref().unwrap().data.sleep_score.is_some()));
    let since = c.sleep_getsummary(&token, Window::LastUpdate(NOW - 3 * 86_400)).await.unwrap();
    assert!(!since.is_empty() && since.len() < nights.len());
    all_ok(&c.heart_list(&token, None, None).await.unwrap(), "heart list");
    all_ok(&c.getdevice(&token).await.unwrap(), "getdevice");
    let stats = c.accounting();
    assert_eq!(stats.retries, 0);
    assert_eq!(stats.endpoints["getintradayactivity"].requests, 3);
}

#[tokio::test]
async fn link_refresh_and_revoke_through_the_client() {
    let sim = common::start(2, 0).await;
    let c = client(&sim, 0);
    let redirect = "http://127.0.0.1:9/cb";
    let resp = sim
        .http
        .get(format!("{}/oauth2_user/authorize2", sim.base))
        .query(&[
            ("response_type", "code"),
            ("client_id", "demo-client"),
            ("state", "s1"),
            ("scope", "user.metrics,user.activity"),
            ("redirect_uri", redirect),
            ("sim_user", "1"),
        ])
        .send()
        .await
        .unwrap();
    let location = reqwest::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    let code = location.query_pairs().find(|(k, _)| k == "code").unwrap().1.to_string();
    let tokens = c.exchange_code(&code, redirect).await.unwrap();
    assert_eq!(tokens.userid.as_deref(), Some("31000001"), "string userid");
    let refreshed = c.refresh(&tokens.refresh_token).await.unwrap();
    assert_eq!(refreshed.userid.as_deref(), Some("31000001"), "integer userid, same text");
    assert_ne!(refreshed.refresh_token, tokens.refresh_token);
    let dbg = format!("{refreshed:?} {tokens:?}");
    assert!(!dbg.contains(refreshed.refresh_token.expose()) && !dbg.contains(tokens.access_token.expose()), "{dbg}");
    c.revoke_user("31000001").await.unwrap();
    let after = c.getdevice(&refreshed.access_token).await.unwrap_err();
    assert_eq!(after.class(), ErrorClass::Auth);
    let bad = c.refresh(&refreshed.refresh_token).await.unwrap_err();
    assert_eq!(bad.kind(), Some(StatusKind::InvalidParams));
    let text = format!("{bad} {bad:?}");
    assert!(!text.contains(refreshed.refresh_token.expose()) && !text.contains("demo-secret"), "{text}");
}

#[tokio::test]
async fn pagination_collects_every_page() {
    let sim = common::start_with(SimConfig { page_size: 9, ..common::config(1, 0) }).await;
    let c = client(&sim, 0);
    let token = Secret::new(sim.access(0).await);
    let paged = c.getmeas(&token, &MeasQuery::default()).await.unwrap();
    let pages = c.accounting().endpoints["getmeas"].requests;
    assert!(pages > 3, "{pages} pages");
    let direct = sim.body("/measure", token.expose(), &[("action", "getmeas"), ("category", "1"), ("offset", "0")]).await;
    assert_eq!(direct["more"], 1);
    let ids: std::collections::BTreeSet<i64> = paged.groups.iter().map(|g| g.value.as_ref().unwrap().grpid).collect();
    assert_eq!(ids.len(), paged.groups.len(), "no group twice");
    let whole_sim = common::start_with(SimConfig { page_size: 100_000, ..common::config(1, 0) }).await;
    let whole = client(&whole_sim, 0).getmeas(&Secret::new(whole_sim.access(0).await), &MeasQuery::default()).await.unwrap();
    assert_eq!(paged.groups.len(), whole.groups.len(), "pages of 9 add up to the whole list");
}

#[tokio::test]
async fn faults_are_retried_or_classified() {
    let sim = common::start(1, 0).await;
    let c = client(&sim, 0);
    let token = Secret::new(sim.access(0).await);
    for kind in ["http_500", "http_502", "non_json", "truncated", "status_601"] {
        sim.admin_post("/_sim/faults", json!({"kind": kind, "count": 2, "endpoint": "getdevice"})).await;
        let devices = c.getdevice(&token).await.unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert!(!devices.is_empty(), "{kind}");
    }
    sim.admin_post("/_sim/faults", json!({"kind": "delay", "count": 1, "delay_ms": 300, "endpoint": "getdevice"})).await;
    c.getdevice(&token).await.unwrap();
    sim.admin_post("/_sim/faults", json!({"kind": "status_401", "count": 1, "endpoint": "getdevice"})).await;
    assert_eq!(c.getdevice(&token).await.unwrap_err().class(), ErrorClass::Auth, "401 is for the caller to refresh");
    sim.admin_post("/_sim/faults", json!({"kind": "status_2554", "count": 1, "endpoint": "getdevice"})).await;
    let e = c.getdevice(&token).await.unwrap_err();
    assert_eq!(e.kind(), Some(StatusKind::NotImplemented));
    let acc = c.accounting();
    let d = &acc.endpoints["getdevice"];
    assert_eq!(d.by_outcome["http_500"], 2);
    assert_eq!(d.by_outcome["not_json"], 4, "non-JSON and truncated bodies");
    assert_eq!(d.by_outcome["601"], 2);
    assert_eq!(d.by_outcome["401"], 1, "not retried");
    assert_eq!(d.by_outcome["2554"], 1, "not retried");
    assert_eq!(acc.rate_limited, 2);
    // Past the retry budget, the last transient error comes back, named.
    sim.admin_post("/_sim/faults", json!({"kind": "http_502", "count": 10, "endpoint": "getdevice"})).await;
    let e = c.getdevice(&token).await.unwrap_err();
    assert_eq!(e.to_string(), "getdevice: HTTP 502 from Withings");
    assert_eq!(e.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn a_601_with_wait_seconds_pauses_for_that_long() {
    let sim = common::start(1, 0).await;
    let refresh = sim.users().await[0]["refresh_token"].as_str().unwrap().to_string();
    // Another process sent the identical refresh a moment ago.
    let first = sim.refresh_grant(&refresh, &[]).await;
    assert_eq!(first["status"], 0);
    let c = client(&sim, 0);
    let started = Instant::now();
    let tokens = c.refresh(&Secret::new(refresh)).await.expect("inside the grace window, after the pause");
    assert!(started.elapsed() >= Duration::from_secs(8), "waited {:?}", started.elapsed());
    assert!(!tokens.access_token.is_empty());
    assert_eq!(c.accounting().rate_limited, 1);
}

#[tokio::test]
async fn at_the_configured_limit_the_server_sees_no_violation() {
    let sim = common::start(1, 10).await;
    let token = Secret::new(sim.access(0).await); // 1 of the server's 10
    let c = client(&sim, 9);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..14 {
        let (c, token) = (c.clone(), token.clone());
        tasks.push(tokio::spawn(async move { c.getdevice(&token).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(started.elapsed() >= Duration::from_secs(59), "5 of 14 waited for the window");
    let stats = sim.stats().await;
    assert_eq!(stats["limit_violations"], 0, "{stats}");
    let acc = c.accounting();
    assert_eq!(acc.requests, 14);
    // Four requests at a time hold a concurrency permit while they wait for the window (the
    // fifth waits for a permit): the limiter's accounting shows four long waits (45 s each at
    // least: the window opens 60 s after the first answers, however slowly those came).
    assert!(acc.limiter_wait_ms >= 4 * 45_000, "{acc:?}");
}

#[tokio::test]
async fn notifications_are_managed_through_the_client() {
    let sim = common::start(1, 0).await;
    let c = client(&sim, 0);
    let token = Secret::new(sim.access(0).await);
    let rx = crate::sim_notify::receiver(axum::http::StatusCode::OK).await;
    c.notify_subscribe(&token, &rx.url, 44, "lake").await.unwrap();
    c.notify_subscribe(&token, &rx.url, 16, "lake").await.unwrap();
    let profiles = c.notify_list(&token, None).await.unwrap();
    all_ok(&profiles, "notify list");
    let applis: Vec<i64> = profiles.iter().map(|p| p.value.as_ref().unwrap().appli).collect();
    assert_eq!(applis, [44, 16]);
    c.notify_revoke(&token, &rx.url, 44).await.unwrap();
    assert_eq!(c.notify_list(&token, Some(44)).await.unwrap().len(), 0);
    let refused = c.notify_subscribe(&token, "ftp://example.org/x", 1, "lake").await.unwrap_err();
    assert_eq!(refused.kind(), Some(StatusKind::InvalidParams), "293: {refused}");
}

#[tokio::test]
async fn a_server_that_never_stops_paging_is_cut_off() {
    use axum::routing::post;
    // Always `more`, with an offset that moves: the guard stops after max_pages.
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let app = axum::Router::new().route(
        "/v2/measure",
        post(move || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { axum::Json(json!({"status": 0, "body": {"activities": [], "more": true, "offset": n + 1}})) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let c = WithingsClient::new(ClientConfig { base_url: base, requests_per_minute: 0, max_pages: 5, ..ClientConfig::default() })
        .unwrap();
    let e = c.getactivity(&Secret::new("t"), Window::LastUpdate(0)).await.unwrap_err();
    assert!(matches!(e, WithingsError::RunawayPagination { pages: 5, .. }), "{e}");
    assert_eq!(c.accounting().requests, 5);
}

#[test]
fn secrets_only_travel_over_https_or_loopback() {
    let cfg = |url: &str| ClientConfig { base_url: url.into(), ..ClientConfig::default() };
    assert!(WithingsClient::new(cfg("https://wbsapi.withings.net")).is_ok());
    assert!(WithingsClient::new(cfg("http://127.0.0.1:8089")).is_ok());
    let e = WithingsClient::new(cfg("http://wbsapi.withings.net")).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Config, "{e}");
    let dbg = format!(
        "{:?}",
        WithingsClient::new(ClientConfig { client_secret: Secret::new("s3cr3t"), ..cfg("https://x.example") }).unwrap()
    );
    assert!(!dbg.contains("s3cr3t"), "{dbg}");
}
