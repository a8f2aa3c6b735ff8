//! Vital's REST routes for the Withings subset: users, connected providers, refresh and the
//! data reads, with Vital's status codes and error bodies (`{"detail": ...}`; parameter
//! errors are 422 with FastAPI's `[{loc, msg, type}]`).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::jobs::InboxEntry;
use super::store::Created;
use super::{Service, ServiceUser};
use crate::credentials::{UserRecord, UserStatus};

/// An answer other than 2xx, in Vital's shape.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: Value,
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, body: Value) -> ApiError {
        ApiError { status, body, headers: Vec::new() }
    }
    /// 422: a parameter (`loc`, e.g. `["path", "user_id"]`) does not validate.
    pub fn invalid(loc: &[&str], msg: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"detail": [{"loc": loc, "msg": msg.into(), "type": "value_error"}]}),
        )
    }
    pub fn not_found(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, json!({"detail": msg.into()}))
    }
    pub fn bad_request(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, json!({"detail": msg.into()}))
    }
    /// 500 without internals; the cause goes to the log.
    pub fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "{what}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, json!({"detail": "Internal error"}))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body)).into_response();
        for (k, v) in self.headers {
            r.headers_mut().insert(k, v);
        }
        r
    }
}

impl From<super::store::StoreError> for ApiError {
    fn from(e: super::store::StoreError) -> ApiError {
        ApiError::internal("service store", e)
    }
}

/// Every `/v2` route: `X-Vital-API-Key` must be one of the configured keys (compared as
/// SHA-256 digests, in constant time).
pub async fn require_api_key(State(s): State<Arc<Service>>, req: Request, next: Next) -> Response {
    let given = req.headers().get("x-vital-api-key").map(|v| v.as_bytes()).unwrap_or_default();
    let digest = Sha256::digest(given);
    let mut ok = false;
    for key in &s.cfg.api_keys {
        let want = Sha256::digest(key.expose().as_bytes());
        let diff = digest.iter().zip(want.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        ok |= diff == 0 && !given.is_empty();
    }
    if !ok {
        return ApiError::new(StatusCode::UNAUTHORIZED, json!({"detail": "Invalid or missing X-Vital-API-Key"})).into_response();
    }
    next.run(req).await
}

/// A path's Vital user id: a UUID (anything else is refused before any storage is touched).
pub fn parse_user_id(raw: &str) -> Result<String, ApiError> {
    if raw.len() > 64 {
        return Err(ApiError::invalid(&["path", "user_id"], "Input should be a valid UUID"));
    }
    uuid::Uuid::try_parse(raw)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| ApiError::invalid(&["path", "user_id"], "Input should be a valid UUID"))
}

/// The user `raw` names, not deleted; 404 otherwise.
pub async fn known_user(s: &Service, raw: &str) -> Result<ServiceUser, ApiError> {
    let id = parse_user_id(raw)?;
    match s.user(&id).await? {
        Some(u) if u.deleted_at.is_none() => Ok(u),
        _ => Err(ApiError::not_found("User not found")),
    }
}

const LOGO: &str = "https://storage.googleapis.com/vital-assets/withings.png";

fn provider() -> Value {
    json!({"name": "Withings", "slug": "withings", "logo": LOGO})
}

fn at(epoch: i64) -> String {
    chrono::DateTime::<Utc>::from_timestamp(epoch, 0).unwrap_or_default().to_rfc3339()
}

/// `ClientFacingUser`.
fn user_json(s: &Service, u: &ServiceUser, record: Option<&UserRecord>) -> Value {
    let connected: Vec<Value> =
        record.iter().map(|r| json!({"provider": provider(), "created_on": at(r.created_at), "source": provider()})).collect();
    json!({
        "user_id": u.user_id,
        "team_id": s.app.team_id,
        "client_user_id": u.client_user_id,
        "created_on": u.created_on.to_rfc3339(),
        "connected_sources": connected,
        "fallback_time_zone": null,
        "fallback_birth_date": null,
        "ingestion_start": null,
        "ingestion_end": null,
    })
}

