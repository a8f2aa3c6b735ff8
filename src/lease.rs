//! Leases on object storage: a create-only lock object naming its holder and expiry, used for
//! a user's token refresh (credentials) and for a writer's shard of the lake.
//!
//! - Taking a lease is a `PutMode::Create`: exactly one process wins.
//! - A lease held by someone else is waited for (polled) up to a deadline, then the caller
//!   gets [`LeaseError::Busy`] naming the holder and the expiry.
//! - An expired lease (its holder died) is taken over with a compare-and-swap on the object's
//!   version where the store supports it (S3 and other conditional-put stores, memory); on a
//!   local folder, which has no conditional overwrite, by delete-then-create (two takers
//!   racing there may both believe they won; their holders' heartbeats then tell them apart,
//!   see [`Lease::renew`]).
//! - The holder renews (heartbeat) before the expiry and deletes the lease when done, only if
//!   it is still its own.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("'{key}' is held by {holder} until {expires_at} (waited {waited_s} s)")]
    Busy { key: String, holder: String, expires_at: DateTime<Utc>, waited_s: u64 },
    #[error("lease '{key}': {source}")]
    Storage { key: String, source: object_store::Error },
}

impl crate::error::Classify for LeaseError {
    fn class(&self) -> crate::error::ErrorClass {
        match self {
            LeaseError::Busy { .. } => crate::error::ErrorClass::Busy,
            LeaseError::Storage { .. } => crate::error::ErrorClass::Transient,
        }
    }
}

/// What a lease object holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub holder: String,
    pub acquired_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A held lease.
#[derive(Debug, Clone)]
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    pub key: Path,
    pub holder: String,
    ttl: Duration,
    acquired_at: DateTime<Utc>,
}

/// This process's holder id: `<host>:<boot id>:<pid namespace>:pid<pid>-<random>`. A new
/// writer on the same machine, same boot and same pid namespace can then see that the holder
/// is dead (a killed job) and take over at once; anywhere else it waits for the expiry.
pub fn process_holder() -> String {
    static HOLDER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOLDER
        .get_or_init(|| {
            let mut b = [0u8; 8];
            let _ = getrandom::fill(&mut b);
            format!("{}:pid{}-{}", machine(), std::process::id(), hex::encode(b))
        })
        .clone()
}

/// `<host>:<boot id>:<pid namespace>` of this process, or `unknown` parts where `/proc` does
/// not tell (then no lease is ever presumed dead).
pub(crate) fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let clean = |s: String| s.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')).collect::<String>();
    let host = read("/proc/sys/kernel/hostname").or_else(|| read("/etc/hostname")).map(clean).unwrap_or_default();
    let boot = read("/proc/sys/kernel/random/boot_id").map(clean).unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|l| l.to_string_lossy().chars().filter(char::is_ascii_digit).collect::<String>())
        .unwrap_or_default();
    let part = |s: String| if s.is_empty() { "unknown".to_string() } else { s };
    format!("{}:{}:{}", part(host), part(boot), part(ns))
}

/// Whether `holder` names a process of this machine, boot and pid namespace that no longer
/// runs. The process part may follow a label (`reharmonize-<run>-<host>:...`, `forget-...`).
/// Anything else (another machine, an unknown part, a pid that still exists) is alive.
/// A holder for one holding within this process (a shard taken by one run): the process's
/// holder plus its own random part, so two runs of one process never take each other's lease
/// for their own (a lease renews and releases only for the exact holder that took it).
pub fn run_holder() -> String {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    format!("{}-{}", process_holder(), hex::encode(b))
}

fn holder_is_dead(holder: &str) -> bool {
    let here = machine();
    if here.contains("unknown") {
        return false;
    }
    let marker = format!("{here}:pid");
    let Some(at) = holder.find(&marker) else { return false };
    let Some(pid) = holder[at + marker.len()..].split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    pid != std::process::id() && !process_exists(pid)
}

/// Whether a process with this pid exists in this pid namespace: `kill(pid, 0)` succeeds, or
/// fails with EPERM (another user's process). Unlike a look in `/proc`, a `/proc` mounted
/// with `hidepid` cannot make a live process look dead.
pub(crate) fn process_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    if pid <= 0 {
        return true; // 0 and negatives mean groups to kill(2): never presumed dead
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn record(holder: &str, acquired_at: DateTime<Utc>, ttl: Duration) -> Vec<u8> {
    let now = Utc::now();
    let expires_at = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(60));
    serde_json::to_vec(&LeaseRecord { holder: holder.to_string(), acquired_at, heartbeat_at: now, expires_at })
        .expect("a lease record serializes")
}

fn storage(key: &Path) -> impl FnOnce(object_store::Error) -> LeaseError + '_ {
    move |source| LeaseError::Storage { key: key.to_string(), source }
}

