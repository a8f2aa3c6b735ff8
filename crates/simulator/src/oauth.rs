//! OAuth2 as Withings runs it: authorize (auto-approved), `requesttoken` for both grants with
//! refresh-token rotation and the 8-hour grace, `revoke` signed with a nonce from
//! `v2/signature getnonce`, and the bearer-token check every data call goes through.
//!
//! Rules (as Withings documents its OAuth2): access tokens live 3 hours; every refresh returns a new
//! refresh token; the old one keeps working until the new access token is first used or
//! 8 hours pass; a code lives 30 seconds and works once; a bad code or refresh token is
//! status 503; identical token requests within 10 seconds get 601 with `wait_seconds`.
//! Lifetimes follow the simulated clock; the 10-second rule follows the real one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::State;
use super::api::{Params, Reply, err, int_param, invalid, ok};
use super::rng::{Rng, Stream, mix};
use super::world::World;

pub const ACCESS_TTL: i64 = 3 * 3600;
pub const GRACE: i64 = 8 * 3600;
pub const CODE_TTL: i64 = 30;
pub const NONCE_TTL: i64 = 30 * 60;
pub const REFRESH_TTL: i64 = 365 * 86_400;
pub const ALL_SCOPES: &str = "user.info,user.metrics,user.activity,user.sleepevents";
const KNOWN_SCOPES: &[&str] = &["user.info", "user.metrics", "user.activity", "user.sleepevents"];
pub const INVALID_TOKEN: &str = "XRequestID: Not provided invalid_token: The access token provided is invalid";

#[derive(Debug)]
struct Access {
    user: usize,
    expires: i64,
    scopes: String,
    used: bool,
    /// The refresh token this access token was minted from (dies when this is first used).
    parent: Option<String>,
}

#[derive(Debug, PartialEq)]
enum RefreshState {
    Current,
    /// Rotated out: valid until `until` or until `successor` is first used.
    Grace {
        until: i64,
        successor: String,
    },
}

#[derive(Debug)]
struct Refresh {
    user: usize,
    scopes: String,
    state: RefreshState,
    /// A refresh token lives one year.
    expires: i64,
}

#[derive(Debug)]
struct Code {
    user: usize,
    redirect_uri: String,
    scopes: String,
    expires: i64,
}

/// Every token, code and nonce the simulator has issued.
#[derive(Debug)]
pub struct Tokens {
    seed: u64,
    counter: u64,
    /// Token pairs issued (every 1024th issue purges dead entries).
    issued: u64,
    access: HashMap<String, Access>,
    refresh: HashMap<String, Refresh>,
    codes: HashMap<String, Code>,
    nonces: HashMap<String, i64>,
    /// The newest refresh token of each user (what `/_sim/users` hands out).
    latest: Vec<Option<String>>,
}

impl Tokens {
    /// Every user starts linked, with a refresh token derived from the seed.
    pub fn new(world: &World) -> Tokens {
        let mut t = Tokens {
            seed: world.seed,
            counter: 0,
            issued: 0,
            access: HashMap::new(),
            refresh: HashMap::new(),
            codes: HashMap::new(),
            nonces: HashMap::new(),
            latest: Vec::with_capacity(world.users.len()),
        };
        for u in &world.users {
            let token = Rng::new(world.seed, u.index as u64, 0, Stream::Tokens).hex40();
            let refresh = Refresh { user: u.index, scopes: ALL_SCOPES.into(), state: RefreshState::Current, expires: i64::MAX };
            t.refresh.insert(token.clone(), refresh);
            t.latest.push(Some(token));
        }
        t
    }

    fn mint(&mut self) -> String {
        self.counter += 1;
        Rng::from_parts(&[self.seed, Stream::Tokens as u64, self.counter, 0xACCE55]).hex40()
    }

    /// The user's newest refresh token, `None` once revoked.
    pub fn latest_refresh(&self, user: usize) -> Option<&str> {
        self.latest.get(user).and_then(|t| t.as_deref())
    }

    fn issue(&mut self, user: usize, scopes: &str, parent: Option<String>, now: i64) -> (String, String) {
        self.issued += 1;
        if self.issued.is_multiple_of(1024) {
            self.purge(now);
        }
        let access = self.mint();
        let refresh = self.mint();
        self.access
            .insert(access.clone(), Access { user, expires: now + ACCESS_TTL, scopes: scopes.into(), used: false, parent });
        let record = Refresh { user, scopes: scopes.into(), state: RefreshState::Current, expires: now + REFRESH_TTL };
        self.refresh.insert(refresh.clone(), record);
        self.latest[user] = Some(refresh.clone());
        (access, refresh)
    }

