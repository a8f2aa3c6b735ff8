//! What the benchmarks share: linking a simulator's whole cohort into a credentials store.

use withings_lake::credentials::{CredentialStore, UserRecord, UserStatus};
use withings_lake::secret::Secret;
use withings_lake::withings::WithingsClient;

/// Links every user of the simulator at `url` as `cohort-NNNN`: each refresh token from
/// `/_sim/users` exchanged once, as `users import` does.
pub async fn link_cohort(url: &str, client: &WithingsClient, store: &CredentialStore) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let listing: serde_json::Value = http.get(format!("{url}/_sim/users")).send().await.unwrap().json().await.unwrap();
    for (i, u) in listing["users"].as_array().unwrap().iter().enumerate() {
        let t = client.refresh(&Secret::new(u["refresh_token"].as_str().unwrap().to_string())).await.unwrap();
        let now = chrono::Utc::now().timestamp();
        store
            .put(&UserRecord {
                user_id: format!("cohort-{i:04}"),
                withings_userid: t.userid.clone().unwrap(),
                scopes: vec![],
                access_token: t.access_token,
                access_expires_at: now + 10_800,
                refresh_token: t.refresh_token,
                status: UserStatus::Active,
                status_reason: None,
                created_at: now,
                updated_at: now,
                last_refresh_at: Some(now),
                vital_user_id: None,
            })
            .await
            .unwrap();
    }
}
