//! OAuth2 as Withings runs it: authorize redirect, single-use 30 s codes, refresh-token
//! rotation with the 8-hour grace, 3-hour access tokens, the 10 s same-arguments rule, signed
//! revoke, scopes.

use reqwest::StatusCode;
use serde_json::Value;
use withings_simulator::SimConfig;

use crate::common::{self, Sim};

const CALLBACK: &str = "http://127.0.0.1:9/callback";

/// Opens the authorize URL; returns the `code` of the redirect, after checking `state`.
async fn authorize(sim: &Sim, scope: &str, user: &str) -> String {
    let resp = sim
        .http
        .get(format!("{}/oauth2_user/authorize2", sim.base))
        .query(&[
            ("response_type", "code"),
            ("client_id", "demo-client"),
            ("state", "csrf-123"),
            ("scope", scope),
            ("redirect_uri", CALLBACK),
            ("sim_user", user),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let url = reqwest::Url::parse(&location).unwrap();
    assert!(location.starts_with(CALLBACK), "{location}");
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "csrf-123");
    q["code"].clone()
}

async fn exchange(sim: &Sim, code: &str, redirect: &str) -> Value {
    sim.call(
        "/v2/oauth2",
        None,
        &[
            ("action", "requesttoken"),
            ("grant_type", "authorization_code"),
            ("client_id", "demo-client"),
            ("client_secret", "demo-secret"),
            ("code", code),
            ("redirect_uri", redirect),
        ],
    )
    .await
}

async fn refresh(sim: &Sim, token: &str) -> Value {
    sim.refresh_grant(token, &[]).await
}

/// The same grant again, made distinct by an ignored `attempt` argument.
async fn refresh_attempt(sim: &Sim, token: &str, attempt: &str) -> Value {
    sim.refresh_grant(token, &[("attempt", attempt)]).await
}

async fn getmeas_status(sim: &Sim, access: &str) -> i64 {
    sim.call("/measure", Some(access), &[("action", "getmeas"), ("meastype", "1")]).await["status"].as_i64().unwrap()
}

#[tokio::test]
async fn authorize_code_is_single_use_and_lives_30_seconds() {
    let sim = common::start(3, 0).await;
    let code = authorize(&sim, "user.metrics,user.activity", "2").await;
    let wrong_redirect = exchange(&sim, &code, "http://127.0.0.1:9/other").await;
    assert_eq!(wrong_redirect["status"], 503, "redirect_uri must match: {wrong_redirect}");

    let code = authorize(&sim, "user.metrics,user.activity", "2").await;
    let ok = exchange(&sim, &code, CALLBACK).await;
    assert_eq!(ok["status"], 0, "{ok}");
    let body = &ok["body"];
    assert_eq!(body["userid"], Value::String((31_000_000 + 2).to_string()), "userid as a string on code exchange");
    assert_eq!(body["expires_in"], 10800);
    assert_eq!(body["scope"], "user.metrics,user.activity");
    assert_eq!(body["token_type"], "Bearer");
    let reused = exchange(&sim, &code, CALLBACK).await;
    assert_eq!(reused["status"], 601, "the identical request within 10 s: {reused}");
    // The same code again with one more (ignored) argument escapes the 10 s rule: 503.
    let reused = sim
        .call(
            "/v2/oauth2",
            None,
            &[
                ("action", "requesttoken"),
                ("grant_type", "authorization_code"),
                ("client_id", "demo-client"),
                ("client_secret", "demo-secret"),
                ("code", &code),
                ("redirect_uri", CALLBACK),
                ("state", "again"),
            ],
        )
        .await;
    assert_eq!(reused["status"], 503, "a code works once: {reused}");

    let late = authorize(&sim, "user.metrics", "1").await;
    sim.advance(31).await;
    let expired = exchange(&sim, &late, CALLBACK).await;
    assert_eq!(expired["status"], 503, "a code lives 30 seconds: {expired}");
    let bogus = exchange(&sim, "not-a-code", CALLBACK).await;
    assert_eq!(bogus["status"], 503);
}

#[tokio::test]
async fn authorize_rejects_bad_requests_with_a_named_reason() {
    let sim = common::start(1, 0).await;
    for (name, value, needle) in [
        ("client_id", "someone-else", "client_id"),
        ("scope", "user.everything", "scope"),
        ("redirect_uri", "not a url", "redirect_uri"),
        ("sim_user", "99", "sim_user"),
    ] {
        let mut q = vec![
            ("response_type", "code"),
            ("client_id", "demo-client"),
            ("state", "s"),
            ("scope", "user.metrics"),
            ("redirect_uri", CALLBACK),
        ];
        q.retain(|(k, _)| *k != name);
        q.push((name, value));
        let resp = sim.http.get(format!("{}/oauth2_user/authorize2", sim.base)).query(&q).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{name}={value}");
        let text = resp.text().await.unwrap();
        assert!(text.contains(needle), "{name}: {text}");
    }
}

#[tokio::test]
async fn refresh_rotates_and_the_old_token_lives_until_the_new_access_token_is_used() {
    let sim = common::start(1, 0).await;
    let r0 = sim.users().await[0]["refresh_token"].as_str().unwrap().to_string();
    let first = refresh(&sim, &r0).await;
    assert_eq!(first["status"], 0);
    assert!(first["body"]["userid"].is_i64(), "userid as an integer on refresh: {first}");
    let a1 = first["body"]["access_token"].as_str().unwrap().to_string();
    let r1 = first["body"]["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r0, r1, "every refresh rotates the refresh token");
    assert_eq!(sim.users().await[0]["refresh_token"], r1.as_str(), "/_sim/users hands out the newest");

    // Grace: the new pair was lost before use; the old refresh token still works.
    let second = refresh_attempt(&sim, &r0, "2").await;
    assert_eq!(second["status"], 0, "old refresh token within grace: {second}");
    let a2 = second["body"]["access_token"].as_str().unwrap().to_string();
    // Using the newest access token kills the old refresh token.
    assert_eq!(getmeas_status(&sim, &a2).await, 0);
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    let dead = refresh_attempt(&sim, &r0, "3").await;
    assert_eq!(dead["status"], 503, "old refresh token after the new access token was used: {dead}");
    // The other access token (a1) was minted earlier and is still valid until it expires.
    assert_eq!(getmeas_status(&sim, &a1).await, 0);
    assert_eq!(sim.stats().await["auth_refreshes"], 2);
}

#[tokio::test]
async fn grace_ends_after_8_hours_and_access_tokens_after_3() {
    let sim = common::start(1, 0).await;
    let r0 = sim.users().await[0]["refresh_token"].as_str().unwrap().to_string();
    let first = refresh(&sim, &r0).await;
    let a1 = first["body"]["access_token"].as_str().unwrap().to_string();
    let r1 = first["body"]["refresh_token"].as_str().unwrap().to_string();
    sim.advance(3 * 3600 - 10).await;
    assert_eq!(getmeas_status(&sim, &a1).await, 0, "valid just before 3 hours");
    sim.advance(20).await;
    assert_eq!(getmeas_status(&sim, &a1).await, 401, "expired after 3 hours");
    sim.advance(5 * 3600).await;
    let old = refresh_attempt(&sim, &r0, "2").await;
    assert_eq!(old["status"], 503, "grace is over after 8 hours: {old}");
    let current = refresh(&sim, &r1).await;
    assert_eq!(current["status"], 0, "the current refresh token still works: {current}");
}

#[tokio::test]
async fn identical_token_requests_within_10_seconds_get_601_with_wait_seconds() {
    let sim = common::start(1, 0).await;
    let bogus = refresh(&sim, "0123456789").await;
    assert_eq!(bogus["status"], 503);
    let again = refresh(&sim, "0123456789").await;
    assert_eq!(again["status"], 601, "{again}");
    let wait = again["body"]["wait_seconds"].as_i64().unwrap();
    assert!((1..=10).contains(&wait), "{again}");
    assert_eq!(again["error"], "Same arguments in less than 10 seconds");
}

#[tokio::test]
async fn scopes_limit_what_a_token_reads() {
    let sim = common::start(1, 0).await;
    let code = authorize(&sim, "user.activity", "0").await;
    let tokens = exchange(&sim, &code, CALLBACK).await;
    let access = tokens["body"]["access_token"].as_str().unwrap();
    let meas = sim.call("/measure", Some(access), &[("action", "getmeas")]).await;
    assert_eq!(meas["status"], 214, "getmeas needs user.metrics: {meas}");
    let start = common::ymd(3);
    let act = sim
        .call("/v2/measure", Some(access), &[("action", "getactivity"), ("startdateymd", &start), ("enddateymd", &start)])
        .await;
    assert_eq!(act["status"], 0);
}

#[tokio::test]
async fn signed_revoke_needs_a_fresh_nonce_and_ends_tokens_and_subscriptions() {
    let sim = common::start(2, 0).await;
    let (access, refresh_token) = sim.tokens(1).await;
    let ts = chrono::Utc::now().timestamp().to_string();
    let sig = withings_simulator::sign("demo-secret", &["getnonce", "demo-client", &ts]);
    let bad = sim
        .call(
            "/v2/signature",
            None,
            &[("action", "getnonce"), ("client_id", "demo-client"), ("timestamp", &ts), ("signature", "00ff")],
        )
        .await;
    assert_eq!(bad["status"], 503, "{bad}");
    let nonce_reply = sim
        .call(
            "/v2/signature",
            None,
            &[("action", "getnonce"), ("client_id", "demo-client"), ("timestamp", &ts), ("signature", &sig)],
        )
        .await;
    assert_eq!(nonce_reply["status"], 0, "{nonce_reply}");
    let nonce = nonce_reply["body"]["nonce"].as_str().unwrap();
    let revoke_sig = withings_simulator::sign("demo-secret", &["revoke", "demo-client", nonce]);
    let userid = (31_000_000 + 1).to_string();
    let params = [
        ("action", "revoke"),
        ("client_id", "demo-client"),
        ("nonce", nonce),
        ("signature", revoke_sig.as_str()),
        ("userid", userid.as_str()),
    ];
    let revoked = sim.call("/v2/oauth2", None, &params).await;
    assert_eq!(revoked["status"], 0, "{revoked}");
    assert_eq!(getmeas_status(&sim, &access).await, 401, "revoked access token");
    assert_eq!(refresh(&sim, &refresh_token).await["status"], 503, "revoked refresh token");
    assert!(sim.users().await[1]["refresh_token"].is_null());
    // The nonce was single-use.
    let reuse =
        sim.call("/v2/oauth2", None, &params[..4].iter().copied().chain([("userid", "31000000")]).collect::<Vec<_>>()).await;
    assert_eq!(reuse["status"], 503, "{reuse}");
    // A client secret does not stand in for the signature on revoke.
    let (access0, _) = sim.tokens(0).await;
    let forged = sim
        .call(
            "/v2/oauth2",
            None,
            &[
                ("action", "revoke"),
                ("client_id", "demo-client"),
                ("client_secret", "demo-secret"),
                ("nonce", "made-up"),
                ("signature", "00ff"),
                ("userid", "31000000"),
            ],
        )
        .await;
    assert_eq!(forged["status"], 503, "{forged}");
    assert_eq!(getmeas_status(&sim, &access0).await, 0, "user 0 is still linked");
    // The other user is untouched.
    let other = sim.access(0).await;
    assert_eq!(getmeas_status(&sim, &other).await, 0);
}

#[tokio::test]
async fn other_client_credentials_are_refused() {
    let sim =
        common::start_with(SimConfig { client_id: "acme".into(), client_secret: "s3cret".into(), ..common::config(1, 0) }).await;
    let r0 = sim.users().await[0]["refresh_token"].as_str().unwrap().to_string();
    let wrong = refresh(&sim, &r0).await; // demo-client / demo-secret
    assert_eq!(wrong["status"], 503, "{wrong}");
    let right = sim
        .call(
            "/v2/oauth2",
            None,
            &[
                ("action", "requesttoken"),
                ("grant_type", "refresh_token"),
                ("client_id", "acme"),
                ("client_secret", "s3cret"),
                ("refresh_token", &r0),
            ],
        )
        .await;
    assert_eq!(right["status"], 0, "{right}");
}
