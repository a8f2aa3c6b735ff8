//! Synthetic sleep: nightly sessions (and the odd nap) with hypnogram segments, per-minute
//! vitals and the getsummary row computed from them.
//!
//! A session appears after waking (`created` = end + a sync delay); one in ten is processed
//! again a few hours later (`modified` moves, the score changes), as Withings does.

use chrono::{Duration, NaiveDate};

use super::rng::{Rng, Stream, round};
use super::world::{Device, User, World, day_number};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start: i64,
    pub end: i64,
    /// Withings state: 0 awake, 1 light, 2 deep, 3 rem.
    pub state: i64,
}

#[derive(Debug, Clone)]
pub struct Session<'u> {
    pub id: i64,
    /// Local date of the wake-up (the summary's `date`).
    pub date: NaiveDate,
    pub start: i64,
    pub end: i64,
    pub device: &'u Device,
    /// 32 sleep monitor, 16 tracker.
    pub summary_model: i64,
    pub created: i64,
    /// A second processing of the night, if any.
    pub reprocessed: Option<i64>,
    pub segments: Vec<Segment>,
    key: u64,
}

/// One minute of vitals inside a session.
#[derive(Debug, Clone, Copy)]
pub struct Vitals {
    pub t: i64,
    pub hr: i64,
    pub rr: i64,
    pub snoring: i64,
    /// rmssd and sdnn_1 come every 10 minutes.
    pub hrv: Option<(i64, i64)>,
}

/// Sessions whose wake-up falls on a local date (the night, and possibly a nap).
pub fn sessions_on<'u>(world: &World, user: &'u User, date: NaiveDate) -> Vec<Session<'u>> {
    if date <= world.history_start {
        return Vec::new();
    }
    let day = day_number(date);
    let mut r = Rng::new(world.seed, user.index as u64, day, Stream::Sleep);
    let worn = super::activity::watch_syncs(world, user, date - Duration::days(1)).worn;
    let (device, summary_model) = match (&user.sleep_mat, &user.watch) {
        (Some(m), _) => (m, 32),
        (None, Some(w)) if worn => (w, 16),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    if r.chance(0.95) {
        let bed =
            user.local_epoch(date - Duration::days(1), 21 * 60 + user.bedtime_offset_min + r.range(-30, 40)) + r.range(0, 59);
        let length = user.sleep_need_min + r.range(-70, 60);
        out.push(build(r.next_u64(), user, date, 0, bed, length, device, summary_model, &mut r));
    }
    if user.watch.is_some() && r.chance(0.06) {
        let start = user.local_epoch(date, 14 * 60 + r.range(0, 90)) + r.range(0, 59);
        let length = r.range(25, 100);
        out.push(build(r.next_u64(), user, date, 1, start, length, device, summary_model, &mut r));
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn build<'u>(
    key: u64,
    user: &'u User,
    date: NaiveDate,
    k: i64,
    start: i64,
    minutes: i64,
    device: &'u Device,
    summary_model: i64,
    r: &mut Rng,
) -> Session<'u> {
    let mut seg_rng = Rng::from_parts(&[key, 7]);
    let end = start + minutes * 60;
    let mut segments = Vec::new();
    let latency = seg_rng.range(4, 30).min(minutes / 4);
    segments.push(Segment { start, end: start + latency * 60, state: 0 });
    let mut t = start + latency * 60;
    let final_wake = end - seg_rng.range(3, 20).min(minutes / 5) * 60;
    // 90-minute cycles: light, deep (early in the night), light, REM; brief wakes between.
    let mut cycle = 0;
    while t < final_wake {
        let plan: [(i64, i64); 4] = [
            (1, seg_rng.range(15, 35)),
            (2, if cycle < 3 { seg_rng.range(15, 40) } else { seg_rng.range(0, 12) }),
            (1, seg_rng.range(10, 25)),
            (3, seg_rng.range(8 + cycle * 4, 20 + cycle * 6)),
        ];
        for (state, len) in plan {
            if len == 0 || t >= final_wake {
                continue;
            }
            let e = (t + len * 60).min(final_wake);
            segments.push(Segment { start: t, end: e, state });
            t = e;
        }
        if t < final_wake && seg_rng.chance(0.35) {
            let e = (t + seg_rng.range(2, 12) * 60).min(final_wake);
            segments.push(Segment { start: t, end: e, state: 0 });
            t = e;
        }
        cycle += 1;
    }
    segments.push(Segment { start: final_wake, end, state: 0 });
    segments.retain(|s| s.end > s.start);
    let created = end + if summary_model == 32 { r.range(300, 1500) } else { r.range(1800, 7200) };
    let reprocessed = r.chance(0.1).then(|| created + r.range(2, 6) * 3600);
    Session {
        id: 2_000_000_000 + user.index as i64 * 100_000_000 + (day_number(date) - 10_957) * 4 + k,
        date,
        start,
        end,
        device,
        summary_model,
        created,
        reprocessed,
        segments,
        key,
    }
}

