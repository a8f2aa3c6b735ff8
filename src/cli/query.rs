//! `withings-lake query [--pipeline FILE | --lake URL] "SQL" [--format ...] [--output PATH]`:
//! SQL over the lake with DataFusion, every resource a table.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use clap::{Args, ValueEnum};
use withings_lake::lake::{Lake, query};
use withings_lake::pipeline::PipelineFile;

/// Which lake: a pipeline file's `[lake]`, or any lake by URL.
#[derive(Debug, Args)]
pub struct LakeArgs {
    /// A pipeline file whose `[lake]` section names the lake.
    #[arg(long, conflicts_with = "lake", required_unless_present = "lake")]
    pub pipeline: Option<PathBuf>,
    /// A lake by location: a folder, file://, s3://bucket/prefix (options from AWS_* variables),
    /// gs://, az://.
    #[arg(long)]
    pub lake: Option<String>,
}

impl LakeArgs {
    pub async fn open(&self) -> anyhow::Result<Lake> {
        let location = match (&self.pipeline, &self.lake) {
            (Some(p), _) => PipelineFile::load(p)?.resolve_lake_location()?,
            (None, Some(url)) => withings_lake::storage::open(url)?,
            (None, None) => bail!("give --pipeline FILE or --lake URL"),
        };
        Ok(Lake::open(location).await?)
    }
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// One SQL statement; tables are named after the resources (heartrate, sleep, ...).
    pub sql: String,
    /// `table` (pretty), `csv` (with a header), `json` (one object per line) or `parquet`
    /// (needs --output).
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Write the result to this file instead of stdout.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
    Parquet,
}

pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    if args.format == OutputFormat::Parquet && args.output.is_none() {
        // The text it had as a `QueryError::Setup` of no lake.
        return Err(super::Usage("lake at '-': --format parquet needs --output PATH".into()).into());
    }
    let lake = args.lake.open().await?;
    let ctx = query::session(&lake).await?;
    let batches = query::sql(&ctx, &args.sql).await?;
    let bytes = render(&batches, args.format)?;
    match &args.output {
        Some(path) => std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?,
        None => match std::io::stdout().lock().write_all(&bytes) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            r => r?,
        },
    }
    Ok(())
}

/// The rows in `format`.
pub fn render(batches: &[RecordBatch], format: OutputFormat) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    match format {
        OutputFormat::Table => {
            out.extend(arrow::util::pretty::pretty_format_batches(batches)?.to_string().into_bytes());
            out.push(b'\n');
        }
        OutputFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
            for b in batches {
                w.write(b)?;
            }
        }
        OutputFormat::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        OutputFormat::Parquet => {
            let schema =
                batches.first().map(|b| b.schema()).unwrap_or_else(|| std::sync::Arc::new(arrow::datatypes::Schema::empty()));
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None)?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
        }
    }
    Ok(out)
}
