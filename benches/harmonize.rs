//! Harmonize benchmark: how fast do raw Withings answers become lake rows?
//!
//! For each endpoint family (getmeas, getactivity, getintradayactivity, sleep_getsummary,
//! sleep_get, getworkouts) one timed routine takes the raw response bytes of every page and
//! does what the connector does with them: `decode_envelope` (the JSON parse), the family's
//! decode helper (`MeasureList::from_body`, `decode_list`, `intraday_series`,
//! `SleepGet::from_body`) and the `harmonize::*` entry point, which builds the Arrow batches.
//! Nothing is written anywhere: this is the CPU cost between the HTTP client and Parquet.
//!
//! Inputs are real HTTP answers: setup (not timed) starts the in-process simulator on loopback
//! (deterministic seed, frozen clock at 2024-06-15T12:00:00Z, no rate limit), exchanges each
//! user's refresh token and fetches every page over reqwest, keeping the bytes:
//! - getmeas: the whole history (120 days) of [`LIST_USERS`] users;
//! - getactivity, getworkouts, sleep getsummary: the last 90 days of the same users, with
//!   every `data_fields` value (the `*_FIELDS` constants the client sends);
//! - getintradayactivity: 7 one-day requests of user 0 (who has every device);
//! - sleep get: one request per session window of user 0's last [`SLEEP_GET_NIGHTS`] nights
//!   (the windows getsummary lists), each answer harmonized on its own.
//!
//! Paginated answers are decoded page by page and harmonized once per user, as the client
//! joins the pages of one call; the 7 intraday days are joined into one series per user.
//!
//! Each family is a criterion group registered twice: `bytes` (throughput in MB/s of raw JSON,
//! decimal megabytes) and `rows` (rows/s, summed over every table the family feeds). After
//! criterion, a Markdown table (median of [`TABLE_ITERATIONS`] timed runs per family) is
//! printed for the README.
//!
//! Run: `cargo bench --bench harmonize` (about a minute and a half on 2 cores; a criterion
//! filter such as `-- getmeas` limits the criterion part, the table always covers every family).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::DateTime;
use criterion::{Criterion, SamplingMode, Throughput};
use serde_json::Value;
use withings_lake::harmonize::{self, Context, Harmonized, SleepSession};
use withings_lake::withings::types::{Activity, SleepSummary, Workout};
use withings_lake::withings::{
    ACTIVITY_FIELDS, INTRADAY_FIELDS, MeasureList, SLEEP_FIELDS, SUMMARY_FIELDS, SleepGet, WORKOUT_FIELDS, decode_envelope,
    decode_list, intraday_series,
};
use withings_simulator::{SimConfig, Simulator};

const NOW: i64 = 1_718_452_800; // 2024-06-15T12:00:00Z
const HISTORY_DAYS: i64 = 120;
/// Days of getactivity, getworkouts and sleep getsummary.
const LIST_DAYS: i64 = 90;
/// Users whose getmeas, getactivity, getworkouts and sleep getsummary answers are fetched
/// (enough for thousands of rows per family: a user has about one workout every three days).
const LIST_USERS: usize = 100;
const INTRADAY_DAYS: i64 = 7;
/// User 0's most recent nights fetched with sleep get (one request each).
const SLEEP_GET_NIGHTS: usize = 14;
/// Timed runs per family for the summary table (after one warm-up run).
const TABLE_ITERATIONS: usize = 20;

/// The raw answers of one user, page by page.
struct UserRaw {
    ctx: Context,
    getmeas: Vec<Vec<u8>>,
    getactivity: Vec<Vec<u8>>,
    getworkouts: Vec<Vec<u8>>,
    sleep_getsummary: Vec<Vec<u8>>,
    /// One body per day, with the `[start, end)` window it was asked for.
    intraday: Vec<((i64, i64), Vec<u8>)>,
    /// One body per sleep session window.
    sleep_get: Vec<Vec<u8>>,
    /// The sessions of the getsummary answers, to link sleep get samples to their night.
    sessions: Vec<SleepSession>,
}

