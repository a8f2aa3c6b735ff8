//! `withings-lake serve`: one long-lived process over the same lake, credentials and events
//! as the batch commands. It speaks the Withings subset of Vital's REST API (users, link
//! tokens, refresh, summaries and grouped time series) behind `X-Vital-API-Key`, receives
//! Withings notifications into a durable inbox in the lake, and runs the engine's jobs:
//! live jobs for notifications and refreshes, the fallback poll, and backfills of newly
//! linked users (preempted whenever live work waits).
//!
//! Several instances may run over one lake: all answer HTTP; the holder of the leader lease
//! (`_service/leader.lease`) alone runs jobs, polls, reconciles subscriptions and erases.
//! Everything an instance needs to hand over (users, link tokens, the inbox, refresh counts,
//! pending erasures) lives under `_service/` in the lake ([`store`]).

pub mod api;
pub mod budget;
pub mod config;
pub mod jobs;
pub mod link;
pub mod metrics;
pub mod notify;
pub mod read;
pub mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, RwLock, broadcast, watch};

pub use config::{ServeConfig, ServeConfigError, ServeSection};

use crate::sync::Engine;
use crate::withings::Endpoint;
use store::ServiceStore;

/// A user the service knows (`POST /v2/user`), linked to Withings or not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceUser {
    /// The Vital-style id (a UUID).
    pub user_id: String,
    /// The application's id: the lake's `user_id` column and the credentials record's id.
    pub client_user_id: String,
    pub created_on: DateTime<Utc>,
    /// Set by `DELETE /v2/user/{id}`: syncing stopped, erasure pending.
    #[serde(default)]
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A job the leader finished, for the refresh calls waiting on it.
#[derive(Debug, Clone)]
pub struct JobDone {
    pub user_id: String,
    pub ok: bool,
    pub at: DateTime<Utc>,
}

/// What the pipeline file says about the Withings application, for the link flow.
#[derive(Debug, Clone)]
pub struct App {
    pub client_id: String,
    pub authorize_url: String,
    pub scopes: String,
    /// The scopes the configured resources need.
    pub required_scopes: Vec<String>,
    /// The families the configured resources need.
    pub families: std::collections::BTreeSet<Endpoint>,
    /// A stable team id for Vital's `team_id` (derived from the client id).
    pub team_id: String,
    pub backfill_days: u32,
}

/// The shared state of one service instance.
pub struct Service {
    pub cfg: ServeConfig,
    pub app: App,
    pub engine: Arc<Engine>,
    pub store: ServiceStore,
    pub metrics: metrics::Metrics,
    /// The files sink, for erasures.
    pub files_sink: Option<crate::storage::Location>,
    /// Wakes the scheduler (a notification, a refresh or a link arrived).
    pub wake: Notify,
    pub done: broadcast::Sender<JobDone>,
    pub draining: AtomicBool,
    pub leader: AtomicBool,
    /// Withings userid -> the application's id, for notifications.
    pub userids: RwLock<HashMap<String, String>>,
    /// Serializes this instance's refresh-count updates.
    pub refresh_lock: tokio::sync::Mutex<()>,
    /// The data reads (`/v2/summary`, `/v2/timeseries`).
    pub reader: read::Reader,
    /// The URL browsers and Withings reach this instance at (set when it starts listening).
    pub public_url: std::sync::OnceLock<String>,
    /// "Now" for the runs' windows (the wall clock; a test's simulated one).
    pub clock: Clock,
}

/// Where the service reads the time.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ServeConfigError),
    #[error("the pipeline file {file} has no [serve] section")]
    NoSection { file: String },
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("cannot start the jobs thread: {0}")]
    Thread(std::io::Error),
    #[error("the lake is not readable at start: {0}")]
    Lake(String),
    #[error("the credentials store does not open with the configured key: {0}")]
    Credentials(String),
}

impl crate::error::Classify for ServeError {
    fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            ServeError::Pipeline(p) => p.class(),
            ServeError::Lake(_) | ServeError::Thread(_) => ErrorClass::Transient,
            _ => ErrorClass::Config,
        }
    }
}

