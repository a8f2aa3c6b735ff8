//! Command-line interface: one file per subcommand. `anyhow` stops here; library modules
//! return typed errors whose class picks the exit code.

mod forget;
mod link;
mod query;
mod reharmonize;
mod schema;
mod simulate;
mod tables;
mod users;

use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;

/// Exit codes (stable: schedulers branch on them).
pub const EXIT_INTERNAL: u8 = 1;
/// Bad flags, pipeline file or settings (clap's own usage errors are 2 as well).
pub const EXIT_CONFIG: u8 = 2;
/// A user's authorization is gone: they must link again.
pub const EXIT_AUTH: u8 = 3;
/// Worth retrying later (network, Withings errors, rate limit, storage).
pub const EXIT_TRANSIENT: u8 = 4;
/// Data that does not decode (quarantined records are not errors).
pub const EXIT_DATA: u8 = 5;

#[derive(Debug, Parser)]
#[command(name = "withings-lake", version, about = "Withings -> harmonized Parquet lake, with change events")]
pub struct Cli {
    /// Log format on stderr: `json` (one object per line), `text`, or `auto` (json unless
    /// stderr is a terminal).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info`, `debug`, `withings_lake=debug` (or set RUST_LOG).
    #[arg(long, global = true, default_value = "info", env = "RUST_LOG")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Auto,
    Json,
    Text,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a Withings API simulator with deterministic synthetic users on loopback.
    Simulate(simulate::SimulateArgs),
    /// Link one person's Withings account (prints the URL to open).
    Link(link::LinkArgs),
    /// Import, list or remove linked users.
    Users(users::UsersArgs),
    /// Print the harmonized table schemas (columns, types, units, keys, partitioning).
    Schema(schema::SchemaArgs),
    /// Run SQL over the lake (DataFusion; every resource is a table).
    Query(query::QueryArgs),
    /// List the lake's tables with rows, partitions, files and bytes.
    Tables(tables::TablesArgs),
    /// Erase one person from the lake and the credentials (GDPR).
    Forget(forget::ForgetArgs),
    /// Rebuild tables from the raw landing, without calling Withings.
    Reharmonize(reharmonize::ReharmonizeArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Simulate(args) => simulate::run(args).await,
        Command::Link(args) => link::run(args).await,
        Command::Users(args) => users::run(args).await,
        Command::Schema(args) => schema::run(args),
        Command::Query(args) => query::run(args).await,
        Command::Tables(args) => tables::run(args).await,
        Command::Forget(args) => forget::run(args).await,
        Command::Reharmonize(args) => reharmonize::run(args).await,
    }
}

pub fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().with_current_span(false).init();
    } else {
        builder.init();
    }
}

/// The exit code for an error, from the class of the typed error inside it.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    use withings_lake::credentials::CredentialsError;
    use withings_lake::pipeline::PipelineError;
    use withings_lake::simulator::SimError;
    use withings_lake::withings::{ErrorClass, WithingsError};
    let of_class = |c: ErrorClass| match c {
        ErrorClass::Config => EXIT_CONFIG,
        ErrorClass::Auth => EXIT_AUTH,
        ErrorClass::Transient => EXIT_TRANSIENT,
        ErrorClass::Data => EXIT_DATA,
        ErrorClass::Internal => EXIT_INTERNAL,
    };
    for cause in e.chain() {
        if let Some(l) = cause.downcast_ref::<withings_lake::lake::LakeError>() {
            return of_class(l.class());
        }
        if let Some(q) = cause.downcast_ref::<withings_lake::lake::query::QueryError>() {
            return of_class(q.class());
        }
        if cause.downcast_ref::<withings_lake::storage::StorageError>().is_some() {
            return EXIT_CONFIG;
        }
        if cause.downcast_ref::<SimError>().is_some() {
            return EXIT_CONFIG;
        }
        if let Some(p) = cause.downcast_ref::<PipelineError>() {
            return match p {
                PipelineError::Client(w) => of_class(w.class()),
                PipelineError::Credentials(c) => of_class(c.class()),
                _ => EXIT_CONFIG,
            };
        }
        if let Some(c) = cause.downcast_ref::<CredentialsError>() {
            return of_class(c.class());
        }
        if let Some(w) = cause.downcast_ref::<WithingsError>() {
            return of_class(w.class());
        }
    }
    EXIT_INTERNAL
}
