//! getactivity -> activity: one row per getactivity record (a local day and a source).
//! Minutes from Withings' seconds, floors from `elevation` (Withings counts floors there),
//! totals and the day's heart-rate summary and zones.

use chrono::NaiveDate;
use serde_json::Value;

use super::codes;
use super::out::{Out, dedupe};
use super::table::{date, ts_opt};
use super::{Context, Harmonized, QuarantineReason, Zone, source_of, summary_id};
use crate::schema::Resource;
use crate::withings::types::{Activity, Item};

/// getactivity -> activity (one row per day and source).
pub fn getactivity(ctx: &Context, items: &[Item<Activity>]) -> Harmonized {
    let mut out = Out::new(ctx, crate::withings::Endpoint::Getactivity, &[Resource::Activity]);
    let mut ok = Vec::new();
    for item in items {
        out.stats.samples_in += 1;
        match &item.value {
            Err(e) => {
                out.quarantine(None, QuarantineReason::Malformed, format!("activity does not decode: {e}"), item.raw.clone(), 1)
            }
            Ok(a) => match NaiveDate::parse_from_str(a.date.trim(), "%Y-%m-%d") {
                Ok(d) => ok.push((a, d, &item.raw)),
                Err(_) => {
                    let detail = format!("activity date '{}' is not YYYY-MM-DD", a.date);
                    out.quarantine(Some(Resource::Activity), QuarantineReason::Malformed, detail, item.raw.clone(), 1);
                }
            },
        }
    }
    let keys = ok.iter().map(|(a, d, raw)| (natural_key(a, *d), a.modified, *raw)).collect();
    for (i, copies) in dedupe(&mut out, keys, "activity day and source", |_| 1) {
        let (a, d, raw) = ok[i];
        out.stats.mapped += 1 + copies;
        push(&mut out, ctx, a, d, raw);
    }
    out.finish()
}

/// The natural key of an activity row within a user: day, device, model id, brand and model
/// name (two external sources without a device id or model id differ by name).
fn natural_key(a: &Activity, day: NaiveDate) -> String {
    let device = a.deviceid.as_deref().or(a.hash_deviceid.as_deref()).filter(|s| !s.is_empty()).unwrap_or("-");
    let model = a.modelid.map_or_else(|| "-".to_string(), |m| m.to_string());
    let brand = a.brand.map_or_else(|| "-".to_string(), |b| b.to_string());
    let name = a.model.as_deref().unwrap_or("-");
    format!("{day}/{device}/{model}/{brand}/{name}")
}

/// The activity row of one record.
fn push(out: &mut Out, ctx: &Context, a: &Activity, day: NaiveDate, raw: &Value) {
    let zone = Zone::new(a.timezone.as_deref().or(ctx.time_zone.as_deref()));
    let fallback = codes::activity_source(a.is_tracker, a.brand);
    let device = a.deviceid.as_deref().or(a.hash_deviceid.as_deref());
    let source = source_of(a.modelid, a.model.as_deref(), None, device, fallback);
    let minutes = |s: Option<i64>| s.map(|s| s as f64 / 60.0);
    // The zone offset of the day, taken at local noon (clear of DST changes at night).
    let noon = day.and_hms_opt(12, 0, 0).map(|t| t.and_utc().timestamp()).unwrap_or_default();
    let noon = noon - i64::from(zone.offset_at(noon).unwrap_or(0));

    let t = out.table(Resource::Activity);
    t.set("id", summary_id(Resource::Activity, &ctx.user_id, &natural_key(a, day)));
    t.set("calendar_date", date(day));
    t.set("steps", a.steps);
    t.set("distance", a.distance);
    t.set("floors_climbed", a.elevation.map(|e| e.round() as i64));
    t.set("calories_total", a.totalcalories);
    t.set("calories_active", a.calories);
    t.set("low", minutes(a.soft));
    t.set("medium", minutes(a.moderate));
    t.set("high", minutes(a.intense));
    t.set("hr_average_bpm", a.hr_average.map(|v| v as f64));
    t.set("hr_min_bpm", a.hr_min.map(|v| v as f64));
    t.set("hr_max_bpm", a.hr_max.map(|v| v as f64));
    t.set("hr_zone_light", a.hr_zone_0);
    t.set("hr_zone_moderate", a.hr_zone_1);
    t.set("hr_zone_intense", a.hr_zone_2);
    t.set("hr_zone_maximal", a.hr_zone_3);
    t.set("brand", a.brand);
    t.set("is_tracker", a.is_tracker);
    t.set("updated_at", ts_opt(a.modified));
    t.provenance(&source, &zone, noon);
    out.push(Resource::Activity, raw);
}
