//! Change-event benchmark: what events cost a run, and how fast the outbox is delivered.
//!
//! An in-process simulator (unthrottled, frozen clock) and a cohort linked twice, into two
//! lakes: one without events, one with a webhook to a loopback receiver (answers 200) and the
//! files sink. Both are backfilled (`EVENTS_USERS` users x `EVENTS_DAYS` days; historical
//! events only), the clock moves 8 hours, and both run an incremental sync (daily events for
//! every change). A third lake backfills with `history_as_daily` (every backfilled row as
//! `daily.data` events, chunked to 1000 samples): the volume test of the builder, the outbox
//! and delivery.
//!
//! Run: `cargo bench --bench events` (50 x 14), `-- --quick` for 10 x 7.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use withings_lake::credentials::{Cipher, CredentialStore};
use withings_lake::events::{EventsConfig, Filter, Sink, SinkKind, Webhook, default_retry_schedule, sign};
use withings_lake::lake::Lake;
use withings_lake::secret::Secret;
use withings_lake::sync::{Engine, Mode, Report, RunSpec, SyncConfig, Users};
use withings_lake::withings::{ClientConfig, WithingsClient};
use withings_simulator::{SimConfig, Simulator};

const NOW: i64 = 1_718_452_800; // 2024-06-15T12:00:00Z

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn receiver() -> (String, Arc<AtomicU64>, Arc<AtomicU64>) {
    let (n, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let state = (n.clone(), bytes.clone());
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State((n, b)): axum::extract::State<(Arc<AtomicU64>, Arc<AtomicU64>)>,
                 body: axum::body::Bytes| async move {
                    n.fetch_add(1, Ordering::Relaxed);
                    b.fetch_add(body.len() as u64, Ordering::Relaxed);
                    "ok"
                },
            ),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, n, bytes)
}

