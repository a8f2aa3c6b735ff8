//! distance: intraday `distance` (metres) per interval [start, start + duration).

use super::{IntradayRow, Out};
use crate::schema::Resource;

pub(super) fn from_intraday(out: &mut Out, row: &IntradayRow) {
    super::interval(out, Resource::Distance, row, row.s.distance, "m");
}
