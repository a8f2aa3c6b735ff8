//! Querying the lake with DataFusion: every resource registered as a table over its hive
//! folders, and the raw landing (`raw_<endpoint>`) and the quarantine (`quarantine`) too
//! folders, with the partition column typed (`date` a DATE, `month` a 'YYYY-MM' string),
//! and the compiled-in schema as the file schema (files of older versions, which lack columns
//! added since, read with nulls there).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::{Lake, TableId};
use crate::error::{Cause, Classify, ErrorClass};
use crate::schema::Grain;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("query: {0}")]
    Sql(DataFusionError),
    #[error("lake at '{url}': {source}")]
    Setup { url: String, source: Cause },
    #[error(
        "query is read-only: {reason}. It runs SELECT (and WITH, EXPLAIN, SHOW, DESCRIBE) only: the lake is written by \
         runs alone (a file written beside part-NNNN.parquet would duplicate rows for every reader). To export rows, \
         use --output FILE with --format parquet, csv or json"
    )]
    ReadOnly { reason: String },
}

/// A query that does not plan or run is the caller's to fix.
impl Classify for QueryError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Config
    }
}

/// A DataFusion session with every resource of `lake` registered under its name.
pub async fn session(lake: &Lake) -> Result<SessionContext, QueryError> {
    let loc = &lake.location;
    let setup = |source: Cause| QueryError::Setup { url: loc.url.clone(), source };
    // Timestamps are stored in UTC; SQL literals and `TIMESTAMP WITH TIME ZONE` read as UTC.
    // `information_schema` lets `SHOW TABLES` and `SHOW COLUMNS FROM <table>` list what is here.
    let config = SessionConfig::new().set_str("datafusion.execution.time_zone", "UTC").with_information_schema(true);
    let ctx = SessionContext::new_with_config(config);
    let store_url = url::Url::parse(&loc.store_url).map_err(|e| setup(e.into()))?;
    ctx.register_object_store(&store_url, loc.store.clone());
    for t in TableId::all() {
        let schema = t.schema();
        let dir = super::keys::table_dir(loc, t);
        let table_url = ListingTableUrl::parse(format!("{}{}/", loc.store_url, dir.as_ref())).map_err(|e| setup(e.into()))?;
        let partition_type = match schema.grain {
            Grain::Day => DataType::Date32,
            Grain::Month => DataType::Utf8,
        };
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![(schema.grain.partition_key().to_string(), partition_type)]);
        let config = ListingTableConfig::new(table_url).with_listing_options(options).with_schema(schema.arrow());
        let table = ListingTable::try_new(config).map_err(|e| setup(e.into()))?;
        ctx.register_table(t.sql_name(), Arc::new(table)).map_err(|e| setup(e.into()))?;
    }
    // `users`: each person's application, Vital and Withings ids (one file per shard).
    let dir = super::users::dir(lake);
    let table_url = ListingTableUrl::parse(format!("{}{}/", loc.store_url, dir.as_ref())).map_err(|e| setup(e.into()))?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new(table_url).with_listing_options(options).with_schema(super::users::schema());
    let table = ListingTable::try_new(config).map_err(|e| setup(e.into()))?;
    ctx.register_table("users", Arc::new(table)).map_err(|e| setup(e.into()))?;
    Ok(ctx)
}

/// What a query may plan: no DDL (`CREATE [EXTERNAL] TABLE`, `DROP`...), no DML (`INSERT`,
/// `UPDATE`, `DELETE`, `COPY ... TO`) and no statements (`SET`, transactions, `PREPARE`).
fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

/// Runs one read-only SQL statement and collects its rows; a statement that would write
/// (anywhere: the lake, a file, the session) is [`QueryError::ReadOnly`] before it runs.
pub async fn sql(ctx: &SessionContext, query: &str) -> Result<Vec<RecordBatch>, QueryError> {
    let plan = ctx.state().create_logical_plan(query).await.map_err(QueryError::Sql)?;
    read_only().verify_plan(&plan).map_err(|e| QueryError::ReadOnly { reason: e.strip_backtrace() })?;
    ctx.execute_logical_plan(plan).await.map_err(QueryError::Sql)?.collect().await.map_err(QueryError::Sql)
}
