//! fat: getmeas meastype 6 (fat ratio), one row per measure group, in percent.

use super::{Group, Out, Zone};
use crate::schema::Resource;

pub(super) fn from_getmeas(out: &mut Out, g: &Group, zone: &Zone) {
    super::spot(out, Resource::Fat, g, zone, 6, "%");
}
