//! Per-user Withings credentials: encrypted records on any storage location, and the token
//! manager that refreshes them safely.
//!
//! Invariants:
//! - Records are AES-256-GCM encrypted ([`crypto`]); nothing under the credentials location
//!   is readable as plain text, and tokens travel as [`Secret`].
//! - Withings rotates the refresh token on every refresh and the old one dies when the new
//!   access token is first used, so a refreshed pair is written and read back before the new
//!   access token is handed to anyone ([`TokenManager`]).
//! - Refreshes for one user are serialized: concurrent callers with an expired token cause
//!   exactly one refresh and all get its result. Across processes sharing a store, a
//!   create-only lease object (`locks/<user_id>.lock`, 60 s expiry) makes the refresh
//!   single-flight too; whoever waited re-reads the record and uses the new pair.
//! - An invalid refresh token marks that user `needs_reauth` (with the reason) and fails only
//!   that user.

pub mod crypto;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Cause, Classify, ErrorClass};
use crate::lease::{Lease, LeaseError};
use crate::secret::Secret;
use crate::storage::{self, Location};
use crate::withings::{JsonErrorKind, StatusKind, WithingsClient, WithingsError};
pub use crypto::Cipher;

/// Whether a user's authorization works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    /// The refresh token was refused: the user must link again.
    NeedsReauth,
    Revoked,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::NeedsReauth => "needs_reauth",
            UserStatus::Revoked => "revoked",
        }
    }
}

/// One linked person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The application's own id for the person.
    pub user_id: String,
    /// Withings `userid` (the key of notifications).
    pub withings_userid: String,
    pub scopes: Vec<String>,
    pub access_token: Secret,
    /// Epoch seconds.
    pub access_expires_at: i64,
    pub refresh_token: Secret,
    pub status: UserStatus,
    /// Why the status is not active.
    #[serde(default)]
    pub status_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default)]
    pub last_refresh_at: Option<i64>,
    /// The Vital-style `user_id` given for the person (a team leaving Vital keeps its users'
    /// ids); none: derived from `user_id` ([`derived_vital_user_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vital_user_id: Option<String>,
}

impl UserRecord {
    /// The person's Vital-style `user_id` (a UUID): the one given, else the derived one.
    pub fn vital_id(&self) -> String {
        self.vital_user_id.clone().unwrap_or_else(|| derived_vital_user_id(&self.user_id))
    }
}

/// The namespace of derived Vital-style user ids (a fixed random UUID: ids never change).
const VITAL_USER_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x8e4f_2b17_6c3d_4a90_b1e5_7d2c_9f06_3a58);

/// The Vital-style `user_id` of an application id that was given none: a UUIDv5 of it, the
/// same on every machine and in every version.
pub fn derived_vital_user_id(user_id: &str) -> String {
    uuid::Uuid::new_v5(&VITAL_USER_NAMESPACE, format!("withings-lake/user/{user_id}").as_bytes()).to_string()
}

