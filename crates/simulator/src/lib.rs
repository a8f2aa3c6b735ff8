//! A faithful Withings API emulator with deterministic synthetic users.
//!
//! `withings-lake simulate` serves it on loopback; tests, the demo and the benchmarks start it
//! in-process with [`Simulator::start`]. It speaks the API as the real Withings API behaves
//! describes it, quirks included: every answer is HTTP 200 with a `{status, body, error}`
//! envelope, `more` is 0/1 on getmeas and a bool elsewhere, `userid` is a string in one token
//! response and an integer in the other, intraday and sleep get obey the 24-hour rule, sleep
//! segments come unsorted, and more than `--rate-limit-per-minute` requests in a sliding 60 s
//! window get status 601 (rejected requests count too).
//!
//! Invariants:
//! - Data is generated on demand from `(seed, user, day)`; only per-user profiles, issued
//!   tokens and subscriptions are kept, so memory does not grow with users x days.
//! - What exists depends on the simulated clock ([`clock`]): data appears when its device
//!   syncs, and today's activity grows as the clock advances.
//! - The same flags (with a frozen clock) give byte-identical responses.
//! - Admin endpoints live under `/_sim/` and never count toward the rate limit.

mod activity;
mod admin;
mod api;
pub mod clock;
pub mod devices;
mod faults;
mod heart;
mod measures;
mod notify;
mod oauth;
pub mod rng;
mod sleep;
mod stats;
mod workouts;
pub mod world;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{any, get};

use clock::SimClock;
use world::World;

/// Everything `withings-lake simulate` can be told (flag names are a contract).
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub listen: SocketAddr,
    pub users: usize,
    pub seed: u64,
    /// Requests per sliding 60 s window before status 601; 0 disables the limit.
    pub rate_limit_per_minute: u32,
    /// Added to every API request.
    pub latency_ms: u64,
    /// Simulated clock start, epoch seconds; `None` = the real time at start.
    pub now: Option<i64>,
    /// How far back users have data.
    pub history_days: i64,
    /// Items per page on the paginated list endpoints.
    pub page_size: usize,
    pub client_id: String,
    pub client_secret: String,
    /// Keep the simulated clock still unless `/_sim/clock` moves it.
    pub freeze_clock: bool,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            users: 5,
            seed: 42,
            rate_limit_per_minute: 120,
            latency_ms: 0,
            now: None,
            history_days: 400,
            page_size: 200,
            client_id: "demo-client".to_string(),
            client_secret: "demo-secret".to_string(),
            freeze_clock: false,
        }
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("invalid simulator setting {flag}: {reason}")]
    Config { flag: &'static str, reason: String },
}

/// Shared state of a running simulator.
pub(crate) struct State {
    pub cfg: SimConfig,
    pub world: World,
    pub clock: SimClock,
    pub tokens: Mutex<oauth::Tokens>,
    /// Instants of the requests inside the sliding rate-limit window (real time).
    pub window: Mutex<VecDeque<Instant>>,
    /// Token requests by argument hash, for the "same arguments within 10 s" rule.
    pub recent_token_requests: Mutex<HashMap<u64, Instant>>,
    pub faults: Mutex<faults::Faults>,
    pub stats: Mutex<stats::Stats>,
    pub subscriptions: Mutex<notify::Subscriptions>,
    /// Notifications have been sent for data changed up to this simulated instant.
    pub notified_until: tokio::sync::Mutex<i64>,
    pub http: reqwest::Client,
}

/// A running simulator; dropping it (or [`Simulator::shutdown`]) stops the server.
pub struct Simulator {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Simulator {
    /// Binds `cfg.listen` and serves until shut down.
    pub async fn start(cfg: SimConfig) -> Result<Simulator, SimError> {
        if cfg.users == 0 {
            return Err(SimError::Config { flag: "--users", reason: "must be at least 1".into() });
        }
        if cfg.page_size == 0 {
            return Err(SimError::Config { flag: "--page-size", reason: "must be at least 1".into() });
        }
        if cfg.history_days < 1 {
            return Err(SimError::Config { flag: "--history-days", reason: "must be at least 1".into() });
        }
        let start = cfg.now.unwrap_or_else(|| chrono::Utc::now().timestamp());
        let world = World::new(cfg.seed, cfg.users, start, cfg.history_days);
        let tokens = oauth::Tokens::new(&world);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| SimError::Config { flag: "http client", reason: e.to_string() })?;
        let state = Arc::new(State {
            clock: SimClock::new(start, cfg.freeze_clock),
            faults: Mutex::new(faults::Faults::new(cfg.seed)),
            cfg: cfg.clone(),
            world,
            tokens: Mutex::new(tokens),
            window: Mutex::new(VecDeque::new()),
            recent_token_requests: Mutex::new(HashMap::new()),
            stats: Mutex::new(stats::Stats::default()),
            subscriptions: Mutex::new(notify::Subscriptions::default()),
            notified_until: tokio::sync::Mutex::new(start),
            http,
        });
        let listener =
            tokio::net::TcpListener::bind(cfg.listen).await.map_err(|source| SimError::Bind { addr: cfg.listen, source })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind { addr: cfg.listen, source })?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = router(state.clone());
        let ticker_state = state.clone();
        let server = tokio::spawn(async move {
            let ticker = tokio::spawn(notify::ticker(ticker_state));
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
            ticker.abort();
        });
        Ok(Simulator { addr, state, shutdown: Some(tx), server: Some(server) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT`, the API base URL to give a client.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Current simulated time, epoch seconds.
    pub fn now(&self) -> i64 {
        self.state.clock.now()
    }

    /// Stops accepting connections and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/oauth2_user/authorize2", get(oauth::authorize))
        .route("/measure", any(api::measure))
        .route("/v2/measure", any(api::measure_v2))
        .route("/v2/sleep", any(api::sleep))
        .route("/v2/heart", any(api::heart))
        .route("/v2/user", any(api::user))
        .route("/notify", any(api::notify))
        .route("/v2/oauth2", any(api::oauth2))
        .route("/v2/signature", any(api::signature))
        .route("/_sim/users", get(admin::users))
        .route("/_sim/clock", get(admin::get_clock).post(admin::set_clock))
        .route("/_sim/faults", get(admin::list_faults).post(admin::add_fault).delete(admin::clear_faults))
        .route("/_sim/stats", get(admin::stats))
        .with_state(state)
}

pub use oauth::signature as sign;
