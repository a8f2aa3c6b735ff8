//! sleep getsummary -> sleep: one row per session. Durations in seconds; `type` long_sleep
//! when the session lasts 3 hours or more; `efficiency` a ratio 0-1; `average_hrv` from the
//! RMSSD averages at the start and the end of the night; Withings-only metrics kept as
//! columns.
//!
//! Also [`SleepSession`]: the sessions' bedtime windows, which [`super::sleep_get()`] links its
//! samples to.

use chrono::NaiveDate;
use serde_json::Value;

use super::codes;
use super::ids::sleep_id;
use super::out::{Out, dedupe};
use super::table::{date, ts, ts_opt};
use super::{Context, Harmonized, QuarantineReason, Zone, source_of};
use crate::schema::Resource;
use crate::withings::types::{Item, SleepSummary};

/// Sessions at least this long are `long_sleep` (Vital's rule).
const LONG_SLEEP_SECONDS: i64 = 3 * 3600;

/// sleep getsummary -> sleep (one row per session).
pub fn sleep_getsummary(ctx: &Context, items: &[Item<SleepSummary>]) -> Harmonized {
    let mut out = Out::new(ctx, crate::withings::Endpoint::SleepGetsummary, &[Resource::Sleep]);
    let mut ok = Vec::new();
    for item in items {
        out.stats.samples_in += 1;
        match &item.value {
            Err(e) => out.quarantine(
                None,
                QuarantineReason::Malformed,
                format!("sleep summary does not decode: {e}"),
                item.raw.clone(),
                1,
            ),
            Ok(s) => {
                let window = match (s.startdate, s.enddate) {
                    (Some(a), Some(b)) => b.checked_sub(a).filter(|d| *d >= 0).map(|d| (a, b, d)),
                    _ => None,
                };
                let checked = window
                    .ok_or_else(|| format!("sleep summary {} has no valid startdate/enddate", s.id))
                    .and_then(|w| efficiency(s.data.sleep_efficiency).map(|e| (w, e)));
                match checked {
                    Ok(((start, end, duration), efficiency)) => {
                        ok.push((s, Session { start, end, duration, efficiency }, &item.raw))
                    }
                    Err(detail) => {
                        out.quarantine(Some(Resource::Sleep), QuarantineReason::Malformed, detail, item.raw.clone(), 1)
                    }
                }
            }
        }
    }
    let keys = ok.iter().map(|(s, _, raw)| (s.id, s.modified, *raw)).collect();
    for (i, copies) in dedupe(&mut out, keys, "sleep summary id", |_| 1) {
        let (s, session, raw) = &ok[i];
        out.stats.mapped += 1 + copies;
        push(&mut out, ctx, s, session, raw);
    }
    out.finish()
}

/// A sleep session's bedtime window, to link sleep get samples to their sleep row, with the
/// device that recorded it and its time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SleepSession {
    /// Withings getsummary id.
    pub withings_id: i64,
    pub start: i64,
    pub end: i64,
    /// `hash_deviceid` of the session, when Withings gives it.
    pub device: Option<String>,
    pub time_zone: Option<String>,
    /// Withings `created` and `modified` of the session (sleep_cycle's created/updated_at).
    pub created: Option<i64>,
    pub modified: Option<i64>,
}

impl SleepSession {
    /// The sessions of decoded getsummary records (records without a window are skipped).
    pub fn from_summaries(items: &[Item<SleepSummary>]) -> Vec<SleepSession> {
        let mut v: Vec<SleepSession> = items
            .iter()
            .filter_map(|i| i.value.as_ref().ok())
            .filter_map(|s| {
                Some(SleepSession {
                    withings_id: s.id,
                    start: s.startdate?,
                    end: s.enddate?,
                    device: s.hash_deviceid.clone().filter(|d| !d.is_empty()),
                    time_zone: s.timezone.clone(),
                    created: s.created,
                    modified: s.modified,
                })
            })
            .collect();
        v.sort_by_key(|s| (s.start, s.withings_id));
        v
    }
}

/// `sleep_efficiency` as a ratio: Withings sends 0-1; a value in (1, 100] is a percentage.
/// `Err` names a value that is neither.
fn efficiency(raw: Option<f64>) -> Result<Option<f64>, String> {
    match raw {
        None => Ok(None),
        Some(e) if (0.0..=1.0).contains(&e) => Ok(Some(e)),
        Some(e) if e > 1.0 && e <= 100.0 => Ok(Some(e / 100.0)),
        Some(e) => Err(format!("sleep_efficiency {e} is neither a ratio 0-1 nor a percentage")),
    }
}

/// A validated session: `duration` is `end - start` without overflow, `efficiency` a ratio.
struct Session {
    start: i64,
    end: i64,
    duration: i64,
    efficiency: Option<f64>,
}

