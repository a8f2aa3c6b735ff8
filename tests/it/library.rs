//! The engine driven from the library alone, as a long-lived program would: a pipeline file
//! builds the engine (no CLI type), a user links through the OAuth flow, a backfill runs,
//! then a targeted refresh of one user picks up that user's late data only, at live priority.

use std::collections::BTreeSet;
use std::time::Duration;

use withings_lake::lake::Endpoint;
use withings_lake::link::{CallbackListener, LinkRequest};
use withings_lake::schema::Resource;
use withings_lake::secret::Secret;
use withings_lake::{EngineOptions, Mode, PipelineFile, Priority, RequestBudget, RunSpec, Users};

use crate::common::{self, NOW};

#[tokio::test]
async fn a_program_links_backfills_and_refreshes_one_user_through_the_library() {
    let sim = common::start(2, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pipeline.toml");
    std::fs::write(
        &file,
        format!(
            "[source]\napi_base_url = \"{}\"\nclient_id = \"demo-client\"\nclient_secret_env = \"WL_LIBRARY_TEST_UNSET\"\n\
             [credentials]\nurl = \"creds\"\nkey_file = \"creds.key\"\n[lake]\nurl = \"lake\"\n",
            sim.base
        ),
    )
    .unwrap();
    let pipeline = PipelineFile::load(&file).unwrap();
    // The program holds the client secret itself (the variable the file names is not set).
    let options = EngineOptions {
        is_service: false,
        requests_per_minute: Some(RequestBudget::Unlimited),
        workers: 1,
        client_secret: Some(Secret::new("demo-secret")),
    };
    let engine = pipeline.engine(&options).await.unwrap();

    // Link two people through the real OAuth flow, with the engine's client and store.
    let mut listener = CallbackListener::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    for i in 0..2 {
        let idx = i.to_string();
        let req = LinkRequest::new(
            &pipeline.authorize_url(),
            &pipeline.source.client_id,
            &pipeline.source.scopes,
            &listener.redirect_uri,
            &format!("person-{i}"),
            &[("sim_user", &idx)],
        )
        .unwrap();
        reqwest::get(&req.url).await.unwrap().error_for_status().unwrap();
        let callback = listener.next(Duration::from_secs(10)).await.unwrap();
        req.complete(engine.client(), engine.credentials(), callback, false, None).await.unwrap();
    }

    let at = |t: i64| chrono::DateTime::from_timestamp(t, 0).unwrap();
    let spec = |mode: Mode, users: Users, now: i64| RunSpec {
        mode,
        users,
        shard: None,
        now: at(now),
        lease_wait: Duration::from_secs(5),
        dry_run: false,
    };
    let run = |spec: RunSpec| {
        let engine = &engine;
        async move {
            let (_cancel, cancelled) = tokio::sync::watch::channel(false);
            engine.run(&spec, cancelled).await.unwrap()
        }
    };
    let (from, to) = (at(NOW - 9 * 86_400).date_naive(), at(NOW).date_naive());
    let backfill = run(spec(Mode::Backfill { from, to }, Users::All, NOW)).await;
    assert_eq!((backfill.users.selected, backfill.users.ok), (2, 2), "{}", backfill.to_text());
    assert!(backfill.rows["steps"].inserted > 0, "{}", backfill.to_text());

    // Hours later, one person's activity is refreshed on demand.
    let before = steps_per_user(engine.lake()).await;
    sim.advance(8 * 3600).await;
    let later = NOW + 8 * 3600;
    let families: BTreeSet<Endpoint> = [Endpoint::Getactivity, Endpoint::Getintradayactivity].into();
    let mode = Mode::Refresh { families, windows: Default::default() };
    assert_eq!(mode.priority(), Priority::Live, "someone is waiting for a refresh");
    let refresh = run(spec(mode, Users::Only(vec!["person-1".into()]), later)).await;
    assert_eq!((refresh.users.selected, refresh.users.ok, refresh.users.failed), (1, 1, 0), "{}", refresh.to_text());
    assert!(refresh.rows["steps"].inserted > 0, "the late steps arrive: {}", refresh.to_text());
    let sent: BTreeSet<&str> = refresh.requests.sent.keys().map(String::as_str).collect();
    assert!(sent.is_subset(&["getactivity", "getintradayactivity", "requesttoken"].into()), "only the families asked: {sent:?}");

    // Only person-1 moved; person-0's rows are what the backfill left.
    let after = steps_per_user(engine.lake()).await;
    assert_eq!(after["person-0"], before["person-0"]);
    assert!(after["person-1"] > before["person-1"], "{before:?} -> {after:?}");
}

/// Steps rows per user, read through the library's query session.
async fn steps_per_user(lake: &withings_lake::Lake) -> std::collections::BTreeMap<String, i64> {
    use arrow::array::AsArray;
    let session = withings_lake::query_session(lake).await.unwrap();
    let batches =
        withings_lake::query_sql(&session, &format!("SELECT user_id, count(*) FROM {} GROUP BY user_id", Resource::Steps))
            .await
            .unwrap();
    let mut out = std::collections::BTreeMap::new();
    for b in batches {
        let users = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let (users, counts) = (users.as_string::<i32>(), b.column(1).as_primitive::<arrow::datatypes::Int64Type>());
        for i in 0..b.num_rows() {
            out.insert(users.value(i).to_string(), counts.value(i));
        }
    }
    out
}
