//! Harmonization: decoded Withings responses in, one Arrow RecordBatch per resource out.
//!
//! Pure functions, no I/O. One entry point per endpoint ([`getmeas`], [`getactivity`],
//! [`getintradayactivity`], [`sleep_getsummary`], [`sleep_get`], [`getworkouts`]); each
//! resource's mapping lives in the file named after it, and the code tables (meastypes, sleep
//! states, workout categories, device models) in [`codes`] only.
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
mod table;
mod zones;

mod activity;
mod blood_oxygen;
mod blood_pressure;
mod body;
mod calories_active;
mod distance;
mod fat;
mod heartrate;
mod hrv;
mod hypnogram;
mod respiratory_rate;
mod sleep;
mod sleep_cycle;
mod sleep_stream;
mod steps;
mod vo2_max;
mod weight;
mod workouts;

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringBuilder, TimestampMicrosecondBuilder};
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use crate::schema::Resource;
use crate::withings::types::{Activity, IntradaySample, Item, MeasureGroup, SleepSegment, SleepSummary, Workout};
use crate::withings::{MeasureList, SleepGet};
use codes::SourceType;
use table::Table;
use zones::Stamper;
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

/// An IANA zone name as Withings sent it, and the zone when chrono-tz knows the name.
#[derive(Debug, Clone)]
pub struct Zone {
    pub name: Option<Arc<str>>,
    tz: Option<Tz>,
}

impl Zone {
    pub fn new(name: Option<&str>) -> Zone {
        let name = name.map(str::trim).filter(|s| !s.is_empty());
        Zone { name: name.map(Arc::from), tz: name.and_then(|n| Tz::from_str(n).ok()) }
    }

    /// Seconds east of UTC at `secs` (DST-aware), when the zone is known.
    pub fn offset_at(&self, secs: i64) -> Option<i32> {
        let tz = self.tz?;
        let utc = DateTime::<Utc>::from_timestamp(secs, 0)?;
        Some(tz.offset_from_utc_datetime(&utc.naive_utc()).fix().local_minus_utc())
    }

    /// The local calendar date of `secs`; the UTC date when the zone is unknown.
    pub fn local_date(&self, secs: i64) -> Option<NaiveDate> {
        let utc = DateTime::<Utc>::from_timestamp(secs, 0)?;
        Some(match self.tz {
            Some(tz) => utc.with_timezone(&tz).date_naive(),
            None => utc.date_naive(),
        })
    }
}

/// Where a row came from: the `source_*` columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub kind: SourceType,
    pub device_id: Option<Arc<str>>,
    pub model: Option<Arc<str>>,
    pub model_id: Option<i64>,
}

/// The source of a record: attrib 2 or 4 (entered by hand) is `manual`; otherwise the device
/// model table decides, and `fallback` covers records without a known model.
pub fn source_of(
    model_id: Option<i64>,
    model: Option<&str>,
    attrib: Option<i64>,
    device_id: Option<&str>,
    fallback: SourceType,
) -> Source {
    let known = model_id.and_then(codes::device_model);
    let kind = if matches!(attrib, Some(2 | 4)) { SourceType::Manual } else { known.map_or(fallback, |m| m.source_type) };
    let model = model.map(str::trim).filter(|s| !s.is_empty()).map(Arc::from).or_else(|| known.map(|m| Arc::from(m.name)));
    Source { kind, device_id: device_id.map(str::trim).filter(|s| !s.is_empty()).map(Arc::from), model, model_id }
}

/// `value * 10^unit` from Withings' integers: one correctly rounded operation on exact
/// operands, so `{72450, -3}` is exactly the double nearest 72.45. `None` when the exponent or
/// the value is outside what a double holds exactly.
pub fn scaled(value: i64, unit: i64) -> Option<f64> {
    if !(-15..=15).contains(&unit) || value.unsigned_abs() > (1 << 53) {
        return None;
    }
    let p = 10f64.powi(unit.unsigned_abs() as i32);
    Some(if unit < 0 { value as f64 / p } else { value as f64 * p })
}

/// The deterministic id of a summary row: UUIDv5 of (provider, resource, user, provider key).
pub fn summary_id(resource: Resource, user_id: &str, key: &str) -> String {
    // The withings-lake namespace (a fixed random UUID): ids never change across versions.
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5d0c_9a7e_3b41_4f0e_9c7a_1e2b_6f8d_4a31);
    uuid::Uuid::new_v5(&NAMESPACE, format!("withings/{resource}/{user_id}/{key}").as_bytes()).to_string()
}

/// Why a record was quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QuarantineReason {
    /// The record does not decode, or a required field is missing or out of range.
    Malformed,
    /// A getmeas meastype no table knows.
    UnknownMeastype,
    /// A sleep state no table knows.
    UnknownSleepState,
    /// A blood-pressure group with a systolic but no diastolic value, or the reverse.
    IncompleteGroup,
    /// The same key twice in one response with different content; the record Withings modified
    /// last (else the first) is kept.
    ConflictingDuplicate,
    /// A getmeas group of category 2 (a user objective, not a measure).
    Objective,
}

impl QuarantineReason {
    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineReason::Malformed => "malformed",
            QuarantineReason::UnknownMeastype => "unknown_meastype",
            QuarantineReason::UnknownSleepState => "unknown_sleep_state",
            QuarantineReason::IncompleteGroup => "incomplete_group",
            QuarantineReason::ConflictingDuplicate => "conflicting_duplicate",
            QuarantineReason::Objective => "objective",
        }
    }
}

/// A record kept out of the tables, with why and the raw JSON that carried it.
#[derive(Debug, Clone)]
pub struct Quarantined {
    pub endpoint: &'static str,
    /// The resource the record was meant for, when one is known.
    pub resource: Option<Resource>,
    pub reason: QuarantineReason,
    /// What exactly was wrong, naming the field or code.
    pub detail: String,
    pub raw: Value,
}

/// What a harmonize call did with its input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub samples_in: usize,
    pub mapped: usize,
    pub quarantined: usize,
    /// Known values no resource holds, by a label naming the code.
    pub unmapped: BTreeMap<String, usize>,
    /// Codes newer than the tables that were still harmonized (workout categories as `other`).
    pub unknown_codes: BTreeMap<String, usize>,
    /// Values of mapped samples in fields no column holds, by endpoint and field.
    pub unmapped_fields: BTreeMap<String, usize>,
}