fn events(url: &str, files: &std::path::Path, history_as_daily: bool) -> EventsConfig {
    EventsConfig {
        history_as_daily,
        final_wait: Duration::from_secs(5),
        sinks: vec![
            Sink {
                name: "hook".into(),
                filter: Filter::default(),
                kind: SinkKind::Webhook(Webhook {
                    url: url.to_string(),
                    key: sign::key_of("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap(),
                    max_per_second: None,
                    timeout: Duration::from_secs(15),
                    concurrency: 8,
                }),
                retry_schedule: default_retry_schedule(),
            },
            Sink {
                name: "files".into(),
                filter: Filter::default(),
                kind: SinkKind::Files(withings_lake::storage::open(&files.display().to_string()).unwrap()),
                retry_schedule: default_retry_schedule(),
            },
        ],
        ..EventsConfig::default()
    }
}

fn samples(r: &Report) -> u64 {
    r.rows.iter().filter(|(t, _)| !t.starts_with("raw_") && t.as_str() != "quarantine").map(|(_, c)| c.inserted + c.updated).sum()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let users = env_or("EVENTS_USERS", if quick { 10 } else { 50 });
    let days = env_or("EVENTS_DAYS", if quick { 7 } else { 14 });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        // Three simulators with the same seed serve the same data: one per lake (a user's token
        // chain belongs to one store).
        let mut sims = Vec::new();
        let mut clients = Vec::new();
        let mut stores = Vec::new();
        let dir = tempfile::tempdir().unwrap();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        for k in 0..3 {
            let sim = Simulator::start(SimConfig {
                users,
                now: Some(NOW),
                freeze_clock: true,
                rate_limit_per_minute: 0,
                history_days: days as i64 + 10,
                ..SimConfig::default()
            })
            .await
            .unwrap();
            let url = sim.base_url();
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
            let store = Arc::new(CredentialStore::open(&dir.path().join(format!("creds-{k}")).display().to_string(), cipher).unwrap());
            common::link_cohort(&url, &client, &store).await;
            sims.push(sim);
            clients.push(client);
            stores.push(store);
        }
        let (hook, received, bytes) = receiver().await;
        let lake = |name: &str| {
            let p = dir.path().join(name);
            async move { Lake::open_or_create(withings_lake::storage::open(&p.display().to_string()).unwrap(), 1).await.unwrap() }
        };
        let cfg = SyncConfig { users_in_parallel: 16, ..SyncConfig::default() };
        let plain = Engine::new(lake("plain").await, clients[0].clone(), stores[0].clone(), cfg.clone());
        let with_events = Engine::new(lake("events").await, clients[1].clone(), stores[1].clone(), cfg.clone())
            .with_events(Some(events(&hook, &dir.path().join("files-b"), false)));
        let as_daily = Engine::new(lake("daily").await, clients[2].clone(), stores[2].clone(), cfg.clone())
            .with_events(Some(events(&hook, &dir.path().join("files-c"), true)));

        let to: NaiveDate = chrono::DateTime::from_timestamp(NOW, 0).unwrap().date_naive();
        let from = to - chrono::Duration::days(days as i64 - 1);
        let spec = |mode: Mode, now: i64| RunSpec {
            mode,
            users: Users::All,
            shard: None,
            now: chrono::DateTime::from_timestamp(now, 0).unwrap(),
            lease_wait: Duration::from_secs(5),
            dry_run: false,
        };
        let timed = async |engine: &Engine, s: RunSpec| {
            let (_tx, rx) = tokio::sync::watch::channel(false);
            let started = Instant::now();
            let r = engine.run(&s, rx).await.unwrap();
            assert_eq!(r.users.failed, 0, "{}", r.to_text());
            (started.elapsed().as_secs_f64(), r)
        };
        println!("| run | events | wall s without events | wall s with events | events enqueued | rows announced | delivered | webhook MB |");
        println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        let row = |name: &str, what: &str, a: f64, b: f64, r: &Report, announced: u64, mb: f64| {
            let e = r.events.as_ref().unwrap();
            println!(
                "| {name} | {what} | {a:.2} | {b:.2} | {} | {announced} | {} | {mb:.1} |",
                e.enqueued.values().sum::<u64>(),
                e.delivery.delivered
            );
        };
        let (a, _) = timed(&plain, spec(Mode::Backfill { from, to }, NOW)).await;
        let b0 = bytes.load(Ordering::Relaxed);
        let (b, rb) = timed(&with_events, spec(Mode::Backfill { from, to }, NOW)).await;
        row(&format!("backfill {users} x {days}"), "historical.data", a, b, &rb, 0, (bytes.load(Ordering::Relaxed) - b0) as f64 / 1e6);

        for sim in &sims {
            let advance = serde_json::json!({"advance_seconds": 8 * 3600});
            http.post(format!("{}/_sim/clock", sim.base_url())).json(&advance).send().await.unwrap();
        }
        let later = NOW + 8 * 3600;
        let (a, _) = timed(&plain, spec(Mode::Incremental, later)).await;
        let b0 = bytes.load(Ordering::Relaxed);
        let (b, rs) = timed(&with_events, spec(Mode::Incremental, later)).await;
        row("sync after +8 h", "daily.data", a, b, &rs, samples(&rs), (bytes.load(Ordering::Relaxed) - b0) as f64 / 1e6);

        let (n0, b0) = (received.load(Ordering::Relaxed), bytes.load(Ordering::Relaxed));
        let (c, rc) = timed(&as_daily, spec(Mode::Backfill { from, to: chrono::DateTime::from_timestamp(later, 0).unwrap().date_naive() }, later)).await;
        let (n, mb) = (received.load(Ordering::Relaxed) - n0, (bytes.load(Ordering::Relaxed) - b0) as f64 / 1e6);
        row(&format!("backfill {users} x {days}, history_as_daily"), "daily.data + historical", f64::NAN, c, &rc, samples(&rc), mb);
        println!(
            "\nhistory_as_daily: {n} webhook deliveries ({mb:.1} MB) and {} files-sink records in {c:.1} s, {:.0} events/s end to end (fetch, commit, build, outbox, delivery)",
            rc.events.as_ref().unwrap().delivery.delivered.saturating_sub(n),
            rc.events.as_ref().unwrap().delivery.delivered as f64 / c
        );
        // The builder alone: every steps and heartrate row of that lake as created rows.
        let daily_lake = as_daily.lake().clone();
        for r in [withings_lake::schema::Resource::Steps, withings_lake::schema::Resource::Heartrate] {
            let mut changes = Vec::new();
            for p in daily_lake.partitions(r.into(), 0).await.unwrap() {
                let rows = daily_lake.read(r, &p, 0).await.unwrap();
                let updated = vec![false; rows.num_rows()];
                changes.push((withings_lake::lake::TableId::Resource(r), withings_lake::lake::Changed { rows, updated }));
            }
            let n: usize = changes.iter().map(|(_, c)| c.rows.num_rows()).sum();
            let started = Instant::now();
            let mut b = withings_lake::events::Builder::new("bench", chrono::Utc::now(), &withings_lake::events::EventsConfig { team_id: "team".into(), ..Default::default() });
            b.daily(&changes).unwrap();
            let built = b.finish();
            let secs = started.elapsed().as_secs_f64();
            let mb = built.iter().map(|e| e.body.len()).sum::<usize>() as f64 / 1e6;
            println!(
                "builder, {r}: {n} rows -> {} events, {mb:.1} MB of JSON in {secs:.3} s ({:.0} rows/s, {:.1} MB/s)",
                built.len(),
                n as f64 / secs,
                mb / secs
            );
        }
        for sim in sims {
            sim.shutdown().await;
        }
    });
}
