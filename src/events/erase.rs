//! The events' part of erasing one person ([`crate::erasure`] owns the whole): their records
//! leave the outbox (pending, delivered and dead, of every sink folder, configured or not) and
//! their events leave the files a files sink wrote. Runs under the delivery lease, so no
//! deliverer moves a record between the listing and the rewrite; committers only create new
//! batch files, and the person's shard (the only one whose commits name them) is held by the
//! erasure.
//!
//! Events already delivered to a webhook are outside our reach: [`OutboxErasure`] counts the
//! delivered webhook records it removed, so the report can tell the operator how many
//! deliveries to ask the receivers to erase.

use std::time::Duration;

use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::outbox::{Outbox, Status};
use super::{EventsError, storage};
use crate::lake::keys;
use crate::lease::{Lease, LeaseError};
use crate::storage::Location;

/// What an erasure removed from the outbox and the files sinks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutboxErasure {
    /// Outbox records removed (every status and sink).
    pub outbox_records_removed: usize,
    /// Of those, records of events a webhook had already received.
    pub webhook_events_already_delivered: usize,
    /// Events removed from the files of files sinks.
    pub files_sink_events_removed: usize,
}

fn to_jsonl(lines: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

/// Rewrites the JSON-lines file `key` without the lines `erase` picks (deleted when none is
/// left); how many it removed. A file gone meanwhile has nothing to remove.
async fn erase_lines<T: serde::de::DeserializeOwned>(
    loc: &Location,
    key: &object_store::path::Path,
    erase: impl Fn(&T) -> bool,
) -> Result<usize, EventsError> {
    let bytes = match loc.store.get(key).await {
        Ok(r) => r.bytes().await.map_err(storage(key))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(0),
        Err(e) => return Err(storage(key)(e)),
    };
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut removed = 0;
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate().filter(|(_, l)| !l.is_empty()) {
        let v: T =
            serde_json::from_slice(line).map_err(|source| EventsError::Corrupt { key: key.to_string(), line: i + 1, source })?;
        if erase(&v) {
            removed += 1;
        } else {
            kept.push(line);
        }
    }
    if removed > 0 {
        rewrite(loc, key, &kept).await?;
    }
    Ok(removed)
}

/// Rewrites `key` with `lines`, or deletes it when none are left.
async fn rewrite(loc: &Location, key: &object_store::path::Path, lines: &[&[u8]]) -> Result<(), EventsError> {
    if lines.is_empty() {
        match loc.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(storage(key)(e)),
        }
    } else {
        loc.store.put(key, PutPayload::from(to_jsonl(lines))).await.map(|_| ()).map_err(storage(key))
    }
}

impl Outbox {
    /// Takes the delivery lease for `holder`, waiting up to `wait` for a running deliverer.
    pub async fn hold_delivery(&self, holder: &str, wait: Duration) -> Result<Lease, EventsError> {
        let key = keys::delivery_lease(&self.lake);
        Lease::acquire(self.lake.store.clone(), key, holder, super::deliver::LEASE_TTL, wait).await.map_err(|e| match e {
            LeaseError::Busy { .. } => EventsError::Busy { source: e },
            LeaseError::Storage { key, source } => EventsError::Storage { key, source },
        })
    }

    /// Removes every record of `user_id` from the outbox (see the module doc); the caller holds
    /// the delivery lease ([`Outbox::hold_delivery`]) and keeps it renewed.
    pub async fn erase_user(&self, user_id: &str, report: &mut OutboxErasure) -> Result<(), EventsError> {
        for status in Status::ALL {
            for sink in self.sink_names(status).await? {
                let dir = keys::outbox_dir(&self.lake, status.as_str(), &sink);
                let files: Vec<object_store::path::Path> =
                    self.lake.store.list(Some(&dir)).map_ok(|m| m.location).try_collect().await.map_err(storage(&dir))?;
                for key in files.into_iter().filter(|k| k.filename().is_some_and(|f| f.ends_with(".jsonl"))) {
                    let removed = erase_lines::<super::Record>(&self.lake, &key, |r| r.user_id == user_id).await?;
                    report.outbox_records_removed += removed;
                    if status == Status::Delivered && sink != "files" {
                        report.webhook_events_already_delivered += removed;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Removes the events of `user_id` from every file a files sink wrote under `location`.
pub async fn erase_from_files_sink(location: &Location, user_id: &str, report: &mut OutboxErasure) -> Result<(), EventsError> {
    let files: Vec<object_store::path::Path> = location
        .store
        .list(Some(&location.prefix))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .map_err(storage(&location.prefix))?;
    for key in files.into_iter().filter(|k| k.filename().is_some_and(|f| f.ends_with(".jsonl"))) {
        report.files_sink_events_removed += erase_lines::<serde_json::Value>(location, &key, |line| {
            let event = &line["event"];
            event["user_id"].as_str() == Some(user_id) || event["client_user_id"].as_str() == Some(user_id)
        })
        .await?;
    }
    Ok(())
}
