//! `withings-lake link`: links one person's Withings account.
//!
//! Proves the credentials store is writable, prints the authorize URL, listens on a loopback
//! callback, checks `state`, exchanges the code (it lives 30 seconds) and stores the user
//! ([`withings_lake::link`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use withings_lake::credentials::validate_user_id;
use withings_lake::link::{CallbackListener, LinkRequest};
use withings_lake::pipeline::PipelineFile;

#[derive(Debug, Args)]
pub struct LinkArgs {
    /// Pipeline file (API, client id, secret variable, credentials location).
    #[arg(long)]
    pub pipeline: PathBuf,
    /// The application's id for this person.
    #[arg(long)]
    pub user_id: String,
    /// Loopback address of the callback listener (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Give up waiting for the callback after this many seconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=604_800), default_value_t = 600)]
    pub timeout_secs: u64,
    /// Accept an authorization for another Withings account than the one this user id is
    /// linked to, and reset the user's sync state (their cursors) so the new account's history
    /// is fetched. Without it such a link is refused. The previous account's rows stay: run
    /// `forget` first to remove them.
    #[arg(long)]
    pub replace: bool,
    /// The person's Vital user id (a UUID), for a team moving users off Vital: events then
    /// carry it as `user_id`, as Vital's did. Default: the id the user already has, else one
    /// derived from --user-id.
    #[arg(long)]
    pub vital_user_id: Option<String>,
}

pub async fn run(args: LinkArgs) -> anyhow::Result<()> {
    validate_user_id(&args.user_id)?;
    let pipeline = PipelineFile::load(&args.pipeline)?;
    let client = pipeline.resolve_client()?;
    let store = pipeline.resolve_credentials().await?;
    // Checked before anyone is sent to Withings: a bad [events] section fails now.
    let events = pipeline.resolve_events()?;
    store.check_writable().await.context("the credentials store must be writable before linking")?;

    let mut listener = CallbackListener::bind(args.listen).await?;
    let request = LinkRequest::new(
        &pipeline.authorize_url(),
        &pipeline.source.client_id,
        &pipeline.source.scopes,
        &listener.redirect_uri,
        &args.user_id,
        &[],
    )?
    .with_vital_user_id(args.vital_user_id.as_deref())?;
    println!("{}", request.url);
    tracing::info!(user_id = %args.user_id, redirect_uri = %request.redirect_uri, "open the printed URL to link the Withings account");
    let cb = listener
        .next(Duration::from_secs(args.timeout_secs))
        .await
        .with_context(|| format!("no callback within {} s", args.timeout_secs))?;
    drop(listener);
    let state = match args.replace {
        true => Some(withings_lake::state::StateStore::new(pipeline.resolve_lake_location()?)),
        false => None,
    };
    let (record, relinked) = request.complete(&client, &store, cb, args.replace, state.as_ref()).await?;
    println!(
        "linked user {} (Vital user id {}, Withings userid {}, scopes {})",
        record.user_id,
        record.vital_id(),
        record.withings_userid,
        record.scopes.join(",")
    );
    tracing::info!(user_id = %record.user_id, withings_userid = %record.withings_userid, relinked, "user linked");
    if let Some(cfg) = events {
        let lake = withings_lake::lake::Lake::open_or_create(pipeline.resolve_lake_location()?, pipeline.shards()).await?;
        match withings_lake::events::announce_link(&cfg, &lake, &record).await {
            Ok(d) => {
                tracing::info!(user_id = %record.user_id, delivered = d.delivered, pending = d.pending, dead = d.dead, "provider.connection.created enqueued")
            }
            Err(e) => {
                // The link is saved; the event is not in the outbox: exit 1 so a scheduler or
                // an operator sees it (`link` again re-announces).
                return Err(super::events::Undelivered(format!(
                    "user {} is linked, but its provider.connection.created event could not be enqueued: {e}",
                    record.user_id
                ))
                .into());
            }
        }
    }
    Ok(())
}