impl Service {
    /// A service over `engine`, as `pipeline`'s `[serve]` section says, with secrets from
    /// `env`. Checks the lake and the credentials key before it answers anything.
    pub async fn new(
        pipeline: &crate::pipeline::PipelineFile,
        engine: Engine,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Service, ServeError> {
        let section =
            pipeline.serve.clone().ok_or_else(|| ServeError::NoSection { file: pipeline.path.display().to_string() })?;
        let cfg = section.resolve(env)?;
        let engine = Arc::new(engine);
        let store = ServiceStore::new(engine.lake().location.clone());
        store.list("users").await.map_err(|e| ServeError::Lake(e.to_string()))?;
        engine.credentials().list_all().await.map_err(|e| ServeError::Credentials(e.to_string()))?;
        let families = Endpoint::feeding(&engine.config().resources);
        let mut required_scopes: Vec<String> = families.iter().map(|f| f.scope().to_string()).collect();
        required_scopes.sort();
        required_scopes.dedup();
        let app = App {
            client_id: pipeline.source.client_id.clone(),
            authorize_url: pipeline.authorize_url(),
            scopes: pipeline.source.scopes.clone(),
            required_scopes,
            families,
            team_id: uuid::Uuid::new_v5(
                &uuid::Uuid::NAMESPACE_URL,
                format!("withings-lake/team/{}", pipeline.source.client_id).as_bytes(),
            )
            .to_string(),
            backfill_days: engine.config().backfill_days,
        };
        let (done, _) = broadcast::channel(256);
        // Read cursors are signed under a key derived from the signing key (never the key
        // itself, which also signs link states).
        let cursor_key: [u8; 32] = {
            use sha2::Digest;
            sha2::Sha256::new()
                .chain_update(b"withings-lake read cursors\0")
                .chain_update(cfg.signing_key.expose())
                .finalize()
                .into()
        };
        let limits = read::ReadLimits { max_window_days: cfg.read_max_days, page_size: cfg.read_page_size };
        let mut reader = read::Reader::new(engine.lake().clone(), cursor_key, limits);
        if let Some(events) = engine.events() {
            reader = reader.with_source_style(crate::events::objects::SourceStyle::of(events));
        }
        Ok(Service {
            cfg,
            app,
            engine,
            store,
            metrics: metrics::Metrics::new(),
            files_sink: pipeline.resolve_files_sink()?,
            wake: Notify::new(),
            done,
            draining: AtomicBool::new(false),
            leader: AtomicBool::new(false),
            userids: RwLock::new(HashMap::new()),
            refresh_lock: tokio::sync::Mutex::new(()),
            reader,
            clock: Arc::new(Utc::now),
            public_url: std::sync::OnceLock::new(),
        })
    }

    /// Reads the time from `clock` instead of the wall clock (tests against a simulator
    /// whose clock is moved).
    pub fn with_clock(mut self, clock: Clock) -> Service {
        self.clock = clock;
        self
    }

    /// `[serve] public_url`, else `http://<bound address>`.
    pub fn public_url(&self) -> &str {
        self.public_url.get().map(String::as_str).unwrap_or("http://127.0.0.1")
    }

    pub fn callback_url(&self) -> String {
        format!("{}/link/callback", self.public_url())
    }

    pub fn notify_url(&self) -> String {
        format!("{}/withings/notify/{}", self.public_url(), self.cfg.notify_secret.expose())
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The routes: Vital's API under `/v2` (API key), the link pages, the notification
    /// callback, health and metrics.
    pub fn router(self: &Arc<Self>) -> Router {
        let v2 = Router::new()
            .route("/v2/user", post(api::create_user))
            .route("/v2/user/{user_id}", get(api::get_user).delete(api::delete_user))
            .route("/v2/user/resolve/{client_user_id}", get(api::resolve_user))
            .route("/v2/user/providers/{user_id}", get(api::providers))
            .route("/v2/user/{user_id}/{provider}", delete(api::deregister_provider))
            .route("/v2/user/refresh/{user_id}", post(api::refresh))
            .route("/v2/link/token", post(link::create_token))
            .route("/v2/summary/{kind}/{user_id}", get(api::summary))
            .route("/v2/timeseries/{user_id}/{resource}/grouped", get(api::grouped))
            .route_layer(middleware::from_fn_with_state(self.clone(), api::require_api_key))
            .layer(DefaultBodyLimit::max(16 * 1024));
        let open = Router::new()
            .route("/link", get(link::page_route))
            .route("/link/callback", get(link::callback))
            .route("/withings/notify/{secret}", any(notify::receive).layer(DefaultBodyLimit::max(notify::MAX_BODY)))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text));
        v2.merge(open)
            .fallback(|| async { (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"detail": "Not Found"}))) })
            .layer(middleware::from_fn_with_state(self.clone(), count_requests))
            .with_state(self.clone())
    }

    /// The service's user by Vital id (deleted ones included).
    pub async fn user(&self, user_id: &str) -> Result<Option<ServiceUser>, store::StoreError> {
        self.store.get(&self.store.key(&["users", &format!("{user_id}.json")])).await
    }

    /// The application's id of a Withings userid (from the credentials store, cached).
    pub async fn user_of_withings(&self, withings_userid: &str) -> Option<String> {
        if let Some(u) = self.userids.read().await.get(withings_userid) {
            return Some(u.clone());
        }
        self.reload_userids().await;
        self.userids.read().await.get(withings_userid).cloned()
    }

    pub async fn reload_userids(&self) {
        match self.engine.credentials().list().await {
            Ok(records) => {
                let map = records.into_iter().map(|r| (r.withings_userid, r.user_id)).collect();
                *self.userids.write().await = map;
            }
            Err(e) => tracing::warn!(error = %e, "cannot list the credentials store to route notifications"),
        }
    }

    /// Writes an inbox entry and wakes the scheduler.
    pub async fn enqueue(&self, entry: &jobs::InboxEntry) -> Result<(), store::StoreError> {
        let mut rand = [0u8; 6];
        getrandom::fill(&mut rand).expect("randomness");
        let name = format!("{}-{}.json", Utc::now().format("%Y%m%dT%H%M%S%6fZ"), hex::encode(rand));
        self.store.put(&self.store.key(&["inbox", &name]), entry).await?;
        self.wake.notify_one();
        Ok(())
    }
}

