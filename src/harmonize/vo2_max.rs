//! vo2_max: getmeas meastype 123. Vital models VO2 max as an interval; Withings measures a
//! point in time, so `start` = `end` = the measure time.

use super::table::ts;
use super::{Group, Out, Zone};
use crate::schema::Resource;

pub(super) fn from_getmeas(out: &mut Out, g: &Group, zone: &Zone) {
    let Some(v) = g.get(123) else { return };
    let t = out.table(Resource::Vo2Max);
    t.set("start", ts(g.date));
    t.set("end", ts(g.date));
    t.set("value", v);
    t.set("unit", "mL/kg/min");
    g.stage_group_columns(t, zone);
    out.push(Resource::Vo2Max, g.raw);
}
