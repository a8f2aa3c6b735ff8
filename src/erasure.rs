//! Erasure of one person (GDPR): the one place that knows everything that can name someone and
//! removes it, in this order:
//!
//! 1. credentials: the encrypted record and the refresh lease (no run can fetch them again);
//! 2. under the person's shard lease, listed only once it is held (a backfill committing while
//!    the erasure waits is finished by then): the rows of every table, the raw landing and the
//!    quarantine, the shard's staged changes, the id in manifests ([`Lake::erase_user`]), then
//!    the user's state object;
//! 3. under the delivery lease as well (and the service's objects under `_service/`: the
//!    user, link tokens, inbox entries, refresh counts): the person's records in the outbox (pending,
//!    delivered, dead, every sink) and their events in the files sink, inside the lake or at
//!    its own URL ([`crate::events::erase`]);
//! 4. the erasure manifest, which names the person only by an HMAC-SHA256 keyed by a key
//!    derived from the credentials key ([`crate::credentials::Cipher::erasure_tag`]): ids are
//!    guessable, so an unkeyed hash would name them to anyone who reads the lake, while whoever
//!    holds the key can still answer an auditor's "was this person erased?".
//!
//! Events a webhook already received are beyond our reach: the report counts them and says so.
//! A staging folder of a run that is still alive holds its own copy until that run commits
//! (and then it is in the lake, where a new erasure finds it).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::credentials::{CredentialStore, CredentialsError};
use crate::error::{Classify, ErrorClass};
use crate::events::erase::{OutboxErasure, erase_from_files_sink};
use crate::events::{EventsError, Outbox};
use crate::lake::{Lake, LakeErasure, LakeError, keys, shard_of};
use crate::storage::Location;

/// What a `forget` says about events it cannot recall.
pub const BEYOND_REACH: &str = "events already delivered to webhooks are held by their receivers, outside the lake: \
     ask each receiver to erase them (webhook_events_already_delivered counts the deliveries this lake had recorded)";

#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Events(#[from] EventsError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Service(#[from] crate::serve::store::StoreError),
}

impl Classify for ErasureError {
    fn class(&self) -> ErrorClass {
        match self {
            ErasureError::Credentials(e) => e.class(),
            ErasureError::Lake(e) => e.class(),
            ErasureError::Events(e) => e.class(),
            ErasureError::State(e) => e.class(),
            ErasureError::Service(_) => ErrorClass::Transient,
        }
    }
}

/// The erasure manifest (`_manifests/forget-<time>-000001.json`), also printed by `forget`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ForgetReport {
    /// HMAC-SHA256 of the user id under a key derived from the credentials key; none when
    /// the erasure ran without the key (records are deleted without being read).
    pub user_id_hmac_sha256: Option<String>,
    pub completed_at: Option<DateTime<Utc>>,
    pub credentials_removed: bool,
    #[serde(flatten)]
    pub lake: LakeErasure,
    #[serde(flatten)]
    pub events: OutboxErasure,
    /// The service's objects that named the person (`_service/`: the user, link tokens, the
    /// inbox, refresh counts).
    #[serde(default)]
    pub service_objects_removed: usize,
    /// What this erasure could not reach ([`BEYOND_REACH`]).
    pub beyond_reach: String,
}

/// Where a person can be named: the lake, the credentials, and the files sink when it lives
/// outside the lake.
pub struct Erasure<'a> {
    pub lake: &'a Lake,
    pub credentials: &'a CredentialStore,
    /// The files sink, if the pipeline has one (inside the lake or not).
    pub files_sink: Option<Location>,
    /// Holder name for the leases.
    pub holder: String,
    /// How long to wait for a running writer or deliverer.
    pub wait: Duration,
    /// Whether `credentials` holds the real key (the erasure manifest's hash needs it; the
    /// erasure itself does not: a record is deleted without being read).
    pub keyed: bool,
}

impl Erasure<'_> {
    /// Erases `user_id` (see the module doc).
    pub async fn forget(&self, user_id: &str) -> Result<ForgetReport, ErasureError> {
        crate::credentials::validate_user_id(user_id)?;
        let mut report = ForgetReport {
            user_id_hmac_sha256: self.keyed.then(|| self.credentials.erasure_tag(user_id)),
            beyond_reach: BEYOND_REACH.to_string(),
            ..ForgetReport::default()
        };
        // Read first (when the key opens it): the Withings userid names the person in the
        // service's inbox, the Vital id in its other objects.
        let record = self.credentials.get(user_id).await.ok().flatten();
        report.credentials_removed = self.credentials.delete(user_id).await?;
        let run_id = format!("forget-{}", Utc::now().format("%Y%m%dT%H%M%S%.6fZ"));
        let shard = shard_of(user_id, self.lake.meta.shards);
        let lease = self.lake.lease_shard(shard, &self.holder, self.wait).await?;
        // The shard lease stays renewed while the delivery lease is waited for and while the
        // erasure runs, and so does the delivery lease; each is checked still ours at the end
        // (a lease lost half-way could let a writer put back what was erased).
        let result = lease
            .renewing(async {
                let outbox = Outbox::new(self.lake.location.clone(), Vec::new());
                let delivery = outbox.hold_delivery(&self.holder, self.wait).await?;
                let done = delivery
                    .renewing(async {
                        report.lake = self.lake.erase_user(&lease, user_id, &run_id).await?;
                        let states = crate::state::StateStore::new(self.lake.location.clone());
                        report.lake.state_objects_removed += usize::from(states.delete_existing(user_id).await?);
                        outbox.erase_user(user_id, &mut report.events).await?;
                        // The configured files sink, and the lake's default one (a pipeline that
                        // no longer names it, or `forget` run with another, still finds it).
                        let default =
                            Location { prefix: keys::default_files_sink(&self.lake.location), ..self.lake.location.clone() };
                        let same = |l: &Location| l.store_url == default.store_url && l.prefix == default.prefix;
                        if self.files_sink.as_ref().is_none_or(|f| !same(f)) {
                            erase_from_files_sink(&default, user_id, &mut report.events).await?;
                        }
                        if let Some(files) = &self.files_sink {
                            erase_from_files_sink(files, user_id, &mut report.events).await?;
                        }
                        let vital = record
                            .as_ref()
                            .map(crate::credentials::UserRecord::vital_id)
                            .unwrap_or_else(|| crate::credentials::derived_vital_user_id(user_id));
                        let withings = record.as_ref().map(|r| r.withings_userid.as_str());
                        report.service_objects_removed =
                            crate::serve::store::erase_user(&self.lake.location, user_id, &vital, withings).await?;
                        if !delivery.renew().await.map_err(|source| EventsError::Busy { source })? {
                            return Err(EventsError::LeaseLost.into());
                        }
                        lease.renew().await?;
                        Ok::<(), ErasureError>(())
                    })
                    .await;
                delivery.release().await;
                done
            })
            .await;
        lease.release().await;
        result?;
        report.completed_at = Some(Utc::now());
        self.lake.write_erasure_manifest(&run_id, &report).await?;
        Ok(report)
    }
}
