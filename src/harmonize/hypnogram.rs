//! hypnogram: one row per sleep get segment, the Withings state mapped to Vital's stage
//! through `codes::SLEEP_STATES` (the raw state is kept). Segments with an unknown state never
//! get here: the sleep get driver quarantines them.

use super::table::ts;
use super::{Out, SleepStage, Zone};
use crate::schema::Resource;

pub(super) fn from_sleep_get(out: &mut Out, st: &SleepStage, zone: &Zone) {
    let sleep_id = out.sleep_id(st.session);
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
