//! `withings-lake sync [--user-id ID]`: an incremental run for every linked user (or one):
//! `lastupdate` listings from each cursor, intraday for the days whose activity changed,
//! sleep get for new or changed sessions, the daily getmeas re-list.

use clap::Args;
use withings_lake::sync::{Mode, Users};

use super::run::{RunArgs, execute};

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Only these users (repeatable).
    #[arg(long)]
    pub user_id: Vec<String>,
}

pub async fn run(args: SyncArgs) -> anyhow::Result<()> {
    let users = if args.user_id.is_empty() { Users::All } else { Users::Only(args.user_id.clone()) };
    execute(&args.run, Mode::Incremental, users).await
}