/// One endpoint family: its raw bytes per user and its decode + harmonize routine.
struct Family {
    name: &'static str,
    pages: fn(&UserRaw) -> Vec<&[u8]>,
    run: fn(&UserRaw) -> Vec<Harmonized>,
}

fn body(endpoint: &'static str, bytes: &[u8]) -> Value {
    decode_envelope(endpoint, bytes).unwrap_or_else(|e| panic!("{endpoint}: {e}"))
}

fn h_getmeas(u: &UserRaw) -> Vec<Harmonized> {
    let mut list = MeasureList { timezone: None, groups: Vec::new() };
    for page in &u.getmeas {
        let p = MeasureList::from_body(body("getmeas", page)).expect("getmeas decodes");
        list.timezone = p.timezone.or(list.timezone);
        list.groups.extend(p.groups);
    }
    vec![harmonize::getmeas(&u.ctx, &list, &[])]
}

fn h_getactivity(u: &UserRaw) -> Vec<Harmonized> {
    let mut items = Vec::new();
    for page in &u.getactivity {
        items.extend(decode_list::<Activity>(body("getactivity", page), "activities", "getactivity").expect("decodes"));
    }
    vec![harmonize::getactivity(&u.ctx, &items)]
}

fn h_getintradayactivity(u: &UserRaw) -> Vec<Harmonized> {
    if u.intraday.is_empty() {
        return Vec::new();
    }
    let mut series = BTreeMap::new();
    for (window, page) in &u.intraday {
        series.extend(intraday_series(body("getintradayactivity", page), Some(*window)).expect("decodes"));
    }
    vec![harmonize::getintradayactivity(&u.ctx, &series)]
}

fn h_sleep_getsummary(u: &UserRaw) -> Vec<Harmonized> {
    let mut items = Vec::new();
    for page in &u.sleep_getsummary {
        items.extend(decode_list::<SleepSummary>(body("sleep_getsummary", page), "series", "sleep_getsummary").expect("decodes"));
    }
    vec![harmonize::sleep_getsummary(&u.ctx, &items)]
}

fn h_sleep_get(u: &UserRaw) -> Vec<Harmonized> {
    u.sleep_get
        .iter()
        .map(|page| {
            let answer = SleepGet::from_body(body("sleep_get", page)).expect("sleep get decodes");
            harmonize::sleep_get(&u.ctx, &answer, &u.sessions)
        })
        .collect()
}

fn h_getworkouts(u: &UserRaw) -> Vec<Harmonized> {
    let mut items = Vec::new();
    for page in &u.getworkouts {
        items.extend(decode_list::<Workout>(body("getworkouts", page), "series", "getworkouts").expect("decodes"));
    }
    vec![harmonize::getworkouts(&u.ctx, &items)]
}

fn slices(pages: &[Vec<u8>]) -> Vec<&[u8]> {
    pages.iter().map(Vec::as_slice).collect()
}

const FAMILIES: [Family; 6] = [
    Family { name: "getmeas", pages: |u| slices(&u.getmeas), run: h_getmeas },
    Family { name: "getactivity", pages: |u| slices(&u.getactivity), run: h_getactivity },
    Family {
        name: "getintradayactivity",
        pages: |u| u.intraday.iter().map(|(_, b)| b.as_slice()).collect(),
        run: h_getintradayactivity,
    },
    Family { name: "sleep_getsummary", pages: |u| slices(&u.sleep_getsummary), run: h_sleep_getsummary },
    Family { name: "sleep_get", pages: |u| slices(&u.sleep_get), run: h_sleep_get },
    Family { name: "getworkouts", pages: |u| slices(&u.getworkouts), run: h_getworkouts },
];

fn rows(h: &Harmonized) -> usize {
    h.tables.values().map(|b| b.num_rows()).sum()
}

/// The timed routine: decode and harmonize every answer of the family; returns the rows.
fn run_family(f: &Family, users: &[UserRaw]) -> usize {
    users.iter().flat_map(|u| (f.run)(u)).map(|h| rows(&black_box(h))).sum()
}

