//! Synthetic workouts: schedule, per-minute effort and the getworkouts summary.
//!
//! A workout's minutes feed both the intraday series of its day (steps, dense heart rate) and
//! its own summary, from the same draws, so the two always agree.

use chrono::NaiveDate;

use super::activity::watch_syncs;
use super::rng::{Rng, Stream, round};
use super::world::{Device, User, World, day_number};

/// Categories the synthetic users practise, with weights. 999 is a code newer than any table
/// (Withings keeps adding them): consumers must keep it, not drop it.
const CATEGORIES: &[(i64, u32)] = &[
    (1, 10),
    (2, 8),
    (3, 2),
    (6, 6),
    (7, 3),
    (12, 1),
    (16, 4),
    (18, 2),
    (28, 3),
    (36, 1),
    (308, 3),
    (498, 1),
    (550, 2),
    (999, 1),
];

#[derive(Debug, Clone)]
pub struct Workout<'u> {
    pub id: i64,
    pub category: i64,
    pub date: NaiveDate,
    pub start: i64,
    pub end: i64,
    pub device: &'u Device,
    pub by_watch: bool,
    pub attrib: i64,
    pub modified: i64,
    /// Seed of the per-minute draws.
    key: u64,
    cadence: i64,
    effort: f64,
}

/// One minute of a workout.
#[derive(Debug, Clone, Copy)]
pub struct WorkoutMinute {
    pub t: i64,
    pub steps: i64,
    pub heart_rate: i64,
    pub calories: f64,
    pub distance: f64,
    pub elevation: i64,
}

/// The getworkouts `data` object of one workout (every field the API can return).
#[derive(Debug, Clone, Default)]
pub struct WorkoutData {
    pub calories: i64,
    pub intensity: i64,
    pub manual_distance: i64,
    pub manual_calories: i64,
    pub hr_average: i64,
    pub hr_min: i64,
    pub hr_max: i64,
    pub hr_zones: [i64; 4],
    pub pause_duration: i64,
    pub algo_pause_duration: Option<i64>,
    pub spo2_average: Option<i64>,
    pub steps: Option<i64>,
    pub distance: Option<i64>,
    pub elevation: Option<i64>,
    pub pool_laps: Option<i64>,
    pub strokes: Option<i64>,
    pub pool_length: Option<i64>,
}

fn is_swim(category: i64) -> bool {
    category == 7
}

/// (cadence steps/min, effort 0-1) by category.
fn profile(category: i64) -> (i64, f64) {
    match category {
        1 => (108, 0.45),
        2 | 498 => (162, 0.8),
        3 => (98, 0.55),
        6 | 308 => (0, 0.7),
        7 => (0, 0.65),
        12 => (60, 0.7),
        16 => (6, 0.5),
        18 => (140, 0.65),
        28 => (3, 0.3),
        550 => (90, 0.85),
        _ => (50, 0.5),
    }
}

/// Workouts a user did on a local date, in start order.
pub fn workouts_on<'u>(world: &World, user: &'u User, date: NaiveDate) -> Vec<Workout<'u>> {
    if date < world.history_start {
        return Vec::new();
    }
    let day = day_number(date);
    let mut r = Rng::new(world.seed, user.index as u64, day, Stream::Workouts);
    let syncs = watch_syncs(world, user, date);
    let (device, by_watch) = match (&user.watch, &user.phone) {
        (Some(w), _) if syncs.worn => (w, true),
        (_, Some(p)) => (p, false),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    let n = if r.chance(user.workout_probability) { if r.chance(0.1) { 2 } else { 1 } } else { 0 };
    for k in 0..n {
        let category = *r.weighted(CATEGORIES);
        // First workout in the evening (17:00-19:30), a second one in the morning.
        let start_min = if k == 0 { 17 * 60 + r.range(0, 150) } else { 7 * 60 + r.range(0, 60) };
        let minutes = r.range(20, 80);
        let start = user.local_epoch(date, start_min) + r.range(0, 59);
        let end = start + minutes * 60;
        let modified = if by_watch { syncs.first_at_or_after(end).unwrap_or(end + 3600) } else { end + r.range(300, 3600) };
        let (cadence, effort) = profile(category);
        out.push(Workout {
            id: 3_000_000_000 + user.index as i64 * 100_000_000 + (day - 10_957) * 10 + k as i64,
            category,
            date,
            start,
            end,
            device,
            by_watch,
            attrib: if r.chance(0.15) { 7 } else { 0 },
            modified,
            key: r.next_u64(),
            cadence,
            effort,
        });
    }
    out.sort_by_key(|w| w.start);
    out
}

