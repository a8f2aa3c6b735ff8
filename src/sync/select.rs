//! User selection: from the credentials records a run read and what it was asked for, which
//! users each shard syncs, which must link again (and may be owed an announcement), and
//! which fail before any request (not linked, unreadable record). Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::Users;
use super::report::UserFailure;
use crate::credentials::{Listing, UserRecord, UserStatus};
use crate::lake::shard_of;

/// A linked user to sync: the application's id and the Withings userid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Linked {
    pub user_id: String,
    pub withings_user_id: String,
}

/// A user who must link again, whose loss of authorization may still need announcing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reauth {
    pub user_id: String,
    pub message: String,
    /// The credentials record's `updated_at`.
    pub version: i64,
}

/// What a run does with each user it was asked for.
#[derive(Debug, Default)]
pub(crate) struct Selection {
    /// Users to sync, per shard (a shard with only announcements owed has an empty list).
    pub per_shard: BTreeMap<u32, Vec<Linked>>,
    /// Losses of authorization to check for an owed announcement, per shard.
    pub reauth: BTreeMap<u32, Vec<Reauth>>,
    /// Users the run was for (after the list and the shard).
    pub selected: usize,
    /// Users failed before any request, by name.
    pub failures: Vec<UserFailure>,
    /// Linked users skipped because they must link again.
    pub needs_reauth: Vec<String>,
}

/// Selects the users of a run. `listing` holds the records read (all of them, or those of
/// the users named); `only_shard` is `i` of `--shard i/N`; `announce` is whether losses of
/// authorization are announced (events on, not a dry run).
pub(crate) fn select(users: &Users, listing: &Listing, shards: u32, only_shard: Option<u32>, announce: bool) -> Selection {
    let unreadable: HashMap<&str, &str> = listing.unreadable.iter().map(|(u, why)| (u.as_str(), why.as_str())).collect();
    let by_id: HashMap<&str, &UserRecord> = listing.records.iter().map(|r| (r.user_id.as_str(), r)).collect();
    let wanted: Vec<&str> = match users {
        Users::All => {
            listing.records.iter().map(|r| r.user_id.as_str()).chain(listing.unreadable.iter().map(|(u, _)| u.as_str())).collect()
        }
        Users::Only(ids) => {
            let mut seen = BTreeSet::new();
            ids.iter().map(String::as_str).filter(|u| seen.insert(*u)).collect()
        }
    };
    let named = matches!(users, Users::Only(_));
    let mut out = Selection::default();
    for user_id in wanted {
        let shard = shard_of(user_id, shards);
        if only_shard.is_some_and(|i| i != shard) {
            continue;
        }
        out.selected += 1;
        let fail = |class: &str, error: String| UserFailure { user_id: user_id.to_string(), class: class.into(), error };
        match by_id.get(user_id) {
            // One corrupt record fails its user, by name, never silently.
            None if unreadable.contains_key(user_id) => out.failures.push(fail("data", unreadable[user_id].to_string())),
            None => out.failures.push(fail("auth", format!("user '{user_id}' is not linked (no credentials record)"))),
            Some(r) if r.status != UserStatus::Active => {
                out.needs_reauth.push(user_id.to_string());
                // Announced once (`provider.connection.error`), from state, so a crash never
                // loses it.
                if announce {
                    let message = r.status_reason.clone().unwrap_or_else(|| r.status.as_str().to_string());
                    out.reauth.entry(shard).or_default().push(Reauth {
                        user_id: user_id.to_string(),
                        message,
                        version: r.updated_at,
                    });
                    out.per_shard.entry(shard).or_default();
                }
                // A user named on the command line who cannot be synced is a failure; in an
                // every-user run they are listed, not failed again each run.
                if named {
                    let why = r.status_reason.as_deref().unwrap_or(r.status.as_str());
                    out.failures.push(fail("auth", format!("user '{user_id}' must link their Withings account again: {why}")));
                }
            }
            Some(r) => out
                .per_shard
                .entry(shard)
                .or_default()
                .push(Linked { user_id: user_id.to_string(), withings_user_id: r.withings_userid.clone() }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(user_id: &str, status: UserStatus) -> UserRecord {
        UserRecord {
            user_id: user_id.into(),
            withings_userid: format!("w-{user_id}"),
            scopes: Vec::new(),
            access_token: crate::secret::Secret::new("a"),
            access_expires_at: 0,
            refresh_token: crate::secret::Secret::new("r"),
            status,
            status_reason: None,
            created_at: 0,
            updated_at: 7,
            last_refresh_at: None,
            vital_user_id: None,
        }
    }

    fn listing() -> Listing {
        Listing {
            records: vec![
                record("ann", UserStatus::Active),
                record("bob", UserStatus::Active),
                record("cy", UserStatus::NeedsReauth),
            ],
            unreadable: vec![("dee".into(), "cannot decrypt".into())],
        }
    }

    fn users(s: &Selection) -> Vec<String> {
        s.per_shard.values().flatten().map(|l| l.user_id.clone()).collect()
    }

    #[test]
    fn every_user_run_syncs_the_active_lists_the_relinks_and_fails_the_unreadable() {
        let s = select(&Users::All, &listing(), 1, None, false);
        assert_eq!(users(&s), ["ann", "bob"]);
        assert_eq!(s.selected, 4);
        assert_eq!(s.needs_reauth, ["cy"]);
        assert_eq!(s.failures.iter().map(|f| (f.user_id.as_str(), f.class.as_str())).collect::<Vec<_>>(), [("dee", "data")]);
        assert!(s.reauth.is_empty(), "no announcement without events");
    }

    #[test]
    fn named_users_fail_by_name_when_unknown_or_needing_a_new_link() {
        let only = Users::Only(vec!["bob".into(), "zed".into(), "cy".into(), "bob".into()]);
        let s = select(&only, &listing(), 1, None, true);
        assert_eq!(users(&s), ["bob"]);
        assert_eq!(s.selected, 3, "a name given twice is one user");
        let failed: Vec<_> = s.failures.iter().map(|f| (f.user_id.as_str(), f.class.as_str())).collect();
        assert_eq!(failed, [("zed", "auth"), ("cy", "auth")]);
        assert_eq!(s.reauth[&0], [Reauth { user_id: "cy".into(), message: "needs_reauth".into(), version: 7 }]);
    }

    #[test]
    fn a_shard_keeps_only_its_users_and_the_shards_partition_the_cohort() {
        let all = select(&Users::All, &listing(), 4, None, true);
        let mut union = Vec::new();
        let mut selected = 0;
        for i in 0..4 {
            let s = select(&Users::All, &listing(), 4, Some(i), true);
            assert!(s.per_shard.keys().all(|k| *k == i));
            union.extend(users(&s));
            selected += s.selected;
        }
        union.sort();
        assert_eq!(union, users(&all).into_iter().collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>());
        assert_eq!(selected, all.selected);
    }
}
