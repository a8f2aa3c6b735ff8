//! `withings-lake demo [--dir DIR]`: the whole pipeline on this machine, no credentials, no
//! network. Starts the simulator on loopback, links synthetic users through the real OAuth
//! flow (authorize, redirect to a loopback callback, code exchange), backfills into
//! `DIR/demo-lake`, advances the simulated clock, runs an incremental sync that picks up the
//! late data, and prints what happened and a DataFusion query over the lake.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Args;
use withings_lake::credentials::{Cipher, CredentialStore};
use withings_lake::lake::{Lake, query};
use withings_lake::link::{CallbackListener, LinkRequest};
use withings_lake::secret::Secret;
use withings_lake::sync::{Engine, Mode, Report, RunSpec, SyncConfig, Users};
use withings_lake::withings::{ClientConfig, WithingsClient};
use withings_simulator::{SimConfig, Simulator};

use super::Usage;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where `demo-lake/` and `demo-credentials/` go (a previous demo's are replaced).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Synthetic users to link.
    #[arg(long, default_value_t = 5)]
    pub users: usize,
    /// Days to backfill.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Hours the simulated clock moves between the backfill and the incremental sync.
    #[arg(long, default_value_t = 6)]
    pub advance_hours: i64,
}

/// Removes a previous demo's folder (even of a demo that failed half-way); refuses to touch
/// a folder holding anything else.
fn clear(dir: &Path, markers: &[&str]) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let entries: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if let Some(other) = entries.iter().find(|e| !markers.contains(&e.as_str())) {
        return Err(Usage(format!(
            "{} exists and is not a previous demo's (it holds '{other}'); choose another --dir",
            dir.display()
        ))
        .into());
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("removing the previous demo's {}", dir.display()))
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.users == 0 || args.days == 0 {
        return Err(Usage("--users and --days must be at least 1".into()).into());
    }
    let started = Instant::now();
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let (lake_dir, cred_dir) = (args.dir.join("demo-lake"), args.dir.join("demo-credentials"));
    let lake_tables: Vec<String> = withings_lake::lake::TableId::all().iter().map(|t| t.dir()[0].to_string()).collect();
    let mut lake_markers: Vec<&str> = lake_tables.iter().map(String::as_str).collect();
    lake_markers.extend(["_lake.json", "_manifests", "_state", "_events", "_users"]);
    clear(&lake_dir, &lake_markers)?;
    clear(&cred_dir, &["users", "locks", "_probe"])?;

    // A private simulator: no rate limit, so the demo runs in seconds. The request count is
    // what Withings would see; the summary converts it to time at 120 requests/minute.
    let sim = Simulator::start(SimConfig {
        users: args.users,
        now: None,
        freeze_clock: true,
        rate_limit_per_minute: 0,
        history_days: i64::from(args.days) + 30,
        ..SimConfig::default()
    })
    .await?;
    println!("simulator on {} ({} synthetic users, clock frozen at {})", sim.base_url(), args.users, at(sim.now()));
    let client = WithingsClient::new(ClientConfig {
        base_url: sim.base_url(),
        client_id: "demo-client".into(),
        // The simulator's own, public client secret (not a credential).
        client_secret: Secret::new("demo-secret".to_string()),
        requests_per_minute: 0,
        concurrency: 8,
        ..ClientConfig::default()
    })?;
    let cipher = Cipher::load(&args.dir.join("demo-credentials.key"))?;
    let store = std::sync::Arc::new(CredentialStore::open(&cred_dir.display().to_string(), cipher)?);
    store.check_writable().await?;

    // The real OAuth flow: authorize URL with a CSRF state, the simulator's consent redirects
    // to our loopback callback, the code is exchanged and the user stored encrypted.
    // Change events in manifest mode: JSON-lines files in the lake, one per checkpoint.
    let location = withings_lake::storage::open(&lake_dir.display().to_string())?;
    let lake = Lake::open_or_create(location, 1).await?;
    let events_dir = lake_dir.join("_events").join("files");
    let events = withings_lake::events::EventsConfig {
        sinks: vec![withings_lake::events::Sink {
            name: "files".into(),
            filter: withings_lake::events::Filter::default(),
            kind: withings_lake::events::SinkKind::Files(withings_lake::storage::open(&events_dir.display().to_string())?),
            retry_schedule: withings_lake::events::default_retry_schedule(),
        }],
        ..withings_lake::events::EventsConfig::default()
    };

    let mut listener = CallbackListener::bind("127.0.0.1:0".parse().expect("loopback address")).await?;
    let browser = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build()?;
    for i in 0..args.users {
        let user_id = format!("demo-user-{}", i + 1);
        let index = i.to_string();
        let request = LinkRequest::new(
            &format!("{}/oauth2_user/authorize2", sim.base_url()),
            "demo-client",
            "user.info,user.metrics,user.activity,user.sleepevents",
            &listener.redirect_uri,
            &user_id,
            &[("sim_user", index.as_str())],
        )?;
        let resp = browser.get(&request.url).send().await.context("opening the authorize URL")?;
        if !resp.status().is_success() {
            bail!("the authorize page answered HTTP {}", resp.status());
        }
        let cb = listener.next(Duration::from_secs(10)).await.context("no callback from the authorize page")?;
        let (record, _) = request.complete(&client, &store, cb, false, None).await?;
        withings_lake::events::announce_link(&events, &lake, &record).await?;
        println!("linked {} (Withings userid {})", record.user_id, record.withings_userid);
    }
    drop(listener);

    let cfg = SyncConfig { users_in_parallel: 8, checkpoint_interval: Duration::from_secs(60), ..SyncConfig::default() };
    let engine = Engine::new(lake.clone(), client, store, cfg).with_events(Some(events));
    let spec = |mode: Mode, now: i64| RunSpec {
        mode,
        users: Users::All,
        shard: None,
        now: DateTime::from_timestamp(now, 0).unwrap_or_else(Utc::now),
        lease_wait: Duration::from_secs(30),
        dry_run: false,
    };

    let today = at(sim.now()).date_naive();
    let from = today - chrono::Duration::days(i64::from(args.days) - 1);
    let backfill =
        super::run::run_with_signals(&engine, &spec(Mode::Backfill { from, to: today }, sim.now())).await.map_err(|f| f.error)?;
    summary(&format!("backfill {from}..{today}"), &backfill);

    let http = reqwest::Client::builder().no_proxy().build()?;
    http.post(format!("{}/_sim/clock", sim.base_url()))
        .json(&serde_json::json!({ "advance_seconds": args.advance_hours * 3600 }))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .context("advancing the simulated clock")?;
    println!("\nsimulated clock advanced {} hours to {}: devices sync late data", args.advance_hours, at(sim.now()));
    let sync = super::run::run_with_signals(&engine, &spec(Mode::Incremental, sim.now())).await.map_err(|f| f.error)?;
    summary("incremental sync", &sync);

    let ctx = query::session(&lake).await?;
    let sql = "WITH a AS (SELECT user_id, calendar_date, max(steps) AS steps FROM activity GROUP BY user_id, calendar_date), \
               s AS (SELECT user_id, count(*) AS nights, avg(total) / 3600.0 AS hours FROM sleep WHERE type = 'long_sleep' GROUP BY user_id) \
               SELECT a.user_id, count(*) AS days, CAST(round(avg(a.steps)) AS BIGINT) AS avg_daily_steps, max(s.nights) AS nights, round(max(s.hours), 2) AS avg_sleep_hours \
               FROM a LEFT JOIN s ON a.user_id = s.user_id GROUP BY a.user_id ORDER BY a.user_id";
    let batches = query::sql(&ctx, sql).await?;
    println!("\n{sql}\n{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    let requests = backfill.requests.total_sent + sync.requests.total_sent;
    let files = std::fs::read_dir(&events_dir).map(|d| d.count()).unwrap_or(0);
    println!("\nchange events (manifest mode): {files} JSON-lines files in {}", events_dir.display());
    println!(
        "\ndone in {:.1} s: {} requests ({:.1} minutes of Withings' 120 requests/minute budget). Lake: {}\n\
         try: withings-lake query --lake {} \"SELECT * FROM weight LIMIT 5\"",
        started.elapsed().as_secs_f64(),
        requests,
        requests as f64 / 120.0,
        lake_dir.display(),
        lake_dir.display()
    );
    sim.shutdown().await;
    super::run::finish(&backfill)?;
    super::run::finish(&sync)
}