impl Stats {
    pub fn unmapped_total(&self) -> usize {
        self.unmapped.values().sum()
    }
}

/// The output of one harmonize call.
#[derive(Debug, Clone)]
pub struct Harmonized {
    pub endpoint: &'static str,
    /// One batch for every resource the endpoint feeds (empty when nothing came back, so a
    /// window replace can still remove rows deleted upstream).
    pub tables: BTreeMap<Resource, RecordBatch>,
    pub quarantine: Vec<Quarantined>,
    pub stats: Stats,
}

impl Harmonized {
    /// Rows harmonized into `resource` (0 when the endpoint does not feed it).
    pub fn rows(&self, resource: Resource) -> usize {
        self.tables.get(&resource).map_or(0, RecordBatch::num_rows)
    }

    /// The quarantine as a batch of the lake's quarantine table (`schemas/_quarantine.json`).
    /// `record_hash` (SHA-256 of resource, reason and raw JSON) makes the same problem seen
    /// again one row.
    pub fn quarantine_batch(&self, ctx: &Context) -> RecordBatch {
        use sha2::Digest;
        let n = self.quarantine.len();
        let mut cols: Vec<StringBuilder> = (0..8).map(|_| StringBuilder::with_capacity(n, n * 16)).collect();
        let mut at = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut run = StringBuilder::with_capacity(n, n * ctx.run_id.len());
        for q in &self.quarantine {
            let raw = q.raw.to_string();
            let resource = q.resource.map(Resource::as_str);
            let hash = sha2::Sha256::new()
                .chain_update(resource.unwrap_or("-"))
                .chain_update([0])
                .chain_update(q.reason.as_str())
                .chain_update([0])
                .chain_update(&raw)
                .finalize();
            cols[0].append_value(&ctx.user_id);
            cols[1].append_value(&ctx.withings_user_id);
            cols[2].append_value(q.endpoint);
            cols[3].append_option(resource);
            cols[4].append_value(q.reason.as_str());
            cols[5].append_value(&q.detail);
            cols[6].append_value(raw);
            cols[7].append_value(hex::encode(hash));
            at.append_value(ctx.ingested_at.timestamp_micros());
            run.append_value(&ctx.run_id);
        }
        let mut arrays: Vec<arrow::array::ArrayRef> = cols.iter_mut().map(|b| Arc::new(b.finish()) as _).collect();
        arrays.push(Arc::new(at.finish()));
        arrays.push(Arc::new(run.finish()));
        RecordBatch::try_new(quarantine_schema(), arrays).expect("quarantine columns follow the schema")
    }
}

/// The schema of quarantined records: the lake's quarantine table.
pub fn quarantine_schema() -> SchemaRef {
    crate::schema::landing("_quarantine").arrow()
}

/// The tables of one call plus its bookkeeping.
struct Out {
    endpoint: &'static str,
    user_id: String,
    /// Sleep row ids by Withings session id (a night's samples share one).
    sleep_ids: HashMap<i64, Arc<str>>,
    tables: Vec<Table>,
    quarantine: Vec<Quarantined>,
    stats: Stats,
}

