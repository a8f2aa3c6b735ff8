//! Pipeline files: what a run talks to and where it keeps things.
//!
//! Parse, then resolve: [`PipelineFile`] is the TOML as written, checked
//! for unknown keys (an error names the file and the key); [`PipelineFile::resolve_client`]
//! and [`PipelineFile::resolve_credentials`] turn it into the objects a command uses. Secrets
//! never live in the file: the client secret comes from the environment variable it names.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::credentials::{CredentialStore, CredentialsError, crypto};
use crate::error::{Classify, ErrorClass};
use crate::secret::Secret;
use crate::withings::{ClientConfig, WithingsClient, WithingsError};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("pipeline file {file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("pipeline file {file}: {reason}")]
    Invalid { file: String, reason: String },
    #[error("pipeline file {file}: [source] client_secret_env names {var}, which is not set")]
    MissingSecret { file: String, var: String },
    #[error(transparent)]
    Client(#[from] WithingsError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Lake(#[from] crate::lake::LakeError),
}

/// A pipeline file that does not read or resolve is the operator's to fix, unless the client
/// the client, the credentials store or the lake says otherwise.
impl Classify for PipelineError {
    fn class(&self) -> ErrorClass {
        match self {
            PipelineError::Client(e) => e.class(),
            PipelineError::Credentials(e) => e.class(),
            PipelineError::Lake(e) => e.class(),
            PipelineError::Read { .. } | PipelineError::Invalid { .. } | PipelineError::MissingSecret { .. } => {
                ErrorClass::Config
            }
        }
    }
}

/// A pipeline file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// The Withings API (or a simulator) and the application's credentials.
    pub source: SourceConfig,
    /// Where user credentials are kept.
    pub credentials: CredentialsConfig,
    /// Where the harmonized tables go.
    #[serde(default)]
    pub lake: Option<LakeConfig>,
    /// What runs fetch and how they checkpoint.
    #[serde(default)]
    pub sync: SyncSection,
    /// Change events: webhooks and manifest files (none without the section).
    #[serde(default)]
    pub events: Option<EventsSection>,
    /// The service (`withings-lake serve`): listen address, public URL, link, poll and read
    /// settings; secrets from the environment variables it names.
    #[serde(default)]
    pub serve: Option<crate::serve::ServeSection>,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// API base URL: `https://wbsapi.withings.net`, or a simulator's `http://127.0.0.1:PORT`.
    #[serde(default = "default_api_base_url")]
    pub api_base_url: String,
    /// Authorization page; default `https://account.withings.com/oauth2_user/authorize2`
    /// (for a simulator: `<api_base_url>/oauth2_user/authorize2`).
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// The application's OAuth2 client id.
    pub client_id: String,
    /// Name of the environment variable holding the client secret.
    #[serde(default = "default_secret_env")]
    pub client_secret_env: String,
    /// Requests per minute for the whole application (Withings allows 120).
    #[serde(default = "default_rpm")]
    pub requests_per_minute: u32,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Scopes asked for when linking (comma-separated).
    #[serde(default = "default_scopes")]
    pub scopes: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    /// Storage location of the encrypted user records: a folder, file://, s3://, gs://, az://.
    /// Keep it outside the lake analysts read.
    pub url: String,
    /// Key file (hex), created 0600 on first use when `WITHINGS_LAKE_KEY` is not set, and only
    /// while the store holds no record; refused when others can read it.
    /// Default `~/.config/withings-lake/credentials.key`. Relative to the pipeline file.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// The lake: a folder (relative to this file), file://, s3://bucket/prefix, gs://, az://.
    pub url: String,
    /// Shards of the lake (fixed when the lake is created; `--shard i/N` workers split users
    /// by a stable hash). Default 1.
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// object_store options for the lake, e.g. `endpoint`, `region`, `allow_http` for an
    /// S3-compatible server. Credentials belong in the environment (AWS_ACCESS_KEY_ID, ...).
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
}