impl Session<'_> {
    pub fn visible(&self, now: i64) -> bool {
        self.created <= now
    }

    pub fn modified(&self, now: i64) -> i64 {
        match self.reprocessed {
            Some(t) if t <= now => t,
            _ => self.created,
        }
    }

    /// Per-minute vitals of a segment.
    pub fn vitals(&self, user: &User, segment: usize) -> Vec<Vitals> {
        let s = self.segments[segment];
        let mut r = Rng::from_parts(&[self.key, 100 + segment as u64]);
        let snores = self.summary_model == 32 && user.index % 3 != 1;
        let mut out = Vec::new();
        let mut t = s.start;
        while t < s.end {
            let depth = match s.state {
                2 => -6.0,
                1 => -3.0,
                3 => 2.0,
                _ => 5.0,
            };
            out.push(Vitals {
                t,
                hr: (user.resting_hr - 4.0 + depth + 2.0 * r.normal()).round() as i64,
                rr: (14.0 + 1.5 * r.normal()).round().clamp(8.0, 24.0) as i64,
                snoring: if snores && s.state != 0 && r.chance(0.08) { 60 } else { 0 },
                hrv: ((t - self.start) % 600 == 0).then(|| {
                    let rmssd = (user.rmssd_level * (1.0 + 0.2 * r.normal()) + if s.state == 2 { 8.0 } else { 0.0 }).max(5.0);
                    (rmssd.round() as i64, (rmssd * 1.25).round() as i64)
                }),
            });
            t += 60;
        }
        out
    }

    /// The getsummary `data` object as of `now` (every field the simulator can produce).
    pub fn summary(&self, user: &User, now: i64) -> SleepSummary {
        let mut by_state = [0i64; 4];
        for s in &self.segments {
            by_state[s.state as usize] += s.end - s.start;
        }
        let first = self.segments.first().map(|s| if s.state == 0 { s.end - s.start } else { 0 }).unwrap_or(0);
        let last = self.segments.last().map(|s| if s.state == 0 { s.end - s.start } else { 0 }).unwrap_or(0);
        let inner_wakes = self.segments.len().saturating_sub(2);
        let wakeupcount = self.segments.iter().skip(1).take(inner_wakes).filter(|s| s.state == 0).count() as i64;
        let (mut hr, mut rr, mut snoring, mut episodes, mut rmssd) = (Vec::new(), Vec::new(), 0i64, 0i64, Vec::new());
        let mut prev_snore = false;
        for i in 0..self.segments.len() {
            for v in self.vitals(user, i) {
                hr.push(v.hr);
                rr.push(v.rr);
                snoring += v.snoring;
                if v.snoring > 0 && !prev_snore {
                    episodes += 1;
                }
                prev_snore = v.snoring > 0;
                if let Some((x, _)) = v.hrv {
                    rmssd.push(x);
                }
            }
        }
        let avg = |v: &[i64]| if v.is_empty() { 0 } else { v.iter().sum::<i64>() / v.len() as i64 };
        let in_bed = self.end - self.start;
        let asleep = by_state[1] + by_state[2] + by_state[3];
        let mut r = Rng::from_parts(&[self.key, 9]);
        let long = asleep >= 5 * 3600;
        let mut score = (40.0 + asleep as f64 / 600.0 + 10.0 * r.normal()).clamp(10.0, 100.0).round() as i64;
        if matches!(self.reprocessed, Some(t) if t <= now) {
            score = (score + r.range(-6, 6)).clamp(0, 100);
        }
        let half = rmssd.len() / 2;
        let mat = self.summary_model == 32;
        SleepSummary {
            total_timeinbed: in_bed,
            total_sleep_time: asleep,
            lightsleepduration: by_state[1],
            deepsleepduration: by_state[2],
            remsleepduration: by_state[3],
            wakeupduration: by_state[0],
            wakeupcount,
            sleep_efficiency: round(asleep as f64 / in_bed.max(1) as f64, 2),
            sleep_latency: first,
            wakeup_latency: last,
            waso: by_state[0] - first - last,
            nb_rem_episodes: self.segments.iter().filter(|s| s.state == 3).count() as i64,
            out_of_bed_count: i64::from(r.chance(0.25)),
            hr_average: avg(&hr),
            hr_min: hr.iter().copied().min().unwrap_or(0),
            hr_max: hr.iter().copied().max().unwrap_or(0),
            rr_average: avg(&rr),
            rr_min: rr.iter().copied().min().unwrap_or(0),
            rr_max: rr.iter().copied().max().unwrap_or(0),
            breathing_disturbances_intensity: (mat && long).then(|| r.range(2, 45)),
            apnea_hypopnea_index: (mat && long).then(|| r.range(0, 12)),
            snoring: mat.then_some(snoring),
            snoringepisodecount: mat.then_some(episodes),
            sleep_score: score,
            rmssd_start_avg: avg(&rmssd[..half.max(1).min(rmssd.len())]),
            rmssd_end_avg: avg(&rmssd[half..]),
            night_events: [(1, vec![0]), (2, vec![first]), (3, vec![in_bed - last]), (4, vec![in_bed])],
        }
    }
}