impl Out {
    fn new(ctx: &Context, endpoint: &'static str, resources: &[Resource]) -> Out {
        Out {
            endpoint,
            user_id: ctx.user_id.clone(),
            sleep_ids: HashMap::new(),
            tables: resources.iter().map(|r| Table::new(*r, ctx, endpoint)).collect(),
            quarantine: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// The id of the sleep row of a Withings session (computed once per session).
    fn sleep_id(&mut self, session: Option<&SleepSession>) -> Option<Arc<str>> {
        let s = session?;
        let user = &self.user_id;
        Some(
            self.sleep_ids
                .entry(s.withings_id)
                .or_insert_with(|| summary_id(Resource::Sleep, user, &s.withings_id.to_string()).into())
                .clone(),
        )
    }

    fn table(&mut self, r: Resource) -> &mut Table {
        self.tables.iter_mut().find(|t| t.resource == r).expect("the endpoint declares every resource it feeds")
    }

    /// Quarantines `samples` input samples carried by `raw`.
    fn quarantine(&mut self, resource: Option<Resource>, reason: QuarantineReason, detail: String, raw: Value, samples: usize) {
        self.stats.quarantined += samples;
        self.quarantine.push(Quarantined { endpoint: self.endpoint, resource, reason, detail, raw });
    }

    fn unmapped(&mut self, label: String, samples: usize) {
        *self.stats.unmapped.entry(label).or_default() += samples;
    }

    /// Pushes the staged row of `r`; a row the schema refuses is quarantined (it already counts
    /// as mapped or not through its record, so no sample count moves).
    fn push(&mut self, r: Resource, raw: &Value) {
        if let Err(detail) = self.table(r).push() {
            self.quarantine.push(Quarantined {
                endpoint: self.endpoint,
                resource: Some(r),
                reason: QuarantineReason::Malformed,
                detail,
                raw: raw.clone(),
            });
        }
    }

    fn finish(self) -> Harmonized {
        Harmonized {
            endpoint: self.endpoint,
            tables: self.tables.into_iter().map(|t| (t.resource, t.finish())).collect(),
            quarantine: self.quarantine,
            stats: self.stats,
        }
    }
}

/// Keeps one record per key: the one Withings modified last (the first on a tie). Returns
/// the kept indices in input order, each with how many identical copies of it (an overlapping
/// page) were merged into it: the caller counts those copies as it counts the record. A
/// different record under the same key is quarantined with its `samples(i)`.
fn dedupe<K: std::hash::Hash + Eq>(
    out: &mut Out,
    items: Vec<(K, Option<i64>, &Value)>,
    what: &str,
    samples: impl Fn(usize) -> usize,
) -> Vec<(usize, usize)> {
    let raws: Vec<&Value> = items.iter().map(|x| x.2).collect();
    let mut slots: HashMap<K, usize> = HashMap::new();
    let mut winners: Vec<(usize, Option<i64>)> = Vec::new();
    let mut slot_of = Vec::with_capacity(raws.len());
    for (i, (key, modified, _)) in items.into_iter().enumerate() {
        let slot = *slots.entry(key).or_insert_with(|| {
            winners.push((i, modified));
            winners.len() - 1
        });
        slot_of.push(slot);
        if modified > winners[slot].1 {
            winners[slot] = (i, modified);
        }
    }
    let mut copies = vec![0; winners.len()];
    for (i, slot) in slot_of.into_iter().enumerate() {
        let w = winners[slot].0;
        if i == w {
            continue;
        }
        if raws[i] == raws[w] {
            copies[slot] += 1;
        } else {
            let detail = format!("{what} appears twice in one response; the last modified is kept");
            out.quarantine(None, QuarantineReason::ConflictingDuplicate, detail, raws[i].clone(), samples(i));
        }
    }
    let mut kept: Vec<(usize, usize)> = winners.into_iter().zip(copies).map(|((w, _), c)| (w, c)).collect();
    kept.sort_unstable();
    kept
}

impl Harmonized {
    /// Keeps only the sleep_cycle row of Withings session `withings_id` (a sleep get of one
    /// session's window also reaches part of an overlapping session, whose row would be partial).
    pub fn keep_cycles_of(&mut self, withings_id: i64) {
        use arrow::array::AsArray;
        let Some(batch) = self.tables.get(&Resource::SleepCycle) else { return };
        let Some(ids) = batch.column_by_name("withings_sleep_id") else { return };
        let ids = ids.as_primitive::<arrow::datatypes::Int64Type>();
        let keep = arrow::array::BooleanArray::from_iter(ids.iter().map(|v| Some(v == Some(withings_id))));
        if let Ok(kept) = arrow::compute::filter_record_batch(batch, &keep) {
            self.tables.insert(Resource::SleepCycle, kept);
        }
    }
}

/// The counts a piece of work added to `stats`, to repeat them for identical copies.
fn repeat_counts(out: &mut Out, before: &Stats, copies: usize) {
    if copies == 0 {
        return;
    }
    let after = out.stats.clone();
    out.stats.mapped += (after.mapped - before.mapped) * copies;
    out.stats.quarantined += (after.quarantined - before.quarantined) * copies;
    for (k, n) in &after.unmapped {
        let added = n - before.unmapped.get(k).copied().unwrap_or(0);
        *out.stats.unmapped.entry(k.clone()).or_default() += added * copies;
    }
}

/// A spot value of a getmeas group as a row of a `timestamp`/`value`/`unit` table.
fn spot(out: &mut Out, r: Resource, g: &Group, zone: &Zone, meastype: i64, unit: &'static str) {
    let Some(v) = g.get(meastype) else { return };
    let t = out.table(r);
    t.set("timestamp", table::ts(g.date));
    t.set("value", v);
    t.set("unit", unit);
    g.stage_group_columns(t, zone);
    out.push(r, g.raw);
}

/// A point sample (intraday or sleep) as a row of a `timestamp`/`value`/`unit` table.
#[allow(clippy::too_many_arguments)]
fn point(out: &mut Out, r: Resource, source: &Source, zone: &Zone, at: i64, value: f64, unit: &'static str, raw: &Value) {
    let t = out.table(r);
    t.set("timestamp", table::ts(at));
    t.set("value", value);
    t.set("unit", unit);
    if t.has("ambiguous") {
        t.set("ambiguous", false);
    }
    t.provenance(source, zone, at);
    out.push(r, raw);
}

/// An intraday sample's value as a row of a `start`/`end`/`value`/`unit` table.
fn interval(out: &mut Out, r: Resource, row: &IntradayRow, value: Option<f64>, unit: &'static str) {
    let Some(v) = value else { return };
    let t = out.table(r);
    t.set("start", table::ts(row.t));
    t.set("end", table::ts(row.end()));
    t.set("value", v);
    t.set("unit", unit);
    t.provenance(row.source, row.zone, row.t);
    out.push(r, row.raw);
}

// ---------------------------------------------------------------------------------------------
// getmeas

/// Meastypes some table holds (4, height, feeds body's BMI).
const MAPPED_MEASTYPES: [i64; 18] = [1, 4, 5, 6, 8, 9, 10, 11, 54, 76, 77, 88, 123, 168, 169, 170, 226, 227];
/// Height (metres): feeds body's BMI and height column.
const HEIGHT: i64 = 4;
/// Meastypes that make a group a body-composition row.
const BODY_MEASTYPES: [i64; 12] = [1, 5, 6, 8, 76, 77, 88, 168, 169, 170, 226, 227];
/// Position 7 is "whole body" (Body Scan); other positions are body segments.
const WHOLE_BODY: i64 = 7;

/// A decoded, validated getmeas group, as the per-resource mappings see it.
pub(crate) struct Group<'a> {
    pub grpid: i64,
    pub date: i64,
    pub created: Option<i64>,
    pub modified: Option<i64>,
    pub attrib: Option<i64>,
    pub source: Source,
    pub raw: &'a Value,
    /// Whole-body values by meastype.
    values: BTreeMap<i64, f64>,
}

impl Group<'_> {
    pub fn get(&self, meastype: i64) -> Option<f64> {
        self.values.get(&meastype).copied()
    }

    pub fn has_any(&self, meastypes: &[i64]) -> bool {
        meastypes.iter().any(|t| self.values.contains_key(t))
    }

    /// Stages the getmeas bookkeeping columns the table has (grpid, attrib, ambiguous,
    /// created_at, updated_at) and the provenance columns.
    pub(crate) fn stage_group_columns(&self, t: &mut Table, zone: &Zone) {
        t.set("grpid", self.grpid);
        t.set("attrib", self.attrib);
        t.set("ambiguous", self.attrib == Some(1));
        if t.has("created_at") {
            t.set("created_at", table::ts_opt(self.created));
            t.set("updated_at", table::ts_opt(self.modified));
        }
        t.provenance(&self.source, zone, self.date);
    }
}

/// The raw group with only its `i`-th measure: the quarantine record of one measure.
fn one_measure(raw: &Value, i: usize) -> Value {
    let mut v = raw.clone();
    if let Some(m) = raw.get("measures").and_then(|m| m.get(i)) {
        v["measures"] = Value::Array(vec![m.clone()]);
    }
    v
}

