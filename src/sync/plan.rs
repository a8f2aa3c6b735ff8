//! The planner's rules (ARCHITECTURE.md, "Data flow"): which endpoints a set of resources
//! needs, how a local day becomes an epoch window, and what a run will cost before it runs.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{NaiveDate, TimeZone};
use serde::Serialize;

use crate::lake::Endpoint;
use crate::schema::Resource;
use crate::state::{DateRange, UserState};
use crate::withings::day_chunks;

/// The endpoints (families) to fetch for `resources`: those that feed them, plus the listings
/// their planning needs ([`Endpoint::feeding`]).
pub fn families_for(resources: &[Resource]) -> BTreeSet<Endpoint> {
    Endpoint::feeding(resources)
}

/// The listing endpoints (one paginated call covers any window).
pub const LISTINGS: [Endpoint; 4] = Endpoint::LISTINGS;

/// `[local midnight of day, local midnight of the next day)` in `zone` as epoch seconds (UTC
/// when the zone is unknown). A midnight that does not exist (a DST jump at 00:00) starts
/// at the first instant of the day.
pub fn local_day(zone: Option<&str>, day: NaiveDate) -> (i64, i64) {
    let tz: Option<chrono_tz::Tz> = zone.and_then(|z| z.parse().ok());
    let start_of = |d: NaiveDate| -> i64 {
        let midnight = d.and_hms_opt(0, 0, 0).expect("midnight exists");
        match tz {
            None => midnight.and_utc().timestamp(),
            Some(tz) => (0..4)
                .find_map(|h| tz.from_local_datetime(&(midnight + chrono::Duration::hours(h))).earliest())
                .map(|t| t.timestamp())
                .unwrap_or_else(|| midnight.and_utc().timestamp()),
        }
    };
    let next = day.succ_opt().unwrap_or(day);
    (start_of(day), start_of(next))
}

/// `[from 00:00 UTC, to + 1 day 00:00 UTC)`.
pub fn utc_window(r: DateRange) -> (i64, i64) {
    let a = r.from.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp();
    let b = r.to.succ_opt().unwrap_or(r.to).and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp();
    (a, b)
}

/// Requests of one intraday or sleep get window (24-hour chunks).
pub fn chunks(start: i64, end: i64) -> u64 {
    day_chunks(start, end).len() as u64
}

/// What a run is expected to cost, before it runs (`--dry-run`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Estimate {
    pub users: usize,
    /// Endpoint -> requests. Listings are exact (one page each assumed); intraday and sleep
    /// get are upper bounds (one per day of the window; only days with wearable data and
    /// nights with a session are fetched).
    pub requests: BTreeMap<String, u64>,
    pub total: u64,
    /// At the run's requests per minute.
    pub eta_seconds: u64,
    pub requests_per_minute: u32,
}

impl Estimate {
    pub fn add(&mut self, e: Endpoint, n: u64) {
        if n > 0 {
            *self.requests.entry(e.as_str().to_string()).or_default() += n;
            self.total += n;
        }
    }

    pub fn finish(&mut self, rpm: u32) {
        self.requests_per_minute = rpm;
        self.eta_seconds = if rpm == 0 { 0 } else { (self.total * 60).div_ceil(u64::from(rpm)) };
    }
}

/// The request decisions of one user's run, made once and used by the run itself and by
/// `--dry-run` (so the estimate cannot drift from what a run does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Decision {
    /// The families this run fetches (and whose marks it records).
    pub fetch: BTreeSet<Endpoint>,
    /// The listings it calls: those fetched, and the listings the fetched detail families
    /// need (intraday days come from getactivity, sleep sessions from sleep getsummary).
    pub list: BTreeSet<Endpoint>,
}

impl Decision {
    fn of(fetch: BTreeSet<Endpoint>) -> Decision {
        let list = fetch.iter().map(|e| e.listing()).collect();
        Decision { fetch, list }
    }

    pub fn fetches(&self, e: Endpoint) -> bool {
        self.fetch.contains(&e)
    }

    pub fn lists(&self, e: Endpoint) -> bool {
        self.list.contains(&e)
    }

