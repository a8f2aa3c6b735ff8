//! The tables of the lake: the 17 resources, the raw landing of each endpoint and the
//! quarantine, each with its schema, its folder and its SQL name.

use std::fmt;

use crate::schema::{self, Resource, TableSchema};

pub use crate::withings::Endpoint;

/// One table of the lake. The order is the commit order: the raw landing first, so a crash
/// never leaves table rows whose records were not landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TableId {
    /// `_raw/<endpoint>/`, queryable as `raw_<endpoint>`.
    Raw(Endpoint),
    Resource(Resource),
    /// `_quarantine/`, queryable as `quarantine`.
    Quarantine,
}

impl TableId {
    /// Every table: the resources, then the raw landing, then the quarantine.
    pub fn all() -> Vec<TableId> {
        let mut v: Vec<TableId> = Resource::ALL.into_iter().map(TableId::Resource).collect();
        v.extend(Endpoint::ALL.into_iter().map(TableId::Raw));
        v.push(TableId::Quarantine);
        v
    }

    pub fn schema(self) -> &'static TableSchema {
        match self {
            TableId::Resource(r) => r.schema(),
            TableId::Raw(Endpoint::Getintradayactivity | Endpoint::SleepGet) => schema::landing("_raw_dense"),
            TableId::Raw(_) => schema::landing("_raw"),
            TableId::Quarantine => schema::landing("_quarantine"),
        }
    }

    /// The folder of the table under the lake, as path parts.
    pub fn dir(self) -> Vec<&'static str> {
        match self {
            TableId::Resource(r) => vec![r.as_str()],
            TableId::Raw(e) => vec!["_raw", e.as_str()],
            TableId::Quarantine => vec!["_quarantine"],
        }
    }

    /// The SQL table name.
    pub fn sql_name(self) -> String {
        match self {
            TableId::Resource(r) => r.as_str().to_string(),
            TableId::Raw(e) => format!("raw_{}", e.as_str()),
            TableId::Quarantine => "quarantine".to_string(),
        }
    }

    /// The table a folder path (parts under the lake) names, and how many parts it used.
    pub fn from_dir(parts: &[String]) -> Option<(TableId, usize)> {
        match parts {
            [raw, e, ..] if raw == "_raw" => Endpoint::parse(e).map(|e| (TableId::Raw(e), 2)),
            [q, ..] if q == "_quarantine" => Some((TableId::Quarantine, 1)),
            [r, ..] => r.parse::<Resource>().ok().map(|r| (TableId::Resource(r), 1)),
            [] => None,
        }
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sql_name())
    }
}

impl From<Resource> for TableId {
    fn from(r: Resource) -> TableId {
        TableId::Resource(r)
    }
}