async fn readyz(State(s): State<Arc<Service>>) -> Response {
    if s.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    if let Err(e) = s.store.list("users").await {
        tracing::warn!(error = %e, "readyz: the lake does not answer");
        return (StatusCode::SERVICE_UNAVAILABLE, "lake not readable").into_response();
    }
    match s.engine.credentials().list_all().await {
        Ok(l) if l.records.is_empty() && !l.unreadable.is_empty() => {
            (StatusCode::SERVICE_UNAVAILABLE, "the credentials key opens no record").into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "readyz: the credentials store does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "credentials not readable").into_response()
        }
        Ok(_) => {
            let role = if s.leader.load(Ordering::Relaxed) { "leader" } else { "follower" };
            (StatusCode::OK, role).into_response()
        }
    }
}

async fn metrics_text(State(s): State<Arc<Service>>) -> Response {
    s.metrics.observe_client(&s.engine.client().accounting());
    ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.encode())
        .into_response()
}

async fn count_requests(State(s): State<Arc<Service>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    // The notification path carries the secret: the metric names the route pattern only.
    let resp = next.run(req).await;
    let labels = metrics::RouteLabels { route, status: resp.status().as_u16() };
    s.metrics.http_requests.get_or_create(&labels).inc();
    resp
}

/// A running service: its address, and the handle that stops it.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Begins the drain (as SIGTERM does) and waits for the end.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// The handle a signal handler uses.
    pub fn shutdown_sender(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Starts the HTTP server and the scheduler. On shutdown: readiness goes 503, notifications
/// are still answered for `drain`, the running job commits what is staged, the leader lease
/// is released.
pub async fn start(svc: Arc<Service>, listener: tokio::net::TcpListener) -> Result<Running, ServeError> {
    let addr = listener.local_addr().map_err(|source| ServeError::Listen { addr: svc.cfg.listen.clone(), source })?;
    let _ = svc.public_url.set(svc.cfg.public_url.clone().unwrap_or_else(|| format!("http://{addr}")));
    let (shutdown, rx) = watch::channel(false);
    let router = svc.router();
    let mut http_stop = rx.clone();
    let drain = svc.cfg.drain;
    let svc2 = svc.clone();
    let server = tokio::spawn(async move {
        let stop = async move {
            let _ = http_stop.wait_for(|v| *v).await;
            svc2.draining.store(true, Ordering::Relaxed);
            tokio::time::sleep(drain).await;
        };
        if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
            tracing::error!(error = %e, "the HTTP server stopped");
        }
    });
    // Jobs run on their own runtime (two workers): harmonizing and committing never delay an
    // HTTP answer (a notification must be answered within 2 s whatever the leader is doing).
    let (ended, scheduler) = tokio::sync::oneshot::channel::<()>();
    let jobs = jobs::Scheduler::new(svc.clone(), rx);
    std::thread::Builder::new()
        .name("withings-lake-jobs".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("withings-lake-job")
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(jobs.run()),
                Err(e) => tracing::error!(error = %e, "cannot start the jobs runtime: no job runs"),
            }
            let _ = ended.send(());
        })
        .map_err(ServeError::Thread)?;
    let task = tokio::spawn(async move {
        let _ = scheduler.await;
        let _ = server.await;
    });
    tracing::info!(%addr, public_url = %svc.public_url(), "serving");
    Ok(Running { addr, shutdown, task })
}
