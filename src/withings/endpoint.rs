//! The Withings data endpoints this program reads, with what each needs: the listing that
//! tells it what to fetch (intraday days come from getactivity, sleep sessions from sleep
//! getsummary) and the OAuth scope that grants it. The one place these rules are written.
//!
//! An endpoint is also a *family* (ARCHITECTURE.md): the unit a user's state keeps a cursor,
//! backfilled windows and errors for, and what a refresh names.

use std::collections::BTreeSet;

use crate::schema::Resource;

/// A Withings data endpoint (a family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    Getmeas,
    Getactivity,
    Getintradayactivity,
    Getworkouts,
    SleepGetsummary,
    SleepGet,
}

impl Endpoint {
    pub const ALL: [Endpoint; 6] = [
        Endpoint::Getmeas,
        Endpoint::Getactivity,
        Endpoint::Getintradayactivity,
        Endpoint::Getworkouts,
        Endpoint::SleepGetsummary,
        Endpoint::SleepGet,
    ];

    /// The listing endpoints: one paginated call covers any window.
    pub const LISTINGS: [Endpoint; 4] =
        [Endpoint::Getmeas, Endpoint::Getactivity, Endpoint::Getworkouts, Endpoint::SleepGetsummary];

    /// The name used in the `endpoint` column, the state, logs, reports and folder names.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Getmeas => "getmeas",
            Endpoint::Getactivity => "getactivity",
            Endpoint::Getintradayactivity => "getintradayactivity",
            Endpoint::Getworkouts => "getworkouts",
            Endpoint::SleepGetsummary => "sleep_getsummary",
            Endpoint::SleepGet => "sleep_get",
        }
    }

    pub fn parse(s: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// The API path and `action` of its requests.
    pub fn request(self) -> (&'static str, &'static str) {
        match self {
            Endpoint::Getmeas => ("/measure", "getmeas"),
            Endpoint::Getactivity => ("/v2/measure", "getactivity"),
            Endpoint::Getintradayactivity => ("/v2/measure", "getintradayactivity"),
            Endpoint::Getworkouts => ("/v2/measure", "getworkouts"),
            Endpoint::SleepGetsummary => ("/v2/sleep", "getsummary"),
            Endpoint::SleepGet => ("/v2/sleep", "get"),
        }
    }

    /// The listing whose records say what this endpoint fetches (the days with wearable
    /// activity, the sleep sessions); a listing is its own.
    pub fn listing(self) -> Endpoint {
        match self {
            Endpoint::Getintradayactivity => Endpoint::Getactivity,
            Endpoint::SleepGet => Endpoint::SleepGetsummary,
            e => e,
        }
    }

    pub fn is_listing(self) -> bool {
        self.listing() == self
    }

    /// The OAuth scope that grants it.
    pub fn scope(self) -> &'static str {
        match self {
            Endpoint::Getmeas => "user.metrics",
            Endpoint::Getactivity | Endpoint::Getintradayactivity | Endpoint::Getworkouts => "user.activity",
            Endpoint::SleepGetsummary | Endpoint::SleepGet => "user.sleepevents",
        }
    }

    /// The endpoints that feed `resources` (their schemas' `sources`), with the listings
    /// those need.
    pub fn feeding(resources: &[Resource]) -> BTreeSet<Endpoint> {
        resources
            .iter()
            .flat_map(|r| r.schema().sources.iter().filter_map(|s| of_source(s)))
            .flat_map(|e| [e, e.listing()])
            .collect()
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The endpoint a schema `sources` entry names (`"getmeas meastype 1"`, `"sleep get hr"`).
fn of_source(source: &str) -> Option<Endpoint> {
    let mut words = source.split_whitespace();
    let first = words.next()?;
    let name = if first == "sleep" { format!("sleep_{}", words.next()?) } else { first.to_string() };
    Endpoint::parse(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_endpoints_bring_their_listing() {
        assert_eq!(Endpoint::feeding(&[Resource::Steps]), BTreeSet::from([Endpoint::Getintradayactivity, Endpoint::Getactivity]));
        assert_eq!(
            Endpoint::feeding(&[Resource::Hypnogram, Resource::Weight]),
            BTreeSet::from([Endpoint::SleepGet, Endpoint::SleepGetsummary, Endpoint::Getmeas])
        );
        assert_eq!(Endpoint::feeding(&Resource::ALL).len(), 6);
        assert!(Endpoint::ALL.iter().all(|e| e.listing().is_listing() && Endpoint::LISTINGS.contains(&e.listing())));
    }

    #[test]
    fn names_round_trip() {
        for e in Endpoint::ALL {
            assert_eq!(Endpoint::parse(e.as_str()), Some(e));
        }
        assert_eq!(Endpoint::parse("sleep get"), None);
    }
}
