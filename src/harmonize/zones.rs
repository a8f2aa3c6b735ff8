//! A user's zone timeline: which IANA zone each local day was lived in, so that samples
//! Withings sends without a zone (intraday, getmeas groups, sleep get) carry the zone of their
//! own day, not the zone the user is in when the run fetches them.
//!
//! Evidence comes from the day-level records (getactivity `date` + `timezone`, sleep
//! getsummary's wake-up `date`, getworkouts `date`) and from the user's current zone (getmeas
//! `timezone`, dated the day it was seen). Each day keeps its best evidence: a Withings
//! wearable's activity day before any other activity source, before a night, before a
//! workout, before the current zone. A day without evidence takes the zone of the latest day
//! before it that has some (people stay where they were until a record says otherwise);
//! days before the first evidence take the first.
//!
//! Local day `d` runs from midnight of `d` in `d`'s zone to midnight of `d + 1` in `d + 1`'s
//! zone. The days tile time: the day a person flies east is short (New York to London: 19
//! hours), the day they fly west is long (29 hours), and the zone at an instant is the zone
//! of the day that contains it.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Duration, NaiveDate, TimeZone};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::Zone;
use crate::withings::types::{Activity, Item, SleepSummary, Workout};

/// How a day's zone is known, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// A getactivity day of a Withings wearable (`is_tracker`).
    Wearable,
    /// A getactivity day of another source (the phone, an external app).
    Activity,
    /// A sleep getsummary session, on its wake-up date.
    Sleep,
    /// A getworkouts record, on its date.
    Workout,
    /// The user's current zone (getmeas `timezone`), on the day it was seen.
    Current,
}

/// The zone of one day and how it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Day {
    zone: Arc<str>,
    evidence: Evidence,
}

/// A user's days with zone evidence. Cheap to clone behind an `Arc`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneTimeline {
    days: BTreeMap<NaiveDate, Day>,
}

/// The state file form: runs of consecutive days with the same zone and evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Run {
    from: NaiveDate,
    to: NaiveDate,
    zone: String,
    evidence: Evidence,
}

impl Serialize for ZoneTimeline {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut runs: Vec<Run> = Vec::new();
        for (d, day) in &self.days {
            match runs.last_mut() {
                Some(r) if r.to.succ_opt() == Some(*d) && *r.zone == *day.zone && r.evidence == day.evidence => r.to = *d,
                _ => runs.push(Run { from: *d, to: *d, zone: day.zone.to_string(), evidence: day.evidence }),
            }
        }
        runs.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ZoneTimeline {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let runs = Vec::<Run>::deserialize(d)?;
        let mut t = ZoneTimeline::default();
        for r in runs {
            if r.to < r.from || (r.to - r.from).num_days() > 366 * 200 {
                return Err(serde::de::Error::custom(format!("zone run {} to {} is not a date range", r.from, r.to)));
            }
            let zone: Arc<str> = Arc::from(r.zone.as_str());
            for d in r.from.iter_days().take_while(|d| *d <= r.to) {
                t.days.insert(d, Day { zone: zone.clone(), evidence: r.evidence });
            }
        }
        Ok(t)
    }
}

/// A day's zone and how it is known, as the day-level records give it.
pub type DayZone = (NaiveDate, String, Evidence);

/// Zone evidence of getactivity days (a wearable's days apart from other sources').
pub fn activity_evidence(items: &[Item<Activity>]) -> Vec<DayZone> {
    items
        .iter()
        .filter_map(|i| i.value.as_ref().ok())
        .filter_map(|a| {
            let ev = if a.is_tracker == Some(true) { Evidence::Wearable } else { Evidence::Activity };
            Some((a.date.trim().parse().ok()?, a.timezone.clone()?, ev))
        })
        .collect()
}

/// Zone evidence of workouts: each record's local date and zone.
pub fn workout_evidence(items: &[Item<Workout>]) -> Vec<DayZone> {
    items
        .iter()
        .filter_map(|i| i.value.as_ref().ok())
        .filter_map(|w| Some((w.date.as_deref()?.trim().parse().ok()?, w.timezone.clone()?, Evidence::Workout)))
        .collect()
}

