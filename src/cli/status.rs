//! `withings-lake status [--format table|json]`: per user and family, the cursor, the last
//! success, the lag and the last error; and the users who must link again.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use serde::Serialize;
use withings_lake::lake::{Endpoint, Lake, LakeError};
use withings_lake::pipeline::PipelineFile;
use withings_lake::state::StateStore;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Pipeline file (credentials and lake).
    #[arg(long)]
    pub pipeline: PathBuf,
    #[arg(long, value_enum, default_value_t = StatusFormat::Table)]
    pub format: StatusFormat,
}

#[derive(Debug, Serialize)]
struct FamilyRow {
    family: String,
    /// The largest `modified` seen, RFC 3339.
    cursor: Option<String>,
    last_success: Option<DateTime<Utc>>,
    /// Seconds since the last success.
    lag_seconds: Option<i64>,
    last_error: Option<String>,
    backfilled: Vec<String>,
}

#[derive(Debug, Serialize)]
struct UserRow {
    user_id: String,
    withings_user_id: String,
    status: String,
    status_reason: Option<String>,
    shard: u32,
    families: Vec<FamilyRow>,
}

#[derive(Debug, Serialize)]
struct Status {
    generated_at: DateTime<Utc>,
    lake: String,
    shards: u32,
    users: Vec<UserRow>,
    needs_reauth: Vec<String>,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let pipeline = PipelineFile::load(&args.pipeline)?;
    let credentials = pipeline.resolve_credentials().await?;
    let location = pipeline.resolve_lake_location()?;
    let shards = match Lake::open(location.clone()).await {
        Ok(l) => l.meta.shards,
        Err(LakeError::NotALake { .. }) => pipeline.shards(),
        Err(e) => return Err(e.into()),
    };
    let states = StateStore::new(location.clone());
    let now = Utc::now();
    let mut users = Vec::new();
    for r in credentials.list().await? {
        let state = states.get(&r.user_id).await?.unwrap_or_default();
        let families = Endpoint::ALL
            .iter()
            .filter_map(|e| {
                let f = state.families.get(e.as_str())?;
                Some(FamilyRow {
                    family: e.as_str().to_string(),
                    cursor: f.cursor.and_then(|c| DateTime::from_timestamp(c, 0)).map(|t| t.to_rfc3339()),
                    last_success: f.last_success,
                    lag_seconds: f.last_success.map(|t| (now - t).num_seconds()),
                    last_error: f.last_error.clone(),
                    backfilled: f.backfilled.iter().map(|r| format!("{}..{}", r.from, r.to)).collect(),
                })
            })
            .collect();
        users.push(UserRow {
            shard: withings_lake::lake::shard_of(&r.user_id, shards),
            user_id: r.user_id.clone(),
            withings_user_id: r.withings_userid.clone(),
            status: r.status.as_str().to_string(),
            status_reason: r.status_reason.clone(),
            families,
        });
    }
    let needs_reauth = users.iter().filter(|u| u.status != "active").map(|u| u.user_id.clone()).collect();
    let status = Status { generated_at: now, lake: location.url.clone(), shards, users, needs_reauth };
    match args.format {
        StatusFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        StatusFormat::Table => {
            println!("{:<20} {:<13} {:>5} {:<20} {:<20} {:>9}  last error", "user", "status", "shard", "family", "cursor", "lag");
            for u in &status.users {
                if u.families.is_empty() {
                    println!(
                        "{:<20} {:<13} {:>5} {:<20} {:<20} {:>9}  -",
                        u.user_id, u.status, u.shard, "(never synced)", "-", "-"
                    );
                }
                for f in &u.families {
                    let lag = f.lag_seconds.map(human).unwrap_or_else(|| "-".into());
                    let cursor = f.cursor.as_deref().map(|c| &c[..19.min(c.len())]).unwrap_or("-");
                    println!(
                        "{:<20} {:<13} {:>5} {:<20} {:<20} {:>9}  {}",
                        u.user_id,
                        u.status,
                        u.shard,
                        f.family,
                        cursor,
                        lag,
                        f.last_error.as_deref().unwrap_or("-")
                    );
                }
            }
            if !status.needs_reauth.is_empty() {
                println!("must link again: {}", status.needs_reauth.join(", "));
            }
        }
    }
    Ok(())
}

fn human(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
