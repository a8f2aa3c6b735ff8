//! The link flow: `POST /v2/link/token` (API key) makes a single-use token, of which only a
//! SHA-256 is stored (`_service/link/<hash>.json`); `GET /link?token=` (the `link_web_url`)
//! sets a cookie holding a random nonce and sends the browser to Withings authorize with a
//! `state` that binds the token to that nonce (HMAC under the signing key). Opening it does
//! not consume the token (link unfurlers prefetch URLs). `GET /link/callback` checks state
//! and cookie, consumes the token exactly once (a create-only `<hash>.consumed`), exchanges
//! the code, stores the credentials, subscribes notifications, queues the backfill, emits
//! `provider.connection.created`, and ends on the app's `redirect_url` with Vital's
//! `state=success` or `state=error&error_type=...`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Service;
use super::api::{ApiError, cookie, known_user};
use super::jobs::InboxEntry;
use super::store::Created;
use crate::link::{Callback, LinkError, LinkRequest};

/// A link token as stored (the token itself never is).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkToken {
    pub user_id: String,
    pub client_user_id: String,
    pub redirect_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    pub user_id: String,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub redirect_url: Option<String>,
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// `POST /v2/link/token`.
pub async fn create_token(
    State(s): State<Arc<Service>>,
    body: Result<Json<TokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::invalid(&["body"], e.body_text()))?;
    let user = match super::api::parse_user_id(&body.user_id) {
        Ok(id) => known_user(&s, &id).await?,
        Err(_) => return Err(ApiError::invalid(&["body", "user_id"], "Input should be a valid UUID")),
    };
    if let Some(p) = body.provider.as_deref().filter(|p| *p != "withings") {
        return Err(ApiError::bad_request(format!(
            "Provider '{}' is not served here: only 'withings'",
            p.chars().take(40).collect::<String>()
        )));
    }
    if let Some(r) = &body.redirect_url
        && !s.cfg.redirect_allowed(r)
    {
        return Err(ApiError::invalid(&["body", "redirect_url"], "redirect_url is not on this service's allow-list"));
    }
    let token = random(32);
    let now = Utc::now();
    let expires_at = now + chrono::Duration::from_std(s.cfg.link_token_ttl).unwrap_or_default();
    let record = LinkToken {
        user_id: user.user_id.clone(),
        client_user_id: user.client_user_id.clone(),
        redirect_url: body.redirect_url.clone(),
        created_at: now,
        expires_at,
    };
    s.store.put(&s.store.key(&["link", &format!("{}.json", token_hash(&token))]), &record).await?;
    let link_web_url = format!("{}/link?token={token}", s.public_url());
    Ok(Json(json!({"link_token": token, "link_web_url": link_web_url, "expires_at": expires_at.to_rfc3339()})))
}

