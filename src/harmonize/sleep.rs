//! sleep: one row per getsummary session. Durations in seconds; `type` long_sleep when the
//! session lasts 3 hours or more; `efficiency` a ratio 0-1; `average_hrv` from the RMSSD
//! averages at the start and the end of the night; Withings-only metrics kept as columns.

use chrono::NaiveDate;
use serde_json::Value;

use super::codes::SourceType;
use super::table::{date, ts, ts_opt};
use super::{Context, Out, Zone, source_of, summary_id};
use crate::schema::Resource;
use crate::withings::types::SleepSummary;

/// Sessions at least this long are `long_sleep` (Vital's rule).
const LONG_SLEEP_SECONDS: i64 = 3 * 3600;

pub(super) fn push(out: &mut Out, ctx: &Context, s: &SleepSummary, start: i64, end: i64, raw: &Value) {
    let zone = Zone::new(s.timezone.as_deref().or(ctx.time_zone.as_deref()));
    let d = &s.data;
    let fallback = match s.model {
        Some(16) => SourceType::Watch,
        Some(32) => SourceType::SleepMat,
        _ => SourceType::Unknown,
    };
    let source = source_of(s.model_id, None, None, s.hash_deviceid.as_deref(), fallback);
    let day =
        s.date.as_deref().and_then(|x| NaiveDate::parse_from_str(x.trim(), "%Y-%m-%d").ok()).or_else(|| zone.local_date(end));
    let stages = match (d.lightsleepduration, d.deepsleepduration, d.remsleepduration) {
        (Some(l), Some(dp), Some(r)) => Some(l + dp + r),
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
    t.set("type", if end - start >= LONG_SLEEP_SECONDS { "long_sleep" } else { "short_sleep" });
    t.set("duration", end - start);
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
    t.set("efficiency", d.sleep_efficiency.map(|e| if e > 1.0 { e / 100.0 } else { e }));
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
    t.set("night_events", d.night_events.as_ref().filter(|v| !v.is_null()).map(Value::to_string));
    t.set("completed", s.completed);
    t.set("device_class", s.model);
    t.set("created_at", ts_opt(s.created));
    t.set("updated_at", ts_opt(s.modified));
    t.provenance(&source, &zone, start);
    out.push(Resource::Sleep, raw);
}
