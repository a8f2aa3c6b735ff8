//! withings-lake: pulls each user's Withings data, harmonizes it into one table per resource,
//! writes hive-partitioned Parquet to object storage and tells downstream systems what
//! changed. `ARCHITECTURE.md` describes the data flow and what each module owns.
//!
//! A program drives it through a pipeline file:
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use withings_lake::{EngineOptions, Mode, PipelineFile, RunSpec, Users};
//! let pipeline = PipelineFile::load(std::path::Path::new("pipelines/example.toml"))?;
//! let engine = pipeline.engine(&EngineOptions::default()).await?;
//! let spec = RunSpec {
//!     mode: Mode::Incremental,
//!     users: Users::Only(vec!["alice".into()]),
//!     shard: None,
//!     now: chrono::Utc::now(),
//!     lease_wait: std::time::Duration::from_secs(30),
//!     dry_run: false,
//! };
//! let (_cancel, cancelled) = tokio::sync::watch::channel(false);
//! let report = engine.run(&spec, cancelled).await?;
//! println!("{}", report.to_text());
//! # Ok(()) }
//! ```
//!
//! Modules (ARCHITECTURE.md has what each owns):
//! - [`credentials`]: encrypted per-user token records and the token manager.
//! - [`error`]: the error classes and the one place that finds the class of any error chain.
//! - [`erasure`]: erasing one person from the credentials, the lake, the outbox and the files
//!   sink (the one place that knows everything that can name someone).
//! - [`events`]: change events (envelopes, the outbox in the lake, Svix-signed webhooks and
//!   manifest files).
//! - [`storage`]: storage URLs (paths, file://, memory://, s3://, gs://, az://) to object stores;
//!   local folders whose interrupted writes the next process removes; crash points for tests.
//! - [`schema`]: the harmonized table schemas (`schemas/*.json`, compiled in).
//! - [`harmonize`]: decoded Withings responses to one Arrow batch per resource, with the
//!   quarantine; the Withings code tables (meastypes, sleep states, workout categories,
//!   device models).
//! - [`lake`]: the storage engine: object keys, the partition merge rules, Parquet files,
//!   manifests, leases and the commit hook (the commit protocol is in its module doc).
//! - [`landing`]: the raw landing (records as Withings sent them); [`rebuild`]: tables
//!   rebuilt from it (`reharmonize`).
//! - [`link`]: the account-link flow (authorize URL, callback, code exchange).
//! - [`sync`]: the sync engine ([`Engine`]: backfill, incremental and refresh runs; user
//!   selection, dispatch, the shard committer, request decisions, state marks, run report).
//! - [`lease`]: create-only lease objects with expiry, heartbeat and safe takeover.
//! - [`pipeline`]: pipeline files (parse, then resolve into an [`Engine`], a client, a
//!   credentials store).
//! - [`secret`]: the redacting wrapper every token and key travels in.
//! - [`serve`]: the read side of Vital's REST API (summaries, grouped time series) from the lake.
//! - [`state`]: per (user, family) cursors and backfill progress under `<lake>/_state/`.
//! - [`withings`]: the Withings API client (envelope, status kinds, rate limiter, retries,
//!   pagination, typed records).

pub mod credentials;
pub mod erasure;
pub mod error;
pub mod events;
pub mod harmonize;
pub mod lake;
pub mod landing;
pub mod lease;
pub mod link;
pub mod pipeline;
pub mod rebuild;
pub mod schema;
pub mod secret;
pub mod serve;
pub mod state;
pub mod storage;
pub mod sync;
pub mod withings;

// What a program needs to run the engine: a pipeline file builds it; a run spec says what to
// do; the report says what was done; the lake and a query session read the result.
pub use lake::Lake;
pub use lake::query::{session as query_session, sql as query_sql};
pub use pipeline::{EngineOptions, PipelineFile, RequestBudget};
pub use sync::{Engine, Failed, Mode, Report, RunSpec, SyncConfig, Users};
pub use withings::Priority;
