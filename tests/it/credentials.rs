//! Encrypted credential records and the token manager, against the simulator.

use std::sync::Arc;
use std::time::Duration;

use withings_lake::credentials::{Cipher, CredentialStore, CredentialsError, TokenManager, UserRecord, UserStatus};
use withings_lake::error::Classify;
use withings_lake::secret::Secret;
use withings_lake::withings::{ClientConfig, ErrorClass, WithingsClient};

use crate::common::{self, Sim};

fn record(user_id: &str, withings_userid: i64, refresh: &str) -> UserRecord {
    UserRecord {
        user_id: user_id.into(),
        withings_userid: withings_userid.to_string(),
        scopes: vec!["user.metrics".into(), "user.activity".into()],
        access_token: Secret::default(),
        access_expires_at: 0,
        refresh_token: Secret::new(refresh),
        status: UserStatus::Active,
        status_reason: None,
        created_at: 1,
        updated_at: 1,
        last_refresh_at: None,
        vital_user_id: None,
    }
}

fn client(sim: &Sim) -> WithingsClient {
    WithingsClient::new(ClientConfig {
        base_url: sim.base.clone(),
        client_id: "demo-client".into(),
        client_secret: Secret::new("demo-secret"),
        requests_per_minute: 0,
        retry_base: Duration::from_millis(20),
        ..ClientConfig::default()
    })
    .unwrap()
}

/// A token manager over a fresh in-memory store holding `users` of the simulator.
async fn manager(sim: &Sim, name: &str, users: &[(usize, &str)]) -> TokenManager {
    let store = CredentialStore::open(&format!("memory://{name}"), Cipher::from_key([3u8; 32], "test")).unwrap();
    let listed = sim.users().await;
    for (index, user_id) in users {
        let u = &listed[*index];
        store.put(&record(user_id, u["userid"].as_i64().unwrap(), u["refresh_token"].as_str().unwrap())).await.unwrap();
    }
    TokenManager::new(Arc::new(store), client(sim))
}