/// A Vital user id as given (`link --vital-user-id`, `users import`): a UUID, returned in
/// its canonical lowercase hyphenated form.
pub fn parse_vital_user_id(value: &str) -> Result<String, CredentialsError> {
    uuid::Uuid::parse_str(value.trim())
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| CredentialsError::InvalidVitalUserId { value: value.to_string() })
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    /// `reason` is or quotes the text of `source`, when there is one.
    #[error("credentials key from {source_name}: {reason}")]
    Key { source_name: String, reason: String, source: Option<Cause> },
    #[error(
        "credentials store {location} holds {records} records but there is no key: {key_file} does not exist and {env} is \
         not set. A new key cannot open them; restore the key file (or set {env}) instead of creating one",
        env = crypto::KEY_ENV
    )]
    MissingKey { location: String, key_file: String, records: usize },
    #[error(
        "credentials store {location}: none of its {failing} records opens with the key from {key_source} (a wrong or \
         replaced key): give the key the records were written with"
    )]
    NoKeyOpens { location: String, key_source: String, failing: usize },
    #[error("user id '{user_id}' is not valid: use 1-128 characters among letters, digits, '.', '_' and '-'")]
    InvalidUserId { user_id: String },
    #[error("Vital user id '{value}' is not valid: Vital's user ids are UUIDs (e.g. 0b4a2a3e-5c1d-4f8e-9a6b-2f3c4d5e6f70)")]
    InvalidVitalUserId { value: String },
    /// `reason` is the text of `source`, when there is one.
    #[error("credentials store {location}: {operation} failed: {reason}")]
    Io { location: String, operation: String, reason: String, source: Option<Cause> },
    #[error("credentials of user '{user_id}' at {location}: {reason}")]
    Corrupt { user_id: String, location: String, reason: String },
    #[error("user '{user_id}' is not linked (no credentials record)")]
    UnknownUser { user_id: String },
    #[error("user '{user_id}' must link their Withings account again: {reason}")]
    NeedsReauth { user_id: String, reason: String },
    #[error("user '{user_id}': {source}")]
    Withings { user_id: String, source: WithingsError },
}

impl Classify for CredentialsError {
    fn class(&self) -> ErrorClass {
        match self {
            CredentialsError::Storage(_)
            | CredentialsError::Key { .. }
            | CredentialsError::MissingKey { .. }
            | CredentialsError::NoKeyOpens { .. }
            | CredentialsError::InvalidUserId { .. }
            | CredentialsError::InvalidVitalUserId { .. } => ErrorClass::Config,
            CredentialsError::Io { .. } => ErrorClass::Transient,
            CredentialsError::Corrupt { .. } => ErrorClass::Data,
            CredentialsError::UnknownUser { .. } | CredentialsError::NeedsReauth { .. } => ErrorClass::Auth,
            CredentialsError::Withings { source, .. } => source.class(),
        }
    }
}

/// A user id fit to be part of an object key.
pub fn validate_user_id(user_id: &str) -> Result<(), CredentialsError> {
    let ok = !user_id.is_empty()
        && user_id.len() <= 128
        && user_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !user_id.starts_with('.');
    if ok { Ok(()) } else { Err(CredentialsError::InvalidUserId { user_id: user_id.to_string() }) }
}

/// Encrypted user records under a storage location: `<location>/users/<user_id>.cred`.
pub struct CredentialStore {
    loc: Location,
    cipher: Cipher,
}

impl std::fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialStore").field("location", &self.loc.url).finish()
    }
}

/// Every record of a store, and the ones that could not be read.
#[derive(Debug, Default)]
pub struct Listing {
    pub records: Vec<UserRecord>,
    /// (user id, why) of each record that does not decrypt or parse.
    pub unreadable: Vec<(String, String)>,
}

impl CredentialStore {
    /// Opens the store at `location` with the key from `WITHINGS_LAKE_KEY` or `key_file`. A key
    /// is created only while the store holds no record: with records and no key, a new key
    /// would open none of them, and every run would sync nobody.
    pub async fn open_with_key(location: &str, key_file: &std::path::Path) -> Result<CredentialStore, CredentialsError> {
        if let Some(cipher) = Cipher::load_existing(key_file)? {
            return CredentialStore::open(location, cipher);
        }
        let loc = storage::open(location)?;
        let prefix = loc.key(&["users"]);
        let metas: Vec<_> = loc.store.list(Some(&prefix)).try_collect().await.map_err(|e| CredentialsError::Io {
            location: loc.url.clone(),
            operation: "list".into(),
            reason: e.to_string(),
            source: Some(Box::new(e)),
        })?;
        let records = metas.iter().filter(|m| m.location.filename().is_some_and(|f| f.ends_with(".cred"))).count();
        if records > 0 {
            return Err(CredentialsError::MissingKey {
                location: loc.url.clone(),
                key_file: key_file.display().to_string(),
                records,
            });
        }
        CredentialStore::open(location, Cipher::create(key_file)?)
    }