/// Zone evidence of sleep sessions: each session's wake-up date (its `date`, else the local
/// date of its end) and zone.
pub fn sleep_evidence(items: &[Item<SleepSummary>]) -> Vec<DayZone> {
    items
        .iter()
        .filter_map(|i| i.value.as_ref().ok())
        .filter_map(|s| {
            let zone = s.timezone.clone()?;
            let day = match s.date.as_deref().and_then(|d| d.trim().parse().ok()) {
                Some(d) => d,
                None => Zone::new(Some(&zone)).local_date(s.enddate?)?,
            };
            Some((day, zone, Evidence::Sleep))
        })
        .collect()
}

/// A set of local days, stored as `[from, to]` runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaySet(pub std::collections::BTreeSet<NaiveDate>);

impl DaySet {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Runs of consecutive days, `(first, last)`.
    pub fn runs(&self) -> Vec<(NaiveDate, NaiveDate)> {
        let mut runs: Vec<(NaiveDate, NaiveDate)> = Vec::new();
        for d in &self.0 {
            match runs.last_mut() {
                Some(r) if r.1.succ_opt() == Some(*d) => r.1 = *d,
                _ => runs.push((*d, *d)),
            }
        }
        runs
    }
}

impl Serialize for DaySet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.runs().serialize(s)
    }
}

impl<'de> Deserialize<'de> for DaySet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut set = std::collections::BTreeSet::new();
        for (a, b) in Vec::<(NaiveDate, NaiveDate)>::deserialize(d)? {
            if b < a || (b - a).num_days() > 366 * 200 {
                return Err(serde::de::Error::custom(format!("day run {a} to {b} is not a date range")));
            }
            set.extend(a.iter_days().take_while(|x| *x <= b));
        }
        Ok(DaySet(set))
    }
}

/// Midnight starting `day` in `tz`, epoch seconds (the first instant of the day where a DST
/// change skips midnight); UTC midnight when the zone is unknown.
fn midnight(tz: Option<Tz>, day: NaiveDate) -> i64 {
    let m = day.and_hms_opt(0, 0, 0).expect("midnight exists");
    match tz {
        None => m.and_utc().timestamp(),
        Some(tz) => (0..4)
            .find_map(|h| tz.from_local_datetime(&(m + Duration::hours(h))).earliest())
            .map(|t| t.timestamp())
            .unwrap_or_else(|| m.and_utc().timestamp()),
    }
}

impl ZoneTimeline {
    pub fn is_empty(&self) -> bool {
        self.days.is_empty()
    }

    /// Records that `zone` was in force on `day`. Kept when no better evidence holds the day
    /// already (equal evidence: the newer record wins). Returns whether the day's zone changed.
    pub fn observe(&mut self, day: NaiveDate, zone: &str, evidence: Evidence) -> bool {
        let zone = zone.trim();
        if zone.is_empty() {
            return false;
        }
        match self.days.get_mut(&day) {
            Some(d) if d.evidence < evidence => false,
            Some(d) => {
                let changed = *d.zone != *zone;
                if changed {
                    d.zone = Arc::from(zone);
                }
                d.evidence = evidence;
                changed
            }
            None => {
                self.days.insert(day, Day { zone: Arc::from(zone), evidence });
                true
            }
        }
    }

    /// Adds every day of `other` (as [`observe`](Self::observe) would, in date order).
    pub fn absorb(&mut self, other: &ZoneTimeline) {
        for (d, day) in &other.days {
            self.observe(*d, &day.zone, day.evidence);
        }
    }

    /// The days (with zone and evidence) as a list, for marks and tests.
    pub fn entries(&self) -> Vec<(NaiveDate, String, Evidence)> {
        self.days.iter().map(|(d, day)| (*d, day.zone.to_string(), day.evidence)).collect()
    }

