//! The Withings API client: typed calls for every endpoint the lake needs, over one
//! application-wide rate limiter.
//!
//! Invariants:
//! - The envelope comes first: `status` is read before `body` is decoded; a non-zero status is
//!   an error of its kind ([`status`]), never empty data.
//! - Every request takes a slot of the one [`RateLimiter`] of the client (clone the client to
//!   share it across users and tasks) and a permit of its concurrency gate.
//! - 601 pauses every task (for `wait_seconds` when Withings gives it, else an adaptive
//!   back-off) and is retried; it is not a failure until `max_rate_limit_retries`.
//! - Transient failures (network, 5xx, non-JSON or truncated bodies, the "an error occurred"
//!   kind) are retried with jittered exponential back-off; nothing else is.
//! - A token request is never sent again with identical arguments within 10 seconds.
//! - List records are decoded one by one ([`types::Item`]): a malformed record is reported
//!   with its raw JSON, the rest of the page is kept.
//! - Tokens and the client secret travel as [`Secret`]; no error or log line carries them.

pub mod accounting;
mod de;
mod endpoint;
pub mod error;
pub mod limiter;
pub mod status;
pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use serde_json::Value;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

pub use crate::error::ErrorClass;
pub use accounting::{Accounting, Snapshot};
pub use endpoint::Endpoint;
pub use error::WithingsError;
pub use limiter::{Priority, RateLimiter};
pub use status::{StatusKind, kind_of};
use types::*;

use crate::secret::Secret;

/// Every `data_fields` value per endpoint (reference section 3): always sent, since Withings
/// returns a reduced set (or `data: null`) without it.
pub const ACTIVITY_FIELDS: &str = "steps,distance,elevation,soft,moderate,intense,active,calories,totalcalories,hr_average,hr_min,hr_max,hr_zone_0,hr_zone_1,hr_zone_2,hr_zone_3";
pub const INTRADAY_FIELDS: &str = "steps,elevation,calories,distance,stroke,pool_lap,duration,heart_rate,spo2_auto,rmssd,sdnn1,hrv_quality,core_body_temperature,rr,chest_movement_rate";
pub const WORKOUT_FIELDS: &str = "calories,intensity,manual_intensity,manual_distance,manual_calories,hr_average,hr_min,hr_max,hr_zone_0,hr_zone_1,hr_zone_2,hr_zone_3,pause_duration,algo_pause_duration,spo2_average,core_body_temperature_avg,core_body_temperature_min,core_body_temperature_max,core_body_temperature_status,steps,distance,elevation,pool_laps,strokes,pool_length";
pub const SLEEP_FIELDS: &str =
    "hr,rr,snoring,sdnn_1,rmssd,hrv_quality,mvt_score,chest_movement_rate,withings_index,breathing_sounds";
pub const SUMMARY_FIELDS: &str = "total_timeinbed,total_sleep_time,asleepduration,lightsleepduration,remsleepduration,deepsleepduration,sleep_efficiency,sleep_latency,wakeup_latency,wakeupduration,wakeupcount,waso,nb_rem_episodes,breathing_disturbances_intensity,apnea_hypopnea_index,withings_index,durationtosleep,durationtowakeup,out_of_bed_count,hr_average,hr_min,hr_max,rr_average,rr_min,rr_max,breathing_quality_assessment,snoring,snoringepisodecount,sleep_score,night_events,mvt_score_avg,mvt_active_duration,rmssd_start_avg,rmssd_end_avg,chest_movement_rate_wellness_average,chest_movement_rate_wellness_min,chest_movement_rate_wellness_max,breathing_sounds,breathing_sounds_episode_count,chest_movement_rate_average,chest_movement_rate_min,chest_movement_rate_max,core_body_temperature_min,core_body_temperature_max,core_body_temperature_avg,core_body_temperature_status";

