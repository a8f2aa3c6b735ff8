//! withings-lake: pulls each user's Withings data, harmonizes it into one table per resource,
//! writes hive-partitioned Parquet to object storage and tells downstream systems what
//! changed. See `README.md` and `../shared/DESIGN.md` for the architecture.
//!
//! Modules so far:
//! - [`credentials`]: encrypted per-user token records and the token manager.
//! - [`error`]: the error classes and the one place that finds the class of any error chain.
//! - [`erasure`]: erasing one person from the credentials, the lake, the outbox and the files
//!   sink (the one place that knows everything that can name someone).
//! - [`events`]: change events (envelopes, the outbox in the lake, Svix-signed webhooks and
//!   manifest files).
//! - [`storage`]: storage URLs (paths, file://, memory://, s3://, gs://, az://) to object stores;
//!   local folders whose interrupted writes the next process removes; crash points for tests.
//! - [`schema`]: the 17 harmonized table schemas (`schemas/*.json`, compiled in).
//! - [`harmonize`]: decoded Withings responses to one Arrow batch per resource, with the
//!   quarantine; the Withings code tables (meastypes, sleep states, workout categories,
//!   device models).
//! - [`lake`]: object keys, the partition merge rules, Parquet files and manifests (the
//!   commit protocol is in its module doc).
//! - [`link`]: the account-link flow (authorize URL, callback, code exchange).
//! - [`sync`]: the sync engine (backfill, incremental and refresh runs; planner; checkpoints;
//!   run report).
//! - [`lease`]: create-only lease objects with expiry, heartbeat and safe takeover.
//! - [`pipeline`]: pipeline files (parse, then resolve into a client and a credentials store).
//! - [`secret`]: the redacting wrapper every token and key travels in.
//! - [`state`]: per (user, family) cursors and backfill progress under `<lake>/_state/`.
//! - [`simulator`]: a faithful Withings API emulator with deterministic synthetic users, the
//!   fixture for tests, demos and benchmarks.
//! - [`withings`]: the Withings API client (envelope, status families, rate limiter, retries,
//!   pagination, typed records).

pub mod credentials;
pub mod erasure;
pub mod error;
pub mod events;
pub mod harmonize;
pub mod lake;
pub mod lease;
pub mod link;
pub mod pipeline;
pub mod schema;
pub mod secret;
pub mod simulator;
pub mod state;
pub mod storage;
pub mod sync;
pub mod withings;
