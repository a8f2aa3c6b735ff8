//! Notification subscriptions (`/notify`) and their delivery.
//!
//! Subscriptions are per (user, appli, callback URL). A callback must be an http(s) URL that
//! answers a HEAD request with 2xx at subscribe time, as Withings checks it (status 293
//! otherwise). When the simulated clock moves (by `/_sim/clock`, or by itself every 5 s when
//! it runs), every change that became visible in the elapsed window is sent to the matching
//! callbacks as a form-encoded POST: `userid`, `appli`, `startdate`, `enddate`. One attempt
//! per notification; failures are counted in `/_sim/stats`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as Days;
use serde_json::json;

use super::State;
use super::activity::rows_on;
use super::api::{Params, Reply, err, int_param, invalid, ok};
use super::heart::ecg_on;
use super::measures::{MAX_LAG_DAYS, groups_on};
use super::sleep::sessions_between;
use super::workouts::workouts_on;
use super::world::User;

/// Notification categories a subscription may name (reference section 10.3).
pub const APPLIS: &[i64] = &[1, 2, 4, 16, 44, 46, 50, 51, 52, 54, 55, 58];

#[derive(Debug, Clone)]
pub struct Subscription {
    pub appli: i64,
    pub callbackurl: String,
    pub comment: String,
}

#[derive(Debug, Default)]
pub struct Subscriptions {
    by_user: HashMap<usize, Vec<Subscription>>,
}

impl Subscriptions {
    pub fn remove_user(&mut self, user: usize) {
        self.by_user.remove(&user);
    }
}

fn callback_param(p: &Params) -> Result<reqwest::Url, Reply> {
    let raw = p.get("callbackurl").map(String::as_str).unwrap_or("");
    let url = reqwest::Url::parse(raw).ok().filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    match url {
        Some(u) if raw.len() <= 255 => Ok(u),
        _ => Err(err(293, format!("The callback URL '{raw}' is either unknown or invalid"))),
    }
}

fn appli_param(p: &Params, default: Option<i64>) -> Result<i64, Reply> {
    match int_param(p, "appli")?.or(default) {
        Some(a) if APPLIS.contains(&a) => Ok(a),
        Some(_) => Err(invalid("appli", "is not a notification category")),
        None => Err(invalid("appli", "is required")),
    }
}

/// `notify subscribe`: checks the callback with a HEAD request first.
pub(crate) async fn subscribe(s: &Arc<State>, user: &User, p: &Params) -> Reply {
    let url = match callback_param(p) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let appli = match appli_param(p, None) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let head = s.http.head(url.clone()).timeout(Duration::from_secs(2)).send().await;
    if !head.is_ok_and(|r| r.status().is_success()) {
        return err(293, format!("The callback URL '{url}' is either unknown or invalid (HEAD did not answer 2xx)"));
    }
    let comment = p.get("comment").cloned().unwrap_or_default();
    let mut subs = s.subscriptions.lock().expect("subscriptions lock");
    let list = subs.by_user.entry(user.index).or_default();
    let callbackurl = p["callbackurl"].clone();
    match list.iter_mut().find(|x| x.appli == appli && x.callbackurl == callbackurl) {
        Some(existing) => existing.comment = comment,
        None => list.push(Subscription { appli, callbackurl, comment }),
    }
    ok(&json!({}))
}

pub(crate) fn list(s: &State, user: &User, p: &Params) -> Result<Reply, Reply> {
    let appli = int_param(p, "appli")?;
    let subs = s.subscriptions.lock().expect("subscriptions lock");
    let profiles: Vec<_> = subs
        .by_user
        .get(&user.index)
        .into_iter()
        .flatten()
        .filter(|x| appli.is_none_or(|a| a == x.appli))
        .map(|x| json!({"appli": x.appli, "callbackurl": x.callbackurl, "expires": 2_147_483_647i64, "comment": x.comment}))
        .collect();
    Ok(ok(&json!({"profiles": profiles})))
}

pub(crate) fn get(s: &State, user: &User, p: &Params) -> Result<Reply, Reply> {
    callback_param(p)?;
    let appli = appli_param(p, Some(1))?;
    let subs = s.subscriptions.lock().expect("subscriptions lock");
    let found =
        subs.by_user.get(&user.index).into_iter().flatten().find(|x| x.appli == appli && x.callbackurl == p["callbackurl"]);
    match found {
        Some(x) => Ok(ok(&json!({"appli": x.appli, "callbackurl": x.callbackurl, "comment": x.comment}))),
        None => Err(err(286, "No such subscription")),
    }
}

pub(crate) fn revoke(s: &State, user: &User, p: &Params) -> Result<Reply, Reply> {
    callback_param(p)?;
    let appli = appli_param(p, None)?;
    let mut subs = s.subscriptions.lock().expect("subscriptions lock");
    let list = subs.by_user.entry(user.index).or_default();
    let before = list.len();
    list.retain(|x| !(x.appli == appli && x.callbackurl == p["callbackurl"]));
    if list.len() == before {
        return Err(err(286, "No such subscription"));
    }
    Ok(ok(&json!({})))
}

