//! blood_pressure: getmeas meastypes 10 (systolic) and 9 (diastolic) of one group, with the
//! group's pulse (11) when the cuff measured one. A group with only one of 9/10 never gets
//! here: the getmeas driver quarantines it as incomplete.

use super::table::ts;
use super::{Group, Out, Zone};
use crate::schema::Resource;

pub(super) fn from_getmeas(out: &mut Out, g: &Group, zone: &Zone) {
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
