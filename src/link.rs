//! The account-link flow (OAuth2 authorization code), shared by `withings-lake link`, the demo
//! and the service: an authorize URL with a random `state`, a loopback callback listener, and
//! the code exchange that stores the user's credentials.
//!
//! Invariants: a callback whose `state` differs from the request's stores nothing (CSRF); the
//! code is exchanged at once (it lives 30 seconds); the credentials store is proven writable
//! before the user is sent to Withings, so a consent is never lost to a read-only store.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Query;
use axum::routing::get;

use crate::credentials::{CredentialStore, CredentialsError, UserRecord, UserStatus, token_lifetime, validate_user_id};
use crate::withings::{ErrorClass, WithingsClient, WithingsError};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot listen for the callback on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    #[error("authorize URL '{url}': {reason}")]
    AuthorizeUrl { url: String, reason: String },
    #[error("Withings did not authorize the link of user '{user_id}': {reason}")]
    Denied { user_id: String, reason: String },
    #[error("the callback's state does not match this link request (possible CSRF); nothing was stored")]
    StateMismatch,
    #[error("the callback has no code")]
    NoCode,
    #[error("the token response for user '{user_id}' has no userid")]
    NoUserid { user_id: String },
    #[error("linking user '{user_id}': {source}")]
    Withings { user_id: String, source: WithingsError },
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

impl LinkError {
    pub fn class(&self) -> ErrorClass {
        match self {
            LinkError::Listen { .. } | LinkError::AuthorizeUrl { .. } => ErrorClass::Config,
            LinkError::Denied { .. } | LinkError::StateMismatch | LinkError::NoCode => ErrorClass::Auth,
            LinkError::NoUserid { .. } => ErrorClass::Internal,
            LinkError::Withings { source, .. } => source.class(),
            LinkError::Credentials(c) => c.class(),
        }
    }
}

/// What the authorization server sends back to the redirect URI.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
}

/// One link attempt: the URL to open and the `state` its callback must carry.
#[derive(Debug, Clone)]
pub struct LinkRequest {
    pub user_id: String,
    pub url: String,
    pub state: String,
    pub redirect_uri: String,
}

impl LinkRequest {
    /// The authorize URL for `user_id` with a fresh random `state`. `extra` parameters are
    /// appended (the simulator's `sim_user` picks which synthetic person consents).
    pub fn new(
        authorize_url: &str,
        client_id: &str,
        scopes: &str,
        redirect_uri: &str,
        user_id: &str,
        extra: &[(&str, &str)],
    ) -> Result<LinkRequest, LinkError> {
        validate_user_id(user_id)?;
        let mut state_bytes = [0u8; 16];
        getrandom::fill(&mut state_bytes).map_err(|e| LinkError::AuthorizeUrl {
            url: authorize_url.into(),
            reason: format!("no randomness for state: {e}"),
        })?;
        let state = hex::encode(state_bytes);
        let mut url = reqwest::Url::parse(authorize_url)
            .map_err(|e| LinkError::AuthorizeUrl { url: authorize_url.into(), reason: e.to_string() })?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("state", &state)
            .append_pair("scope", scopes)
            .append_pair("redirect_uri", redirect_uri);
        for (k, v) in extra {
            url.query_pairs_mut().append_pair(k, v);
        }
        Ok(LinkRequest { user_id: user_id.into(), url: url.to_string(), state, redirect_uri: redirect_uri.into() })
    }

    /// Checks the callback, exchanges the code and stores the user (active). Returns the
    /// record and whether the user was linked before.
    pub async fn complete(
        &self,
        client: &WithingsClient,
        store: &CredentialStore,
        cb: Callback,
    ) -> Result<(UserRecord, bool), LinkError> {
        if let Some(e) = cb.error {
            return Err(LinkError::Denied { user_id: self.user_id.clone(), reason: e });
        }
        if cb.state.as_deref() != Some(self.state.as_str()) {
            return Err(LinkError::StateMismatch);
        }
        let code = cb.code.ok_or(LinkError::NoCode)?;
        let tokens = client
            .exchange_code(&code, &self.redirect_uri)
            .await
            .map_err(|source| LinkError::Withings { user_id: self.user_id.clone(), source })?;
        let now = chrono::Utc::now().timestamp();
        let previous = store.get(&self.user_id).await?;
        let record = UserRecord {
            user_id: self.user_id.clone(),
            withings_userid: tokens.userid.clone().ok_or_else(|| LinkError::NoUserid { user_id: self.user_id.clone() })?,
            scopes: tokens.scope.as_deref().unwrap_or("").split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
            access_token: tokens.access_token,
            access_expires_at: now + token_lifetime(tokens.expires_in),
            refresh_token: tokens.refresh_token,
            status: UserStatus::Active,
            status_reason: None,
            created_at: previous.as_ref().map(|p| p.created_at).unwrap_or(now),
            updated_at: now,
            last_refresh_at: Some(now),
        };
        store.put(&record).await?;
        Ok((record, previous.is_some()))
    }
}

/// A loopback listener for `/callback`: its redirect URI and the callbacks it receives. The
/// server stops when the listener is dropped.
pub struct CallbackListener {
    pub redirect_uri: String,
    rx: tokio::sync::mpsc::Receiver<Callback>,
    server: tokio::task::JoinHandle<()>,
}

impl CallbackListener {
    pub async fn bind(addr: SocketAddr) -> Result<CallbackListener, LinkError> {
        let listen_err = |e: std::io::Error| LinkError::Listen { addr, reason: e.to_string() };
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(listen_err)?;
        let redirect_uri = format!("http://{}/callback", listener.local_addr().map_err(listen_err)?);
        let (tx, rx) = tokio::sync::mpsc::channel::<Callback>(16);
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
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(CallbackListener { redirect_uri, rx, server })
    }

    /// The next callback, or `None` when none arrives within `timeout`.
    pub async fn next(&mut self, timeout: std::time::Duration) -> Option<Callback> {
        tokio::time::timeout(timeout, self.rx.recv()).await.ok().flatten()
    }
}

impl Drop for CallbackListener {
    fn drop(&mut self) {
        self.server.abort();
    }
}
