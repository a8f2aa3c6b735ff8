//! Shared helpers: a simulator on loopback with a frozen clock, and form-POST calls to it.

use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::Value;
use withings_simulator::{SimConfig, Simulator};

/// The frozen simulated "now" of most tests: a Saturday noon in June 2024.
pub const NOW: i64 = 1_718_452_800; // 2024-06-15T12:00:00Z

pub struct Sim {
    /// Keeps the server up for the test's lifetime.
    _server: Simulator,
    pub base: String,
    pub http: reqwest::Client,
}

pub fn config(users: usize, rate_limit_per_minute: u32) -> SimConfig {
    SimConfig { users, rate_limit_per_minute, now: Some(NOW), history_days: 60, freeze_clock: true, ..SimConfig::default() }
}

pub async fn start(users: usize, rate_limit_per_minute: u32) -> Sim {
    start_with(config(users, rate_limit_per_minute)).await
}

pub async fn start_with(cfg: SimConfig) -> Sim {
    let sim = Simulator::start(cfg).await.expect("simulator starts");
    let base = sim.base_url();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    Sim { _server: sim, base, http }
}

impl Sim {
    /// POSTs a form to an API path; returns HTTP status and the raw body.
    pub async fn raw(&self, path: &str, token: Option<&str>, params: &[(&str, &str)]) -> (StatusCode, Vec<u8>) {
        let mut req = self.http.post(format!("{}{path}", self.base)).form(params);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request reaches the simulator");
        let status = resp.status();
        (status, resp.bytes().await.unwrap().to_vec())
    }

    /// POSTs a form and decodes the JSON envelope.
    pub async fn call(&self, path: &str, token: Option<&str>, params: &[(&str, &str)]) -> Value {
        let (status, body) = self.raw(path, token, params).await;
        assert_eq!(status, StatusCode::OK, "{path} {params:?}: HTTP {status}");
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&body)))
    }

    /// Like `call`, but asserts status 0 and returns `body`.
    pub async fn body(&self, path: &str, token: &str, params: &[(&str, &str)]) -> Value {
        let v = self.call(path, Some(token), params).await;
        assert_eq!(v["status"], 0, "{path} {params:?}: {v}");
        v["body"].clone()
    }

    pub async fn admin(&self, path: &str) -> Value {
        self.http.get(format!("{}{path}", self.base)).send().await.unwrap().json().await.unwrap()
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let resp = self.http.post(format!("{}{path}", self.base)).json(&body).send().await.unwrap();
        (resp.status(), resp.json().await.unwrap())
    }

    pub async fn users(&self) -> Vec<Value> {
        self.admin("/_sim/users").await["users"].as_array().unwrap().clone()
    }

    /// Exchanges user `index`'s ready refresh token; returns (access, refresh).
    pub async fn tokens(&self, index: usize) -> (String, String) {
        let users = self.users().await;
        let refresh = users[index]["refresh_token"].as_str().expect("user has a refresh token").to_string();
        let v = self.refresh_grant(&refresh, &[]).await;
        assert_eq!(v["status"], 0, "refresh for user {index}: {v}");
        (v["body"]["access_token"].as_str().unwrap().to_string(), v["body"]["refresh_token"].as_str().unwrap().to_string())
    }

    /// A refresh-token grant for the demo client, with `extra` (ignored) arguments: two
    /// deliberate refreshes with one token must differ, or they are "the same arguments
    /// within 10 s" (601).
    pub async fn refresh_grant(&self, refresh_token: &str, extra: &[(&str, &str)]) -> Value {
        let mut params = vec![
            ("action", "requesttoken"),
            ("grant_type", "refresh_token"),
            ("client_id", "demo-client"),
            ("client_secret", "demo-secret"),
            ("refresh_token", refresh_token),
        ];
        params.extend_from_slice(extra);
        self.call("/v2/oauth2", None, &params).await
    }

    pub async fn access(&self, index: usize) -> String {
        self.tokens(index).await.0
    }

    pub async fn advance(&self, seconds: i64) -> Value {
        let (status, v) = self.admin_post("/_sim/clock", serde_json::json!({"advance_seconds": seconds})).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    }

    pub async fn stats(&self) -> Value {
        self.admin("/_sim/stats").await
    }
}

/// `../shared/fixtures/withings-real/NAME` (recorded from the real API). In CI a missing
/// folder fails the test; elsewhere the test is skipped with a printed reason.
pub fn real_fixture(name: &str) -> Option<Value> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/withings-real");
    if !dir.is_dir() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but {} is missing: the real-shape tests cannot run", dir.display());
        }
        eprintln!("skipping: {} is missing (real Withings fixtures live beside the project)", dir.display());
        return None;
    }
    let text = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"));
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}")))
}

/// Whether python3 can import `module` (installed from PyPI as `package`). With `CI=true` a
/// missing module fails the test; elsewhere the test is skipped with a printed reason.
pub fn python_module(module: &str, package: &str) -> bool {
    let probe = std::process::Command::new("python3").args(["-c", &format!("import {module}")]).output();
    if probe.as_ref().is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "CI=true but python3 cannot import {module}");
    eprintln!("skipping: python3 cannot import {module} (pip install {package})");
    false
}

/// Whether python3 can import duckdb (PyPI), as [`python_module`].
pub fn duckdb_available() -> bool {
    python_module("duckdb", "duckdb")
}

/// Whether python3 can import Vital's SDK (`vital` on PyPI), as [`python_module`].
pub fn vital_available() -> bool {
    python_module("vital.types", "vital")
}

/// `fixtures/withings/NAME` (written by this project from the reference).
pub fn own_fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/withings").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// A date `days` before NOW, as YYYY-MM-DD.
pub fn ymd(days_before_now: i64) -> String {
    chrono::DateTime::from_timestamp(NOW - days_before_now * 86_400, 0).unwrap().format("%Y-%m-%d").to_string()
}

/// Every file under `dir` (recursively), sorted.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}
