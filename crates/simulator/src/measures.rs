//! Synthetic measure groups (getmeas): weigh-ins, blood pressure, SpO2 spot checks, VO2 max,
//! ECG intervals, the height entered at sign-up, back-dated manual entries, and the awkward
//! cases real accounts have: two groups in one second on a shared scale, measures deleted or
//! edited after the fact, and `unit` exponents that vary between groups of one type.

use chrono::{Datelike, Duration, NaiveDate};

use super::heart::ecg_on;
use super::rng::{Rng, Stream};
use super::world::{Device, User, World, day_number};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measure {
    pub value: i64,
    pub kind: i64,
    pub unit: i64,
    pub position: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Group<'u> {
    pub grpid: i64,
    pub attrib: i64,
    pub date: i64,
    pub created: i64,
    pub device: Option<&'u Device>,
    pub measures: Vec<Measure>,
    /// `(when, new attrib)`: the user claims an ambiguous measure.
    pub edit: Option<(i64, i64)>,
    /// The user deletes the group at this instant.
    pub deleted_at: Option<i64>,
}

impl Group<'_> {
    pub fn visible(&self, now: i64) -> bool {
        self.created <= now && self.deleted_at.is_none_or(|d| now < d)
    }

    pub fn modified(&self, now: i64) -> i64 {
        match self.edit {
            Some((t, _)) if t <= now => t,
            _ => self.created,
        }
    }

    pub fn attrib_at(&self, now: i64) -> i64 {
        match self.edit {
            Some((t, a)) if t <= now => a,
            _ => self.attrib,
        }
    }
}

/// Longest delay between a measure's `date` and its last change (creation, edit or deletion).
pub const MAX_LAG_DAYS: i64 = 30;

fn m(value: i64, kind: i64, unit: i64) -> Measure {
    Measure { value, kind, unit, position: None }
}

/// Encodes a quantity given in units of 10^`base_unit` with the exponent `unit` (>= base):
/// exact, as Withings' integers are.
fn scaled(value: i64, base_unit: i64, unit: i64) -> i64 {
    if unit >= base_unit { value / 10i64.pow((unit - base_unit) as u32) } else { value * 10i64.pow((base_unit - unit) as u32) }
}

