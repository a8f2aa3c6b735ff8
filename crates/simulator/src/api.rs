//! The Withings API surface: request pipeline and data endpoints.
//!
//! Every API request goes through [`handle`]: parameters are read from the query string and
//! the form body alike (Withings accepts both), the request is counted, checked against the
//! sliding rate-limit window, possibly hit by an injected fault, delayed by `--latency-ms`,
//! and only then dispatched on its `action`. Answers are HTTP 200 with the JSON envelope,
//! except injected HTTP-level faults.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{RawQuery, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{Duration as Days, NaiveDate};
use serde::Serialize;
use serde_json::{Value, json};

use super::State;
use super::activity::{self, Sample};
use super::faults::Fault;
use super::heart::ecg_on;
use super::measures::{self, Group};
use super::rng::hash;
use super::sleep::{self, Session};
use super::workouts::{WorkoutData, workouts_on};
use super::world::User;
use super::{notify, oauth};

pub(crate) type Params = HashMap<String, String>;

/// What an endpoint answers.
pub(crate) enum Reply {
    /// Status 0 with this serialized `body`.
    Ok(Vec<u8>),
    /// A Withings error status (HTTP 200), with an optional non-empty body.
    Error { status: i64, error: String, body: Option<Value> },
    /// Not an envelope at all (gateway errors, fault injection, redirects).
    Raw { http: StatusCode, content_type: &'static str, body: Vec<u8> },
}

pub(crate) fn ok<T: Serialize>(body: &T) -> Reply {
    Reply::Ok(serde_json::to_vec(body).expect("response bodies serialize"))
}

pub(crate) fn err(status: i64, error: impl Into<String>) -> Reply {
    Reply::Error { status, error: error.into(), body: None }
}

/// Status 503, the code Withings uses for a bad or missing parameter.
pub(crate) fn invalid(param: &str, reason: &str) -> Reply {
    err(503, format!("Invalid Params: {param} {reason}"))
}

impl Reply {
    /// The key this reply is counted under in `/_sim/stats`.
    pub fn label(&self) -> String {
        match self {
            Reply::Ok(_) => "0".to_string(),
            Reply::Error { status, .. } => status.to_string(),
            Reply::Raw { http, .. } => format!("http_{}", http.as_u16()),
        }
    }

