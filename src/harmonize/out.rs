//! What a harmonize call returns ([`Harmonized`], its [`Stats`]) and the builder every
//! endpoint uses to make it ([`Out`]): one [`Table`] per resource the endpoint feeds, the
//! quarantine and the counts. Also the steps the endpoints share: [`dedupe`] of records
//! Withings sent twice, [`repeat_counts`] for identical copies, and [`point`], the row of a
//! `timestamp`/`value`/`unit` table from one timed sample.

use std::collections::{BTreeMap, HashMap};

use arrow::array::RecordBatch;
use serde_json::Value;

use super::table::{self, Table};
use super::{Context, QuarantineReason, Quarantined, Source, Zone};
use crate::schema::Resource;

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
}

/// The tables of one call plus its bookkeeping.
pub(super) struct Out {
    endpoint: &'static str,
    tables: Vec<Table>,
    quarantine: Vec<Quarantined>,
    pub(super) stats: Stats,
}

impl Out {
    pub(super) fn new(ctx: &Context, endpoint: crate::withings::Endpoint, resources: &[Resource]) -> Out {
        let endpoint = endpoint.as_str();
        Out {
            endpoint,
            tables: resources.iter().map(|r| Table::new(*r, ctx, endpoint)).collect(),
            quarantine: Vec::new(),
            stats: Stats::default(),
        }
    }

    pub(super) fn table(&mut self, r: Resource) -> &mut Table {
        self.tables.iter_mut().find(|t| t.resource == r).expect("the endpoint declares every resource it feeds")
    }

    /// Quarantines `samples` input samples carried by `raw`.
    pub(super) fn quarantine(
        &mut self,
        resource: Option<Resource>,
        reason: QuarantineReason,
        detail: String,
        raw: Value,
        samples: usize,
    ) {
        self.stats.quarantined += samples;
        self.quarantine.push(Quarantined { endpoint: self.endpoint, resource, reason, detail, raw });
    }

    pub(super) fn unmapped(&mut self, label: String, samples: usize) {
        *self.stats.unmapped.entry(label).or_default() += samples;
    }

    /// Pushes the staged row of `r`; a row the schema refuses is quarantined (it already counts
    /// as mapped or not through its record, so no sample count moves).
    pub(super) fn push(&mut self, r: Resource, raw: &Value) {
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

    pub(super) fn finish(self) -> Harmonized {
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
pub(super) fn dedupe<K: std::hash::Hash + Eq>(
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

/// The counts a piece of work added to `stats`, to repeat them for identical copies.
pub(super) fn repeat_counts(out: &mut Out, before: &Stats, copies: usize) {
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

/// A point sample (intraday or sleep) as a row of a `timestamp`/`value`/`unit` table.
#[allow(clippy::too_many_arguments)]
pub(super) fn point(
    out: &mut Out,
    r: Resource,
    source: &Source,
    zone: &Zone,
    at: i64,
    value: f64,
    unit: &'static str,
    raw: &Value,
) {
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
