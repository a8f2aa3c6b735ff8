//! `withings-lake serve` end to end over loopback: the simulator as Withings, the service's
//! HTTP API as a Vital client sees it, the lake and the event files as analysts and handlers
//! see them.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use withings_lake::secret::Secret;
use withings_lake::serve::{self, Running, Service};
use withings_lake::{EngineOptions, PipelineFile, RequestBudget};

use crate::common::{self, NOW, Sim};

pub const API_KEY: &str = "test-api-key-0123456789";
pub const NOTIFY_SECRET: &str = "notify-secret-0123456789";
pub const REDIRECT: &str = "https://app.example.com/linked";

pub struct Served {
    pub sim: Sim,
    pub dir: tempfile::TempDir,
    pub api: Api,
    pub svc: Arc<Service>,
    running: Option<Running>,
    /// Simulated minus real time, seconds (the service's clock follows the simulator's).
    offset: Arc<AtomicI64>,
}

fn env(var: &str) -> Option<String> {
    match var {
        "WL_TEST_API_KEYS" => Some(format!("old-key-abcdefghijklmnop,{API_KEY}")),
        "WL_TEST_NOTIFY_SECRET" => Some(NOTIFY_SECRET.into()),
        "WL_TEST_SIGNING_KEY" => Some("signing-key-0123456789-0123456789-0123456789".into()),
        _ => None,
    }
}

pub fn pipeline_text(sim_base: &str, serve_extra: &str) -> String {
    // `serve_extra` lines replace the base `[serve]` lines with the same key.
    let base = [
        "listen = \"127.0.0.1:0\"".to_string(),
        "api_keys_env = \"WL_TEST_API_KEYS\"".into(),
        "notify_secret_env = \"WL_TEST_NOTIFY_SECRET\"".into(),
        "signing_key_env = \"WL_TEST_SIGNING_KEY\"".into(),
        format!("redirect_urls = [\"{REDIRECT}\"]"),
        "coalesce_seconds = 1".into(),
        "poll_interval_seconds = 36000".into(),
        "drain_seconds = 0".into(),
    ];
    let key = |l: &str| l.split('=').next().unwrap_or("").trim().to_string();
    let extra: Vec<&str> = serve_extra.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut serve: Vec<String> = base.into_iter().filter(|b| !extra.iter().any(|e| key(e) == key(b))).collect();
    serve.extend(extra.iter().map(|e| e.to_string()));
    format!(
        "[source]\napi_base_url = \"{sim_base}\"\nclient_id = \"demo-client\"\nclient_secret_env = \"WL_SERVE_TEST_UNSET\"\n\
         [credentials]\nurl = \"creds\"\nkey_file = \"creds.key\"\n[lake]\nurl = \"lake\"\n\
         [sync]\nbackfill_days = 14\nrelist_days = 14\n\
         [events]\nfinal_wait_seconds = 1\n[events.files]\nprefix = \"_events/files\"\n\
         [serve]\n{}\n",
        serve.join("\n")
    )
}

impl Served {
    pub async fn start(users: usize, serve_extra: &str) -> Served {
        Served::on(common::start(users, 0).await, serve_extra, 1, RequestBudget::Unlimited).await
    }

    /// A service over `sim`, with extra `[serve]` lines (`{sim}` stands for the simulator's
    /// URL), a lake of `shards` shards, and a request budget.
    pub async fn on(sim: Sim, serve_extra: &str, shards: u32, budget: RequestBudget) -> Served {
        Served::with_text(sim, serve_extra, budget, |t| {
            t.replace("[lake]\nurl = \"lake\"\n", &format!("[lake]\nurl = \"lake\"\nshards = {shards}\n"))
        })
        .await
    }

    /// A service over `sim` whose pipeline text `tweak` edits.
    pub async fn with_text(sim: Sim, serve_extra: &str, budget: RequestBudget, tweak: impl Fn(String) -> String) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pipeline.toml");
        let text = tweak(pipeline_text(&sim.base, &serve_extra.replace("{sim}", &sim.base)));
        std::fs::write(&file, text).unwrap();
        let offset = Arc::new(AtomicI64::new(NOW - chrono::Utc::now().timestamp()));
        let (svc, running) = launch_with(&file, offset.clone(), budget).await;
        let base = format!("http://{}", running.addr);
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Served { sim, dir, api: Api { base, http }, svc, running: Some(running), offset }
    }

    /// Moves the simulator's clock (which notifies what became visible) and the service's.
    pub async fn advance(&self, seconds: i64) {
        self.offset.fetch_add(seconds, Ordering::SeqCst);
        self.sim.advance(seconds).await;
    }

    /// Stops the service and starts another over the same lake and credentials.
    pub async fn restart(&mut self) {
        self.stop().await;
        let (svc, running) = launch(&self.dir.path().join("pipeline.toml"), self.offset.clone()).await;
        self.api.base = format!("http://{}", running.addr);
        self.svc = svc;
        self.running = Some(running);
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let lake = withings_lake::lake::Lake::open(
            withings_lake::storage::open(&self.dir.path().join("lake").display().to_string()).unwrap(),
        )
        .await
        .unwrap();
        let ctx = withings_lake::query_session(&lake).await.unwrap();
        let batches = withings_lake::query_sql(&ctx, sql).await.unwrap();
        use arrow::array::AsArray;
        batches.iter().map(|b| b.column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0)).sum()
    }

    pub fn events(&self) -> Vec<Value> {
        crate::events::lines_in(&self.dir.path().join("lake/_events/files"))
    }
}

