//! `withings-lake events`: the outbox of change events (see [`withings_lake::events`]).
//!
//! - `list [--status pending|delivered|dead] [--user-id U] [--event-type PATTERN] [--format
//!   table|json]`;
//! - `deliver [--wait-seconds N]`: sends what is due, waiting up to N seconds for retries
//!   that fall due (exit 0 when nothing failed, 1 when events went dead or still wait for a
//!   retry, 3 when another process is delivering);
//! - `redeliver (--id ID ... | --all-dead)`: queues them again (same ids) and delivers.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use withings_lake::events::{DeliverOptions, Deliverer, DeliverySummary, Filter, Outbox, Record, Status};
use withings_lake::lake::Lake;
use withings_lake::pipeline::PipelineFile;

use super::Usage;

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(subcommand)]
    pub command: EventsCommand,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List events in the outbox.
    List(ListArgs),
    /// Deliver pending events that are due.
    Deliver(DeliverArgs),
    /// Queue dead (or delivered) events again, with their ids, and deliver them.
    Redeliver(RedeliverArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long)]
    pub pipeline: PathBuf,
    /// Only this status (default: all three).
    #[arg(long, value_enum)]
    pub status: Option<Status>,
    #[arg(long)]
    pub user_id: Option<String>,
    /// Event types: an exact name or a wildcard such as `daily.data.*`.
    #[arg(long)]
    pub event_type: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct DeliverArgs {
    #[arg(long)]
    pub pipeline: PathBuf,
    /// Wait up to this long for retries that fall due, then stop (later retries are left to
    /// the next run or `events deliver`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=604_800), default_value_t = 30)]
    pub wait_seconds: u64,
}

#[derive(Debug, Args)]
pub struct RedeliverArgs {
    #[arg(long)]
    pub pipeline: PathBuf,
    /// Event ids (`msg_...`), dead or delivered.
    #[arg(long = "id", required_unless_present = "all_dead")]
    pub ids: Vec<String>,
    /// Every dead event.
    #[arg(long, conflicts_with = "ids")]
    pub all_dead: bool,
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=604_800), default_value_t = 30)]
    pub wait_seconds: u64,
}

/// Exit 1 (partial): some events were not delivered.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Undelivered(pub String);

/// Exit 3: another process is delivering.
#[derive(Debug, thiserror::Error)]
#[error("another process holds the delivery lease (_events/delivery.lock); it is delivering these events")]
pub struct DeliveryBusy;

pub async fn run(args: EventsArgs) -> anyhow::Result<()> {
    match args.command {
        EventsCommand::List(a) => list(a).await,
        EventsCommand::Deliver(a) => {
            let (outbox, p) = open(&a.pipeline, true).await?;
            recover(&p, &outbox).await?;
            let summary = Deliverer::new(outbox)?
                .deliver(DeliverOptions { wait: Duration::from_secs(a.wait_seconds), budget: None })
                .await?;
            finish(&summary)
        }
        EventsCommand::Redeliver(a) => {
            let (outbox, _) = open(&a.pipeline, true).await?;
            let queued = outbox.redeliver(&a.ids, a.all_dead, chrono::Utc::now()).await?;
            println!("queued {} events again", queued.len());
            let summary = Deliverer::new(outbox)?
                .deliver(DeliverOptions { wait: Duration::from_secs(a.wait_seconds), budget: None })
                .await?;
            finish(&summary)
        }
    }
}

async fn open(pipeline: &std::path::Path, need_sinks: bool) -> anyhow::Result<(Outbox, PipelineFile)> {
    let p = PipelineFile::load(pipeline)?;
    let cfg = p.resolve_events()?;
    if need_sinks && cfg.is_none() {
        return Err(Usage(format!(
            "pipeline file {}: no [events] section, so there is nowhere to deliver to",
            pipeline.display()
        ))
        .into());
    }
    let lake = Lake::open(p.resolve_lake_location()?).await?;
    let (sinks, retention) = cfg.map(|c| (c.sinks, c.delivered_retention)).unwrap_or_default();
    Ok((Outbox::new(lake.location, sinks).with_retention(retention), p))
}