    /// Drops what can never be accepted again, so a long-running simulator stays small.
    fn purge(&mut self, now: i64) {
        self.access.retain(|_, a| a.expires > now);
        self.refresh.retain(|_, r| r.expires > now && !matches!(r.state, RefreshState::Grace { until, .. } if until <= now));
        self.codes.retain(|_, c| c.expires >= now);
        self.nonces.retain(|_, exp| *exp > now);
    }

    fn forget_user(&mut self, user: usize) {
        self.access.retain(|_, a| a.user != user);
        self.refresh.retain(|_, r| r.user != user);
        self.codes.retain(|_, c| c.user != user);
        self.latest[user] = None;
    }
}

fn sign(secret: &str, values: &[&str]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac takes any key");
    mac.update(values.join(",").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn signature_ok(secret: &str, values: &[&str], signature: &str) -> bool {
    let Ok(given) = hex::decode(signature) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac takes any key");
    mac.update(values.join(",").as_bytes());
    mac.verify_slice(&given).is_ok()
}

fn bad_request(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("withings simulator: {msg}\n"))
        .into_response()
}

/// A knob from the query, else from the browser's cookies (a browser "logged into Withings"
/// as someone: a test's cookie jar).
fn knob(q: &HashMap<String, String>, headers: &HeaderMap, name: &str) -> Option<String> {
    q.get(name).cloned().or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
}

/// `GET /oauth2_user/authorize2`: approves at once and redirects to `redirect_uri` with
/// `code` and `state`. Knobs, from the query or else a cookie (the browser's person):
/// `sim_user` (an index or a Withings userid) picks the user, default 0; `sim_deny=1` is the
/// person clicking Deny (`error=access_denied`); `sim_scopes=a,b` grants only those of the
/// requested scopes.
pub(crate) async fn authorize(
    AxState(s): AxState<Arc<State>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if q.get("response_type").map(String::as_str) != Some("code") {
        return bad_request("response_type must be 'code'");
    }
    if q.get("client_id") != Some(&s.cfg.client_id) {
        return bad_request("unknown client_id");
    }
    let Some(state) = q.get("state").filter(|v| !v.is_empty()) else {
        return bad_request("state is required");
    };
    let Some(redirect) = q.get("redirect_uri").and_then(|r| reqwest::Url::parse(r).ok()) else {
        return bad_request("redirect_uri must be an absolute URL");
    };
    if !matches!(redirect.scheme(), "http" | "https") {
        return bad_request("redirect_uri must be http(s)");
    }
    let scope = q.get("scope").map(String::as_str).unwrap_or("");
    let scopes: Vec<&str> = scope.split(',').map(str::trim).filter(|x| !x.is_empty()).collect();
    if scopes.is_empty() || scopes.iter().any(|x| !KNOWN_SCOPES.contains(x)) {
        return bad_request("scope must be a comma-separated list of user.info, user.metrics, user.activity, user.sleepevents");
    }
    let sim_user = knob(&q, &headers, "sim_user");
    let user = match sim_user.as_ref() {
        None => 0,
        Some(v) => match v.parse::<i64>() {
            Ok(i) if i >= 0 && (i as usize) < s.world.users.len() => i as usize,
            Ok(id) => match s.world.by_userid(id) {
                Some(u) => u.index,
                None => return bad_request("sim_user names no synthetic user"),
            },
            Err(_) => return bad_request("sim_user must be a user index or userid"),
        },
    };
    if knob(&q, &headers, "sim_deny").as_deref() == Some("1") {
        let mut to = redirect;
        to.query_pairs_mut().append_pair("error", "access_denied").append_pair("state", state);
        return (StatusCode::FOUND, [(header::LOCATION, to.to_string())]).into_response();
    }
    let mut scopes = scopes;
    if let Some(granted) = knob(&q, &headers, "sim_scopes") {
        let granted: Vec<&str> = granted.split(',').map(str::trim).collect();
        scopes.retain(|x| granted.contains(x));
        if scopes.is_empty() {
            return bad_request("sim_scopes grants none of the requested scopes");
        }
    }
    let now = s.clock.now();
    let code = {
        let mut t = s.tokens.lock().expect("tokens lock");
        let code = t.mint();
        t.codes.insert(
            code.clone(),
            Code { user, redirect_uri: q["redirect_uri"].clone(), scopes: scopes.join(","), expires: now + CODE_TTL },
        );
        code
    };
    let mut to = redirect;
    to.query_pairs_mut().append_pair("code", &code).append_pair("state", state);
    (StatusCode::FOUND, [(header::LOCATION, to.to_string())]).into_response()
}

/// Applies the "same arguments in less than 10 seconds" rule to a token request.
fn repeated(s: &State, p: &Params) -> Option<Reply> {
    let mut pairs: Vec<(&String, &String)> = p.iter().collect();
    pairs.sort();
    let key = pairs.iter().fold(0u64, |h, (k, v)| mix(h ^ str_hash(k) ^ str_hash(v).rotate_left(17)));
    let now = Instant::now();
    let mut recent = s.recent_token_requests.lock().expect("recent lock");
    recent.retain(|_, t| now.duration_since(*t) < Duration::from_secs(10));
    if let Some(t) = recent.get(&key) {
        let wait = 10 - now.duration_since(*t).as_secs() as i64;
        return Some(Reply::Error {
            status: 601,
            error: "Same arguments in less than 10 seconds".into(),
            body: Some(json!({"wait_seconds": wait.max(1)})),
        });
    }
    recent.insert(key, now);
    None
}

fn str_hash(x: &str) -> u64 {
    x.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// The client-secret variant of a token request, or else the signed one.
fn client_ok(s: &State, p: &Params, action: &str) -> bool {
    if p.get("client_id") != Some(&s.cfg.client_id) {
        return false;
    }
    match p.get("client_secret") {
        Some(secret) => *secret == s.cfg.client_secret,
        None => signed_ok(s, p, action),
    }
}

/// A signed call: `signature` over `action,client_id,nonce` with a fresh nonce, which is
/// spent whatever the outcome.
fn signed_ok(s: &State, p: &Params, action: &str) -> bool {
    let (Some(nonce), Some(sig)) = (p.get("nonce"), p.get("signature")) else { return false };
    if p.get("client_id") != Some(&s.cfg.client_id) {
        return false;
    }
    let now = s.clock.now();
    let fresh = s.tokens.lock().expect("tokens lock").nonces.remove(nonce).is_some_and(|exp| exp > now);
    fresh && signature_ok(&s.cfg.client_secret, &[action, &s.cfg.client_id, nonce], sig)
}

/// `POST /v2/oauth2 action=requesttoken`.
pub(crate) fn requesttoken(s: &State, p: &Params) -> Reply {
    if let Some(r) = repeated(s, p) {
        return r;
    }
    if !client_ok(s, p, "requesttoken") {
        return invalid("client_id", "or client_secret is invalid");
    }
    let now = s.clock.now();
    let mut t = s.tokens.lock().expect("tokens lock");
    match p.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let Some(code) = p.get("code").and_then(|c| t.codes.remove(c)) else {
                return err(503, "Invalid Params: invalid code");
            };
            if code.expires < now {
                return err(503, "Invalid Params: invalid code (expired)");
            }
            if p.get("redirect_uri") != Some(&code.redirect_uri) {
                return err(503, "Invalid Params: redirect_uri does not match");
            }
            let (access, refresh) = t.issue(code.user, &code.scopes, None, now);
            let userid = s.world.user(code.user).userid;
            // userid as a string here and as an integer on refresh: both are seen in the wild.
            ok(&json!({
                "userid": userid.to_string(),
                "access_token": access,
                "refresh_token": refresh,
                "expires_in": ACCESS_TTL,
                "scope": code.scopes,
                "csrf_token": t.mint()[..32].to_string(),
                "token_type": "Bearer",
            }))
        }
        Some("refresh_token") => {
            let Some(old) = p.get("refresh_token").cloned() else {
                return invalid("refresh_token", "is required");
            };
            let (user, scopes) = match t.refresh.get(&old) {
                Some(r) if r.state == RefreshState::Current => (r.user, r.scopes.clone()),
                Some(Refresh { user, scopes, state: RefreshState::Grace { until, .. }, .. }) if *until > now => {
                    (*user, scopes.clone())
                }
                _ => return err(503, "Invalid Params: invalid refresh_token"),
            };
            let (access, refresh) = t.issue(user, &scopes, Some(old.clone()), now);
            let entry = t.refresh.get_mut(&old).expect("checked above");
            entry.state = match &entry.state {
                RefreshState::Current => RefreshState::Grace { until: now + GRACE, successor: access.clone() },
                RefreshState::Grace { until, .. } => RefreshState::Grace { until: *until, successor: access.clone() },
            };
            let csrf = t.mint()[..32].to_string();
            drop(t);
            s.stats.lock().expect("stats lock").auth_refreshes += 1;
            ok(&json!({
                "userid": s.world.user(user).userid,
                "access_token": access,
                "refresh_token": refresh,
                "expires_in": ACCESS_TTL,
                "scope": scopes,
                "csrf_token": csrf,
                "token_type": "Bearer",
            }))
        }
        _ => invalid("grant_type", "must be authorization_code or refresh_token"),
    }
}