    /// Whether a day-level record (any evidence but the current zone) names a day in
    /// `[from, to]`.
    pub fn has_record_between(&self, from: NaiveDate, to: NaiveDate) -> bool {
        from <= to && self.days.range(from..=to).any(|(_, d)| d.evidence != Evidence::Current)
    }

    /// The days a wearable recorded (intraday exists for those days only).
    pub fn wearable_days(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        self.days.iter().filter(|(_, d)| d.evidence == Evidence::Wearable).map(|(d, _)| *d)
    }

    /// The zone name of `day`: its own evidence, else the latest day before it with some,
    /// else the first day after it. `None` for an empty timeline.
    pub fn zone_name_of_day(&self, day: NaiveDate) -> Option<&Arc<str>> {
        self.days.range(..=day).next_back().or_else(|| self.days.range(day..).next()).map(|(_, d)| &d.zone)
    }

    /// The zone of `day` (see [`zone_name_of_day`](Self::zone_name_of_day)).
    pub fn zone_of_day(&self, day: NaiveDate) -> Option<Zone> {
        self.zone_name_of_day(day).map(|z| Zone::new(Some(z)))
    }

    fn tz_of_day(&self, day: NaiveDate) -> Option<Tz> {
        self.zone_name_of_day(day).and_then(|z| z.parse().ok())
    }

    /// `[start, end)` of local day `day`, epoch seconds: midnight in its zone to midnight of the
    /// next day in that day's zone (never shorter than nothing). UTC days for an empty
    /// timeline or a zone chrono-tz does not know.
    pub fn day_span(&self, day: NaiveDate) -> (i64, i64) {
        let start = midnight(self.tz_of_day(day), day);
        let next = day.succ_opt().unwrap_or(day);
        let end = midnight(self.tz_of_day(next), next);
        (start, end.max(start))
    }

    /// The local day containing `t` (the latest day that has started by `t`); `None` when
    /// the timeline is empty.
    pub fn local_date(&self, t: i64) -> Option<NaiveDate> {
        if self.days.is_empty() {
            return None;
        }
        let utc = chrono::DateTime::from_timestamp(t, 0)?.date_naive();
        // Zones span UTC-12 to UTC+14: the day containing t starts within a day of its UTC date.
        [utc.succ_opt(), Some(utc), utc.pred_opt()].into_iter().flatten().find(|d| self.day_span(*d).0 <= t).or(Some(utc))
    }

    /// The stretch of time around `t` lived in one zone, `[start, end)` with the zone's name:
    /// the local day containing `t`, or the part of it. A long day (flying west) is lived in
    /// two zones: its hours after midnight of the old zone are on the new zone's clock, where
    /// they still read as the same date (London to New York: 00:00 to 05:00 UTC is 19:00 to
    /// 24:00 in New York). `None` when the timeline is empty.
    pub fn stretch_at(&self, t: i64) -> Option<(i64, i64, Arc<str>)> {
        let day = self.local_date(t)?;
        let (a, b) = self.day_span(day);
        let zone = self.zone_name_of_day(day)?.clone();
        let next = day.succ_opt().unwrap_or(day);
        let Some(later) = self.zone_name_of_day(next).filter(|z| ***z != *zone).cloned() else {
            return Some((a, b, zone));
        };
        let switch = midnight(zone.parse().ok(), next);
        Some(if switch >= b || t < switch { (a, switch.min(b), zone) } else { (switch, b, later) })
    }

    /// The zone in force at `t` (see [`stretch_at`](Self::stretch_at)).
    pub fn zone_at(&self, t: i64) -> Option<Zone> {
        self.stretch_at(t).map(|(_, _, z)| Zone::new(Some(&z)))
    }

