//! The one integration-test binary (one link step for every integration test).
//!
//! Modules:
//! - `airflow`: the Airflow DAG (read with Python's `ast`) and the crontab example in `pipelines/`.
//! - `common`: starts simulators, small HTTP helpers, the real-fixture locator.
//! - `crash`: backfills with events killed at crash points in each kind of write (lake creation,
//!   lease, partitions, manifest, cursors, staged changes, outbox, delivery, files sink,
//!   credentials) end as uninterrupted ones, with every event announced and no file left over.
//! - `credentials`: encrypted records and the token manager (401, concurrency, re-auth, crash).
//! - `shape`: JSON shape (keys and types) comparison.
//! - `sim_shapes`: each simulator endpoint against the real-shaped Withings responses; the
//!   simulator's device catalogue against the library's model table.
//! - `sim_oauth`: authorize, code exchange, refresh rotation and grace, revoke, scopes.
//! - `sim_data`: 24-hour rule, pagination, lastupdate, late data, consistency, quirks.
//! - `sim_limits`: the 601 rate limit, fault injection, statistics, determinism.
//! - `sim_notify`: notification subscriptions and delivery to a loopback receiver.
//! - `cli_simulate`: the `withings-lake simulate` binary prints its address and serves.
//! - `cli_query`: `query`, `tables` and `forget` on a local lake; DuckDB agrees.
//! - `cli_schema`: `withings-lake schema` as a table, JSON, and SQL run in DataFusion and DuckDB.
//! - `cli_users`: `link` end to end, `users import / list / remove`, pipeline errors.
//! - `client`: the Withings client on the recorded fixtures and against the simulator.
//! - `lake`: commits, merge rules, layout, leases and erasure over memory, a local folder and S3
//!   (moto); DuckDB reads the lake.
//! - `lake_rebuild`: the raw landing and `reharmonize`, including rebuilds killed at crash points
//!   (lease, partitions, manifest).
//! - `library`: the engine driven from the library alone (pipeline file, link, backfill, a
//!   targeted refresh of one user at live priority).
//! - `harmonize_golden`: each resource from the project's fixtures, compared as tables.
//! - `harmonize_real`: every recorded Withings file harmonized, invariants computed from the raw JSON.
//! - `sync`: backfill, incremental, resume after SIGKILL, SIGTERM, shards, exit codes, status and
//!   the demo, against the simulator over real HTTP.
//! - `erasure`: `forget` with events on (webhooks, a dead event, a files sink inside or outside
//!   the lake, a killed commit's captured changes) and a backfill running meanwhile: nothing
//!   names the person afterwards, and nothing of the others moved.
//! - `events`: change events from real runs against the simulator: historical then daily
//!   events, no change no event, chunking, filters, signatures verified by svix (PyPI),
//!   connection events, recovery of a commit's events, a kill between outbox and delivery.
//! - `events_delivery`: the outbox and webhook delivery against a loopback receiver that
//!   fails, hangs, answers 410 or 429 with Retry-After; ordering and redelivery.
//! - `poisoned`: a fake Withings server serving one absurd record among good ones (a sleep
//!   session ending at 1e15, a five-day workout, an activity in 2199, a measure modified in
//!   2100...): quarantined with the reason, the rest lands, requests and cursors stay sane.
//! - `zones`: the simulator's mover (New York to London): every row carries the zone of its local
//!   day through a backfill, syncs across the move, `reharmonize` and a fresh backfill.
//! - `serve_read`: Vital's REST reads from a backfilled lake: summaries equal `query`'s rows and the
//!   events' objects, grouped pages add up without gap, cursors signed and bound to their query,
//!   bad parameters refused by name, only the user's shard and window read, Vital's SDK parses all.
//! - `harmonize_props`: property tests on random well-typed responses (schema, no panic, conservation).

mod airflow;
mod cli_query;
mod cli_schema;
#[cfg(feature = "simulator")]
mod cli_simulate;
mod cli_users;
mod client;
mod common;
mod crash;
mod credentials;
mod erasure;
mod events;
mod events_delivery;
mod harmonize_golden;
mod harmonize_props;
mod harmonize_real;
mod lake;
mod lake_rebuild;
mod library;
mod poisoned;
mod serve;
mod serve_read;
mod shape;
mod sim_data;
mod sim_limits;
mod sim_notify;
mod sim_oauth;
mod sim_shapes;
mod sync;
mod zones;