fn measure_count(raw: &Value) -> usize {
    raw.get("measures").and_then(Value::as_array).map_or(1, |a| a.len().max(1))
}

/// getmeas -> weight, fat, blood_pressure, heartrate, blood_oxygen, vo2_max, body.
///
/// `known_heights` are (epoch, metres) heights from earlier calls (an incremental call rarely
/// carries the height entered at sign-up); heights in `list` are added to them.
pub fn getmeas(ctx: &Context, list: &MeasureList, known_heights: &[(i64, f64)]) -> Harmonized {
    use Resource::*;
    let mut out = Out::new(ctx, "getmeas", &[Weight, Fat, BloodPressure, Heartrate, BloodOxygen, Vo2Max, Body]);
    let mut zones = Stamper::new(&ctx.zones, Zone::new(list.timezone.as_deref().or(ctx.time_zone.as_deref())));

    let mut decoded: Vec<(&MeasureGroup, &Value)> = Vec::new();
    for item in &list.groups {
        let n = measure_count(&item.raw);
        out.stats.samples_in += n;
        match &item.value {
            Err(e) => out.quarantine(
                None,
                QuarantineReason::Malformed,
                format!("measure group does not decode: {e}"),
                item.raw.clone(),
                n,
            ),
            Ok(g) if g.category == Some(2) => {
                let detail = format!("group {} is a user objective (category 2), not a measure", g.grpid);
                out.quarantine(None, QuarantineReason::Objective, detail, item.raw.clone(), n);
            }
            Ok(g) => decoded.push((g, &item.raw)),
        }
    }
    let keys = decoded.iter().map(|(g, raw)| (g.grpid, g.modified, *raw)).collect();
    let kept = dedupe(&mut out, keys, "measure group", |i| decoded[i].0.measures.len().max(1));

    let mut groups = Vec::with_capacity(kept.len());
    for (i, copies) in kept {
        let (g, raw) = decoded[i];
        let before = out.stats.clone();
        if g.measures.is_empty() {
            out.unmapped("getmeas group without measures".into(), 1);
        }
        let mut values = BTreeMap::new();
        for (j, m) in g.measures.iter().enumerate() {
            let Some(v) = scaled(m.value, m.unit) else {
                let detail =
                    format!("meastype {} of group {}: value {} x 10^{} is out of range", m.kind, g.grpid, m.value, m.unit);
                out.quarantine(None, QuarantineReason::Malformed, detail, one_measure(raw, j), 1);
                continue;
            };
            let Some(mt) = codes::meas_type(m.kind) else {
                let detail = format!("unknown meastype {} in group {}", m.kind, g.grpid);
                out.quarantine(None, QuarantineReason::UnknownMeastype, detail, one_measure(raw, j), 1);
                continue;
            };
            if !MAPPED_MEASTYPES.contains(&m.kind) {
                out.unmapped(format!("getmeas meastype {} ({})", m.kind, mt.name), 1);
                continue;
            }
            if BODY_MEASTYPES.contains(&m.kind) && m.position.is_some_and(|p| p != WHOLE_BODY) {
                out.unmapped(
                    format!("getmeas meastype {} ({}) at position {}", m.kind, mt.name, m.position.unwrap_or_default()),
                    1,
                );
                continue;
            }
            match values.entry(m.kind) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(v);
                    out.stats.mapped += 1;
                }
                std::collections::btree_map::Entry::Occupied(e) if *e.get() == v => out.stats.mapped += 1,
                std::collections::btree_map::Entry::Occupied(e) => {
                    let detail =
                        format!("meastype {} twice in group {} ({} and {v}); the first is kept", m.kind, g.grpid, e.get());
                    out.quarantine(None, QuarantineReason::ConflictingDuplicate, detail, one_measure(raw, j), 1);
                }
            }
        }
        for (have, missing) in [(10, 9), (9, 10)] {
            if let Some(v) = values.get(&have).copied().filter(|_| !values.contains_key(&missing)) {
                values.remove(&have);
                // Every measure that counted as mapped for this code (the first and its
                // identical repeats) moves to the quarantine.
                let n = g.measures.iter().filter(|m| m.kind == have && scaled(m.value, m.unit) == Some(v)).count();
                out.stats.mapped -= n;
                let j = g.measures.iter().position(|m| m.kind == have).unwrap_or(0);
                let detail = format!("group {} has meastype {have} but no {missing}: a blood pressure needs both", g.grpid);
                out.quarantine(Some(BloodPressure), QuarantineReason::IncompleteGroup, detail, one_measure(raw, j), n);
            }
        }
        let fallback = if values.contains_key(&9) {
            SourceType::Cuff
        } else if BODY_MEASTYPES.iter().any(|t| values.contains_key(t)) {
            SourceType::Scale
        } else {
            SourceType::Unknown
        };
        let device = g.deviceid.as_deref().or(g.hash_deviceid.as_deref());
        let source = source_of(g.modelid, g.model.as_deref(), g.attrib, device, fallback);
        groups.push(Group {
            grpid: g.grpid,
            date: g.date,
            created: g.created,
            modified: g.modified,
            attrib: g.attrib,
            source,
            raw,
            values,
        });
        repeat_counts(&mut out, &before, copies);
    }

    let mut heights: Vec<(i64, f64)> = known_heights.to_vec();
    heights.extend(groups.iter().filter_map(|g| g.get(HEIGHT).map(|h| (g.date, h))));
    heights.sort_by_key(|h| h.0);
    for g in &groups {
        // The zone of the day the group falls in (the current zone only where no record says).
        let zone = zones.at(g.date).clone();
        let zone = &zone;
        weight::from_getmeas(&mut out, g, zone);
        fat::from_getmeas(&mut out, g, zone);
        blood_pressure::from_getmeas(&mut out, g, zone);
        heartrate::from_getmeas(&mut out, g, zone);
        blood_oxygen::from_getmeas(&mut out, g, zone);
        vo2_max::from_getmeas(&mut out, g, zone);
        let height = heights.iter().take_while(|h| h.0 <= g.date).last().map(|h| h.1);
        body::from_getmeas(&mut out, ctx, g, zone, height);
    }
    out.finish()
}

// ---------------------------------------------------------------------------------------------
// getactivity