/// What changed for a user in `(from, to]`: `(appli, startdate, enddate)` per category.
fn changes(s: &State, user: &User, from: i64, to: i64) -> Vec<(i64, i64, i64)> {
    let mut found: HashMap<i64, (i64, i64)> = HashMap::new();
    let mut note = |appli: i64, a: i64, b: i64| {
        let e = found.entry(appli).or_insert((a, b));
        e.0 = e.0.min(a);
        e.1 = e.1.max(b);
    };
    let within = |t: i64| t > from && t <= to;
    let w = &s.world;
    let first = user.local_date(from);
    let last = user.local_date(to);
    let mut d = first - Days::days(MAX_LAG_DAYS + 1);
    while d <= last {
        for g in groups_on(w, user, d) {
            let changed = within(g.created) || g.edit.is_some_and(|(t, _)| within(t)) || g.deleted_at.is_some_and(within);
            if changed {
                // A group can concern several categories (a weigh-in with a pulse is appli 1).
                let bp = g.measures.iter().any(|m| matches!(m.kind, 9 | 10 | 54));
                let ecg = g.measures.iter().any(|m| (130..=139).contains(&m.kind));
                let body = g.measures.iter().any(|m| match m.kind {
                    9 | 10 | 54 | 130..=139 => false,
                    11 => !bp,
                    _ => true,
                });
                for (yes, appli) in [(body, 1), (bp, 4), (ecg, 54)] {
                    if yes {
                        note(appli, g.date, g.date);
                    }
                }
            }
        }
        if d >= first - Days::days(4) {
            for row in rows_on(w, user, d, to) {
                if row.modified > from {
                    // The day so far: up to the sync that changed it.
                    note(16, user.day_start(d), user.day_start(d + Days::days(1)).min(row.modified));
                }
            }
            for wk in workouts_on(w, user, d) {
                if within(wk.modified) {
                    note(16, wk.start, wk.end);
                }
            }
            if let Some(e) = ecg_on(w, user, d).filter(|e| within(e.modified)) {
                note(54, e.timestamp, e.timestamp);
            }
        }
        d += Days::days(1);
    }
    for sess in sessions_between(w, user, first - Days::days(1), last + Days::days(1), to) {
        if within(sess.modified(to)) || within(sess.created) {
            note(44, sess.start, sess.end);
        }
    }
    let mut out: Vec<(i64, i64, i64)> = found.into_iter().map(|(k, (a, b))| (k, a, b)).collect();
    out.sort();
    out
}

/// Sends the notifications for everything that changed up to `to`; returns how many were
/// delivered. Holds `notified_until` throughout, so two clock moves never notify twice.
pub(crate) async fn deliver_until(s: &Arc<State>, to: i64) -> u64 {
    let mut until = s.notified_until.lock().await;
    let from = *until;
    if to <= from {
        return 0;
    }
    *until = to;
    let subs: Vec<(usize, Vec<Subscription>)> = {
        let subs = s.subscriptions.lock().expect("subscriptions lock");
        subs.by_user.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (*k, v.clone())).collect()
    };
    if subs.is_empty() {
        return 0;
    }
    // Finding what changed is CPU work over days of synthetic data: off the async workers.
    let state = s.clone();
    let outbox = tokio::task::spawn_blocking(move || {
        let mut outbox = Vec::new();
        for (index, list) in subs {
            let user = state.world.user(index);
            for (appli, start, end) in changes(&state, user, from, to) {
                for sub in list.iter().filter(|x| x.appli == appli) {
                    let form = format!("userid={}&appli={appli}&startdate={start}&enddate={end}", user.userid);
                    outbox.push((sub.callbackurl.clone(), form));
                }
            }
        }
        outbox
    })
    .await
    .unwrap_or_default();
    // One attempt each, 2 s to answer (Withings' own limit), at most 16 in flight.
    let gate = Arc::new(tokio::sync::Semaphore::new(16));
    let mut sends = tokio::task::JoinSet::new();
    for (url, form) in outbox {
        let (http, gate) = (s.http.clone(), gate.clone());
        sends.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let res = http
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .timeout(Duration::from_secs(2))
                .body(form)
                .send()
                .await;
            res.is_ok_and(|r| r.status().as_u16() < 400)
        });
    }
    let mut sent = 0;
    while let Some(done) = sends.join_next().await {
        let delivered = done.unwrap_or(false);
        let mut stats = s.stats.lock().expect("stats lock");
        if delivered {
            stats.notifications_sent += 1;
            sent += 1;
        } else {
            stats.notifications_failed += 1;
        }
    }
    sent
}

/// While the clock runs by itself, looks for new data every 5 seconds.
pub(crate) async fn ticker(s: Arc<State>) {
    if s.clock.frozen() {
        return;
    }
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        let now = s.clock.now();
        deliver_until(&s, now).await;
    }
}
