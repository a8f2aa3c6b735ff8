//! What `sync`, `backfill` and `refresh` share: the pipeline, the shard, the report, the
//! progress line, the signals, and the exit code of a run.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use withings_lake::pipeline::{EngineOptions, PipelineFile, RequestBudget, is_loopback};
use withings_lake::sync::{Engine, Failed, Mode, Report, RunSpec, Users};
use withings_lake::withings::WithingsClient;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ReportFormat {
    Text,
    Json,
    None,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Pipeline file (source, credentials, lake, [sync]).
    #[arg(long)]
    pub pipeline: PathBuf,
    /// Only the users of shard i of N (stable hash of the user id); N must be the lake's
    /// shard count. The application's request budget is split evenly between shards.
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<(u32, u32)>,
    /// Print the plan (requests per endpoint, ETA under the rate limit) and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// The run report on stdout: text, json (one object, for schedulers) or none.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub report: ReportFormat,
    /// Wait this long for another writer to release a shard before exiting with 3 (busy).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=604_800), default_value_t = 0)]
    pub lease_wait_seconds: u64,
    /// The reference time for default windows (RFC 3339; default: now). For replays.
    #[arg(long, value_parser = parse_time)]
    pub now: Option<DateTime<Utc>>,
    /// Override `[source] requests_per_minute` for this process: a number from 1, or
    /// `unlimited` (only against a loopback simulator: Withings allows 120).
    #[arg(long, value_parser = parse_rpm)]
    pub requests_per_minute: Option<Rpm>,
}

/// `--requests-per-minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpm {
    Limit(u32),
    Unlimited,
}

fn parse_rpm(s: &str) -> Result<Rpm, String> {
    match s.trim() {
        "unlimited" => Ok(Rpm::Unlimited),
        n => match n.parse::<u32>() {
            Ok(0) => Err("0 is not a budget: give 1 or more, or `unlimited` (for a loopback simulator)".into()),
            Ok(n) if n <= 100_000 => Ok(Rpm::Limit(n)),
            _ => Err(format!("'{s}' is not a number from 1 to 100000, nor `unlimited`")),
        },
    }
}

fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let (i, n) = s.split_once('/').ok_or_else(|| format!("'{s}' is not i/N (e.g. 0/4)"))?;
    let (i, n) = (i.trim().parse::<u32>(), n.trim().parse::<u32>());
    match (i, n) {
        (Ok(i), Ok(n)) if n > 0 && i < n => Ok((i, n)),
        _ => Err(format!("'{s}' is not i/N with 0 <= i < N")),
    }
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|e| format!("'{s}' is not RFC 3339: {e}"))
}

/// Some users failed or the run was interrupted: the report names them (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {selected} users failed and {interrupted} did not finish (each is reported above)")]
pub struct Partial {
    pub failed: usize,
    pub interrupted: usize,
    pub selected: usize,
}

impl RunArgs {
    pub async fn engine(&self, pipeline: &PipelineFile) -> anyhow::Result<Engine> {
        let options = EngineOptions {
            is_service: false,
            requests_per_minute: self.requests_per_minute.map(|r| match r {
                Rpm::Limit(n) => RequestBudget::PerMinute(n),
                Rpm::Unlimited => RequestBudget::Unlimited,
            }),
            workers: self.shard.map(|(_, n)| n).unwrap_or(1),
            client_secret: None,
        };
        if options.requests_per_minute == Some(RequestBudget::Unlimited) && !is_loopback(&pipeline.source.api_base_url) {
            return Err(super::Usage(format!(
                "--requests-per-minute unlimited is only for a loopback simulator, not {}: Withings allows 120",
                pipeline.source.api_base_url
            ))
            .into());
        }
        Ok(pipeline.engine(&options).await?)
    }
}

/// Runs `mode` for `users` and prints the report; `Err(Partial)` when some users failed.
pub async fn execute(args: &RunArgs, mode: Mode, users: Users) -> anyhow::Result<()> {
    let pipeline = PipelineFile::load(&args.pipeline)?;
    let engine = args.engine(&pipeline).await?;
    let spec = RunSpec {
        mode,
        users,
        shard: args.shard,
        now: args.now.unwrap_or_else(Utc::now),
        lease_wait: Duration::from_secs(args.lease_wait_seconds),
        dry_run: args.dry_run,
    };
    match run_with_signals(&engine, &spec).await {
        Ok(report) => {
            print_report(&report, args.report)?;
            finish(&report)
        }
        Err(failed) => {
            // What was done before the fatal error is committed: say so.
            print_report(&failed.report, args.report)?;
            Err(failed.into())
        }
    }
}

/// Runs the engine; the first SIGINT or SIGTERM stops new requests and commits what is
/// staged. A progress line is drawn when stderr is a terminal.
pub async fn run_with_signals(engine: &Engine, spec: &RunSpec) -> Result<Report, Failed> {
    let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        tracing::warn!("signal received: finishing the current checkpoint, then exiting");
        let _ = cancel_tx.send(true);
        // A second signal stops at once.
        wait_for_signal().await;
        std::process::exit(130);
    });
    let progress = (std::io::stderr().is_terminal() && !spec.dry_run)
        .then(|| tokio::spawn(draw_progress(engine.progress().clone(), engine.client().clone(), spec.mode.name())));
    let result = engine.run(spec, cancel_rx).await;
    signals.abort();
    if let Some(p) = progress {
        p.abort();
        eprint!("\r\x1b[2K");
    }
    result
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
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

async fn draw_progress(p: Arc<withings_lake::sync::Progress>, client: WithingsClient, mode: &'static str) {
    let started = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (total, done) = (p.users_total.load(Ordering::Relaxed), p.users_done.load(Ordering::Relaxed));
        let failed = p.users_failed.load(Ordering::Relaxed);
        let requests = client.accounting().requests;
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let eta = if done > 0 && total > done {
            let left = secs / done as f64 * (total - done) as f64;
            format!("{}m{:02}s", (left / 60.0) as u64, (left % 60.0) as u64)
        } else {
            "-".into()
        };
        let width = 24usize;
        let filled = (done * width).checked_div(total).unwrap_or(0).min(width);
        eprint!(
            "\r\x1b[2K{mode} [{}{}] users {done}/{total} ({failed} failed) · {requests} requests ({:.1}/s) · checkpoints {} · ETA {eta}",
            "#".repeat(filled),
            ".".repeat(width - filled),
            requests as f64 / secs,
            p.checkpoints.load(Ordering::Relaxed),
        );
    }
}

pub fn print_report(report: &Report, format: ReportFormat) -> anyhow::Result<()> {
    match format {
        ReportFormat::Json => println!("{}", serde_json::to_string(report).context("the report serializes")?),
        ReportFormat::Text => print!("{}", report.to_text()),
        ReportFormat::None => {}
    }
    Ok(())
}

pub fn finish(report: &Report) -> anyhow::Result<()> {
    if report.exit_code() == 0 {
        Ok(())
    } else {
        Err(Partial { failed: report.users.failed, interrupted: report.users.interrupted, selected: report.users.selected }
            .into())
    }
}
