//! `HEAD|POST /withings/notify/{secret}`: Withings notifications. They are unsigned, so the
//! path carries a secret (a wrong one: 404, like any unknown path). A well-addressed
//! notification is answered 200 with the same empty body whoever it names (nothing tells
//! which users exist), after it is written to the inbox in the lake; the write is bounded so
//! the answer comes well within Withings' 2 s, and a failed write still answers 200
//! (Withings drops subscriptions whose callback keeps failing; the poll covers the change).
//! Malformed ones are counted by reason and not written.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use super::Service;
use super::jobs::InboxEntry;

/// The largest notification body taken (a real one is under 200 bytes).
pub const MAX_BODY: usize = 4096;

/// Notification categories this service acts on; others are counted and ignored.
pub const HANDLED_APPLIS: [i64; 5] = [1, 4, 16, 44, 46];

/// Why a notification was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Malformed {
    Body,
    Userid,
    Appli,
    Dates,
}

impl Malformed {
    fn as_str(&self) -> &'static str {
        match self {
            Malformed::Body => "malformed_body",
            Malformed::Userid => "malformed_userid",
            Malformed::Appli => "malformed_appli",
            Malformed::Dates => "malformed_dates",
        }
    }
}

/// A notification as Withings sends it (form-encoded).
#[derive(Debug, PartialEq, Eq)]
pub struct Notification {
    pub userid: String,
    pub appli: i64,
    pub startdate: Option<i64>,
    pub enddate: Option<i64>,
}

/// Parses and checks a body: digits for `userid`, an integer `appli`, dates (epoch seconds)
/// in order and between 2000 and a day from now.
pub fn parse(body: &[u8], now: i64) -> Result<Notification, Malformed> {
    let mut userid = None;
    let mut appli = None;
    let mut start = None;
    let mut end = None;
    let text = std::str::from_utf8(body).map_err(|_| Malformed::Body)?;
    for (k, v) in form_urlencoded_pairs(text)? {
        match k.as_str() {
            "userid" => userid = Some(v),
            "appli" => appli = Some(v),
            "startdate" => start = Some(v),
            "enddate" => end = Some(v),
            _ => {}
        }
    }
    let userid =
        userid.filter(|u| !u.is_empty() && u.len() <= 20 && u.bytes().all(|b| b.is_ascii_digit())).ok_or(Malformed::Userid)?;
    let appli = appli.and_then(|a| a.parse::<i64>().ok()).filter(|a| (0..=1000).contains(a)).ok_or(Malformed::Appli)?;
    let date = |v: Option<String>| -> Result<Option<i64>, Malformed> {
        match v {
            None => Ok(None),
            Some(v) => {
                v.parse::<i64>().ok().filter(|t| (946_684_800..=now + 86_400).contains(t)).map(Some).ok_or(Malformed::Dates)
            }
        }
    };
    let (startdate, enddate) = (date(start)?, date(end)?);
    if let (Some(a), Some(b)) = (startdate, enddate)
        && a > b
    {
        return Err(Malformed::Dates);
    }
    Ok(Notification { userid, appli, startdate, enddate })
}

fn form_urlencoded_pairs(text: &str) -> Result<Vec<(String, String)>, Malformed> {
    let mut out = Vec::new();
    for part in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let dec = |s: &str| -> Result<String, Malformed> {
            let s = s.replace('+', " ");
            percent_decode(&s).ok_or(Malformed::Body)
        };
        out.push((dec(k)?, dec(v)?));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn secret_matches(s: &Service, given: &str) -> bool {
    let want = s.cfg.notify_secret.expose().as_bytes();
    let given = given.as_bytes();
    want.len() == given.len() && want.iter().zip(given).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
}

/// The one answer every well-addressed notification gets.
fn accepted() -> Response {
    StatusCode::OK.into_response()
}

pub async fn receive(State(s): State<Arc<Service>>, Path(secret): Path<String>, method: Method, body: Bytes) -> Response {
    if !secret_matches(&s, &secret) {
        return (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"detail": "Not Found"}))).into_response();
    }
    // Withings checks a callback with HEAD (and may GET it) before subscribing.
    if method != Method::POST {
        return accepted();
    }
    let n = match parse(&body, Utc::now().timestamp()) {
        Ok(n) => n,
        Err(why) => {
            s.metrics.notification("none", why.as_str());
            tracing::info!(reason = why.as_str(), bytes = body.len(), "notification not taken");
            return accepted();
        }
    };
    let appli = n.appli.to_string();
    if !HANDLED_APPLIS.contains(&n.appli) {
        s.metrics.notification(&appli, "ignored_appli");
        return accepted();
    }
    let entry = InboxEntry::Notification {
        received_at: Utc::now(),
        userid: n.userid,
        appli: n.appli,
        startdate: n.startdate,
        enddate: n.enddate,
    };
    match tokio::time::timeout(Duration::from_millis(1500), s.enqueue(&entry)).await {
        Ok(Ok(())) => s.metrics.notification(&appli, "queued"),
        Ok(Err(e)) => {
            s.metrics.inbox_write_failures.inc();
            s.metrics.notification(&appli, "inbox_failed");
            tracing::error!(error = %e, "a notification could not be written to the inbox (the poll covers it)");
        }
        Err(_) => {
            s.metrics.inbox_write_failures.inc();
            s.metrics.notification(&appli, "inbox_timeout");
            tracing::error!("writing a notification to the inbox took over 1.5 s (the poll covers it)");
        }
    }
    accepted()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_000_000;

    #[test]
    fn a_withings_notification_parses() {
        let n = parse(b"userid=123456&appli=1&startdate=1779990000&enddate=1779990001", NOW).unwrap();
        assert_eq!(
            n,
            Notification { userid: "123456".into(), appli: 1, startdate: Some(1_779_990_000), enddate: Some(1_779_990_001) }
        );
        assert_eq!(parse(b"userid=7&appli=46", NOW).unwrap().startdate, None);
    }

    #[test]
    fn garbage_is_named_by_reason() {
        assert_eq!(parse(b"userid=abc&appli=1", NOW), Err(Malformed::Userid));
        assert_eq!(parse(b"userid=1%27%20OR%201=1&appli=1", NOW), Err(Malformed::Userid));
        assert_eq!(parse(b"appli=1", NOW), Err(Malformed::Userid));
        assert_eq!(parse(b"userid=1&appli=x", NOW), Err(Malformed::Appli));
        assert_eq!(parse(b"userid=1&appli=1&startdate=1779990001&enddate=1779990000", NOW), Err(Malformed::Dates));
        assert_eq!(parse(b"userid=1&appli=1&startdate=99999999999", NOW), Err(Malformed::Dates));
        assert_eq!(parse(b"userid=1&appli=1&startdate=-5", NOW), Err(Malformed::Dates));
        assert_eq!(parse(&[0xff, 0xfe], NOW), Err(Malformed::Body));
        assert_eq!(parse(b"userid=%zz&appli=1", NOW), Err(Malformed::Body));
    }
}
