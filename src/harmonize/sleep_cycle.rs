//! sleep_cycle: Vital's replacement for the hypnogram, one row per sleep session with its
//! segments as parallel lists (offsets from the session start, Vital stage, Withings state).
//! Built from the segments the hypnogram rows come from; a segment outside every session, or of
//! an unknown state, is not in it (the first has its hypnogram row, the second is quarantined).

use std::collections::BTreeMap;

use serde_json::Value;

use super::table::{date, ts};
use super::{Out, SleepSession, SleepStage, Source, Zone, summary_id};
use crate::schema::Resource;

/// The staged segments of one session.
pub(crate) struct Cycle {
    session: SleepSession,
    source: Source,
    zone: Zone,
    raw: Value,
    /// (start, end, Vital stage, Withings state), in arrival order.
    segments: Vec<(i64, i64, i64, i64)>,
}

/// Adds a staged segment to its session's cycle.
pub(super) fn collect(cycles: &mut BTreeMap<i64, Cycle>, session: &SleepSession, st: &SleepStage, zone: &Zone) {
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
pub(super) fn push(out: &mut Out, mut cycle: Cycle) {
    cycle.segments.sort();
    let s = &cycle.session;
    let sleep_id = out.sleep_id(Some(s));
    let user_id = out.user_id.clone();
    let offsets = |f: fn(&(i64, i64, i64, i64)) -> i64| cycle.segments.iter().map(|x| f(x) - s.start).collect::<Vec<i64>>();
    let starts = offsets(|x| x.0);
    let ends = offsets(|x| x.1);
    let stages: Vec<i64> = cycle.segments.iter().map(|x| x.2).collect();
    let states: Vec<i64> = cycle.segments.iter().map(|x| x.3).collect();
    let updated = s.modified.unwrap_or(s.end);
    let t = out.table(Resource::SleepCycle);
    t.set("id", summary_id(Resource::SleepCycle, &user_id, &s.withings_id.to_string()));
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
