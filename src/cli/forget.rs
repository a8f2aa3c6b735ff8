//! `withings-lake forget --pipeline FILE --user-id ID`: erases one person (GDPR): their rows
//! from every table, their id from manifests and state, and their credentials. Prints the
//! erasure report (which names the person only by a hash) as JSON.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use withings_lake::lake::Lake;
use withings_lake::pipeline::PipelineFile;

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The pipeline file: its `[lake]` and `[credentials]` are both cleaned.
    #[arg(long)]
    pub pipeline: PathBuf,
    /// The application's id of the person to erase.
    #[arg(long)]
    pub user_id: String,
    /// How long to wait for a running writer to release each shard.
    #[arg(long, default_value_t = 300)]
    pub wait_seconds: u64,
}

pub async fn run(args: ForgetArgs) -> anyhow::Result<()> {
    let pipeline = PipelineFile::load(&args.pipeline)?;
    let credentials = pipeline.resolve_credentials()?;
    let lake = Lake::open(pipeline.resolve_lake_location()?).await?;
    let holder = format!("forget-{}", withings_lake::lease::process_holder());
    // Credentials first: no sync can fetch the person again while the lake is cleaned.
    let had_credentials = credentials.delete(&args.user_id).await?;
    let mut report = lake.forget(&args.user_id, &holder, Duration::from_secs(args.wait_seconds)).await?;
    tracing::info!(rows_removed = report.rows_removed, credentials_removed = had_credentials, "erasure complete");
    report.state_objects_removed += usize::from(had_credentials);
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
