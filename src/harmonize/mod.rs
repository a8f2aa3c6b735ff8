//! Harmonization: decoded Withings responses in, one Arrow RecordBatch per resource out.
//!
//! Pure functions, no I/O. One entry point per Withings endpoint, each in the file named after
//! the endpoint, which holds everything that endpoint produces:
//!
//! - `getmeas.rs`, [`getmeas()`]: weight, fat, blood_pressure, heartrate, blood_oxygen,
//!   vo2_max, body.
//! - `getactivity.rs`, [`getactivity()`]: activity.
//! - `getintradayactivity.rs`, [`getintradayactivity()`]: steps, distance, calories_active,
//!   heartrate, blood_oxygen, hrv, respiratory_rate.
//! - `sleep_getsummary.rs`, [`sleep_getsummary()`]: sleep, and the [`SleepSession`]s that
//!   sleep get links its rows to.
//! - `sleep_get.rs`, [`sleep_get()`]: hypnogram, sleep_cycle, sleep_stream, heartrate, hrv,
//!   respiratory_rate.
//! - `getworkouts.rs`, [`getworkouts()`]: workouts.
//!
//! A resource fed by one value per record is a line of its endpoint's table: getmeas
//! `RESOURCES` (meastype and unit of weight, fat, heartrate, blood_oxygen, vo2_max),
//! getintradayactivity `FIELDS` (sample field and unit of each resource) and sleep get
//! `SLEEP_SERIES` (series, sleep_stream unit, and the resource that also holds hr, rr and
//! rmssd). Resources with more logic (blood_pressure, body, activity, sleep, hypnogram,
//! sleep_cycle, sleep_stream, workouts) have a function in their endpoint's file that those
//! tables or the entry point call.
//!
//! Shared machinery:
//! - `out.rs`: [`Harmonized`] and [`Stats`] (what a call returns) and `Out`, the builder every
//!   entry point fills (tables, quarantine, counts); `dedupe` of repeated records,
//!   `repeat_counts` for identical copies, `point`, a `timestamp`/`value`/`unit` row.
//! - `table.rs`: `Table`, one resource's batch built row by row on its schema, sorted at the end.
//! - `quarantine.rs`: [`QuarantineReason`], [`Quarantined`] and the quarantine table
//!   ([`quarantine_schema`], [`Harmonized::quarantine_batch`]).
//! - `source.rs`: provenance, [`Source`] and [`source_of`] (the `source_*` columns).
//! - `zone.rs`: [`Zone`], the zone a row is stamped with; `zones.rs`: the user's
//!   [`ZoneTimeline`] (the zone of each local day) and `Stamper`, which stamps samples without
//!   a zone of their own.
//! - `ids.rs`: [`summary_id`] and the sleep row id that links a night's rows to its sleep row.
//! - `scale.rs`: [`scaled`], Withings' `{value, unit}` integers to doubles.
//! - [`codes`]: the code tables (meastypes, sleep states, workout categories, device models),
//!   and only there.
//!
//! Data flow of a call: the entry point makes an `Out` with one `Table` per resource it feeds;
//! counts each input sample in; quarantines what does not decode or validate; `dedupe`s
//! records by their key; stages each row cell by cell on its table (`Table::set`, with
//! provenance and zone) and pushes it (a row the schema refuses is quarantined); and
//! `Out::finish` sorts each table into its batch.
//!
//! Invariants:
//! - Every batch has exactly its resource's schema (`schemas/<resource>.json`), sorted by
//!   (time, primary key), unique by primary key within one call.
//! - Nothing is dropped silently. Every input sample (a getmeas measure, an activity, workout
//!   or sleep summary record, an intraday sample, a sleep segment and each point of its series)
//!   is *mapped* (it fed at least one table), *quarantined* (malformed, unknown code,
//!   conflicting duplicate: kept in [`Harmonized::quarantine`] with its reason and raw JSON), or
//!   *unmapped* (a known Withings value that no harmonized resource holds, such as pulse wave
//!   velocity or a swim-stroke sample: counted by code in [`Stats::unmapped`]; the raw landing
//!   keeps it). `Stats::samples_in == mapped + quarantined + unmapped`. Fields of a mapped
//!   sample that no column holds (intraday `elevation`, `sdnn1`, ...) are counted in
//!   [`Stats::unmapped_fields`].
//! - Values are computed from Withings' integers (`value / 10^-unit`, one correctly rounded
//!   division), never through f32. Null stays null; a zero stays zero.

pub mod codes;

mod ids;
mod out;
mod quarantine;
mod scale;
mod source;
mod table;
mod zone;
mod zones;

mod getactivity;
mod getintradayactivity;
mod getmeas;
mod getworkouts;
mod sleep_get;
mod sleep_getsummary;

use std::sync::Arc;

use chrono::{DateTime, Utc};

pub use getactivity::getactivity;
pub use getintradayactivity::getintradayactivity;
pub use getmeas::getmeas;
pub use getworkouts::getworkouts;
pub use ids::summary_id;
pub use out::{Harmonized, Stats};
pub use quarantine::{QuarantineReason, Quarantined, quarantine_schema};
pub use scale::scaled;
pub use sleep_get::sleep_get;
pub use sleep_getsummary::{SleepSession, sleep_getsummary};
pub use source::{Source, source_of};
pub use zone::Zone;
pub use zones::{DaySet, DayZone, Evidence, ZoneTimeline, activity_evidence, sleep_evidence, workout_evidence};

/// Who and which run the rows belong to. The same for every row of a harmonize call.
#[derive(Debug, Clone)]
pub struct Context {
    /// The application's id for the person.
    pub user_id: String,
    pub withings_user_id: String,
    pub run_id: String,
    pub ingested_at: DateTime<Utc>,
    /// The user's current IANA zone: for records without a zone of their own, and for
    /// samples without one when `zones` is empty.
    pub time_zone: Option<String>,
    /// The zone of each local day ([`ZoneTimeline`]): samples without a zone of their own
    /// (getmeas groups, intraday, sleep get outside a session) take the zone of their day.
    pub zones: Arc<ZoneTimeline>,
}