#[derive(Debug, Clone)]
pub struct SleepSummary {
    pub total_timeinbed: i64,
    pub total_sleep_time: i64,
    pub lightsleepduration: i64,
    pub deepsleepduration: i64,
    pub remsleepduration: i64,
    pub wakeupduration: i64,
    pub wakeupcount: i64,
    pub sleep_efficiency: f64,
    pub sleep_latency: i64,
    pub wakeup_latency: i64,
    pub waso: i64,
    pub nb_rem_episodes: i64,
    pub out_of_bed_count: i64,
    pub hr_average: i64,
    pub hr_min: i64,
    pub hr_max: i64,
    pub rr_average: i64,
    pub rr_min: i64,
    pub rr_max: i64,
    pub breathing_disturbances_intensity: Option<i64>,
    pub apnea_hypopnea_index: Option<i64>,
    pub snoring: Option<i64>,
    pub snoringepisodecount: Option<i64>,
    pub sleep_score: i64,
    pub rmssd_start_avg: i64,
    pub rmssd_end_avg: i64,
    /// Event type -> offsets in seconds from the session start.
    pub night_events: [(i64, Vec<i64>); 4],
}

/// Sessions (visible at `now`) whose wake-up date is in `[from, to]`.
pub fn sessions_between<'u>(world: &World, user: &'u User, from: NaiveDate, to: NaiveDate, now: i64) -> Vec<Session<'u>> {
    let mut out = Vec::new();
    let mut d = from.max(world.history_start);
    while d <= to {
        out.extend(sessions_on(world, user, d).into_iter().filter(|s| s.visible(now)));
        d += Duration::days(1);
    }
    out
}
