//! steps: intraday `steps` per interval [start, start + duration).

use super::{IntradayRow, Out};
use crate::schema::Resource;

pub(super) fn from_intraday(out: &mut Out, row: &IntradayRow) {
    super::interval(out, Resource::Steps, row, row.s.steps.map(|v| v as f64), "count");
}