// ---------------------------------------------------------------------------------------------
// Setup: real answers from the simulator over loopback.

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// POSTs a form; returns the raw body, which must be a status-0 answer.
    async fn post(&self, path: &str, token: Option<&str>, params: &[(&str, String)]) -> Vec<u8> {
        let mut req = self.http.post(format!("{}{path}", self.base)).form(params);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request reaches the simulator");
        assert_eq!(resp.status(), reqwest::StatusCode::OK, "{path} {params:?}");
        let bytes = resp.bytes().await.expect("body").to_vec();
        decode_envelope("bench", &bytes).unwrap_or_else(|e| panic!("{path} {params:?}: {e}"));
        bytes
    }

    /// Every page of a paginated call (following `more` / `offset`).
    async fn pages(&self, path: &str, token: &str, params: &[(&str, String)]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let mut p = params.to_vec();
            if offset > 0 {
                p.push(("offset", offset.to_string()));
            }
            let bytes = self.post(path, Some(token), &p).await;
            let b = body("bench", &bytes);
            out.push(bytes);
            let more = b.get("more").is_some_and(|m| m.as_i64() == Some(1) || m.as_bool() == Some(true));
            match b.get("offset").and_then(Value::as_i64) {
                Some(next) if more && next > offset => offset = next,
                _ => return out,
            }
        }
    }
}

fn ymd(epoch: i64) -> String {
    DateTime::from_timestamp(epoch, 0).expect("valid epoch").format("%Y-%m-%d").to_string()
}