/// How the client talks to Withings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// API base URL (`https://wbsapi.withings.net`, or a simulator).
    pub base_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// The application's budget, shared by every request of this client (0 = unlimited).
    pub requests_per_minute: u32,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// First pause after a 601 without `wait_seconds`; doubles per 601, up to 60 s.
    pub rate_limit_pause: Duration,
    /// Retries of a transient failure.
    pub max_retries: u32,
    /// 601 answers tolerated for one call before giving up.
    pub max_rate_limit_retries: u32,
    /// First retry delay; doubles per retry, jittered, capped at 30 s.
    pub retry_base: Duration,
    /// Pages of one listing before deciding the server never stops.
    pub max_pages: u32,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            base_url: "https://wbsapi.withings.net".into(),
            client_id: String::new(),
            client_secret: Secret::default(),
            requests_per_minute: 120,
            concurrency: 4,
            timeout: Duration::from_secs(30),
            rate_limit_pause: Duration::from_secs(5),
            max_retries: 4,
            max_rate_limit_retries: 8,
            retry_base: Duration::from_millis(500),
            max_pages: 10_000,
        }
    }
}

/// A date window (`startdateymd`/`enddateymd`) or a `lastupdate` cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Dates { from: NaiveDate, to: NaiveDate },
    LastUpdate(i64),
}

impl Window {
    fn params(&self) -> Vec<(&'static str, String)> {
        match self {
            Window::Dates { from, to } => vec![("startdateymd", from.to_string()), ("enddateymd", to.to_string())],
            Window::LastUpdate(t) => vec![("lastupdate", t.to_string())],
        }
    }
}

/// What to ask getmeas for.
#[derive(Debug, Clone, Default)]
pub struct MeasQuery {
    /// All meastypes when empty.
    pub meastypes: Vec<i64>,
    pub startdate: Option<i64>,
    pub enddate: Option<i64>,
    pub lastupdate: Option<i64>,
}

/// All pages of a getmeas call.
#[derive(Debug, Clone)]
pub struct MeasureList {
    /// The user's time zone (getmeas carries it once, on the body).
    pub timezone: Option<String>,
    pub groups: Vec<Item<MeasureGroup>>,
}

impl MeasureList {
    /// A getmeas body (`{"measuregrps": [...], "timezone": ...}`) or a bare `measuregrps` list.
    pub fn from_body(mut body: Value) -> Result<MeasureList, WithingsError> {
        let timezone = body.get("timezone").and_then(Value::as_str).map(str::to_string);
        let groups = match body {
            Value::Array(a) => a,
            _ => list_of(&mut body, "measuregrps", Endpoint::Getmeas.as_str())?,
        };
        Ok(MeasureList { timezone, groups: groups.into_iter().map(Item::decode).collect() })
    }
}

/// A sleep get answer: the segments (sorted by start) and the device class (16/32).
#[derive(Debug, Clone)]
pub struct SleepGet {
    pub model: Option<i64>,
    pub segments: Vec<Item<SleepSegment>>,
}

impl SleepGet {
    /// One sleep get body, its segments sorted by start.
    pub fn from_body(mut body: Value) -> Result<SleepGet, WithingsError> {
        let model = body.get("model").and_then(Value::as_i64);
        let segments = list_of(&mut body, "series", Endpoint::SleepGet.as_str())?.into_iter().map(Item::decode).collect();
        Ok(SleepGet::sorted(model, segments))
    }

    /// Sorts segments by start (Withings does not) and drops repeats of one start (two
    /// 24-hour requests can both return a segment that spans their boundary).
    fn sorted(model: Option<i64>, mut segments: Vec<Item<SleepSegment>>) -> SleepGet {
        let start_of = |i: &Item<SleepSegment>| i.raw.get("startdate").and_then(Value::as_i64).unwrap_or(i64::MAX);
        segments.sort_by_key(start_of);
        let mut kept: Vec<Item<SleepSegment>> = Vec::with_capacity(segments.len());
        let mut run = 0; // index in `kept` of the first segment with the current start
        for s in segments {
            if kept.last().is_none_or(|l| start_of(l) != start_of(&s)) {
                run = kept.len();
            }
            if !kept[run..].iter().any(|k| k.raw == s.raw) {
                kept.push(s);
            }
        }
        SleepGet { model, segments: kept }
    }
}

