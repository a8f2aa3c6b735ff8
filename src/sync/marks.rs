//! State marks: the changes to a user's state that a piece makes true once its units are
//! committed (a cursor, a backfilled window, zone evidence, an announcement), and how each
//! is applied. The committer applies them after the lake commit and never before (see
//! ARCHITECTURE.md, "The commit protocol").

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, Utc};

use crate::harmonize;
use crate::lake::Endpoint;
use crate::state::{DateRange, KnownHeight, UserState};

/// A state change to make once the piece's units are committed.
#[derive(Debug, Clone)]
pub(crate) enum Mark {
    /// The largest `modified` seen (the cursor only moves forward), and the versions
    /// (record key, modified) this run handled, kept for those inside the overlap.
    Cursor(Endpoint, i64, Vec<(String, i64)>),
    /// Set the cursor only if the family has none (a backfill's first view of the user).
    CursorIfNone(Endpoint, i64),
    /// Versions (record key, modified) whose data is all in, the detail days and sessions
    /// they imply included: kept for those inside the cursor's overlap, so the next listing,
    /// which sees them again, does not count them as changed.
    Handled(Endpoint, Vec<(String, i64)>),
    Backfilled(Endpoint, DateRange),
    /// Re-listed at this run's "now" (the clock `relist_every` is measured on).
    Relisted(Endpoint, chrono::DateTime<chrono::Utc>),
    Success(Endpoint),
    Error(Endpoint, String),
    TimeZone(String),
    /// Zone evidence of local days (the user's timeline), and the days whose zone or span it
    /// changed (their zone-less rows are re-stamped, then [`Mark::Restamped`]).
    Zones {
        days: Vec<harmonize::DayZone>,
        changed: Vec<NaiveDate>,
    },
    /// The zone-less rows of these days carry their zone again: getmeas rows, intraday rows.
    Restamped {
        getmeas: BTreeSet<NaiveDate>,
        intraday: BTreeSet<NaiveDate>,
    },
    Height(KnownHeight),
    /// The user's whole history was searched for a height (done once per user).
    HeightLookedUp,
    /// The backfill of these resources is complete over `[start, end)` (epoch seconds): a
    /// `historical.data.<resource>.created` event each, recorded in the state as announced.
    Historical {
        resources: Vec<crate::schema::Resource>,
        start: i64,
        end: i64,
    },
    /// The resources already complete when the state first met events (announced before, or
    /// complete before any consumer listened).
    AnnouncedBaseline(BTreeSet<String>),
    /// The user was seen connected (a later loss of authorization is announced).
    SeenConnected,
    /// A user who must link again, met by events for the first time: this loss (the
    /// credentials record version) counts as announced.
    ReauthBaseline(i64),
    /// The user's authorization is gone (they must link again): a
    /// `provider.connection.error` event; the state records which credentials record
    /// version was announced.
    ConnectionError {
        error_type: &'static str,
        message: String,
        record_version: i64,
    },
}