/// `POST /v2/signature action=getnonce`: signature over `getnonce,client_id,timestamp`.
pub(crate) fn getnonce(s: &State, p: &Params) -> Reply {
    if p.get("client_id") != Some(&s.cfg.client_id) {
        return invalid("client_id", "is invalid");
    }
    let ts = match int_param(p, "timestamp") {
        Ok(Some(ts)) => ts,
        Ok(None) => return invalid("timestamp", "is required"),
        Err(r) => return r,
    };
    // Within 10 minutes of either clock: the client signs with its real time.
    let real = chrono::Utc::now().timestamp();
    let sim = s.clock.now();
    if ts.abs_diff(real) > 600 && ts.abs_diff(sim) > 600 {
        return invalid("timestamp", "is too far from now");
    }
    let sig = p.get("signature").map(String::as_str).unwrap_or("");
    if !signature_ok(&s.cfg.client_secret, &["getnonce", &s.cfg.client_id, &ts.to_string()], sig) {
        return invalid("signature", "is invalid");
    }
    let mut t = s.tokens.lock().expect("tokens lock");
    let nonce = t.mint();
    t.nonces.insert(nonce.clone(), sim + NONCE_TTL);
    ok(&json!({"nonce": nonce}))
}

/// `POST /v2/oauth2 action=revoke` (signed): the user's tokens and subscriptions are gone.
pub(crate) fn revoke(s: &State, p: &Params) -> Reply {
    if !(p.contains_key("nonce") && p.contains_key("signature")) {
        return invalid("signature", "and nonce are required");
    }
    if !signed_ok(s, p, "revoke") {
        return invalid("signature", "is invalid or the nonce was used");
    }
    let user = match int_param(p, "userid") {
        Ok(Some(id)) => match s.world.by_userid(id) {
            Some(u) => u.index,
            None => return invalid("userid", "is unknown"),
        },
        Ok(None) => return invalid("userid", "is required"),
        Err(r) => return r,
    };
    s.tokens.lock().expect("tokens lock").forget_user(user);
    s.subscriptions.lock().expect("subscriptions lock").remove_user(user);
    ok(&json!({}))
}

