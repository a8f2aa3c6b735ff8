//! Object keys of the lake: the only place that builds them.
//!
//! ```text
//! <lake>/_lake.json
//! <lake>/<resource>/date=YYYY-MM-DD/part-<shard>.parquet   (day grain)
//! <lake>/<resource>/month=YYYY-MM/part-<shard>.parquet     (month grain)
//! <lake>/_raw/<endpoint>/month=YYYY-MM/part-<shard>.parquet    raw landing
//! <lake>/_quarantine/month=YYYY-MM/part-<shard>.parquet        quarantine
//! <lake>/_manifests/<run_id>-<checkpoint>.json
//! <lake>/_state/leases/shard-<shard>.lock
//! <lake>/_events/staged/shard-<shard>/<batch>/<n>-<table>.arrow   changes before their commit
//! <lake>/_events/{pending,delivered,dead}/<sink>/<batch>[-<pass>].jsonl   the outbox
//! <lake>/_events/delivery.lock                                     one deliverer at a time
//! ```
//!
//! Shards are written with four digits (`part-0003`) so listings sort; checkpoints with six.

use chrono::{Datelike, NaiveDate};
use object_store::path::Path;

use super::tables::TableId;
use crate::schema::Grain;
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

/// The folder of a table: `<lake>/<resource>`, `<lake>/_raw/<endpoint>`, `<lake>/_quarantine`.
pub fn table_dir(lake: &Location, table: TableId) -> Path {
    lake.key(&table.dir())
}

/// The one data file of (table, partition, shard).
pub fn data_file(lake: &Location, table: TableId, partition: &Partition, shard: u32) -> Path {
    let mut parts: Vec<String> = table.dir().into_iter().map(String::from).collect();
    parts.push(partition.folder());
    parts.push(format!("part-{shard:04}.parquet"));
    lake.key(&parts.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The (table, partition, shard) of a data file key, or `None` for any other object.
pub fn parse_data_file(lake: &Location, key: &Path) -> Option<(TableId, Partition, u32)> {
    let rel: Vec<String> = key.prefix_match(&lake.prefix)?.map(|p| p.as_ref().to_string()).collect();
    let (table, used) = TableId::from_dir(&rel)?;
    let [folder, file] = &rel[used..] else { return None };
    let (name, value) = folder.split_once('=')?;
    let grain = table.schema().grain;
    if name != grain.partition_key() {
        return None;
    }
    let shard = file.strip_prefix("part-")?.strip_suffix(".parquet")?.parse().ok()?;
    Some((table, Partition { grain, value: value.to_string() }, shard))
}

/// The writer lease of a shard.
pub fn shard_lease(lake: &Location, shard: u32) -> Path {
    lake.key(&["_state", "leases", &format!("shard-{shard:04}.lock")])
}

/// The manifest of one checkpoint of a run.
pub fn manifest(lake: &Location, run_id: &str, checkpoint: u32) -> Path {
    lake.key(&["_manifests", &format!("{run_id}-{checkpoint:06}.json")])
}

/// The folder of one checkpoint's captured changes, written before its partitions (the
/// events of a commit that crashed half-way are recovered from it).
pub fn staged_changes(lake: &Location, shard: u32, batch: &str) -> Path {
    lake.key(&["_events", "staged", &format!("shard-{shard:04}"), batch])
}

/// The folder of every staged change of a shard.
pub fn staged_changes_dir(lake: &Location, shard: u32) -> Path {
    lake.key(&["_events", "staged", &format!("shard-{shard:04}")])
}

/// One captured change file of a checkpoint.
pub fn staged_change_file(lake: &Location, shard: u32, batch: &str, n: usize, table: TableId) -> Path {
    lake.key(&["_events", "staged", &format!("shard-{shard:04}"), batch, &format!("{n:06}-{}.arrow", table.sql_name())])
}

/// `_events`: staged changes, the outbox and the delivery lease.
pub fn events_dir(lake: &Location) -> Path {
    lake.key(&["_events"])
}

/// `_events/files`: where the files sink writes by default (`[events.files] prefix`).
pub fn default_files_sink(lake: &Location) -> Path {
    lake.key(&["_events", "files"])
}

/// `_events/<status>/<sink>` (status: pending, delivered, dead).
pub fn outbox_dir(lake: &Location, status: &str, sink: &str) -> Path {
    lake.key(&["_events", status, sink])
}

/// `_events/<status>`.
pub fn outbox_status_dir(lake: &Location, status: &str) -> Path {
    lake.key(&["_events", status])
}

/// One batch file of the outbox.
pub fn outbox_file(lake: &Location, status: &str, sink: &str, name: &str) -> Path {
    lake.key(&["_events", status, sink, &format!("{name}.jsonl")])
}

/// The delivery lease: one process delivers the outbox at a time.
pub fn delivery_lease(lake: &Location) -> Path {
    lake.key(&["_events", "delivery.lock"])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Resource;

    #[test]
    fn keys_follow_the_documented_layout() {
        let lake = crate::storage::open("memory://keys-layout").unwrap();
        let d = NaiveDate::from_ymd_opt(2024, 6, 9).unwrap();
        let day = Partition::of(Grain::Day, d);
        let month = Partition::of(Grain::Month, d);
        let hr = data_file(&lake, Resource::Heartrate.into(), &day, 3);
        assert_eq!(hr.as_ref(), "heartrate/date=2024-06-09/part-0003.parquet");
        assert_eq!(parse_data_file(&lake, &hr), Some((TableId::Resource(Resource::Heartrate), day.clone(), 3)));
        assert_eq!(data_file(&lake, Resource::Sleep.into(), &month, 0).as_ref(), "sleep/month=2024-06/part-0000.parquet");
        let raw = data_file(&lake, TableId::Raw(super::super::tables::Endpoint::Getmeas), &month, 1);
        assert_eq!(raw.as_ref(), "_raw/getmeas/month=2024-06/part-0001.parquet");
        assert_eq!(parse_data_file(&lake, &raw).map(|t| t.0), Some(TableId::Raw(super::super::tables::Endpoint::Getmeas)));
        // The dense endpoints land by day.
        let sleep_get = TableId::Raw(super::super::tables::Endpoint::SleepGet);
        assert_eq!(sleep_get.schema().grain, Grain::Day);
        let raw = data_file(&lake, sleep_get, &day, 1);
        assert_eq!(raw.as_ref(), "_raw/sleep_get/date=2024-06-09/part-0001.parquet");
        assert_eq!(parse_data_file(&lake, &raw), Some((sleep_get, day, 1)));
        assert_eq!(data_file(&lake, TableId::Quarantine, &month, 0).as_ref(), "_quarantine/month=2024-06/part-0000.parquet");
        assert_eq!(parse_data_file(&lake, &manifest(&lake, "r", 1)), None);
        assert_eq!(manifest(&lake, "run-1", 2).as_ref(), "_manifests/run-1-000002.json");
        assert_eq!(lake_meta(&lake).as_ref(), "_lake.json");
        assert_eq!(outbox_file(&lake, "pending", "hooks", "b-1").as_ref(), "_events/pending/hooks/b-1.jsonl");
        let staged = staged_change_file(&lake, 2, "b-1", 3, Resource::Steps.into());
        assert_eq!(staged.as_ref(), "_events/staged/shard-0002/b-1/000003-steps.arrow");
        assert_eq!(parse_data_file(&lake, &staged), None);
    }
}
