//! `withings-lake schema [RESOURCE] [--format table|json|sql]`: prints the compiled-in table
//! schemas (common columns included), one resource or all of them.

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::pretty::pretty_format_batches;
use clap::{Args, ValueEnum};
use std::io::Write;
use std::sync::Arc;
use withings_lake::schema::{Resource, TableSchema};

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// One resource (activity, blood_oxygen, ..., workouts); every resource when left out.
    #[arg(value_parser = parse_resource)]
    pub resource: Option<Resource>,
    /// `table` (columns with type, unit, Vital field, description), `json` (the full schema
    /// file, common columns included) or `sql` (a CREATE TABLE for DuckDB or DataFusion).
    #[arg(long, value_enum, default_value_t = SchemaFormat::Table)]
    pub format: SchemaFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SchemaFormat {
    Table,
    Json,
    Sql,
}

fn parse_resource(s: &str) -> Result<Resource, String> {
    s.parse::<Resource>().map_err(|e| e.to_string())
}

pub fn run(args: SchemaArgs) -> anyhow::Result<()> {
    let tables: Vec<&TableSchema> = match args.resource {
        Some(r) => vec![r.schema()],
        None => Resource::ALL.iter().map(|r| r.schema()).collect(),
    };
    let text = match (args.format, args.resource) {
        (SchemaFormat::Json, Some(_)) => tables[0].to_json(),
        (SchemaFormat::Json, None) => serde_json::to_string_pretty(&tables)?,
        (SchemaFormat::Sql, _) => tables.iter().map(|t| t.to_sql()).collect::<Vec<_>>().join("\n"),
        (SchemaFormat::Table, Some(_)) => columns_table(tables[0])?,
        (SchemaFormat::Table, None) => resources_table(&tables)?,
    };
    // `schema | head` closes the pipe early: that is not an error.
    match writeln!(std::io::stdout().lock(), "{}", text.trim_end()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn strings(header: &[&str], rows: Vec<Vec<String>>) -> anyhow::Result<String> {
    let fields: Vec<Field> = header.iter().map(|h| Field::new(*h, DataType::Utf8, false)).collect();
    let columns =
        (0..header.len()).map(|i| Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r[i].as_str()))) as _).collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    Ok(pretty_format_batches(&[batch])?.to_string())
}

fn columns_table(t: &TableSchema) -> anyhow::Result<String> {
    let rows = t
        .columns
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.data_type.name().to_string(),
                if c.nullable { "yes" } else { "no" }.to_string(),
                c.unit.clone().unwrap_or_default(),
                c.vital.clone().unwrap_or_default(),
                c.description.clone(),
            ]
        })
        .collect();
    let head = format!(
        "{} ({}, follows {})\n{}\nsources: {}\npartitioned by {}= from {}; sorted by user_id, {}; primary key ({})\n",
        t.resource,
        match t.kind {
            withings_lake::schema::Kind::Summary => "summary",
            withings_lake::schema::Kind::Timeseries => "time series",
            withings_lake::schema::Kind::Landing => "landing",
        },
        t.vital_schema,
        t.description,
        t.sources.join("; "),
        t.grain.partition_key(),
        t.partition_column,
        t.time_column,
        t.primary_key.join(", ")
    );
    Ok(head + &strings(&["column", "type", "nullable", "unit", "vital", "description"], rows)?)
}

fn resources_table(tables: &[&TableSchema]) -> anyhow::Result<String> {
    let rows = tables
        .iter()
        .map(|t| {
            vec![
                t.resource.clone(),
                format!("{:?}", t.kind).to_lowercase(),
                t.grain.partition_key().to_string(),
                t.columns.len().to_string(),
                t.primary_key.join(", "),
                t.vital_schema.clone(),
            ]
        })
        .collect();
    strings(&["resource", "kind", "partition", "columns", "primary key", "vital schema"], rows)
}
