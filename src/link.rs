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
use crate::error::{Cause, Classify, ErrorClass};
use crate::state::{StateError, StateStore};
use crate::withings::{WithingsClient, WithingsError};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot listen for the callback on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    /// `reason` is the text of `source`, or says what was being done when it failed.
    #[error("authorize URL '{url}': {reason}")]
    AuthorizeUrl { url: String, reason: String, source: Cause },
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
    #[error(
        "user '{user_id}' is linked to Withings userid {linked}, and this authorization is for Withings userid {new}: \
         refused (two people under one id). Link with --replace to switch accounts (its cursors are reset; run `forget` \
         first to also remove the previous account's data)"
    )]
    OtherAccount { user_id: String, linked: String, new: String },
    #[error(
        "Withings userid {withings_userid} is already linked as user '{linked_as}': refused for '{user_id}' (notifications \
         are routed by Withings userid; one account, one user). Remove '{linked_as}' first (`users remove`)"
    )]
    AccountTaken { withings_userid: String, linked_as: String, user_id: String },
    #[error("Vital user id {vital_user_id} is already user '{linked_as}' (one Vital user, one user): not linking '{user_id}'")]
    VitalIdTaken { vital_user_id: String, linked_as: String, user_id: String },
    #[error("resetting the sync state of user '{user_id}' for the new account: {source}")]
    Reset { user_id: String, source: StateError },
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

impl Classify for LinkError {
    fn class(&self) -> ErrorClass {
        match self {
            LinkError::Listen { .. } | LinkError::AuthorizeUrl { .. } => ErrorClass::Config,
            LinkError::Denied { .. } | LinkError::StateMismatch | LinkError::NoCode => ErrorClass::Auth,
            LinkError::NoUserid { .. } => ErrorClass::Internal,
            LinkError::Withings { source, .. } => source.class(),
            LinkError::OtherAccount { .. } | LinkError::AccountTaken { .. } | LinkError::VitalIdTaken { .. } => {
                ErrorClass::Config
            }
            LinkError::Reset { .. } => ErrorClass::Transient,
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
    /// The person's Vital user id when a migrating team keeps it (canonical UUID); none: the
    /// one the record already has, else the derived one.
    pub vital_user_id: Option<String>,
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
            source: Box::new(e),
        })?;
        let state = hex::encode(state_bytes);
        let mut url = reqwest::Url::parse(authorize_url).map_err(|e| LinkError::AuthorizeUrl {
            url: authorize_url.into(),
            reason: e.to_string(),
            source: Box::new(e),
        })?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("state", &state)
            .append_pair("scope", scopes)
            .append_pair("redirect_uri", redirect_uri);
        for (k, v) in extra {
            url.query_pairs_mut().append_pair(k, v);
        }
        Ok(LinkRequest {
            user_id: user_id.into(),
            url: url.to_string(),
            state,
            redirect_uri: redirect_uri.into(),
            vital_user_id: None,
        })
    }

    /// Links the person under an existing Vital user id (checked: a UUID).
    pub fn with_vital_user_id(mut self, id: Option<&str>) -> Result<LinkRequest, LinkError> {
        self.vital_user_id = id.map(crate::credentials::parse_vital_user_id).transpose()?;
        Ok(self)
    }

    /// Checks the callback, exchanges the code and stores the user (active). Returns the
    /// record and whether the user was linked before.
    ///
    /// One application id is one Withings account and the other way round: an id linked to
    /// another account is refused unless `replace` (then `state`, the lake's sync state, loses
    /// the user's cursors before the record is saved, so the new account's history is fetched
    /// from the start); an account linked under another id is always refused.
    pub async fn complete(
        &self,
        client: &WithingsClient,
        store: &CredentialStore,
        cb: Callback,
        replace: bool,
        state: Option<&StateStore>,
    ) -> Result<(UserRecord, bool), LinkError> {
        if cb.state.as_deref() != Some(self.state.as_str()) {
            return Err(LinkError::StateMismatch);
        }
        if let Some(e) = cb.error {
            return Err(LinkError::Denied { user_id: self.user_id.clone(), reason: denial(&e) });
        }
        let code = cb.code.ok_or(LinkError::NoCode)?;
        let tokens = client
            .exchange_code(&code, &self.redirect_uri)
            .await
            .map_err(|source| LinkError::Withings { user_id: self.user_id.clone(), source })?;
        let withings_userid = tokens.userid.clone().ok_or_else(|| LinkError::NoUserid { user_id: self.user_id.clone() })?;
        let now = chrono::Utc::now().timestamp();
        let previous = store.get(&self.user_id).await?;
        let others: Vec<UserRecord> = store.list().await?.into_iter().filter(|r| r.user_id != self.user_id).collect();
        if let Some(other) = others.iter().find(|r| r.withings_userid == withings_userid) {
            return Err(LinkError::AccountTaken {
                withings_userid,
                linked_as: other.user_id.clone(),
                user_id: self.user_id.clone(),
            });
        }
        let vital_user_id = self.vital_user_id.clone().or_else(|| previous.as_ref().and_then(|p| p.vital_user_id.clone()));
        let vital = vital_user_id.clone().unwrap_or_else(|| crate::credentials::derived_vital_user_id(&self.user_id));
        if let Some(other) = others.iter().find(|r| r.vital_id() == vital) {
            return Err(LinkError::VitalIdTaken {
                vital_user_id: vital,
                linked_as: other.user_id.clone(),
                user_id: self.user_id.clone(),
            });
        }
        let switched = previous.as_ref().filter(|p| p.withings_userid != withings_userid);
        if let Some(p) = switched {
            if !replace {
                return Err(LinkError::OtherAccount {
                    user_id: self.user_id.clone(),
                    linked: p.withings_userid.clone(),
                    new: withings_userid,
                });
            }
            if let Some(state) = state {
                state.delete(&self.user_id).await.map_err(|source| LinkError::Reset { user_id: self.user_id.clone(), source })?;
            }
        }
        let record = UserRecord {
            user_id: self.user_id.clone(),
            withings_userid,
            scopes: tokens.scope.as_deref().unwrap_or("").split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
            access_token: tokens.access_token,
            access_expires_at: now + token_lifetime(tokens.expires_in),
            refresh_token: tokens.refresh_token,
            status: UserStatus::Active,
            status_reason: None,
            created_at: previous.as_ref().filter(|_| switched.is_none()).map(|p| p.created_at).unwrap_or(now),
            updated_at: now,
            last_refresh_at: Some(now),
            vital_user_id,
        };
        store.put(&record).await?;
        Ok((record, previous.is_some()))
    }
}

/// The OAuth2 error codes Withings (and RFC 6749) send on a denied authorization; anything else
/// on the callback is a stranger's text and is not printed.
fn denial(code: &str) -> String {
    const KNOWN: [&str; 7] = [
        "access_denied",
        "invalid_request",
        "unauthorized_client",
        "unsupported_response_type",
        "invalid_scope",
        "server_error",
        "temporarily_unavailable",
    ];
    match KNOWN.iter().find(|k| **k == code) {
        Some(k) => (*k).to_string(),
        None => "an unrecognized error code on the callback".to_string(),
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
        let listen_err = |source: std::io::Error| LinkError::Listen { addr, source };
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
