//! The synthetic users: profiles, devices and time zones.
//!
//! A user's profile is a pure function of `(seed, user index)`; everything a user does on a
//! day is a pure function of `(seed, user index, day)` (see the generator modules). Only the
//! profiles are kept in memory (one small struct per user), so memory does not grow with the
//! number of days served.

use chrono::{Datelike, Duration, LocalResult, NaiveDate, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use super::devices::{DeviceModel, SourceType, device_model};
use super::rng::{Rng, Stream};

/// Time zones handed out to users: DST zones on both hemispheres, a half-hour offset and UTC.
const ZONES: &[Tz] = &[
    chrono_tz::Europe::Paris,
    chrono_tz::America::New_York,
    chrono_tz::Asia::Tokyo,
    chrono_tz::Australia::Sydney,
    chrono_tz::America::Los_Angeles,
    chrono_tz::Europe::London,
    chrono_tz::Asia::Kolkata,
    chrono_tz::America::Sao_Paulo,
    chrono_tz::UTC,
    chrono_tz::Europe::Berlin,
];

/// Instants the simulator reasons about (years 1 to 9999); anything outside is clamped.
pub const EPOCH_MIN: i64 = -62_135_596_800;
pub const EPOCH_MAX: i64 = 253_402_300_799;

/// First Withings userid handed out; user `i` gets `USERID_BASE + i`.
pub const USERID_BASE: i64 = 31_000_000;

/// A device one synthetic user owns.
#[derive(Debug, Clone)]
pub struct Device {
    pub model: &'static DeviceModel,
    /// `None` for sources without a Withings device (phone apps).
    pub deviceid: Option<String>,
    pub battery: &'static str,
}

impl Device {
    pub fn source_type(&self) -> SourceType {
        self.model.source_type
    }
}

/// One synthetic user's fixed traits.
#[derive(Debug, Clone)]
pub struct User {
    pub index: usize,
    pub userid: i64,
    pub home_tz: Tz,
    /// The user moves to another zone on this local date (inclusive).
    pub moves: Option<(NaiveDate, Tz)>,
    pub scale: Option<Device>,
    pub cuff: Option<Device>,
    pub watch: Option<Device>,
    pub sleep_mat: Option<Device>,
    pub phone: Option<Device>,
    /// The Sleep Analyzer shows up twice in getdevice, once with an empty model name (a
    /// quirk seen in real accounts).
    pub ghost_sleep_device: bool,
    /// Another person steps on this user's scale now and then (ambiguous groups, attrib 1).
    pub shared_scale: bool,
    pub birth_year: i32,
    pub height_mm: i64,
    /// Weight at the start of history, in decagrams (10 g), and its trend per day.
    pub weight_dag: f64,
    pub weight_trend_dag: f64,
    pub fat_ratio: f64,
    pub systolic: f64,
    pub diastolic: f64,
    pub resting_hr: f64,
    pub vo2_max: f64,
    pub activity_level: f64,
    pub stride_m: f64,
    pub weigh_probability: f64,
    pub bp_probability: f64,
    pub workout_probability: f64,
    /// Bedtime in minutes after 21:00 local.
    pub bedtime_offset_min: i64,
    pub sleep_need_min: i64,
    pub rmssd_level: f64,
}

/// All synthetic users and the time frame of their history.
#[derive(Debug)]
pub struct World {
    pub seed: u64,
    pub users: Vec<User>,
    /// First local day with data.
    pub history_start: NaiveDate,
}

fn device(rng: &mut Rng, model_id: i64, with_id: bool) -> Device {
    let model = device_model(model_id).expect("simulator devices are in the device catalogue");
    let battery = *rng.weighted(&[("high", 70), ("medium", 20), ("low", 7), ("unknown", 3)]);
    Device { model, deviceid: if with_id { Some(rng.hex40()) } else { None }, battery }
}

impl World {
    /// Builds the users for `seed`. History starts `history_days` before the date of `anchor`
    /// (the simulated clock's start).
    pub fn new(seed: u64, users: usize, anchor: i64, history_days: i64) -> World {
        let anchor_date = Utc.timestamp_opt(anchor, 0).single().expect("valid anchor").date_naive();
        let history_start = anchor_date - Duration::days(history_days.max(1));
        let users = (0..users).map(|i| User::generate(seed, i, anchor_date)).collect();
        World { seed, users, history_start }
    }

    pub fn user(&self, index: usize) -> &User {
        &self.users[index]
    }

    pub fn by_userid(&self, userid: i64) -> Option<&User> {
        let i = userid.checked_sub(USERID_BASE)?;
        if i < 0 { None } else { self.users.get(i as usize) }
    }
}

impl User {
    fn generate(seed: u64, index: usize, anchor_date: NaiveDate) -> User {
        let mut r = Rng::new(seed, index as u64, 0, Stream::Profile);
        let mut dev = Rng::new(seed, index as u64, 0, Stream::Devices);
        let everything = index == 0;
        let home_tz = ZONES[index % ZONES.len()];
        // User 1 is the traveller: New York until 20 days before the clock's start, then London.
        let moves = (index == 1).then(|| (anchor_date - Duration::days(20), chrono_tz::Europe::London));

        let scale_model = *r.weighted(&[(6i64, 4), (5, 4), (10, 2)]);
        let scale = (everything || r.chance(0.85)).then(|| device(&mut dev, if everything { 6 } else { scale_model }, true));
        let cuff = (everything || r.chance(0.45)).then(|| device(&mut dev, 45, true));
        let watch_model = *r.weighted(&[(93i64, 6), (94, 2), (91, 2)]);
        let watch = (everything || r.chance(0.8)).then(|| device(&mut dev, if everything { 93 } else { watch_model }, true));
        let sleep_mat = (everything || r.chance(0.4)).then(|| device(&mut dev, 63, true));
        let phone_model = *r.weighted(&[(1055i64, 3), (1057, 2)]);
        let phone = (everything || watch.is_none() || r.chance(0.3)).then(|| device(&mut dev, phone_model, false));
        let ghost_sleep_device = sleep_mat.is_some() && r.chance(0.5);
        let shared_scale = scale.is_some() && (index % 4 == 2 || r.chance(0.1));

        let female = r.chance(0.5);
        let height_mm = if female { 1560 + r.range(0, 200) } else { 1680 + r.range(0, 230) };
        let h = height_mm as f64 / 1000.0;
        let bmi = 20.0 + r.f64() * 11.0;
        User {
            index,
            userid: USERID_BASE + index as i64,
            home_tz,
            moves,
            scale,
            cuff,
            watch,
            sleep_mat,
            phone,
            ghost_sleep_device,
            shared_scale,
            birth_year: 1950 + r.range(0, 55) as i32,
            height_mm,
            weight_dag: bmi * h * h * 100.0,
            weight_trend_dag: (r.f64() - 0.6) * 0.8,
            fat_ratio: if female { 24.0 } else { 16.0 } + (bmi - 22.0) * 0.9 + r.normal() * 2.0,
            systolic: 108.0 + r.f64() * 34.0,
            diastolic: 66.0 + r.f64() * 22.0,
            resting_hr: 52.0 + r.f64() * 22.0,
            vo2_max: 28.0 + r.f64() * 24.0,
            activity_level: 0.5 + r.f64() * 1.1,
            stride_m: if female { 0.64 } else { 0.74 } + r.f64() * 0.08,
            // User 0, the demo user, weighs in and takes blood pressure most days.
            weigh_probability: if everything { 0.9 } else { *r.pick(&[0.9, 0.6, 0.3]) },
            bp_probability: if everything { 0.7 } else { *r.pick(&[0.7, 0.4, 0.15]) },
            workout_probability: 0.15 + r.f64() * 0.4,
            bedtime_offset_min: r.range(45, 210),
            sleep_need_min: r.range(380, 510),
            rmssd_level: 22.0 + r.f64() * 55.0,
        }
    }

    /// The user's time zone on a local date.
    pub fn tz_on(&self, date: NaiveDate) -> Tz {
        match self.moves {
            Some((on, tz)) if date >= on => tz,
            _ => self.home_tz,
        }
    }

    /// The zone in force at an instant (the zone of the local day containing it).
    pub fn tz_at(&self, epoch: i64) -> Tz {
        self.tz_on(self.local_date(epoch))
    }

    /// Epoch seconds of a local wall-clock time on `date` (minutes after midnight; may exceed
    /// 24 h to reach into the next day). Falls forward over DST gaps.
    pub fn local_epoch(&self, date: NaiveDate, minutes: i64) -> i64 {
        let tz = self.tz_on(date);
        let day = date + Duration::days(minutes.div_euclid(1440));
        let m = minutes.rem_euclid(1440);
        let t = NaiveTime::from_num_seconds_from_midnight_opt((m * 60) as u32, 0).expect("minute of day");
        let naive = day.and_time(t);
        match tz.from_local_datetime(&naive) {
            LocalResult::Single(x) => x.timestamp(),
            LocalResult::Ambiguous(a, _) => a.timestamp(),
            LocalResult::None => {
                let later = naive + Duration::hours(1);
                tz.from_local_datetime(&later).earliest().map(|x| x.timestamp()).unwrap_or_else(|| later.and_utc().timestamp())
            }
        }
    }

    /// Start of a local day (its midnight in that day's zone), epoch seconds.
    pub fn day_start(&self, date: NaiveDate) -> i64 {
        self.local_epoch(date, 0)
    }

    /// The local date containing an instant.
    pub fn local_date(&self, epoch: i64) -> NaiveDate {
        let epoch = epoch.clamp(EPOCH_MIN, EPOCH_MAX);
        let utc = Utc.timestamp_opt(epoch, 0).single().expect("clamped epoch").date_naive();
        for d in [utc - Duration::days(1), utc, utc + Duration::days(1)] {
            if self.day_start(d) <= epoch && epoch < self.day_start(d + Duration::days(1)) {
                return d;
            }
        }
        utc
    }

    /// UTC offset in seconds at an instant, in the zone of that instant's local day.
    pub fn offset_at(&self, epoch: i64) -> i64 {
        let epoch = epoch.clamp(EPOCH_MIN, EPOCH_MAX);
        let tz = self.tz_at(epoch);
        let utc = Utc.timestamp_opt(epoch, 0).single().expect("clamped epoch");
        tz.offset_from_utc_datetime(&utc.naive_utc()).fix().local_minus_utc() as i64
    }

    pub fn age_on(&self, date: NaiveDate) -> i32 {
        date.year() - self.birth_year
    }

    /// Devices as getdevice lists them (phone sources are not Withings devices).
    pub fn devices(&self) -> Vec<&Device> {
        [&self.scale, &self.cuff, &self.watch, &self.sleep_mat].into_iter().flatten().collect()
    }
}

/// Days since 1970-01-01: the `day` part of every generator key.
pub fn day_number(date: NaiveDate) -> i64 {
    date.num_days_from_ce() as i64 - 719_163
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_days_tile_time_across_dst_and_a_move() {
        let anchor = Utc.with_ymd_and_hms(2024, 11, 20, 12, 0, 0).unwrap().timestamp();
        let world = World::new(42, 10, anchor, 400);
        for u in &world.users {
            let mut d = world.history_start;
            while d < NaiveDate::from_ymd_opt(2024, 11, 25).unwrap() {
                let s = u.day_start(d);
                let e = u.day_start(d + Duration::days(1));
                assert!(e > s, "user {} day {d} is empty", u.index);
                assert!(e - s <= 30 * 3600 && e - s >= 18 * 3600, "user {} day {d} lasts {}", u.index, e - s);
                assert_eq!(u.local_date(s), d);
                assert_eq!(u.local_date(e - 1), d);
                d += Duration::days(1);
            }
        }
        let traveller = world.user(1);
        assert_eq!(traveller.tz_on(NaiveDate::from_ymd_opt(2024, 10, 1).unwrap()), chrono_tz::America::New_York);
        assert_eq!(traveller.tz_on(NaiveDate::from_ymd_opt(2024, 11, 19).unwrap()), chrono_tz::Europe::London);
        // Paris in winter is UTC+1, in summer UTC+2.
        let paris = world.user(0);
        assert_eq!(paris.offset_at(Utc.with_ymd_and_hms(2024, 1, 10, 12, 0, 0).unwrap().timestamp()), 3600);
        assert_eq!(paris.offset_at(Utc.with_ymd_and_hms(2024, 7, 10, 12, 0, 0).unwrap().timestamp()), 7200);
    }
}