/// Enqueues the events of interrupted commits, for each shard whose lease is free (a shard
/// being written is left to its writer, which recovers them itself).
async fn recover(p: &PipelineFile, outbox: &Outbox) -> anyhow::Result<()> {
    let Some(cfg) = p.resolve_events()? else { return Ok(()) };
    let lake = Lake::open(p.resolve_lake_location()?).await?;
    // Events name people by their Vital user ids: the lake's users table has them (written by
    // the run before its commits), the credentials records too where they open here.
    let vital_ids: std::collections::HashMap<String, String> = match p.resolve_credentials().await {
        Ok(store) => store
            .list_all()
            .await
            .map(|l| l.records.into_iter().filter_map(|r| Some((r.user_id, r.vital_user_id?))).collect())
            .unwrap_or_default(),
        Err(_) => Default::default(),
    };
    for shard in 0..lake.meta.shards {
        let lease = match lake.lease_shard(shard, &withings_lake::lease::process_holder(), Duration::ZERO).await {
            Ok(l) => l,
            Err(withings_lake::lake::LakeError::Busy { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let recovered = withings_lake::events::recover(&lake, shard, &cfg, outbox, &vital_ids).await;
        lease.release().await;
        let n = recovered?.len();
        if n > 0 {
            println!("shard {shard}: enqueued {n} events of an interrupted commit");
        }
    }
    Ok(())
}

fn finish(s: &DeliverySummary) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(s)?);
    if s.busy {
        return Err(DeliveryBusy.into());
    }
    if s.dead > 0 || s.pending > 0 {
        return Err(
            Undelivered(format!("{} events went dead and {} are still pending (see `events list`)", s.dead, s.pending)).into()
        );
    }
    Ok(())
}

async fn list(a: ListArgs) -> anyhow::Result<()> {
    // Listing works without an [events] section (the outbox may hold events of an earlier
    // configuration).
    let p = PipelineFile::load(&a.pipeline)?;
    let lake = Lake::open(p.resolve_lake_location()?).await?;
    let outbox = Outbox::new(lake.location, Vec::new());
    let filter = a.event_type.map(|t| Filter(vec![t]));
    let mut rows: Vec<(Status, Record)> = Vec::new();
    for status in Status::ALL {
        if a.status.is_some_and(|s| s != status) {
            continue;
        }
        for r in outbox.list(status).await? {
            if a.user_id.as_ref().is_some_and(|u| *u != r.user_id) || filter.as_ref().is_some_and(|f| !f.matches(&r.event_type)) {
                continue;
            }
            rows.push((status, r));
        }
    }
    match a.format {
        Format::Json => {
            let out: Vec<serde_json::Value> = rows
                .iter()
                .map(|(s, r)| {
                    let mut v = serde_json::to_value(r).expect("a record serializes");
                    v["status"] = serde_json::Value::from(s.as_str());
                    v
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Table => {
            println!(
                "{:<9} {:<31} {:<12} {:<36} {:<16} {:>8} {:>6}  next attempt / delivered / error",
                "status", "id", "sink", "event_type", "user_id", "attempts", "http"
            );
            for (s, r) in &rows {
                let when = match s {
                    Status::Pending => format!("next {}", r.next_attempt_at.to_rfc3339()),
                    Status::Delivered => format!("delivered {}", r.delivered_at.map(|t| t.to_rfc3339()).unwrap_or_default()),
                    Status::Dead => String::new(),
                };
                let err = r.last_error.as_deref().map(|e| format!(" {e}")).unwrap_or_default();
                println!(
                    "{:<9} {:<31} {:<12} {:<36} {:<16} {:>8} {:>6}  {when}{err}",
                    s.as_str(),
                    r.id,
                    r.sink,
                    r.event_type,
                    r.user_id,
                    r.attempts,
                    r.last_status.map(|c| c.to_string()).unwrap_or_else(|| "-".into())
                );
            }
            println!("{} events", rows.len());
        }
    }
    Ok(())
}
