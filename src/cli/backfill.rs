//! `withings-lake backfill [--from DATE] [--to DATE] [--users FILE]`: historical data for
//! every linked user (or a list), planned to the fewest requests, newest first, resumable.

use std::path::PathBuf;

use anyhow::{Context, bail};
use chrono::{NaiveDate, Utc};
use clap::Args;
use withings_lake::pipeline::PipelineFile;
use withings_lake::sync::{Mode, Users};

use super::run::{RunArgs, execute};

#[derive(Debug, Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// First local date (YYYY-MM-DD). Default: `[sync] backfill_days` before --to.
    #[arg(long)]
    pub from: Option<NaiveDate>,
    /// Last local date, included (YYYY-MM-DD). Default: today (of --now).
    #[arg(long)]
    pub to: Option<NaiveDate>,
    /// A file of user ids, one per line (blank lines and `#` comments ignored; a `user_id`
    /// header line is allowed). Default: every linked user.
    #[arg(long)]
    pub users: Option<PathBuf>,
}

fn read_users(path: &PathBuf) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the users file {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let id = line.split(',').next().unwrap_or("").trim();
        if id.is_empty() || id.starts_with('#') || (n == 0 && id == "user_id") {
            continue;
        }
        withings_lake::credentials::validate_user_id(id).with_context(|| format!("{} line {}", path.display(), n + 1))?;
        out.push(id.to_string());
    }
    if out.is_empty() {
        bail!("the users file {} names no user", path.display());
    }
    Ok(out)
}

pub async fn run(args: BackfillArgs) -> anyhow::Result<()> {
    let pipeline = PipelineFile::load(&args.run.pipeline)?;
    let today = args.run.now.unwrap_or_else(Utc::now).date_naive();
    let to = args.to.unwrap_or(today);
    let days = i64::from(pipeline.sync.backfill_days);
    let from = args.from.unwrap_or_else(|| to - chrono::Duration::days(days - 1));
    let users = match &args.users {
        Some(path) => Users::Only(read_users(path).map_err(|e| super::Usage(withings_lake::error::chain_message(e.as_ref())))?),
        None => Users::All,
    };
    execute(&args.run, Mode::Backfill { from, to }, users).await
}