/// `[sync]`: what `sync`, `backfill` and `refresh` fetch, and how they checkpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSection {
    /// Resources to keep (default: all 17). The endpoints that feed them are fetched, plus
    /// the listings their planning needs (getactivity for intraday, sleep getsummary for
    /// sleep get).
    #[serde(default)]
    pub resources: Option<Vec<String>>,
    /// `backfill` without `--from`, and a user's first `sync`, cover this many days (Vital: 90).
    #[serde(default = "default_backfill_days")]
    pub backfill_days: u32,
    /// The longest window one backfill accepts, in days (a typo in `--from` must not plan
    /// years of intraday requests).
    #[serde(default = "default_backfill_limit_days")]
    pub backfill_limit_days: u32,
    /// Commit what is staged at least this often, and at the end.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_seconds: u64,
    /// ... or as soon as this many MiB are staged (the staging folder's disk use).
    #[serde(default = "default_checkpoint_max_staged_mb")]
    pub checkpoint_max_staged_mb: u64,
    /// Incremental runs ask `lastupdate` from the last `modified` seen minus this.
    #[serde(default = "default_cursor_overlap")]
    pub cursor_overlap_seconds: u64,
    /// Once every `relist_every_hours` (0 = never), incremental runs re-list each user's
    /// trailing `relist_days` of getmeas and replace that window (mirrors deletions).
    #[serde(default = "default_relist_days")]
    pub relist_days: u32,
    #[serde(default = "default_relist_every_hours")]
    pub relist_every_hours: u32,
    /// Users fetched at once (default: `[source] concurrency`).
    #[serde(default)]
    pub users_in_parallel: Option<usize>,
    /// Local folder for staged batches (default: `$TMPDIR` or the system temporary folder);
    /// runs stage in a fresh 0700 folder under `<staging_dir>/withings-lake-staging-<uid>/`.
    #[serde(default)]
    pub staging_dir: Option<PathBuf>,
}

/// `[events]`: where change events go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSection {
    /// The envelope's `team_id`.
    #[serde(default = "default_team_id")]
    pub team_id: String,
    /// Samples per time-series event at most (larger changes are split).
    #[serde(default = "default_max_samples")]
    pub max_samples_per_event: usize,
    /// Also send backfilled rows as `daily.data.*` events (by default a backfill sends only
    /// `historical.data.<resource>.created`, as Vital does).
    #[serde(default)]
    pub history_as_daily: bool,
    /// At the end of a run, wait up to this long for retries that fall due.
    #[serde(default = "default_final_wait")]
    pub final_wait_seconds: u64,
    /// Delivered events are kept this many days in `_events/delivered/` (0: forever); dead
    /// ones stay until redelivered.
    #[serde(default = "default_retention_days")]
    pub delivered_retention_days: u32,
    #[serde(default)]
    pub webhooks: Vec<WebhookSection>,
    /// Manifest mode: the events as JSON-lines files, one per checkpoint.
    #[serde(default)]
    pub files: Option<FilesSection>,
    /// Vital's `logo` of the Withings provider (a URL; Vital's models require a string).
    #[serde(default = "default_provider_logo")]
    pub provider_logo: String,
    /// The provider fields Vital still documents though deprecated (`name`, `slug`, `logo` in
    /// a time series' `source`); on while Vital documents them.
    #[serde(default = "default_true")]
    pub legacy_fields: bool,
    /// `daily.data.hypnogram.*` events (on: Withings' resource list has them; Vital's SDK has
    /// no model, as Vital deprecated the resource).
    #[serde(default = "default_true")]
    pub hypnogram_events: bool,
    /// `daily.data.sleep_stream.*` events (off: no Vital version defines them).
    #[serde(default)]
    pub sleep_stream_events: bool,
    /// `daily.data.sleep_cycle.*` events (on: Vital's replacement of the hypnogram).
    #[serde(default = "default_true")]
    pub sleep_cycle_events: bool,
}

fn default_true() -> bool {
    true
}

fn default_provider_logo() -> String {
    crate::events::WITHINGS_LOGO.to_string()
}

/// `[[events.webhooks]]`: one endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// Names the endpoint's outbox folders: letters, digits, `-` and `_`.
    pub name: String,
    pub url: String,
    /// The environment variable holding the signing secret (`whsec_...`).
    pub secret_env: String,
    /// Event types sent here: exact names and wildcards (`daily.data.*`); default all.
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default)]
    pub max_events_per_second: Option<f64>,
    #[serde(default = "default_webhook_timeout")]
    pub timeout_seconds: f64,
    #[serde(default = "default_webhook_concurrency")]
    pub concurrency: usize,
    /// Pause after each failed attempt (default Vital's: 0, 5, 300, 1800, 7200, 18000,
    /// 36000, 36000); when they run out the event is dead.
    #[serde(default)]
    pub retry_schedule_seconds: Option<Vec<f64>>,
    /// Allow an `http://` URL to a host other than loopback (health data in clear text on the
    /// network): off by default, `https://` or a loopback `http://` otherwise.
    #[serde(default)]
    pub allow_insecure: bool,
}