    pub fn into_bytes(self) -> (StatusCode, &'static str, Vec<u8>) {
        match self {
            Reply::Ok(body) => {
                let mut out = Vec::with_capacity(body.len() + 24);
                out.extend_from_slice(b"{\"status\":0,\"body\":");
                out.extend_from_slice(&body);
                out.push(b'}');
                (StatusCode::OK, "application/json", out)
            }
            Reply::Error { status, error, body } => {
                let v = json!({"status": status, "body": body.unwrap_or_else(|| json!({})), "error": error});
                (StatusCode::OK, "application/json", serde_json::to_vec(&v).expect("json"))
            }
            Reply::Raw { http, content_type, body } => (http, content_type, body),
        }
    }
}

fn respond(reply: Reply) -> Response {
    let (code, content_type, body) = reply.into_bytes();
    (code, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

#[derive(Debug, Clone, Copy)]
enum Service {
    Measure,
    MeasureV2,
    Sleep,
    Heart,
    User,
    Notify,
    OAuth2,
    Signature,
}

fn endpoint(service: Service, action: &str) -> Option<&'static str> {
    Some(match (service, action) {
        (Service::Measure, "getmeas") => "getmeas",
        (Service::MeasureV2, "getactivity") => "getactivity",
        (Service::MeasureV2, "getintradayactivity") => "getintradayactivity",
        (Service::MeasureV2, "getworkouts") => "getworkouts",
        (Service::Sleep, "get") => "sleep_get",
        (Service::Sleep, "getsummary") => "sleep_getsummary",
        (Service::Heart, "list") => "heart_list",
        (Service::User, "getdevice") => "getdevice",
        (Service::Notify, "subscribe") => "notify_subscribe",
        (Service::Notify, "list") => "notify_list",
        (Service::Notify, "get") => "notify_get",
        (Service::Notify, "revoke") => "notify_revoke",
        (Service::OAuth2, "requesttoken") => "requesttoken",
        (Service::OAuth2, "revoke") => "revoke",
        (Service::Signature, "getnonce") => "getnonce",
        _ => return None,
    })
}

macro_rules! service_handler {
    ($name:ident, $service:expr) => {
        pub(crate) async fn $name(
            AxState(s): AxState<Arc<State>>,
            RawQuery(q): RawQuery,
            headers: HeaderMap,
            body: Bytes,
        ) -> Response {
            handle(s, $service, q, headers, body).await
        }
    };
}

service_handler!(measure, Service::Measure);
service_handler!(measure_v2, Service::MeasureV2);
service_handler!(sleep, Service::Sleep);
service_handler!(heart, Service::Heart);
service_handler!(user, Service::User);
service_handler!(notify, Service::Notify);
service_handler!(oauth2, Service::OAuth2);
service_handler!(signature, Service::Signature);

/// Query string and form body, merged (the body wins on a repeated key).
pub(crate) fn parse_params(query: Option<&str>, body: &[u8]) -> Params {
    let mut out = Params::new();
    if let Some(q) = query {
        out.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
    }
    out.extend(form_urlencoded::parse(body).into_owned());
    out
}

/// Records one request in the sliding window; true when it is over the limit.
fn over_limit(s: &State) -> bool {
    let limit = s.cfg.rate_limit_per_minute as usize;
    if limit == 0 {
        return false;
    }
    let now = Instant::now();
    let mut w = s.window.lock().expect("window lock");
    while w.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
        w.pop_front();
    }
    // A rejected request still counts toward the limit, as at Withings.
    w.push_back(now);
    w.len() > limit
}

async fn handle(s: Arc<State>, service: Service, query: Option<String>, headers: HeaderMap, body: Bytes) -> Response {
    let params = parse_params(query.as_deref(), &body);
    let action = params.get("action").map(String::as_str).unwrap_or("");
    let ep = endpoint(service, action);
    let label = ep.unwrap_or("unknown_action");
    if over_limit(&s) {
        let reply = err(601, "Too Many Requests");
        s.stats.lock().expect("stats lock").record(label, &reply.label(), true);
        return respond(reply);
    }
    let fault = s.faults.lock().expect("faults lock").take(label);
    let mut truncate = false;
    match fault {
        Some(Fault::Replace(reply)) => {
            s.stats.lock().expect("stats lock").record_fault(label, &reply.label());
            return respond(reply);
        }
        Some(Fault::Delay(ms)) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Some(Fault::Truncate) => truncate = true,
        None => {}
    }
    if s.cfg.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(s.cfg.latency_ms)).await;
    }
    let reply = match ep {
        None if action.is_empty() => invalid("action", "is missing"),
        None => err(2554, format!("Not implemented: action '{action}'")),
        Some(ep) => dispatch(&s, ep, &params, &headers).await,
    };
    let label_status = reply.label();
    if truncate {
        s.stats.lock().expect("stats lock").record_fault(label, "truncated");
        let (_, content_type, mut body) = reply.into_bytes();
        body.truncate(body.len() / 2);
        return respond(Reply::Raw { http: StatusCode::OK, content_type, body });
    }
    s.stats.lock().expect("stats lock").record(label, &label_status, false);
    respond(reply)
}

async fn dispatch(s: &Arc<State>, ep: &'static str, p: &Params, headers: &HeaderMap) -> Reply {
    match ep {
        "requesttoken" => return oauth::requesttoken(s, p),
        "getnonce" => return oauth::getnonce(s, p),
        "revoke" => return oauth::revoke(s, p),
        _ => {}
    }
    let scope = match ep {
        "getmeas" | "heart_list" => Some("user.metrics"),
        "getactivity" | "getintradayactivity" | "getworkouts" | "sleep_get" | "sleep_getsummary" => Some("user.activity"),
        _ => None,
    };
    let user = match oauth::authenticate(s, headers, p, scope) {
        Ok(u) => u,
        Err(reply) => return reply,
    };
    let user = s.world.user(user);
    let now = s.clock.now();
    let result = match ep {
        "getmeas" => getmeas(s, user, p, now),
        "getactivity" => getactivity(s, user, p, now),
        "getintradayactivity" => getintradayactivity(s, user, p, now),
        "getworkouts" => getworkouts(s, user, p, now),
        "sleep_get" => sleep_get(s, user, p, now),
        "sleep_getsummary" => sleep_getsummary(s, user, p, now),
        "heart_list" => heart_list(s, user, p, now),
        "getdevice" => Ok(getdevice(s, user, now)),
        "notify_subscribe" => return notify::subscribe(s, user, p).await,
        "notify_list" => notify::list(s, user, p),
        "notify_get" => notify::get(s, user, p),
        "notify_revoke" => notify::revoke(s, user, p),
        _ => Err(err(2554, "Not implemented")),
    };
    result.unwrap_or_else(|e| e)
}

