//! `withings-lake link`: links one person's Withings account.
//!
//! Proves the credentials store is writable, prints the authorize URL, listens on a loopback
//! callback, checks `state`, exchanges the code (it lives 30 seconds) and stores the user.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use clap::Args;
use withings_lake::credentials::{UserRecord, UserStatus, validate_user_id};
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
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

#[derive(Debug, serde::Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

pub async fn run(args: LinkArgs) -> anyhow::Result<()> {
    validate_user_id(&args.user_id)?;
    let pipeline = PipelineFile::load(&args.pipeline)?;
    let client = pipeline.resolve_client()?;
    let store = pipeline.resolve_credentials()?;
    store.check_writable().await.context("the credentials store must be writable before linking")?;

    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let redirect_uri = format!("http://{}/callback", listener.local_addr()?);
    let mut state_bytes = [0u8; 16];
    getrandom::fill(&mut state_bytes).context("no randomness for the state parameter")?;
    let state = hex::encode(state_bytes);
    let mut url = reqwest::Url::parse(&pipeline.authorize_url()).context("authorize URL")?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &pipeline.source.client_id)
        .append_pair("state", &state)
        .append_pair("scope", &pipeline.source.scopes)
        .append_pair("redirect_uri", &redirect_uri);

    let (tx, rx) = tokio::sync::mpsc::channel::<Callback>(1);
    let app = Router::new().route(
        "/callback",
        get(move |Query(cb): Query<Callback>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(cb).await;
                "withings-lake received the authorization; you can close this window."
            }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!("{url}");
    tracing::info!(user_id = %args.user_id, redirect_uri = %redirect_uri, "open the printed URL to link the Withings account");

    let mut rx = rx;
    let cb = tokio::time::timeout(Duration::from_secs(args.timeout_secs), rx.recv())
        .await
        .with_context(|| format!("no callback within {} s", args.timeout_secs))?
        .context("the callback listener stopped")?;
    server.abort();
    if let Some(e) = cb.error {
        bail!("Withings did not authorize the link: {e}");
    }
    if cb.state.as_deref() != Some(state.as_str()) {
        bail!("the callback's state does not match this link request (possible CSRF); nothing was stored");
    }
    let code = cb.code.context("the callback has no code")?;
    let tokens = client.exchange_code(&code, &redirect_uri).await?;
    let now = chrono::Utc::now().timestamp();
    let previous = store.get(&args.user_id).await?;
    let record = UserRecord {
        user_id: args.user_id.clone(),
        withings_userid: tokens.userid.clone().context("the token response has no userid")?,
        scopes: tokens.scope.as_deref().unwrap_or("").split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        access_token: tokens.access_token,
        access_expires_at: now + withings_lake::credentials::token_lifetime(tokens.expires_in),
        refresh_token: tokens.refresh_token,
        status: UserStatus::Active,
        status_reason: None,
        created_at: previous.as_ref().map(|p| p.created_at).unwrap_or(now),
        updated_at: now,
        last_refresh_at: Some(now),
    };
    store.put(&record).await?;
    println!("linked user {} (Withings userid {}, scopes {})", record.user_id, record.withings_userid, record.scopes.join(","));
    tracing::info!(user_id = %record.user_id, withings_userid = %record.withings_userid, relinked = previous.is_some(), "user linked");
    Ok(())
}