impl Workout<'_> {
    /// The workout minute by minute.
    pub fn minutes(&self, user: &User) -> Vec<WorkoutMinute> {
        let mut r = Rng::from_parts(&[self.key]);
        let hr_max = 220.0 - (user.age_on(self.date) as f64);
        let weight_kg = user.weight_dag / 100.0;
        let mut t = self.start;
        let mut out = Vec::with_capacity(((self.end - self.start) / 60) as usize);
        while t < self.end {
            let steps = if self.cadence == 0 { 0 } else { (self.cadence as f64 * (1.0 + 0.06 * r.normal())).max(0.0) as i64 };
            let hr = user.resting_hr + (hr_max - user.resting_hr) * (self.effort + 0.06 * r.normal()).clamp(0.2, 1.0);
            let calories = round(weight_kg * (2.0 + 10.0 * self.effort) / 60.0 * (1.0 + 0.05 * r.normal()), 2);
            let distance = round(steps as f64 * user.stride_m * if self.cadence > 140 { 1.35 } else { 1.0 }, 2);
            out.push(WorkoutMinute {
                t,
                steps,
                heart_rate: hr.round() as i64,
                calories,
                distance,
                elevation: i64::from(r.chance(0.05)),
            });
            t += 60;
        }
        out
    }

    /// The summary getworkouts returns, derived from the minutes.
    pub fn data(&self, user: &User) -> WorkoutData {
        let minutes = self.minutes(user);
        let mut r = Rng::from_parts(&[self.key, 1]);
        let hr_max_theory = 220.0 - user.age_on(self.date) as f64;
        let mut zones = [0i64; 4];
        for m in &minutes {
            let pct = m.heart_rate as f64 / hr_max_theory;
            let z = if pct < 0.6 {
                0
            } else if pct < 0.75 {
                1
            } else if pct < 0.9 {
                2
            } else {
                3
            };
            zones[z] += 60;
        }
        let n = minutes.len().max(1) as i64;
        let steps: i64 = minutes.iter().map(|m| m.steps).sum();
        let distance: f64 = minutes.iter().map(|m| m.distance).sum();
        let swim = is_swim(self.category);
        let has_steps = !swim && self.cadence > 0;
        WorkoutData {
            calories: minutes.iter().map(|m| m.calories).sum::<f64>().round() as i64,
            intensity: (self.effort * 100.0).round() as i64,
            manual_distance: 0,
            manual_calories: 0,
            hr_average: minutes.iter().map(|m| m.heart_rate).sum::<i64>() / n,
            hr_min: minutes.iter().map(|m| m.heart_rate).min().unwrap_or(0),
            hr_max: minutes.iter().map(|m| m.heart_rate).max().unwrap_or(0),
            hr_zones: zones,
            pause_duration: if r.chance(0.2) { r.range(30, 300) } else { 0 },
            algo_pause_duration: swim.then(|| r.range(60, 400)),
            spo2_average: (self.by_watch && r.chance(0.3)).then(|| r.range(94, 99)),
            steps: has_steps.then_some(steps),
            distance: has_steps.then_some(distance.round() as i64),
            elevation: has_steps.then(|| minutes.iter().map(|m| m.elevation).sum()),
            pool_laps: swim.then(|| n * 2 + r.range(0, 4)),
            strokes: swim.then(|| n * 38 + r.range(0, 40)),
            pool_length: swim.then_some(25),
        }
    }
}
