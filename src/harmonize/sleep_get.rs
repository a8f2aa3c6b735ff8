//! sleep get -> hypnogram, sleep_cycle, sleep_stream, heartrate, hrv, respiratory_rate.
//!
//! Each segment (a sleep state over an interval) is a hypnogram row, a `stage` row of
//! sleep_stream and part of its session's sleep_cycle row; each point of its series
//! ([`SLEEP_SERIES`]) is a sleep_stream row, and the hr, rr and rmssd points a row of
//! heartrate, respiratory_rate and hrv too. Rows are linked by `sleep_id` to the sleep row
//! (sleep getsummary) whose bedtime window contains them ([`SleepSession`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::codes;
use super::ids::SleepIds;
use super::out::{Out, point};
use super::table::{date, ts};
use super::zones::Stamper;
use super::{Context, Harmonized, QuarantineReason, SleepSession, Source, Zone, source_of, summary_id};
use crate::schema::Resource;
use crate::withings::SleepGet;
use crate::withings::types::SleepSegment;

/// A sleep get series harmonized.
struct Series {
    /// The series' key in a segment, and sleep_stream's `metric`.
    metric: &'static str,
    /// sleep_stream's `unit`.
    unit: &'static str,
    /// The resource that also holds every point, with its unit there.
    also: Option<(Resource, &'static str)>,
    /// The series' points in a segment.
    points: fn(&SleepSegment) -> Option<&BTreeMap<i64, f64>>,
}

/// The sleep get series harmonized, in the order each segment's points are written.
const SLEEP_SERIES: [Series; 10] = [
    // Heart rate; a watch's intraday and sleep samples at one instant stay two heartrate rows
    // (rows keep their endpoint).
    Series { metric: "hr", unit: "bpm", also: Some((Resource::Heartrate, "bpm")), points: |s| s.hr.as_ref() },
    // Vital's respiratory_rate unit string is "bpm".
    Series { metric: "rr", unit: "breaths/min", also: Some((Resource::RespiratoryRate, "bpm")), points: |s| s.rr.as_ref() },
    // RMSSD; Vital's hrv unit string is "rmssd".
    Series { metric: "rmssd", unit: "ms", also: Some((Resource::Hrv, "rmssd")), points: |s| s.rmssd.as_ref() },
    Series { metric: "sdnn_1", unit: "ms", also: None, points: |s| s.sdnn_1.as_ref() },
    Series { metric: "snoring", unit: "s", also: None, points: |s| s.snoring.as_ref() },
    Series { metric: "hrv_quality", unit: "score", also: None, points: |s| s.hrv_quality.as_ref() },
    Series { metric: "mvt_score", unit: "score", also: None, points: |s| s.mvt_score.as_ref() },
    Series { metric: "chest_movement_rate", unit: "events/min", also: None, points: |s| s.chest_movement_rate.as_ref() },
    Series { metric: "withings_index", unit: "events/h", also: None, points: |s| s.withings_index.as_ref() },
    Series { metric: "breathing_sounds", unit: "s", also: None, points: |s| s.breathing_sounds.as_ref() },
];

/// A raw segment without its series: the quarantine record of its stage alone (its points
/// are harmonized on their own).
fn without_series(raw: &Value) -> Value {
    let mut raw = raw.clone();
    if let Some(o) = raw.as_object_mut() {
        o.retain(|k, _| !SLEEP_SERIES.iter().any(|s| s.metric == k));
    }
    raw
}

/// Samples a raw segment carries: the segment (its stage) and every point of its series.
fn segment_samples(raw: &Value) -> usize {
    1 + SLEEP_SERIES.iter().filter_map(|s| raw.get(s.metric).and_then(Value::as_object)).map(|o| o.len()).sum::<usize>()
}

/// One point of a sleep series, with its segment's context.
struct SleepPoint<'a> {
    metric: &'static str,
    unit: &'static str,
    t: i64,
    value: f64,
    source: &'a Source,
    session: Option<&'a SleepSession>,
}

