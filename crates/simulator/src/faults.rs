//! Fault injection (`POST /_sim/faults`): the failures a connector meets in the field, on
//! demand, for the next K requests or for a fraction of requests, optionally on one endpoint.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api::{Reply, err};
use super::oauth::INVALID_TOKEN;
use super::rng::{Rng, Stream};
use axum::http::StatusCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultKind {
    /// HTTP 500 with an HTML page.
    #[serde(rename = "http_500")]
    Http500,
    /// HTTP 502 from a gateway, HTML.
    #[serde(rename = "http_502")]
    Http502,
    /// HTTP 200 whose body is not JSON (a maintenance page).
    #[serde(rename = "non_json")]
    NonJson,
    /// The real answer cut in half.
    #[serde(rename = "truncated")]
    Truncated,
    /// The real answer, `delay_ms` late (default 3000).
    #[serde(rename = "delay")]
    Delay,
    #[serde(rename = "status_401")]
    Status401,
    #[serde(rename = "status_601")]
    Status601,
    #[serde(rename = "status_2554")]
    Status2554,
}

/// One `POST /_sim/faults` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub kind: FaultKind,
    /// Hit the next `count` matching requests (default 1 when `fraction` is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Hit this share of matching requests, until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// Only this endpoint (`getmeas`, `getintradayactivity`, `sleep_get`, `requesttoken`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

/// What happens to a request hit by a fault.
pub enum Fault {
    Replace(Reply),
    Delay(u64),
    Truncate,
}

#[derive(Debug)]
struct Active {
    id: u64,
    spec: FaultSpec,
    remaining: Option<u64>,
}

#[derive(Debug)]
pub struct Faults {
    active: Vec<Active>,
    rng: Rng,
    next_id: u64,
}

impl Faults {
    pub fn new(seed: u64) -> Faults {
        Faults { active: Vec::new(), rng: Rng::new(seed, 0, 0, Stream::Faults), next_id: 1 }
    }

    pub fn add(&mut self, spec: FaultSpec) -> Result<u64, String> {
        let remaining = match (spec.count, spec.fraction) {
            (Some(_), Some(_)) => return Err("give either count or fraction, not both".into()),
            (Some(0), None) => return Err("count must be at least 1".into()),
            (Some(n), None) => Some(n),
            (None, Some(f)) if f > 0.0 && f <= 1.0 => None,
            (None, Some(f)) => return Err(format!("fraction must be in (0, 1], got {f}")),
            (None, None) => Some(1),
        };
        let id = self.next_id;
        self.next_id += 1;
        self.active.push(Active { id, spec, remaining });
        Ok(id)
    }

    pub fn clear(&mut self) {
        self.active.clear();
    }

    pub fn list(&self) -> Vec<Value> {
        self.active.iter().map(|a| json!({"id": a.id, "spec": a.spec, "remaining": a.remaining})).collect()
    }

    /// The fault (if any) hitting the next request to `endpoint`.
    pub fn take(&mut self, endpoint: &str) -> Option<Fault> {
        // The first matching fault that fires: a fraction fault that misses lets the next one try.
        let mut fired = None;
        for i in 0..self.active.len() {
            let a = &mut self.active[i];
            if a.spec.endpoint.as_deref().is_some_and(|e| e != endpoint) {
                continue;
            }
            match a.remaining.as_mut() {
                Some(n) => {
                    *n -= 1;
                    fired = Some((i, *n == 0));
                    break;
                }
                None => {
                    if self.rng.chance(a.spec.fraction.unwrap_or(1.0)) {
                        fired = Some((i, false));
                        break;
                    }
                }
            }
        }
        let (i, spent) = fired?;
        let spec = if spent { self.active.remove(i).spec } else { self.active[i].spec.clone() };
        Some(match spec.kind {
            FaultKind::Http500 => Fault::Replace(Reply::Raw {
                http: StatusCode::INTERNAL_SERVER_ERROR,
                content_type: "text/html",
                body: b"<html><body><h1>500 Internal Server Error</h1></body></html>".to_vec(),
            }),
            FaultKind::Http502 => Fault::Replace(Reply::Raw {
                http: StatusCode::BAD_GATEWAY,
                content_type: "text/html",
                body: b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>"
                    .to_vec(),
            }),
            FaultKind::NonJson => Fault::Replace(Reply::Raw {
                http: StatusCode::OK,
                content_type: "text/html",
                body: b"<html><head><title>Maintenance</title></head><body>Withings is under maintenance</body></html>".to_vec(),
            }),
            FaultKind::Truncated => Fault::Truncate,
            FaultKind::Delay => Fault::Delay(spec.delay_ms.unwrap_or(3000)),
            FaultKind::Status401 => Fault::Replace(err(401, INVALID_TOKEN)),
            FaultKind::Status601 => Fault::Replace(err(601, "Too Many Requests")),
            FaultKind::Status2554 => Fault::Replace(err(2554, "Not implemented")),
        })
    }
}
