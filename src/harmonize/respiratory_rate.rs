//! respiratory_rate: breaths per minute from intraday `rr` and the sleep `rr` series
//! (Vital's unit string is "bpm").

use serde_json::Value;

use super::{IntradayRow, Out, SleepPoint, Zone};
use crate::schema::Resource;

pub(super) fn from_intraday(out: &mut Out, row: &IntradayRow) {
    if let Some(v) = row.s.rr {
        super::point(out, Resource::RespiratoryRate, row.source, row.zone, row.t, v, "bpm", row.raw);
    }
}

pub(super) fn from_sleep_get(out: &mut Out, p: &SleepPoint, zone: &Zone, raw: &Value) {
    super::point(out, Resource::RespiratoryRate, p.source, zone, p.t, p.value, "bpm", raw);
}