fn at(epoch: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(epoch, 0).unwrap_or_else(Utc::now)
}

fn summary(title: &str, r: &Report) {
    println!(
        "\n{title}: {} users ok, {} failed · {} requests ({}) · {} rows changed · {} checkpoints · {:.1} s",
        r.users.ok,
        r.users.failed,
        r.requests.total_sent,
        r.requests.sent.iter().map(|(e, n)| format!("{e} {n}")).collect::<Vec<_>>().join(", "),
        r.rows_changed(),
        r.checkpoints,
        r.duration_seconds
    );
    let rows: Vec<_> = r.rows.iter().filter(|(t, _)| !t.starts_with("raw_") && t.as_str() != "quarantine").collect();

    for (t, c) in rows {
        println!("  {t:<18} +{:<8} ~{:<8} -{}", c.inserted, c.updated, c.deleted);
    }
    if let Some(e) = &r.events {
        let mut kinds: std::collections::BTreeMap<&str, u64> = Default::default();
        for (t, n) in &e.enqueued {
            let kind = if t.starts_with("historical.") {
                "historical.data.*"
            } else if t.ends_with(".updated") {
                "daily.data.*.updated"
            } else {
                "daily.data.*.created"
            };
            *kinds.entry(kind).or_default() += n;
        }
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        println!(
            "  events: {} ({} delivered)",
            if kinds.is_empty() { "none".into() } else { kinds.join(", ") },
            e.delivery.delivered
        );
    }
}
