//! A backfill with events on (a webhook and a files sink outside the lake), killed (SIGKILL,
//! from a crash point, so the kill lands where it is aimed whatever the machine's load) at each
//! kind of write a run makes: the lake's creation, the shard lease, the raw landing, a table's
//! partition, the staged changes, the manifest, the cursors, the outbox, the delivery lease and
//! records, the files sink, and a user's credentials during a token refresh. After each, the
//! same command run again finishes, and then:
//! - the lake equals the lake of an uninterrupted run (every table, row for row);
//! - every event the uninterrupted run announced reached the webhook and the files sink at
//!   least once (at least once, never lost);
//! - no temporary file of the killed write is left in the lake, the credentials folder or the
//!   files sink.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::DateTime;
use serde_json::Value;

use crate::common::{self, NOW, Sim};
use crate::events::{Receiver, SECRET, SECRET_ENV, lines_in};
use crate::lake_rebuild::{assert_no_temporary_files, crash_at};
use crate::sync::{bin, d, link, pipeline, snapshot, text};

/// The pipeline of one scenario: events to `hook` (every type) and to a files sink outside
/// the lake, with the backfill's rows announced as daily events too (so a backfill stages
/// changes and fills the outbox).
fn scenario_pipeline(dir: &Path, sim: &Sim, hook: &str) -> String {
    let files = url::Url::from_directory_path(dir.join("files-sink")).unwrap();
    let events = format!(
        "[events]\nhistory_as_daily = true\nmax_samples_per_event = 200\nfinal_wait_seconds = 2\n\n[[events.webhooks]]\nname = \"hook\"\nurl = \"{hook}\"\nsecret_env = \"{SECRET_ENV}\"\ntimeout_seconds = 30\nretry_schedule_seconds = [0, 1, 1]\n\n[events.files]\nprefix = \"{files}\"\n"
    );
    pipeline(dir, sim, &events).display().to_string()
}

fn backfill(p: &str) -> std::process::Command {
    let now = DateTime::from_timestamp(NOW, 0).unwrap().to_rfc3339();
    let mut c = bin();
    c.env(SECRET_ENV, SECRET).env_remove(withings_lake::storage::crash::ENV);
    c.args(["backfill", "--pipeline", p, "--from", &d(3).to_string(), "--to", &d(0).to_string(), "--now", &now]);
    c.args(["--lease-wait-seconds", "5"]);
    c
}

/// What an event announces, without what differs from run to run (ids, run ids, ingestion
/// times): the type, the user and, for daily data, each sample or summary.
fn announced(envelope: &Value) -> Vec<String> {
    let t = envelope["event_type"].as_str().unwrap();
    let user = envelope["user_id"].as_str().unwrap();
    let data = &envelope["data"];
    if !t.starts_with("daily.") {
        return vec![format!("{t} {user}")];
    }
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            for k in ["run_id", "ingested_at", "created_at", "updated_at"] {
                o.remove(k);
            }
        }
        v.to_string()
    };
    match data["data"].as_array() {
        Some(samples) => samples.iter().map(|s| format!("{t} {user} {}", strip(s))).collect(),
        None => vec![format!("{t} {user} {}", strip(data))],
    }
}

/// What reached the webhook and what the files sink holds.
fn announcements(receiver: &Receiver, dir: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let hook = receiver.events().iter().flat_map(|g| announced(&g.envelope())).collect();
    let mut files = BTreeSet::new();
    for l in lines_in(&dir.join("files-sink")) {
        files.extend(announced(&l["event"]));
    }
    (hook, files)
}

struct Outcome {
    lake: std::collections::BTreeMap<String, Vec<String>>,
    hook: BTreeSet<String>,
    files: BTreeSet<String>,
}