#[tokio::test]
async fn records_are_encrypted_at_rest_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("creds");
    let store = CredentialStore::open(path.to_str().unwrap(), Cipher::from_key([9u8; 32], "test")).unwrap();
    store.check_writable().await.unwrap();
    let r = record("alice-01", 31_000_000, "refresh-token-plaintext-marker");
    store.put(&r).await.unwrap();
    store.put(&record("bob", 31_000_001, "another-refresh-marker")).await.unwrap();
    assert_eq!(store.get("alice-01").await.unwrap().unwrap(), r);
    assert_eq!(store.list().await.unwrap().iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>(), ["alice-01", "bob"]);
    for entry in walk(&path) {
        let bytes = std::fs::read(&entry).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("plaintext-marker") && !text.contains("31000000"), "{} is readable", entry.display());
    }
    assert!(format!("{r:?}").contains("***") && !format!("{r:?}").contains("marker"));
    let wrong = CredentialStore::open(path.to_str().unwrap(), Cipher::from_key([1u8; 32], "other")).unwrap();
    let e = wrong.get("alice-01").await.unwrap_err();
    assert!(matches!(e, CredentialsError::Corrupt { .. }) && e.to_string().contains("alice-01"), "{e}");
    assert!(store.delete("bob").await.unwrap());
    assert!(store.get("bob").await.unwrap().is_none());
    let bad = store.get("../etc/passwd").await.unwrap_err();
    assert_eq!(bad.class(), ErrorClass::Config, "{bad}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[tokio::test]
async fn a_401_costs_one_refresh_then_the_call_succeeds() {
    let sim = common::start(1, 0).await;
    let tm = manager(&sim, "cred-401", &[(0, "u0")]).await;
    let c = client(&sim);
    let first = tm
        .with_token("u0", |t| {
            let c = c.clone();
            async move { c.getdevice(&t).await }
        })
        .await
        .unwrap();
    assert!(!first.is_empty());
    assert_eq!(sim.stats().await["auth_refreshes"], 1, "the empty token was refreshed");
    // Three simulated hours later Withings refuses the token our clock still thinks valid.
    sim.advance(3 * 3600 + 60).await;
    tm.with_token("u0", |t| {
        let c = c.clone();
        async move { c.getdevice(&t).await }
    })
    .await
    .unwrap();
    assert_eq!(sim.stats().await["auth_refreshes"], 2, "one refresh for the 401");
    let stored = tm.store().get("u0").await.unwrap().unwrap();
    assert!(stored.last_refresh_at.is_some());
}

#[tokio::test]
async fn ten_concurrent_calls_with_an_expired_token_refresh_once() {
    let sim = common::start(1, 0).await;
    let tm = Arc::new(manager(&sim, "cred-concurrent", &[(0, "u0")]).await);
    let c = client(&sim);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (tm, c) = (tm.clone(), c.clone());
        tasks.push(tokio::spawn(async move {
            tm.with_token("u0", |t| {
                let c = c.clone();
                async move { c.getdevice(&t).await }
            })
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(sim.stats().await["auth_refreshes"], 1);
}

#[tokio::test]
async fn a_refused_refresh_token_marks_only_that_user_needs_reauth() {
    let sim = common::start(2, 0).await;
    let tm = manager(&sim, "cred-reauth", &[(0, "good"), (1, "bad")]).await;
    let mut bad = tm.store().get("bad").await.unwrap().unwrap();
    bad.refresh_token = Secret::new("0000000000000000000000000000000000000000");
    tm.store().put(&bad).await.unwrap();
    let e = tm.access_token("bad").await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Auth);
    assert!(e.to_string().contains("must link their Withings account again"), "{e}");
    assert!(!e.to_string().contains("0000000000"), "no token in the message: {e}");
    let stored = tm.store().get("bad").await.unwrap().unwrap();
    assert_eq!(stored.status, UserStatus::NeedsReauth);
    assert!(stored.status_reason.unwrap().contains("refused"));
    // Asking again does not call Withings again.
    let before = sim.stats().await["total_requests"].clone();
    assert!(tm.access_token("bad").await.is_err());
    assert_eq!(sim.stats().await["total_requests"], before);
    assert!(tm.access_token("good").await.is_ok(), "the other user goes on");
}

#[tokio::test]
async fn a_refresh_lost_before_it_was_saved_is_recovered_within_the_grace_window() {
    let sim = common::start(1, 0).await;
    let tm = manager(&sim, "cred-crash", &[(0, "u0")]).await;
    let c = client(&sim);
    // A process refreshed and died before saving: the new pair is lost, the store still
    // holds the rotated-out refresh token.
    let stored = tm.store().get("u0").await.unwrap().unwrap();
    let lost = c.refresh(&stored.refresh_token).await.unwrap();
    drop(lost);
    // Identical token requests must be 10 s apart (the client waits): use a second client.
    let tm2 = TokenManager::new(
        Arc::new(CredentialStore::open("memory://cred-crash", Cipher::from_key([3u8; 32], "test")).unwrap()),
        client(&sim),
    );
    let token = tm2.access_token("u0").await.expect("the old refresh token still works inside the grace window");
    assert!(c.getdevice(&token).await.is_ok());
    let saved = tm2.store().get("u0").await.unwrap().unwrap();
    assert_ne!(saved.refresh_token, stored.refresh_token, "the new pair is saved");
    assert_eq!(saved.status, UserStatus::Active);
}

#[tokio::test]
async fn two_processes_sharing_a_store_refresh_once() {
    let sim = common::start(1, 0).await;
    // Two managers with their own in-process locks, over one store: two workers.
    let a = Arc::new(manager(&sim, "cred-two-procs", &[(0, "u0")]).await);
    let b = Arc::new(TokenManager::new(
        Arc::new(CredentialStore::open("memory://cred-two-procs", Cipher::from_key([3u8; 32], "test")).unwrap()),
        client(&sim),
    ));
    let (ta, tb) = tokio::join!(a.access_token("u0"), b.access_token("u0"));
    assert_eq!(ta.unwrap(), tb.unwrap(), "the one who waited uses the new pair");
    assert_eq!(sim.stats().await["auth_refreshes"], 1, "one exchange for both");
}

#[tokio::test]
async fn a_wrong_client_secret_marks_no_user() {
    let sim = common::start(1, 0).await;
    let store = Arc::new(CredentialStore::open("memory://cred-wrong-secret", Cipher::from_key([3u8; 32], "test")).unwrap());
    let u = &sim.users().await[0];
    store.put(&record("u0", u["userid"].as_i64().unwrap(), u["refresh_token"].as_str().unwrap())).await.unwrap();
    let wrong = WithingsClient::new(ClientConfig {
        base_url: sim.base.clone(),
        client_id: "demo-client".into(),
        client_secret: Secret::new("not-the-secret"),
        requests_per_minute: 0,
        ..ClientConfig::default()
    })
    .unwrap();
    let e = TokenManager::new(store.clone(), wrong).access_token("u0").await.unwrap_err();
    assert!(!matches!(e, CredentialsError::NeedsReauth { .. }), "{e}");
    assert!(!e.to_string().contains("not-the-secret"), "{e}");
    assert_eq!(store.get("u0").await.unwrap().unwrap().status, UserStatus::Active, "the user's token is fine");
}
