//! `withings-lake reharmonize [--pipeline FILE | --lake URL] [--resources a,b] [--shard N]`:
//! rebuilds tables from the raw landing, without calling Withings. Prints one JSON summary
//! per shard.

use std::time::Duration;

use clap::Args;
use serde_json::json;
use withings_lake::lake::Manifest;
use withings_lake::schema::Resource;

use super::query::LakeArgs;

#[derive(Debug, Args)]
pub struct ReharmonizeArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Resources to rebuild (comma-separated); all 17 when left out.
    #[arg(long, value_delimiter = ',', value_parser = |s: &str| s.parse::<Resource>().map_err(|e| e.to_string()))]
    pub resources: Vec<Resource>,
    /// Only this shard; every shard of the lake when left out.
    #[arg(long)]
    pub shard: Option<u32>,
    /// How long to wait for a running writer to release a shard.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=604_800), default_value_t = 300)]
    pub lease_wait_seconds: u64,
    /// Take the shard lease even if another writer holds it (only when you know that writer
    /// is dead, e.g. a killed job, and will not wait for its lease to expire).
    #[arg(long)]
    pub break_lease: bool,
}

pub async fn run(args: ReharmonizeArgs) -> anyhow::Result<()> {
    let lake = args.lake.open().await?;
    let resources = if args.resources.is_empty() { Resource::ALL.to_vec() } else { args.resources.clone() };
    let shards: Vec<u32> = match args.shard {
        Some(s) => vec![s],
        None => (0..lake.meta.shards).collect(),
    };
    let run_id = format!("reharmonize-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"));
    let holder = format!("{run_id}-{}", withings_lake::lease::process_holder());
    for shard in shards {
        if args.break_lease {
            tracing::warn!(shard, "breaking the shard lease");
            lake.break_lease(shard).await?;
        }
        let lease = lake.lease_shard(shard, &holder, Duration::from_secs(args.lease_wait_seconds)).await?;
        let result = withings_lake::rebuild::reharmonize(&lake, &lease, &format!("{run_id}-s{shard}"), &resources).await;
        lease.release().await;
        let m: Manifest = result?;
        let sum = |f: fn(&withings_lake::lake::Counts) -> usize| m.partitions.iter().map(|p| f(&p.counts)).sum::<usize>();
        let summary = json!({
            "shard": shard,
            "run_id": m.run_id,
            "partitions_changed": m.partitions.len(),
            "partitions_unchanged": m.unchanged_partitions,
            "inserted": sum(|c| c.inserted),
            "updated": sum(|c| c.updated),
            "deleted": sum(|c| c.deleted),
        });
        println!("{summary}");
    }
    Ok(())
}
