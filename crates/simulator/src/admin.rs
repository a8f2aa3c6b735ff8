//! Admin endpoints under `/_sim/` (not part of Withings): users with ready refresh tokens, the
//! simulated clock, fault injection and request statistics.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use std::collections::HashMap;

use axum::extract::{Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::State;
use super::faults::FaultSpec;
use super::notify::deliver_until;

fn bad(msg: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg.into()}))).into_response()
}

/// `GET /_sim/users[?offset=N&limit=M]`: the synthetic users, as if linked earlier (all of
/// them by default; a slice of a large world with offset/limit).
pub(crate) async fn users(AxState(s): AxState<Arc<State>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let parse = |name: &str, default: usize| -> Result<usize, String> {
        match q.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("users request: {name} must be a non-negative integer, got '{v}'")),
        }
    };
    let (offset, limit) = match (parse("offset", 0), parse("limit", usize::MAX)) {
        (Ok(o), Ok(l)) => (o, l),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    let now = s.clock.now();
    let tokens = s.tokens.lock().expect("tokens lock");
    let users: Vec<Value> = s
        .world
        .users
        .iter()
        .skip(offset)
        .take(limit)
        .map(|u| {
            let devices: Vec<Value> = u
                .devices()
                .into_iter()
                .chain(u.phone.as_ref())
                .map(|d| {
                    json!({
                        "type": d.model.device_type,
                        "model": d.model.name,
                        "model_id": d.model.id,
                        "source_type": d.source_type().as_str(),
                        "deviceid": d.deviceid,
                    })
                })
                .collect();
            json!({
                "index": u.index,
                "userid": u.userid,
                "timezone": u.tz_at(now).name(),
                "moves": u.moves.map(|(d, tz)| json!({"on": d.to_string(), "timezone": tz.name()})),
                "devices": devices,
                "refresh_token": tokens.latest_refresh(u.index),
                "scope": super::oauth::ALL_SCOPES,
            })
        })
        .collect();
    let total = s.world.users.len();
    Json(json!({"history_start": s.world.history_start.to_string(), "total": total, "users": users})).into_response()
}

fn clock_json(s: &State) -> Value {
    let now = s.clock.now();
    let at = DateTime::<Utc>::from_timestamp(now, 0).expect("valid time").to_rfc3339_opts(SecondsFormat::Secs, true);
    json!({"now": at, "epoch": now, "frozen": s.clock.frozen()})
}

pub(crate) async fn get_clock(AxState(s): AxState<Arc<State>>) -> Json<Value> {
    Json(clock_json(&s))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockRequest {
    /// RFC 3339 instant to move to.
    now: Option<String>,
    /// Epoch seconds to move to.
    epoch: Option<i64>,
    /// Seconds to move forward.
    advance_seconds: Option<i64>,
}

/// `POST /_sim/clock` with one of `now`, `epoch`, `advance_seconds`. Answers once the
/// notifications for the elapsed window have been sent.
pub(crate) async fn set_clock(AxState(s): AxState<Arc<State>>, body: Bytes) -> Response {
    let req: ClockRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad(format!("clock request: {e}")),
    };
    let target = match (req.now, req.epoch, req.advance_seconds) {
        (Some(t), None, None) => match DateTime::parse_from_rfc3339(&t) {
            Ok(t) => t.timestamp(),
            Err(e) => return bad(format!("clock request: now '{t}' is not RFC 3339: {e}")),
        },
        (None, Some(e), None) => e,
        (None, None, Some(a)) if a >= 0 => s.clock.now().saturating_add(a),
        (None, None, Some(_)) => return bad("clock request: advance_seconds must not be negative"),
        _ => return bad("clock request: give exactly one of now, epoch, advance_seconds"),
    };
    // The clock may run a century ahead at most: far enough for any test, and every date
    // stays inside what the calendar code handles.
    let limit = s.clock.now() + 100 * 366 * 86_400;
    if target > limit {
        return bad(format!("clock request: {target} is more than 100 years ahead"));
    }
    if let Err(e) = s.clock.set(target) {
        return bad(e);
    }
    let sent = deliver_until(&s, target).await;
    let mut out = clock_json(&s);
    out["notifications_sent"] = json!(sent);
    Json(out).into_response()
}

pub(crate) async fn list_faults(AxState(s): AxState<Arc<State>>) -> Json<Value> {
    Json(json!({"faults": s.faults.lock().expect("faults lock").list()}))
}

/// `POST /_sim/faults` with a fault spec, or `{"clear": true}`.
pub(crate) async fn add_fault(AxState(s): AxState<Arc<State>>, body: Bytes) -> Response {
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad(format!("fault request is not JSON: {e}")),
    };
    let mut faults = s.faults.lock().expect("faults lock");
    if value.get("clear") == Some(&json!(true)) {
        faults.clear();
    } else {
        let spec: FaultSpec = match serde_json::from_value(value) {
            Ok(spec) => spec,
            Err(e) => return bad(format!("fault request: {e}")),
        };
        if let Err(e) = faults.add(spec) {
            return bad(format!("fault request: {e}"));
        }
    }
    Json(json!({"faults": faults.list()})).into_response()
}

pub(crate) async fn clear_faults(AxState(s): AxState<Arc<State>>) -> Json<Value> {
    let mut faults = s.faults.lock().expect("faults lock");
    faults.clear();
    Json(json!({"faults": faults.list()}))
}

pub(crate) async fn stats(AxState(s): AxState<Arc<State>>) -> Json<Value> {
    let stats = s.stats.lock().expect("stats lock");
    Json(serde_json::to_value(&*stats).expect("stats serialize"))
}
