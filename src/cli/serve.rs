//! `withings-lake serve --pipeline FILE`: the long-lived service ([`withings_lake::serve`]).
//! SIGTERM or Ctrl-C drains (readiness 503, notifications still answered for
//! `[serve] drain_seconds`, the running job commits what it staged, the leader lease is
//! released, exit 0); a second signal exits at once.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use withings_lake::pipeline::PipelineFile;
use withings_lake::serve::{self, Service};
use withings_lake::{EngineOptions, RequestBudget};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Pipeline file with a `[serve]` section.
    #[arg(long)]
    pub pipeline: PathBuf,
    /// Listen address, overriding `[serve] listen` (port 0 picks a free port; the address
    /// is logged).
    #[arg(long)]
    pub listen: Option<String>,
    /// Requests per minute for this process, overriding `[source] requests_per_minute`.
    #[arg(long)]
    pub requests_per_minute: Option<u32>,
    /// No request budget: only against a simulator on loopback.
    #[arg(long, conflicts_with = "requests_per_minute")]
    pub unthrottled: bool,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut pipeline = PipelineFile::load(&args.pipeline)?;
    if let (Some(l), Some(s)) = (&args.listen, pipeline.serve.as_mut()) {
        s.listen = l.clone();
    }
    // The service leaves `[serve] batch_share_percent` of the application's budget to batch
    // runs started beside it (they read what it uses from the lake).
    let share = pipeline.serve.as_ref().map(|s| s.batch_share_percent).unwrap_or(0).min(90);
    let budget = match (args.unthrottled, args.requests_per_minute) {
        (true, _) => Some(RequestBudget::Unlimited),
        (false, Some(r)) => Some(RequestBudget::PerMinute(r)),
        (false, None) => {
            let total = pipeline.source.requests_per_minute;
            Some(RequestBudget::PerMinute((total * (100 - share) / 100).max(1)))
        }
    };
    let options = EngineOptions { requests_per_minute: budget, workers: 1, client_secret: None, is_service: true };
    let engine = pipeline.engine(&options).await?;
    let svc = std::sync::Arc::new(Service::new(&pipeline, engine, |k| std::env::var(k).ok()).await?);
    let listen = svc.cfg.listen.clone();
    let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("[serve] listen = {listen}"))?;
    let running = serve::start(svc, listener).await?;
    println!("serving on http://{}", running.addr);
    let stop = running.shutdown_sender();
    tokio::spawn(async move {
        wait_signal().await;
        tracing::info!("draining (a second signal exits at once)");
        let _ = stop.send(true);
        wait_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    running.wait().await;
    Ok(())
}

async fn wait_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
