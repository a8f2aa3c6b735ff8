//! What a commit costs on stores with and without latency: one checkpoint of intraday rows
//! (users x days, four tables, one partition per table and day) committed to a local folder,
//! to memory, and to memory behind `object_store::throttle::ThrottledStore` with S3-like
//! latency (20 ms per GET, PUT, HEAD, LIST and DELETE), one partition at a time and with
//! bounded concurrency. Prints wall time, partitions written and partitions per second.
//!
//! `cargo bench --bench commit` (`COMMIT_BENCH_DAYS`, `COMMIT_BENCH_USERS` change the size).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::throttle::{ThrottleConfig, ThrottledStore};
use withings_lake::harmonize::{self, Context, ZoneTimeline};
use withings_lake::lake::{Coverage, Lake, Unit};
use withings_lake::storage::Location;
use withings_lake::withings::types::Item;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One user's intraday rows over `days` days (a sample every 15 minutes), as staged units.
fn units(user: usize, days: usize) -> Vec<Unit> {
    let start = 1_717_200_000; // 2024-06-01T00:00:00Z
    let series: BTreeMap<i64, Item<_>> = (0..days as i64 * 96)
        .map(|i| {
            let t = start + i * 900;
            let raw = serde_json::json!({
                "deviceid": "dev", "model": "ScanWatch", "model_id": 93,
                "steps": 20 + i % 50, "distance": 15.5, "calories": 1.25, "heart_rate": 60 + i % 30, "duration": 900,
            });
            (t, Item::decode(raw))
        })
        .collect();
    let ctx = Context {
        user_id: format!("user-{user:03}"),
        withings_user_id: format!("{}", 31_000_000 + user),
        run_id: "bench".into(),
        ingested_at: chrono::Utc::now(),
        time_zone: Some("UTC".into()),
        zones: Arc::new(ZoneTimeline::default()),
    };
    let h = harmonize::getintradayactivity(&ctx, &series);
    h.tables.into_iter().map(|(r, batch)| Unit { table: r.into(), batch, coverage: Coverage::Upsert }).collect()
}

fn location(store: Arc<dyn object_store::ObjectStore>, name: &str) -> Location {
    Location { store, prefix: Path::from(name), url: format!("memory://{name}"), store_url: "memory://bench/".into() }
}

async fn commit(lake: Lake, units: &[Unit]) -> (Duration, usize) {
    let lease = lake.lease_shard(0, "bench", Duration::from_secs(5)).await.unwrap();
    let t = Instant::now();
    let m = lake.commit(&lease, "bench-run", 1, units).await.unwrap();
    let took = t.elapsed();
    lease.release().await;
    (took, m.partitions.len())
}

fn main() {
    let (users, days) = (env("COMMIT_BENCH_USERS", 3), env("COMMIT_BENCH_DAYS", 60));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let units: Vec<Unit> = (0..users).flat_map(|u| units(u, days)).collect();
    let rows: usize = units.iter().map(|u| u.batch.num_rows()).sum();
    println!("commit of {rows} rows ({users} users x {days} days, 4 tables): one partition per table and day");
    println!("{:<44} {:>10} {:>11} {:>14}", "store", "wall (s)", "partitions", "partitions/s");
    let latency = Duration::from_millis(20);
    let throttle = ThrottleConfig {
        wait_get_per_call: latency,
        wait_put_per_call: latency,
        wait_list_per_call: latency,
        wait_delete_per_call: latency,
        ..ThrottleConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(String, OpenStore, Option<usize>)> = vec![
        (
            "local folder".into(),
            Box::new({
                let d = dir.path().to_path_buf();
                move || withings_lake::storage::open(&d.join(format!("lake-{}", rand_suffix())).display().to_string()).unwrap()
            }),
            None,
        ),
        ("memory".into(), Box::new(|| location(Arc::new(InMemory::new()), "lake")), None),
        (
            "memory + 20 ms per call, 1 at a time".into(),
            Box::new(move || location(Arc::new(ThrottledStore::new(InMemory::new(), throttle)), "lake")),
            Some(1),
        ),
        (
            "memory + 20 ms per call, 8 at a time".into(),
            Box::new(move || location(Arc::new(ThrottledStore::new(InMemory::new(), throttle)), "lake")),
            Some(8),
        ),
    ];
    for (name, open, concurrency) in cases {
        let (took, partitions) = rt.block_on(async {
            let mut lake = Lake::open_or_create(open(), 1).await.unwrap();
            if let Some(c) = concurrency {
                lake.commit_concurrency = c;
            }
            commit(lake, &units).await
        });
        println!("{name:<44} {:>10.2} {partitions:>11} {:>14.0}", took.as_secs_f64(), partitions as f64 / took.as_secs_f64());
    }
}

/// Opens a fresh store for one case.
type OpenStore = Box<dyn Fn() -> Location>;

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}
