//! hrv: RMSSD from the watch's intraday `rmssd` and the sleep `rmssd` series, in
//! milliseconds (Vital's unit string is "rmssd").

use serde_json::Value;

use super::{IntradayRow, Out, SleepPoint, Zone};
use crate::schema::Resource;

pub(super) fn from_intraday(out: &mut Out, row: &IntradayRow) {
    if let Some(v) = row.s.rmssd {
        super::point(out, Resource::Hrv, row.source, row.zone, row.t, v, "rmssd", row.raw);
    }
}

pub(super) fn from_sleep_get(out: &mut Out, p: &SleepPoint, zone: &Zone, raw: &Value) {
    super::point(out, Resource::Hrv, p.source, zone, p.t, p.value, "rmssd", raw);
}
