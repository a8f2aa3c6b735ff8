//! calories_active: intraday `calories` (active kcal) per interval [start, start + duration).

use super::{IntradayRow, Out};
use crate::schema::Resource;

pub(super) fn from_intraday(out: &mut Out, row: &IntradayRow) {
    super::interval(out, Resource::CaloriesActive, row, row.s.calories, "kcal");
}
