//! getmeas (measure groups) -> weight, fat, blood_pressure, heartrate, blood_oxygen,
//! vo2_max, body.
//!
//! [`RESOURCES`] is the whole mapping: for each resource, how one group becomes its row. A
//! group is first validated and reduced to its whole-body values by meastype ([`Group`]);
//! every measure is mapped, quarantined (out of range, unknown meastype, conflicting repeat,
//! one half of a blood pressure) or unmapped (a known meastype no table holds, or a body
//! segment's value).

use std::collections::BTreeMap;

use serde_json::Value;

use super::codes::{self, SourceType};
use super::out::{Out, dedupe, repeat_counts};
use super::table::{Table, date, ts, ts_opt};
use super::zones::Stamper;
use super::{Context, Harmonized, QuarantineReason, Source, Zone, scaled, source_of, summary_id};
use crate::schema::Resource;
use crate::withings::MeasureList;
use crate::withings::types::MeasureGroup;

/// How a group becomes a row of one resource.
#[derive(Debug, Clone, Copy)]
enum Rows {
    /// The value of `meastype` as a `timestamp`/`value`/`unit` row.
    Spot { meastype: i64, unit: &'static str },
    /// The value of `meastype` as a `start`/`end`/`value`/`unit` row with `start` = `end` =
    /// the measure time.
    Instant { meastype: i64, unit: &'static str },
    /// Systolic (10) and diastolic (9) with the group's pulse (11): [`blood_pressure`].
    BloodPressure,
    /// Body composition and height: [`body`].
    Body,
}

/// The resources getmeas feeds, in the order each group's rows are written. A group without
/// a resource's meastypes writes no row of it.
const RESOURCES: [(Resource, Rows); 7] = [
    (Resource::Weight, Rows::Spot { meastype: 1, unit: "kg" }),
    // Fat ratio.
    (Resource::Fat, Rows::Spot { meastype: 6, unit: "%" }),
    (Resource::BloodPressure, Rows::BloodPressure),
    // Spot pulses, from scales and blood-pressure cuffs.
    (Resource::Heartrate, Rows::Spot { meastype: 11, unit: "bpm" }),
    // Spot SpO2.
    (Resource::BloodOxygen, Rows::Spot { meastype: 54, unit: "%" }),
    // Vital models VO2 max as an interval; Withings measures a point in time.
    (Resource::Vo2Max, Rows::Instant { meastype: 123, unit: "mL/kg/min" }),
    (Resource::Body, Rows::Body),
];

/// Meastypes some table holds (4, height, feeds body's BMI).
const MAPPED_MEASTYPES: [i64; 18] = [1, 4, 5, 6, 8, 9, 10, 11, 54, 76, 77, 88, 123, 168, 169, 170, 226, 227];
/// Height (metres): feeds body's BMI and height column.
const HEIGHT: i64 = 4;
/// Meastypes that make a group a body-composition row.
const BODY_MEASTYPES: [i64; 12] = [1, 5, 6, 8, 76, 77, 88, 168, 169, 170, 226, 227];
/// Position 7 is "whole body" (Body Scan); other positions are body segments.
const WHOLE_BODY: i64 = 7;

/// A decoded, validated getmeas group, as the per-resource mappings see it.
struct Group<'a> {
    grpid: i64,
    date: i64,
    created: Option<i64>,
    modified: Option<i64>,
    attrib: Option<i64>,
    source: Source,
    raw: &'a Value,
    /// Whole-body values by meastype.
    values: BTreeMap<i64, f64>,
}

impl Group<'_> {
    fn get(&self, meastype: i64) -> Option<f64> {
        self.values.get(&meastype).copied()
    }

    fn has_any(&self, meastypes: &[i64]) -> bool {
        meastypes.iter().any(|t| self.values.contains_key(t))
    }

    /// Stages the getmeas bookkeeping columns the table has (grpid, attrib, ambiguous,
    /// created_at, updated_at) and the provenance columns.
    fn stage_group_columns(&self, t: &mut Table, zone: &Zone) {
        t.set("grpid", self.grpid);
        t.set("attrib", self.attrib);
        t.set("ambiguous", self.attrib == Some(1));
        if t.has("created_at") {
            t.set("created_at", ts_opt(self.created));
            t.set("updated_at", ts_opt(self.modified));
        }
        t.provenance(&self.source, zone, self.date);
    }
}

/// The raw group with only its `i`-th measure: the quarantine record of one measure.
fn one_measure(raw: &Value, i: usize) -> Value {
    let mut v = raw.clone();
    if let Some(m) = raw.get("measures").and_then(|m| m.get(i)) {
        v["measures"] = Value::Array(vec![m.clone()]);
    }
    v
}

fn measure_count(raw: &Value) -> usize {
    raw.get("measures").and_then(Value::as_array).map_or(1, |a| a.len().max(1))
}

