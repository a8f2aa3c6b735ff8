//! Synthetic activity: watch syncs, minute-level intraday samples and daily activity rows.
//!
//! Data reaches the API the way a watch syncs it: a few syncs a day, each making the samples
//! before it visible, and a final sync the next morning (sometimes two days late). Today's
//! activity row therefore grows and its `modified` moves as the simulated clock advances. The
//! daily watch row is the sum of the same intraday samples, so the two endpoints agree.

use chrono::{Duration, NaiveDate};

use super::rng::{Rng, Stream, round};
use super::workouts::workouts_on;
use super::world::{Device, User, World, day_number};

/// When a user's watch synced the data of one local day.
#[derive(Debug, Clone)]
pub struct Syncs {
    pub worn: bool,
    /// Sync instants, ascending. Each one makes visible the samples before it.
    pub times: Vec<i64>,
    pub day_start: i64,
    pub day_end: i64,
}

impl Syncs {
    /// The latest sync at or before `now`, with the instant up to which it covers the day.
    pub fn visible(&self, now: i64) -> Option<(i64, i64)> {
        self.times.iter().rev().find(|s| **s <= now).map(|s| (*s, (*s).min(self.day_end)))
    }

    pub fn first_at_or_after(&self, t: i64) -> Option<i64> {
        self.times.iter().copied().find(|s| *s >= t)
    }
}

/// The watch syncs for a local day. No watch, or not worn that day: no syncs.
pub fn watch_syncs(world: &World, user: &User, date: NaiveDate) -> Syncs {
    let day_start = user.day_start(date);
    let day_end = user.day_start(date + Duration::days(1));
    let mut r = Rng::new(world.seed, user.index as u64, day_number(date), Stream::Sync);
    let worn = user.watch.is_some() && date >= world.history_start && r.chance(0.9);
    let mut times = Vec::new();
    if worn {
        if r.chance(0.05) {
            // The phone was away: the whole day arrives two days later.
            times.push(user.local_epoch(date, 2 * 1440 + 9 * 60 + r.range(0, 120)) + r.range(0, 59));
        } else {
            for h in [9, 13, 17, 21] {
                times.push(user.local_epoch(date, h * 60 + r.range(0, 50)) + r.range(0, 59));
            }
            times.push(user.local_epoch(date, 1440 + 7 * 60 + r.range(0, 90)) + r.range(0, 59));
        }
    }
    Syncs { worn, times, day_start, day_end }
}

/// One intraday sample: the fields it has, keyed by its epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub t: i64,
    pub steps: Option<i64>,
    pub elevation: Option<i64>,
    pub calories: Option<f64>,
    pub distance: Option<f64>,
    pub duration: Option<i64>,
    pub heart_rate: Option<i64>,
    pub spo2_auto: Option<i64>,
    pub rmssd: Option<i64>,
    pub sdnn1: Option<i64>,
    pub rr: Option<i64>,
}

impl Sample {
    fn merge(&mut self, o: Sample) {
        macro_rules! take {
            ($($f:ident),*) => { $( if o.$f.is_some() { self.$f = o.$f; } )* };
        }
        take!(steps, elevation, calories, distance, duration, heart_rate, spo2_auto, rmssd, sdnn1, rr);
    }
}

/// Probability of walking in a minute, by local hour.
const WALK_BY_HOUR: [f64; 24] = [
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.01, 0.06, 0.14, 0.08, 0.07, 0.08, 0.15, 0.12, 0.07, 0.07, 0.08, 0.14, 0.16, 0.09, 0.07, 0.05,
    0.03, 0.01,
];