/// getactivity -> activity (one row per day and source).
pub fn getactivity(ctx: &Context, items: &[Item<Activity>]) -> Harmonized {
    let mut out = Out::new(ctx, "getactivity", &[Resource::Activity]);
    let mut ok = Vec::new();
    for item in items {
        out.stats.samples_in += 1;
        match &item.value {
            Err(e) => {
                out.quarantine(None, QuarantineReason::Malformed, format!("activity does not decode: {e}"), item.raw.clone(), 1)
            }
            Ok(a) => match NaiveDate::parse_from_str(a.date.trim(), "%Y-%m-%d") {
                Ok(d) => ok.push((a, d, &item.raw)),
                Err(_) => {
                    let detail = format!("activity date '{}' is not YYYY-MM-DD", a.date);
                    out.quarantine(Some(Resource::Activity), QuarantineReason::Malformed, detail, item.raw.clone(), 1);
                }
            },
        }
    }
    let keys = ok.iter().map(|(a, d, raw)| (activity::natural_key(a, *d), a.modified, *raw)).collect();
    for (i, copies) in dedupe(&mut out, keys, "activity day and source", |_| 1) {
        let (a, d, raw) = ok[i];
        out.stats.mapped += 1 + copies;
        activity::push(&mut out, ctx, a, d, raw);
    }
    out.finish()
}

// ---------------------------------------------------------------------------------------------
// getintradayactivity

/// getintradayactivity -> steps, distance, calories_active, heartrate, blood_oxygen, hrv,
/// respiratory_rate. Samples carry no zone: each takes the zone of its local day
/// (`ctx.zones`; the user's zone when the timeline is empty).
pub fn getintradayactivity(ctx: &Context, series: &BTreeMap<i64, Item<IntradaySample>>) -> Harmonized {
    use Resource::*;
    let mut out =
        Out::new(ctx, "getintradayactivity", &[Steps, Distance, CaloriesActive, Heartrate, BloodOxygen, Hrv, RespiratoryRate]);
    let mut zones = Stamper::new(&ctx.zones, Zone::new(ctx.time_zone.as_deref()));
    for (t, item) in series {
        out.stats.samples_in += 1;
        let s = match &item.value {
            Ok(s) => s,
            Err(e) => {
                let raw = serde_json::json!({ "timestamp": t, "sample": item.raw });
                out.quarantine(None, QuarantineReason::Malformed, format!("intraday sample at {t} does not decode: {e}"), raw, 1);
                continue;
            }
        };
        let mapped = [s.steps.is_some(), s.distance.is_some(), s.calories.is_some(), s.heart_rate.is_some()]
            .into_iter()
            .chain([s.spo2_auto.is_some(), s.rmssd.is_some(), s.rr.is_some()])
            .any(|b| b);
        if !mapped {
            let fields: Vec<&str> = item
                .raw
                .as_object()
                .map(|o| o.keys().map(String::as_str).filter(|k| !SAMPLE_META.contains(k)).collect())
                .unwrap_or_default();
            out.unmapped(format!("getintradayactivity sample with only [{}]", fields.join(", ")), 1);
            continue;
        }
        out.stats.mapped += 1;
        for (field, present) in [
            ("elevation", s.elevation.is_some()),
            ("stroke", s.stroke.is_some()),
            ("pool_lap", s.pool_lap.is_some()),
            ("sdnn1", s.sdnn1.is_some()),
            ("hrv_quality", s.hrv_quality.is_some()),
            ("core_body_temperature", s.core_body_temperature.is_some()),
            ("chest_movement_rate", s.chest_movement_rate.is_some()),
        ] {
            if present {
                *out.stats.unmapped_fields.entry(format!("getintradayactivity {field}")).or_default() += 1;
            }
        }
        let source = source_of(s.model_id, s.model.as_deref(), None, s.deviceid.as_deref(), SourceType::Watch);
        let sample = IntradayRow { t: *t, s, source: &source, zone: zones.at(*t), raw: &item.raw };
        steps::from_intraday(&mut out, &sample);
        distance::from_intraday(&mut out, &sample);
        calories_active::from_intraday(&mut out, &sample);
        heartrate::from_intraday(&mut out, &sample);
        blood_oxygen::from_intraday(&mut out, &sample);
        hrv::from_intraday(&mut out, &sample);
        respiratory_rate::from_intraday(&mut out, &sample);
    }
    out.finish()
}

/// Keys of an intraday sample that describe the device, not a measurement.
const SAMPLE_META: [&str; 4] = ["deviceid", "model", "model_id", "modelid"];

/// One intraday sample with its context.
pub(crate) struct IntradayRow<'a> {
    pub t: i64,
    pub s: &'a IntradaySample,
    pub source: &'a Source,
    pub zone: &'a Zone,
    pub raw: &'a Value,
}

impl IntradayRow<'_> {
    /// End of the sample's interval: start + duration (60 s, the watch's period, when absent).
    pub fn end(&self) -> i64 {
        self.t.saturating_add(self.s.duration.filter(|d| *d > 0).unwrap_or(60))
    }
}

// ---------------------------------------------------------------------------------------------
// sleep getsummary

/// sleep getsummary -> sleep (one row per session).
pub fn sleep_getsummary(ctx: &Context, items: &[Item<SleepSummary>]) -> Harmonized {
    let mut out = Out::new(ctx, "sleep_getsummary", &[Resource::Sleep]);
    let mut ok = Vec::new();
    for item in items {
        out.stats.samples_in += 1;
        match &item.value {
            Err(e) => out.quarantine(
                None,
                QuarantineReason::Malformed,
                format!("sleep summary does not decode: {e}"),
                item.raw.clone(),
                1,
            ),
            Ok(s) => {
                let window = match (s.startdate, s.enddate) {
                    (Some(a), Some(b)) => b.checked_sub(a).filter(|d| *d >= 0).map(|d| (a, b, d)),
                    _ => None,
                };
                let checked = window
                    .ok_or_else(|| format!("sleep summary {} has no valid startdate/enddate", s.id))
                    .and_then(|w| sleep::efficiency(s.data.sleep_efficiency).map(|e| (w, e)));
                match checked {
                    Ok(((start, end, duration), efficiency)) => {
                        ok.push((s, sleep::Session { start, end, duration, efficiency }, &item.raw))
                    }
                    Err(detail) => {
                        out.quarantine(Some(Resource::Sleep), QuarantineReason::Malformed, detail, item.raw.clone(), 1)
                    }
                }
            }
        }
    }
    let keys = ok.iter().map(|(s, _, raw)| (s.id, s.modified, *raw)).collect();
    for (i, copies) in dedupe(&mut out, keys, "sleep summary id", |_| 1) {
        let (s, session, raw) = &ok[i];
        out.stats.mapped += 1 + copies;
        sleep::push(&mut out, ctx, s, session, raw);
    }
    out.finish()
}