    pub fn open(location: &str, cipher: Cipher) -> Result<CredentialStore, CredentialsError> {
        let loc = storage::open(location)?;
        // A process killed while saving a record leaves a temporary file beside it; nothing
        // but this store writes here, so whatever a dead writer left goes now.
        loc.remove_interrupted_writes(&loc.prefix, storage::local::Unattributed::OwnedOrOld(&|_| false));
        Ok(CredentialStore { loc, cipher })
    }

    pub fn location(&self) -> &str {
        &self.loc.url
    }

    fn io(&self, operation: &str, e: impl std::error::Error + Send + Sync + 'static) -> CredentialsError {
        CredentialsError::Io {
            location: self.loc.url.clone(),
            operation: operation.to_string(),
            reason: e.to_string(),
            source: Some(Box::new(e)),
        }
    }

    /// An operation that went wrong without an error to show for it.
    fn io_because(&self, operation: &str, reason: String) -> CredentialsError {
        CredentialsError::Io { location: self.loc.url.clone(), operation: operation.to_string(), reason, source: None }
    }

    fn key(&self, user_id: &str) -> object_store::path::Path {
        self.loc.key(&["users", &format!("{user_id}.cred")])
    }

    fn lease_key(&self, user_id: &str) -> object_store::path::Path {
        self.loc.key(&["locks", &format!("{user_id}.lock")])
    }

    /// Proves the store can be written, read and deleted (before sending anyone to Withings:
    /// an authorization code lives 30 seconds, a token that cannot be saved is an account lost).
    pub async fn check_writable(&self) -> Result<(), CredentialsError> {
        let probe = self.loc.key(&["_probe", &format!("{}.tmp", std::process::id())]);
        let sealed = self.cipher.encrypt("_probe", b"probe");
        self.loc.store.put(&probe, PutPayload::from(sealed.clone())).await.map_err(|e| self.io("write", e))?;
        let back =
            self.loc.store.get(&probe).await.map_err(|e| self.io("read", e))?.bytes().await.map_err(|e| self.io("read", e))?;
        self.loc.store.delete(&probe).await.map_err(|e| self.io("delete", e))?;
        if back.as_ref() != sealed.as_slice() {
            return Err(self.io_because("read back", "the probe came back different".into()));
        }
        Ok(())
    }