async fn record_of(s: &Service, u: &ServiceUser) -> Result<Option<UserRecord>, ApiError> {
    s.engine.credentials().get(&u.client_user_id).await.map_err(|e| ApiError::internal("credentials store", e))
}

#[derive(Debug, Deserialize)]
pub struct CreateUser {
    pub client_user_id: String,
}

/// `POST /v2/user`: creates the user (409 with the existing id when the client user id is
/// taken).
pub async fn create_user(
    State(s): State<Arc<Service>>,
    body: Result<Json<CreateUser>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::invalid(&["body"], e.body_text()))?;
    crate::credentials::validate_user_id(&body.client_user_id)
        .map_err(|e| ApiError::invalid(&["body", "client_user_id"], e.to_string()))?;
    // The id a linked record already has (a team that moved its users' ids), else derived.
    let existing = s.engine.credentials().get(&body.client_user_id).await.map_err(|e| ApiError::internal("credentials", e))?;
    let user_id = existing
        .as_ref()
        .map(UserRecord::vital_id)
        .unwrap_or_else(|| crate::credentials::derived_vital_user_id(&body.client_user_id));
    let user =
        ServiceUser { user_id: user_id.clone(), client_user_id: body.client_user_id, created_on: Utc::now(), deleted_at: None };
    let key = s.store.key(&["users", &format!("{user_id}.json")]);
    match s.store.create(&key, &user).await? {
        Created::Yes => Ok(Json(user_json(&s, &user, existing.as_ref()))),
        Created::AlreadyThere => {
            let current: Option<ServiceUser> = s.store.get(&key).await?;
            let created_on = current.map(|c| c.created_on.to_rfc3339()).unwrap_or_default();
            Err(ApiError::new(
                StatusCode::CONFLICT,
                json!({"detail": {
                    "error_type": "INVALID_REQUEST",
                    "error_message": "Client user id already exists.",
                    "user_id": user_id,
                    "created_on": created_on,
                }}),
            ))
        }
    }
}

