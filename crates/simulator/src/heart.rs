//! Synthetic ECG recordings (heart list), from ECG-capable watches.

use chrono::NaiveDate;

use super::rng::{Rng, Stream};
use super::world::{Device, User, World, day_number};

#[derive(Debug, Clone)]
pub struct Ecg<'u> {
    pub signalid: i64,
    pub timestamp: i64,
    pub modified: i64,
    pub afib: i64,
    pub heart_rate: i64,
    pub device: &'u Device,
    /// QRS, PR, QT, QTc in ms (also reported through getmeas types 135-138).
    pub intervals: [i64; 4],
}

/// The ECG a user recorded on a local date, if any.
pub fn ecg_on<'u>(world: &World, user: &'u User, date: NaiveDate) -> Option<Ecg<'u>> {
    let device = user.watch.as_ref().filter(|w| matches!(w.model.id, 91 | 93 | 94))?;
    if date < world.history_start {
        return None;
    }
    let day = day_number(date);
    let mut r = Rng::new(world.seed, user.index as u64, day, Stream::Heart);
    if !r.chance(0.05) {
        return None;
    }
    let timestamp = user.local_epoch(date, 10 * 60 + r.range(0, 600)) + r.range(0, 59);
    let qt = r.range(360, 420);
    Some(Ecg {
        signalid: 160_000_000 + user.index as i64 * 1_000_000 + (day - 10_957) * 2,
        timestamp,
        modified: timestamp + r.range(20, 400),
        afib: *r.weighted(&[(0i64, 90), (2, 8), (1, 2)]),
        heart_rate: (user.resting_hr + 8.0 + 4.0 * r.normal()).round() as i64,
        device,
        intervals: [r.range(80, 110), r.range(120, 200), qt, qt + r.range(10, 40)],
    })
}
