//! sleep: one row per getsummary session. Durations in seconds; `type` long_sleep when the
//! session lasts 3 hours or more; `efficiency` a ratio 0-1; `average_hrv` from the RMSSD
//! averages at the start and the end of the night; Withings-only metrics kept as columns.

use chrono::NaiveDate;
use serde_json::Value;

use super::codes;
use super::table::{date, ts, ts_opt};
use super::{Context, Out, Zone, source_of, summary_id};
use crate::schema::Resource;
use crate::withings::types::SleepSummary;

/// Sessions at least this long are `long_sleep` (Vital's rule).
const LONG_SLEEP_SECONDS: i64 = 3 * 3600;

/// `sleep_efficiency` as a ratio: Withings sends 0-1; a value in (1, 100] is a percentage.
/// `Err` names a value that is neither.
pub(super) fn efficiency(raw: Option<f64>) -> Result<Option<f64>, String> {
    match raw {
        None => Ok(None),
        Some(e) if (0.0..=1.0).contains(&e) => Ok(Some(e)),
        Some(e) if e > 1.0 && e <= 100.0 => Ok(Some(e / 100.0)),
        Some(e) => Err(format!("sleep_efficiency {e} is neither a ratio 0-1 nor a percentage")),
    }
}

/// A validated session: `duration` is `end - start` without overflow, `efficiency` a ratio.
pub(super) struct Session {
    pub start: i64,
    pub end: i64,
    pub duration: i64,
    pub efficiency: Option<f64>,
}

pub(super) fn push(out: &mut Out, ctx: &Context, s: &SleepSummary, v: &Session, raw: &Value) {
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
    t.set("id", summary_id(Resource::Sleep, &ctx.user_id, &s.id.to_string()));
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
