//! Sync state: per (user, family) cursors and backfill progress, under `<lake>/_state/users/`.
//!
//! One JSON object per user, overwritten atomically. The commit protocol (see `lake`) writes
//! state only after the data it describes is committed, so a crash between the two re-fetches
//! a window (idempotent) and never skips one. A family is the set of resources one endpoint
//! feeds, named by its endpoint (`getmeas`, `getactivity`, ...).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::storage::Location;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("sync state '{key}': {source}")]
    Storage { key: String, source: object_store::Error },
    #[error("sync state '{key}' is not valid: {source}")]
    Corrupt { key: String, source: serde_json::Error },
    #[error("user id '{0}' cannot name a state object (use letters, digits, '-', '_', '.', '@')")]
    BadUserId(String),
}

/// Every state error stops a command (exit 4). User ids are checked before they name state
/// objects (`credentials::validate_user_id` is stricter), so one that cannot is a bug here;
/// the sync engine, which takes ids from the command line, reports it as a setting instead.
impl crate::error::Classify for StateError {
    fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            StateError::Storage { .. } => ErrorClass::Transient,
            StateError::Corrupt { .. } => ErrorClass::Data,
            StateError::BadUserId(_) => ErrorClass::Internal,
        }
    }
}

/// A closed range of local dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DateRange {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// Where one family of one user stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyState {
    /// The largest `modified` seen (epoch seconds). The next incremental asks `lastupdate`
    /// from it minus the safety overlap; records modified after it are "changed".
    pub cursor: Option<i64>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Backfill windows committed, merged where they touch.
    #[serde(default)]
    pub backfilled: Vec<DateRange>,
    /// When the trailing window was last re-listed with a window replace (getmeas), which
    /// mirrors deletions that `lastupdate` cannot show.
    #[serde(default)]
    pub relisted_at: Option<DateTime<Utc>>,
    /// Records (key -> `modified`) already handled whose `modified` lies within the cursor
    /// overlap: seen again by the next listing, they are not counted as changed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub recent: BTreeMap<String, i64>,
}

impl FamilyState {
    /// Records a committed backfill window.
    pub fn add_backfilled(&mut self, r: DateRange) {
        self.backfilled.push(r);
        self.backfilled.sort();
        let mut merged: Vec<DateRange> = Vec::with_capacity(self.backfilled.len());
        for r in self.backfilled.drain(..) {
            match merged.last_mut() {
                Some(m) if r.from <= m.to.succ_opt().unwrap_or(m.to) => m.to = m.to.max(r.to),
                _ => merged.push(r),
            }
        }
        self.backfilled = merged;
    }

    /// Whether every day of `r` is already backfilled.
    pub fn covers(&self, r: DateRange) -> bool {
        self.backfilled.iter().any(|b| b.from <= r.from && r.to <= b.to)
    }
}

/// Everything the sync knows about one user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    pub user_id: String,
    pub families: BTreeMap<String, FamilyState>,
    pub updated_at: Option<DateTime<Utc>>,
    /// The user's IANA zone as getmeas last gave it (for endpoints that carry none).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// The zone of each local day the records committed so far tell (getactivity, sleep
    /// getsummary, getworkouts days, and the current zone on the days it was seen): the zone
    /// that zone-less samples take. Stored as runs of days.
    #[serde(default, skip_serializing_if = "crate::harmonize::ZoneTimeline::is_empty")]
    pub zones: crate::harmonize::ZoneTimeline,
    /// Local days whose zone or span changed after rows of them were committed, and whose
    /// getmeas rows are not yet re-stamped: the next run lists getmeas over them again.
    #[serde(default, skip_serializing_if = "crate::harmonize::DaySet::is_empty")]
    pub restamp_getmeas: crate::harmonize::DaySet,
    /// The same for intraday rows: the next run fetches those wearable days again.
    #[serde(default, skip_serializing_if = "crate::harmonize::DaySet::is_empty")]
    pub restamp_intraday: crate::harmonize::DaySet,
    /// The latest height measure seen (body BMI needs it when a run carries no height).
    #[serde(default)]
    pub height: Option<KnownHeight>,
    /// The whole history was searched for a height once (none found, or `height` holds it).
    #[serde(default)]
    pub height_looked_up: bool,
    /// Resources whose history is complete and announced (`historical.data.<resource>.
    /// created`). `None` for a state written before events existed: its first run records the
    /// resources already complete then, without announcing them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub historical_announced: Option<std::collections::BTreeSet<String>>,
    /// The credentials record version (`updated_at`) whose loss of authorization was
    /// announced (`provider.connection.error`), so it is announced once; `Some(0)` once the
    /// user was seen connected; `None` for a state written before events existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reauth_announced: Option<i64>,
}

/// A height measure as Withings sent it: `value * 10^unit` metres at `at` (epoch seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownHeight {
    pub at: i64,
    pub value: i64,
    pub unit: i64,
}