// ---- parameter helpers ----

pub(crate) fn int_param(p: &Params, name: &str) -> Result<Option<i64>, Reply> {
    match p.get(name).map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(v) => v.parse::<i64>().map(Some).map_err(|_| invalid(name, "must be an integer")),
    }
}

fn ymd_param(p: &Params, name: &str) -> Result<Option<NaiveDate>, Reply> {
    match p.get(name).map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(v) => NaiveDate::parse_from_str(v, "%Y-%m-%d").map(Some).map_err(|_| invalid(name, "must be YYYY-MM-DD")),
    }
}

/// `data_fields` as a set, or the given default set when absent.
fn fields<'a>(p: &'a Params, default: &[&'a str]) -> HashSet<&'a str> {
    match p.get("data_fields").map(|v| v.trim()) {
        Some(v) if !v.is_empty() => v.split(',').map(str::trim).filter(|f| !f.is_empty()).collect(),
        _ => default.iter().copied().collect(),
    }
}

/// The span of time that can hold data: from two days before history to two days after now.
/// Client epochs are clamped into it, so no parameter makes a request scan (or overflow)
/// beyond what exists.
fn epoch_bounds(s: &State, user: &User, now: i64) -> (i64, i64) {
    (user.day_start(s.world.history_start) - 2 * 86_400, now + 2 * 86_400)
}

/// The window of a list endpoint: `(first date, last date, lastupdate)`, clamped to the
/// dates that can hold data.
fn ymd_or_lastupdate(
    s: &State,
    p: &Params,
    user: &User,
    now: i64,
    lag_days: i64,
) -> Result<(NaiveDate, NaiveDate, Option<i64>), Reply> {
    let from = ymd_param(p, "startdateymd")?;
    let to = ymd_param(p, "enddateymd")?;
    let lastupdate = int_param(p, "lastupdate")?;
    let (lo, hi) = epoch_bounds(s, user, now);
    let first = s.world.history_start - Days::days(1);
    let last = user.local_date(now) + Days::days(1);
    let (f, t, lu) = match (from, to, lastupdate) {
        (_, _, Some(lu)) => {
            let lu = lu.clamp(lo, hi);
            (user.local_date(lu) - Days::days(lag_days), last, Some(lu))
        }
        (Some(f), Some(t), None) if f <= t => (f, t, None),
        (Some(_), Some(_), None) => return Err(invalid("enddateymd", "is before startdateymd")),
        _ => return Err(invalid("startdateymd", "and enddateymd, or lastupdate, are required")),
    };
    Ok((f.clamp(first, last), t.clamp(first, last), lu))
}

struct Page<T> {
    items: Vec<T>,
    more: bool,
    offset: usize,
}

fn paginate<T>(items: Vec<T>, p: &Params, page_size: usize) -> Result<Page<T>, Reply> {
    let offset = int_param(p, "offset")?.unwrap_or(0);
    if offset < 0 {
        return Err(invalid("offset", "must not be negative"));
    }
    let offset = offset as usize;
    let total = items.len();
    let items: Vec<T> = items.into_iter().skip(offset).take(page_size).collect();
    let next = offset + items.len();
    Ok(Page { more: next < total, offset: next, items })
}

fn days(from: NaiveDate, to: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    from.iter_days().take_while(move |d| *d <= to)
}

// ---- getmeas ----

#[derive(Serialize)]
struct MeasureJson {
    value: i64,
    #[serde(rename = "type")]
    kind: i64,
    unit: i64,
    algo: i64,
    fm: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<i64>,
    /// App platform and version of a manual entry: keys no client documents, as in real data.
    #[serde(skip_serializing_if = "Option::is_none")]
    apppfmid: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    appliver: Option<i64>,
}

#[derive(Serialize)]
struct GroupJson<'a> {
    grpid: i64,
    attrib: i64,
    date: i64,
    created: i64,
    modified: i64,
    category: i64,
    deviceid: Option<&'a str>,
    hash_deviceid: Option<&'a str>,
    measures: Vec<MeasureJson>,
    modelid: Option<i64>,
    model: Option<&'a str>,
    comment: Option<&'a str>,
}