    /// The local days whose span or zone differs between `self` (before) and `after`, from the
    /// day before the earliest evidence of either through the day after the latest evidence or
    /// `through` (usually today). Days before every evidence repeat the first zone; they are
    /// not listed when it changes (a lake holds rows there only from late-entered history,
    /// which `reharmonize` re-stamps).
    pub fn changed_days(&self, after: &ZoneTimeline, through: NaiveDate) -> Vec<NaiveDate> {
        let bounds = |t: &ZoneTimeline| Some((*t.days.keys().next()?, *t.days.keys().next_back()?));
        let (lo, hi) = match (bounds(self), bounds(after)) {
            (None, None) => return Vec::new(),
            (Some(a), None) | (None, Some(a)) => a,
            (Some(a), Some(b)) => (a.0.min(b.0), a.1.max(b.1)),
        };
        let hi = hi.max(through);
        let (lo, hi) = (lo.pred_opt().unwrap_or(lo), hi.succ_opt().unwrap_or(hi));
        lo.iter_days()
            .take_while(|d| *d <= hi)
            .filter(|d| self.zone_name_of_day(*d) != after.zone_name_of_day(*d) || self.day_span(*d) != after.day_span(*d))
            .collect()
    }
}

/// Stamps instants with their zone, remembering the last day found (samples come in order).
pub(crate) struct Stamper<'a> {
    timeline: &'a ZoneTimeline,
    fallback: Zone,
    last: Option<(i64, i64, Zone)>,
}

