//! The 601 rate limit, fault injection, statistics, latency and determinism.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use withings_simulator::SimConfig;

use crate::common::{self, NOW, Sim, ymd};

async fn getmeas(sim: &Sim, token: &str) -> (StatusCode, Vec<u8>) {
    sim.raw("/measure", Some(token), &[("action", "getmeas"), ("meastype", "1")]).await
}

fn status_of(body: &[u8]) -> i64 {
    serde_json::from_slice::<Value>(body).unwrap()["status"].as_i64().unwrap()
}

#[tokio::test]
async fn requests_past_the_limit_get_601_and_count_toward_it() {
    let sim = common::start(1, 6).await;
    let token = sim.access(0).await; // request 1
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let (_, body) = getmeas(&sim, &token).await;
        statuses.push(status_of(&body));
    }
    assert_eq!(statuses, vec![0, 0, 0, 0, 0, 601, 601]);
    // Admin endpoints never count.
    for _ in 0..10 {
        sim.admin("/_sim/clock").await;
    }
    let stats = sim.stats().await;
    assert_eq!(stats["limit_violations"], 2, "{stats}");
    assert_eq!(stats["requests"]["getmeas"]["601"], 2);
    assert_eq!(stats["requests"]["getmeas"]["0"], 5);
    assert_eq!(stats["total_requests"], 8);
    let (_, body) = sim.raw("/measure", Some(&token), &[("action", "getmeas")]).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v, json!({"status": 601, "body": {}, "error": "Too Many Requests"}));
}

#[tokio::test]
async fn injected_faults_hit_the_next_requests_then_stop() {
    let sim = common::start(1, 0).await;
    let token = sim.access(0).await;
    type Check = Box<dyn Fn(StatusCode, &[u8])>;
    let cases: Vec<(&str, Check)> = vec![
        ("http_500", Box::new(|s, _| assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR))),
        ("http_502", Box::new(|s, _| assert_eq!(s, StatusCode::BAD_GATEWAY))),
        (
            "non_json",
            Box::new(|s, b| {
                assert_eq!(s, StatusCode::OK);
                assert!(serde_json::from_slice::<Value>(b).is_err(), "a maintenance page, not JSON");
            }),
        ),
        (
            "truncated",
            Box::new(|s, b| {
                assert_eq!(s, StatusCode::OK);
                assert!(b.starts_with(b"{\"status\":0"), "the real answer's beginning");
                assert!(serde_json::from_slice::<Value>(b).is_err(), "cut short");
            }),
        ),
        ("status_401", Box::new(|_, b| assert_eq!(status_of(b), 401))),
        ("status_601", Box::new(|_, b| assert_eq!(status_of(b), 601))),
        ("status_2554", Box::new(|_, b| assert_eq!(status_of(b), 2554))),
    ];
    for (kind, check) in &cases {
        let (status, v) = sim.admin_post("/_sim/faults", json!({"kind": kind, "count": 2})).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        for _ in 0..2 {
            let (s, b) = getmeas(&sim, &token).await;
            check(s, &b);
        }
        let (s, b) = getmeas(&sim, &token).await;
        assert_eq!((s, status_of(&b)), (StatusCode::OK, 0), "{kind}: only the next 2 requests");
    }
    assert_eq!(sim.stats().await["faults_injected"], 14);
}

#[tokio::test]
async fn faults_can_target_one_endpoint_or_a_fraction() {
    let sim = common::start(1, 0).await;
    let token = sim.access(0).await;
    sim.admin_post("/_sim/faults", json!({"kind": "http_502", "count": 1, "endpoint": "getactivity"})).await;
    let (s, _) = getmeas(&sim, &token).await;
    assert_eq!(s, StatusCode::OK, "getmeas is not the target");
    let day = ymd(1);
    let (s, _) =
        sim.raw("/v2/measure", Some(&token), &[("action", "getactivity"), ("startdateymd", &day), ("enddateymd", &day)]).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);

    sim.admin_post("/_sim/faults", json!({"kind": "status_601", "fraction": 0.5})).await;
    let mut hit = 0;
    for _ in 0..60 {
        let (_, b) = getmeas(&sim, &token).await;
        if status_of(&b) == 601 {
            hit += 1;
        }
    }
    assert!((10..=50).contains(&hit), "about half of 60 requests: {hit}");
    // A fraction fault that misses does not hide the faults behind it.
    sim.admin_post("/_sim/faults", json!({"kind": "http_500", "count": 3})).await;
    let mut five_hundreds = 0;
    for _ in 0..12 {
        if getmeas(&sim, &token).await.0 == StatusCode::INTERNAL_SERVER_ERROR {
            five_hundreds += 1;
        }
    }
    assert_eq!(five_hundreds, 3, "the counted fault fires on the requests the fraction fault lets through");
    let listed = sim.admin("/_sim/faults").await;
    assert_eq!(listed["faults"].as_array().unwrap().len(), 1, "the spent counted fault is gone");
    sim.http.delete(format!("{}/_sim/faults", sim.base)).send().await.unwrap();
    for _ in 0..10 {
        assert_eq!(status_of(&getmeas(&sim, &token).await.1), 0, "cleared");
    }

    let start = Instant::now();
    sim.admin_post("/_sim/faults", json!({"kind": "delay", "delay_ms": 400})).await;
    assert_eq!(status_of(&getmeas(&sim, &token).await.1), 0, "a delayed answer is still the answer");
    assert!(start.elapsed() >= Duration::from_millis(400));

    for bad in [
        json!({"kind": "http_418"}),
        json!({"kind": "delay", "count": 1, "fraction": 0.5}),
        json!({"kind": "delay", "fraction": 2.0}),
        json!({"kind": "delay", "cuont": 1}),
    ] {
        let (s, v) = sim.admin_post("/_sim/faults", bad.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(v["error"].as_str().unwrap().starts_with("fault request"), "{v}");
    }
}