/// A sleep session's bedtime window, to link sleep get samples to their sleep row, with the
/// device that recorded it and its time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SleepSession {
    /// Withings getsummary id.
    pub withings_id: i64,
    pub start: i64,
    pub end: i64,
    /// `hash_deviceid` of the session, when Withings gives it.
    pub device: Option<String>,
    pub time_zone: Option<String>,
    /// Withings `created` and `modified` of the session (sleep_cycle's created/updated_at).
    pub created: Option<i64>,
    pub modified: Option<i64>,
}

impl SleepSession {
    /// The sessions of decoded getsummary records (records without a window are skipped).
    pub fn from_summaries(items: &[Item<SleepSummary>]) -> Vec<SleepSession> {
        let mut v: Vec<SleepSession> = items
            .iter()
            .filter_map(|i| i.value.as_ref().ok())
            .filter_map(|s| {
                Some(SleepSession {
                    withings_id: s.id,
                    start: s.startdate?,
                    end: s.enddate?,
                    device: s.hash_deviceid.clone().filter(|d| !d.is_empty()),
                    time_zone: s.timezone.clone(),
                    created: s.created,
                    modified: s.modified,
                })
            })
            .collect();
        v.sort_by_key(|s| (s.start, s.withings_id));
        v
    }
}

// ---------------------------------------------------------------------------------------------
// sleep get

/// The sleep get series harmonized, with their units (sleep_stream `metric` and `unit`).
pub(crate) const SLEEP_SERIES: [(&str, &str); 10] = [
    ("hr", "bpm"),
    ("rr", "breaths/min"),
    ("rmssd", "ms"),
    ("sdnn_1", "ms"),
    ("snoring", "s"),
    ("hrv_quality", "score"),
    ("mvt_score", "score"),
    ("chest_movement_rate", "events/min"),
    ("withings_index", "events/h"),
    ("breathing_sounds", "s"),
];

fn series_of<'a>(s: &'a SleepSegment, name: &str) -> Option<&'a BTreeMap<i64, f64>> {
    match name {
        "hr" => s.hr.as_ref(),
        "rr" => s.rr.as_ref(),
        "rmssd" => s.rmssd.as_ref(),
        "sdnn_1" => s.sdnn_1.as_ref(),
        "snoring" => s.snoring.as_ref(),
        "hrv_quality" => s.hrv_quality.as_ref(),
        "mvt_score" => s.mvt_score.as_ref(),
        "chest_movement_rate" => s.chest_movement_rate.as_ref(),
        "withings_index" => s.withings_index.as_ref(),
        "breathing_sounds" => s.breathing_sounds.as_ref(),
        _ => None,
    }
}

/// A raw segment without its series: the quarantine record of its stage alone (its points
/// are harmonized on their own).
fn without_series(raw: &Value) -> Value {
    let mut raw = raw.clone();
    if let Some(o) = raw.as_object_mut() {
        o.retain(|k, _| !SLEEP_SERIES.iter().any(|(s, _)| s == k));
    }
    raw
}

/// Samples a raw segment carries: the segment (its stage) and every point of its series.
fn segment_samples(raw: &Value) -> usize {
    1 + SLEEP_SERIES.iter().filter_map(|(k, _)| raw.get(*k).and_then(Value::as_object)).map(|o| o.len()).sum::<usize>()
}

/// One point of a sleep series, with its segment's context.
pub(crate) struct SleepPoint<'a> {
    pub metric: &'static str,
    pub unit: &'static str,
    pub t: i64,
    pub value: f64,
    pub source: &'a Source,
    pub session: Option<&'a SleepSession>,
}

/// One sleep get segment, with its context.
pub(crate) struct SleepStage<'a> {
    pub seg: &'a SleepSegment,
    pub state: i64,
    pub stage: i64,
    pub source: &'a Source,
    pub session: Option<&'a SleepSession>,
    pub raw: &'a Value,
}

/// The session of `device` whose window contains `t` (a session or a sample without a device
/// matches any device). Sessions are sorted by start: only those starting by `t` are looked at.
fn session_at<'a>(sessions: &'a [SleepSession], device: Option<&str>, t: i64) -> Option<&'a SleepSession> {
    let started = sessions.partition_point(|s| s.start <= t);
    let same_device = |s: &&SleepSession| match (s.device.as_deref(), device) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    sessions[..started].iter().rev().filter(same_device).find(|s| t <= s.end)
}