/// Applies one mark; `now` stamps successes, `overlap` is `[sync] cursor_overlap` (the
/// versions kept beside a cursor are those within it).
pub(crate) fn apply(state: &mut UserState, m: Mark, now: DateTime<Utc>, overlap: i64) {
    match m {
        Mark::Cursor(e, v, handled) => {
            let f = state.families.entry(e.as_str().to_string()).or_default();
            let cursor = f.cursor.map_or(v, |c| c.max(v));
            f.cursor = Some(cursor);
            f.recent.extend(handled);
            f.recent.retain(|_, m| *m > cursor - overlap);
        }
        Mark::CursorIfNone(e, v) => {
            let f = state.families.entry(e.as_str().to_string()).or_default();
            if f.cursor.is_none() {
                f.cursor = Some(v);
            }
        }
        Mark::Handled(e, handled) => {
            let f = state.families.entry(e.as_str().to_string()).or_default();
            f.recent.extend(handled);
            if let Some(cursor) = f.cursor {
                f.recent.retain(|_, m| *m > cursor - overlap);
            }
        }
        Mark::Backfilled(e, r) => state.families.entry(e.as_str().to_string()).or_default().add_backfilled(r),
        Mark::Relisted(e, at) => state.families.entry(e.as_str().to_string()).or_default().relisted_at = Some(at),
        Mark::Success(e) => {
            let f = state.families.entry(e.as_str().to_string()).or_default();
            f.last_success = Some(now);
            f.last_error = None;
        }
        Mark::Error(e, msg) => state.families.entry(e.as_str().to_string()).or_default().last_error = Some(msg),
        Mark::TimeZone(tz) => state.time_zone = Some(tz),
        Mark::Zones { days, changed } => {
            for (day, zone, evidence) in days {
                state.zones.observe(day, &zone, evidence);
            }
            state.restamp_getmeas.0.extend(changed.iter().copied());
            state.restamp_intraday.0.extend(changed);
        }
        Mark::Restamped { getmeas, intraday } => {
            state.restamp_getmeas.0.retain(|d| !getmeas.contains(d));
            state.restamp_intraday.0.retain(|d| !intraday.contains(d));
        }
        Mark::Height(h) => {
            if state.height.is_none_or(|s| s.at <= h.at) {
                state.height = Some(h);
            }
        }
        Mark::HeightLookedUp => state.height_looked_up = true,
        Mark::Historical { resources, .. } => {
            state.historical_announced.get_or_insert_default().extend(resources.iter().map(|r| r.as_str().to_string()))
        }
        Mark::AnnouncedBaseline(done) => {
            if state.historical_announced.is_none() {
                state.historical_announced = Some(done);
            }
        }
        Mark::ReauthBaseline(v) => {
            if state.reauth_announced.is_none() {
                state.reauth_announced = Some(v);
            }
        }
        Mark::SeenConnected => {
            if state.reauth_announced.is_none() {
                state.reauth_announced = Some(0);
            }
        }
        Mark::ConnectionError { record_version, .. } => state.reauth_announced = Some(record_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().expect("a date")
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_718_452_800, 0).expect("an instant")
    }

    #[test]
    fn a_cursor_only_moves_forward_and_keeps_the_versions_inside_the_overlap() {
        let mut s = UserState::default();
        apply(&mut s, Mark::Cursor(Endpoint::Getmeas, 1_000, vec![("a".into(), 990), ("b".into(), 500)]), now(), 300);
        let f = &s.families["getmeas"];
        assert_eq!(f.cursor, Some(1_000));
        assert_eq!(f.recent.keys().collect::<Vec<_>>(), ["a"], "b is older than the overlap");
        apply(&mut s, Mark::Cursor(Endpoint::Getmeas, 800, vec![("c".into(), 800)]), now(), 300);
        let f = &s.families["getmeas"];
        assert_eq!(f.cursor, Some(1_000), "an older cursor does not move it back");
        assert_eq!(f.recent.keys().collect::<Vec<_>>(), ["a", "c"]);
        apply(&mut s, Mark::CursorIfNone(Endpoint::Getmeas, 5), now(), 300);
        apply(&mut s, Mark::CursorIfNone(Endpoint::Getworkouts, 5), now(), 300);
        apply(&mut s, Mark::Handled(Endpoint::Getworkouts, vec![("w".into(), 4), ("old".into(), -400)]), now(), 300);
        assert_eq!(s.families["getmeas"].cursor, Some(1_000));
        assert_eq!(s.families["getworkouts"].cursor, Some(5));
        assert_eq!(
            s.families["getworkouts"].recent.keys().collect::<Vec<_>>(),
            ["w"],
            "a first cursor keeps the versions in its overlap"
        );
    }

    #[test]
    fn success_clears_the_error_and_an_error_keeps_the_last_success() {
        let mut s = UserState::default();
        apply(&mut s, Mark::Error(Endpoint::Getactivity, "boom".into()), now(), 300);
        apply(&mut s, Mark::Success(Endpoint::Getactivity), now(), 300);
        assert_eq!((s.families["getactivity"].last_success, s.families["getactivity"].last_error.clone()), (Some(now()), None));
        apply(&mut s, Mark::Error(Endpoint::Getactivity, "again".into()), now(), 300);
        assert_eq!(s.families["getactivity"].last_success, Some(now()));
        assert_eq!(s.families["getactivity"].last_error.as_deref(), Some("again"));
    }

    #[test]
    fn changed_zone_days_are_pending_until_each_kind_is_restamped() {
        let mut s = UserState::default();
        let changed = vec![day("2026-03-01"), day("2026-03-02")];
        apply(&mut s, Mark::Zones { days: Vec::new(), changed }, now(), 300);
        assert_eq!(s.restamp_getmeas.0.len(), 2);
        apply(
            &mut s,
            Mark::Restamped { getmeas: [day("2026-03-01"), day("2026-03-02")].into(), intraday: [day("2026-03-02")].into() },
            now(),
            300,
        );
        assert!(s.restamp_getmeas.0.is_empty());
        assert_eq!(s.restamp_intraday.0.iter().copied().collect::<Vec<_>>(), [day("2026-03-01")]);
    }

    #[test]
    fn baselines_are_set_once_and_announcements_recorded() {
        let mut s = UserState::default();
        apply(&mut s, Mark::AnnouncedBaseline(["weight".to_string()].into()), now(), 300);
        apply(&mut s, Mark::AnnouncedBaseline(BTreeSet::new()), now(), 300);
        assert_eq!(s.historical_announced, Some(["weight".to_string()].into()), "a baseline never replaces one");
        apply(&mut s, Mark::Historical { resources: vec![crate::schema::Resource::Steps], start: 0, end: 1 }, now(), 300);
        assert_eq!(s.historical_announced, Some(["steps".to_string(), "weight".to_string()].into()));
        apply(&mut s, Mark::SeenConnected, now(), 300);
        apply(&mut s, Mark::ReauthBaseline(9), now(), 300);
        assert_eq!(s.reauth_announced, Some(0), "seen connected first: the later baseline does not count");
        apply(
            &mut s,
            Mark::ConnectionError { error_type: "token_refresh_failed", message: "x".into(), record_version: 9 },
            now(),
            300,
        );
        assert_eq!(s.reauth_announced, Some(9));
    }

    #[test]
    fn the_latest_height_wins() {
        let mut s = UserState::default();
        let h = |at, value| KnownHeight { at, value, unit: -2 };
        apply(&mut s, Mark::Height(h(10, 180)), now(), 300);
        apply(&mut s, Mark::Height(h(5, 170)), now(), 300);
        assert_eq!(s.height, Some(h(10, 180)));
        apply(&mut s, Mark::Height(h(20, 181)), now(), 300);
        assert_eq!(s.height, Some(h(20, 181)));
    }
}