/// The items of a list body (`series`, `activities`, ...), each decoded on its own.
pub fn decode_list<T: serde::de::DeserializeOwned + types::Plausible>(
    mut body: Value,
    key: &str,
    endpoint: &'static str,
) -> Result<Vec<Item<T>>, WithingsError> {
    Ok(list_of(&mut body, key, endpoint)?.into_iter().map(Item::decode).collect())
}

/// The samples of a getintradayactivity body, keyed by epoch; with `window`, only those in
/// `[start, end)` (Withings may answer past the asked end).
pub fn intraday_series(
    mut body: Value,
    window: Option<(i64, i64)>,
) -> Result<BTreeMap<i64, Item<IntradaySample>>, WithingsError> {
    let series = match body.get_mut("series").map(Value::take) {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Array(a)) if a.is_empty() => return Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(WithingsError::Decode {
                endpoint: Endpoint::Getintradayactivity.as_str(),
                reason: "`series` is not an object".into(),
            });
        }
    };
    let mut out = BTreeMap::new();
    for (k, raw) in series {
        let t = k.parse::<i64>().map_err(|_| WithingsError::Decode {
            endpoint: Endpoint::Getintradayactivity.as_str(),
            reason: format!("series key '{k}' is not an epoch"),
        })?;
        if window.is_none_or(|(a, b)| t >= a && t < b) {
            out.insert(t, Item::decode(raw));
        }
    }
    Ok(out)
}

#[derive(Clone)]
pub struct WithingsClient {
    inner: Arc<Inner>,
    /// Where this handle's requests queue at the rate limiter (clones share the limiter).
    priority: Priority,
}

impl std::fmt::Debug for WithingsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithingsClient")
            .field("base_url", &self.inner.cfg.base_url)
            .field("client_id", &self.inner.cfg.client_id)
            .finish()
    }
}

struct Inner {
    cfg: ClientConfig,
    http: reqwest::Client,
    limiter: RateLimiter,
    gate: Semaphore,
    accounting: Accounting,
    /// Token requests by argument hash, with when they were sent.
    token_requests: Mutex<HashMap<u64, Instant>>,
    jitter: std::collections::hash_map::RandomState,
}

/// A request to send: endpoint name (for errors and accounting), path, action, parameters.
struct Call<'a> {
    endpoint: &'static str,
    path: &'static str,
    token: Option<&'a Secret>,
    params: Vec<(&'static str, String)>,
}

impl<'a> Call<'a> {
    /// A data endpoint's call: its path and `action`, then `params`.
    fn data(e: Endpoint, token: &'a Secret, params: Vec<(&'static str, String)>) -> Call<'a> {
        let (path, action) = e.request();
        let mut all = vec![("action", action.to_string())];
        all.extend(params);
        Call { endpoint: e.as_str(), path, token: Some(token), params: all }
    }

    /// Signed calls carry a single-use nonce: resending them can only fail.
    fn retryable(&self) -> bool {
        !self.params.iter().any(|(k, _)| *k == "nonce")
    }
}

