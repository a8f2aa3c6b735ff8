//! Object keys of the lake: the only place that builds them (STYLE.md, habit 6).
//!
//! ```text
//! <lake>/_lake.json
//! <lake>/<resource>/date=YYYY-MM-DD/part-<shard>.parquet   (day grain)
//! <lake>/<resource>/month=YYYY-MM/part-<shard>.parquet     (month grain)
//! <lake>/_manifests/<run_id>-<checkpoint>.json
//! <lake>/_state/leases/shard-<shard>.lock
//! ```
//!
//! Shards are written with four digits (`part-0003`) so listings sort; checkpoints with six.

use chrono::{Datelike, NaiveDate};
use object_store::path::Path;

use crate::schema::{Grain, Resource};
use crate::storage::Location;

/// One hive partition of a resource: `date=2024-06-10` or `month=2024-06`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition {
    pub grain: Grain,
    /// `YYYY-MM-DD` or `YYYY-MM`.
    pub value: String,
}

impl Partition {
    /// The partition of a calendar date at `grain`.
    pub fn of(grain: Grain, date: NaiveDate) -> Partition {
        let value = match grain {
            Grain::Day => date.format("%Y-%m-%d").to_string(),
            Grain::Month => format!("{:04}-{:02}", date.year(), date.month()),
        };
        Partition { grain, value }
    }

    /// The folder name, `date=...` or `month=...`.
    pub fn folder(&self) -> String {
        format!("{}={}", self.grain.partition_key(), self.value)
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.folder())
    }
}

/// `<lake>/_lake.json`.
pub fn lake_meta(lake: &Location) -> Path {
    lake.key(&["_lake.json"])
}

/// The folder of a resource, `<lake>/<resource>`.
pub fn resource_dir(lake: &Location, resource: Resource) -> Path {
    lake.key(&[resource.as_str()])
}

/// The one data file of (resource, partition, shard).
pub fn data_file(lake: &Location, resource: Resource, partition: &Partition, shard: u32) -> Path {
    lake.key(&[resource.as_str(), &partition.folder(), &format!("part-{shard:04}.parquet")])
}

/// The writer lease of a shard.
pub fn shard_lease(lake: &Location, shard: u32) -> Path {
    lake.key(&["_state", "leases", &format!("shard-{shard:04}.lock")])
}

/// The manifest of one checkpoint of a run.
pub fn manifest(lake: &Location, run_id: &str, checkpoint: u32) -> Path {
    lake.key(&["_manifests", &format!("{run_id}-{checkpoint:06}.json")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_layout() {
        let lake = crate::storage::open("memory://keys-layout").unwrap();
        let d = NaiveDate::from_ymd_opt(2024, 6, 9).unwrap();
        let day = Partition::of(Grain::Day, d);
        let month = Partition::of(Grain::Month, d);
        assert_eq!(data_file(&lake, Resource::Heartrate, &day, 3).as_ref(), "heartrate/date=2024-06-09/part-0003.parquet");
        assert_eq!(data_file(&lake, Resource::Sleep, &month, 0).as_ref(), "sleep/month=2024-06/part-0000.parquet");
        assert_eq!(manifest(&lake, "run-1", 2).as_ref(), "_manifests/run-1-000002.json");
        assert_eq!(lake_meta(&lake).as_ref(), "_lake.json");
    }
}