/// `[events.files]`: manifest mode.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSection {
    /// A folder inside the lake (`_events/files`), or a URL with the lake's options.
    #[serde(default = "default_files_prefix")]
    pub prefix: String,
    #[serde(default)]
    pub event_types: Vec<String>,
}

// `[events]` and `[source]` defaults are the runtime ones (`EventsConfig::default`,
// `ClientConfig::default`); `[sync]`'s are here and `SyncConfig::default` takes them.
fn default_team_id() -> String {
    crate::events::EventsConfig::default().team_id
}
fn default_max_samples() -> usize {
    crate::events::EventsConfig::default().max_samples_per_event
}
fn default_retention_days() -> u32 {
    crate::events::EventsConfig::default().delivered_retention.map_or(0, |d| (d.as_secs() / 86_400) as u32)
}
fn default_final_wait() -> u64 {
    crate::events::EventsConfig::default().final_wait.as_secs()
}
fn default_webhook_timeout() -> f64 {
    15.0
}
fn default_webhook_concurrency() -> usize {
    4
}
fn default_files_prefix() -> String {
    "_events/files".into()
}

impl Default for SyncSection {
    fn default() -> SyncSection {
        toml::from_str("").expect("every [sync] key has a default")
    }
}

impl SyncSection {
    /// The runtime settings of this section (the one place its defaults become values):
    /// `resources` resolved by the caller, `concurrency` of `[source]` for
    /// `users_in_parallel`; `staging_dir` as written (the caller anchors a relative one).
    pub fn resolve(&self, resources: Vec<crate::schema::Resource>, concurrency: usize) -> crate::sync::SyncConfig {
        crate::sync::SyncConfig {
            resources,
            backfill_days: self.backfill_days,
            backfill_limit_days: self.backfill_limit_days,
            checkpoint_interval: std::time::Duration::from_secs(self.checkpoint_interval_seconds),
            checkpoint_max_staged_bytes: self.checkpoint_max_staged_mb.max(1) * 1024 * 1024,
            cursor_overlap: self.cursor_overlap_seconds as i64,
            relist_days: self.relist_days,
            relist_every: (self.relist_every_hours > 0)
                .then(|| std::time::Duration::from_secs(u64::from(self.relist_every_hours) * 3600)),
            users_in_parallel: self.users_in_parallel.unwrap_or(concurrency),
            staging_dir: self.staging_dir.clone(),
        }
    }
}

/// How a program wants its engine built ([`PipelineFile::engine`]).
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Overrides `[source] requests_per_minute` for this process.
    pub requests_per_minute: Option<RequestBudget>,
    /// Processes (shard workers) sharing the application's budget at once: without an
    /// override each takes `requests_per_minute / workers` (at least 1).
    pub workers: u32,
    /// The client secret, for a program that holds it (a secrets manager); without it, the
    /// environment variable `[source] client_secret_env` names.
    pub client_secret: Option<Secret>,
    /// This engine is the service's own: it does not give way to a leading service's budget
    /// (a batch engine takes only what a running service leaves, `_service/budget.json`).
    pub is_service: bool,
}

/// A request budget for one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBudget {
    PerMinute(u32),
    /// No limit: only against a simulator on loopback (Withings allows 120 a minute).
    Unlimited,
}

/// Whether `base_url`'s host is this machine.
pub fn is_loopback(base_url: &str) -> bool {
    let host = url::Url::parse(base_url).ok().and_then(|u| u.host_str().map(str::to_string));
    host.as_deref().is_some_and(|h| {
        h == "localhost" || h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    })
}

fn default_backfill_days() -> u32 {
    90
}
fn default_backfill_limit_days() -> u32 {
    3660
}
fn default_checkpoint_interval() -> u64 {
    300
}
fn default_checkpoint_max_staged_mb() -> u64 {
    1024
}
fn default_cursor_overlap() -> u64 {
    300
}
fn default_relist_days() -> u32 {
    30
}
fn default_relist_every_hours() -> u32 {
    24
}