fn getmeas(s: &State, user: &User, p: &Params, now: i64) -> Result<Reply, Reply> {
    let mut types: Option<HashSet<i64>> = None;
    if let Some(t) = int_param(p, "meastype")? {
        types = Some([t].into());
    }
    if let Some(list) = p.get("meastypes").filter(|v| !v.trim().is_empty()) {
        let parsed: Result<HashSet<i64>, _> = list.split(',').map(|x| x.trim().parse::<i64>()).collect();
        types = Some(parsed.map_err(|_| invalid("meastypes", "must be comma-separated integers"))?);
    }
    let category = int_param(p, "category")?.unwrap_or(1);
    if category != 1 && category != 2 {
        return Err(invalid("category", "must be 1 or 2"));
    }
    let groups: Vec<Group> = if category == 2 {
        Vec::new() // The synthetic users set no objectives.
    } else if let Some(lu) = int_param(p, "lastupdate")? {
        let (lo, hi) = epoch_bounds(s, user, now);
        measures::groups_modified_after(&s.world, user, lu.clamp(lo, hi), now)
    } else {
        let (lo, hi) = epoch_bounds(s, user, now);
        let from = int_param(p, "startdate")?.unwrap_or(lo).clamp(lo, hi);
        let to = int_param(p, "enddate")?.unwrap_or(now).clamp(lo, hi);
        measures::groups_between(&s.world, user, from, to, now)
    };
    let mut out: Vec<GroupJson> = groups
        .iter()
        .filter_map(|g| {
            let ms: Vec<MeasureJson> = g
                .measures
                .iter()
                .filter(|m| types.as_ref().is_none_or(|t| t.contains(&m.kind)))
                .map(|m| MeasureJson {
                    value: m.value,
                    kind: m.kind,
                    unit: m.unit,
                    algo: 0,
                    fm: if g.device.is_some() { 3 } else { 128 },
                    position: m.position,
                    apppfmid: g.device.is_none().then_some(7),
                    appliver: g.device.is_none().then_some(5_050_021),
                })
                .collect();
            if ms.is_empty() {
                return None;
            }
            let id = g.device.and_then(|d| d.deviceid.as_deref());
            Some(GroupJson {
                grpid: g.grpid,
                attrib: g.attrib_at(now),
                date: g.date,
                created: g.created,
                modified: g.modified(now),
                category: 1,
                deviceid: id,
                hash_deviceid: id,
                measures: ms,
                modelid: g.device.map(|d| d.model.id),
                model: g.device.map(|d| d.model.name),
                comment: None,
            })
        })
        .collect();
    out.sort_by_key(|g| std::cmp::Reverse((g.date, g.grpid)));
    let page = paginate(out, p, s.cfg.page_size)?;
    #[derive(Serialize)]
    struct Body<'a> {
        updatetime: i64,
        timezone: &'a str,
        measuregrps: Vec<GroupJson<'a>>,
        more: i64,
        offset: usize,
    }
    Ok(ok(&Body {
        updatetime: now,
        timezone: user.tz_at(now).name(),
        measuregrps: page.items,
        more: i64::from(page.more),
        offset: page.offset,
    }))
}

// ---- getactivity ----

const ACTIVITY_DEFAULT_FIELDS: &[&str] =
    &["steps", "distance", "elevation", "soft", "moderate", "intense", "active", "calories", "totalcalories"];

#[derive(Serialize, Default)]
struct ActivityJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    distance: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    elevation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    soft: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    moderate: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    intense: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    active: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    calories: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    totalcalories: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hr_average: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hr_min: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hr_max: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hr_zone_0: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hr_zone_1: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hr_zone_2: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hr_zone_3: Option<i64>,
    deviceid: Option<&'a str>,
    hash_deviceid: Option<&'a str>,
    timezone: &'a str,
    date: String,
    modified: i64,
    brand: i64,
    modelid: i64,
    model: &'a str,
    is_tracker: bool,
}

