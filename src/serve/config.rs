//! `[serve]`: the service's settings. Secrets (API keys, the notification path secret, the
//! signing key) come only from environment variables, named here.

use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;

/// `[serve]` as written in a pipeline file (every key in `pipelines/example.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSection {
    /// Address the HTTP server listens on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The URL Withings and browsers reach this service at (link pages, the OAuth callback,
    /// the notification callback). Default `http://<listen>`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Environment variable holding the accepted `X-Vital-API-Key` values, comma-separated
    /// (several at once while keys rotate).
    #[serde(default = "default_api_keys_env")]
    pub api_keys_env: String,
    /// Environment variable holding the secret path segment of the notification callback.
    #[serde(default = "default_notify_secret_env")]
    pub notify_secret_env: String,
    /// Environment variable holding the key that signs link `state`s and read cursors (the
    /// same on every instance; at least 32 characters).
    #[serde(default = "default_signing_key_env")]
    pub signing_key_env: String,
    /// Where a link may end: a link token's `redirect_url` must start with one of these
    /// (scheme, host and port equal; path a prefix).
    #[serde(default)]
    pub redirect_urls: Vec<String>,
    /// Lifetime of a link token.
    #[serde(default = "default_link_token_minutes")]
    pub link_token_minutes: u32,
    /// A user's job runs this long after the first notification that queued it (later ones
    /// join it).
    #[serde(default = "default_coalesce_seconds")]
    pub coalesce_seconds: u64,
    /// Every user not refreshed for this long gets an incremental sync (the fallback when
    /// notifications are lost).
    #[serde(default = "default_poll_interval_seconds")]
    pub poll_interval_seconds: u64,
    /// Users in one poll run.
    #[serde(default = "default_poll_batch")]
    pub poll_batch: usize,
    /// `POST /v2/user/refresh` calls allowed per user per rolling hour (Vital: 8).
    #[serde(default = "default_refreshes_per_hour")]
    pub refreshes_per_hour: u32,
    /// `DELETE /v2/user/{id}` erases the person's data this long after the call.
    #[serde(default = "default_erasure_grace_hours")]
    pub erasure_grace_hours: u32,
    /// The leader lease's lifetime: a killed leader is replaced within it.
    #[serde(default = "default_leader_lease_seconds")]
    pub leader_lease_seconds: u32,
    /// Subscription reconcile period (list, re-subscribe what is missing).
    #[serde(default = "default_reconcile_hours")]
    pub reconcile_hours: u32,
    /// The longest window one read may ask for.
    #[serde(default = "default_read_max_days")]
    pub read_max_days: u32,
    /// Samples per page of a grouped time series.
    #[serde(default = "default_read_page_size")]
    pub read_page_size: usize,
    /// On SIGTERM, notifications are still answered this long while jobs finish.
    #[serde(default = "default_drain_seconds")]
    pub drain_seconds: u64,
    /// The part of `[source] requests_per_minute` left to batch runs (`sync`, `backfill`)
    /// started beside the service; the service uses the rest.
    #[serde(default = "default_batch_share_percent")]
    pub batch_share_percent: u32,
    /// Subscribe Withings notifications for linked users (off: the service lives on polling).
    #[serde(default = "default_true")]
    pub subscribe: bool,
}

impl Default for ServeSection {
    fn default() -> ServeSection {
        toml::from_str("").expect("every [serve] key has a default")
    }
}

fn default_listen() -> String {
    "127.0.0.1:8090".into()
}
fn default_api_keys_env() -> String {
    "WITHINGS_LAKE_API_KEYS".into()
}
fn default_notify_secret_env() -> String {
    "WITHINGS_LAKE_NOTIFY_SECRET".into()
}
fn default_signing_key_env() -> String {
    "WITHINGS_LAKE_SIGNING_KEY".into()
}
fn default_link_token_minutes() -> u32 {
    60
}
fn default_coalesce_seconds() -> u64 {
    3
}
fn default_poll_interval_seconds() -> u64 {
    900
}
fn default_poll_batch() -> usize {
    50
}
fn default_refreshes_per_hour() -> u32 {
    8
}
fn default_erasure_grace_hours() -> u32 {
    72
}
fn default_leader_lease_seconds() -> u32 {
    30
}
fn default_reconcile_hours() -> u32 {
    24
}
fn default_read_max_days() -> u32 {
    31
}
fn default_read_page_size() -> usize {
    1000
}
fn default_drain_seconds() -> u64 {
    5
}
fn default_batch_share_percent() -> u32 {
    25
}
fn default_true() -> bool {
    true
}

/// `[serve]` with its secrets read: what the service runs with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: String,
    /// As configured; none: `http://<the bound address>`.
    pub public_url: Option<String>,
    pub api_keys: Vec<Secret>,
    pub notify_secret: Secret,
    pub signing_key: Secret,
    pub redirect_urls: Vec<url::Url>,
    pub link_token_ttl: Duration,
    pub coalesce: Duration,
    pub poll_interval: Duration,
    pub poll_batch: usize,
    pub refreshes_per_hour: u32,
    pub erasure_grace: Duration,
    pub leader_lease: Duration,
    pub reconcile_every: Duration,
    pub read_max_days: u32,
    pub read_page_size: usize,
    pub drain: Duration,
    pub subscribe: bool,
}

/// A `[serve]` setting that cannot work; names the key or the variable.
#[derive(Debug, thiserror::Error)]
#[error("[serve] {0}")]
pub struct ServeConfigError(pub String);

