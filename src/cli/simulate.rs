//! `withings-lake simulate`: the Withings API simulator on loopback.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use chrono::DateTime;
use clap::Args;
use withings_simulator::{SimConfig, Simulator};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Number of synthetic users.
    #[arg(long, default_value_t = 5)]
    pub users: usize,
    /// Seed of the synthetic world: same seed and flags, same bytes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Requests per sliding 60 s window before status 601 (0 = unlimited).
    #[arg(long, default_value_t = 120)]
    pub rate_limit_per_minute: u32,
    /// Latency added to every API request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Simulated clock start (RFC 3339); default: the real time now.
    #[arg(long)]
    pub now: Option<String>,
    /// How many days of history users have before the clock's start.
    #[arg(long, default_value_t = 400)]
    pub history_days: i64,
    /// Items per page on paginated list endpoints.
    #[arg(long, default_value_t = 200)]
    pub page_size: usize,
    /// OAuth2 client id the simulator accepts.
    #[arg(long, default_value = "demo-client")]
    pub client_id: String,
    /// OAuth2 client secret the simulator accepts.
    #[arg(long, default_value = "demo-secret", hide_default_value = true)]
    pub client_secret: String,
    /// Keep the simulated clock still unless `POST /_sim/clock` moves it.
    #[arg(long)]
    pub freeze_clock: bool,
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let now = match &args.now {
        Some(t) => Some(
            DateTime::parse_from_rfc3339(t)
                .map_err(|e| withings_simulator::SimError::Config {
                    flag: "--now",
                    reason: format!("'{t}' is not RFC 3339: {e}"),
                })?
                .timestamp(),
        ),
        None => None,
    };
    let cfg = SimConfig {
        listen: args.listen,
        users: args.users,
        seed: args.seed,
        rate_limit_per_minute: args.rate_limit_per_minute,
        latency_ms: args.latency_ms,
        now,
        history_days: args.history_days,
        page_size: args.page_size,
        client_id: args.client_id,
        client_secret: args.client_secret,
        freeze_clock: args.freeze_clock,
    };
    let sim = Simulator::start(cfg.clone()).await.context("starting the simulator")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", sim.base_url())?;
        out.flush()?;
    }
    tracing::info!(
        addr = %sim.addr(),
        users = cfg.users,
        seed = cfg.seed,
        rate_limit_per_minute = cfg.rate_limit_per_minute,
        frozen_clock = cfg.freeze_clock,
        "simulator ready"
    );
    shutdown_signal().await;
    tracing::info!("simulator stopping");
    sim.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