fn getactivity(s: &State, user: &User, p: &Params, now: i64) -> Result<Reply, Reply> {
    let (from, to, lastupdate) = ymd_or_lastupdate(s, p, user, now, 4)?;
    let f = fields(p, ACTIVITY_DEFAULT_FIELDS);
    let mut rows = Vec::new();
    for d in days(from, to) {
        for row in activity::rows_on(&s.world, user, d, now) {
            if lastupdate.is_none_or(|lu| row.modified > lu) {
                rows.push(row);
            }
        }
    }
    let page = paginate(rows, p, s.cfg.page_size)?;
    let items: Vec<ActivityJson> = page
        .items
        .iter()
        .map(|r| {
            let d = &r.data(&s.world, user, now);
            let has = |name: &str| f.contains(name);
            let pick_i = |name: &str, v: i64| has(name).then_some(v);
            let pick_f = |name: &str, v: f64| has(name).then_some(v);
            let hr = |name: &str, v: Option<i64>| if has(name) { v } else { None };
            let (summary, zones) = match d.hr {
                Some((s, z)) => ([Some(s[0]), Some(s[1]), Some(s[2])], [Some(z[0]), Some(z[1]), Some(z[2]), Some(z[3])]),
                None => ([None; 3], [None; 4]),
            };
            let id = r.device.deviceid.as_deref();
            ActivityJson {
                steps: pick_i("steps", d.steps),
                distance: pick_f("distance", d.distance),
                elevation: pick_i("elevation", d.elevation),
                soft: pick_i("soft", d.soft),
                moderate: pick_i("moderate", d.moderate),
                intense: pick_i("intense", d.intense),
                active: pick_i("active", d.active),
                calories: pick_f("calories", d.calories),
                totalcalories: pick_f("totalcalories", d.totalcalories),
                hr_average: hr("hr_average", summary[0]),
                hr_min: hr("hr_min", summary[1]),
                hr_max: hr("hr_max", summary[2]),
                hr_zone_0: hr("hr_zone_0", zones[0]),
                hr_zone_1: hr("hr_zone_1", zones[1]),
                hr_zone_2: hr("hr_zone_2", zones[2]),
                hr_zone_3: hr("hr_zone_3", zones[3]),
                deviceid: id,
                hash_deviceid: id,
                timezone: r.timezone,
                date: r.date.format("%Y-%m-%d").to_string(),
                modified: r.modified,
                brand: r.brand,
                modelid: r.device.model.id,
                model: r.device.model.name,
                is_tracker: r.is_tracker,
            }
        })
        .collect();
    Ok(ok(&json_page("activities", items, page.more, page.offset)))
}

fn json_page<T: Serialize>(key: &str, items: Vec<T>, more: bool, offset: usize) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(key.to_string(), serde_json::to_value(items).expect("json"));
    m.insert("more".into(), json!(more));
    m.insert("offset".into(), json!(offset));
    Value::Object(m)
}

// ---- getintradayactivity ----

const INTRADAY_DEFAULT_FIELDS: &[&str] = &["steps", "elevation", "calories", "distance", "duration", "heart_rate"];

#[derive(Serialize)]
struct IntradayJson<'a> {
    deviceid: Option<&'a str>,
    model: &'a str,
    model_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    elevation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    calories: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    distance: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    heart_rate: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spo2_auto: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rmssd: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sdnn1: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rr: Option<i64>,
}

fn getintradayactivity(s: &State, user: &User, p: &Params, now: i64) -> Result<Reply, Reply> {
    let start = int_param(p, "startdate")?;
    let end = int_param(p, "enddate")?;
    let (lo, hi) = epoch_bounds(s, user, now);
    // [from, to): enddate is inclusive, and more than 24 hours apart only the first 24 hours
    // after startdate come back.
    let (from, to) = match (start, end) {
        (Some(a), Some(b)) if b < a => return Err(invalid("enddate", "is before startdate")),
        (Some(a), Some(b)) => (a, b.saturating_add(1).min(a.saturating_add(86_400))),
        (Some(a), None) => (a, a.saturating_add(86_400).min(now + 1)),
        (None, Some(b)) => (b.saturating_sub(86_399), b.saturating_add(1)),
        (None, None) => (now - 86_399, now + 1),
    };
    let (from, to) = (from.clamp(lo, hi), to.clamp(lo, hi));
    let f = fields(p, INTRADAY_DEFAULT_FIELDS);
    let Some(watch) = &user.watch else {
        return Ok(ok(&json!({"series": []})));
    };
    let keep_i = |name: &str, v: Option<i64>| if f.contains(name) { v } else { None };
    let keep_f = |name: &str, v: Option<f64>| if f.contains(name) { v } else { None };
    let mut series: BTreeMap<String, IntradayJson> = BTreeMap::new();
    for Sample { t, steps, elevation, calories, distance, duration, heart_rate, spo2_auto, rmssd, sdnn1, rr } in
        activity::intraday(&s.world, user, from, to, now)
    {
        let item = IntradayJson {
            deviceid: watch.deviceid.as_deref(),
            model: watch.model.name,
            model_id: watch.model.id,
            steps: keep_i("steps", steps),
            elevation: keep_i("elevation", elevation),
            calories: keep_f("calories", calories),
            distance: keep_f("distance", distance),
            duration: keep_i("duration", duration),
            heart_rate: keep_i("heart_rate", heart_rate),
            spo2_auto: keep_i("spo2_auto", spo2_auto),
            rmssd: keep_i("rmssd", rmssd),
            sdnn1: keep_i("sdnn1", sdnn1),
            rr: keep_i("rr", rr),
        };
        let any = item.steps.is_some()
            || item.elevation.is_some()
            || item.calories.is_some()
            || item.distance.is_some()
            || item.duration.is_some()
            || item.heart_rate.is_some()
            || item.spo2_auto.is_some()
            || item.rmssd.is_some()
            || item.sdnn1.is_some()
            || item.rr.is_some();
        if any {
            series.insert(t.to_string(), item);
        }
    }
    if series.is_empty() {
        // An empty PHP associative array: Withings sends `[]`, not `{}`.
        return Ok(ok(&json!({"series": []})));
    }
    #[derive(Serialize)]
    struct Body<'a> {
        series: BTreeMap<String, IntradayJson<'a>>,
    }
    Ok(ok(&Body { series }))
}

