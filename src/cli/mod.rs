//! Command-line interface: one file per subcommand. `anyhow` stops here; library modules
//! return typed errors whose class picks the exit code.

mod backfill;
#[cfg(feature = "simulator")]
mod demo;
mod events;
mod forget;
mod link;
mod query;
mod refresh;
mod reharmonize;
mod run;
mod schema;
#[cfg(feature = "simulator")]
mod simulate;
mod status;
mod sync;
mod tables;
mod users;

use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;

/// Exit codes (stable: schedulers branch on them; README "Exit codes").
/// Some users failed or a run was interrupted (the report names them); also a user-level
/// failure of a one-user command (that user must link again).
pub const EXIT_PARTIAL: u8 = 1;
/// Bad flags, pipeline file or settings (clap's own usage errors are 2 as well).
pub const EXIT_CONFIG: u8 = 2;
/// Another writer holds the shard lease: try again later.
pub const EXIT_BUSY: u8 = 3;
/// Nothing useful could be done: storage, network or Withings failures after retries, bugs.
pub const EXIT_FATAL: u8 = 4;

/// A usage or settings error found by a command (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

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
    #[cfg(feature = "simulator")]
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
    /// Incremental run for every linked user (or --user-id): what changed since the cursors.
    Sync(sync::SyncArgs),
    /// Historical run: --from/--to local dates, fewest requests, newest first, resumable.
    Backfill(backfill::BackfillArgs),
    /// Targeted incremental run for one user and some families.
    Refresh(refresh::RefreshArgs),
    /// Per user and family: cursor, last success, lag, last error; users to relink.
    Status(status::StatusArgs),
    /// The whole pipeline on a loopback simulator: link, backfill, late data, query.
    #[cfg(feature = "simulator")]
    Demo(demo::DemoArgs),
    /// Change events: list the outbox, deliver it, redeliver dead or delivered events.
    Events(events::EventsArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        #[cfg(feature = "simulator")]
        Command::Simulate(args) => simulate::run(args).await,
        Command::Link(args) => link::run(args).await,
        Command::Users(args) => users::run(args).await,
        Command::Schema(args) => schema::run(args),
        Command::Query(args) => query::run(args).await,
        Command::Tables(args) => tables::run(args).await,
        Command::Forget(args) => forget::run(args).await,
        Command::Reharmonize(args) => reharmonize::run(args).await,
        Command::Sync(args) => sync::run(args).await,
        Command::Backfill(args) => backfill::run(args).await,
        Command::Refresh(args) => refresh::run(args).await,
        Command::Status(args) => status::run(args).await,
        #[cfg(feature = "simulator")]
        Command::Demo(args) => demo::run(args).await,
        Command::Events(args) => events::run(args).await,
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
    use withings_lake::withings::{ErrorClass, WithingsError};
    let of_class = |c: ErrorClass| match c {
        ErrorClass::Config => EXIT_CONFIG,
        ErrorClass::Auth => EXIT_PARTIAL,
        ErrorClass::Busy => EXIT_BUSY,
        ErrorClass::Transient | ErrorClass::Data | ErrorClass::Internal => EXIT_FATAL,
    };
    for cause in e.chain() {
        if cause.downcast_ref::<run::Partial>().is_some() {
            return EXIT_PARTIAL;
        }
        if cause.downcast_ref::<events::Undelivered>().is_some() {
            return EXIT_PARTIAL;
        }
        if cause.downcast_ref::<events::DeliveryBusy>().is_some() {
            return EXIT_BUSY;
        }
        if cause.downcast_ref::<Usage>().is_some() {
            return EXIT_CONFIG;
        }
        if let Some(s) = cause.downcast_ref::<withings_lake::sync::SyncError>() {
            return of_class(s.class());
        }
        if let Some(l) = cause.downcast_ref::<withings_lake::link::LinkError>() {
            return of_class(l.class());
        }
        if let Some(l) = cause.downcast_ref::<withings_lake::lake::LakeError>() {
            return of_class(l.class());
        }
        if let Some(l) = cause.downcast_ref::<withings_lake::erasure::ErasureError>() {
            return of_class(l.class());
        }
        if let Some(q) = cause.downcast_ref::<withings_lake::lake::query::QueryError>() {
            return of_class(q.class());
        }
        if cause.downcast_ref::<withings_lake::storage::StorageError>().is_some() {
            return EXIT_CONFIG;
        }
        #[cfg(feature = "simulator")]
        if cause.downcast_ref::<withings_simulator::SimError>().is_some() {
            return EXIT_CONFIG;
        }
        if let Some(p) = cause.downcast_ref::<PipelineError>() {
            return match p {
                PipelineError::Client(w) => of_class(w.class()),
                PipelineError::Lake(l) => of_class(l.class()),
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
        if let Some(e) = cause.downcast_ref::<withings_lake::events::EventsError>() {
            return of_class(e.class());
        }
        if cause.downcast_ref::<withings_lake::state::StateError>().is_some() {
            return EXIT_FATAL;
        }
    }
    EXIT_FATAL
}