/// Every intraday sample the watch recorded on a local day (whether synced yet or not),
/// sorted by time with one sample per epoch.
pub fn day_samples(world: &World, user: &User, date: NaiveDate) -> Vec<Sample> {
    let syncs = watch_syncs(world, user, date);
    if !syncs.worn {
        return Vec::new();
    }
    let mut r = Rng::new(world.seed, user.index as u64, day_number(date), Stream::Minutes);
    let workouts: Vec<_> = workouts_on(world, user, date).into_iter().filter(|w| w.by_watch).collect();
    let weight_kg = user.weight_dag / 100.0;
    let offset = user.offset_at(syncs.day_start + 12 * 3600);
    let mut out: Vec<Sample> = Vec::with_capacity(400);
    for w in &workouts {
        for m in w.minutes(user) {
            out.push(Sample {
                t: m.t,
                steps: Some(m.steps),
                elevation: Some(m.elevation),
                calories: Some(m.calories),
                distance: Some(m.distance),
                duration: Some(60),
                ..Sample::default()
            });
            out.push(Sample { t: m.t + 30, heart_rate: Some(m.heart_rate), ..Sample::default() });
        }
    }
    let in_workout = |t: i64| workouts.iter().any(|w| t >= w.start && t < w.end);
    let mut t = syncs.day_start;
    while t < syncs.day_end {
        let local_min = (t + offset).rem_euclid(86_400) / 60;
        let hour = (local_min / 60) as usize;
        let busy = in_workout(t);
        let mut walking = false;
        if !busy && r.chance(WALK_BY_HOUR[hour] * user.activity_level) {
            walking = true;
            let steps = r.range(55, 118);
            let intensity = if steps > 100 { 0.055 } else { 0.042 };
            out.push(Sample {
                t,
                steps: Some(steps),
                elevation: Some(i64::from(r.chance(0.03))),
                calories: Some(round(steps as f64 * intensity * weight_kg / 70.0, 2)),
                distance: Some(round(steps as f64 * user.stride_m, 2)),
                duration: Some(60),
                ..Sample::default()
            });
        }
        if local_min % 10 == 0 && !busy {
            let asleep = !(7 * 60..22 * 60 + 30).contains(&local_min);
            let base = if asleep { user.resting_hr - 4.0 } else { user.resting_hr + 9.0 };
            let hr = base + if walking { 24.0 } else { 0.0 } + 3.0 * r.normal();
            out.push(Sample { t: t + r.range(1, 59), heart_rate: Some(hr.round() as i64), ..Sample::default() });
        }
        if (60..6 * 60).contains(&local_min) && local_min % 60 == 30 {
            out.push(Sample { t: t + 7, spo2_auto: Some(r.range(93, 99)), ..Sample::default() });
        }
        if local_min < 6 * 60 && local_min % 30 == 15 {
            let rmssd = (user.rmssd_level * (1.0 + 0.15 * r.normal())).max(5.0);
            out.push(Sample {
                t: t + 3,
                rmssd: Some(rmssd.round() as i64),
                sdnn1: Some((rmssd * 1.2).round() as i64),
                rr: Some(r.range(12, 18)),
                ..Sample::default()
            });
        }
        t += 60;
    }
    out.sort_by_key(|s| s.t);
    let mut merged: Vec<Sample> = Vec::with_capacity(out.len());
    for s in out {
        match merged.last_mut() {
            Some(last) if last.t == s.t => last.merge(s),
            _ => merged.push(s),
        }
    }
    merged
}

/// Daily aggregates of one source (the fields of a getactivity row).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DailyActivity {
    pub steps: i64,
    pub distance: f64,
    pub elevation: i64,
    pub soft: i64,
    pub moderate: i64,
    pub intense: i64,
    pub active: i64,
    pub calories: f64,
    pub totalcalories: f64,
    /// hr_average, hr_min, hr_max, hr_zone_0..3; `None` for sources without heart rate.
    pub hr: Option<([i64; 3], [i64; 4])>,
}

/// Which source a getactivity row comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Watch,
    Phone,
}

/// One getactivity row as visible at some instant, without its aggregates (cheap to list:
/// only sync schedules are computed; [`ActivityRow::data`] does the minute-level work).
#[derive(Debug, Clone)]
pub struct ActivityRow<'u> {
    pub date: NaiveDate,
    pub timezone: &'static str,
    pub device: &'u Device,
    pub source: Source,
    pub brand: i64,
    pub is_tracker: bool,
    pub modified: i64,
}

fn bmr_kcal(user: &User) -> f64 {
    let kg = user.weight_dag / 100.0;
    10.0 * kg + 6.25 * (user.height_mm as f64 / 10.0) - 5.0 * 40.0 + 5.0
}

/// When the phone app synced a day: midday, evening and the next morning (final).
fn phone_syncs(world: &World, user: &User, date: NaiveDate) -> [i64; 3] {
    let mut r = Rng::new(world.seed, user.index as u64, day_number(date), Stream::Phone);
    [
        user.local_epoch(date, 12 * 60 + r.range(0, 90)) + r.range(0, 59),
        user.local_epoch(date, 19 * 60 + r.range(0, 90)) + r.range(0, 59),
        user.local_epoch(date, 1440 + 8 * 60 + r.range(0, 120)) + r.range(0, 59),
    ]
}

/// Every row of a day visible at `now`: the watch first, then the phone.
pub fn rows_on<'u>(world: &World, user: &'u User, date: NaiveDate, now: i64) -> Vec<ActivityRow<'u>> {
    let mut out = Vec::with_capacity(2);
    if let Some(device) = &user.watch
        && let Some((modified, _)) = watch_syncs(world, user, date).visible(now)
    {
        let timezone = user.tz_on(date).name();
        out.push(ActivityRow { date, timezone, device, source: Source::Watch, brand: 1, is_tracker: true, modified });
    }
    if let Some(device) = &user.phone
        && date >= world.history_start
        && let Some(modified) = phone_syncs(world, user, date).iter().rev().find(|s| **s <= now).copied()
    {
        let timezone = user.tz_on(date).name();
        out.push(ActivityRow { date, timezone, device, source: Source::Phone, brand: 18, is_tracker: false, modified });
    }
    out
}