    /// Writes a record, then reads it back and checks it: only a record that is really stored
    /// counts as saved.
    pub async fn put(&self, record: &UserRecord) -> Result<(), CredentialsError> {
        validate_user_id(&record.user_id)?;
        let json = serde_json::to_vec(record).expect("records serialize");
        let sealed = self.cipher.encrypt(&record.user_id, &json);
        // A rotated token pair that is not saved is an account lost: try a few times.
        let mut last = None;
        for attempt in 0..4u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let written = self
                .loc
                .store
                .put(&self.key(&record.user_id), PutPayload::from(sealed.clone()))
                .await
                .map_err(|e| self.io("write", e));
            let checked: Result<(), CredentialsError> = match written {
                Ok(_) => match self.get(&record.user_id).await {
                    Ok(Some(back)) if back == *record => return Ok(()),
                    Ok(_) => Err(self.io_because(
                        "read back",
                        format!("the record of user '{}' did not read back as written", record.user_id),
                    )),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            if let Err(e) = checked {
                tracing::warn!(user_id = %record.user_id, attempt, error = %e, "saving credentials failed");
                last = Some(e);
            }
        }
        Err(last.expect("at least one attempt"))
    }

    pub async fn get(&self, user_id: &str) -> Result<Option<UserRecord>, CredentialsError> {
        validate_user_id(user_id)?;
        let bytes = match self.loc.store.get(&self.key(user_id)).await {
            Ok(r) => r.bytes().await.map_err(|e| self.io("read", e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.io("read", e)),
        };
        let corrupt =
            |reason: String| CredentialsError::Corrupt { user_id: user_id.to_string(), location: self.loc.url.clone(), reason };
        let plain = self.cipher.decrypt(user_id, &bytes).map_err(corrupt)?;
        serde_json::from_slice(&plain).map(Some).map_err(|e| corrupt(format!("not a record: {}", e.classify_name())))
    }

    /// Every readable record, sorted by user id; an unreadable one is logged (see
    /// [`CredentialStore::list_all`] for the rules).
    pub async fn list(&self) -> Result<Vec<UserRecord>, CredentialsError> {
        let listing = self.list_all().await?;
        for (user_id, reason) in &listing.unreadable {
            tracing::error!(user_id = %user_id, error = %reason, "an unreadable credentials record");
        }
        Ok(listing.records)
    }

    /// Every record, sorted by user id, and those that could not be read. One unreadable
    /// record must not hide every other user; but when records exist and none opens, the key
    /// is wrong ([`CredentialsError::NoKeyOpens`], a configuration error), not the records.
    pub async fn list_all(&self) -> Result<Listing, CredentialsError> {
        let prefix = self.loc.key(&["users"]);
        let metas: Vec<_> = self.loc.store.list(Some(&prefix)).try_collect().await.map_err(|e| self.io("list", e))?;
        let names: Vec<String> = metas
            .iter()
            .filter_map(|m| m.location.filename().and_then(|f| f.strip_suffix(".cred")).map(str::to_string))
            .collect();
        let out = self.get_many(&names).await?;
        if out.records.is_empty() && !out.unreadable.is_empty() {
            return Err(CredentialsError::NoKeyOpens {
                location: self.loc.url.clone(),
                key_source: self.cipher.source.clone(),
                failing: out.unreadable.len(),
            });
        }
        Ok(out)
    }

    /// The records of `user_ids`, read 16 at a time, sorted by user id; one that does not
    /// decrypt or parse is in `unreadable`, one that does not exist in neither list.
    pub async fn get_many(&self, user_ids: &[String]) -> Result<Listing, CredentialsError> {
        // Owned ids: a closure over `&String` makes the future's `Send` higher-ranked, which
        // rustc cannot prove inside a spawned task (the service's).
        let mut read = futures::stream::iter(user_ids.iter().cloned())
            .map(|u| {
                futures::FutureExt::boxed(async move {
                    let got = self.get(&u).await;
                    (u, got)
                })
            })
            .buffer_unordered(16);
        let mut out = Listing::default();
        while let Some((user_id, got)) = read.next().await {
            match got {
                Ok(Some(r)) => out.records.push(r),
                Ok(None) => {}
                Err(e @ (CredentialsError::Corrupt { .. } | CredentialsError::InvalidUserId { .. })) => {
                    out.unreadable.push((user_id, e.to_string()))
                }
                Err(e) => return Err(e),
            }
        }
        out.records.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        out.unreadable.sort();
        Ok(out)
    }

    /// Takes the user's refresh lease (a create-only object, see [`crate::lease`]), waiting up
    /// to `wait` for another holder; an expired lease is taken over.
    pub async fn lease(&self, user_id: &str, wait: Duration) -> Result<Lease, CredentialsError> {
        validate_user_id(user_id)?;
        let key = self.lease_key(user_id);
        Lease::acquire(self.loc.store.clone(), key, &crate::lease::process_holder(), LEASE_TTL, wait).await.map_err(|e| match e {
            LeaseError::Busy { .. } => {
                self.io_because("refresh lease", format!("user '{user_id}' is being refreshed by another process"))
            }
            LeaseError::Storage { source, .. } => self.io("take lease", source),
        })
    }

    /// Deletes the lease if it is still ours (it may have expired and been taken over).
    pub async fn release(&self, lease: Lease) {
        lease.release().await
    }

    /// Deletes the user's record and refresh lease (whose key names them). Whether a record
    /// existed. Taken under the refresh lease: a refresh in flight saves its rotated pair
    /// first, and none starts after (it would find no record), so a deleted record never
    /// comes back.
    pub async fn delete(&self, user_id: &str) -> Result<bool, CredentialsError> {
        validate_user_id(user_id)?;
        let _held = self.lease(user_id, Duration::from_secs(120)).await?;
        // Exists-check without decrypting: a corrupt record can still be removed.
        let existed = match self.loc.store.head(&self.key(user_id)).await {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => return Err(self.io("read", e)),
        };
        for key in [self.key(user_id), self.lease_key(user_id)] {
            match self.loc.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.io("delete", e)),
            }
        }
        Ok(existed)
    }