/// sleep get -> hypnogram, sleep_stream, heartrate, hrv, respiratory_rate. `sessions` (from
/// getsummary) link each sample to the sleep row whose bedtime window contains it.
pub fn sleep_get(ctx: &Context, answer: &SleepGet, sessions: &[SleepSession]) -> Harmonized {
    use Resource::*;
    let mut out = Out::new(ctx, "sleep_get", &[Hypnogram, SleepCycle, SleepStream, Heartrate, Hrv, RespiratoryRate]);
    // The staged segments of each session, for its sleep_cycle row.
    let mut cycles: BTreeMap<i64, sleep_cycle::Cycle> = BTreeMap::new();
    let mut zones = Stamper::new(&ctx.zones, Zone::new(ctx.time_zone.as_deref()));
    let fallback = codes::sleep_device_class(answer.model);
    // (metric, device, t) -> value: a point repeated by two segments is one sample.
    let mut seen: HashMap<(&'static str, Option<Arc<str>>, i64), f64> = HashMap::new();
    let mut segments_seen: std::collections::HashSet<(Option<Arc<str>>, i64)> = std::collections::HashSet::new();
    for item in &answer.segments {
        let n = segment_samples(&item.raw);
        out.stats.samples_in += n;
        let seg = match &item.value {
            Ok(seg) if seg.enddate >= seg.startdate => seg,
            Ok(seg) => {
                let detail = format!("sleep segment ends ({}) before it starts ({})", seg.enddate, seg.startdate);
                out.quarantine(Some(Hypnogram), QuarantineReason::Malformed, detail, item.raw.clone(), n);
                continue;
            }
            Err(e) => {
                out.quarantine(
                    None,
                    QuarantineReason::Malformed,
                    format!("sleep segment does not decode: {e}"),
                    item.raw.clone(),
                    n,
                );
                continue;
            }
        };
        let source = source_of(seg.model_id, seg.model.as_deref(), None, seg.hash_deviceid.as_deref(), fallback);
        let device = source.device_id.as_deref();
        let session = session_at(sessions, device, seg.startdate);
        // The zone of the night the segment belongs to (a traveller's nights differ); outside
        // a session, the zone of the segment's local day.
        let zone = match session.and_then(|s| s.time_zone.as_deref()) {
            Some(z) => Zone::new(Some(z)),
            None => zones.at(seg.startdate).clone(),
        };
        let known = seg.state.and_then(|s| codes::SLEEP_STATES.iter().find(|(c, _, _)| *c == s));
        // The first segment with a known state takes its (device, start) slot.
        let first = known.is_some() && segments_seen.insert((source.device_id.clone(), seg.startdate));
        match known {
            Some(_) if !first => {
                let detail = format!("two segments start at {} on one device; the first is kept", seg.startdate);
                let raw = without_series(&item.raw);
                out.quarantine(Some(Hypnogram), QuarantineReason::ConflictingDuplicate, detail, raw, 1);
            }
            Some((state, _, stage)) => {
                out.stats.mapped += 1;
                let st = SleepStage { seg, state: *state, stage: *stage, source: &source, session, raw: &item.raw };
                if let Some(s) = session {
                    sleep_cycle::collect(&mut cycles, s, &st, &zone);
                }
                hypnogram::from_sleep_get(&mut out, &st, &zone);
                sleep_stream::stage_from_sleep_get(&mut out, &st, &zone);
            }
            None => {
                let detail = match seg.state {
                    Some(s) => format!("unknown sleep state {s} in the segment starting at {}", seg.startdate),
                    None => format!("the segment starting at {} has no state", seg.startdate),
                };
                let raw = without_series(&item.raw);
                out.quarantine(Some(Hypnogram), QuarantineReason::UnknownSleepState, detail, raw, 1);
            }
        }
        for (metric, unit) in SLEEP_SERIES {
            let Some(points) = series_of(seg, metric) else { continue };
            for (&t, &value) in points {
                match seen.entry((metric, source.device_id.clone(), t)) {
                    std::collections::hash_map::Entry::Occupied(e) if *e.get() == value => {
                        out.stats.mapped += 1;
                        continue;
                    }
                    std::collections::hash_map::Entry::Occupied(e) => {
                        let detail = format!(
                            "{metric} at {t} appears in two segments with values {} and {value}; the first is kept",
                            e.get()
                        );
                        let raw = serde_json::json!({ "startdate": seg.startdate, "enddate": seg.enddate, metric: { t.to_string(): value } });
                        out.quarantine(Some(SleepStream), QuarantineReason::ConflictingDuplicate, detail, raw, 1);
                        continue;
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(value);
                    }
                }
                out.stats.mapped += 1;
                let p = SleepPoint { metric, unit, t, value, source: &source, session: session_at(sessions, device, t) };
                sleep_stream::point_from_sleep_get(&mut out, &p, &zone, &item.raw);
                match metric {
                    "hr" => heartrate::from_sleep_get(&mut out, &p, &zone, &item.raw),
                    "rmssd" => hrv::from_sleep_get(&mut out, &p, &zone, &item.raw),
                    "rr" => respiratory_rate::from_sleep_get(&mut out, &p, &zone, &item.raw),
                    _ => {}
                }
            }
        }
    }
    for cycle in cycles.into_values() {
        sleep_cycle::push(&mut out, cycle);
    }
    out.finish()
}

// ---------------------------------------------------------------------------------------------
// getworkouts

/// getworkouts -> workouts.
pub fn getworkouts(ctx: &Context, items: &[Item<Workout>]) -> Harmonized {
    let mut out = Out::new(ctx, "getworkouts", &[Resource::Workouts]);
    let mut ok = Vec::new();
    for item in items {
        out.stats.samples_in += 1;
        match &item.value {
            Err(e) => {
                out.quarantine(None, QuarantineReason::Malformed, format!("workout does not decode: {e}"), item.raw.clone(), 1)
            }
            Ok(w) => match (w.startdate, w.enddate) {
                (Some(a), Some(b)) if b >= a => ok.push((w, a, b, &item.raw)),
                _ => {
                    let detail = format!("workout {} has no valid startdate/enddate", w.id);
                    out.quarantine(Some(Resource::Workouts), QuarantineReason::Malformed, detail, item.raw.clone(), 1);
                }
            },
        }
    }
    let keys = ok.iter().map(|(w, _, _, raw)| (w.id, w.modified, *raw)).collect();
    for (i, copies) in dedupe(&mut out, keys, "workout id", |_| 1) {
        let (w, a, b, raw) = ok[i];
        out.stats.mapped += 1 + copies;
        workouts::push(&mut out, ctx, w, a, b, raw);
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_values_equal_the_decimal_they_stand_for() {
        // Whatever the exponent, the result is the double nearest the decimal value, i.e.
        // what parsing the decimal text gives (the standard is correctly rounded parsing).
        for unit in -15..=3 {
            for value in
                [0i64, 1, 7, 20, 68, 123, 7200, 72450, 19467, 95854, 1_000_001, -4125, 987_654_321, 9_007_199_254_740_992]
            {
                let text = format!("{value}e{unit}");
                assert_eq!(scaled(value, unit), Some(text.parse::<f64>().unwrap()), "{text}");
            }
        }
        assert_eq!(scaled(72450, -3), Some(72.45));
        assert_eq!(scaled(5, 16), None);
        assert_eq!(scaled(i64::MAX, 0), None);
    }

    #[test]
    fn zone_offsets_follow_dst_on_both_hemispheres() {
        let paris = Zone::new(Some("Europe/Paris"));
        assert_eq!(paris.offset_at(1_704_067_200), Some(3600)); // 2024-01-01, winter
        assert_eq!(paris.offset_at(1_718_452_800), Some(7200)); // 2024-06-15, summer
        let sydney = Zone::new(Some("Australia/Sydney"));
        assert_eq!(sydney.offset_at(1_704_067_200), Some(39600)); // January is summer there
        assert_eq!(sydney.offset_at(1_718_452_800), Some(36000));
        assert_eq!(Zone::new(Some("Asia/Kolkata")).offset_at(1_718_452_800), Some(19800));
        // 2024-06-15T23:30:00Z is already the 16th in Paris.
        assert_eq!(paris.local_date(1_718_494_200), NaiveDate::from_ymd_opt(2024, 6, 16));
        let unknown = Zone::new(Some("Mars/Olympus_Mons"));
        assert_eq!(unknown.name.as_deref(), Some("Mars/Olympus_Mons"));
        assert_eq!(unknown.offset_at(0), None);
        assert_eq!(unknown.local_date(1_718_494_200), NaiveDate::from_ymd_opt(2024, 6, 15));
        assert_eq!(Zone::new(Some("  ")).name, None);
    }

    #[test]
    fn manual_entries_and_unknown_models_get_their_source_type() {
        let s = source_of(Some(6), None, Some(2), Some("dev"), SourceType::Unknown);
        assert_eq!((s.kind, s.model.as_deref()), (SourceType::Manual, Some("Body Cardio")));
        let s = source_of(Some(13), Some(""), Some(0), None, SourceType::Unknown);
        assert_eq!((s.kind, s.model.as_deref()), (SourceType::SleepMat, Some("Sleep Analyzer")));
        let s = source_of(Some(4242), Some("Future Gadget"), Some(0), Some(" "), SourceType::Scale);
        assert_eq!((s.kind, s.model.as_deref(), s.device_id), (SourceType::Scale, Some("Future Gadget"), None));
    }

    #[test]
    fn efficiency_is_a_ratio_whatever_scale_withings_sends() {
        assert_eq!(sleep::efficiency(Some(0.86)), Ok(Some(0.86)));
        assert_eq!(sleep::efficiency(Some(1.0)), Ok(Some(1.0)));
        assert_eq!(sleep::efficiency(Some(83.0)), Ok(Some(0.83)));
        assert_eq!(sleep::efficiency(None), Ok(None));
        assert!(sleep::efficiency(Some(-0.1)).is_err());
        assert!(sleep::efficiency(Some(140.0)).unwrap_err().contains("140"));
    }

    #[test]
    fn sleep_samples_link_to_the_session_of_their_own_device() {
        let s = |id, start, end, device: Option<&str>| SleepSession {
            withings_id: id,
            start,
            end,
            device: device.map(String::from),
            time_zone: None,
            created: None,
            modified: None,
        };
        // A watch night and a mat night overlap; sessions are sorted by start.
        let sessions = vec![s(1, 1000, 40_000, Some("watch")), s(2, 2000, 30_000, Some("mat")), s(3, 50_000, 60_000, None)];
        assert_eq!(session_at(&sessions, Some("mat"), 2500).map(|s| s.withings_id), Some(2));
        assert_eq!(session_at(&sessions, Some("watch"), 2500).map(|s| s.withings_id), Some(1));
        assert_eq!(session_at(&sessions, Some("mat"), 35_000).map(|s| s.withings_id), None);
        assert_eq!(session_at(&sessions, Some("mat"), 55_000).map(|s| s.withings_id), Some(3));
        assert_eq!(session_at(&sessions, None, 1500).map(|s| s.withings_id), Some(1));
        assert_eq!(session_at(&sessions, Some("watch"), 999).map(|s| s.withings_id), None);
    }

    #[test]
    fn a_sleep_get_of_one_session_keeps_only_that_session_s_cycle() {
        const T: i64 = 1_718_000_000; // June 2024: plausible epochs
        let session = |id, start: i64, end: i64, device: &str| SleepSession {
            withings_id: id,
            start: T + start,
            end: T + end,
            device: Some(device.to_string()),
            time_zone: Some("Europe/Paris".into()),
            created: None,
            modified: None,
        };
        // The watch night 1 overlaps the mat night 2; a sleep get of night 1's window returns
        // the mat's segments from 2000 on too: night 2's row from them would be partial.
        let sessions = vec![session(2, 1000, 30_000, "mat"), session(1, 2000, 40_000, "watch")];
        let seg = |a: i64, b: i64, state: i64, device: &str| serde_json::json!({"startdate": T + a, "enddate": T + b, "state": state, "hash_deviceid": device});
        let answer = SleepGet::from_body(serde_json::json!({"model": 16, "series": [
            seg(2000, 5000, 1, "watch"), seg(5000, 9000, 2, "watch"), seg(2000, 4000, 1, "mat"), seg(4000, 8000, 3, "mat"),
        ]}))
        .unwrap();
        let ctx = Context {
            user_id: "u".into(),
            withings_user_id: "1".into(),
            run_id: "r".into(),
            ingested_at: Utc::now(),
            time_zone: None,
            zones: Default::default(),
        };
        let mut h = sleep_get(&ctx, &answer, &sessions);
        assert_eq!(h.tables[&Resource::SleepCycle].num_rows(), 2, "{:?} {:?}", h.quarantine, h.stats);
        h.keep_cycles_of(1);
        let cycles = &h.tables[&Resource::SleepCycle];
        assert_eq!(cycles.num_rows(), 1);
        let ids = cycles.column_by_name("withings_sleep_id").unwrap();
        assert_eq!(arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(ids).value(0), 1);
    }

    #[test]
    fn summary_ids_are_stable_and_distinct() {
        let a = summary_id(Resource::Sleep, "u1", "42");
        assert_eq!(a, summary_id(Resource::Sleep, "u1", "42"));
        assert_ne!(a, summary_id(Resource::Sleep, "u2", "42"));
        assert_ne!(a, summary_id(Resource::Workouts, "u1", "42"));
        assert_eq!(uuid::Uuid::parse_str(&a).unwrap().get_version_num(), 5);
    }
}