/// The user index behind the request's bearer token (or `access_token` parameter).
pub(crate) fn authenticate(s: &State, headers: &HeaderMap, p: &Params, scope: Option<&str>) -> Result<usize, Reply> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let Some(token) = from_header.or(p.get("access_token").map(String::as_str)) else {
        return Err(err(401, INVALID_TOKEN));
    };
    let now = s.clock.now();
    let mut t = s.tokens.lock().expect("tokens lock");
    let Some(a) = t.access.get_mut(token) else {
        return Err(err(401, INVALID_TOKEN));
    };
    if a.expires <= now {
        return Err(err(401, INVALID_TOKEN));
    }
    if let Some(scope) = scope
        && !a.scopes.split(',').any(|x| x == scope)
    {
        return Err(err(214, format!("Unauthorized: the token lacks scope {scope}")));
    }
    let user = a.user;
    let first_use = !a.used;
    a.used = true;
    if first_use
        && let Some(parent) = a.parent.clone()
        && matches!(t.refresh.get(&parent), Some(Refresh { state: RefreshState::Grace { successor, .. }, .. }) if successor == token)
    {
        // The new access token is in use: the rotated-out refresh token dies now.
        t.refresh.remove(&parent);
    }
    Ok(user)
}

/// Hex HMAC-SHA256 of the comma-joined values, keyed by the client secret (Withings request signing).
pub fn signature(secret: &str, values: &[&str]) -> String {
    sign(secret, values)
}
