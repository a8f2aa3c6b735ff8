//! Simulator benchmark: is the simulator ever the bottleneck?
//!
//! Starts the release binary (`withings-lake simulate`) for growing worlds (users x history
//! days), drives it over loopback with a keep-alive client, and prints a Markdown table:
//! requests/s and bytes per response for one-day intraday requests (the endpoint a backfill
//! calls most) at concurrency 1 and 4, plus the server's resident memory (VmRSS / VmHWM from
//! /proc) when it has started and after the load. Run: `cargo bench --bench simulator`
//! (`-- --quick` for one small world).
//!
//! Withings allows 120 requests/minute (2/s) per application: anything far above that means
//! the simulator never limits a test, a demo or a benchmark of the connector.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

const NOW: i64 = 1_718_452_800; // 2024-06-15T12:00:00Z

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(users: usize, days: i64) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_withings-lake"))
        .args(["simulate", "--rate-limit-per-minute", "0", "--now", "2024-06-15T12:00:00Z", "--freeze-clock"])
        .args(["--users", &users.to_string(), "--history-days", &days.to_string(), "--log-level", "warn"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("simulator binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").expect("address line").to_string();
    Server { child, url }
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn tokens(http: &reqwest::Client, url: &str, users: &[usize]) -> Vec<String> {
    let mut out = Vec::new();
    for &u in users {
        let one: serde_json::Value =
            http.get(format!("{url}/_sim/users?offset={u}&limit=1")).send().await.unwrap().json().await.unwrap();
        let refresh = one["users"][0]["refresh_token"].as_str().unwrap().to_string();
        let v: serde_json::Value = http
            .post(format!("{url}/v2/oauth2"))
            .form(&[
                ("action", "requesttoken"),
                ("grant_type", "refresh_token"),
                ("client_id", "demo-client"),
                ("client_secret", "demo-secret"),
                ("refresh_token", &refresh),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = v["body"]["access_token"].as_str().unwrap_or_else(|| panic!("refresh for user {u}: {v}"));
        out.push(token.to_string());
    }
    out
}

/// `requests` one-day intraday calls spread over users and days; returns (req/s, bytes/resp).
async fn load(url: &str, toks: Arc<Vec<String>>, days: i64, requests: usize, concurrency: usize) -> (f64, usize) {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (http, url, toks) = (http.clone(), url.to_string(), toks.clone());
        tasks.push(tokio::spawn(async move {
            let mut bytes = 0usize;
            let mut n = 0usize;
            let mut i = worker;
            while i < requests {
                let token = &toks[i % toks.len()];
                let day = (i as i64 * 7919) % days.max(1);
                let start = NOW - (day + 1) * 86_400;
                let body = http
                    .post(format!("{url}/v2/measure"))
                    .bearer_auth(token)
                    .form(&[
                        ("action", "getintradayactivity"),
                        ("startdate", &start.to_string()),
                        ("enddate", &(start + 86_400).to_string()),
                        ("data_fields", "steps,elevation,calories,distance,duration,heart_rate,spo2_auto,rmssd,sdnn1,rr"),
                    ])
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                assert!(body.starts_with(b"{\"status\":0"), "{}", String::from_utf8_lossy(&body[..body.len().min(200)]));
                bytes += body.len();
                n += 1;
                i += concurrency;
            }
            (bytes, n)
        }));
    }
    let mut bytes = 0;
    let mut n = 0;
    for t in tasks {
        let (b, c) = t.await.unwrap();
        bytes += b;
        n += c;
    }
    (n as f64 / started.elapsed().as_secs_f64(), bytes / n.max(1))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let quick = std::env::args().any(|a| a == "--quick");
    let worlds: &[(usize, i64)] = if quick { &[(10, 30)] } else { &[(10, 30), (1_000, 400), (20_000, 1_000)] };
    let requests = if quick { 100 } else { 600 };
    println!(
        "| users | history days | intraday req/s (c=1) | intraday req/s (c=4) | bytes/response | RSS at start | RSS after load | peak RSS |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for &(users, days) in worlds {
        let server = start(users, days);
        let pid = server.child.id();
        let (rss_start, _) = rss_kib(pid);
        rt.block_on(async {
            let http = reqwest::Client::new();
            // Up to 50 distinct users spread over the whole population.
            let n = users.min(50);
            let picks: Vec<usize> = (0..n).map(|i| i * users / n).collect();
            let toks = Arc::new(tokens(&http, &server.url, &picks).await);
            load(&server.url, toks.clone(), days, 20, 1).await; // warm-up
            let (rps1, bytes) = load(&server.url, toks.clone(), days, requests, 1).await;
            let (rps4, _) = load(&server.url, toks.clone(), days, requests, 4).await;
            let (rss, hwm) = rss_kib(pid);
            let mib = |kib: u64| kib as f64 / 1024.0;
            println!(
                "| {users} | {days} | {rps1:.0} | {rps4:.0} | {bytes} | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
                mib(rss_start),
                mib(rss),
                mib(hwm)
            );
        });
    }
}
