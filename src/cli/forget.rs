//! `withings-lake forget --pipeline FILE --user-id ID`: erases one person (GDPR) from the
//! credentials, the lake, the event outbox and the files sink ([`withings_lake::erasure`]).
//! Prints the erasure report (which names the person only by a keyed hash) as JSON.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use withings_lake::credentials::{Cipher, CredentialStore, CredentialsError};
use withings_lake::erasure::Erasure;
use withings_lake::lake::Lake;
use withings_lake::pipeline::{PipelineError, PipelineFile};

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The pipeline file: its `[lake]`, `[credentials]` and `[events.files]` are all cleaned.
    #[arg(long)]
    pub pipeline: PathBuf,
    /// The application's id of the person to erase.
    #[arg(long)]
    pub user_id: String,
    /// How long to wait for a running writer of the person's shard, and for a running
    /// deliverer of events, to finish.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=604_800), default_value_t = 300)]
    pub wait_seconds: u64,
}

pub async fn run(args: ForgetArgs) -> anyhow::Result<()> {
    let pipeline = PipelineFile::load(&args.pipeline)?;
    // Without the key (lost, or never on this machine) a person can still be erased: records
    // are deleted unread; only the manifest's keyed hash of the id needs the key.
    let (credentials, keyed) = match pipeline.resolve_credentials().await {
        Ok(c) => (c, true),
        Err(PipelineError::Credentials(CredentialsError::MissingKey { .. })) => {
            tracing::warn!("no credentials key: erasing without it; the erasure manifest records no hash of the id");
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            let cipher = Cipher::from_key(key, "an ephemeral key (erasure without the credentials key)");
            (std::sync::Arc::new(CredentialStore::open(&pipeline.credentials_url(), cipher)?), false)
        }
        Err(e) => return Err(e.into()),
    };
    let lake = Lake::open(pipeline.resolve_lake_location()?).await?;
    let erasure = Erasure {
        lake: &lake,
        credentials: &credentials,
        files_sink: pipeline.resolve_files_sink()?,
        holder: format!("forget-{}", withings_lake::lease::process_holder()),
        wait: Duration::from_secs(args.wait_seconds),
        keyed,
    };
    let report = erasure.forget(&args.user_id).await?;
    tracing::info!(
        rows_removed = report.lake.rows_removed,
        outbox_records_removed = report.events.outbox_records_removed,
        files_sink_events_removed = report.events.files_sink_events_removed,
        webhook_events_already_delivered = report.events.webhook_events_already_delivered,
        credentials_removed = report.credentials_removed,
        "erasure complete"
    );
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