#[tokio::test]
async fn latency_is_added_to_api_requests() {
    let sim = common::start_with(SimConfig { latency_ms: 250, ..common::config(1, 0) }).await;
    let token = sim.access(0).await;
    let start = Instant::now();
    getmeas(&sim, &token).await;
    assert!(start.elapsed() >= Duration::from_millis(250));
}

/// Every data endpoint for two users, as raw bytes.
async fn transcript(sim: &Sim) -> Vec<Vec<u8>> {
    let mut out = vec![serde_json::to_vec(&sim.admin("/_sim/users").await).unwrap()];
    let (s, e) = ((NOW - 86_400).to_string(), NOW.to_string());
    let (from, to) = (ymd(30), ymd(0));
    for user in 0..2 {
        let token = sim.access(user).await;
        let calls: Vec<(&str, Vec<(&str, &str)>)> = vec![
            ("/measure", vec![("action", "getmeas")]),
            (
                "/v2/measure",
                vec![
                    ("action", "getactivity"),
                    ("startdateymd", &from),
                    ("enddateymd", &to),
                    ("data_fields", "steps,distance,calories,hr_average,hr_zone_0"),
                ],
            ),
            (
                "/v2/measure",
                vec![
                    ("action", "getintradayactivity"),
                    ("startdate", &s),
                    ("enddate", &e),
                    ("data_fields", "steps,calories,distance,heart_rate,spo2_auto,rmssd,rr"),
                ],
            ),
            (
                "/v2/measure",
                vec![
                    ("action", "getworkouts"),
                    ("startdateymd", &from),
                    ("enddateymd", &to),
                    ("data_fields", "calories,hr_average,steps,pool_laps"),
                ],
            ),
            (
                "/v2/sleep",
                vec![("action", "get"), ("startdate", &s), ("enddate", &e), ("data_fields", "hr,rr,snoring,rmssd,sdnn_1")],
            ),
            (
                "/v2/sleep",
                vec![
                    ("action", "getsummary"),
                    ("startdateymd", &from),
                    ("enddateymd", &to),
                    ("data_fields", "sleep_score,hr_average,night_events"),
                ],
            ),
            ("/v2/heart", vec![("action", "list")]),
            ("/v2/user", vec![("action", "getdevice")]),
        ];
        for (path, params) in calls {
            let (status, body) = sim.raw(path, Some(&token), &params).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(status_of(&body), 0, "{path} {params:?}");
            out.push(body);
        }
    }
    out
}

#[tokio::test]
async fn same_seed_same_bytes_other_seed_other_data() {
    let a = common::start(2, 0).await;
    let b = common::start(2, 0).await;
    let c = common::start_with(SimConfig { seed: 7, ..common::config(2, 0) }).await;
    let (ta, tb, tc) = (transcript(&a).await, transcript(&b).await, transcript(&c).await);
    assert_eq!(ta.len(), tb.len());
    for (i, (x, y)) in ta.iter().zip(&tb).enumerate() {
        assert!(x == y, "response {i} differs between two servers with the same seed");
    }
    assert_ne!(ta[2], tc[2], "another seed, other measures");
}

#[tokio::test]
async fn admin_users_can_be_listed_in_slices() {
    let sim = common::start(5, 0).await;
    let slice = sim.admin("/_sim/users?offset=3&limit=10").await;
    assert_eq!(slice["total"], 5);
    let users = slice["users"].as_array().unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(users[0]["index"], 3);
    assert_eq!(users[0]["userid"], 31_000_003);
    let resp = sim.http.get(format!("{}/_sim/users?limit=-1", sim.base)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("limit"), "{v}");
}
