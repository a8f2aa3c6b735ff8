//! `withings-lake tables [--pipeline FILE | --lake URL] [--format table|json]`: every table of
//! the lake (resources, then `raw_<endpoint>` and `quarantine`) with its rows, partitions,
//! files and bytes.

use std::collections::BTreeSet;

use clap::{Args, ValueEnum};
use futures::TryStreamExt;
use serde::Serialize;
use withings_lake::lake::{TableId, keys, query};

use super::query::LakeArgs;

#[derive(Debug, Args)]
pub struct TablesArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    #[arg(long, value_enum, default_value_t = TablesFormat::Table)]
    pub format: TablesFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TablesFormat {
    Table,
    Json,
}

#[derive(Debug, Serialize)]
struct TableInfo {
    table: String,
    rows: u64,
    partitions: usize,
    files: usize,
    bytes: u64,
}

pub async fn run(args: TablesArgs) -> anyhow::Result<()> {
    let lake = args.lake.open().await?;
    let ctx = query::session(&lake).await?;
    let mut infos = Vec::new();
    for r in TableId::all() {
        let dir = keys::table_dir(&lake.location, r);
        let files: Vec<object_store::ObjectMeta> = lake.location.store.list(Some(&dir)).try_collect().await?;
        let files: Vec<_> = files.into_iter().filter(|m| m.location.as_ref().ends_with(".parquet")).collect();
        let partitions: BTreeSet<String> =
            files.iter().filter_map(|m| m.location.parts().nth_back(1).map(|p| p.as_ref().to_string())).collect();
        let rows = if files.is_empty() {
            0
        } else {
            let b = query::sql(&ctx, &format!("SELECT count(*) AS n FROM \"{r}\"")).await?;
            b.first()
                .and_then(|b| arrow::array::AsArray::as_primitive_opt::<arrow::datatypes::Int64Type>(b.column(0)))
                .map_or(0, |a| a.value(0) as u64)
        };
        infos.push(TableInfo {
            table: r.sql_name(),
            rows,
            partitions: partitions.len(),
            files: files.len(),
            bytes: files.iter().map(|m| m.size).sum(),
        });
    }
    let text = match args.format {
        TablesFormat::Json => infos.iter().map(|i| serde_json::to_string(i).expect("serializes")).collect::<Vec<_>>().join("\n"),
        TablesFormat::Table => {
            let mut s = format!("{:<18} {:>12} {:>11} {:>7} {:>14}\n", "table", "rows", "partitions", "files", "bytes");
            for i in &infos {
                s.push_str(&format!("{:<18} {:>12} {:>11} {:>7} {:>14}\n", i.table, i.rows, i.partitions, i.files, i.bytes));
            }
            s.trim_end().to_string()
        }
    };
    println!("{text}");
    Ok(())
}
