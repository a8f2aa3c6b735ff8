//! The service's own objects in the lake, under `_service/` (so every instance sees them):
//! users (`users/<user_id>.json`), link tokens (`link/<sha256 of the token>.json`, consumed
//! by creating `link/<hash>.consumed`), the notification inbox (`inbox/<time>-<random>.json`),
//! refresh counts (`refresh/<user_id>.json`), pending erasures (`erase/<user_id>.json`) and
//! the leader lease (`leader.lease`). JSON, small, written whole.

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, path::Path};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::storage::Location;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("service store {key}: {source}")]
    Storage { key: String, source: object_store::Error },
    #[error("service store {key}: not readable JSON: {reason}")]
    Corrupt { key: String, reason: String },
}

/// Whether a create-only write made the object.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    Yes,
    AlreadyThere,
}

#[derive(Clone)]
pub struct ServiceStore {
    location: Location,
}

impl ServiceStore {
    pub fn new(location: Location) -> ServiceStore {
        ServiceStore { location }
    }

    pub fn key(&self, parts: &[&str]) -> Path {
        let mut all = vec!["_service"];
        all.extend_from_slice(parts);
        self.location.key(&all)
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    fn err(key: &Path, source: object_store::Error) -> StoreError {
        StoreError::Storage { key: key.to_string(), source }
    }

    pub async fn get<T: DeserializeOwned>(&self, key: &Path) -> Result<Option<T>, StoreError> {
        let bytes = match self.location.store.get(key).await {
            Ok(r) => r.bytes().await.map_err(|e| Self::err(key, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Self::err(key, e)),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| StoreError::Corrupt { key: key.to_string(), reason: e.to_string() })
    }

    pub async fn exists(&self, key: &Path) -> Result<bool, StoreError> {
        match self.location.store.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Self::err(key, e)),
        }
    }

    pub async fn put<T: Serialize>(&self, key: &Path, value: &T) -> Result<(), StoreError> {
        let body = serde_json::to_vec(value).expect("service objects serialize");
        self.location.store.put(key, PutPayload::from(Bytes::from(body))).await.map_err(|e| Self::err(key, e))?;
        Ok(())
    }

    /// Writes `value` only if nothing is at `key` (the one write that decides a race).
    pub async fn create<T: Serialize>(&self, key: &Path, value: &T) -> Result<Created, StoreError> {
        let body = serde_json::to_vec(value).expect("service objects serialize");
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.location.store.put_opts(key, PutPayload::from(Bytes::from(body)), opts).await {
            Ok(_) => Ok(Created::Yes),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::AlreadyThere),
            Err(e) => Err(Self::err(key, e)),
        }
    }

    pub async fn delete(&self, key: &Path) -> Result<(), StoreError> {
        match self.location.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Self::err(key, e)),
        }
    }

    /// The keys under `_service/<dir>/`, sorted.
    pub async fn list(&self, dir: &str) -> Result<Vec<Path>, StoreError> {
        let prefix = self.key(&[dir]);
        let mut keys: Vec<Path> = self
            .location
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|e| Self::err(&prefix, e))?;
        keys.sort();
        Ok(keys)
    }
}

/// Removes every service object that names `user_id` (the application's id), its Vital id
/// or its Withings userid: the user, refresh counts, a pending erasure, link tokens and inbox
/// entries. Called by [`crate::erasure`]. Returns how many objects went.
pub async fn erase_user(
    location: &Location,
    user_id: &str,
    vital_user_id: &str,
    withings_userid: Option<&str>,
) -> Result<usize, StoreError> {
    let store = ServiceStore::new(location.clone());
    let mut removed = 0;
    for dir in ["users", "refresh", "erase"] {
        let key = store.key(&[dir, &format!("{vital_user_id}.json")]);
        if store.exists(&key).await? {
            store.delete(&key).await?;
            removed += 1;
        }
    }
    for key in store.list("link").await? {
        if !key.as_ref().ends_with(".json") {
            continue;
        }
        let names = match store.get::<serde_json::Value>(&key).await {
            Ok(Some(v)) => v["client_user_id"] == user_id || v["user_id"] == vital_user_id,
            Ok(None) => false,
            // Not readable: it names nobody we can tell; left alone.
            Err(StoreError::Corrupt { .. }) => false,
            Err(e) => return Err(e),
        };
        if names {
            store.delete(&key).await?;
            let consumed = object_store::path::Path::from(key.as_ref().replace(".json", ".consumed"));
            store.delete(&consumed).await?;
            removed += 1;
        }
    }
    for key in store.list("inbox").await? {
        let names = match store.get::<serde_json::Value>(&key).await {
            Ok(Some(v)) => v["user_id"] == user_id || withings_userid.is_some_and(|w| v["userid"] == w),
            Ok(None) => false,
            Err(StoreError::Corrupt { .. }) => false,
            Err(e) => return Err(e),
        };
        if names {
            store.delete(&key).await?;
            removed += 1;
        }
    }
    Ok(removed)
}