impl ServeSection {
    /// Reads the secrets from the environment (`env` stands for it in tests) and checks every
    /// value.
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<ServeConfig, ServeConfigError> {
        let bad = |m: String| ServeConfigError(m);
        let need = |var: &str, what: &str| -> Result<String, ServeConfigError> {
            env(var)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| bad(format!("the environment variable {var} ({what}) is not set")))
        };
        let keys = need(&self.api_keys_env, "the API keys clients send as X-Vital-API-Key")?;
        let api_keys: Vec<Secret> =
            keys.split(',').map(str::trim).filter(|k| !k.is_empty()).map(|k| Secret::new(k.to_string())).collect();
        if api_keys.iter().any(|k| k.expose().len() < 16) {
            return Err(bad(format!("every API key in {} must have at least 16 characters", self.api_keys_env)));
        }
        let notify_secret = need(&self.notify_secret_env, "the secret path segment of the notification callback")?;
        if notify_secret.len() < 16 || !notify_secret.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(bad(format!(
                "{} must be at least 16 characters of letters, digits, '-' or '_' (it is part of a URL path)",
                self.notify_secret_env
            )));
        }
        let signing_key = need(&self.signing_key_env, "the key that signs link states and read cursors")?;
        if signing_key.len() < 32 {
            return Err(bad(format!("{} must have at least 32 characters", self.signing_key_env)));
        }
        self.listen.parse::<std::net::SocketAddr>().map_err(|e| bad(format!("listen = '{}': {e}", self.listen)))?;
        if let Some(public_url) = &self.public_url {
            let parsed = url::Url::parse(public_url).map_err(|e| bad(format!("public_url = '{public_url}': {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() {
                return Err(bad(format!("public_url = '{public_url}': an http(s) URL without a query")));
            }
        }
        let mut redirect_urls = Vec::new();
        for r in &self.redirect_urls {
            let u = url::Url::parse(r).map_err(|e| bad(format!("redirect_urls: '{r}': {e}")))?;
            if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
                return Err(bad(format!("redirect_urls: '{r}' is not an http(s) URL")));
            }
            redirect_urls.push(u);
        }
        let positive = |name: &str, v: u64| if v == 0 { Err(bad(format!("{name} must be above 0"))) } else { Ok(v) };
        Ok(ServeConfig {
            listen: self.listen.clone(),
            public_url: self.public_url.as_ref().map(|u| u.trim_end_matches('/').to_string()),
            api_keys,
            notify_secret: Secret::new(notify_secret),
            signing_key: Secret::new(signing_key),
            redirect_urls,
            link_token_ttl: Duration::from_secs(60 * positive("link_token_minutes", self.link_token_minutes.into())?),
            coalesce: Duration::from_secs(self.coalesce_seconds),
            poll_interval: Duration::from_secs(positive("poll_interval_seconds", self.poll_interval_seconds)?),
            poll_batch: positive("poll_batch", self.poll_batch as u64)? as usize,
            refreshes_per_hour: self.refreshes_per_hour,
            erasure_grace: Duration::from_secs(3600 * u64::from(self.erasure_grace_hours)),
            leader_lease: Duration::from_secs(positive("leader_lease_seconds", self.leader_lease_seconds.into())?.max(3)),
            reconcile_every: Duration::from_secs(3600 * positive("reconcile_hours", self.reconcile_hours.into())?),
            read_max_days: positive("read_max_days", self.read_max_days.into())? as u32,
            read_page_size: positive("read_page_size", self.read_page_size as u64)? as usize,
            drain: Duration::from_secs(self.drain_seconds),
            subscribe: self.subscribe,
        })
    }
}

impl ServeConfig {
    /// Whether a link may end on `url`: an allow-listed scheme, host and port, and a path
    /// under the allowed one. `javascript:`, `data:` and anything unlisted are refused.
    pub fn redirect_allowed(&self, url: &str) -> bool {
        let Ok(u) = url::Url::parse(url) else { return false };
        if !matches!(u.scheme(), "http" | "https") || u.cannot_be_a_base() || !u.username().is_empty() {
            return false;
        }
        self.redirect_urls.iter().any(|a| {
            a.scheme() == u.scheme()
                && a.host_str() == u.host_str()
                && a.port_or_known_default() == u.port_or_known_default()
                && u.path().starts_with(a.path())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(var: &str) -> Option<String> {
        match var {
            "WITHINGS_LAKE_API_KEYS" => Some("key-aaaaaaaaaaaaaaaa, key-bbbbbbbbbbbbbbbb".into()),
            "WITHINGS_LAKE_NOTIFY_SECRET" => Some("notify-secret-0123456789".into()),
            "WITHINGS_LAKE_SIGNING_KEY" => Some("k".repeat(40)),
            _ => None,
        }
    }

    #[test]
    fn secrets_come_from_the_environment_and_a_missing_one_is_named() {
        let mut s = ServeSection { redirect_urls: vec!["https://app.example.com/done".into()], ..Default::default() };
        let c = s.resolve(env).unwrap();
        assert_eq!(c.api_keys.len(), 2);
        assert_eq!(c.public_url, None);
        s.signing_key_env = "NOPE".into();
        let e = s.resolve(env).unwrap_err().to_string();
        assert!(e.contains("NOPE"), "{e}");
    }

    #[test]
    fn redirects_must_be_on_the_allow_list() {
        let s = ServeSection { redirect_urls: vec!["https://app.example.com/done".into()], ..Default::default() };
        let c = s.resolve(env).unwrap();
        assert!(c.redirect_allowed("https://app.example.com/done?x=1"));
        assert!(c.redirect_allowed("https://app.example.com/done/linked"));
        for no in [
            "javascript:alert(1)",
            "https://evil.example.com/done",
            "http://app.example.com/done",
            "https://app.example.com:444/done",
            "https://app.example.com/other",
            "https://user@app.example.com/done",
            "data:text/html,hi",
            "",
        ] {
            assert!(!c.redirect_allowed(no), "{no}");
        }
    }
}
