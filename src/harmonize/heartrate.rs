//! heartrate: spot pulses (getmeas 11, from scales and blood-pressure cuffs), the watch's
//! intraday `heart_rate`, and the sleep `hr` series. Rows keep their endpoint, so a watch's
//! intraday and sleep samples at one instant stay two rows.

use serde_json::Value;

use super::{Group, IntradayRow, Out, SleepPoint, Zone};
use crate::schema::Resource;

pub(super) fn from_getmeas(out: &mut Out, g: &Group, zone: &Zone) {
    super::spot(out, Resource::Heartrate, g, zone, 11, "bpm");
}

pub(super) fn from_intraday(out: &mut Out, row: &IntradayRow) {
    if let Some(v) = row.s.heart_rate {
        super::point(out, Resource::Heartrate, row.source, row.zone, row.t, v as f64, "bpm", row.raw);
    }
}

pub(super) fn from_sleep_get(out: &mut Out, p: &SleepPoint, zone: &Zone, raw: &Value) {
    super::point(out, Resource::Heartrate, p.source, zone, p.t, p.value, "bpm", raw);
}
