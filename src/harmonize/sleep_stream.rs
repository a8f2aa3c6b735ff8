//! sleep_stream: every per-sleep sample of sleep get in long form, one row per (metric,
//! timestamp): the series (hr, rr, rmssd, sdnn_1, snoring, ...) and one `stage` row per
//! segment. Each row is linked by `sleep_id` to the sleep row whose bedtime window contains it.

use serde_json::Value;

use super::table::ts;
use super::{Out, SleepPoint, SleepSession, SleepStage, Zone};
use crate::schema::Resource;

fn link(out: &mut Out, session: Option<&SleepSession>) {
    let sleep_id = out.sleep_id(session);
    let t = out.table(Resource::SleepStream);
    t.set("sleep_id", sleep_id);
    t.set("withings_sleep_id", session.map(|s| s.withings_id));
}

pub(super) fn stage_from_sleep_get(out: &mut Out, st: &SleepStage, zone: &Zone) {
    link(out, st.session);
    let t = out.table(Resource::SleepStream);
    t.set("metric", "stage");
    t.set("timestamp", ts(st.seg.startdate));
    t.set("end", ts(st.seg.enddate));
    t.set("value", st.stage);
    t.set("unit", "stage");
    t.provenance(st.source, zone, st.seg.startdate);
    out.push(Resource::SleepStream, st.raw);
}

pub(super) fn point_from_sleep_get(out: &mut Out, p: &SleepPoint, zone: &Zone, raw: &Value) {
    link(out, p.session);
    let t = out.table(Resource::SleepStream);
    t.set("metric", p.metric);
    t.set("timestamp", ts(p.t));
    t.set("value", p.value);
    t.set("unit", p.unit);
    t.provenance(p.source, zone, p.t);
    out.push(Resource::SleepStream, raw);
}