/// Every group a user created on a local date (whatever their visibility at a given instant).
pub fn groups_on<'u>(world: &World, user: &'u User, date: NaiveDate) -> Vec<Group<'u>> {
    let mut out = Vec::new();
    let day = day_number(date);
    let grp = |k: i64| 5_000_000_000 + user.index as i64 * 100_000_000 + (day - 10_957) * 20 + k;
    let mut r = Rng::new(world.seed, user.index as u64, day, Stream::Measures);
    if date == world.history_start - Duration::days(1) {
        // Height typed in at sign-up, before any device data.
        let t = user.local_epoch(date, 20 * 60 + r.range(0, 60));
        out.push(Group {
            grpid: grp(0),
            attrib: 2,
            date: t,
            created: t + 1,
            device: None,
            measures: vec![m(user.height_mm, 4, -3)],
            edit: None,
            deleted_at: None,
        });
        return out;
    }
    if date < world.history_start {
        return out;
    }
    let days_in = (date - world.history_start).num_days() as f64;
    let weekly = (days_in * std::f64::consts::TAU / 7.0).sin() * 30.0;

    if let Some(scale) = &user.scale
        && r.chance(user.weigh_probability)
    {
        let t = user.local_epoch(date, 6 * 60 + 30 + r.range(0, 120)) + r.range(0, 59);
        let weight_dag = (user.weight_dag + user.weight_trend_dag * days_in + weekly + 25.0 * r.normal()).round() as i64;
        let fat = (user.fat_ratio + 0.4 * r.normal()).clamp(5.0, 55.0);
        let fat_mass_dag = (weight_dag as f64 * fat / 100.0).round() as i64;
        let free_dag = weight_dag - fat_mass_dag;
        let unit = *r.weighted(&[(-3i64, 70), (-2, 20), (-4, 10)]);
        let mut ms = vec![
            m(scaled(weight_dag, -2, unit), 1, unit),
            m(free_dag, 5, -2),
            m((fat * 1000.0).round() as i64, 6, -3),
            m(fat_mass_dag, 8, -2),
            m((free_dag as f64 * 0.94).round() as i64, 76, -2),
            m((free_dag as f64 * 0.71).round() as i64, 77, -2),
            m((free_dag as f64 * 0.052).round() as i64, 88, -2),
        ];
        if matches!(scale.model.id, 6 | 10) {
            let pulse_unit = *r.weighted(&[(0i64, 3), (-2, 1)]);
            ms.push(m(scaled((user.resting_hr + 6.0 + 3.0 * r.normal()).round() as i64, 0, pulse_unit), 11, pulse_unit));
            ms.push(m(6500 + r.range(0, 2500), 91, -3));
        }
        if scale.model.id == 10 {
            ms.push(m(((date.year() as i64 - user.birth_year as i64) + r.range(-6, 6)) * 10, 155, -1));
            ms.push(m((free_dag as f64 * 0.29).round() as i64, 168, -2));
            ms.push(m((free_dag as f64 * 0.42).round() as i64, 169, -2));
            ms.push(m(((fat - 10.0) / 2.0 * 10.0).round().max(10.0) as i64, 170, -1));
            // Segmental body composition: same type, told apart by `position`.
            for (pos, share) in [(3, 0.05), (2, 0.05), (10, 0.17), (11, 0.17), (12, 0.46)] {
                for (kind, total) in [(173, free_dag), (174, fat_mass_dag), (175, (free_dag as f64 * 0.94) as i64)] {
                    ms.push(Measure { value: (total as f64 * share).round() as i64, kind, unit: -2, position: Some(pos) });
                }
            }
        }
        let mut g = Group {
            grpid: grp(1),
            attrib: if r.chance(0.3) { 8 } else { 0 },
            date: t,
            created: t + r.range(15, 240),
            device: Some(scale),
            measures: ms,
            edit: None,
            deleted_at: None,
        };
        if r.chance(0.02) {
            // A reading the user deletes (stepped on with a bag).
            g.deleted_at = Some(g.created + r.range(1, 10) * 86_400 + r.range(0, 3600));
        }
        out.push(g);
        if user.shared_scale && r.chance(0.12) {
            // Someone else on the same scale in the same second: another group, ambiguous.
            let other_dag = 5800 + r.range(0, 600);
            let other = Group {
                grpid: grp(2),
                attrib: 1,
                date: t,
                created: t + r.range(15, 240),
                device: Some(scale),
                measures: vec![m(other_dag * 10, 1, -3)],
                edit: None,
                deleted_at: None,
            };
            let claimed = r.chance(0.5);
            let when = other.created + r.range(1, 3) * 86_400 + r.range(0, 7200);
            out.push(if claimed { Group { edit: Some((when, 0)), ..other } } else { Group { deleted_at: Some(when), ..other } });
        }
    } else if r.chance(0.03) {
        // A weight typed in by hand, days after the fact (back-dated entry).
        let t = user.local_epoch(date, 20 * 60 + r.range(0, 120));
        let weight_dag = (user.weight_dag + user.weight_trend_dag * days_in).round() as i64;
        out.push(Group {
            grpid: grp(3),
            attrib: 2,
            date: t,
            created: t + r.range(1, 20) * 86_400 + r.range(0, 3600),
            device: None,
            measures: vec![m(weight_dag * 10, 1, -3)],
            edit: None,
            deleted_at: None,
        });
    }

    if let Some(cuff) = &user.cuff {
        for (k, base) in [(4i64, 7 * 60 + 30), (5, 20 * 60)] {
            if !r.chance(user.bp_probability * if k == 4 { 1.0 } else { 0.4 }) {
                continue;
            }
            let t = user.local_epoch(date, base + r.range(0, 90)) + r.range(0, 59);
            let unit = *r.weighted(&[(0i64, 8), (-2, 2)]);
            let sys = (user.systolic + 6.0 * r.normal()).round() as i64;
            let dia = (user.diastolic + 4.0 * r.normal()).round() as i64;
            let pulse = (user.resting_hr + 5.0 + 4.0 * r.normal()).round() as i64;
            out.push(Group {
                grpid: grp(k),
                attrib: *r.weighted(&[(0i64, 85), (5, 12), (17, 3)]),
                date: t,
                created: t + r.range(20, 600),
                device: Some(cuff),
                measures: vec![
                    m(scaled(dia, 0, unit), 9, unit),
                    m(scaled(sys, 0, unit), 10, unit),
                    m(scaled(pulse, 0, unit), 11, unit),
                ],
                edit: None,
                deleted_at: None,
            });
        }
    }

    if let Some(watch) = &user.watch {
        let syncs = super::activity::watch_syncs(world, user, date);
        if syncs.worn {
            let after = |t: i64| syncs.first_at_or_after(t).unwrap_or(t + 3600);
            if r.chance(0.1) {
                let t = user.local_epoch(date, 11 * 60 + r.range(0, 480)) + r.range(0, 59);
                out.push(Group {
                    grpid: grp(6),
                    attrib: 0,
                    date: t,
                    created: after(t),
                    device: Some(watch),
                    measures: vec![m(r.range(94, 99), 54, 0)],
                    edit: None,
                    deleted_at: None,
                });
            }
            if day.rem_euclid(7) == (user.index as i64) % 7 {
                let t = user.local_epoch(date, 12 * 60 + r.range(0, 300)) + r.range(0, 59);
                let vo2 = ((user.vo2_max - days_in * 0.002 + 0.8 * r.normal()) * 100.0).round() as i64;
                out.push(Group {
                    grpid: grp(7),
                    attrib: 0,
                    date: t,
                    created: after(t),
                    device: Some(watch),
                    measures: vec![m(vo2, 123, -2)],
                    edit: None,
                    deleted_at: None,
                });
            }
        }
        if let Some(ecg) = ecg_on(world, user, date) {
            let [qrs, pr, qt, qtc] = ecg.intervals;
            out.push(Group {
                grpid: grp(8),
                attrib: 0,
                date: ecg.timestamp,
                created: ecg.modified,
                device: Some(watch),
                measures: vec![m(ecg.afib, 130, 0), m(qrs, 135, 0), m(pr, 136, 0), m(qt, 137, 0), m(qtc, 138, 0)],
                edit: None,
                deleted_at: None,
            });
        }
    }
    out
}

/// Visible groups with `date` in `[from, to]`.
pub fn groups_between<'u>(world: &World, user: &'u User, from: i64, to: i64, now: i64) -> Vec<Group<'u>> {
    let first = user.local_date(from).max(world.history_start - Duration::days(1));
    let last = user.local_date(to.min(now));
    let mut out = Vec::new();
    let mut d = first;
    while d <= last {
        out.extend(groups_on(world, user, d).into_iter().filter(|g| g.visible(now) && g.date >= from && g.date <= to));
        d += Duration::days(1);
    }
    out
}

/// Visible groups modified after `since`.
pub fn groups_modified_after<'u>(world: &World, user: &'u User, since: i64, now: i64) -> Vec<Group<'u>> {
    let from = user.local_epoch(user.local_date(since) - Duration::days(MAX_LAG_DAYS + 1), 0);
    groups_between(world, user, from, now, now).into_iter().filter(|g| g.modified(now) > since).collect()
}
