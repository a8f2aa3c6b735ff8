//! Typed Withings records, decoded leniently (the shapes of the Withings API reference).
//!
//! Every data field is optional (Withings sends only what was requested and measured), numbers
//! accept ints, floats and numeric strings, ids accept strings and integers, `modelid` and
//! `model_id` are one field, and unknown keys are ignored. Never `deny_unknown_fields` here:
//! Withings adds keys.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::de;
use crate::secret::Secret;

/// One record of a list response: the raw JSON (for the raw landing and for quarantine) and
/// its decoded form, or why it did not decode.
#[derive(Debug, Clone)]
pub struct Item<T> {
    pub raw: Value,
    pub value: Result<T, String>,
}

impl<T: serde::de::DeserializeOwned + Plausible> Item<T> {
    /// Decodes `raw`; a record whose times are absurd ([`Plausible`]) is an error too, so it
    /// is quarantined with the reason and never drives a request.
    pub fn decode(raw: Value) -> Item<T> {
        let value = T::deserialize(&raw).map_err(|e| e.to_string()).and_then(|v| match v.implausible() {
            Some(reason) => Err(reason),
            None => Ok(v),
        });
        Item { raw, value }
    }
}

/// The earliest time a Withings record can carry: 2009-01-01T00:00:00Z (before any Withings
/// device with an API).
pub const EARLIEST: i64 = 1_230_768_000;
/// How far past the wall clock a record may be (time zones, clock skew).
pub const AHEAD_SECONDS: i64 = 2 * 86_400;
/// The longest sleep session or workout taken as real.
pub const LONGEST_SPAN_SECONDS: i64 = 48 * 3600;