    /// A backfill of `r`: every family of the run whose window `r` is not yet committed.
    pub fn backfill(families: &BTreeSet<Endpoint>, state: &UserState, r: DateRange) -> Decision {
        Decision::of(families.iter().copied().filter(|e| !state.families.get(e.as_str()).is_some_and(|f| f.covers(r))).collect())
    }

    /// An incremental run, or a refresh of `only`: refreshing a listing refreshes the detail
    /// family that depends on it (its cursor decides which days and sessions are changed, so
    /// they would be missed for good otherwise).
    pub fn incremental(families: &BTreeSet<Endpoint>, only: Option<&BTreeSet<Endpoint>>) -> Decision {
        Decision::of(
            families.iter().copied().filter(|e| only.is_none_or(|o| o.contains(e) || o.contains(&e.listing()))).collect(),
        )
    }
}

/// Days of `r` not yet in `state`'s backfilled ranges of `family`.
pub fn days_missing(state: &UserState, family: Endpoint, r: DateRange) -> u64 {
    let f = state.families.get(family.as_str());
    r.from.iter_days().take_while(|d| *d <= r.to).filter(|d| f.is_none_or(|f| !f.covers(DateRange { from: *d, to: *d }))).count()
        as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_pull_in_their_endpoints_and_planning_listings() {
        let f = families_for(&[Resource::Steps]);
        assert_eq!(f, BTreeSet::from([Endpoint::Getintradayactivity, Endpoint::Getactivity]));
        let f = families_for(&[Resource::Hypnogram, Resource::Weight]);
        assert_eq!(f, BTreeSet::from([Endpoint::SleepGet, Endpoint::SleepGetsummary, Endpoint::Getmeas]));
        assert_eq!(families_for(&Resource::ALL).len(), 6);
    }

    #[test]
    fn a_refresh_of_a_listing_fetches_its_detail_family_and_a_detail_needs_its_listing() {
        let all = families_for(&Resource::ALL);
        let d = Decision::incremental(&all, Some(&BTreeSet::from([Endpoint::Getactivity])));
        assert_eq!(d.fetch, BTreeSet::from([Endpoint::Getactivity, Endpoint::Getintradayactivity]));
        assert_eq!(d.list, BTreeSet::from([Endpoint::Getactivity]));
        let d = Decision::incremental(&all, Some(&BTreeSet::from([Endpoint::SleepGet])));
        assert_eq!(d.fetch, BTreeSet::from([Endpoint::SleepGet]));
        assert_eq!(d.list, BTreeSet::from([Endpoint::SleepGetsummary]), "sessions come from the listing");
        assert_eq!(Decision::incremental(&all, None).fetch, all);
    }

    #[test]
    fn a_backfill_skips_the_families_whose_window_is_committed() {
        let all = families_for(&Resource::ALL);
        let r = DateRange { from: "2024-06-01".parse().unwrap(), to: "2024-06-10".parse().unwrap() };
        let mut state = UserState::default();
        state.families.entry("getintradayactivity".into()).or_default().add_backfilled(r);
        state.families.entry("getactivity".into()).or_default().add_backfilled(r);
        let d = Decision::backfill(&all, &state, r);
        assert!(!d.fetches(Endpoint::Getintradayactivity) && !d.lists(Endpoint::Getactivity));
        assert!(d.fetches(Endpoint::SleepGet) && d.lists(Endpoint::SleepGetsummary));
    }

    #[test]
    fn local_days_follow_the_zone_and_dst() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert_eq!(local_day(None, d("2024-06-15")), (1_718_409_600, 1_718_496_000));
        // Paris in summer: UTC+2.
        assert_eq!(local_day(Some("Europe/Paris"), d("2024-06-15")), (1_718_409_600 - 7200, 1_718_496_000 - 7200));
        // The day clocks go forward is 23 hours long; the day they go back, 25.
        let (a, b) = local_day(Some("Europe/Paris"), d("2024-03-31"));
        assert_eq!(b - a, 23 * 3600);
        let (a, b) = local_day(Some("America/New_York"), d("2024-11-03"));
        assert_eq!((b - a, chunks(a, b)), (25 * 3600, 2));
        // An unknown zone name falls back to UTC.
        assert_eq!(local_day(Some("Mars/Olympus"), d("2024-06-15")), (1_718_409_600, 1_718_496_000));
    }
}
