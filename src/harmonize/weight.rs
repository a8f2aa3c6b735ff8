//! weight: getmeas meastype 1, one row per measure group, in kilograms.

use super::{Group, Out, Zone};
use crate::schema::Resource;

pub(super) fn from_getmeas(out: &mut Out, g: &Group, zone: &Zone) {
    super::spot(out, Resource::Weight, g, zone, 1, "kg");
}
