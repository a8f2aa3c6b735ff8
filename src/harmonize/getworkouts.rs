//! getworkouts -> workouts: one row per getworkouts record. Sport slug and name from the full
//! category table; a category newer than the table is kept with slug `other` and its raw code
//! (and counted in `Stats::unknown_codes`).

use chrono::NaiveDate;
use serde_json::Value;

use super::codes::{self, SourceType};
use super::out::{Out, dedupe};
use super::table::{date, ts, ts_opt};
use super::{Context, Harmonized, QuarantineReason, Zone, source_of, summary_id};
use crate::schema::Resource;
use crate::withings::types::{Item, Workout, WorkoutData};

/// getworkouts -> workouts.
pub fn getworkouts(ctx: &Context, items: &[Item<Workout>]) -> Harmonized {
    let mut out = Out::new(ctx, crate::withings::Endpoint::Getworkouts, &[Resource::Workouts]);
    let mut ok = Vec::new();
    for item in items {
        out.stats.samples_in += 1;
        match &item.value {
            Err(e) => {
                out.quarantine(None, QuarantineReason::Malformed, format!("workout does not decode: {e}"), item.raw.clone(), 1)
            }
            Ok(w) => match (w.startdate, w.enddate) {
                (Some(a), Some(b)) if b >= a => ok.push((w, a, b, &item.raw)),
                _ => {
                    let detail = format!("workout {} has no valid startdate/enddate", w.id);
                    out.quarantine(Some(Resource::Workouts), QuarantineReason::Malformed, detail, item.raw.clone(), 1);
                }
            },
        }
    }
    let keys = ok.iter().map(|(w, _, _, raw)| (w.id, w.modified, *raw)).collect();
    for (i, copies) in dedupe(&mut out, keys, "workout id", |_| 1) {
        let (w, a, b, raw) = ok[i];
        out.stats.mapped += 1 + copies;
        push(&mut out, ctx, w, a, b, raw);
    }
    out.finish()
}

/// The workouts row of one record.
fn push(out: &mut Out, ctx: &Context, w: &Workout, start: i64, end: i64, raw: &Value) {
    let zone = Zone::new(w.timezone.as_deref().or(ctx.time_zone.as_deref()));
    // getworkouts `model` is a model id.
    let model_id = w.model.as_deref().and_then(|m| m.trim().parse::<i64>().ok());
    let source = source_of(model_id, None, w.attrib, w.deviceid.as_deref(), SourceType::Unknown);
    let (slug, name) = match w.category.map(|c| (c, codes::workout_category(c))) {
        Some((_, Some((slug, name)))) => (slug.to_string(), name.to_string()),
        Some((c, None)) => {
            *out.stats.unknown_codes.entry(format!("getworkouts category {c}")).or_default() += 1;
            ("other".to_string(), format!("Other (code {c})"))
        }
        None => ("other".to_string(), "Other".to_string()),
    };
    let day =
        w.date.as_deref().and_then(|x| NaiveDate::parse_from_str(x.trim(), "%Y-%m-%d").ok()).or_else(|| zone.local_date(start));
    let empty = WorkoutData::default();
    let d = w.data.as_ref().unwrap_or(&empty);

    let t = out.table(Resource::Workouts);
    t.set("id", summary_id(Resource::Workouts, &ctx.user_id, &w.id.to_string()));
    t.set("provider_id", w.id.to_string());
    t.set("calendar_date", day.map(date));
    t.set("time_start", ts(start));
    t.set("time_end", ts(end));
    t.set("sport_slug", slug);
    t.set("sport_name", name);
    t.set("sport_id", w.category.unwrap_or(0));
    t.set("withings_category", w.category);
    t.set("average_hr", d.hr_average);
    t.set("max_hr", d.hr_max);
    t.set("min_hr", d.hr_min);
    t.set("hr_zone_light", d.hr_zone_0);
    t.set("hr_zone_moderate", d.hr_zone_1);
    t.set("hr_zone_intense", d.hr_zone_2);
    t.set("hr_zone_maximal", d.hr_zone_3);
    t.set("distance", d.distance);
    t.set("steps", d.steps);
    t.set("elevation", d.elevation);
    t.set("calories", d.calories);
    t.set("intensity", d.intensity);
    t.set("manual_intensity", d.manual_intensity);
    t.set("manual_distance", d.manual_distance);
    t.set("manual_calories", d.manual_calories);
    t.set("pause_duration", d.pause_duration);
    t.set("algo_pause_duration", d.algo_pause_duration);
    t.set("spo2_average", d.spo2_average);
    t.set("pool_laps", d.pool_laps);
    t.set("pool_length", d.pool_length);
    t.set("strokes", d.strokes);
    t.set("core_body_temperature_avg", d.core_body_temperature_avg);
    t.set("core_body_temperature_min", d.core_body_temperature_min);
    t.set("core_body_temperature_max", d.core_body_temperature_max);
    t.set("core_body_temperature_status", d.core_body_temperature_status.clone());
    t.set("attrib", w.attrib);
    t.set("updated_at", ts_opt(w.modified));
    t.provenance(&source, &zone, start);
    out.push(Resource::Workouts, raw);
}