/// The service's HTTP API as a Vital client and a browser use it.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl std::ops::Deref for Served {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Api {
    pub async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).header("x-vital-api-key", API_KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn metrics(&self) -> String {
        self.http.get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap()
    }

    /// The value of one metric line (`name{labels}`), 0 when absent.
    pub async fn metric(&self, line: &str) -> f64 {
        metric_in(&self.metrics().await, line)
    }

    /// Waits (up to 90 s) until `line` reaches `at_least`.
    pub async fn wait_metric(&self, line: &str, at_least: f64) {
        for _ in 0..900 {
            if self.metric(line).await >= at_least {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{line} never reached {at_least}:\n{}", self.metrics().await);
    }

    /// Creates a user and links the simulator's person `sim_user` through the browser flow.
    /// Returns the Vital user id.
    pub async fn create_and_link(&self, client_user_id: &str, sim_user: usize) -> String {
        let (status, user) = self.api(reqwest::Method::POST, "/v2/user", Some(json!({"client_user_id": client_user_id}))).await;
        assert_eq!(status, StatusCode::OK, "{user}");
        let user_id = user["user_id"].as_str().unwrap().to_string();
        let location = self.link(&user_id, sim_user).await;
        assert!(location.starts_with(REDIRECT) && location.contains("state=success"), "{location}");
        user_id
    }

    /// A link through the browser flow; returns where it ends.
    pub async fn link(&self, user_id: &str, sim_user: usize) -> String {
        let (status, token) = self
            .api(
                reqwest::Method::POST,
                "/v2/link/token",
                Some(json!({"user_id": user_id, "provider": "withings", "redirect_url": REDIRECT})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{token}");
        let (cookie, authorize) = self.open_link(token["link_web_url"].as_str().unwrap()).await;
        let callback = self.authorize(&authorize, sim_user).await;
        self.callback(&callback, Some(&cookie)).await
    }

    /// Opens a `link_web_url` as a browser: the cookie it sets and where it sends the browser.
    pub async fn open_link(&self, url: &str) -> (String, String) {
        let resp = self.http.get(url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let cookie = resp.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
        (cookie, resp.headers()["location"].to_str().unwrap().to_string())
    }

    /// The person consents at the simulator's authorize page; returns the callback URL.
    pub async fn authorize(&self, authorize: &str, sim_user: usize) -> String {
        let resp = self.http.get(format!("{authorize}&sim_user={sim_user}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND);
        resp.headers()["location"].to_str().unwrap().to_string()
    }

    /// Follows the callback (with the browser's cookie); returns the final redirect.
    pub async fn callback(&self, url: &str, cookie: Option<&str>) -> String {
        let mut req = self.http.get(url);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let resp = req.send().await.unwrap();
        match resp.headers().get("location") {
            Some(l) => l.to_str().unwrap().to_string(),
            None => format!("{} {}", resp.status(), resp.text().await.unwrap()),
        }
    }

    pub async fn notify(&self, body: &str) -> StatusCode {
        let url = format!("{}/withings/notify/{NOTIFY_SECRET}", self.base);
        self.http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .status()
    }
}

/// Requests the simulator answered for `endpoint`, whatever their status.
pub fn sim_requests(stats: &Value, endpoint: &str) -> u64 {
    stats["requests"][endpoint].as_object().map(|m| m.values().filter_map(Value::as_u64).sum()).unwrap_or(0)
}

pub fn metric_in(text: &str, line: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(line) && l[line.len()..].starts_with(' '))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Builds the engine and the service from a pipeline file, with the test's secrets and clock.
pub async fn launch(file: &std::path::Path, offset: Arc<AtomicI64>) -> (Arc<Service>, Running) {
    launch_with(file, offset, RequestBudget::Unlimited).await
}

pub async fn launch_with(file: &std::path::Path, offset: Arc<AtomicI64>, budget: RequestBudget) -> (Arc<Service>, Running) {
    let pipeline = PipelineFile::load(file).unwrap();
    let options = EngineOptions {
        requests_per_minute: Some(budget),
        workers: 1,
        client_secret: Some(Secret::new("demo-secret")),
        is_service: true,
    };
    let engine = pipeline.engine(&options).await.unwrap();
    let clock: serve::Clock = Arc::new(move || {
        chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() + offset.load(Ordering::SeqCst), 0).unwrap()
    });
    let svc = Arc::new(Service::new(&pipeline, engine, env).await.unwrap().with_clock(clock));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = serve::start(svc.clone(), listener).await.unwrap();
    (svc, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_is_created_linked_backfilled_refreshed_and_deleted_over_the_api() {
    let mut s = Served::start(2, "").await;
    let (status, body) = s.api(reqwest::Method::POST, "/v2/user", Some(json!({"client_user_id": "alice"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alice = body["user_id"].as_str().unwrap().to_string();
    assert_eq!(body["client_user_id"], "alice");
    assert_eq!(body["connected_sources"], json!([]));
    // The same client user id again: 409 with the existing id.
    let (status, body) = s.api(reqwest::Method::POST, "/v2/user", Some(json!({"client_user_id": "alice"}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["detail"]["user_id"], alice.as_str());

    // The browser flow.
    let end = s.link(&alice, 0).await;
    assert!(end.starts_with(REDIRECT) && end.contains("state=success"), "{end}");
    let (_, providers) = s.api(reqwest::Method::GET, &format!("/v2/user/providers/{alice}"), None).await;
    assert_eq!(providers["providers"][0]["slug"], "withings", "{providers}");
    assert_eq!(providers["providers"][0]["status"], "connected", "{providers}");
    let (_, resolved) = s.api(reqwest::Method::GET, "/v2/user/resolve/alice", None).await;
    assert_eq!(resolved["user_id"], alice.as_str());

    // The backfill runs by itself, then the connection and history are announced.
    s.wait_metric("withings_lake_runs_total{mode=\"backfill\",result=\"ok\"}", 1.0).await;
    assert!(s.count("SELECT count(*) FROM steps WHERE user_id = 'alice'").await > 0);
    let events = s.events();
    assert!(
        events.iter().any(|e| e["event_type"] == "provider.connection.created" && e["event"]["user_id"] == alice.as_str()),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e["event_type"] == "historical.data.weight.created"), "{events:?}");

    // Refresh: answered once the live job ran; the 9th within the hour is refused.
    for i in 0..8 {
        let (status, body) = s.api(reqwest::Method::POST, &format!("/v2/user/refresh/{alice}"), None).await;
        assert!(status == StatusCode::OK || status == StatusCode::ACCEPTED, "refresh {i}: {status} {body}");
        assert_eq!(body["success"], true);
        if i == 0 {
            assert_eq!(status, StatusCode::OK, "{body}");
            assert!(body["refreshed_sources"].as_array().unwrap().iter().any(|s| s == "withings/activity"), "{body}");
        }
    }
    let resp =
        s.http.post(format!("{}/v2/user/refresh/{alice}", s.base)).header("x-vital-api-key", API_KEY).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");

    // Reads over HTTP: summaries and grouped series in Vital's shapes, bad windows refused.
    let day = chrono::DateTime::from_timestamp(NOW, 0).unwrap().date_naive();
    let window = format!("start_date={}&end_date={day}", day - chrono::Duration::days(6));
    let (status, sleep) = s.api(reqwest::Method::GET, &format!("/v2/summary/sleep/{alice}?{window}"), None).await;
    assert_eq!(status, StatusCode::OK, "{sleep}");
    assert!(!sleep["sleep"].as_array().unwrap().is_empty(), "{sleep}");
    assert!(sleep["sleep"].as_array().unwrap().iter().all(|o| o["user_id"] == alice.as_str()));
    let (status, steps) = s.api(reqwest::Method::GET, &format!("/v2/timeseries/{alice}/steps/grouped?{window}"), None).await;
    assert_eq!(status, StatusCode::OK, "{steps}");
    assert!(!steps["groups"]["withings"][0]["data"].as_array().unwrap().is_empty(), "{steps}");
    for bad in [
        "start_date=2024-13-45".to_string(),
        format!("start_date={}&end_date={day}", day - chrono::Duration::days(400)),
        format!("{window}&next_cursor=AAAA"),
        "start_date=2024-06-01'%20OR%201=1--".to_string(),
    ] {
        let (status, body) = s.api(reqwest::Method::GET, &format!("/v2/timeseries/{alice}/steps/grouped?{bad}"), None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }
    let (status, _) = s.api(reqwest::Method::GET, &format!("/v2/summary/nonsense/{alice}?{window}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The refresh count survives a restart (it lives in the lake).
    s.restart().await;
    let (status, body) = s.api(reqwest::Method::POST, &format!("/v2/user/refresh/{alice}"), None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");

    // Delete: the user is gone from the API at once.
    let (status, body) = s.api(reqwest::Method::DELETE, &format!("/v2/user/{alice}"), None).await;
    assert_eq!((status, body["success"].clone()), (StatusCode::OK, json!(true)));
    let (status, _) = s.api(reqwest::Method::GET, &format!("/v2/user/{alice}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_identical_notifications_make_one_job() {
    let mut s = Served::start(1, "").await;
    s.create_and_link("bob", 0).await;
    s.wait_metric("withings_lake_runs_total{mode=\"backfill\",result=\"ok\"}", 1.0).await;
    let userid = s.sim.users().await[0]["userid"].as_i64().unwrap();
    let getmeas_before = sim_requests(&s.sim.stats().await, "getmeas");
    let now = chrono::Utc::now().timestamp() + s.offset.load(Ordering::SeqCst);
    let body = format!("userid={userid}&appli=1&startdate={}&enddate={}", now - 60, now - 30);
    let sends = (0..50).map(|_| s.notify(&body));
    let statuses = futures::future::join_all(sends).await;
    assert!(statuses.iter().all(|st| *st == StatusCode::OK), "{statuses:?}");
    // A notification for nobody is answered exactly as one for a linked user.
    let answer = |body: String| {
        let (http, url) = (s.http.clone(), format!("{}/withings/notify/{NOTIFY_SECRET}", s.base));
        async move {
            let r = http.post(url).header("content-type", "application/x-www-form-urlencoded").body(body).send().await.unwrap();
            let mut headers: Vec<(String, String)> = r
                .headers()
                .iter()
                .filter(|(k, _)| *k != "date")
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            headers.sort();
            (r.status(), headers, r.bytes().await.unwrap())
        }
    };
    let known = answer(body.clone()).await;
    let unknown = answer(body.replace(&format!("userid={userid}"), "userid=4242424242")).await;
    assert_eq!(known, unknown);
    s.wait_metric("withings_lake_runs_total{mode=\"refresh\",result=\"ok\"}", 1.0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.metric("withings_lake_runs_total{mode=\"refresh\",result=\"ok\"}").await, 1.0);
    // The 50, and the two of the comparison (the known one joined the same job).
    assert_eq!(s.metric("withings_lake_notifications_total{appli=\"1\",result=\"queued\"}").await, 52.0);
    assert_eq!(s.metric("withings_lake_notifications_total{appli=\"1\",result=\"unknown_user\"}").await, 1.0);
    let getmeas = sim_requests(&s.sim.stats().await, "getmeas") - getmeas_before;
    assert!(getmeas <= 2, "{getmeas} getmeas calls for one burst");
    // Every entry of the inbox is gone once the job committed.
    assert!(crate::common::files_under(&s.dir.path().join("lake/_service/inbox")).is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_status_and_changes_nothing() {
    let mut s = Served::start(1, "").await;
    let url = |p: &str| format!("{}{p}", s.base);
    // API key: missing, wrong; the rotated-out key still works while listed.
    let r = s.http.post(url("/v2/user")).json(&json!({"client_user_id": "x"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = s
        .http
        .post(url("/v2/user"))
        .header("x-vital-api-key", "nope")
        .json(&json!({"client_user_id": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = s.http.get(url("/v2/user/resolve/x")).header("x-vital-api-key", "old-key-abcdefghijklmnop").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // User ids that are not UUIDs never reach storage.
    for bad in ["..%2Fx", "x%00y", &"a".repeat(10_000)] {
        let (status, body) = s.api(reqwest::Method::GET, &format!("/v2/user/{bad}"), None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }
    for bad in ["../x", "a\u{0}b", "' OR 1=1 --"] {
        let (status, body) = s.api(reqwest::Method::POST, "/v2/user", Some(json!({"client_user_id": bad}))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }
    let (_, user) = s.api(reqwest::Method::POST, "/v2/user", Some(json!({"client_user_id": "carol"}))).await;
    let carol = user["user_id"].as_str().unwrap().to_string();
    // Redirects off the allow-list.
    for bad in ["javascript:alert(1)", "https://evil.example.com/linked", "http://app.example.com/linked"] {
        let (status, body) = s
            .api(
                reqwest::Method::POST,
                "/v2/link/token",
                Some(json!({"user_id": carol, "provider": "withings", "redirect_url": bad})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }
    // Too few scopes granted at Withings: required_scopes_not_granted, nothing kept.
    let (_, token) =
        s.api(reqwest::Method::POST, "/v2/link/token", Some(json!({"user_id": carol, "redirect_url": REDIRECT}))).await;
    let (cookie, authorize) = s.open_link(token["link_web_url"].as_str().unwrap()).await;
    let callback = s.authorize(&format!("{authorize}&sim_scopes=user.info,user.metrics"), 0).await;
    let end = s.callback(&callback, Some(&cookie)).await;
    assert!(end.contains("error_type=required_scopes_not_granted"), "{end}");
    let (_, providers) = s.api(reqwest::Method::GET, &format!("/v2/user/providers/{carol}"), None).await;
    assert_eq!(providers["providers"], json!([]), "no connection is kept");
    // An unknown link token; a callback with a forged state, without the cookie, replayed.
    let (status, _) = (s.http.get(url("/link?token=unknown")).send().await.unwrap().status(), ());
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, token) =
        s.api(reqwest::Method::POST, "/v2/link/token", Some(json!({"user_id": carol, "redirect_url": REDIRECT}))).await;
    let link = token["link_web_url"].as_str().unwrap();
    // Opening the link twice (an unfurler, then the person) does not consume it.
    let _ = s.open_link(link).await;
    let (cookie, authorize) = s.open_link(link).await;
    let callback = s.authorize(&authorize, 0).await;
    let forged = callback.replace("state=", "state=0000");
    assert!(s.callback(&forged, Some(&cookie)).await.starts_with("400"), "forged state");
    assert!(s.callback(&callback, None).await.starts_with("400"), "no cookie");
    assert!(s.callback(&callback, Some("wl_link_0000000000000000=x")).await.starts_with("400"), "foreign cookie");
    // The person denies at Withings: user_cancelled, and the token stays usable.
    let state = url::Url::parse(&authorize).unwrap().query_pairs().find(|(k, _)| k == "state").unwrap().1.to_string();
    let denied = s.callback(&format!("{}/link/callback?error=access_denied&state={state}", s.base), Some(&cookie)).await;
    assert!(denied.contains("state=error") && denied.contains("error_type=user_cancelled"), "{denied}");
    let done = s.callback(&callback, Some(&cookie)).await;
    assert!(done.contains("state=success"), "{done}");
    let again = s.callback(&callback, Some(&cookie)).await;
    assert!(again.contains("state=error") && again.contains("error_type=token_consumed"), "{again}");
    // Notifications: a wrong secret is 404; garbage is answered like the rest, counted, not queued.
    let r = s.http.post(url("/withings/notify/wrong-secret-000000000")).body("userid=1&appli=1").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let now = chrono::Utc::now().timestamp();
    for body in [
        "userid=abc&appli=1".to_string(),
        "userid=1&appli=xyz".to_string(),
        format!("userid=1&appli=1&startdate={}&enddate={}", now, now - 100),
        "userid=1&appli=1&startdate=99999999999".to_string(),
        "userid=9999999&appli=1".to_string(),
        "userid=1&appli=77".to_string(),
    ] {
        assert_eq!(s.notify(&body).await, StatusCode::OK, "{body}");
    }
    let big = "x".repeat(100_000);
    assert_eq!(s.notify(&big).await, StatusCode::PAYLOAD_TOO_LARGE);
    let m = s.metrics().await;
    assert_eq!(metric_in(&m, "withings_lake_notifications_total{appli=\"none\",result=\"malformed_userid\"}"), 1.0, "{m}");
    assert_eq!(metric_in(&m, "withings_lake_notifications_total{appli=\"none\",result=\"malformed_appli\"}"), 1.0, "{m}");
    assert_eq!(metric_in(&m, "withings_lake_notifications_total{appli=\"none\",result=\"malformed_dates\"}"), 2.0, "{m}");
    assert_eq!(metric_in(&m, "withings_lake_notifications_total{appli=\"77\",result=\"ignored_appli\"}"), 1.0, "{m}");
    // No secret in the metrics.
    assert!(!m.contains(NOTIFY_SECRET) && !m.contains(API_KEY));
    s.stop().await;
}

/// Row counts of every resource table of the lake under `dir` (-1: the table does not read).
async fn table_counts(dir: &std::path::Path) -> std::collections::BTreeMap<String, i64> {
    use arrow::array::AsArray;
    let lake = withings_lake::lake::Lake::open(withings_lake::storage::open(&dir.display().to_string()).unwrap()).await.unwrap();
    let ctx = withings_lake::query_session(&lake).await.unwrap();
    let mut out = std::collections::BTreeMap::new();
    for r in withings_lake::schema::Resource::ALL {
        let n = match withings_lake::query_sql(&ctx, &format!("SELECT count(*) FROM {r}")).await {
            Ok(b) => b.iter().map(|b| b.column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0)).sum(),
            Err(_) => -1,
        };
        out.insert(r.as_str().to_string(), n);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hours_of_notifications_land_what_a_cli_sync_of_a_twin_simulator_finds_for_no_more_requests() {
    use withings_lake::{Mode, RunSpec, Users};

    // The service: two people linked through the browser flow, backfilled, subscribed.
    let mut s = Served::start(2, "").await;
    s.create_and_link("alice", 0).await;
    s.create_and_link("bob", 1).await;
    s.wait_metric("withings_lake_runs_total{mode=\"backfill\",result=\"ok\"}", 2.0).await;
    for _ in 0..300 {
        if sim_requests(&s.sim.stats().await, "notify_subscribe") >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sim_requests(&s.sim.stats().await, "notify_subscribe"), 10, "5 applis for each of 2 users");

    // The twin: the same simulator, linked and backfilled by the batch engine.
    let twin = common::start(2, 0).await;
    let tdir = tempfile::tempdir().unwrap();
    let engine = twin_backfill(&twin, tdir.path(), &["alice", "bob"]).await;
    let spec = |mode: Mode, now: i64| RunSpec {
        mode,
        users: Users::All,
        shard: None,
        now: chrono::DateTime::from_timestamp(now, 0).unwrap(),
        lease_wait: Duration::from_secs(10),
        dry_run: false,
    };
    let run = |spec: RunSpec| {
        let engine = &engine;
        async move {
            let (_c, cancelled) = tokio::sync::watch::channel(false);
            engine.run(&spec, cancelled).await.unwrap()
        }
    };
    assert_eq!(
        table_counts(&s.dir.path().join("lake")).await,
        table_counts(&tdir.path().join("lake")).await,
        "after the backfills"
    );

    // Six hours pass: the simulator notifies what became visible; the service fetches it.
    let before = s.sim.stats().await;
    s.advance(6 * 3600).await;
    s.wait_metric("withings_lake_runs_total{mode=\"refresh\",result=\"ok\"}", 1.0).await;
    for _ in 0..600 {
        let idle = crate::common::files_under(&s.dir.path().join("lake/_service/inbox")).is_empty();
        if idle && s.metric("withings_lake_jobs_queued{priority=\"live\"}").await == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = s.sim.stats().await;
    let data_requests = |st: &Value| -> u64 {
        ["getmeas", "getactivity", "getintradayactivity", "getworkouts", "sleep_getsummary", "sleep_get"]
            .iter()
            .map(|e| sim_requests(st, e))
            .sum()
    };
    let served = data_requests(&after) - data_requests(&before);

    twin.advance(6 * 3600).await;
    let tbefore = twin.stats().await;
    let sync = run(spec(Mode::Incremental, NOW + 6 * 3600)).await;
    assert!(sync.failures.is_empty(), "{}", sync.to_text());
    let cli = data_requests(&twin.stats().await) - data_requests(&tbefore);
    assert_eq!(table_counts(&s.dir.path().join("lake")).await, table_counts(&tdir.path().join("lake")).await, "after six hours");
    assert!(served <= cli, "the service sent {served} data requests where a sync sent {cli}");
    assert!(s.svc.leader.load(Ordering::Relaxed));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_notifications_off_data_lands_within_one_poll_interval() {
    let mut s = Served::start(1, "subscribe = false\npoll_interval_seconds = 2").await;
    s.create_and_link("dana", 0).await;
    s.wait_metric("withings_lake_runs_total{mode=\"backfill\",result=\"ok\"}", 1.0).await;
    let steps = s.count("SELECT count(*) FROM steps").await;
    let polls = s.metric("withings_lake_runs_total{mode=\"sync\",result=\"ok\"}").await;
    s.advance(6 * 3600).await;
    s.wait_metric("withings_lake_runs_total{mode=\"sync\",result=\"ok\"}", polls + 1.0).await;
    assert!(s.count("SELECT count(*) FROM steps").await > steps, "the poll found the six hours of steps");
    assert_eq!(sim_requests(&s.sim.stats().await, "notify_subscribe"), 0, "subscribe = false subscribes nothing");
    assert_eq!(s.metric("withings_lake_poll_period_seconds").await, 2.0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_elect_one_leader_and_a_stopped_leader_is_replaced() {
    let mut a = Served::start(1, "leader_lease_seconds = 3").await;
    a.wait_metric("withings_lake_leader", 1.0).await;
    // A second instance over the same lake and credentials.
    let file = a.dir.path().join("pipeline.toml");
    let (_b_svc, b) = launch(&file, Arc::new(AtomicI64::new(NOW - chrono::Utc::now().timestamp()))).await;
    let b_base = format!("http://{}", b.addr);
    let http = a.http.clone();
    let b_metric = |line: &'static str| {
        let (http, url) = (http.clone(), format!("{b_base}/metrics"));
        async move { metric_in(&http.get(url).send().await.unwrap().text().await.unwrap(), line) }
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(b_metric("withings_lake_leader").await, 0.0, "one leader");
    // Both answer the API: a user made through B is linked through A.
    let r = a
        .http
        .post(format!("{b_base}/v2/user"))
        .header("x-vital-api-key", API_KEY)
        .json(&json!({"client_user_id": "erin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let erin = r.json::<Value>().await.unwrap()["user_id"].as_str().unwrap().to_string();
    assert!(a.link(&erin, 0).await.contains("state=success"));
    a.wait_metric("withings_lake_runs_total{mode=\"backfill\",result=\"ok\"}", 1.0).await;
    assert_eq!(b_metric("withings_lake_runs_total{mode=\"backfill\",result=\"ok\"}").await, 0.0, "only the leader runs jobs");
    // The leader stops (its lease is released): B leads within the lease's lifetime.
    a.stop().await;
    let mut led = false;
    for _ in 0..80 {
        if b_metric("withings_lake_leader").await == 1.0 {
            led = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(led, "the second instance took over");
    b.stop().await;
}

/// `withings-lake serve` as a process, its address read from its first line.
struct Process {
    child: std::process::Child,
    api: Api,
}

fn spawn_service(file: &std::path::Path) -> Process {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_withings-lake"))
        .args(["serve", "--pipeline", &file.display().to_string(), "--unthrottled", "--log-format", "json"])
        .env("WL_SERVE_TEST_UNSET", "demo-secret")
        .env("WL_TEST_API_KEYS", API_KEY)
        .env("WL_TEST_NOTIFY_SECRET", NOTIFY_SECRET)
        .env("WL_TEST_SIGNING_KEY", "signing-key-0123456789-0123456789-0123456789")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().strip_prefix("serving on ").unwrap_or_else(|| panic!("first line: {line}")).to_string();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    Process { child, api: Api { base, http } }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_killed_right_after_notifications_delivers_them_after_restart_and_announces_nothing_twice() {
    // The service runs on the wall clock: the simulator's starts at the real time.
    let sim = common::start_with(withings_simulator::SimConfig {
        users: 1,
        rate_limit_per_minute: 0,
        now: None,
        history_days: 30,
        freeze_clock: true,
        ..withings_simulator::SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // One address for both lives of the service: the subscriptions name it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let file = dir.path().join("pipeline.toml");
    std::fs::write(
        &file,
        pipeline_text(&sim.base, &format!("listen = \"127.0.0.1:{port}\"\ncoalesce_seconds = 10\ndrain_seconds = 2")),
    )
    .unwrap();

    let mut first = spawn_service(&file);
    let (_, user) = first.api.api(reqwest::Method::POST, "/v2/user", Some(json!({"client_user_id": "fay"}))).await;
    let fay = user["user_id"].as_str().unwrap().to_string();
    assert!(first.api.link(&fay, 0).await.contains("state=success"));
    first.api.wait_metric("withings_lake_runs_total{mode=\"backfill\",result=\"ok\"}", 1.0).await;
    for _ in 0..300 {
        if sim_requests(&sim.stats().await, "notify_subscribe") >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let steps = lake_count(dir.path(), "SELECT count(*) FROM steps").await;
    // Twelve hours pass (a day's waking hours in any zone); the simulator notifies them (each
    // answered after its inbox write) and the service dies before its coalescing delay ends.
    sim.advance(12 * 3600).await;
    let m = first.api.metrics().await;
    assert!(metric_in(&m, "withings_lake_notifications_total{appli=\"16\",result=\"queued\"}") >= 1.0, "{m}");
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let inbox = crate::common::files_under(&dir.path().join("lake/_service/inbox"));
    assert!(!inbox.is_empty(), "the notifications wait in the inbox");

    // The next life replays the inbox.
    let mut second = spawn_service(&file);
    second.api.wait_metric("withings_lake_runs_total{mode=\"refresh\",result=\"ok\"}", 1.0).await;
    for _ in 0..300 {
        if crate::common::files_under(&dir.path().join("lake/_service/inbox")).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(crate::common::files_under(&dir.path().join("lake/_service/inbox")).is_empty(), "the inbox drains");
    assert!(lake_count(dir.path(), "SELECT count(*) FROM steps").await > steps, "the notified steps arrived");

    // SIGTERM drains: not ready, notifications still answered, then exit 0 with the leader
    // lease released.
    let pid = i32::try_from(second.child.id()).unwrap();
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut saw_draining = false;
    for _ in 0..40 {
        match second.api.http.get(format!("{}/readyz", second.api.base)).send().await {
            Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
                saw_draining = true;
                assert_eq!(
                    second.api.notify("userid=1&appli=1").await,
                    StatusCode::OK,
                    "notifications are answered while draining"
                );
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_) => break,
        }
    }
    assert!(saw_draining, "readyz answered 503 while draining");
    let status = second.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!dir.path().join("lake/_service/leader.lease").exists(), "the leader lease is released");

    // Every event once: no two ids for the same announcement.
    let events = crate::events::lines_in(&dir.path().join("lake/_events/files"));
    let mut by_content: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    for e in &events {
        let content = format!("{}|{}", e["event_type"], e["event"]["data"]);
        by_content.entry(content).or_default().insert(e["id"].as_str().unwrap_or_default().to_string());
    }
    let twice: Vec<_> = by_content.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(twice.is_empty(), "announced twice under different ids: {twice:?}");
    assert!(events.iter().any(|e| e["event_type"] == "daily.data.steps.created"), "the new steps were announced");
}

async fn lake_count(dir: &std::path::Path, sql: &str) -> i64 {
    use arrow::array::AsArray;
    let lake = withings_lake::lake::Lake::open(withings_lake::storage::open(&dir.join("lake").display().to_string()).unwrap())
        .await
        .unwrap();
    let ctx = withings_lake::query_session(&lake).await.unwrap();
    let batches = withings_lake::query_sql(&ctx, sql).await.unwrap();
    batches.iter().map(|b| b.column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0)).sum()
}

/// The batch engine over `twin` (a simulator identical to the service's): `names[i]` linked
/// as the simulator's person `i`, then backfilled over the window the service backfills.
async fn twin_backfill(twin: &Sim, dir: &std::path::Path, names: &[&str]) -> withings_lake::Engine {
    use withings_lake::link::{CallbackListener, LinkRequest};
    use withings_lake::{Mode, RunSpec, Users};
    let tfile = dir.join("pipeline.toml");
    std::fs::write(&tfile, pipeline_text(&twin.base, "")).unwrap();
    let pipeline = PipelineFile::load(&tfile).unwrap();
    let options = EngineOptions {
        requests_per_minute: Some(RequestBudget::Unlimited),
        workers: 1,
        client_secret: Some(Secret::new("demo-secret")),
        is_service: false,
    };
    let engine = pipeline.engine(&options).await.unwrap();
    let mut listener = CallbackListener::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    for (i, name) in names.iter().enumerate() {
        let idx = i.to_string();
        let scopes = &pipeline.source.scopes;
        let req = LinkRequest::new(
            &pipeline.authorize_url(),
            "demo-client",
            scopes,
            &listener.redirect_uri,
            name,
            &[("sim_user", &idx)],
        )
        .unwrap();
        reqwest::get(&req.url).await.unwrap().error_for_status().unwrap();
        let cb = listener.next(Duration::from_secs(10)).await.unwrap();
        req.complete(engine.client(), engine.credentials(), cb, false, None).await.unwrap();
    }
    let link_day = chrono::DateTime::from_timestamp(NOW, 0).unwrap().date_naive();
    let from = link_day - chrono::Duration::days(13);
    let spec = RunSpec {
        mode: Mode::Backfill { from, to: link_day },
        users: Users::All,
        shard: None,
        now: chrono::DateTime::from_timestamp(NOW, 0).unwrap(),
        lease_wait: Duration::from_secs(10),
        dry_run: false,
    };
    let (_c, cancelled) = tokio::sync::watch::channel(false);
    engine.run(&spec, cancelled).await.unwrap();
    engine
}

/// Acceptance: Vital's own Python SDK pointed at the service creates two users, links them
/// through the browser flow (curl with a cookie jar), reads their summaries and paged grouped
/// time series back, refreshes them and deletes one. Each user gets
/// `provider.connection.created`, the subscriptions the resources need and one
/// `historical.data.<resource>.created` per resource; the lake equals a CLI backfill of the
/// same simulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vital_s_python_sdk_links_reads_refreshes_and_deletes_through_the_service() {
    if !common::vital_available() {
        return;
    }
    let redirect = "{sim}/_sim/clock";
    let mut s = Served::start(2, &format!("read_page_size = 500\nredirect_urls = [\"{redirect}\"]")).await;
    let out_file = s.dir.path().join("sdk.json");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vital/serve_acceptance.py");
    let now = chrono::DateTime::from_timestamp(NOW, 0).unwrap().to_rfc3339();
    let redirect = redirect.replace("{sim}", &s.sim.base);
    let args =
        (script.clone(), [s.base.clone(), API_KEY.to_string(), s.sim.base.clone(), redirect.clone()], out_file.clone(), now);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3").arg(&args.0).args(&args.1).arg(&args.2).arg(&args.3).output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "serve_acceptance.py: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    for name in ["ann", "ben"] {
        let u = &got[name];
        assert_eq!(u["providers"], json!(["withings"]), "{got}");
        for k in ["sleep", "activity", "body", "heartrate", "refreshed"] {
            assert!(u[k].as_u64().unwrap() > 0, "{name}: no {k}: {got}");
        }
        assert!(u["heartrate_pages"].as_u64().unwrap() > 1, "paged: {got}");
    }
    // Subscriptions: the five applis the resources need (1, 4, 16, 44, and 46) for each.
    assert_eq!(sim_requests(&s.sim.stats().await, "notify_subscribe"), 10);
    // Events: each user once connected, and one historical event per resource.
    s.wait_metric("withings_lake_runs_total{mode=\"backfill\",result=\"ok\"}", 2.0).await;
    let events = s.events();
    for name in ["ann", "ben"] {
        let id = got["users"][name].as_str().unwrap();
        let of = |t: &str| events.iter().filter(|e| e["event_type"] == t && e["event"]["user_id"] == id).count();
        assert_eq!(of("provider.connection.created"), 1, "{name}");
        for r in withings_lake::schema::Resource::ALL {
            if r == withings_lake::schema::Resource::SleepStream {
                continue; // sleep_stream events are off by default
            }
            assert_eq!(of(&format!("historical.data.{r}.created")), 1, "{name}: {r}");
        }
    }
    // The lake equals the batch engine's backfill of an identical simulator.
    let twin = common::start(2, 0).await;
    let tdir = tempfile::tempdir().unwrap();
    twin_backfill(&twin, tdir.path(), &["ann", "ben"]).await;
    assert_eq!(table_counts(&s.dir.path().join("lake")).await, table_counts(&tdir.path().join("lake")).await);
    s.stop().await;
}

/// Withings counts requests per application: a service and a batch backfill beside it share
/// `requests_per_minute` (the batch run takes what the leader's budget record leaves), so the
/// simulator at the application's limit never answers 601, and a refresh asked meanwhile is
/// answered with fresh data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_and_a_cli_backfill_together_stay_under_the_application_s_limit() {
    use withings_lake::link::{CallbackListener, LinkRequest};
    use withings_lake::{Mode, RunSpec, Users};
    // Two users on two shards, so the service's and the batch run's shard leases differ.
    let (a, b) = (
        "alice",
        (0..100)
            .map(|i| format!("bob{i}"))
            .find(|n| withings_lake::lake::shard_of(n, 2) != withings_lake::lake::shard_of("alice", 2))
            .unwrap(),
    );
    // The application's limit scaled down to 40 a minute (a test cannot wait for 120): the
    // service takes 75 % (30), a batch run the 10 left.
    let s = Served::with_text(common::start(2, 40).await, "", RequestBudget::PerMinute(30), |t| {
        t.replace("[lake]\nurl = \"lake\"\n", "[lake]\nurl = \"lake\"\nshards = 2\n")
            .replace("client_id = \"demo-client\"\n", "client_id = \"demo-client\"\nrequests_per_minute = 40\n")
    })
    .await;
    let alice = s.create_and_link(a, 0).await;
    // The batch engine over the same application and lake: it reads the service's record.
    let pipeline = PipelineFile::load(&s.dir.path().join("pipeline.toml")).unwrap();
    let options = EngineOptions { client_secret: Some(Secret::new("demo-secret")), ..EngineOptions::default() };
    let engine = pipeline.engine(&options).await.unwrap();
    assert_eq!(engine.client().config().requests_per_minute, 10, "40 minus the service's 30");
    let mut listener = CallbackListener::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let req = LinkRequest::new(
        &pipeline.authorize_url(),
        "demo-client",
        &pipeline.source.scopes,
        &listener.redirect_uri,
        &b,
        &[("sim_user", "1")],
    )
    .unwrap();
    reqwest::get(&req.url).await.unwrap().error_for_status().unwrap();
    let cb = listener.next(Duration::from_secs(10)).await.unwrap();
    req.complete(engine.client(), engine.credentials(), cb, false, None).await.unwrap();
    let day = chrono::DateTime::from_timestamp(NOW, 0).unwrap().date_naive();
    let spec = RunSpec {
        mode: Mode::Backfill { from: day - chrono::Duration::days(2), to: day },
        users: Users::Only(vec![b.clone()]),
        shard: None,
        now: chrono::DateTime::from_timestamp(NOW, 0).unwrap(),
        lease_wait: Duration::from_secs(30),
        dry_run: false,
    };
    let (_c, cancelled) = tokio::sync::watch::channel(false);
    let batch = engine.run(&spec, cancelled);
    let live = async {
        s.wait_metric("withings_lake_runs_total{mode=\"backfill\",result=\"ok\"}", 1.0).await;
        s.api(reqwest::Method::POST, &format!("/v2/user/refresh/{alice}?timeout=60"), None).await
    };
    let (report, (status, refreshed)) = tokio::join!(batch, live);
    let report = report.unwrap();
    assert!(report.failures.is_empty() && report.requests.rate_limited == 0, "{}", report.to_text());
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert!(!refreshed["refreshed_sources"].as_array().unwrap().is_empty(), "{refreshed}");
    let stats = s.sim.stats().await;
    assert_eq!(stats["limit_violations"], 0, "the simulator never saw more than 40 a minute: {stats}");
    assert!(stats["total_requests"].as_u64().unwrap() > 40, "the budget was used past one window: {stats}");
    assert!(s.count("SELECT count(*) FROM steps").await > 0);
}

/// `DELETE /v2/user/{id}` with no grace: the leader erases the person from the lake, the
/// credentials and the service's own objects (nothing under `_service/` names them after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_user_is_erased_after_the_grace_and_nothing_in_the_service_names_them() {
    let mut s = Served::start(1, "erasure_grace_hours = 0").await;
    let gus = s.create_and_link("gus", 0).await;
    s.wait_metric("withings_lake_runs_total{mode=\"backfill\",result=\"ok\"}", 1.0).await;
    let (status, _) = s.api(reqwest::Method::POST, &format!("/v2/user/refresh/{gus}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(s.count("SELECT count(*) FROM steps WHERE user_id = 'gus'").await > 0);
    let (status, _) = s.api(reqwest::Method::DELETE, &format!("/v2/user/{gus}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let mut gone = false;
    for _ in 0..300 {
        if crate::common::files_under(&s.dir.path().join("lake/_service/erase")).is_empty()
            && s.count("SELECT count(*) FROM steps WHERE user_id = 'gus'").await == 0
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the person's rows are erased");
    for f in crate::common::files_under(&s.dir.path().join("lake/_service")) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        assert!(!text.contains(&gus) && !text.contains("\"gus\""), "{} still names the person: {text}", f.display());
    }
    assert!(crate::common::files_under(&s.dir.path().join("creds")).iter().all(|f| !f.display().to_string().contains("gus")));
    s.stop().await;
}