impl<'a> Stamper<'a> {
    /// `fallback`: the zone when the timeline is empty (the user's current zone).
    pub fn new(timeline: &'a ZoneTimeline, fallback: Zone) -> Stamper<'a> {
        Stamper { timeline, fallback, last: None }
    }

    pub fn at(&mut self, t: i64) -> &Zone {
        if self.timeline.is_empty() {
            return &self.fallback;
        }
        let hit = matches!(&self.last, Some((a, b, _)) if *a <= t && t < *b);
        if !hit {
            let (a, b, zone) = self.timeline.stretch_at(t).expect("a timeline with days has a stretch at every instant");
            // A stretch always holds t, except across a date-line jump where a day is shorter
            // than nothing: then only t itself is remembered.
            let (a, b) = if a <= t && t < b { (a, b) } else { (t, t + 1) };
            self.last = Some((a, b, Zone::new(Some(&zone))));
        }
        &self.last.as_ref().expect("set above").2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn epoch(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    fn mover(east: bool) -> ZoneTimeline {
        let (a, b) = if east { ("America/New_York", "Europe/London") } else { ("Europe/London", "America/New_York") };
        let mut t = ZoneTimeline::default();
        for day in ["2026-11-10", "2026-11-11", "2026-11-12"] {
            t.observe(d(day), a, Evidence::Wearable);
        }
        for day in ["2026-11-13", "2026-11-14"] {
            t.observe(d(day), b, Evidence::Wearable);
        }
        t
    }

    #[test]
    fn flying_east_makes_a_19_hour_day_and_west_a_29_hour_day() {
        let east = mover(true);
        let (a, b) = east.day_span(d("2026-11-12"));
        assert_eq!((a, b), (epoch("2026-11-12T05:00:00Z"), epoch("2026-11-13T00:00:00Z")));
        assert_eq!(b - a, 19 * 3600);
        assert_eq!(east.zone_at(epoch("2026-11-12T23:59:59Z")).unwrap().name.as_deref(), Some("America/New_York"));
        assert_eq!(east.zone_at(epoch("2026-11-13T00:00:00Z")).unwrap().name.as_deref(), Some("Europe/London"));
        assert_eq!(east.local_date(epoch("2026-11-13T03:00:00Z")), Some(d("2026-11-13")));

        let west = mover(false);
        let (a, b) = west.day_span(d("2026-11-12"));
        assert_eq!((a, b), (epoch("2026-11-12T00:00:00Z"), epoch("2026-11-13T05:00:00Z")));
        assert_eq!(b - a, 29 * 3600);
        // Its last five hours are lived on New York's clock, where they are still the 12th.
        assert_eq!(west.zone_at(epoch("2026-11-12T23:59:59Z")).unwrap().name.as_deref(), Some("Europe/London"));
        let late = epoch("2026-11-13T04:59:59Z");
        let z = west.zone_at(late).unwrap();
        assert_eq!(z.name.as_deref(), Some("America/New_York"));
        assert_eq!(z.local_date(late), Some(d("2026-11-12")));
        assert_eq!(west.local_date(late), Some(d("2026-11-12")));
        assert_eq!(west.zone_at(epoch("2026-11-13T05:00:00Z")).unwrap().name.as_deref(), Some("America/New_York"));
    }

    #[test]
    fn a_move_on_a_dst_day_takes_the_new_zone_dst_offset() {
        // Europe/London springs forward on 2026-03-29; the person arrives from New York (still
        // on EDT since 2026-03-08) that day.
        let mut t = ZoneTimeline::default();
        t.observe(d("2026-03-28"), "America/New_York", Evidence::Wearable);
        t.observe(d("2026-03-29"), "Europe/London", Evidence::Wearable);
        let (a, b) = t.day_span(d("2026-03-28"));
        assert_eq!((a, b), (epoch("2026-03-28T04:00:00Z"), epoch("2026-03-29T00:00:00Z")));
        let (a, b) = t.day_span(d("2026-03-29"));
        assert_eq!((a, b), (epoch("2026-03-29T00:00:00Z"), epoch("2026-03-29T23:00:00Z")), "23 hours: BST from 01:00");
        let z = t.zone_at(epoch("2026-03-29T12:00:00Z")).unwrap();
        assert_eq!(z.offset_at(epoch("2026-03-29T12:00:00Z")), Some(3600));
    }

    #[test]
    fn days_without_evidence_carry_the_zone_before_them() {
        let mut t = ZoneTimeline::default();
        t.observe(d("2026-01-10"), "Asia/Tokyo", Evidence::Workout);
        t.observe(d("2026-01-20"), "Europe/Paris", Evidence::Sleep);
        assert_eq!(t.zone_name_of_day(d("2026-01-01")).map(|z| &**z), Some("Asia/Tokyo"), "before: the first");
        assert_eq!(t.zone_name_of_day(d("2026-01-15")).map(|z| &**z), Some("Asia/Tokyo"));
        assert_eq!(t.zone_name_of_day(d("2026-02-15")).map(|z| &**z), Some("Europe/Paris"));
        // Better evidence replaces, worse does not; equal evidence: the newer record.
        assert!(t.observe(d("2026-01-20"), "Europe/Berlin", Evidence::Activity));
        assert!(!t.observe(d("2026-01-20"), "Europe/Paris", Evidence::Current));
        assert_eq!(t.zone_name_of_day(d("2026-01-20")).map(|z| &**z), Some("Europe/Berlin"));
        assert!(t.observe(d("2026-01-20"), "Europe/Rome", Evidence::Activity));
        assert!(ZoneTimeline::default().zone_at(0).is_none());
    }

    #[test]
    fn the_state_form_is_runs_and_reads_back() {
        let t = mover(true);
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"from": "2026-11-10", "to": "2026-11-12", "zone": "America/New_York", "evidence": "wearable"},
                {"from": "2026-11-13", "to": "2026-11-14", "zone": "Europe/London", "evidence": "wearable"},
            ])
        );
        let back: ZoneTimeline = serde_json::from_value(json).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn changed_days_are_the_days_whose_span_or_zone_moved() {
        let mut before = ZoneTimeline::default();
        for day in ["2026-11-10", "2026-11-11", "2026-11-12"] {
            before.observe(d(day), "Europe/London", Evidence::Wearable);
        }
        let mut after = before.clone();
        // A late record: the 12th was spent in New York.
        after.observe(d("2026-11-12"), "America/New_York", Evidence::Wearable);
        // The 11th gets longer (29 hours), the 12th and every day after it (carried) move.
        let changed = before.changed_days(&after, d("2026-11-14"));
        assert_eq!(changed, vec![d("2026-11-11"), d("2026-11-12"), d("2026-11-13"), d("2026-11-14"), d("2026-11-15")]);
        assert!(before.changed_days(&before.clone(), d("2026-11-14")).is_empty());
    }
}
