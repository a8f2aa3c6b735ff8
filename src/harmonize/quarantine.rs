//! The quarantine: records kept out of the tables ([`Quarantined`], with a
//! [`QuarantineReason`]), and their form as rows of the lake's quarantine table
//! ([`quarantine_schema`], [`Harmonized::quarantine_batch`]).

use std::sync::Arc;

use arrow::array::{RecordBatch, StringBuilder, TimestampMicrosecondBuilder};
use arrow::datatypes::SchemaRef;
use serde_json::Value;

use super::{Context, Harmonized};
use crate::schema::Resource;

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

impl Harmonized {
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
