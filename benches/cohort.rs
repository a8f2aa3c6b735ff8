//! Cohort backfill benchmark: what a researcher's backfill costs in requests, time and memory.
//!
//! Starts the release simulator (`withings-lake simulate`, unthrottled, frozen clock) in its
//! own process, links a cohort (users' refresh tokens from `/_sim/users`, each refreshed once
//! as `users import` does), and runs one backfill of every user into a lake on local disk with
//! the library's sync engine, in this process. Prints a Markdown table: users x days, wall
//! time, rows committed (resource tables), rows/s, requests, requests per user-day, and this
//! process's peak RSS (VmHWM; the simulator's memory is not counted).
//!
//! Run: `cargo bench --bench cohort` (200 users x 90 days), or set `COHORT_USERS` and
//! `COHORT_DAYS`; `-- --quick` for 20 users x 30 days.
//!
//! Requests per user-day is the planner's figure of merit: at Withings' 120 requests/minute a
//! cohort backfill takes (users x days x requests per user-day / 120) minutes whatever the
//! machine, so the measured wall time here (unthrottled) is the connector's own cost.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use withings_lake::credentials::{Cipher, CredentialStore};
use withings_lake::lake::Lake;
use withings_lake::secret::Secret;
use withings_lake::sync::{Engine, Mode, RunSpec, SyncConfig, Users};
use withings_lake::withings::{ClientConfig, WithingsClient};

const NOW: i64 = 1_718_452_800; // 2024-06-15T12:00:00Z

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    kib as f64 / 1024.0
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let users = env_or("COHORT_USERS", if quick { 20 } else { 200 });
    let days = env_or("COHORT_DAYS", if quick { 30 } else { 90 });
    let mut child = Command::new(env!("CARGO_BIN_EXE_withings-lake"))
        .args(["simulate", "--rate-limit-per-minute", "0", "--now", "2024-06-15T12:00:00Z", "--freeze-clock"])
        .args(["--users", &users.to_string(), "--history-days", &(days + 10).to_string(), "--log-level", "warn"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("simulator binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").expect("address line").to_string();
    let _server = Server(child);

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let client = WithingsClient::new(ClientConfig {
            base_url: url.clone(),
            client_id: "demo-client".into(),
            client_secret: Secret::new("demo-secret".to_string()),
            requests_per_minute: 0,
            concurrency: 16,
            ..ClientConfig::default()
        })
        .unwrap();
        let cipher = Cipher::from_key([0x11; 32], "benchmark key");
        let store = Arc::new(CredentialStore::open(&dir.path().join("creds").display().to_string(), cipher).unwrap());
        common::link_cohort(&url, &client, &store).await;
        let lake = Lake::open_or_create(withings_lake::storage::open(&dir.path().join("lake").display().to_string()).unwrap(), 1)
            .await
            .unwrap();
        // The default checkpoint interval (300 s), as a real backfill runs.
        let cfg = SyncConfig { users_in_parallel: 16, ..SyncConfig::default() };
        let engine = Engine::new(lake, client, store, cfg);
        let to: NaiveDate = chrono::DateTime::from_timestamp(NOW, 0).unwrap().date_naive();
        let from = to - chrono::Duration::days(days as i64 - 1);
        let spec = RunSpec {
            mode: Mode::Backfill { from, to },
            users: Users::All,
            shard: None,
            now: chrono::DateTime::from_timestamp(NOW, 0).unwrap(),
            lease_wait: Duration::from_secs(5),
            dry_run: false,
        };
        let started = Instant::now();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let report = engine.run(&spec, rx).await.unwrap();
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(report.users.failed, 0, "{}", report.to_text());
        let rows: u64 = report
            .rows
            .iter()
            .filter(|(t, _)| !t.starts_with("raw_") && t.as_str() != "quarantine")
            .map(|(_, c)| c.inserted)
            .sum();
        let requests = report.requests.total_sent;
        let lake_bytes: u64 = walk(&dir.path().join("lake"));
        println!(
            "| users x days | wall s | rows | rows/s | requests | requests per user-day | checkpoints | lake MiB | peak RSS MiB |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        println!(
            "| {users} x {days} | {secs:.1} | {rows} | {:.0} | {requests} | {:.2} | {} | {:.1} | {:.0} |",
            rows as f64 / secs,
            requests as f64 / (users * days) as f64,
            report.checkpoints,
            lake_bytes as f64 / 1048576.0,
            peak_rss_mib()
        );
        println!(
            "\nAt Withings' 120 requests/minute this backfill takes {:.0} minutes ({:.1} hours); requests per endpoint: {:?}",
            requests as f64 / 120.0,
            requests as f64 / 7200.0,
            report.requests.sent
        );
    });
}

fn walk(p: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(p) {
        for e in entries.flatten() {
            let path = e.path();
            total += if path.is_dir() { walk(&path) } else { e.metadata().map(|m| m.len()).unwrap_or(0) };
        }
    }
    total
}