/// The state objects of one lake.
#[derive(Debug, Clone)]
pub struct StateStore {
    loc: Location,
}

fn valid(user_id: &str) -> Result<(), StateError> {
    let ok = !user_id.is_empty()
        && user_id.len() <= 200
        && user_id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        && !user_id.starts_with('.');
    if ok { Ok(()) } else { Err(StateError::BadUserId(user_id.to_string())) }
}

impl StateStore {
    /// The state of the lake at `lake`.
    pub fn new(lake: Location) -> StateStore {
        StateStore { loc: lake }
    }

    fn key(&self, user_id: &str) -> Path {
        self.loc.key(&["_state", "users", &format!("{user_id}.json")])
    }

    /// The object holding `user_id`'s state (`None` for an id that cannot name one).
    pub fn key_of(&self, user_id: &str) -> Option<Path> {
        valid(user_id).ok().map(|_| self.key(user_id))
    }

    pub async fn get(&self, user_id: &str) -> Result<Option<UserState>, StateError> {
        valid(user_id)?;
        let key = self.key(user_id);
        let bytes = match self.loc.store.get(&key).await {
            Ok(r) => r.bytes().await.map_err(|source| StateError::Storage { key: key.to_string(), source })?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(StateError::Storage { key: key.to_string(), source }),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|source| StateError::Corrupt { key: key.to_string(), source })
    }

    /// Writes the user's state (one atomic overwrite). Call only after the data it
    /// describes is committed.
    pub async fn put(&self, state: &UserState) -> Result<(), StateError> {
        valid(&state.user_id)?;
        let key = self.key(&state.user_id);
        let mut s = state.clone();
        s.updated_at = Some(Utc::now());
        let body = serde_json::to_vec_pretty(&s).expect("state serializes");
        self.loc
            .store
            .put(&key, PutPayload::from(body))
            .await
            .map_err(|source| StateError::Storage { key: key.to_string(), source })?;
        Ok(())
    }

    /// Every user with state.
    pub async fn users(&self) -> Result<Vec<String>, StateError> {
        let dir = self.loc.key(&["_state", "users"]);
        let keys: Vec<Path> = self
            .loc
            .store
            .list(Some(&dir))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|source| StateError::Storage { key: dir.to_string(), source })?;
        let mut users: Vec<String> =
            keys.iter().filter_map(|k| k.filename()?.strip_suffix(".json").map(str::to_string)).collect();
        users.sort();
        Ok(users)
    }

    /// Deletes the user's state object; whether there was one.
    pub async fn delete_existing(&self, user_id: &str) -> Result<bool, StateError> {
        valid(user_id)?;
        let key = self.key(user_id);
        match self.loc.store.head(&key).await {
            Ok(_) => self.delete(user_id).await.map(|()| true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(StateError::Storage { key: key.to_string(), source }),
        }
    }

    pub async fn delete(&self, user_id: &str) -> Result<(), StateError> {
        valid(user_id)?;
        let key = self.key(user_id);
        match self.loc.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(StateError::Storage { key: key.to_string(), source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn backfill_windows_merge_and_cover() {
        let mut f = FamilyState::default();
        f.add_backfilled(DateRange { from: d("2024-03-01"), to: d("2024-03-31") });
        f.add_backfilled(DateRange { from: d("2024-05-01"), to: d("2024-05-31") });
        f.add_backfilled(DateRange { from: d("2024-04-01"), to: d("2024-04-30") });
        assert_eq!(f.backfilled, vec![DateRange { from: d("2024-03-01"), to: d("2024-05-31") }]);
        assert!(f.covers(DateRange { from: d("2024-04-10"), to: d("2024-05-02") }));
        assert!(!f.covers(DateRange { from: d("2024-02-28"), to: d("2024-03-02") }));
    }

    #[tokio::test]
    async fn state_round_trips_and_lists_users() {
        let store = StateStore::new(crate::storage::open("memory://state-roundtrip").unwrap());
        assert_eq!(store.get("alice").await.unwrap(), None);
        let mut s = UserState { user_id: "alice".into(), ..UserState::default() };
        s.families.entry("getmeas".into()).or_default().cursor = Some(1_718_000_000);
        store.put(&s).await.unwrap();
        let back = store.get("alice").await.unwrap().unwrap();
        assert_eq!(back.families["getmeas"].cursor, Some(1_718_000_000));
        assert!(back.updated_at.is_some());
        store.put(&UserState { user_id: "bob".into(), ..UserState::default() }).await.unwrap();
        assert_eq!(store.users().await.unwrap(), vec!["alice".to_string(), "bob".to_string()]);
        store.delete("alice").await.unwrap();
        assert_eq!(store.users().await.unwrap(), vec!["bob".to_string()]);
        assert!(matches!(store.get("../etc").await, Err(StateError::BadUserId(_))));
    }
}