pub async fn get_user(State(s): State<Arc<Service>>, Path(user_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let u = known_user(&s, &user_id).await?;
    let record = record_of(&s, &u).await?;
    Ok(Json(user_json(&s, &u, record.as_ref())))
}

pub async fn resolve_user(State(s): State<Arc<Service>>, Path(client_user_id): Path<String>) -> Result<Json<Value>, ApiError> {
    crate::credentials::validate_user_id(&client_user_id)
        .map_err(|e| ApiError::invalid(&["path", "client_user_id"], e.to_string()))?;
    let record = s.engine.credentials().get(&client_user_id).await.map_err(|e| ApiError::internal("credentials", e))?;
    let id =
        record.as_ref().map(UserRecord::vital_id).unwrap_or_else(|| crate::credentials::derived_vital_user_id(&client_user_id));
    let u = known_user(&s, &id).await?;
    Ok(Json(user_json(&s, &u, record.as_ref())))
}

/// `GET /v2/user/providers/{user_id}`: `{"providers": [ClientFacingProviderWithStatus]}`.
pub async fn providers(State(s): State<Arc<Service>>, Path(user_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let u = known_user(&s, &user_id).await?;
    let providers: Vec<Value> = record_of(&s, &u)
        .await?
        .iter()
        .map(|r| {
            let (status, error) = match r.status {
                UserStatus::Active => ("connected", Value::Null),
                UserStatus::NeedsReauth => (
                    "error",
                    json!({"error_type": "token_refresh_failed", "error_message": r.status_reason.clone().unwrap_or_default(), "errored_at": at(r.updated_at)}),
                ),
                UserStatus::Revoked => (
                    "error",
                    json!({"error_type": "deregistered_per_provider", "error_message": r.status_reason.clone().unwrap_or_default(), "errored_at": at(r.updated_at)}),
                ),
            };
            json!({
                "name": "Withings", "slug": "withings", "logo": LOGO,
                "created_on": at(r.created_at),
                "status": status,
                "external_user_id": r.withings_userid,
                "error_details": error,
                "resource_availability": {},
            })
        })
        .collect();
    Ok(Json(json!({ "providers": providers })))
}

/// Revokes the app's access at Withings (which also drops its subscriptions). A failure is
/// logged: the record is gone here either way, and Withings tokens expire.
async fn revoke_at_withings(s: &Service, record: &UserRecord) {
    if let Err(e) = s.engine.client().revoke_user(&record.withings_userid).await {
        tracing::warn!(user_id = %record.user_id, error = %e, "revoking at Withings failed; the credentials are deleted anyway");
    }
}

/// `DELETE /v2/user/{user_id}/withings`: disconnects Withings (revoke, forget the tokens);
/// the user and their data stay.
pub async fn deregister_provider(
    State(s): State<Arc<Service>>,
    Path((user_id, provider)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let u = known_user(&s, &user_id).await?;
    if provider != "withings" {
        return Err(ApiError::invalid(&["path", "provider"], "Only 'withings' is served here"));
    }
    let Some(record) = record_of(&s, &u).await? else {
        return Err(ApiError::not_found("Provider not connected"));
    };
    revoke_at_withings(&s, &record).await;
    s.engine.credentials().delete(&u.client_user_id).await.map_err(|e| ApiError::internal("credentials", e))?;
    s.reload_userids().await;
    Ok(Json(json!({"success": true})))
}

/// A pending erasure, run by the leader when due.
#[derive(Debug, Serialize, Deserialize)]
pub struct PendingErasure {
    pub user_id: String,
    pub client_user_id: String,
    pub due_at: chrono::DateTime<Utc>,
}

/// `DELETE /v2/user/{user_id}`: stops syncing now (revoke, tokens deleted) and erases the
/// person's data after the configured grace.
pub async fn delete_user(State(s): State<Arc<Service>>, Path(user_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let mut u = known_user(&s, &user_id).await?;
    if let Some(record) = record_of(&s, &u).await? {
        revoke_at_withings(&s, &record).await;
        s.engine.credentials().delete(&u.client_user_id).await.map_err(|e| ApiError::internal("credentials", e))?;
        s.reload_userids().await;
    }
    let grace = chrono::Duration::from_std(s.cfg.erasure_grace).unwrap_or_default();
    let pending =
        PendingErasure { user_id: u.user_id.clone(), client_user_id: u.client_user_id.clone(), due_at: Utc::now() + grace };
    s.store.put(&s.store.key(&["erase", &format!("{}.json", u.user_id)]), &pending).await?;
    u.deleted_at = Some(Utc::now());
    s.store.put(&s.store.key(&["users", &format!("{}.json", u.user_id)]), &u).await?;
    s.wake.notify_one();
    Ok(Json(json!({"success": true})))
}

#[derive(Debug, Default, Deserialize)]
pub struct RefreshParams {
    pub timeout: Option<String>,
}

/// Refresh calls of one user in the last hour (kept in the lake: across restarts and
/// instances).
#[derive(Debug, Default, Serialize, Deserialize)]
struct RefreshLog {
    at: Vec<i64>,
}

/// The sources a refresh covers, as Vital names them.
fn sources(s: &Service) -> Vec<String> {
    let mut out: Vec<String> = s
        .engine
        .config()
        .resources
        .iter()
        .map(|r| match r.schema().kind {
            crate::schema::Kind::Summary => format!("withings/{}", r.as_str()),
            _ => format!("withings/vitals/{}", r.as_str()),
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `POST /v2/user/refresh/{user_id}`: queues (or joins) a live job for the user and waits up
/// to `timeout` seconds (5..60, default 10) for it. 8 a user per rolling hour; 429 with
/// `Retry-After` beyond.
pub async fn refresh(
    State(s): State<Arc<Service>>,
    Path(user_id): Path<String>,
    Query(p): Query<RefreshParams>,
) -> Result<Response, ApiError> {
    let u = known_user(&s, &user_id).await?;
    let timeout = match p.timeout.as_deref() {
        None => 10,
        // Vital's SDK sends a float (`10.0`).
        Some(t) => t
            .parse::<f64>()
            .ok()
            .filter(|t| (5.0..=60.0).contains(t))
            .map(|t| t.round() as u64)
            .ok_or_else(|| ApiError::invalid(&["query", "timeout"], "Input should be a number from 5 to 60"))?,
    };
    let record = record_of(&s, &u).await?;
    let Some(record) = record.filter(|r| r.status == UserStatus::Active) else {
        let body = json!({"success": false, "user_id": u.user_id, "error": "Withings is not connected for this user", "failed_sources": []});
        return Ok((StatusCode::BAD_REQUEST, Json(body)).into_response());
    };
    // The rolling-hour count, read and written under this instance's lock.
    {
        let _guard = s.refresh_lock.lock().await;
        let key = s.store.key(&["refresh", &format!("{}.json", u.user_id)]);
        let now = Utc::now().timestamp();
        let mut log: RefreshLog = s.store.get(&key).await?.unwrap_or_default();
        log.at.retain(|t| *t > now - 3600);
        if log.at.len() >= s.cfg.refreshes_per_hour as usize {
            let oldest = log.at.iter().min().copied().unwrap_or(now);
            let retry = (oldest + 3600 - now).max(1);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"detail": format!("Refresh is limited to {} calls per user per hour", s.cfg.refreshes_per_hour)}),
            );
            e.headers.push((header::RETRY_AFTER, HeaderValue::from(retry)));
            return Err(e);
        }
        log.at.push(now);
        s.store.put(&key, &log).await?;
    }
    let mut done = s.done.subscribe();
    let asked = Utc::now();
    s.enqueue(&InboxEntry::Refresh { received_at: asked, user_id: record.user_id.clone() }).await?;
    let all = sources(&s);
    let wait = async {
        loop {
            match done.recv().await {
                Ok(d) if d.user_id == record.user_id && d.at >= asked => return Some(d.ok),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    };
    let (refreshed, in_progress, failed) = match tokio::time::timeout(Duration::from_secs(timeout), wait).await {
        Ok(Some(true)) => (all, vec![], vec![]),
        Ok(Some(false)) => (vec![], vec![], all),
        _ => (vec![], all, vec![]),
    };
    let status = if in_progress.is_empty() { StatusCode::OK } else { StatusCode::ACCEPTED };
    let body = json!({"success": true, "user_id": u.user_id, "refreshed_sources": refreshed, "in_progress_sources": in_progress, "failed_sources": failed});
    Ok((status, Json(body)).into_response())
}

/// The query of a data read, as sent (the reader validates it).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct ReadParams {
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub next_cursor: Option<String>,
    pub cursor: Option<String>,
    pub provider: Option<String>,
}

impl From<ReadParams> for super::read::ReadQuery {
    fn from(p: ReadParams) -> super::read::ReadQuery {
        super::read::ReadQuery {
            start_date: p.start_date,
            end_date: p.end_date,
            next_cursor: p.next_cursor,
            provider: p.provider,
            cursor: p.cursor,
        }
    }
}

impl From<super::read::ReadError> for ApiError {
    fn from(e: super::read::ReadError) -> ApiError {
        if e.status() >= 500 {
            tracing::error!(error = %e, "a data read failed");
        }
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError::new(status, e.body())
    }
}

fn who(u: &ServiceUser) -> super::read::Who<'_> {
    super::read::Who { user_id: &u.client_user_id, vital_user_id: &u.user_id }
}

/// `GET /v2/summary/{activity|sleep|body|workouts}/{user_id}`.
pub async fn summary(
    State(s): State<Arc<Service>>,
    Path((kind, user_id)): Path<(String, String)>,
    Query(q): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let u = known_user(&s, &user_id).await?;
    Ok(Json(s.reader.summary(who(&u), &kind, &q.into()).await?))
}

/// `GET /v2/timeseries/{user_id}/{resource}/grouped`.
pub async fn grouped(
    State(s): State<Arc<Service>>,
    Path((user_id, resource)): Path<(String, String)>,
    Query(q): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let u = known_user(&s, &user_id).await?;
    Ok(Json(s.reader.grouped(who(&u), &resource, &q.into()).await?))
}

/// Whether a header map carries a cookie `name`, and its value.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