/// One sleep get segment, with its context.
struct SleepStage<'a> {
    seg: &'a SleepSegment,
    state: i64,
    stage: i64,
    source: &'a Source,
    session: Option<&'a SleepSession>,
    raw: &'a Value,
}

/// The session of `device` whose window contains `t` (a session or a sample without a device
/// matches any device). Sessions are sorted by start: only those starting by `t` are looked at.
fn session_at<'a>(sessions: &'a [SleepSession], device: Option<&str>, t: i64) -> Option<&'a SleepSession> {
    let started = sessions.partition_point(|s| s.start <= t);
    let same_device = |s: &&SleepSession| match (s.device.as_deref(), device) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    sessions[..started].iter().rev().filter(same_device).find(|s| t <= s.end)
}

/// sleep get -> hypnogram, sleep_cycle, sleep_stream, heartrate, hrv, respiratory_rate.
/// `sessions` (from getsummary) link each sample to the sleep row whose bedtime window
/// contains it.
pub fn sleep_get(ctx: &Context, answer: &SleepGet, sessions: &[SleepSession]) -> Harmonized {
    use Resource::*;
    let mut out = Out::new(
        ctx,
        crate::withings::Endpoint::SleepGet,
        &[Hypnogram, SleepCycle, SleepStream, Heartrate, Hrv, RespiratoryRate],
    );
    let mut ids = SleepIds::new(&ctx.user_id);
    // The staged segments of each session, for its sleep_cycle row.
    let mut cycles: BTreeMap<i64, Cycle> = BTreeMap::new();
    let mut zones = Stamper::new(&ctx.zones, Zone::new(ctx.time_zone.as_deref()));
    let fallback = codes::sleep_device_class(answer.model);
    // (metric, device, t) -> value: a point repeated by two segments is one sample.
    let mut seen: HashMap<(&'static str, Option<Arc<str>>, i64), f64> = HashMap::new();
    let mut segments_seen: HashSet<(Option<Arc<str>>, i64)> = HashSet::new();
    for item in &answer.segments {
        let n = segment_samples(&item.raw);
        out.stats.samples_in += n;
        let seg = match &item.value {
            Ok(seg) if seg.enddate >= seg.startdate => seg,
            Ok(seg) => {
                let detail = format!("sleep segment ends ({}) before it starts ({})", seg.enddate, seg.startdate);
                out.quarantine(Some(Hypnogram), QuarantineReason::Malformed, detail, item.raw.clone(), n);
                continue;
            }
            Err(e) => {
                out.quarantine(
                    None,
                    QuarantineReason::Malformed,
                    format!("sleep segment does not decode: {e}"),
                    item.raw.clone(),
                    n,
                );
                continue;
            }
        };
        let source = source_of(seg.model_id, seg.model.as_deref(), None, seg.hash_deviceid.as_deref(), fallback);
        let device = source.device_id.as_deref();
        let session = session_at(sessions, device, seg.startdate);
        // The zone of the night the segment belongs to (a traveller's nights differ); outside
        // a session, the zone of the segment's local day.
        let zone = match session.and_then(|s| s.time_zone.as_deref()) {
            Some(z) => Zone::new(Some(z)),
            None => zones.at(seg.startdate).clone(),
        };
        let known = seg.state.and_then(|s| codes::SLEEP_STATES.iter().find(|(c, _, _)| *c == s));
        // The first segment with a known state takes its (device, start) slot.
        let first = known.is_some() && segments_seen.insert((source.device_id.clone(), seg.startdate));
        match known {
            Some(_) if !first => {
                let detail = format!("two segments start at {} on one device; the first is kept", seg.startdate);
                let raw = without_series(&item.raw);
                out.quarantine(Some(Hypnogram), QuarantineReason::ConflictingDuplicate, detail, raw, 1);
            }
            Some((state, _, stage)) => {
                out.stats.mapped += 1;
                let st = SleepStage { seg, state: *state, stage: *stage, source: &source, session, raw: &item.raw };
                if let Some(s) = session {
                    collect_cycle(&mut cycles, s, &st, &zone);
                }
                hypnogram(&mut out, &mut ids, &st, &zone);
                stream_stage(&mut out, &mut ids, &st, &zone);
            }
            None => {
                let detail = match seg.state {
                    Some(s) => format!("unknown sleep state {s} in the segment starting at {}", seg.startdate),
                    None => format!("the segment starting at {} has no state", seg.startdate),
                };
                let raw = without_series(&item.raw);
                out.quarantine(Some(Hypnogram), QuarantineReason::UnknownSleepState, detail, raw, 1);
            }
        }
        for Series { metric, unit, also, points } in SLEEP_SERIES {
            let Some(points) = points(seg) else { continue };
            for (&t, &value) in points {
                match seen.entry((metric, source.device_id.clone(), t)) {
                    std::collections::hash_map::Entry::Occupied(e) if *e.get() == value => {
                        out.stats.mapped += 1;
                        continue;
                    }
                    std::collections::hash_map::Entry::Occupied(e) => {
                        let detail = format!(
                            "{metric} at {t} appears in two segments with values {} and {value}; the first is kept",
                            e.get()
                        );
                        let raw = serde_json::json!({ "startdate": seg.startdate, "enddate": seg.enddate, metric: { t.to_string(): value } });
                        out.quarantine(Some(SleepStream), QuarantineReason::ConflictingDuplicate, detail, raw, 1);
                        continue;
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(value);
                    }
                }
                out.stats.mapped += 1;
                let p = SleepPoint { metric, unit, t, value, source: &source, session: session_at(sessions, device, t) };
                stream_point(&mut out, &mut ids, &p, &zone, &item.raw);
                if let Some((resource, unit)) = also {
                    point(&mut out, resource, p.source, &zone, p.t, p.value, unit, &item.raw);
                }
            }
        }
    }
    for cycle in cycles.into_values() {
        push_cycle(&mut out, ctx, &mut ids, cycle);
    }
    out.finish()
}

// ---------------------------------------------------------------------------------------------
// hypnogram

/// hypnogram: one row per segment, the Withings state mapped to Vital's stage through
/// `codes::SLEEP_STATES` (the raw state is kept). Segments with an unknown state never get
/// here: [`sleep_get`] quarantines them.
fn hypnogram(out: &mut Out, ids: &mut SleepIds, st: &SleepStage, zone: &Zone) {
    let sleep_id = ids.of(st.session);
    let t = out.table(Resource::Hypnogram);
    t.set("start", ts(st.seg.startdate));
    t.set("end", ts(st.seg.enddate));
    t.set("value", st.stage);
    t.set("unit", "stage");
    t.set("withings_state", st.state);
    t.set("sleep_id", sleep_id);
    t.set("withings_sleep_id", st.session.map(|s| s.withings_id));
    t.provenance(st.source, zone, st.seg.startdate);
    out.push(Resource::Hypnogram, st.raw);
}

// ---------------------------------------------------------------------------------------------
// sleep_stream

// sleep_stream: every per-sleep sample of sleep get in long form, one row per (metric,
// timestamp): the series (hr, rr, rmssd, sdnn_1, snoring, ...) and one `stage` row per
// segment. Each row is linked by `sleep_id` to the sleep row whose bedtime window contains it.

/// Stages the sleep_stream columns that link a row to its sleep row.
fn stream_link(out: &mut Out, ids: &mut SleepIds, session: Option<&SleepSession>) {
    let sleep_id = ids.of(session);
    let t = out.table(Resource::SleepStream);
    t.set("sleep_id", sleep_id);
    t.set("withings_sleep_id", session.map(|s| s.withings_id));
}

/// The `stage` row of a segment.
fn stream_stage(out: &mut Out, ids: &mut SleepIds, st: &SleepStage, zone: &Zone) {
    stream_link(out, ids, st.session);
    let t = out.table(Resource::SleepStream);
    t.set("metric", "stage");
    t.set("timestamp", ts(st.seg.startdate));
    t.set("end", ts(st.seg.enddate));
    t.set("value", st.stage);
    t.set("unit", "stage");
    t.provenance(st.source, zone, st.seg.startdate);
    out.push(Resource::SleepStream, st.raw);
}

/// The row of one series point.
fn stream_point(out: &mut Out, ids: &mut SleepIds, p: &SleepPoint, zone: &Zone, raw: &Value) {
    stream_link(out, ids, p.session);
    let t = out.table(Resource::SleepStream);
    t.set("metric", p.metric);
    t.set("timestamp", ts(p.t));
    t.set("value", p.value);
    t.set("unit", p.unit);
    t.provenance(p.source, zone, p.t);
    out.push(Resource::SleepStream, raw);
}

// ---------------------------------------------------------------------------------------------
// sleep_cycle

// sleep_cycle: Vital's replacement for the hypnogram, one row per sleep session with its
// segments as parallel lists (offsets from the session start, Vital stage, Withings state).
// Built from the segments the hypnogram rows come from; a segment outside every session, or of
// an unknown state, is not in it (the first has its hypnogram row, the second is quarantined).

/// The staged segments of one session.
struct Cycle {
    session: SleepSession,
    source: Source,
    zone: Zone,
    raw: Value,
    /// (start, end, Vital stage, Withings state), in arrival order.
    segments: Vec<(i64, i64, i64, i64)>,
}

/// Adds a staged segment to its session's cycle.
fn collect_cycle(cycles: &mut BTreeMap<i64, Cycle>, session: &SleepSession, st: &SleepStage, zone: &Zone) {
    let cycle = cycles.entry(session.withings_id).or_insert_with(|| Cycle {
        session: session.clone(),
        source: st.source.clone(),
        zone: zone.clone(),
        raw: serde_json::json!({ "session": session.withings_id }),
        segments: Vec::new(),
    });
    cycle.segments.push((st.seg.startdate, st.seg.enddate, st.stage, st.state));
}

/// The sleep_cycle row of one session.
fn push_cycle(out: &mut Out, ctx: &Context, ids: &mut SleepIds, mut cycle: Cycle) {
    cycle.segments.sort();
    let s = &cycle.session;
    let sleep_id = ids.of(Some(s));
    let offsets = |f: fn(&(i64, i64, i64, i64)) -> i64| cycle.segments.iter().map(|x| f(x) - s.start).collect::<Vec<i64>>();
    let starts = offsets(|x| x.0);
    let ends = offsets(|x| x.1);
    let stages: Vec<i64> = cycle.segments.iter().map(|x| x.2).collect();
    let states: Vec<i64> = cycle.segments.iter().map(|x| x.3).collect();
    let updated = s.modified.unwrap_or(s.end);
    let t = out.table(Resource::SleepCycle);
    t.set("id", summary_id(Resource::SleepCycle, &ctx.user_id, &s.withings_id.to_string()));
    t.set("sleep_id", sleep_id);
    t.set("withings_sleep_id", s.withings_id);
    t.set("calendar_date", cycle.zone.local_date(s.end).map(date));
    t.set("session_start", ts(s.start));
    t.set("session_end", ts(s.end));
    t.set("stage_start_offset_second", starts);
    t.set("stage_end_offset_second", ends);
    t.set("stage_type", stages);
    t.set("withings_state", states);
    t.set("created_at", ts(s.created.unwrap_or(updated)));
    t.set("updated_at", ts(updated));
    t.provenance(&cycle.source, &cycle.zone, s.start);
    out.push(Resource::SleepCycle, &cycle.raw);
}

impl Harmonized {
    /// Keeps only the sleep_cycle row of Withings session `withings_id` (a sleep get of one
    /// session's window also reaches part of an overlapping session, whose row would be partial).
    pub fn keep_cycles_of(&mut self, withings_id: i64) {
        use arrow::array::AsArray;
        let Some(batch) = self.tables.get(&Resource::SleepCycle) else { return };
        let Some(ids) = batch.column_by_name("withings_sleep_id") else { return };
        let ids = ids.as_primitive::<arrow::datatypes::Int64Type>();
        let keep = arrow::array::BooleanArray::from_iter(ids.iter().map(|v| Some(v == Some(withings_id))));
        if let Ok(kept) = arrow::compute::filter_record_batch(batch, &keep) {
            self.tables.insert(Resource::SleepCycle, kept);
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    #[test]
    fn sleep_samples_link_to_the_session_of_their_own_device() {
        let s = |id, start, end, device: Option<&str>| SleepSession {
            withings_id: id,
            start,
            end,
            device: device.map(String::from),
            time_zone: None,
            created: None,
            modified: None,
        };
        // A watch night and a mat night overlap; sessions are sorted by start.
        let sessions = vec![s(1, 1000, 40_000, Some("watch")), s(2, 2000, 30_000, Some("mat")), s(3, 50_000, 60_000, None)];
        assert_eq!(session_at(&sessions, Some("mat"), 2500).map(|s| s.withings_id), Some(2));
        assert_eq!(session_at(&sessions, Some("watch"), 2500).map(|s| s.withings_id), Some(1));
        assert_eq!(session_at(&sessions, Some("mat"), 35_000).map(|s| s.withings_id), None);
        assert_eq!(session_at(&sessions, Some("mat"), 55_000).map(|s| s.withings_id), Some(3));
        assert_eq!(session_at(&sessions, None, 1500).map(|s| s.withings_id), Some(1));
        assert_eq!(session_at(&sessions, Some("watch"), 999).map(|s| s.withings_id), None);
    }

    #[test]
    fn a_sleep_get_of_one_session_keeps_only_that_session_s_cycle() {
        const T: i64 = 1_718_000_000; // June 2024: plausible epochs
        let session = |id, start: i64, end: i64, device: &str| SleepSession {
            withings_id: id,
            start: T + start,
            end: T + end,
            device: Some(device.to_string()),
            time_zone: Some("Europe/Paris".into()),
            created: None,
            modified: None,
        };
        // The watch night 1 overlaps the mat night 2; a sleep get of night 1's window returns
        // the mat's segments from 2000 on too: night 2's row from them would be partial.
        let sessions = vec![session(2, 1000, 30_000, "mat"), session(1, 2000, 40_000, "watch")];
        let seg = |a: i64, b: i64, state: i64, device: &str| serde_json::json!({"startdate": T + a, "enddate": T + b, "state": state, "hash_deviceid": device});
        let answer = SleepGet::from_body(serde_json::json!({"model": 16, "series": [
            seg(2000, 5000, 1, "watch"), seg(5000, 9000, 2, "watch"), seg(2000, 4000, 1, "mat"), seg(4000, 8000, 3, "mat"),
        ]}))
        .unwrap();
        let ctx = Context {
            user_id: "u".into(),
            withings_user_id: "1".into(),
            run_id: "r".into(),
            ingested_at: Utc::now(),
            time_zone: None,
            zones: Default::default(),
        };
        let mut h = sleep_get(&ctx, &answer, &sessions);
        assert_eq!(h.tables[&Resource::SleepCycle].num_rows(), 2, "{:?} {:?}", h.quarantine, h.stats);
        h.keep_cycles_of(1);
        let cycles = &h.tables[&Resource::SleepCycle];
        assert_eq!(cycles.num_rows(), 1);
        let ids = cycles.column_by_name("withings_sleep_id").unwrap();
        assert_eq!(arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(ids).value(0), 1);
    }

    #[test]
    fn each_series_reads_the_segment_key_it_names() {
        for Series { metric, points, .. } in SLEEP_SERIES {
            let seg: SleepSegment =
                serde_json::from_value(serde_json::json!({"startdate": 0, "enddate": 60, metric: {"30": 7}})).unwrap();
            assert_eq!(points(&seg).map(|p| p.get(&30).copied()), Some(Some(7.0)), "{metric}");
            let others = SLEEP_SERIES.iter().filter(|s| s.metric != metric).filter(|s| (s.points)(&seg).is_some()).count();
            assert_eq!(others, 0, "{metric} is read by another series' entry");
        }
    }
}
