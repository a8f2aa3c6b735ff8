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
mod serve;
#[cfg(feature = "simulator")]
mod simulate;
mod status;
mod sync;
mod tables;
mod users;

use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use withings_lake::error::{ErrorClass, class_of_cause};

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
    /// The service: Vital's REST API, account links, Withings notifications, fresh data.
    Serve(serve::ServeArgs),
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
        Command::Serve(args) => serve::run(args).await,
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

/// The exit code for an error: the first error of its chain that is one of the CLI's own
/// types (which have no class) or a classified library error
/// ([`withings_lake::error::class_of_cause`]) decides.
pub fn exit_code(e: &anyhow::Error) -> u8 {
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
        #[cfg(feature = "simulator")]
        if cause.downcast_ref::<withings_simulator::SimError>().is_some() {
            return EXIT_CONFIG;
        }
        if let Some(class) = class_of_cause(cause) {
            return exit_code_of(class);
        }
    }
    EXIT_FATAL
}

/// The exit code of an error class (README "Exit codes").
pub fn exit_code_of(class: ErrorClass) -> u8 {
    match class {
        ErrorClass::Config => EXIT_CONFIG,
        ErrorClass::Auth => EXIT_PARTIAL,
        ErrorClass::Busy => EXIT_BUSY,
        ErrorClass::Transient | ErrorClass::Data | ErrorClass::Internal => EXIT_FATAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;
    use withings_lake::credentials::CredentialsError;
    use withings_lake::lake::LakeError;
    use withings_lake::pipeline::PipelineError;
    use withings_lake::state::StateError;
    use withings_lake::withings::WithingsError;

    fn code(e: impl Into<anyhow::Error>) -> u8 {
        exit_code(&e.into())
    }

    /// The exit codes schedulers branch on (README "Exit codes"), for a few representative
    /// errors, bare and under context.
    #[test]
    fn exit_codes_stay_as_documented() {
        assert_eq!(code(run::Partial { failed: 1, interrupted: 0, selected: 2 }), EXIT_PARTIAL);
        assert_eq!(code(events::Undelivered("2 events were not delivered".into())), EXIT_PARTIAL);
        assert_eq!(code(events::DeliveryBusy), EXIT_BUSY);
        assert_eq!(code(Usage("--from after --to".into())), EXIT_CONFIG);
        assert_eq!(code(anyhow::anyhow!("no type at all")), EXIT_FATAL);
        assert_eq!(code(CredentialsError::NeedsReauth { user_id: "u".into(), reason: "revoked".into() }), EXIT_PARTIAL);
        assert_eq!(code(CredentialsError::UnknownUser { user_id: "u".into() }), EXIT_PARTIAL);
        assert_eq!(code(CredentialsError::InvalidUserId { user_id: "../u".into() }), EXIT_CONFIG);
        assert_eq!(code(LakeError::NotALake { url: "memory://x/".into() }), EXIT_CONFIG);
        assert_eq!(code(LakeError::LeaseLost { shard: 0 }), EXIT_FATAL);
        assert_eq!(code(LakeError::ZeroShards), EXIT_CONFIG);
        assert_eq!(code(StateError::BadUserId("../u".into())), EXIT_FATAL, "a state error is fatal, whatever it is");
        assert_eq!(code(withings_lake::storage::open("nope://x").unwrap_err()), EXIT_CONFIG);
        assert_eq!(code(WithingsError::Http { endpoint: "measure", status: 502 }), EXIT_FATAL);
        assert_eq!(code(PipelineError::Client(WithingsError::Http { endpoint: "measure", status: 502 })), EXIT_FATAL);
        assert_eq!(
            code(PipelineError::Credentials(CredentialsError::NeedsReauth { user_id: "u".into(), reason: "r".into() })),
            EXIT_PARTIAL
        );
        assert_eq!(code(PipelineError::MissingSecret { file: "p.toml".into(), var: "X".into() }), EXIT_CONFIG);
        assert_eq!(code(withings_lake::events::EventsError::LeaseLost), EXIT_BUSY);
        assert_eq!(code(withings_lake::sync::SyncError::Config("bad".into())), EXIT_CONFIG);
        assert_eq!(code(withings_lake::sync::SyncError::State(StateError::BadUserId("../u".into()))), EXIT_CONFIG);
        #[cfg(feature = "simulator")]
        assert_eq!(code(withings_simulator::SimError::Config { flag: "--users", reason: "0".into() }), EXIT_CONFIG);
        assert_eq!(code(withings_lake::erasure::ErasureError::Lake(LakeError::NoSuchShard { shard: 9, shards: 2 })), EXIT_CONFIG);

        // Under context: the first typed cause decides.
        let e = Err::<(), _>(LakeError::NotALake { url: "memory://x/".into() }).context("opening the lake").unwrap_err();
        assert_eq!(exit_code(&e), EXIT_CONFIG);
        let e = Err::<(), _>(CredentialsError::UnknownUser { user_id: "u".into() })
            .context("step one")
            .context(Usage("outer usage error".into()).to_string())
            .unwrap_err();
        assert_eq!(exit_code(&e), EXIT_PARTIAL);
        // The outermost typed cause wins over one below it: the user's lost authorization
        // (exit 1 alone) is fatal to a run that needed the credentials store.
        let lost = WithingsError::Status {
            endpoint: "measure",
            status: 401,
            kind: withings_lake::withings::StatusKind::Unauthorized,
            message: String::new(),
            wait_seconds: None,
        };
        assert_eq!(code(CredentialsError::Withings { user_id: "u".into(), source: lost }), EXIT_PARTIAL);
        let lost = WithingsError::Status {
            endpoint: "measure",
            status: 401,
            kind: withings_lake::withings::StatusKind::Unauthorized,
            message: String::new(),
            wait_seconds: None,
        };
        let e = withings_lake::sync::SyncError::Credentials(CredentialsError::Withings { user_id: "u".into(), source: lost });
        assert_eq!(code(e), EXIT_FATAL);
    }
}