fn mac(s: &Service, hash: &str, nonce: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(s.cfg.signing_key.expose().as_bytes()).expect("any key length");
    m.update(b"withings-lake link state\0");
    m.update(hash.as_bytes());
    m.update(b"\0");
    m.update(nonce.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

fn cookie_name(hash: &str) -> String {
    format!("wl_link_{}", &hash[..16])
}

/// A page for a browser that cannot be sent anywhere trusted.
fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head><body><h1>{title}</h1><p>{text}</p></body></html>"
    );
    (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

/// The end of a link on the app's `redirect_url` (a small page of ours without one).
fn finish(redirect_url: Option<&str>, error: Option<(&str, &str)>) -> Response {
    let Some(r) = redirect_url.and_then(|r| url::Url::parse(r).ok()) else {
        return match error {
            None => page(StatusCode::OK, "Withings is connected", "You can close this window."),
            Some((t, m)) => page(StatusCode::BAD_REQUEST, "Withings was not connected", &format!("{t}: {m}")),
        };
    };
    let mut to = r;
    match error {
        None => {
            to.query_pairs_mut().append_pair("state", "success").append_pair("provider", "withings");
        }
        Some((t, m)) => {
            to.query_pairs_mut()
                .append_pair("state", "error")
                .append_pair("error_type", t)
                .append_pair("error", m)
                .append_pair("provider", "withings");
        }
    }
    let mut resp = StatusCode::FOUND.into_response();
    resp.headers_mut().insert(header::LOCATION, HeaderValue::from_str(to.as_str()).expect("a URL is a header value"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[derive(Debug, Deserialize)]
pub struct PageParams {
    pub token: Option<String>,
}

async fn token_record(s: &Service, token_hash: &str) -> Result<Option<LinkToken>, ApiError> {
    Ok(s.store.get(&s.store.key(&["link", &format!("{token_hash}.json")])).await?)
}

async fn consumed(s: &Service, hash: &str) -> Result<bool, ApiError> {
    Ok(s.store.exists(&s.store.key(&["link", &format!("{hash}.consumed")])).await?)
}

/// `GET /link?token=`: the page `link_web_url` opens. Sends the browser to Withings with a
/// cookie-bound `state`; never consumes the token.
pub async fn page_handler(s: &Service, token: &str) -> Result<Response, ApiError> {
    if token.is_empty() || token.len() > 100 {
        return Ok(page(StatusCode::BAD_REQUEST, "This link is not valid", "invalid_token"));
    }
    let hash = token_hash(token);
    let Some(record) = token_record(s, &hash).await? else {
        return Ok(page(StatusCode::BAD_REQUEST, "This link is not valid", "invalid_token"));
    };
    if record.expires_at < Utc::now() {
        return Ok(finish(record.redirect_url.as_deref(), Some(("token_expired", "The link token has expired"))));
    }
    if consumed(s, &hash).await? {
        return Ok(finish(record.redirect_url.as_deref(), Some(("token_consumed", "The link token was already used"))));
    }
    let nonce = random(16);
    let state = format!("{hash}.{}", mac(s, &hash, &nonce));
    let mut url = url::Url::parse(&s.app.authorize_url).map_err(|e| ApiError::internal("authorize URL", e))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &s.app.client_id)
        .append_pair("state", &state)
        .append_pair("scope", &s.app.scopes)
        .append_pair("redirect_uri", &s.callback_url());
    let secure = if s.public_url().starts_with("https://") { "; Secure" } else { "" };
    let max_age = s.cfg.link_token_ttl.as_secs().min(3600);
    let set_cookie = format!("{}={nonce}; Path=/link; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}", cookie_name(&hash));
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Connect Withings</title></head><body><p><a href=\"{0}\">Continue to Withings</a></p></body></html>",
        url.as_str().replace('&', "&amp;").replace('"', "&quot;")
    );
    let mut resp = (StatusCode::SEE_OTHER, Html(html)).into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_str(url.as_str()).map_err(|e| ApiError::internal("authorize URL", e))?);
    h.insert(header::SET_COOKIE, HeaderValue::from_str(&set_cookie).expect("cookie text"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Ok(resp)
}

pub async fn page_route(State(s): State<Arc<Service>>, Query(p): Query<PageParams>) -> Response {
    match page_handler(&s, p.token.as_deref().unwrap_or("")).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
}

/// `GET /link/callback`: where Withings sends the browser back.
pub async fn callback(State(s): State<Arc<Service>>, headers: HeaderMap, Query(p): Query<CallbackParams>) -> Response {
    match complete(&s, &headers, p).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn complete(s: &Arc<Service>, headers: &HeaderMap, p: CallbackParams) -> Result<Response, ApiError> {
    let forged = || {
        Ok(page(
            StatusCode::BAD_REQUEST,
            "This link cannot be completed",
            "The request does not belong to this browser's link (state or cookie missing or wrong). Open the link again.",
        ))
    };
    let Some(state) = p.state.as_deref().filter(|v| v.len() <= 200) else { return forged() };
    let Some((hash, sig)) = state.split_once('.') else { return forged() };
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return forged();
    }
    let Some(nonce) = cookie(headers, &cookie_name(hash)) else { return forged() };
    let want = mac(s, hash, nonce);
    let same = want.len() == sig.len() && want.bytes().zip(sig.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
    if !same {
        return forged();
    }
    let Some(record) = token_record(s, hash).await? else {
        return Ok(page(StatusCode::BAD_REQUEST, "This link is not valid", "invalid_token"));
    };
    let redirect = record.redirect_url.as_deref();
    if record.expires_at < Utc::now() {
        return Ok(finish(redirect, Some(("token_expired", "The link token has expired"))));
    }
    if p.error.is_some() {
        // Denied at Withings: the token stays usable for another try.
        return Ok(finish(redirect, Some(("user_cancelled", "The Withings authorization was not granted"))));
    }
    let Some(code) = p.code.filter(|c| !c.is_empty() && c.len() <= 512) else {
        return Ok(finish(redirect, Some(("provider_api_error", "Withings sent no authorization code"))));
    };
    // Exactly once, across instances: the create-only marker decides.
    let marker = s.store.key(&["link", &format!("{hash}.consumed")]);
    if s.store.create(&marker, &json!({"at": Utc::now()})).await? == Created::AlreadyThere {
        return Ok(finish(redirect, Some(("token_consumed", "The link token was already used"))));
    }
    let user = match s.user(&record.user_id).await? {
        Some(u) if u.deleted_at.is_none() => u,
        _ => return Ok(finish(redirect, Some(("invalid_token", "The user of this link no longer exists")))),
    };
    let request = LinkRequest {
        user_id: user.client_user_id.clone(),
        url: String::new(),
        state: state.to_string(),
        redirect_uri: s.callback_url(),
        vital_user_id: Some(user.user_id.clone()),
    };
    let cb = Callback { code: Some(code), state: Some(state.to_string()), error: None };
    let store = s.engine.credentials().clone();
    let (record_out, _) = match request.complete(s.engine.client(), &store, cb, false, None).await {
        Ok(r) => r,
        Err(LinkError::AccountTaken { .. } | LinkError::OtherAccount { .. } | LinkError::VitalIdTaken { .. }) => {
            return Ok(finish(
                redirect,
                Some(("duplicate_connection", "This Withings account is already connected to another user")),
            ));
        }
        Err(e) => {
            tracing::warn!(user_id = %user.client_user_id, error = %e, "link: completing the authorization failed");
            return Ok(finish(redirect, Some(("provider_api_error", "Withings did not complete the authorization"))));
        }
    };
    let missing: Vec<&String> = s.app.required_scopes.iter().filter(|r| !record_out.scopes.contains(r)).collect();
    if !missing.is_empty() {
        // Not a usable connection: the tokens are not kept.
        let _ = s.engine.credentials().delete(&record_out.user_id).await;
        let m = format!(
            "Withings granted too few scopes (missing {})",
            missing.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(",")
        );
        return Ok(finish(redirect, Some(("required_scopes_not_granted", &m))));
    }
    s.reload_userids().await;
    tracing::info!(user_id = %record_out.user_id, withings_userid = %record_out.withings_userid, "linked through a link token");
    // The backfill is durable before the browser leaves; subscriptions and the connection
    // event follow in the background (neither decides the link).
    s.enqueue(&InboxEntry::Backfill { received_at: Utc::now(), user_id: record_out.user_id.clone() }).await?;
    let svc = s.clone();
    let rec = record_out.clone();
    tokio::spawn(async move {
        if svc.cfg.subscribe {
            super::jobs::reconcile_user(&svc, &rec).await;
        }
        if let Some(cfg) = svc.engine.events() {
            match crate::events::announce_link(cfg, svc.engine.lake(), &rec).await {
                Ok(_) => {
                    svc.metrics.events.get_or_create(&super::metrics::ResultLabels { result: "enqueued".into() }).inc();
                }
                Err(e) => {
                    tracing::error!(user_id = %rec.user_id, error = %e, "provider.connection.created could not be enqueued")
                }
            }
        }
    });
    Ok(finish(redirect, None))
}
