//! blood_oxygen: spot SpO2 (getmeas 54) and the watch's automatic readings (intraday
//! `spo2_auto`), in percent.

use super::{Group, IntradayRow, Out, Zone};
use crate::schema::Resource;

pub(super) fn from_getmeas(out: &mut Out, g: &Group, zone: &Zone) {
    super::spot(out, Resource::BloodOxygen, g, zone, 54, "%");
}

pub(super) fn from_intraday(out: &mut Out, row: &IntradayRow) {
    if let Some(v) = row.s.spo2_auto {
        super::point(out, Resource::BloodOxygen, row.source, row.zone, row.t, v, "%", row.raw);
    }
}
