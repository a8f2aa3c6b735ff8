//! Notification subscriptions and delivery to a receiver started by the test.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;

use crate::common::{self, Sim};
use crate::shape::assert_same_shape;

pub(crate) struct Receiver {
    pub url: String,
    pub bodies: Arc<Mutex<Vec<String>>>,
}

/// A loopback receiver: HEAD answers `head_status`, POST records the form body.
pub(crate) async fn receiver(head_status: StatusCode) -> Receiver {
    let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
    let store = bodies.clone();
    let app = Router::new().route(
        "/withings/notify",
        post(move |body: String| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push(body);
                StatusCode::OK
            }
        })
        .head(move || async move { head_status }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { url: format!("http://{addr}/withings/notify"), bodies }
}

async fn subscribe(sim: &Sim, token: &str, url: &str, appli: &str) -> serde_json::Value {
    sim.call("/notify", Some(token), &[("action", "subscribe"), ("callbackurl", url), ("appli", appli), ("comment", "lake")])
        .await
}

#[tokio::test]
async fn subscriptions_receive_form_notifications_when_data_arrives() {
    let sim = common::start(2, 0).await;
    let rx = receiver(StatusCode::OK).await;
    let token = sim.access(0).await;
    for appli in ["1", "4", "16", "44"] {
        let v = subscribe(&sim, &token, &rx.url, appli).await;
        assert_eq!(v["status"], 0, "{v}");
    }
    let listed = sim.call("/notify", Some(&token), &[("action", "list")]).await;
    assert_eq!(listed["body"]["profiles"].as_array().unwrap().len(), 4);
    if let Some(real) = common::real_fixture("notify_list.json") {
        assert_same_shape("notify_list.json", &real, &listed, &[], &[]);
        let sub = subscribe(&sim, &token, &rx.url, "1").await;
        assert_same_shape("notify_subscribe.json", &common::real_fixture("notify_subscribe.json").unwrap(), &sub, &[], &[]);
    }
    let one = sim.call("/notify", Some(&token), &[("action", "get"), ("callbackurl", &rx.url), ("appli", "44")]).await;
    assert_eq!(one["body"]["appli"], 44);

    // Two days in 6-hour steps: each step notifies what became visible during it.
    let mut sent = 0;
    for _ in 0..8 {
        sent += sim.advance(6 * 3600).await["notifications_sent"].as_u64().unwrap();
    }
    assert!(sent >= 6, "two days of a fully equipped user: {sent}");
    let bodies = rx.bodies.lock().unwrap().clone();
    let mut applis = std::collections::BTreeSet::new();
    for b in &bodies {
        let form: std::collections::HashMap<String, String> = form_urlencoded::parse(b.as_bytes()).into_owned().collect();
        assert_eq!(form["userid"], "31000000", "only the subscribed user: {b}");
        let (start, end): (i64, i64) = (form["startdate"].parse().unwrap(), form["enddate"].parse().unwrap());
        assert!(start <= end && end <= common::NOW + 2 * 86_400, "{b}");
        applis.insert(form["appli"].clone());
    }
    assert!(applis.contains("16") && applis.contains("44"), "two days bring activity and sleep: {applis:?}");
    assert!(applis.contains("1"), "a Body Cardio weigh-in (with its pulse) is appli 1: {applis:?}");
    assert_eq!(sim.stats().await["notifications_sent"].as_u64().unwrap(), bodies.len() as u64);

    let token = sim.access(0).await; // two days later: a fresh access token
    let revoked = sim.call("/notify", Some(&token), &[("action", "revoke"), ("callbackurl", &rx.url), ("appli", "44")]).await;
    assert_eq!(revoked["status"], 0);
    if let Some(real) = common::real_fixture("notify_revoke.json") {
        assert_same_shape("notify_revoke.json", &real, &revoked, &[], &[]);
    }
    let again = sim.call("/notify", Some(&token), &[("action", "revoke"), ("callbackurl", &rx.url), ("appli", "44")]).await;
    assert_eq!(again["status"], 286, "nothing left to revoke: {again}");
    let listed = sim.call("/notify", Some(&token), &[("action", "list"), ("appli", "44")]).await;
    assert!(listed["body"]["profiles"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn callbacks_must_be_http_urls_that_answer_head() {
    let sim = common::start(1, 0).await;
    let token = sim.access(0).await;
    let refusing = receiver(StatusCode::NOT_FOUND).await;
    for url in ["ftp://example.org/hook", "not a url", "http://127.0.0.1:1/nobody-listens", refusing.url.as_str()] {
        let v = subscribe(&sim, &token, url, "1").await;
        assert_eq!(v["status"], 293, "{url}: {v}");
    }
    let ok = receiver(StatusCode::OK).await;
    let v = subscribe(&sim, &token, &ok.url, "99").await;
    assert_eq!(v["status"], 503, "unknown appli: {v}");
}