fn default_shards() -> u32 {
    1
}

fn default_api_base_url() -> String {
    ClientConfig::default().base_url
}
fn default_secret_env() -> String {
    "WITHINGS_CLIENT_SECRET".into()
}
fn default_rpm() -> u32 {
    ClientConfig::default().requests_per_minute
}
pub(crate) fn default_concurrency() -> usize {
    ClientConfig::default().concurrency
}
fn default_scopes() -> String {
    "user.metrics,user.activity,user.sleepevents".into()
}

impl PipelineFile {
    pub fn load(path: &Path) -> Result<PipelineFile, PipelineError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Read { file: file.clone(), source })?;
        let mut p: PipelineFile = toml::from_str(&text)
            .map_err(|e| PipelineError::Invalid { file: file.clone(), reason: e.message().to_string() + &at(&text, e.span()) })?;
        p.path = path.to_path_buf();
        p.check_numbers().map_err(|reason| PipelineError::Invalid { file: file.clone(), reason })?;
        p.resources()?;
        Ok(p)
    }

    /// Every number of the file within the range the program can act on: a value out of range
    /// is an error naming its key (never a panic later, when a duration or a date overflows).
    fn check_numbers(&self) -> Result<(), String> {
        fn int(key: &str, v: u64, min: u64, max: u64) -> Result<(), String> {
            if (min..=max).contains(&v) { Ok(()) } else { Err(format!("{key} = {v} is out of range: {min} to {max}")) }
        }
        fn real(key: &str, v: f64, min: f64, max: f64, min_open: bool) -> Result<(), String> {
            let above = if min_open { v > min } else { v >= min };
            if v.is_finite() && above && v <= max {
                Ok(())
            } else {
                let low = if min_open { "above" } else { "from" };
                Err(format!("{key} = {v} is out of range: {low} {min} to {max}"))
            }
        }
        const DAY: u64 = 86_400;
        let (src, s) = (&self.source, &self.sync);
        int("[source] requests_per_minute", u64::from(src.requests_per_minute), 1, 100_000)?;
        int("[source] concurrency", src.concurrency as u64, 1, 256)?;
        if let Some(l) = &self.lake {
            int("[lake] shards", u64::from(l.shards), 1, 4096)?;
        }
        int("[sync] backfill_days", u64::from(s.backfill_days), 1, 36_500)?;
        int("[sync] backfill_limit_days", u64::from(s.backfill_limit_days), 1, 36_500)?;
        int("[sync] checkpoint_interval_seconds", s.checkpoint_interval_seconds, 1, 7 * DAY)?;
        int("[sync] checkpoint_max_staged_mb", s.checkpoint_max_staged_mb, 1, 1 << 20)?;
        int("[sync] cursor_overlap_seconds", s.cursor_overlap_seconds, 0, 30 * DAY)?;
        int("[sync] relist_days", u64::from(s.relist_days), 0, 3650)?;
        int("[sync] relist_every_hours", u64::from(s.relist_every_hours), 0, 24 * 366)?;
        if let Some(n) = s.users_in_parallel {
            int("[sync] users_in_parallel", n as u64, 1, 1024)?;
        }
        if let Some(e) = &self.events {
            int("[events] max_samples_per_event", e.max_samples_per_event as u64, 1, 1_000_000)?;
            int("[events] final_wait_seconds", e.final_wait_seconds, 0, DAY)?;
            int("[events] delivered_retention_days", u64::from(e.delivered_retention_days), 0, 36_500)?;
            for w in &e.webhooks {
                let at = |k: &str| format!("[[events.webhooks]] '{}' {k}", w.name);
                real(&at("timeout_seconds"), w.timeout_seconds, 0.0, 3600.0, true)?;
                int(&at("concurrency"), w.concurrency as u64, 1, 256)?;
                if let Some(r) = w.max_events_per_second {
                    real(&at("max_events_per_second"), r, 0.001, 100_000.0, false)?;
                }
                if let Some(v) = &w.retry_schedule_seconds {
                    int(&at("retry_schedule_seconds (entries)"), v.len() as u64, 0, 100)?;
                    for x in v {
                        real(&at("retry_schedule_seconds"), *x, 0.0, (30 * DAY) as f64, false)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The resources `[sync] resources` names (all 17 by default).
    pub fn resources(&self) -> Result<Vec<crate::schema::Resource>, PipelineError> {
        use crate::schema::Resource;
        let Some(names) = &self.sync.resources else { return Ok(Resource::ALL.to_vec()) };
        let mut out = Vec::new();
        for n in names {
            let r = n.parse::<Resource>().map_err(|_| PipelineError::Invalid {
                file: self.path.display().to_string(),
                reason: format!(
                    "[sync] resources: unknown resource '{n}' (valid: {})",
                    Resource::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
                ),
            })?;
            if !out.contains(&r) {
                out.push(r);
            }
        }
        if out.is_empty() {
            return Err(PipelineError::Invalid {
                file: self.path.display().to_string(),
                reason: "[sync] resources is empty (leave it out for all 17)".into(),
            });
        }
        Ok(out)
    }

    /// The sync settings, resolved.
    pub fn sync_config(&self) -> Result<crate::sync::SyncConfig, PipelineError> {
        let mut cfg = self.sync.resolve(self.resources()?, self.source.concurrency);
        cfg.staging_dir = self.sync.staging_dir.as_deref().map(|p| self.relative(p));
        Ok(cfg)
    }

    /// A ready engine: the client (with `options`' request budget), the credentials store,
    /// the lake (created on first use with `[lake] shards`), `[sync]` and `[events]`.
    pub async fn engine(&self, options: &EngineOptions) -> Result<crate::sync::Engine, PipelineError> {
        let mut client_cfg = self.resolve_client_with(options.client_secret.as_ref())?.config().clone();
        client_cfg.requests_per_minute = match options.requests_per_minute {
            Some(RequestBudget::PerMinute(0)) => {
                return Err(PipelineError::Invalid {
                    file: self.path.display().to_string(),
                    reason: "a request budget of 0 per minute sends nothing: give 1 or more".into(),
                });
            }
            Some(RequestBudget::PerMinute(r)) => r,
            Some(RequestBudget::Unlimited) => {
                if !is_loopback(&client_cfg.base_url) {
                    return Err(PipelineError::Invalid {
                        file: self.path.display().to_string(),
                        reason: format!(
                            "an unlimited request budget is only for a loopback simulator, not {}: Withings allows 120",
                            client_cfg.base_url
                        ),
                    });
                }
                0
            }
            // N workers run at once: each takes its share of the application's budget.
            None => (client_cfg.requests_per_minute / options.workers.max(1)).max(1),
        };
        let location = self.resolve_lake_location()?;
        if !options.is_service && client_cfg.requests_per_minute > 0 {
            let total = self.source.requests_per_minute;
            if let Some(left) = crate::serve::budget::left_for_batch(&location, total).await {
                if left < client_cfg.requests_per_minute {
                    tracing::info!(
                        requests_per_minute = left,
                        "a service is running on this application: this run takes the budget it leaves"
                    );
                }
                client_cfg.requests_per_minute = client_cfg.requests_per_minute.min(left);
            }
        }
        let client = WithingsClient::new(client_cfg)?;
        let credentials = self.resolve_credentials().await?;
        let lake = crate::lake::Lake::open_or_create(location, self.shards()).await?;
        Ok(crate::sync::Engine::new(lake, client, credentials, self.sync_config()?).with_events(self.resolve_events()?))
    }

    /// The shard count of `[lake]` (1 without the section).
    pub fn shards(&self) -> u32 {
        self.lake.as_ref().map(|l| l.shards).unwrap_or(1)
    }

    fn relative(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_path_buf() } else { self.path.parent().unwrap_or(Path::new(".")).join(p) }
    }

    /// The credentials location, with a relative folder taken from the pipeline file's folder.
    pub fn credentials_url(&self) -> String {
        let u = &self.credentials.url;
        if u.contains("://") { u.clone() } else { self.relative(Path::new(u)).display().to_string() }
    }

    /// The lake location (a relative folder is taken from the pipeline file's folder).
    pub fn lake_url(&self) -> Result<String, PipelineError> {
        let lake = self.lake.as_ref().ok_or_else(|| PipelineError::Invalid {
            file: self.path.display().to_string(),
            reason: "no [lake] section (url = \"...\")".into(),
        })?;
        let u = &lake.url;
        Ok(if u.contains("://") { u.clone() } else { self.relative(Path::new(u)).display().to_string() })
    }

    /// The lake's storage location, opened with the pipeline's options.
    pub fn resolve_lake_location(&self) -> Result<crate::storage::Location, PipelineError> {
        let url = self.lake_url()?;
        let options = self.lake.as_ref().map(|l| l.options.clone()).unwrap_or_default();
        crate::storage::open_with(&url, &options)
            .map_err(|e| PipelineError::Invalid { file: self.path.display().to_string(), reason: e.to_string() })
    }

    pub fn authorize_url(&self) -> String {
        self.source.authorize_url.clone().unwrap_or_else(|| {
            if self.source.api_base_url.contains("wbsapi.withings.net") {
                "https://account.withings.com/oauth2_user/authorize2".into()
            } else {
                format!("{}/oauth2_user/authorize2", self.source.api_base_url.trim_end_matches('/'))
            }
        })
    }

    pub fn resolve_client(&self) -> Result<WithingsClient, PipelineError> {
        self.resolve_client_with(None)
    }

    /// The client, with `secret` when the program holds it (a secrets manager), else the
    /// value of the environment variable `[source] client_secret_env` names.
    pub fn resolve_client_with(&self, secret: Option<&Secret>) -> Result<WithingsClient, PipelineError> {
        let secret = match secret {
            Some(s) => s.clone(),
            None => {
                let var = &self.source.client_secret_env;
                Secret::new(
                    std::env::var(var)
                        .map_err(|_| PipelineError::MissingSecret { file: self.path.display().to_string(), var: var.clone() })?,
                )
            }
        };
        Ok(WithingsClient::new(ClientConfig {
            base_url: self.source.api_base_url.clone(),
            client_id: self.source.client_id.clone(),
            client_secret: secret,
            requests_per_minute: self.source.requests_per_minute,
            concurrency: self.source.concurrency,
            ..ClientConfig::default()
        })?)
    }

    /// The location of the `[events.files]` sink, if the pipeline has one (no secret needed:
    /// erasure cleans it without delivering anything).
    pub fn resolve_files_sink(&self) -> Result<Option<crate::storage::Location>, PipelineError> {
        let Some(f) = self.events.as_ref().and_then(|e| e.files.as_ref()) else { return Ok(None) };
        let invalid = |reason: String| PipelineError::Invalid { file: self.path.display().to_string(), reason };
        // A folder of the lake stays inside it: no `..`, no absolute path (a URL is explicit).
        if !f.prefix.contains("://")
            && (Path::new(&f.prefix).is_absolute() || f.prefix.split(['/', '\\']).any(|part| part == ".." || part == "."))
        {
            return Err(invalid(format!(
                "[events.files] prefix '{}' must be a folder inside the lake (no '..', '.' or leading '/'); give a URL \
                 (file:///..., s3://...) for a sink elsewhere",
                f.prefix
            )));
        }
        // ... and not one the lake itself uses (the outbox, state, manifests, tables).
        let first: Vec<&str> = f.prefix.split('/').filter(|p| !p.is_empty()).collect();
        let reserved = match first.as_slice() {
            [] => true,
            ["_events", rest, ..] => ["pending", "delivered", "dead", "staged"].contains(rest),
            ["_events"] => true,
            [top, ..] => {
                ["_state", "_manifests", "_raw", "_quarantine", "_lake.json"].contains(top)
                    || crate::schema::Resource::ALL.iter().any(|r| r.as_str() == *top)
            }
        };
        if !f.prefix.contains("://") && reserved {
            return Err(invalid(format!(
                "[events.files] prefix '{}' is a folder the lake itself uses: choose another (default _events/files)",
                f.prefix
            )));
        }
        let options = self.lake.as_ref().map(|l| l.options.clone()).unwrap_or_default();
        let location = if f.prefix.contains("://") {
            crate::storage::open_with(&f.prefix, &options)
        } else {
            let lake = self.lake_url()?;
            let joined = if lake.contains("://") {
                format!("{}/{}", lake.trim_end_matches('/'), f.prefix.trim_matches('/'))
            } else {
                Path::new(&lake).join(f.prefix.trim_matches('/')).display().to_string()
            };
            crate::storage::open_with(&joined, &options)
        }
        .map_err(|err| invalid(format!("[events.files] prefix: {err}")))?;
        Ok(Some(location))
    }

    /// The `[events]` settings with their sinks (secrets read from the environment), or
    /// `None` without the section.
    pub fn resolve_events(&self) -> Result<Option<crate::events::EventsConfig>, PipelineError> {
        use crate::events::{EventsConfig, Filter, Sink, SinkKind, Webhook, default_retry_schedule};
        let Some(e) = &self.events else { return Ok(None) };
        let file = self.path.display().to_string();
        let invalid = |reason: String| PipelineError::Invalid { file: file.clone(), reason };
        if e.webhooks.is_empty() && e.files.is_none() {
            return Err(invalid(
                "[events] has no [[events.webhooks]] and no [events.files]: add one, or remove the section".into(),
            ));
        }
        if e.max_samples_per_event == 0 {
            return Err(invalid("[events] max_samples_per_event must be at least 1".into()));
        }
        let mut sinks: Vec<Sink> = Vec::new();
        for w in &e.webhooks {
            let at = format!("[[events.webhooks]] '{}'", w.name);
            if w.name.is_empty()
                || w.name == "files"
                || !w.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(format!("{at}: name must be letters, digits, '-' or '_' (and not 'files')")));
            }
            if sinks.iter().any(|s| s.name == w.name) {
                return Err(invalid(format!("{at}: two webhooks have this name")));
            }
            let url = url::Url::parse(&w.url).map_err(|err| invalid(format!("{at}: url is not valid: {err}")))?;
            let loopback = url.host_str().is_some_and(|h| {
                h == "localhost" || h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            });
            if url.scheme() == "http" && !loopback && !w.allow_insecure {
                return Err(invalid(format!(
                    "{at}: url is http:// to a host other than loopback (events carry health data in clear text): use \
                     https://, or set allow_insecure = true"
                )));
            }
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid(format!("{at}: url must be http(s)")));
            }
            let secret = std::env::var(&w.secret_env)
                .map_err(|_| invalid(format!("{at}: secret_env names {}, which is not set", w.secret_env)))?;
            let key = crate::events::sign::key_of(&secret)
                .map_err(|reason| invalid(format!("{at}: {reason} (from {})", w.secret_env)))?;
            // Ranges are checked when the file is loaded (`check_numbers`).
            let schedule = match &w.retry_schedule_seconds {
                None => default_retry_schedule(),
                Some(v) if v.iter().any(|s| !s.is_finite() || *s < 0.0) => {
                    return Err(invalid(format!("{at}: retry_schedule_seconds must be seconds >= 0")));
                }
                Some(v) => v.iter().map(|s| std::time::Duration::from_secs_f64(*s)).collect(),
            };
            sinks.push(Sink {
                name: w.name.clone(),
                filter: Filter(w.event_types.clone()),
                kind: SinkKind::Webhook(Webhook {
                    url: w.url.clone(),
                    key,
                    max_per_second: w.max_events_per_second,
                    timeout: std::time::Duration::from_secs_f64(w.timeout_seconds),
                    concurrency: w.concurrency,
                }),
                retry_schedule: schedule,
            });
        }
        if let (Some(f), Some(location)) = (&e.files, self.resolve_files_sink()?) {
            sinks.push(Sink {
                name: "files".into(),
                filter: Filter(f.event_types.clone()),
                kind: SinkKind::Files(location),
                retry_schedule: default_retry_schedule(),
            });
        }
        Ok(Some(EventsConfig {
            team_id: e.team_id.clone(),
            max_samples_per_event: e.max_samples_per_event,
            history_as_daily: e.history_as_daily,
            final_wait: std::time::Duration::from_secs(e.final_wait_seconds),
            delivered_retention: (e.delivered_retention_days > 0)
                .then(|| std::time::Duration::from_secs(u64::from(e.delivered_retention_days) * 86_400)),
            sinks,
            provider_logo: e.provider_logo.clone(),
            legacy_fields: e.legacy_fields,
            hypnogram_events: e.hypnogram_events,
            sleep_stream_events: e.sleep_stream_events,
            sleep_cycle_events: e.sleep_cycle_events,
        }))
    }

    pub async fn resolve_credentials(&self) -> Result<Arc<CredentialStore>, PipelineError> {
        let key_file = self.credentials.key_file.as_deref().map(|p| self.relative(p)).unwrap_or_else(crypto::default_key_file);
        Ok(Arc::new(CredentialStore::open_with_key(&self.credentials_url(), &key_file).await?))
    }
}

fn at(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) => {
            let line = text[..r.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}