impl WithingsClient {
    pub fn new(cfg: ClientConfig) -> Result<WithingsClient, WithingsError> {
        let url = reqwest::Url::parse(&cfg.base_url)
            .map_err(|e| WithingsError::Config { setting: "base_url", reason: format!("'{}': {e}", cfg.base_url) })?;
        // Tokens and the client secret go in request bodies: plain http only on loopback.
        let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]" | "::1"));
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            return Err(WithingsError::Config {
                setting: "base_url",
                reason: format!("'{}' must be https (http only on loopback)", cfg.base_url),
            });
        }
        if cfg.concurrency == 0 {
            return Err(WithingsError::Config { setting: "concurrency", reason: "must be at least 1".into() });
        }
        let mut builder = reqwest::Client::builder();
        if loopback {
            // A simulator on this machine: a proxy from the environment would not reach it.
            builder = builder.no_proxy();
        }
        let http = builder
            .timeout(cfg.timeout)
            // A redirect would resend the form body (secrets included) elsewhere: never follow.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("withings-lake/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WithingsError::Config { setting: "http client", reason: e.to_string() })?;
        Ok(WithingsClient {
            inner: Arc::new(Inner {
                limiter: RateLimiter::new(cfg.requests_per_minute),
                gate: Semaphore::new(cfg.concurrency),
                accounting: Accounting::default(),
                token_requests: Mutex::new(HashMap::new()),
                jitter: std::collections::hash_map::RandomState::new(),
                http,
                cfg,
            }),
            priority: Priority::default(),
        })
    }

    /// The same client (limiter, accounting, connections) whose requests queue at `priority`.
    pub fn with_priority(&self, priority: Priority) -> WithingsClient {
        WithingsClient { inner: self.inner.clone(), priority }
    }

    pub fn priority(&self) -> Priority {
        self.priority
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    /// Requests so far, per endpoint and outcome.
    pub fn accounting(&self) -> Snapshot {
        self.inner.accounting.snapshot()
    }

    // ---- data endpoints ----

    /// `measure getmeas` (category 1), every page.
    pub async fn getmeas(&self, token: &Secret, q: &MeasQuery) -> Result<MeasureList, WithingsError> {
        let mut params = vec![("category", "1".to_string())];
        if !q.meastypes.is_empty() {
            params.push(("meastypes", q.meastypes.iter().map(i64::to_string).collect::<Vec<_>>().join(",")));
        }
        for (k, v) in [("startdate", q.startdate), ("enddate", q.enddate), ("lastupdate", q.lastupdate)] {
            if let Some(v) = v {
                params.push((k, v.to_string()));
            }
        }
        let (items, last) = self.list(Call::data(Endpoint::Getmeas, token, params), "measuregrps").await?;
        let timezone = last.get("timezone").and_then(Value::as_str).map(str::to_string);
        Ok(MeasureList { timezone, groups: items.into_iter().map(Item::decode).collect() })
    }

    /// `v2/measure getactivity`, every page, every data field.
    pub async fn getactivity(&self, token: &Secret, window: Window) -> Result<Vec<Item<Activity>>, WithingsError> {
        let mut params = vec![("data_fields", ACTIVITY_FIELDS.to_string())];
        params.extend(window.params());
        let call = Call::data(Endpoint::Getactivity, token, params);
        Ok(self.list(call, "activities").await?.0.into_iter().map(Item::decode).collect())
    }

    /// `v2/measure getintradayactivity` over `[start, end)`, in 24-hour requests (Withings
    /// answers only the first 24 hours of a longer window). Keyed by sample epoch.
    pub async fn getintradayactivity(
        &self,
        token: &Secret,
        start: i64,
        end: i64,
    ) -> Result<BTreeMap<i64, Item<IntradaySample>>, WithingsError> {
        let mut out = BTreeMap::new();
        for (a, b) in day_chunks(start, end) {
            let params = vec![
                ("startdate", a.to_string()),
                ("enddate", (b - 1).to_string()),
                ("data_fields", INTRADAY_FIELDS.to_string()),
            ];
            let body = self.call(Call::data(Endpoint::Getintradayactivity, token, params)).await?;
            out.extend(intraday_series(body, Some((a, b)))?);
        }
        Ok(out)
    }

    /// `v2/measure getworkouts`, every page, every data field.
    pub async fn getworkouts(&self, token: &Secret, window: Window) -> Result<Vec<Item<Workout>>, WithingsError> {
        let mut params = vec![("data_fields", WORKOUT_FIELDS.to_string())];
        params.extend(window.params());
        let call = Call::data(Endpoint::Getworkouts, token, params);
        Ok(self.list(call, "series").await?.0.into_iter().map(Item::decode).collect())
    }

    /// `v2/sleep get` over `[start, end)` in 24-hour requests; segments sorted by start
    /// (Withings does not sort them).
    pub async fn sleep_get(&self, token: &Secret, start: i64, end: i64) -> Result<SleepGet, WithingsError> {
        let mut model = None;
        let mut segments: Vec<Item<SleepSegment>> = Vec::new();
        for (a, b) in day_chunks(start, end) {
            let params =
                vec![("startdate", a.to_string()), ("enddate", (b - 1).to_string()), ("data_fields", SLEEP_FIELDS.to_string())];
            let body = self.call(Call::data(Endpoint::SleepGet, token, params)).await?;
            let page = SleepGet::from_body(body)?;
            model = model.or(page.model);
            segments.extend(page.segments);
        }
        Ok(SleepGet::sorted(model, segments))
    }

    /// `v2/sleep getsummary`, every page, every data field.
    pub async fn sleep_getsummary(&self, token: &Secret, window: Window) -> Result<Vec<Item<SleepSummary>>, WithingsError> {
        let mut params = vec![("data_fields", SUMMARY_FIELDS.to_string())];
        params.extend(window.params());
        let call = Call::data(Endpoint::SleepGetsummary, token, params);
        Ok(self.list(call, "series").await?.0.into_iter().map(Item::decode).collect())
    }

    /// `v2/heart list` (no lastupdate: a window), every page.
    pub async fn heart_list(
        &self,
        token: &Secret,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Result<Vec<Item<HeartRecord>>, WithingsError> {
        let mut params = vec![("action", "list".to_string())];
        for (k, v) in [("startdate", start), ("enddate", end)] {
            if let Some(v) = v {
                params.push((k, v.to_string()));
            }
        }
        let call = Call { endpoint: "heart_list", path: "/v2/heart", token: Some(token), params };
        Ok(self.list(call, "series").await?.0.into_iter().map(Item::decode).collect())
    }

    /// `v2/user getdevice`.
    pub async fn getdevice(&self, token: &Secret) -> Result<Vec<Item<Device>>, WithingsError> {
        let params = vec![("action", "getdevice".to_string())];
        let mut body = self.call(Call { endpoint: "getdevice", path: "/v2/user", token: Some(token), params }).await?;
        Ok(list_of(&mut body, "devices", "getdevice")?.into_iter().map(Item::decode).collect())
    }

    // ---- notifications ----

    pub async fn notify_subscribe(
        &self,
        token: &Secret,
        callbackurl: &str,
        appli: i64,
        comment: &str,
    ) -> Result<(), WithingsError> {
        let params = vec![
            ("action", "subscribe".to_string()),
            ("callbackurl", callbackurl.to_string()),
            ("appli", appli.to_string()),
            ("comment", comment.to_string()),
        ];
        self.call(Call { endpoint: "notify_subscribe", path: "/notify", token: Some(token), params }).await.map(|_| ())
    }

    pub async fn notify_list(&self, token: &Secret, appli: Option<i64>) -> Result<Vec<Item<NotifyProfile>>, WithingsError> {
        let mut params = vec![("action", "list".to_string())];
        if let Some(a) = appli {
            params.push(("appli", a.to_string()));
        }
        let mut body = self.call(Call { endpoint: "notify_list", path: "/notify", token: Some(token), params }).await?;
        Ok(list_of(&mut body, "profiles", "notify_list")?.into_iter().map(Item::decode).collect())
    }

    pub async fn notify_revoke(&self, token: &Secret, callbackurl: &str, appli: i64) -> Result<(), WithingsError> {
        let params =
            vec![("action", "revoke".to_string()), ("callbackurl", callbackurl.to_string()), ("appli", appli.to_string())];
        self.call(Call { endpoint: "notify_revoke", path: "/notify", token: Some(token), params }).await.map(|_| ())
    }

    // ---- OAuth2 ----

    /// Exchanges an authorization code (valid 30 s, single use).
    pub async fn exchange_code(&self, code: &str, redirect_uri: &str) -> Result<TokenResponse, WithingsError> {
        let params = vec![
            ("action", "requesttoken".to_string()),
            ("grant_type", "authorization_code".to_string()),
            ("client_id", self.inner.cfg.client_id.clone()),
            ("client_secret", self.inner.cfg.client_secret.expose().to_string()),
            ("code", code.to_string()),
            ("redirect_uri", redirect_uri.to_string()),
        ];
        self.token_request(params).await
    }

    /// Refresh-token grant. The answer carries a new refresh token: persist it before using
    /// the new access token (the old refresh token dies at that first use).
    pub async fn refresh(&self, refresh_token: &Secret) -> Result<TokenResponse, WithingsError> {
        let params = vec![
            ("action", "requesttoken".to_string()),
            ("grant_type", "refresh_token".to_string()),
            ("client_id", self.inner.cfg.client_id.clone()),
            ("client_secret", self.inner.cfg.client_secret.expose().to_string()),
            ("refresh_token", refresh_token.expose().to_string()),
        ];
        self.token_request(params).await
    }

    /// `v2/oauth2 revoke` for a Withings user: a signed call with a fresh nonce.
    pub async fn revoke_user(&self, withings_userid: &str) -> Result<(), WithingsError> {
        let nonce = self.nonce().await?;
        let cfg = &self.inner.cfg;
        let signature = sign(&cfg.client_secret, &["revoke", &cfg.client_id, &nonce]);
        let params = vec![
            ("action", "revoke".to_string()),
            ("client_id", cfg.client_id.clone()),
            ("nonce", nonce),
            ("signature", signature),
            ("userid", withings_userid.to_string()),
        ];
        self.call(Call { endpoint: "revoke", path: "/v2/oauth2", token: None, params }).await.map(|_| ())
    }

    async fn nonce(&self) -> Result<String, WithingsError> {
        let cfg = &self.inner.cfg;
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let signature = sign(&cfg.client_secret, &["getnonce", &cfg.client_id, &timestamp]);
        let params = vec![
            ("action", "getnonce".to_string()),
            ("client_id", cfg.client_id.clone()),
            ("timestamp", timestamp),
            ("signature", signature),
        ];
        let body = self.call(Call { endpoint: "getnonce", path: "/v2/signature", token: None, params }).await?;
        body.get("nonce")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| WithingsError::Decode { endpoint: "getnonce", reason: "no `nonce` in the body".into() })
    }

    async fn token_request(&self, params: Vec<(&'static str, String)>) -> Result<TokenResponse, WithingsError> {
        let body = self.call(Call { endpoint: "requesttoken", path: "/v2/oauth2", token: None, params }).await?;
        serde_json::from_value::<TokenResponse>(body)
            .map_err(|e| WithingsError::Decode { endpoint: "requesttoken", reason: redact_serde(&e) })
    }

    // ---- transport ----

    /// Every page of a listing: the raw items under `key`, and the last page's body.
    async fn list(&self, call: Call<'_>, key: &str) -> Result<(Vec<Value>, Value), WithingsError> {
        let mut items = Vec::new();
        let mut offset: Option<i64> = None;
        for page in 0..self.inner.cfg.max_pages {
            let mut params = call.params.clone();
            if let Some(o) = offset {
                params.push(("offset", o.to_string()));
            }
            let mut body = self.call(Call { endpoint: call.endpoint, path: call.path, token: call.token, params }).await?;
            items.extend(list_of(&mut body, key, call.endpoint)?);
            let more = body.get("more").map(|m| match m {
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_i64().unwrap_or(0) != 0,
                _ => false,
            });
            if more != Some(true) {
                return Ok((items, body));
            }
            let next = body.get("offset").and_then(|o| o.as_i64().or_else(|| o.as_str().and_then(|s| s.parse().ok())));
            match next {
                Some(n) if offset.is_none_or(|o| n > o) => offset = Some(n),
                _ => {
                    return Err(WithingsError::Decode {
                        endpoint: call.endpoint,
                        reason: format!("`more` is set but `offset` does not move forward (page {page})"),
                    });
                }
            }
        }
        Err(WithingsError::RunawayPagination { endpoint: call.endpoint, pages: self.inner.cfg.max_pages })
    }

    /// One call, with the limiter, the retries and the envelope check. Returns `body`.
    async fn call(&self, call: Call<'_>) -> Result<Value, WithingsError> {
        let inner = &self.inner;
        let url = format!("{}{}", inner.cfg.base_url.trim_end_matches('/'), call.path);
        let is_token = call.endpoint == "requesttoken";
        let mut transient_retries = 0u32;
        let mut rate_limited = 0u32;
        let mut attempt = 0u32;
        loop {
            if is_token {
                self.space_token_request(&call.params).await;
            }
            let outcome = {
                // The limiter first: a request of a higher priority must not queue behind
                // lower ones holding connections while they wait for the window.
                let (slot, waited) = inner.limiter.acquire(self.priority).await;
                let _permit = inner.gate.acquire().await.expect("the gate is never closed");
                let mut req = inner.http.post(&url).form(&call.params);
                if let Some(t) = call.token {
                    req = req.bearer_auth(t.expose());
                }
                let result = send(req, call.endpoint).await;
                inner.limiter.finish(slot).await;
                if is_token {
                    // The 10 s rule counts from when Withings saw the request.
                    self.stamp_token_request(&call.params).await;
                }
                let label = match &result {
                    Ok(_) => "0".to_string(),
                    Err(e) => e.label(),
                };
                inner.accounting.record(call.endpoint, &label, attempt > 0, waited);
                result
            };
            attempt += 1;
            match outcome {
                Ok(body) => return Ok(body),
                Err(WithingsError::Status { status: 601, wait_seconds, .. }) => {
                    rate_limited += 1;
                    if rate_limited > inner.cfg.max_rate_limit_retries {
                        return Err(WithingsError::RateLimited { endpoint: call.endpoint, attempts: attempt });
                    }
                    // `wait_seconds` when given (identical token requests), else back off
                    // adaptively: 5 s, 10 s, 20 s, ... (rate_limit_pause) up to a full window.
                    let pause = match wait_seconds {
                        Some(w) if w > 0 => Duration::from_secs(w.min(3600) as u64),
                        _ => (inner.cfg.rate_limit_pause * (1u32 << (rate_limited - 1).min(4))).min(Duration::from_secs(60)),
                    };
                    tracing::warn!(
                        endpoint = call.endpoint,
                        pause_s = pause.as_secs(),
                        attempt,
                        "Withings rate limit (601): pausing all requests"
                    );
                    inner.limiter.pause(pause).await;
                }
                Err(e) if e.is_retryable() && call.retryable() && transient_retries < inner.cfg.max_retries => {
                    transient_retries += 1;
                    let delay = self.backoff(transient_retries);
                    tracing::warn!(endpoint = call.endpoint, error = %e, retry_in_ms = delay.as_millis() as u64, "transient Withings failure, retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn backoff(&self, retry: u32) -> Duration {
        let base = self.inner.cfg.retry_base.as_millis() as u64;
        let exp = base.saturating_mul(1u64 << (retry - 1).min(16)).min(30_000);
        let r = self.inner.jitter.hash_one((retry, Instant::now()));
        // Jitter in [exp/2, exp].
        Duration::from_millis(exp / 2 + r % (exp / 2 + 1))
    }

    async fn stamp_token_request(&self, params: &[(&'static str, String)]) {
        let key = self.inner.jitter.hash_one(params);
        self.inner.token_requests.lock().await.insert(key, Instant::now());
    }

    /// Waits until no identical token request went out in the last 10 seconds.
    async fn space_token_request(&self, params: &[(&'static str, String)]) {
        let key = self.inner.jitter.hash_one(params);
        loop {
            let wait = {
                let mut sent = self.inner.token_requests.lock().await;
                let now = Instant::now();
                sent.retain(|_, t| now.duration_since(*t) < Duration::from_secs(10));
                match sent.get(&key) {
                    Some(t) => Some(*t + Duration::from_secs(10) + Duration::from_millis(50)),
                    None => {
                        sent.insert(key, now);
                        None
                    }
                }
            };
            match wait {
                Some(t) => tokio::time::sleep_until(t).await,
                None => return,
            }
        }
    }
}

/// The largest Withings answer read: a day of every intraday field or a night of sleep get is
/// well under 1 MiB, a full getmeas page a few MiB.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Why a capped read stopped.
#[derive(Debug)]
pub enum CappedRead {
    TooLarge,
    Failed(reqwest::Error),
}

/// Reads a response body, refusing one longer than `limit` bytes (announced or streamed)
/// without buffering more than that.
pub async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, CappedRead> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(CappedRead::TooLarge);
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(CappedRead::Failed)? {
        if out.len() + chunk.len() > limit {
            return Err(CappedRead::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Sends one request and checks the envelope; returns `body` on status 0.
async fn send(req: reqwest::RequestBuilder, endpoint: &'static str) -> Result<Value, WithingsError> {
    let resp = req.send().await.map_err(|e| WithingsError::Network { endpoint, reason: describe(&e) })?;
    let http = resp.status();
    let bytes = read_capped(resp, MAX_RESPONSE_BYTES).await.map_err(|e| match e {
        CappedRead::TooLarge => WithingsError::TooLarge { endpoint, limit: MAX_RESPONSE_BYTES },
        CappedRead::Failed(e) => WithingsError::Network { endpoint, reason: describe(&e) },
    })?;
    if http != reqwest::StatusCode::OK {
        return Err(WithingsError::Http { endpoint, status: http.as_u16() });
    }
    decode_envelope(endpoint, &bytes)
}

/// Reads a Withings answer: `body` when `status` is 0, else the status error (with
/// `wait_seconds` for a 601). Non-JSON and truncated bytes are transient errors.
pub fn decode_envelope(endpoint: &'static str, bytes: &[u8]) -> Result<Value, WithingsError> {
    let mut envelope: Value = serde_json::from_slice(bytes).map_err(|e| WithingsError::NotJson {
        endpoint,
        reason: e.classify_name().to_string(),
        bytes: bytes.len(),
    })?;
    let Some(status) = envelope.get("status").and_then(|s| s.as_i64()) else {
        return Err(WithingsError::Decode { endpoint, reason: "no integer `status` in the envelope".into() });
    };
    if status == 0 {
        return match envelope.get_mut("body").map(Value::take) {
            Some(b @ Value::Object(_)) => Ok(b),
            Some(Value::Array(a)) if a.is_empty() => Ok(Value::Object(Default::default())),
            _ => Err(WithingsError::Decode { endpoint, reason: "status 0 without an object `body`".into() }),
        };
    }
    let message = envelope.get("error").and_then(Value::as_str).unwrap_or("").chars().take(300).collect::<String>();
    let wait_seconds = envelope.pointer("/body/wait_seconds").and_then(Value::as_i64);
    Err(WithingsError::Status { endpoint, status, kind: kind_of(status), message, wait_seconds })
}

/// A JSON error described by its category alone: never the offending text, which may hold a
/// secret.
pub trait JsonErrorKind {
    fn classify_name(&self) -> &'static str;
}

impl JsonErrorKind for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Eof => "truncated body",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "unexpected JSON",
            serde_json::error::Category::Io => "read error",
        }
    }
}

/// A reqwest error without its URL (ours carry no secret, but keep messages short).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "body read failed"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() { kind.to_string() } else { format!("{kind}: {detail}") }
}

/// serde messages can quote the offending value: for token bodies keep only what is missing
/// or the category, never a value.
fn redact_serde(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    if msg.starts_with("missing field") { msg } else { format!("{} in the token response", e.classify_name()) }
}

/// The items under `key` of a body (absent or `[]`/`{}`-empty = none).
/// Takes the list under `key` out of `body` (the rest of the body stays).
fn list_of(body: &mut Value, key: &str, endpoint: &'static str) -> Result<Vec<Value>, WithingsError> {
    match body.get_mut(key).map(Value::take) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => Ok(a),
        Some(Value::Object(m)) if m.is_empty() => Ok(Vec::new()),
        Some(_) => Err(WithingsError::Decode { endpoint, reason: format!("`{key}` is not a list") }),
    }
}

/// `[start, end)` cut into windows of at most 24 hours.
pub fn day_chunks(start: i64, end: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut a = start;
    while a < end {
        let b = a.saturating_add(86_400).min(end);
        out.push((a, b));
        a = b;
    }
    out
}

/// Hex HMAC-SHA256 of the comma-joined values, keyed by the client secret (request signing).
pub fn sign(secret: &Secret, values: &[&str]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes()).expect("hmac takes any key");
    mac.update(values.join(",").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}