/// The current lease object and its version, if any.
async fn read(store: &dyn ObjectStore, key: &Path) -> Result<Option<(Option<LeaseRecord>, UpdateVersion)>, LeaseError> {
    match store.get(key).await {
        Ok(r) => {
            let version = UpdateVersion { e_tag: r.meta.e_tag.clone(), version: r.meta.version.clone() };
            let bytes = r.bytes().await.map_err(storage(key))?;
            Ok(Some((serde_json::from_slice(&bytes).ok(), version)))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(storage(key)(e)),
    }
}

impl Lease {
    /// Takes the lease at `key` for `holder`, waiting up to `wait` while someone else holds it.
    pub async fn acquire(
        store: Arc<dyn ObjectStore>,
        key: Path,
        holder: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LeaseError> {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let acquired_at = Utc::now();
            let body = PutPayload::from(record(holder, acquired_at, ttl));
            let create = PutOptions { mode: PutMode::Create, ..Default::default() };
            match store.put_opts(&key, body.clone(), create).await {
                Ok(_) => return Ok(Lease { store, key, holder: holder.to_string(), ttl, acquired_at }),
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(storage(&key)(e)),
            }
            let Some((current, version)) = read(store.as_ref(), &key).await? else { continue };
            let expired = current.as_ref().is_none_or(|c| c.expires_at < Utc::now() || holder_is_dead(&c.holder));
            if expired {
                let update = PutOptions { mode: PutMode::Update(version), ..Default::default() };
                match store.put_opts(&key, body, update).await {
                    Ok(_) => {
                        tracing::warn!(key = %key, previous = ?current.map(|c| c.holder), "took over an expired lease (or one whose process is gone)");
                        return Ok(Lease { store, key, holder: holder.to_string(), ttl, acquired_at });
                    }
                    Err(object_store::Error::Precondition { .. }) => continue, // someone else took it
                    Err(object_store::Error::NotImplemented { .. }) => {
                        // No conditional overwrite here: delete, then race for the create.
                        match store.delete(&key).await {
                            Ok(()) | Err(object_store::Error::NotFound { .. }) => continue,
                            Err(e) => return Err(storage(&key)(e)),
                        }
                    }
                    Err(e) => return Err(storage(&key)(e)),
                }
            }
            let held = current.expect("not expired, so readable");
            if started.elapsed() >= wait {
                return Err(LeaseError::Busy {
                    key: key.to_string(),
                    holder: held.holder,
                    expires_at: held.expires_at,
                    waited_s: started.elapsed().as_secs(),
                });
            }
            tokio::time::sleep(pause.min(wait.saturating_sub(started.elapsed())).max(Duration::from_millis(10))).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Heartbeat: pushes the expiry out by the ttl. `Ok(false)` when the lease is no longer
    /// ours (it expired and was taken over): the holder must stop writing.
    pub async fn renew(&self) -> Result<bool, LeaseError> {
        let Some((Some(current), version)) = read(self.store.as_ref(), &self.key).await? else { return Ok(false) };
        if current.holder != self.holder {
            return Ok(false);
        }
        let body = PutPayload::from(record(&self.holder, self.acquired_at, self.ttl));
        let update = PutOptions { mode: PutMode::Update(version), ..Default::default() };
        match self.store.put_opts(&self.key, body.clone(), update).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(object_store::Error::NotImplemented { .. }) => {
                self.store.put(&self.key, body).await.map_err(storage(&self.key))?;
                Ok(true)
            }
            Err(e) => Err(storage(&self.key)(e)),
        }
    }

    /// Runs `work` while renewing the lease every quarter of its lifetime, so a holder slowed
    /// down (a 601 back-off, a slow store) keeps what it holds for as long as it works. A
    /// failed or lost renewal is logged; the caller's own commit checks still decide.
    pub async fn renewing<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        let every = (self.ttl / 4).max(Duration::from_millis(10));
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tokio::time::sleep(every) => match self.renew().await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(key = %self.key, "a lease expired and was taken over while its holder worked"),
                    Err(e) => tracing::warn!(key = %self.key, error = %e, "renewing a lease failed (retried)"),
                },
            }
        }
    }

    /// Deletes the lease if it is still ours.
    pub async fn release(self) {
        let ours = matches!(read(self.store.as_ref(), &self.key).await, Ok(Some((Some(c), _))) if c.holder == self.holder);
        if ours && let Err(e) = self.store.delete(&self.key).await {
            tracing::warn!(key = %self.key, error = %e, "could not release a lease (it expires by itself)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn expired_lease_is_taken_over_and_the_old_holder_knows(store: Arc<dyn ObjectStore>) {
        let key = Path::from("leases/x.lock");
        let old = Lease::acquire(store.clone(), key.clone(), "old", Duration::from_secs(60), Duration::ZERO).await.unwrap();
        let busy = Lease::acquire(store.clone(), key.clone(), "new", Duration::from_secs(60), Duration::ZERO).await.unwrap_err();
        assert!(matches!(&busy, LeaseError::Busy { holder, .. } if holder == "old"), "{busy}");
        // The old holder stops renewing and its expiry passes (written, not waited for: a
        // test that sleeps through a short ttl fails on a loaded machine).
        let past = Utc::now() - chrono::Duration::seconds(1);
        let expired = LeaseRecord { holder: "old".into(), acquired_at: past, heartbeat_at: past, expires_at: past };
        store.put(&key, PutPayload::from(serde_json::to_vec(&expired).unwrap())).await.unwrap();
        let new = Lease::acquire(store.clone(), key.clone(), "new", Duration::from_secs(60), Duration::ZERO).await.unwrap();
        assert!(!old.renew().await.unwrap(), "the old holder learns it lost the lease");
        assert!(new.renew().await.unwrap());
        old.release().await; // not ours any more: must not delete the new holder's lease
        assert!(Lease::acquire(store.clone(), key.clone(), "third", Duration::from_secs(60), Duration::ZERO).await.is_err());
        new.release().await;
        Lease::acquire(store, key, "third", Duration::from_secs(60), Duration::ZERO).await.unwrap();
    }

    #[tokio::test]
    async fn a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let key = Path::from("leases/dead.lock");
        // pid 0x7ffffffe is never a running process; a live pid (ours) is never presumed dead.
        let dead = format!("{}:pid{}-00", machine(), 0x7fff_fffe_u32);
        Lease::acquire(store.clone(), key.clone(), &dead, Duration::from_secs(600), Duration::ZERO).await.unwrap();
        let taken = Lease::acquire(store.clone(), key.clone(), "new", Duration::from_secs(60), Duration::ZERO).await;
        assert!(taken.is_ok() || machine().contains("unknown"));
        // A labelled holder (`reharmonize-<run>-...`, `forget-...`) of a dead process too.
        let key_labelled = Path::from("leases/labelled.lock");
        let labelled = format!("reharmonize-20240101T000000Z-{dead}");
        Lease::acquire(store.clone(), key_labelled.clone(), &labelled, Duration::from_secs(600), Duration::ZERO).await.unwrap();
        let taken = Lease::acquire(store.clone(), key_labelled, "new", Duration::from_secs(60), Duration::ZERO).await;
        assert!(taken.is_ok() || machine().contains("unknown"), "a killed reharmonize's lease is taken over at once");
        // Another machine, or another pid namespace of this one: never presumed dead.
        let other_host = format!("elsewhere:{}", dead.split_once(':').unwrap().1);
        let key_ns = Path::from("leases/ns.lock");
        let parts: Vec<&str> = dead.splitn(4, ':').collect();
        let other_ns = format!("{}:{}:1:{}", parts[0], parts[1], parts[3]);
        Lease::acquire(store.clone(), key_ns.clone(), &other_ns, Duration::from_secs(600), Duration::ZERO).await.unwrap();
        assert!(Lease::acquire(store.clone(), key_ns, "new", Duration::from_secs(60), Duration::ZERO).await.is_err());
        let key2 = Path::from("leases/remote.lock");
        Lease::acquire(store.clone(), key2.clone(), &other_host, Duration::from_secs(600), Duration::ZERO).await.unwrap();
        assert!(Lease::acquire(store.clone(), key2, "new", Duration::from_secs(60), Duration::ZERO).await.is_err());
        let live = process_holder();
        let key3 = Path::from("leases/live.lock");
        Lease::acquire(store.clone(), key3.clone(), &live, Duration::from_secs(600), Duration::ZERO).await.unwrap();
        assert!(Lease::acquire(store, key3, "new", Duration::from_secs(60), Duration::ZERO).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_renewed_while_its_holder_works_past_its_lifetime() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let key = Path::from("leases/slow.lock");
        let ttl = Duration::from_secs(300);
        let lease = Lease::acquire(store.clone(), key.clone(), "refresher", ttl, Duration::ZERO).await.unwrap();
        let first = read(store.as_ref(), &key).await.unwrap().unwrap().0.unwrap();
        // Work three lifetimes long (a 601 back-off): the heartbeat keeps moving.
        let out = lease
            .renewing(async {
                tokio::time::sleep(3 * ttl).await;
                7
            })
            .await;
        assert_eq!(out, 7);
        let last = read(store.as_ref(), &key).await.unwrap().unwrap().0.unwrap();
        assert_eq!(last.holder, "refresher");
        assert!(last.heartbeat_at > first.heartbeat_at && last.expires_at > first.expires_at, "{first:?} {last:?}");
    }

    #[tokio::test]
    async fn memory_store_takes_over_with_compare_and_swap() {
        expired_lease_is_taken_over_and_the_old_holder_knows(Arc::new(object_store::memory::InMemory::new())).await;
    }

    #[tokio::test]
    async fn local_folder_takes_over_by_delete_and_create() {
        let dir = tempfile::tempdir().unwrap();
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        expired_lease_is_taken_over_and_the_old_holder_knows(Arc::new(store)).await;
    }
}