/// getmeas -> weight, fat, blood_pressure, heartrate, blood_oxygen, vo2_max, body.
///
/// `known_heights` are (epoch, metres) heights from earlier calls (an incremental call rarely
/// carries the height entered at sign-up); heights in `list` are added to them.
pub fn getmeas(ctx: &Context, list: &MeasureList, known_heights: &[(i64, f64)]) -> Harmonized {
    let mut out = Out::new(ctx, crate::withings::Endpoint::Getmeas, &RESOURCES.map(|(r, _)| r));
    let mut zones = Stamper::new(&ctx.zones, Zone::new(list.timezone.as_deref().or(ctx.time_zone.as_deref())));

    let mut decoded: Vec<(&MeasureGroup, &Value)> = Vec::new();
    for item in &list.groups {
        let n = measure_count(&item.raw);
        out.stats.samples_in += n;
        match &item.value {
            Err(e) => out.quarantine(
                None,
                QuarantineReason::Malformed,
                format!("measure group does not decode: {e}"),
                item.raw.clone(),
                n,
            ),
            Ok(g) if g.category == Some(2) => {
                let detail = format!("group {} is a user objective (category 2), not a measure", g.grpid);
                out.quarantine(None, QuarantineReason::Objective, detail, item.raw.clone(), n);
            }
            Ok(g) => decoded.push((g, &item.raw)),
        }
    }
    let keys = decoded.iter().map(|(g, raw)| (g.grpid, g.modified, *raw)).collect();
    let kept = dedupe(&mut out, keys, "measure group", |i| decoded[i].0.measures.len().max(1));

    let mut groups = Vec::with_capacity(kept.len());
    for (i, copies) in kept {
        let (g, raw) = decoded[i];
        let before = out.stats.clone();
        if g.measures.is_empty() {
            out.unmapped("getmeas group without measures".into(), 1);
        }
        let mut values = BTreeMap::new();
        for (j, m) in g.measures.iter().enumerate() {
            let Some(v) = scaled(m.value, m.unit) else {
                let detail =
                    format!("meastype {} of group {}: value {} x 10^{} is out of range", m.kind, g.grpid, m.value, m.unit);
                out.quarantine(None, QuarantineReason::Malformed, detail, one_measure(raw, j), 1);
                continue;
            };
            let Some(mt) = codes::meas_type(m.kind) else {
                let detail = format!("unknown meastype {} in group {}", m.kind, g.grpid);
                out.quarantine(None, QuarantineReason::UnknownMeastype, detail, one_measure(raw, j), 1);
                continue;
            };
            if !MAPPED_MEASTYPES.contains(&m.kind) {
                out.unmapped(format!("getmeas meastype {} ({})", m.kind, mt.name), 1);
                continue;
            }
            if BODY_MEASTYPES.contains(&m.kind) && m.position.is_some_and(|p| p != WHOLE_BODY) {
                out.unmapped(
                    format!("getmeas meastype {} ({}) at position {}", m.kind, mt.name, m.position.unwrap_or_default()),
                    1,
                );
                continue;
            }
            match values.entry(m.kind) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(v);
                    out.stats.mapped += 1;
                }
                std::collections::btree_map::Entry::Occupied(e) if *e.get() == v => out.stats.mapped += 1,
                std::collections::btree_map::Entry::Occupied(e) => {
                    let detail =
                        format!("meastype {} twice in group {} ({} and {v}); the first is kept", m.kind, g.grpid, e.get());
                    out.quarantine(None, QuarantineReason::ConflictingDuplicate, detail, one_measure(raw, j), 1);
                }
            }
        }
        for (have, missing) in [(10, 9), (9, 10)] {
            if let Some(v) = values.get(&have).copied().filter(|_| !values.contains_key(&missing)) {
                values.remove(&have);
                // Every measure that counted as mapped for this code (the first and its
                // identical repeats) moves to the quarantine.
                let n = g.measures.iter().filter(|m| m.kind == have && scaled(m.value, m.unit) == Some(v)).count();
                out.stats.mapped -= n;
                let j = g.measures.iter().position(|m| m.kind == have).unwrap_or(0);
                let detail = format!("group {} has meastype {have} but no {missing}: a blood pressure needs both", g.grpid);
                out.quarantine(Some(Resource::BloodPressure), QuarantineReason::IncompleteGroup, detail, one_measure(raw, j), n);
            }
        }
        let fallback = if values.contains_key(&9) {
            SourceType::Cuff
        } else if BODY_MEASTYPES.iter().any(|t| values.contains_key(t)) {
            SourceType::Scale
        } else {
            SourceType::Unknown
        };
        let device = g.deviceid.as_deref().or(g.hash_deviceid.as_deref());
        let source = source_of(g.modelid, g.model.as_deref(), g.attrib, device, fallback);
        groups.push(Group {
            grpid: g.grpid,
            date: g.date,
            created: g.created,
            modified: g.modified,
            attrib: g.attrib,
            source,
            raw,
            values,
        });
        repeat_counts(&mut out, &before, copies);
    }

    let mut heights: Vec<(i64, f64)> = known_heights.to_vec();
    heights.extend(groups.iter().filter_map(|g| g.get(HEIGHT).map(|h| (g.date, h))));
    heights.sort_by_key(|h| h.0);
    for g in &groups {
        // The zone of the day the group falls in (the current zone only where no record says).
        let zone = zones.at(g.date).clone();
        let zone = &zone;
        let height = heights.iter().take_while(|h| h.0 <= g.date).last().map(|h| h.1);
        for (resource, rows) in RESOURCES {
            match rows {
                Rows::Spot { meastype, unit } => spot(&mut out, resource, g, zone, meastype, unit),
                Rows::Instant { meastype, unit } => instant(&mut out, resource, g, zone, meastype, unit),
                Rows::BloodPressure => blood_pressure(&mut out, g, zone),
                Rows::Body => body(&mut out, ctx, g, zone, height),
            }
        }
    }
    out.finish()
}