/// One scenario: a fresh lake and credentials, two linked users, a backfill killed at each of
/// `crashes` in turn (with `expire_tokens`, both users' access tokens are expired first, so
/// the run refreshes them), then the same backfill to the end and a delivery of whatever is
/// still pending.
async fn scenario(sim: &Sim, crashes: &[&str], expire_tokens: bool) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let p = scenario_pipeline(dir.path(), sim, &receiver.url);
    let store = link(sim, &dir.path().join("creds"), 2).await;
    if expire_tokens {
        // The run must refresh both users' tokens first (a credentials write each).
        for u in ["user-0", "user-1"] {
            let mut r = store.get(u).await.unwrap().unwrap();
            r.access_expires_at = chrono::Utc::now().timestamp() - 60;
            store.put(&r).await.unwrap();
        }
    }
    for rule in crashes {
        let cmd = backfill(&p);
        let rule = rule.to_string();
        tokio::task::spawn_blocking(move || crash_at(cmd, &rule)).await.unwrap();
    }
    let mut cmd = backfill(&p);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{crashes:?}: the run after the kill: {}", text(&out));
    let mut deliver = bin();
    deliver.env(SECRET_ENV, SECRET).args(["events", "deliver", "--pipeline", &p, "--wait-seconds", "10"]);
    let out = tokio::task::spawn_blocking(move || deliver.output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{crashes:?}: events deliver: {}", text(&out));
    let pending = lines_in(&dir.path().join("lake/_events/pending/hook")).len()
        + lines_in(&dir.path().join("lake/_events/pending/files")).len()
        + lines_in(&dir.path().join("lake/_events/dead/hook")).len();
    assert_eq!(pending, 0, "{crashes:?}: every event delivered, none pending or dead");
    assert_no_temporary_files(dir.path());
    let (hook, files) = announcements(&receiver, dir.path());
    Outcome { lake: snapshot(&dir.path().join("lake")).await, hook, files }
}

/// Runs each crash sequence in `cases` and compares it with an uninterrupted run.
async fn killed_runs_end_as_uninterrupted_ones(cases: &[&[&str]], expire_tokens: bool) {
    let sim = common::start(2, 0).await;
    let reference = scenario(&sim, &[], expire_tokens).await;
    assert!(reference.hook.len() > 100, "the reference announces the backfill's rows: {}", reference.hook.len());
    assert_eq!(reference.files, reference.hook, "the files sink holds what the webhook got");
    assert_eq!(
        reference.hook.iter().filter(|a| a.starts_with("historical.data.")).count(),
        2 * 17,
        "every resource but sleep_stream"
    );
    for crashes in cases {
        let got = scenario(&sim, crashes, expire_tokens).await;
        for (table, rows) in &reference.lake {
            assert!(rows == &got.lake[table], "{crashes:?}: {table} differs from the uninterrupted run's");
        }
        for (sink, seen) in [("webhook", &got.hook), ("files sink", &got.files)] {
            let missing: Vec<&String> = reference.hook.difference(seen).take(3).collect();
            assert!(missing.is_empty(), "{crashes:?}: never announced to the {sink}: {missing:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_killed_in_the_commit_protocol_ends_as_an_uninterrupted_one() {
    killed_runs_end_as_uninterrupted_ones(
        &[
            &["during:1:/lake/_lake.json"],
            &["linked:1:/lake/_lake.json"],
            &["during:1:/lake/_state/leases/"],
            &["linked:1:/lake/_state/leases/"],
            &["during:3:/lake/_raw/"],
            &["during:2:/lake/steps/"],
            &["during:1:/lake/_manifests/"],
            &["linked:1:/lake/_manifests/"],
            &["after:1:/lake/_manifests/"],
            &["during:1:/lake/_state/users/"],
            &["after:1:/lake/_state/users/"],
            &["linked:1:/lake/_state/leases/", "during:1:/lake/_manifests/", "during:1:/lake/_state/users/"],
        ],
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_killed_while_writing_events_loses_none() {
    killed_runs_end_as_uninterrupted_ones(
        &[
            &["during:1:/lake/_events/staged/"],
            &["after:1:/lake/_events/staged/"],
            &["during:1:/lake/_events/pending/"],
            &["after:1:/lake/_events/pending/"],
            &["during:1:/lake/_events/delivery.lock"],
            &["linked:1:/lake/_events/delivery.lock"],
            &["during:1:/lake/_events/delivered/"],
            &["after:1:/lake/_events/delivered/"],
            &["during:1:/files-sink/"],
            &["after:1:/files-sink/"],
            &["after:1:/lake/_events/pending/", "during:1:/lake/_events/delivered/"],
        ],
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_killed_while_saving_refreshed_tokens_keeps_the_accounts() {
    killed_runs_end_as_uninterrupted_ones(
        &[
            &["during:1:/creds/locks/"],
            &["linked:1:/creds/locks/"],
            &["during:1:/creds/users/"],
            &["after:1:/creds/users/"],
            &["during:2:/creds/users/", "during:1:/lake/_state/leases/"],
        ],
        true,
    )
    .await;
}