// ---- getworkouts ----

fn workout_data_json(d: &WorkoutData, f: &HashSet<&str>) -> Value {
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        if f.contains(k) {
            m.insert(k.to_string(), v);
        }
    };
    put("calories", json!(d.calories));
    put("intensity", json!(d.intensity));
    put("manual_distance", json!(d.manual_distance));
    put("manual_calories", json!(d.manual_calories));
    put("manual_intensity", json!(0));
    put("hr_average", json!(d.hr_average));
    put("hr_min", json!(d.hr_min));
    put("hr_max", json!(d.hr_max));
    for (i, z) in d.hr_zones.iter().enumerate() {
        put(&format!("hr_zone_{i}"), json!(z));
    }
    put("pause_duration", json!(d.pause_duration));
    put("algo_pause_duration", json!(d.algo_pause_duration));
    put("spo2_average", json!(d.spo2_average));
    put("steps", json!(d.steps));
    put("distance", json!(d.distance));
    put("elevation", json!(d.elevation));
    put("pool_laps", json!(d.pool_laps));
    put("strokes", json!(d.strokes));
    put("pool_length", json!(d.pool_length));
    Value::Object(m)
}

fn getworkouts(s: &State, user: &User, p: &Params, now: i64) -> Result<Reply, Reply> {
    let (from, to, lastupdate) = ymd_or_lastupdate(s, p, user, now, 4)?;
    let has_fields = p.get("data_fields").is_some_and(|v| !v.trim().is_empty());
    let f = fields(p, &[]);
    let mut found = Vec::new();
    for d in days(from, to) {
        found.extend(
            workouts_on(&s.world, user, d)
                .into_iter()
                .filter(|w| w.modified <= now && lastupdate.is_none_or(|lu| w.modified > lu)),
        );
    }
    // Page first: the per-minute summary is built only for the workouts on this page.
    let page = paginate(found, p, s.cfg.page_size)?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|w| {
            // Without data_fields Withings answers `data: null`.
            let data = if has_fields { workout_data_json(&w.data(user), &f) } else { Value::Null };
            json!({
                "id": w.id,
                "category": w.category,
                "timezone": user.tz_on(w.date).name(),
                "model": w.device.model.id,
                "attrib": w.attrib,
                "startdate": w.start,
                "enddate": w.end,
                "date": w.date.format("%Y-%m-%d").to_string(),
                "deviceid": w.device.deviceid,
                "data": data,
                "modified": w.modified,
            })
        })
        .collect();
    Ok(ok(&json_page("series", items, page.more, page.offset)))
}

// ---- sleep get ----

/// Reads one vital (hr, rr, ...) out of a minute of a sleep segment.
type VitalPick<'a> = dyn Fn(&sleep::Vitals) -> Option<i64> + 'a;

