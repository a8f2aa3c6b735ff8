//! Deterministic row ids: [`summary_id`] for the rows of summary tables (activity, body,
//! sleep, sleep_cycle, workouts), and the sleep row id that links a night's hypnogram,
//! sleep_stream and sleep_cycle rows to its sleep row.

use std::collections::HashMap;
use std::sync::Arc;

use super::SleepSession;
use crate::schema::Resource;

/// The deterministic id of a summary row: UUIDv5 of (provider, resource, user, provider key).
pub fn summary_id(resource: Resource, user_id: &str, key: &str) -> String {
    // The withings-lake namespace (a fixed random UUID): ids never change across versions.
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5d0c_9a7e_3b41_4f0e_9c7a_1e2b_6f8d_4a31);
    uuid::Uuid::new_v5(&NAMESPACE, format!("withings/{resource}/{user_id}/{key}").as_bytes()).to_string()
}

/// The id of the sleep row of Withings sleep session `withings_id`: the sleep row's `id`, and
/// the `sleep_id` of every row of that night.
pub(super) fn sleep_id(user_id: &str, withings_id: i64) -> String {
    summary_id(Resource::Sleep, user_id, &withings_id.to_string())
}

/// Sleep row ids by Withings session id, computed once per session (a night's samples share
/// one).
pub(super) struct SleepIds {
    user_id: String,
    by_session: HashMap<i64, Arc<str>>,
}

impl SleepIds {
    pub(super) fn new(user_id: &str) -> SleepIds {
        SleepIds { user_id: user_id.to_string(), by_session: HashMap::new() }
    }

    /// The id of the sleep row of `session`; `None` outside every session.
    pub(super) fn of(&mut self, session: Option<&SleepSession>) -> Option<Arc<str>> {
        let s = session?;
        let user = &self.user_id;
        Some(self.by_session.entry(s.withings_id).or_insert_with(|| sleep_id(user, s.withings_id).into()).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_ids_are_stable_and_distinct() {
        let a = summary_id(Resource::Sleep, "u1", "42");
        assert_eq!(a, summary_id(Resource::Sleep, "u1", "42"));
        assert_ne!(a, summary_id(Resource::Sleep, "u2", "42"));
        assert_ne!(a, summary_id(Resource::Workouts, "u1", "42"));
        assert_eq!(uuid::Uuid::parse_str(&a).unwrap().get_version_num(), 5);
        assert_eq!(sleep_id("u1", 42), a);
    }
}