async fn fetch() -> Vec<UserRaw> {
    let cfg = SimConfig {
        users: LIST_USERS,
        rate_limit_per_minute: 0,
        now: Some(NOW),
        history_days: HISTORY_DAYS,
        freeze_clock: true,
        ..SimConfig::default()
    };
    let sim = Simulator::start(cfg).await.expect("simulator starts");
    let api = Api { http: reqwest::Client::new(), base: sim.base_url() };
    let users: Value = api.http.get(format!("{}/_sim/users", api.base)).send().await.unwrap().json().await.expect("users JSON");
    let users = users["users"].as_array().expect("users list").clone();
    let window = |fields: &str, action: &str| {
        vec![
            ("action", action.to_string()),
            ("data_fields", fields.to_string()),
            ("startdateymd", ymd(NOW - LIST_DAYS * 86_400)),
            ("enddateymd", ymd(NOW)),
        ]
    };
    let mut out = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let refresh = user["refresh_token"].as_str().expect("refresh token").to_string();
        let grant = [
            ("action", "requesttoken".to_string()),
            ("grant_type", "refresh_token".to_string()),
            ("client_id", "demo-client".to_string()),
            ("client_secret", "demo-secret".to_string()),
            ("refresh_token", refresh),
        ];
        let token = body("requesttoken", &api.post("/v2/oauth2", None, &grant).await)["access_token"]
            .as_str()
            .expect("access token")
            .to_string();
        let ctx = Context {
            user_id: format!("user-{i}"),
            withings_user_id: user["userid"]
                .as_i64()
                .map_or_else(|| user["userid"].as_str().unwrap_or_default().to_string(), |id| id.to_string()),
            run_id: "bench".into(),
            ingested_at: DateTime::from_timestamp(NOW, 0).unwrap(),
            time_zone: user["timezone"].as_str().map(str::to_string),
            zones: Default::default(),
        };
        let getmeas = api.pages("/measure", &token, &[("action", "getmeas".to_string()), ("category", "1".to_string())]).await;
        let getactivity = api.pages("/v2/measure", &token, &window(ACTIVITY_FIELDS, "getactivity")).await;
        let getworkouts = api.pages("/v2/measure", &token, &window(WORKOUT_FIELDS, "getworkouts")).await;
        let sleep_getsummary = api.pages("/v2/sleep", &token, &window(SUMMARY_FIELDS, "getsummary")).await;
        let mut summaries = Vec::new();
        for page in &sleep_getsummary {
            summaries.extend(decode_list::<SleepSummary>(body("bench", page), "series", "sleep_getsummary").unwrap());
        }
        let sessions = SleepSession::from_summaries(&summaries);
        let (mut intraday, mut sleep_get) = (Vec::new(), Vec::new());
        if i == 0 {
            for d in (1..=INTRADAY_DAYS).rev() {
                let (a, b) = (NOW - d * 86_400, NOW - (d - 1) * 86_400);
                let params = [
                    ("action", "getintradayactivity".to_string()),
                    ("startdate", a.to_string()),
                    ("enddate", (b - 1).to_string()),
                    ("data_fields", INTRADAY_FIELDS.to_string()),
                ];
                intraday.push(((a, b), api.post("/v2/measure", Some(&token), &params).await));
            }
            for s in sessions.iter().rev().take(SLEEP_GET_NIGHTS) {
                let params = [
                    ("action", "get".to_string()),
                    ("startdate", s.start.to_string()),
                    ("enddate", s.end.to_string()),
                    ("data_fields", SLEEP_FIELDS.to_string()),
                ];
                sleep_get.push(api.post("/v2/sleep", Some(&token), &params).await);
            }
        }
        out.push(UserRaw { ctx, getmeas, getactivity, getworkouts, sleep_getsummary, intraday, sleep_get, sessions });
    }
    sim.shutdown().await;
    out
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let started = Instant::now();
    let users = rt.block_on(fetch());
    drop(rt);

    // Sizes, and one untimed run: the row counts, and a check that nothing was quarantined.
    let mut sizes = Vec::new();
    for f in &FAMILIES {
        let bytes: usize = users.iter().flat_map(|u| (f.pages)(u)).map(<[u8]>::len).sum();
        let pages: usize = users.iter().map(|u| (f.pages)(u).len()).sum();
        let out: Vec<Harmonized> = users.iter().flat_map(|u| (f.run)(u)).collect();
        let rows: usize = out.iter().map(rows).sum();
        let quarantined: usize = out.iter().map(|h| h.quarantine.len()).sum();
        let samples: usize = out.iter().map(|h| h.stats.samples_in).sum();
        let mut per_table: BTreeMap<String, usize> = BTreeMap::new();
        for h in &out {
            for (r, b) in &h.tables {
                *per_table.entry(r.to_string()).or_default() += b.num_rows();
            }
        }
        eprintln!(
            "{}: {pages} answers, {bytes} bytes, {samples} input samples -> {rows} rows {per_table:?}, {quarantined} quarantined",
            f.name
        );
        sizes.push((bytes as u64, rows as u64));
    }
    eprintln!("setup (simulator + fetch + one run) took {:.1} s", started.elapsed().as_secs_f64());

    let mut c = Criterion::default().configure_from_args();
    for (f, &(bytes, rows)) in FAMILIES.iter().zip(&sizes) {
        let mut g = c.benchmark_group(f.name);
        // Flat sampling: one iteration of the larger families takes 0.1-0.2 s, too long for the
        // default linear sampling (1, 2, ..., 10 iterations per sample) to fit in 3 s.
        g.sample_size(10).sampling_mode(SamplingMode::Flat);
        g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        g.throughput(Throughput::BytesDecimal(bytes));
        g.bench_function("bytes", |b| b.iter(|| run_family(f, &users)));
        g.throughput(Throughput::Elements(rows));
        g.bench_function("rows", |b| b.iter(|| run_family(f, &users)));
        g.finish();
    }
    c.final_summary();

    // `cargo test --benches` runs this without `--bench`: one run per family is enough there.
    let iterations = if std::env::args().any(|a| a == "--bench") { TABLE_ITERATIONS } else { 1 };
    println!();
    println!("Median of {iterations} runs of decode_envelope + decode + harmonize, single thread:");
    println!();
    println!("| family | answers | raw JSON | rows | median time | MB/s | rows/s |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (f, &(bytes, rows)) in FAMILIES.iter().zip(&sizes) {
        black_box(run_family(f, &users)); // warm-up
        let mut times: Vec<f64> = (0..iterations)
            .map(|_| {
                let t = Instant::now();
                black_box(run_family(f, &users));
                t.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let answers: usize = users.iter().map(|u| (f.pages)(u).len()).sum();
        println!(
            "| {} | {answers} | {:.2} MB | {rows} | {:.1} ms | {:.1} | {:.0} |",
            f.name,
            bytes as f64 / 1e6,
            median * 1e3,
            bytes as f64 / 1e6 / median,
            rows as f64 / median
        );
    }
}
