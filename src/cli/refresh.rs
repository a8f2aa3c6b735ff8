//! `withings-lake refresh --user-id ID [--families a,b]`: a targeted incremental run for one
//! user (what a notification or an operator asks for).

use std::collections::BTreeSet;

use clap::Args;
use withings_lake::lake::Endpoint;
use withings_lake::sync::{Mode, Users};

use super::run::{RunArgs, execute};

#[derive(Debug, Args)]
pub struct RefreshArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[arg(long)]
    pub user_id: String,
    /// Families (endpoints) to refresh, comma-separated: getmeas, getactivity,
    /// getintradayactivity, getworkouts, sleep_getsummary, sleep_get. All when left out.
    #[arg(long, value_delimiter = ',', value_parser = parse_family)]
    pub families: Vec<Endpoint>,
}

fn parse_family(s: &str) -> Result<Endpoint, String> {
    Endpoint::parse(s.trim()).ok_or_else(|| {
        format!("unknown family '{s}' (valid: {})", Endpoint::ALL.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", "))
    })
}

pub async fn run(args: RefreshArgs) -> anyhow::Result<()> {
    let families: BTreeSet<Endpoint> =
        if args.families.is_empty() { Endpoint::ALL.into_iter().collect() } else { args.families.iter().copied().collect() };
    execute(&args.run, Mode::Refresh { families, windows: Default::default() }, Users::Only(vec![args.user_id.clone()])).await
}