/// Bounds on the times of a record. Withings data drives requests (a sleep session is fetched
/// day by day, an activity day's intraday), allocation and cursors (`modified`): one absurd
/// value (seconds read as milliseconds, an end date of 1e15) must be quarantined with its
/// reason rather than stop every run of a shard.
pub trait Plausible {
    /// Why this record cannot be real, if it cannot.
    fn implausible(&self) -> Option<String> {
        None
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `name` = `t` outside [2009-01-01, now + 2 days].
fn instant(name: &str, t: Option<i64>) -> Option<String> {
    let t = t?;
    (!(EARLIEST..=now() + AHEAD_SECONDS).contains(&t))
        .then(|| format!("implausible {name} {t}: outside 2009-01-01 .. now + 2 days"))
}

/// A local date (YYYY-MM-DD) outside [2009-01-01, today + 2 days]; an unparsable one is left
/// to the harmonizer.
fn local_date(name: &str, d: Option<&str>) -> Option<String> {
    let date = chrono::NaiveDate::parse_from_str(d?, "%Y-%m-%d").ok()?;
    let t = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp();
    (!(EARLIEST - 86_400..=now() + AHEAD_SECONDS).contains(&t))
        .then(|| format!("implausible {name} {date}: outside 2009-01-01 .. today + 2 days"))
}

/// A span from `start` to `end` longer than 48 hours.
fn span(what: &str, start: Option<i64>, end: Option<i64>) -> Option<String> {
    let (a, b) = (start?, end?);
    (b.saturating_sub(a) > LONGEST_SPAN_SECONDS)
        .then(|| format!("implausible {what} of {} hours ({a} to {b}): longer than 48 hours", b.saturating_sub(a) / 3600))
}

impl Plausible for MeasureGroup {
    fn implausible(&self) -> Option<String> {
        instant("date", Some(self.date))
            .or_else(|| instant("modified", self.modified))
            .or_else(|| instant("created", self.created))
    }
}

impl Plausible for Activity {
    fn implausible(&self) -> Option<String> {
        local_date("date", Some(&self.date)).or_else(|| instant("modified", self.modified))
    }
}

impl Plausible for IntradaySample {}

impl Plausible for HeartRecord {
    fn implausible(&self) -> Option<String> {
        instant("modified", self.modified)
    }
}

impl Plausible for Device {}

impl Plausible for NotifyProfile {}

impl Plausible for Workout {
    fn implausible(&self) -> Option<String> {
        instant("startdate", self.startdate)
            .or_else(|| instant("enddate", self.enddate))
            .or_else(|| span("workout", self.startdate, self.enddate))
            .or_else(|| local_date("date", self.date.as_deref()))
            .or_else(|| instant("modified", self.modified))
    }
}

impl Plausible for SleepSegment {
    fn implausible(&self) -> Option<String> {
        instant("startdate", Some(self.startdate))
            .or_else(|| instant("enddate", Some(self.enddate)))
            .or_else(|| span("sleep segment", Some(self.startdate), Some(self.enddate)))
    }
}

impl Plausible for SleepSummary {
    fn implausible(&self) -> Option<String> {
        instant("startdate", self.startdate)
            .or_else(|| instant("enddate", self.enddate))
            .or_else(|| span("sleep session", self.startdate, self.enddate))
            .or_else(|| local_date("date", self.date.as_deref()))
            .or_else(|| instant("modified", self.modified))
            .or_else(|| instant("created", self.created))
    }
}

/// A getmeas measure group.
#[derive(Debug, Clone, Deserialize)]
pub struct MeasureGroup {
    #[serde(deserialize_with = "de::i64_lenient")]
    pub grpid: i64,
    #[serde(deserialize_with = "de::i64_lenient")]
    pub date: i64,
    /// 0 device/unambiguous, 1 ambiguous, 2 manual, ... (kept raw).
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub attrib: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub created: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub modified: Option<i64>,
    /// 1 real measures, 2 objectives.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub category: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub deviceid: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub hash_deviceid: Option<String>,
    #[serde(default, alias = "model_id", deserialize_with = "de::opt_i64")]
    pub modelid: Option<i64>,
    /// A name here (an integer elsewhere).
    #[serde(default, deserialize_with = "de::opt_string")]
    pub model: Option<String>,
    #[serde(default)]
    pub measures: Vec<Measure>,
}

/// One measure: the real value is `value * 10^unit`.
#[derive(Debug, Clone, Deserialize)]
pub struct Measure {
    #[serde(deserialize_with = "de::i64_lenient")]
    pub value: i64,
    #[serde(rename = "type", deserialize_with = "de::i64_lenient")]
    pub kind: i64,
    #[serde(deserialize_with = "de::i64_lenient")]
    pub unit: i64,
    /// Body segment of segmental measures (173-175).
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub position: Option<i64>,
}

/// A getactivity row (one per day and source).
#[derive(Debug, Clone, Deserialize)]
pub struct Activity {
    /// Local date, YYYY-MM-DD, in `timezone`.
    pub date: String,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub timezone: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub deviceid: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub hash_deviceid: Option<String>,
    /// 1 Withings, 18 external source.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub brand: Option<i64>,
    #[serde(default)]
    pub is_tracker: Option<bool>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub modified: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub model: Option<String>,
    #[serde(default, alias = "model_id", deserialize_with = "de::opt_i64")]
    pub modelid: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub steps: Option<i64>,
    /// Metres.
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub distance: Option<f64>,
    /// Floors climbed.
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub elevation: Option<f64>,
    /// Seconds.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub soft: Option<i64>,
    /// Seconds.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub moderate: Option<i64>,
    /// Seconds.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub intense: Option<i64>,
    /// Seconds (moderate + intense).
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub active: Option<i64>,
    /// Active kcal.
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub calories: Option<f64>,
    /// Active + passive kcal.
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub totalcalories: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub hr_average: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub hr_min: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub hr_max: Option<i64>,
    /// Seconds in the light zone.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub hr_zone_0: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub hr_zone_1: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub hr_zone_2: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub hr_zone_3: Option<i64>,
}

/// One intraday sample (its epoch is the key of the series).
#[derive(Debug, Clone, Deserialize)]
pub struct IntradaySample {
    #[serde(default, deserialize_with = "de::opt_string")]
    pub deviceid: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub model: Option<String>,
    #[serde(default, alias = "modelid", deserialize_with = "de::opt_i64")]
    pub model_id: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub steps: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub elevation: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub calories: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub distance: Option<f64>,
    /// Seconds.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub duration: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub stroke: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub pool_lap: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub heart_rate: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub spo2_auto: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub rmssd: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub sdnn1: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub hrv_quality: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub core_body_temperature: Option<f64>,
    /// Breaths per minute.
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub rr: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub chest_movement_rate: Option<f64>,
}

/// A getworkouts record.
#[derive(Debug, Clone, Deserialize)]
pub struct Workout {
    #[serde(deserialize_with = "de::i64_lenient")]
    pub id: i64,
    /// Workout category code (reference section 6).
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub category: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub timezone: Option<String>,
    /// A model id (integer) here.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub attrib: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub startdate: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub enddate: Option<i64>,
    /// Local date, YYYY-MM-DD.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub date: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub deviceid: Option<String>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub modified: Option<i64>,
    /// Absent or `null` when `data_fields` was not sent.
    #[serde(default)]
    pub data: Option<WorkoutData>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct WorkoutData {
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub calories: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub intensity: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub manual_intensity: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub manual_distance: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub manual_calories: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub hr_average: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub hr_min: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub hr_max: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub hr_zone_0: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub hr_zone_1: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub hr_zone_2: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub hr_zone_3: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub pause_duration: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub algo_pause_duration: Option<i64>,
    /// Percent; fractional on some devices.
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub spo2_average: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub steps: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub distance: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub elevation: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub pool_laps: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub strokes: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub pool_length: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub core_body_temperature_avg: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub core_body_temperature_min: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub core_body_temperature_max: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub core_body_temperature_status: Option<String>,
}

/// One sleep get segment with its per-field epoch series.
#[derive(Debug, Clone, Deserialize)]
pub struct SleepSegment {
    #[serde(deserialize_with = "de::i64_lenient")]
    pub startdate: i64,
    #[serde(deserialize_with = "de::i64_lenient")]
    pub enddate: i64,
    /// 0 awake, 1 light, 2 deep, 3 REM, 4 manual, 5 unspecified.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub state: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub model: Option<String>,
    #[serde(default, alias = "modelid", deserialize_with = "de::opt_i64")]
    pub model_id: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub hash_deviceid: Option<String>,
    #[serde(default, deserialize_with = "de::opt_epoch_series")]
    pub hr: Option<BTreeMap<i64, f64>>,
    #[serde(default, deserialize_with = "de::opt_epoch_series")]
    pub rr: Option<BTreeMap<i64, f64>>,
    #[serde(default, deserialize_with = "de::opt_epoch_series")]
    pub snoring: Option<BTreeMap<i64, f64>>,
    #[serde(default, deserialize_with = "de::opt_epoch_series")]
    pub sdnn_1: Option<BTreeMap<i64, f64>>,
    #[serde(default, deserialize_with = "de::opt_epoch_series")]
    pub rmssd: Option<BTreeMap<i64, f64>>,
    #[serde(default, deserialize_with = "de::opt_epoch_series")]
    pub hrv_quality: Option<BTreeMap<i64, f64>>,
    #[serde(default, deserialize_with = "de::opt_epoch_series")]
    pub mvt_score: Option<BTreeMap<i64, f64>>,
    #[serde(default, deserialize_with = "de::opt_epoch_series")]
    pub chest_movement_rate: Option<BTreeMap<i64, f64>>,
    #[serde(default, deserialize_with = "de::opt_epoch_series")]
    pub withings_index: Option<BTreeMap<i64, f64>>,
    #[serde(default, deserialize_with = "de::opt_epoch_series")]
    pub breathing_sounds: Option<BTreeMap<i64, f64>>,
}

/// A sleep getsummary record (one per session).
#[derive(Debug, Clone, Deserialize)]
pub struct SleepSummary {
    #[serde(deserialize_with = "de::i64_lenient")]
    pub id: i64,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub timezone: Option<String>,
    /// 16 tracker, 32 sleep monitor.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub model: Option<i64>,
    #[serde(default, alias = "modelid", deserialize_with = "de::opt_i64")]
    pub model_id: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub hash_deviceid: Option<String>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub startdate: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub enddate: Option<i64>,
    /// Local date of the wake-up, YYYY-MM-DD.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub date: Option<String>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub created: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub modified: Option<i64>,
    #[serde(default)]
    pub completed: Option<bool>,
    /// `null` or absent when no data field applies.
    #[serde(default, deserialize_with = "de::null_as_default")]
    pub data: SleepSummaryData,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SleepSummaryData {
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub total_timeinbed: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub total_sleep_time: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub asleepduration: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub lightsleepduration: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub remsleepduration: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub deepsleepduration: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub sleep_efficiency: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub sleep_latency: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub wakeup_latency: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub wakeupduration: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub wakeupcount: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub waso: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub nb_rem_episodes: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub breathing_disturbances_intensity: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub apnea_hypopnea_index: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub withings_index: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub durationtosleep: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub durationtowakeup: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub out_of_bed_count: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub hr_average: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub hr_min: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub hr_max: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub rr_average: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub rr_min: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub rr_max: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub breathing_quality_assessment: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub snoring: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub snoringepisodecount: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub sleep_score: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub mvt_score_avg: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub mvt_active_duration: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub rmssd_start_avg: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub rmssd_end_avg: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub chest_movement_rate_wellness_average: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub chest_movement_rate_wellness_min: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub chest_movement_rate_wellness_max: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub breathing_sounds: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub breathing_sounds_episode_count: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub chest_movement_rate_average: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub chest_movement_rate_min: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub chest_movement_rate_max: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub core_body_temperature_min: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub core_body_temperature_max: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub core_body_temperature_avg: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub core_body_temperature_status: Option<String>,
    /// Kept as raw JSON (its exact shape is undocumented).
    #[serde(default)]
    pub night_events: Option<Value>,
}

/// A heart list record (an ECG recording).
#[derive(Debug, Clone, Deserialize)]
pub struct HeartRecord {
    #[serde(default, deserialize_with = "de::opt_string")]
    pub deviceid: Option<String>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub model: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub heart_rate: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub timestamp: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub modified: Option<i64>,
    #[serde(default)]
    pub ecg: Option<Ecg>,
    #[serde(default)]
    pub bloodpressure: Option<HeartBloodPressure>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Ecg {
    #[serde(deserialize_with = "de::i64_lenient")]
    pub signalid: i64,
    /// 0 negative, 1 positive, 2 inconclusive.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub afib: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HeartBloodPressure {
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub diastole: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub systole: Option<i64>,
}

/// A getdevice record.
#[derive(Debug, Clone, Deserialize)]
pub struct Device {
    #[serde(rename = "type", default)]
    pub device_type: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub battery: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub model: Option<String>,
    #[serde(default, alias = "modelid", deserialize_with = "de::opt_i64")]
    pub model_id: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub timezone: Option<String>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub first_session_date: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub last_session_date: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub deviceid: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub hash_deviceid: Option<String>,
}

/// A notify list profile.
#[derive(Debug, Clone, Deserialize)]
pub struct NotifyProfile {
    #[serde(deserialize_with = "de::i64_lenient")]
    pub appli: i64,
    pub callbackurl: String,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub comment: Option<String>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub expires: Option<i64>,
}

/// The body of a successful `requesttoken`.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    /// Withings user id; a string or an integer in the wild.
    #[serde(deserialize_with = "de::opt_string")]
    pub userid: Option<String>,
    pub access_token: Secret,
    pub refresh_token: Secret,
    #[serde(deserialize_with = "de::i64_lenient")]
    pub expires_in: i64,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub token_type: Option<String>,
}

/// A getgoals body: `goals` is an object, or `[]` when no goal is set.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Goals {
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub steps: Option<i64>,
    /// Seconds.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub sleep: Option<i64>,
    #[serde(default)]
    pub weight: Option<GoalWeight>,
}

/// A weight goal, `value * 10^unit` kg.
#[derive(Debug, Clone, Deserialize)]
pub struct GoalWeight {
    #[serde(deserialize_with = "de::i64_lenient")]
    pub value: i64,
    #[serde(deserialize_with = "de::i64_lenient")]
    pub unit: i64,
}

/// Decodes a getgoals body (`{"goals": {...}}` or `{"goals": []}`).
pub fn goals_of(body: &Value) -> Result<Goals, String> {
    match body.get("goals") {
        None | Some(Value::Null) => Ok(Goals::default()),
        Some(Value::Array(a)) if a.is_empty() => Ok(Goals::default()),
        Some(g) => Goals::deserialize(g).map_err(|e| e.to_string()),
    }
}
