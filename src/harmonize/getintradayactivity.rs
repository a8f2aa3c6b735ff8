//! getintradayactivity -> steps, distance, calories_active, heartrate, blood_oxygen, hrv,
//! respiratory_rate.
//!
//! [`FIELDS`] is the whole mapping: each sample field a table holds, with its resource and
//! unit. A sample with none of them is unmapped; its other fields (`elevation`, `sdnn1`, ...)
//! are counted in `Stats::unmapped_fields`. Samples carry no zone: each takes the zone of its
//! local day.

use std::collections::BTreeMap;

use serde_json::Value;

use super::codes::SourceType;
use super::out::{Out, point};
use super::table::ts;
use super::zones::Stamper;
use super::{Context, Harmonized, QuarantineReason, Source, Zone, source_of};
use crate::schema::Resource;
use crate::withings::types::{IntradaySample, Item};

/// The row a sample field makes.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// A `start`/`end`/`value`/`unit` row over the sample's interval [start, start + duration).
    Interval,
    /// A `timestamp`/`value`/`unit` row at the sample's start.
    Point,
}

/// (sample field, resource, row shape, unit): every field a table holds, in the order each
/// sample's rows are written; [`value`] reads each from a sample.
const FIELDS: [(&str, Resource, Shape, &str); 7] = [
    ("steps", Resource::Steps, Shape::Interval, "count"),
    ("distance", Resource::Distance, Shape::Interval, "m"),
    // Active kcal.
    ("calories", Resource::CaloriesActive, Shape::Interval, "kcal"),
    ("heart_rate", Resource::Heartrate, Shape::Point, "bpm"),
    // The watch's automatic SpO2 readings.
    ("spo2_auto", Resource::BloodOxygen, Shape::Point, "%"),
    // RMSSD in milliseconds; Vital's unit string is "rmssd".
    ("rmssd", Resource::Hrv, Shape::Point, "rmssd"),
    // Breaths per minute; Vital's unit string is "bpm".
    ("rr", Resource::RespiratoryRate, Shape::Point, "bpm"),
];

/// The value of the [`FIELDS`] entry `i` in a sample, when the sample has one (a match the
/// compiler inlines into the row loop, where a table of function pointers would not be).
#[inline(always)]
fn value(i: usize, s: &IntradaySample) -> Option<f64> {
    match i {
        0 => s.steps.map(|v| v as f64),
        1 => s.distance,
        2 => s.calories,
        3 => s.heart_rate.map(|v| v as f64),
        4 => s.spo2_auto,
        5 => s.rmssd,
        6 => s.rr,
        _ => None,
    }
}

/// Keys of an intraday sample that describe the device, not a measurement.
const SAMPLE_META: [&str; 4] = ["deviceid", "model", "model_id", "modelid"];

/// getintradayactivity -> steps, distance, calories_active, heartrate, blood_oxygen, hrv,
/// respiratory_rate. Samples carry no zone: each takes the zone of its local day
/// (`ctx.zones`; the user's zone when the timeline is empty).
pub fn getintradayactivity(ctx: &Context, series: &BTreeMap<i64, Item<IntradaySample>>) -> Harmonized {
    let mut out = Out::new(ctx, crate::withings::Endpoint::Getintradayactivity, &FIELDS.map(|f| f.1));
    let mut zones = Stamper::new(&ctx.zones, Zone::new(ctx.time_zone.as_deref()));
    for (t, item) in series {
        out.stats.samples_in += 1;
        let s = match &item.value {
            Ok(s) => s,
            Err(e) => {
                let raw = serde_json::json!({ "timestamp": t, "sample": item.raw });
                out.quarantine(None, QuarantineReason::Malformed, format!("intraday sample at {t} does not decode: {e}"), raw, 1);
                continue;
            }
        };
        if !(0..FIELDS.len()).any(|i| value(i, s).is_some()) {
            let fields: Vec<&str> = item
                .raw
                .as_object()
                .map(|o| o.keys().map(String::as_str).filter(|k| !SAMPLE_META.contains(k)).collect())
                .unwrap_or_default();
            out.unmapped(format!("getintradayactivity sample with only [{}]", fields.join(", ")), 1);
            continue;
        }
        out.stats.mapped += 1;
        for (field, present) in [
            ("elevation", s.elevation.is_some()),
            ("stroke", s.stroke.is_some()),
            ("pool_lap", s.pool_lap.is_some()),
            ("sdnn1", s.sdnn1.is_some()),
            ("hrv_quality", s.hrv_quality.is_some()),
            ("core_body_temperature", s.core_body_temperature.is_some()),
            ("chest_movement_rate", s.chest_movement_rate.is_some()),
        ] {
            if present {
                *out.stats.unmapped_fields.entry(format!("getintradayactivity {field}")).or_default() += 1;
            }
        }
        let source = source_of(s.model_id, s.model.as_deref(), None, s.deviceid.as_deref(), SourceType::Watch);
        let row = IntradayRow { t: *t, s, source: &source, zone: zones.at(*t), raw: &item.raw };
        for (i, (_, resource, shape, unit)) in FIELDS.into_iter().enumerate() {
            let Some(v) = value(i, s) else { continue };
            match shape {
                Shape::Interval => interval(&mut out, resource, &row, v, unit),
                Shape::Point => point(&mut out, resource, row.source, row.zone, row.t, v, unit, row.raw),
            }
        }
    }
    out.finish()
}

/// One intraday sample with its context.
struct IntradayRow<'a> {
    t: i64,
    s: &'a IntradaySample,
    source: &'a Source,
    zone: &'a Zone,
    raw: &'a Value,
}

impl IntradayRow<'_> {
    /// End of the sample's interval: start + duration (60 s, the watch's period, when absent).
    fn end(&self) -> i64 {
        self.t.saturating_add(self.s.duration.filter(|d| *d > 0).unwrap_or(60))
    }
}

/// An intraday sample's value as a row of a `start`/`end`/`value`/`unit` table.
fn interval(out: &mut Out, r: Resource, row: &IntradayRow, value: f64, unit: &'static str) {
    let t = out.table(r);
    t.set("start", ts(row.t));
    t.set("end", ts(row.end()));
    t.set("value", value);
    t.set("unit", unit);
    t.provenance(row.source, row.zone, row.t);
    out.push(r, row.raw);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_field_reads_the_sample_key_it_names() {
        for (i, (field, resource, _, _)) in FIELDS.into_iter().enumerate() {
            let sample: IntradaySample = serde_json::from_value(serde_json::json!({ field: 7 })).unwrap();
            assert_eq!(value(i, &sample), Some(7.0), "{field} -> {resource}");
            let others = (0..FIELDS.len()).filter(|j| *j != i).filter(|j| value(*j, &sample).is_some()).count();
            assert_eq!(others, 0, "{field} is read by another field's entry");
        }
    }
}