    /// The keyed hash an erasure manifest records for `user_id` ([`Cipher::erasure_tag`]).
    pub fn erasure_tag(&self, user_id: &str) -> String {
        self.cipher.erasure_tag(user_id)
    }
}

/// Hands out valid access tokens, refreshing (once, for everyone) when they expire.
pub struct TokenManager {
    store: Arc<CredentialStore>,
    client: WithingsClient,
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Refresh this long before the recorded expiry (at most half the token's lifetime).
    pub margin: Duration,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// How long a refresh lease holds if its holder dies.
/// Longer than the slowest refresh (a full rate-limit window plus retries).
const LEASE_TTL: Duration = Duration::from_secs(300);

impl TokenManager {
    pub fn new(store: Arc<CredentialStore>, client: WithingsClient) -> TokenManager {
        TokenManager { store, client, locks: Default::default(), margin: Duration::from_secs(300) }
    }

    pub fn store(&self) -> &CredentialStore {
        &self.store
    }

    fn lock_for(&self, user_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().expect("locks").entry(user_id.to_string()).or_default().clone()
    }

    async fn load_active(&self, user_id: &str) -> Result<UserRecord, CredentialsError> {
        let record =
            self.store.get(user_id).await?.ok_or_else(|| CredentialsError::UnknownUser { user_id: user_id.to_string() })?;
        if record.status != UserStatus::Active {
            let reason = record.status_reason.clone().unwrap_or_else(|| record.status.as_str().to_string());
            return Err(CredentialsError::NeedsReauth { user_id: user_id.to_string(), reason });
        }
        Ok(record)
    }

    /// A valid access token for the user, refreshed first when it expires within the margin.
    pub async fn access_token(&self, user_id: &str) -> Result<Secret, CredentialsError> {
        let lock = self.lock_for(user_id);
        let _held = lock.lock().await;
        let fresh = |r: &UserRecord| {
            let lifetime = r.access_expires_at - r.last_refresh_at.unwrap_or(r.access_expires_at);
            let margin = (self.margin.as_secs() as i64).min(lifetime / 2);
            r.access_expires_at - margin > now() && !r.access_token.is_empty()
        };
        let record = self.load_active(user_id).await?;
        if fresh(&record) {
            return Ok(record.access_token);
        }
        let lease = self.store.lease(user_id, Duration::from_secs(30)).await?;
        // Another process may have refreshed while we waited for the lease. The lease is
        // renewed while the refresh runs (a 601 back-off can outlast its lifetime).
        let result = lease
            .renewing(async {
                match self.load_active(user_id).await {
                    Ok(r) if fresh(&r) => Ok(r.access_token),
                    Ok(r) => self.refresh_locked(r).await,
                    Err(e) => Err(e),
                }
            })
            .await;
        self.store.release(lease).await;
        result
    }

    /// After a 401 with `stale`: refresh, unless another task already did.
    pub async fn refresh_after_401(&self, user_id: &str, stale: &Secret) -> Result<Secret, CredentialsError> {
        let lock = self.lock_for(user_id);
        let _held = lock.lock().await;
        let lease = self.store.lease(user_id, Duration::from_secs(30)).await?;
        let result = lease
            .renewing(async {
                match self.load_active(user_id).await {
                    Ok(r) if r.access_token != *stale => Ok(r.access_token),
                    Ok(r) => self.refresh_locked(r).await,
                    Err(e) => Err(e),
                }
            })
            .await;
        self.store.release(lease).await;
        result
    }

    /// Refreshes and persists in a task of its own: once Withings has rotated the pair, a
    /// cancelled caller must not stop it from being saved.
    async fn refresh_locked(&self, record: UserRecord) -> Result<Secret, CredentialsError> {
        let (store, client) = (self.store.clone(), self.client.clone());
        let user_id = record.user_id.clone();
        tokio::spawn(refresh_and_persist(store, client, record)).await.unwrap_or_else(|e| {
            Err(CredentialsError::Io {
                location: user_id,
                operation: "refresh".into(),
                reason: e.to_string(),
                source: Some(Box::new(e)),
            })
        })
    }

    /// Runs a Withings call with the user's token; on a 401, refreshes once and retries once.
    pub async fn with_token<T, F, Fut>(&self, user_id: &str, call: F) -> Result<T, CredentialsError>
    where
        F: Fn(Secret) -> Fut,
        Fut: std::future::Future<Output = Result<T, WithingsError>>,
    {
        let token = self.access_token(user_id).await?;
        match call(token.clone()).await {
            Err(e) if e.kind() == Some(StatusKind::Auth) => {
                let fresh = self.refresh_after_401(user_id, &token).await?;
                call(fresh).await.map_err(|source| CredentialsError::Withings { user_id: user_id.to_string(), source })
            }
            other => other.map_err(|source| CredentialsError::Withings { user_id: user_id.to_string(), source }),
        }
    }
}

/// Seconds an access token is trusted for: Withings says 10800; anything odd is bounded.
pub fn token_lifetime(expires_in: i64) -> i64 {
    expires_in.clamp(60, 30 * 86_400)
}

async fn refresh_and_persist(
    store: Arc<CredentialStore>,
    client: WithingsClient,
    mut record: UserRecord,
) -> Result<Secret, CredentialsError> {
    let user_id = record.user_id.clone();
    match client.refresh(&record.refresh_token).await {
        Ok(t) => {
            let at = now();
            record.access_token = t.access_token;
            record.refresh_token = t.refresh_token;
            record.access_expires_at = at + token_lifetime(t.expires_in);
            if let Some(scope) = t.scope {
                record.scopes = scope.split(',').map(str::to_string).collect();
            }
            record.last_refresh_at = Some(at);
            record.updated_at = at;
            // Persist (and read back) before anyone uses the new access token.
            store.put(&record).await?;
            tracing::info!(user_id = %user_id, "refreshed Withings tokens");
            Ok(record.access_token)
        }
        Err(e) if refresh_token_refused(&e) => {
            let reason = format!("Withings refused the refresh token ({e})");
            record.status = UserStatus::NeedsReauth;
            record.status_reason = Some(reason.clone());
            record.updated_at = now();
            store.put(&record).await?;
            tracing::warn!(user_id = %user_id, error = %e, "refresh token refused: user needs to link again");
            Err(CredentialsError::NeedsReauth { user_id, reason })
        }
        Err(source) => Err(CredentialsError::Withings { user_id, source }),
    }
}

/// Whether a refresh failure condemns this user's refresh token. A rejected client id or
/// secret is the application's problem (every user would fail): it marks no one.
fn refresh_token_refused(e: &WithingsError) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    let names_client = text.contains("client_id") || text.contains("client_secret") || text.contains("invalid client");
    matches!(e.kind(), Some(StatusKind::InvalidParams | StatusKind::Auth)) && !names_client
}