/// A spot value of a group as a row of a `timestamp`/`value`/`unit` table.
fn spot(out: &mut Out, r: Resource, g: &Group, zone: &Zone, meastype: i64, unit: &'static str) {
    let Some(v) = g.get(meastype) else { return };
    let t = out.table(r);
    t.set("timestamp", ts(g.date));
    t.set("value", v);
    t.set("unit", unit);
    g.stage_group_columns(t, zone);
    out.push(r, g.raw);
}

/// A value of a group as a row of a `start`/`end`/`value`/`unit` table, `start` = `end` =
/// the measure time.
fn instant(out: &mut Out, r: Resource, g: &Group, zone: &Zone, meastype: i64, unit: &'static str) {
    let Some(v) = g.get(meastype) else { return };
    let t = out.table(r);
    t.set("start", ts(g.date));
    t.set("end", ts(g.date));
    t.set("value", v);
    t.set("unit", unit);
    g.stage_group_columns(t, zone);
    out.push(r, g.raw);
}

/// blood_pressure: meastypes 10 (systolic) and 9 (diastolic) of one group, with the group's
/// pulse (11) when the cuff measured one. A group with only one of 9/10 never gets here:
/// [`getmeas`] quarantines it as incomplete.
fn blood_pressure(out: &mut Out, g: &Group, zone: &Zone) {
    let (Some(systolic), Some(diastolic)) = (g.get(10), g.get(9)) else { return };
    let t = out.table(Resource::BloodPressure);
    t.set("timestamp", ts(g.date));
    t.set("systolic", systolic);
    t.set("diastolic", diastolic);
    t.set("unit", "mmHg");
    t.set("pulse", g.get(11));
    g.stage_group_columns(t, zone);
    out.push(Resource::BloodPressure, g.raw);
}

/// body: one row per group holding any body-composition measure (weight, fat ratio, fat-free
/// and fat mass, muscle, hydration, bone, extra/intracellular water, visceral fat, BMR,
/// metabolic age) or a height. Water, muscle and bone percentages are of that group's weight;
/// BMI uses the group's height, else `height`, the latest height at or before the measure. A
/// height-only group is a row with only `height_meter`, so later runs can find the height.
fn body(out: &mut Out, ctx: &Context, g: &Group, zone: &Zone, height: Option<f64>) {
    if !g.has_any(&BODY_MEASTYPES) && g.get(HEIGHT).is_none() {
        return;
    }
    let weight = g.get(1).filter(|w| *w > 0.0);
    let percent_of_weight = |meastype| Some(g.get(meastype)? / weight? * 100.0);
    let height = g.get(HEIGHT).or(height).filter(|h| *h > 0.0);
    let t = out.table(Resource::Body);
    t.set("id", summary_id(Resource::Body, &ctx.user_id, &g.grpid.to_string()));
    t.set("calendar_date", zone.local_date(g.date).map(date));
    t.set("timestamp", ts(g.date));
    t.set("weight", g.get(1));
    t.set("fat", g.get(6));
    t.set("water_percentage", percent_of_weight(77));
    t.set("muscle_mass_percentage", percent_of_weight(76));
    t.set("bone_mass_percentage", percent_of_weight(88));
    t.set("visceral_fat_index", g.get(170));
    t.set("body_mass_index", weight.zip(height).map(|(w, h)| w / (h * h)));
    t.set("lean_body_mass_kilogram", g.get(5));
    t.set("fat_mass_kilogram", g.get(8));
    t.set("muscle_mass_kilogram", g.get(76));
    t.set("water_kilogram", g.get(77));
    t.set("bone_mass_kilogram", g.get(88));
    t.set("extracellular_water_kilogram", g.get(168));
    t.set("intracellular_water_kilogram", g.get(169));
    t.set("basal_metabolic_rate", g.get(226));
    t.set("metabolic_age", g.get(227));
    t.set("height_meter", height);
    g.stage_group_columns(t, zone);
    out.push(Resource::Body, g.raw);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_meastype_a_row_reads_is_a_known_mapped_meastype() {
        for (resource, rows) in RESOURCES {
            if let Rows::Spot { meastype, .. } | Rows::Instant { meastype, .. } = rows {
                assert!(MAPPED_MEASTYPES.contains(&meastype), "{resource}: meastype {meastype} is not mapped");
                assert!(codes::meas_type(meastype).is_some(), "{resource}: meastype {meastype} is unknown");
            }
        }
        for meastype in MAPPED_MEASTYPES {
            assert!(codes::meas_type(meastype).is_some(), "meastype {meastype} is unknown");
        }
    }
}