/// The sleep row of one summary.
fn push(out: &mut Out, ctx: &Context, s: &SleepSummary, v: &Session, raw: &Value) {
    let (start, end) = (v.start, v.end);
    let zone = Zone::new(s.timezone.as_deref().or(ctx.time_zone.as_deref()));
    let d = &s.data;
    let source = source_of(s.model_id, None, None, s.hash_deviceid.as_deref(), codes::sleep_device_class(s.model));
    let day =
        s.date.as_deref().and_then(|x| NaiveDate::parse_from_str(x.trim(), "%Y-%m-%d").ok()).or_else(|| zone.local_date(end));
    let stages = match (d.lightsleepduration, d.deepsleepduration, d.remsleepduration) {
        (Some(l), Some(dp), Some(r)) => l.checked_add(dp).and_then(|x| x.checked_add(r)),
        _ => None,
    };
    let rmssd: Vec<f64> = [d.rmssd_start_avg, d.rmssd_end_avg].into_iter().flatten().collect();
    let round = |v: Option<f64>| v.map(|x| x.round() as i64);

    let t = out.table(Resource::Sleep);
    t.set("id", sleep_id(&ctx.user_id, s.id));
    t.set("withings_sleep_id", s.id);
    t.set("calendar_date", day.map(date));
    t.set("bedtime_start", ts(start));
    t.set("bedtime_stop", ts(end));
    t.set("type", if v.duration >= LONG_SLEEP_SECONDS { "long_sleep" } else { "short_sleep" });
    t.set("duration", v.duration);
    t.set("total", d.total_sleep_time.or(stages).or(d.asleepduration));
    t.set("awake", d.wakeupduration);
    t.set("light", d.lightsleepduration);
    t.set("rem", d.remsleepduration);
    t.set("deep", d.deepsleepduration);
    t.set("score", d.sleep_score);
    t.set("hr_lowest", round(d.hr_min));
    t.set("hr_average", round(d.hr_average));
    t.set("hr_max", round(d.hr_max));
    t.set("latency", d.sleep_latency.or(d.durationtosleep));
    t.set("efficiency", v.efficiency);
    t.set("respiratory_rate", d.rr_average);
    t.set("respiratory_rate_min", d.rr_min);
    t.set("respiratory_rate_max", d.rr_max);
    t.set("average_hrv", (!rmssd.is_empty()).then(|| rmssd.iter().sum::<f64>() / rmssd.len() as f64));
    t.set("rmssd_start_avg", d.rmssd_start_avg);
    t.set("rmssd_end_avg", d.rmssd_end_avg);
    t.set("time_in_bed", d.total_timeinbed);
    t.set("waso", d.waso);
    t.set("wakeup_count", d.wakeupcount);
    t.set("wakeup_latency", d.wakeup_latency.or(d.durationtowakeup));
    t.set("rem_episode_count", d.nb_rem_episodes);
    t.set("out_of_bed_count", d.out_of_bed_count);
    t.set("apnea_hypopnea_index", d.apnea_hypopnea_index);
    t.set("breathing_disturbances_intensity", d.breathing_disturbances_intensity);
    t.set("withings_index", d.withings_index);
    t.set("snoring_duration", d.snoring);
    t.set("snoring_episode_count", d.snoringepisodecount);
    t.set("breathing_quality_assessment", d.breathing_quality_assessment);
    t.set("breathing_sounds", d.breathing_sounds);
    t.set("breathing_sounds_episode_count", d.breathing_sounds_episode_count);
    t.set("movement_score_average", d.mvt_score_avg);
    t.set("movement_active_duration", d.mvt_active_duration);
    t.set("chest_movement_rate_average", d.chest_movement_rate_average);
    t.set("chest_movement_rate_min", d.chest_movement_rate_min);
    t.set("chest_movement_rate_max", d.chest_movement_rate_max);
    t.set("chest_movement_rate_wellness_average", d.chest_movement_rate_wellness_average);
    t.set("chest_movement_rate_wellness_min", d.chest_movement_rate_wellness_min);
    t.set("chest_movement_rate_wellness_max", d.chest_movement_rate_wellness_max);
    t.set("core_body_temperature_avg", d.core_body_temperature_avg);
    t.set("core_body_temperature_min", d.core_body_temperature_min);
    t.set("core_body_temperature_max", d.core_body_temperature_max);
    t.set("core_body_temperature_status", d.core_body_temperature_status.clone());
    t.set("night_events", d.night_events.as_ref().filter(|v| !v.is_null()).map(Value::to_string));
    t.set("completed", s.completed);
    t.set("device_class", s.model);
    t.set("created_at", ts_opt(s.created));
    t.set("updated_at", ts_opt(s.modified));
    t.provenance(&source, &zone, start);
    out.push(Resource::Sleep, raw);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efficiency_is_a_ratio_whatever_scale_withings_sends() {
        assert_eq!(efficiency(Some(0.86)), Ok(Some(0.86)));
        assert_eq!(efficiency(Some(1.0)), Ok(Some(1.0)));
        assert_eq!(efficiency(Some(83.0)), Ok(Some(0.83)));
        assert_eq!(efficiency(None), Ok(None));
        assert!(efficiency(Some(-0.1)).is_err());
        assert!(efficiency(Some(140.0)).unwrap_err().contains("140"));
    }
}