impl ActivityRow<'_> {
    /// The row's aggregates as of `now`.
    pub fn data(&self, world: &World, user: &User, now: i64) -> DailyActivity {
        match self.source {
            Source::Watch => watch_data(world, user, self.date, now),
            Source::Phone => phone_data(world, user, self.date, self.modified),
        }
    }
}

/// The watch's aggregates for a day: the sum of the intraday samples synced by `now`.
fn watch_data(world: &World, user: &User, date: NaiveDate, now: i64) -> DailyActivity {
    let syncs = watch_syncs(world, user, date);
    let mut d = DailyActivity::default();
    let Some((_, covered)) = syncs.visible(now) else { return d };
    let samples = day_samples(world, user, date);
    let hr_max_theory = 220.0 - user.age_on(date) as f64;
    let mut hr_values: Vec<(i64, i64)> = Vec::new();
    for s in samples.iter().take_while(|s| s.t < covered) {
        if let Some(steps) = s.steps {
            d.steps += steps;
            d.distance += s.distance.unwrap_or(0.0);
            d.elevation += s.elevation.unwrap_or(0);
            let cal = s.calories.unwrap_or(0.0);
            d.calories += cal;
            if cal >= 7.0 {
                d.intense += 60;
            } else if cal >= 4.0 {
                d.moderate += 60;
            } else {
                d.soft += 60;
            }
        }
        if let Some(hr) = s.heart_rate {
            hr_values.push((s.t, hr));
        }
    }
    d.active = d.moderate + d.intense;
    d.distance = round(d.distance, 2);
    d.calories = round(d.calories, 2);
    let fraction = ((covered - syncs.day_start) as f64 / (syncs.day_end - syncs.day_start) as f64).clamp(0.0, 1.0);
    d.totalcalories = round(d.calories + bmr_kcal(user) * fraction, 2);
    if !hr_values.is_empty() {
        let mut zones = [0i64; 4];
        for (i, (t, hr)) in hr_values.iter().enumerate() {
            let span = hr_values.get(i + 1).map(|(n, _)| (n - t).min(600)).unwrap_or(600);
            let pct = *hr as f64 / hr_max_theory;
            let z = if pct < 0.6 {
                0
            } else if pct < 0.75 {
                1
            } else if pct < 0.9 {
                2
            } else {
                3
            };
            zones[z] += span;
        }
        let sum: i64 = hr_values.iter().map(|(_, h)| h).sum();
        let min = hr_values.iter().map(|(_, h)| *h).min().unwrap_or(0);
        let max = hr_values.iter().map(|(_, h)| *h).max().unwrap_or(0);
        d.hr = Some(([sum / hr_values.len() as i64, min, max], zones));
    }
    d
}

/// The phone source's aggregates as of its sync at `modified` (no heart rate).
fn phone_data(world: &World, user: &User, date: NaiveDate, modified: i64) -> DailyActivity {
    let start = user.day_start(date);
    let end = user.day_start(date + Duration::days(1));
    let fraction = ((modified.min(end) - start) as f64 / (end - start) as f64).clamp(0.0, 1.0);
    let mut r = Rng::new(world.seed, user.index as u64, day_number(date), Stream::Phone);
    r.next_u64();
    let full_steps = (5200.0 * user.activity_level * (1.0 + 0.3 * r.normal())).max(300.0);
    let steps = (full_steps * fraction.powf(1.2)).round() as i64;
    let moving = steps * 60 / 100;
    let soft = moving * 7 / 10;
    let moderate = moving * 2 / 10;
    let intense = moving - soft - moderate;
    let calories = round(steps as f64 * 0.04 * user.weight_dag / 7000.0, 3);
    DailyActivity {
        steps,
        distance: round(steps as f64 * user.stride_m, 3),
        elevation: 0,
        soft,
        moderate,
        intense,
        active: moderate + intense,
        calories,
        totalcalories: round(calories + bmr_kcal(user) * fraction, 3),
        hr: None,
    }
}

/// Intraday samples in `[from, to)` that have been synced by `now`.
pub fn intraday(world: &World, user: &User, from: i64, to: i64, now: i64) -> Vec<Sample> {
    let mut out = Vec::new();
    if to <= from {
        return out;
    }
    let mut date = user.local_date(from);
    let last = user.local_date(to - 1);
    while date <= last {
        let syncs = watch_syncs(world, user, date);
        if let Some((_, covered)) = syncs.visible(now) {
            out.extend(day_samples(world, user, date).into_iter().filter(|s| s.t >= from && s.t < to && s.t < covered));
        }
        date += Duration::days(1);
    }
    out
}