fn sleep_get(s: &State, user: &User, p: &Params, now: i64) -> Result<Reply, Reply> {
    let start = int_param(p, "startdate")?.ok_or_else(|| invalid("startdate", "is required"))?;
    let end = int_param(p, "enddate")?.ok_or_else(|| invalid("enddate", "is required"))?;
    if end < start {
        return Err(invalid("enddate", "is before startdate"));
    }
    let (lo, hi) = epoch_bounds(s, user, now);
    // [start, end): enddate inclusive, at most the first 24 hours after startdate.
    let end = end.saturating_add(1).min(start.saturating_add(86_400)).clamp(lo, hi);
    let start = start.clamp(lo, hi);
    let f = fields(p, &[]);
    let sessions = sleep::sessions_between(
        &s.world,
        user,
        user.local_date(start) - Days::days(1),
        user.local_date(end) + Days::days(1),
        now,
    );
    let mut segments: Vec<(u64, Value)> = Vec::new();
    for sess in &sessions {
        for (i, seg) in sess.segments.iter().enumerate() {
            if seg.start < start || seg.start >= end {
                continue;
            }
            let id = sess.device.deviceid.as_deref();
            let mut m = serde_json::Map::new();
            m.insert("startdate".into(), json!(seg.start));
            m.insert("state".into(), json!(seg.state));
            m.insert("enddate".into(), json!(seg.end));
            m.insert("model".into(), json!(sess.device.model.name));
            m.insert("model_id".into(), json!(sess.device.model.id));
            m.insert("hash_deviceid".into(), json!(id));
            if !f.is_empty() {
                let vitals = sess.vitals(user, i);
                let series = |pick: &VitalPick| -> Option<Value> {
                    let map: serde_json::Map<String, Value> =
                        vitals.iter().filter_map(|v| pick(v).map(|x| (v.t.to_string(), json!(x)))).collect();
                    (!map.is_empty()).then_some(Value::Object(map))
                };
                let mat = sess.summary_model == 32;
                let wanted: [(&str, &VitalPick); 5] = [
                    ("hr", &|v| Some(v.hr)),
                    ("rr", &|v| Some(v.rr)),
                    ("snoring", &|v| mat.then_some(v.snoring)),
                    ("sdnn_1", &|v| v.hrv.map(|h| h.1)),
                    ("rmssd", &|v| v.hrv.map(|h| h.0)),
                ];
                for (name, pick) in wanted {
                    if f.contains(name)
                        && let Some(v) = series(pick)
                    {
                        m.insert(name.into(), v);
                    }
                }
            }
            segments.push((hash(&[s.world.seed, seg.start as u64]), Value::Object(m)));
        }
    }
    // Withings does not sort the segments; neither do we (but we are deterministic about it).
    segments.sort_by_key(|(k, _)| *k);
    let model = sessions.first().map(|x| x.summary_model).unwrap_or(if user.sleep_mat.is_some() { 32 } else { 16 });
    let series: Vec<Value> = segments.into_iter().map(|(_, v)| v).collect();
    Ok(ok(&json!({"series": series, "model": model})))
}

// ---- sleep getsummary ----

/// What getsummary returns without `data_fields` (observed on real accounts).
const SUMMARY_DEFAULT_FIELDS: &[&str] = &[
    "wakeupduration",
    "wakeupcount",
    "durationtosleep",
    "remsleepduration",
    "durationtowakeup",
    "total_timeinbed",
    "total_sleep_time",
    "sleep_efficiency",
    "sleep_latency",
    "wakeup_latency",
    "waso",
    "nb_rem_episodes",
    "out_of_bed_count",
    "lightsleepduration",
    "deepsleepduration",
];

fn summary_json(sess: &Session, user: &User, f: &HashSet<&str>, now: i64) -> Value {
    let x = sess.summary(user, now);
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        if f.contains(k) && !v.is_null() {
            m.insert(k.to_string(), v);
        }
    };
    put("wakeupduration", json!(x.wakeupduration));
    put("wakeupcount", json!(x.wakeupcount));
    put("durationtosleep", json!(x.sleep_latency));
    put("remsleepduration", json!(x.remsleepduration));
    put("durationtowakeup", json!(x.wakeup_latency));
    put("total_timeinbed", json!(x.total_timeinbed));
    put("total_sleep_time", json!(x.total_sleep_time));
    put("sleep_efficiency", json!(x.sleep_efficiency));
    put("sleep_latency", json!(x.sleep_latency));
    put("wakeup_latency", json!(x.wakeup_latency));
    put("waso", json!(x.waso));
    put("nb_rem_episodes", json!(x.nb_rem_episodes));
    put("out_of_bed_count", json!(x.out_of_bed_count));
    put("lightsleepduration", json!(x.lightsleepduration));
    put("deepsleepduration", json!(x.deepsleepduration));
    put("hr_average", json!(x.hr_average));
    put("hr_min", json!(x.hr_min));
    put("hr_max", json!(x.hr_max));
    put("rr_average", json!(x.rr_average));
    put("rr_min", json!(x.rr_min));
    put("rr_max", json!(x.rr_max));
    put("breathing_disturbances_intensity", json!(x.breathing_disturbances_intensity));
    put("apnea_hypopnea_index", json!(x.apnea_hypopnea_index));
    put("snoring", json!(x.snoring));
    put("snoringepisodecount", json!(x.snoringepisodecount));
    put("sleep_score", json!(x.sleep_score));
    put("rmssd_start_avg", json!(x.rmssd_start_avg));
    put("rmssd_end_avg", json!(x.rmssd_end_avg));
    let events: serde_json::Map<String, Value> = x.night_events.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    put("night_events", Value::Object(events));
    Value::Object(m)
}

fn sleep_getsummary(s: &State, user: &User, p: &Params, now: i64) -> Result<Reply, Reply> {
    let (from, to, lastupdate) = ymd_or_lastupdate(s, p, user, now, 2)?;
    let f = fields(p, SUMMARY_DEFAULT_FIELDS);
    let mut sessions: Vec<Session> = sleep::sessions_between(&s.world, user, from, to, now)
        .into_iter()
        .filter(|x| lastupdate.is_none_or(|lu| x.modified(now) > lu))
        .collect();
    // Newest first, as Withings lists them.
    sessions.sort_by_key(|x| std::cmp::Reverse(x.start));
    let page = paginate(sessions, p, s.cfg.page_size)?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|x| {
            json!({
                "id": x.id,
                "timezone": user.tz_at(x.end).name(),
                "model": x.summary_model,
                "model_id": x.device.model.id,
                "hash_deviceid": x.device.deviceid,
                "startdate": x.start,
                "enddate": x.end,
                "date": x.date.format("%Y-%m-%d").to_string(),
                "data": summary_json(x, user, &f, now),
                "created": x.created,
                "modified": x.modified(now),
            })
        })
        .collect();
    Ok(ok(&json_page("series", items, page.more, page.offset)))
}

// ---- heart list ----

fn heart_list(s: &State, user: &User, p: &Params, now: i64) -> Result<Reply, Reply> {
    let (lo, hi) = epoch_bounds(s, user, now);
    let from = int_param(p, "startdate")?.unwrap_or(lo).clamp(lo, hi);
    let to = int_param(p, "enddate")?.unwrap_or(now).clamp(lo, hi);
    let first = user.local_date(from);
    let last = user.local_date(to.min(now));
    let mut items = Vec::new();
    for d in days(first, last).collect::<Vec<_>>().into_iter().rev() {
        if let Some(e) = ecg_on(&s.world, user, d).filter(|e| e.modified <= now && e.timestamp >= from && e.timestamp <= to) {
            items.push(json!({
                "deviceid": e.device.deviceid,
                "model": e.device.model.id,
                "ecg": {"signalid": e.signalid, "afib": e.afib},
                "heart_rate": e.heart_rate,
                "timestamp": e.timestamp,
                "modified": e.modified,
            }));
        }
    }
    let page = paginate(items, p, s.cfg.page_size)?;
    Ok(ok(&json_page("series", page.items, page.more, page.offset)))
}

// ---- getdevice ----

fn getdevice(s: &State, user: &User, now: i64) -> Reply {
    let first = user.day_start(s.world.history_start) + 8 * 3600;
    let mut devices: Vec<Value> = user
        .devices()
        .into_iter()
        .map(|d| {
            json!({
                "type": d.model.device_type,
                "battery": d.battery,
                "model": d.model.name,
                "model_id": d.model.id,
                "timezone": user.tz_at(now).name(),
                "first_session_date": first,
                "last_session_date": now.max(first),
                "deviceid": d.deviceid,
                "hash_deviceid": d.deviceid,
            })
        })
        .collect();
    if user.ghost_sleep_device
        && let Some(mat) = &user.sleep_mat
    {
        // Seen on real accounts: the Sleep Analyzer a second time, model 13 with no name.
        devices.push(json!({
            "type": "Sleep Monitor",
            "battery": mat.battery,
            "model": "",
            "model_id": 13,
            "timezone": user.tz_at(now).name(),
            "first_session_date": first,
            "last_session_date": null,
            "deviceid": mat.deviceid,
            "hash_deviceid": mat.deviceid,
        }));
    }
    ok(&json!({"devices": devices}))
}
