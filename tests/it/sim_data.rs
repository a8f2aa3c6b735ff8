//! What the synthetic data does: the 24-hour rule, pagination, lastupdate, late data and
//! deletions, agreement between endpoints, time zones, data_fields, parameter errors.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{NaiveDate, TimeZone};
use serde_json::Value;
use withings_simulator::SimConfig;

use crate::common::{self, NOW, Sim, ymd};

fn arr(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}"))
}

async fn all_groups(sim: &Sim, token: &str, extra: &[(&str, &str)]) -> Vec<Value> {
    let mut out = Vec::new();
    let mut offset = 0i64;
    for page in 0.. {
        assert!(page < 1000, "pagination never ended");
        let off = offset.to_string();
        let mut params = vec![("action", "getmeas"), ("offset", off.as_str())];
        params.extend_from_slice(extra);
        let body = sim.body("/measure", token, &params).await;
        out.extend(arr(&body["measuregrps"]).iter().cloned());
        assert!(body["more"].is_i64(), "getmeas `more` is an integer: {}", body["more"]);
        if body["more"] == 0 {
            break;
        }
        let next = body["offset"].as_i64().unwrap();
        assert!(next > offset, "offset moves forward");
        offset = next;
    }
    out
}

#[tokio::test]
async fn intraday_and_sleep_get_return_only_the_first_24_hours() {
    let sim = common::start(1, 0).await;
    let token = sim.access(0).await;
    let start = NOW - 3 * 86_400;
    let (s, e) = (start.to_string(), NOW.to_string());
    let body = sim
        .body(
            "/v2/measure",
            &token,
            &[("action", "getintradayactivity"), ("startdate", &s), ("enddate", &e), ("data_fields", "steps,heart_rate")],
        )
        .await;
    let keys: Vec<i64> = body["series"].as_object().unwrap().keys().map(|k| k.parse().unwrap()).collect();
    assert!(keys.len() > 100);
    assert!(keys.iter().all(|k| *k >= start && *k < start + 86_400), "only the first 24 h after startdate");
    // Back-to-back 24-hour windows never return a sample twice.
    let next = (start + 86_400).to_string();
    let body2 = sim
        .body(
            "/v2/measure",
            &token,
            &[("action", "getintradayactivity"), ("startdate", &next), ("enddate", &e), ("data_fields", "steps,heart_rate")],
        )
        .await;
    let keys2: BTreeSet<&String> = body2["series"].as_object().unwrap().keys().collect();
    assert!(body["series"].as_object().unwrap().keys().all(|k| !keys2.contains(k)));
    let sleep = sim.body("/v2/sleep", &token, &[("action", "get"), ("startdate", &s), ("enddate", &e)]).await;
    for seg in arr(&sleep["series"]) {
        let t = seg["startdate"].as_i64().unwrap();
        assert!(t >= start && t <= start + 86_400, "segment at {t}");
    }
}

#[tokio::test]
async fn pagination_pages_add_up_to_the_whole_list() {
    let small = common::start_with(SimConfig { page_size: 7, ..common::config(2, 0) }).await;
    let big = common::start_with(SimConfig { page_size: 100_000, ..common::config(2, 0) }).await;
    for user in 0..2 {
        let paged = all_groups(&small, &small.access(user).await, &[]).await;
        let whole = all_groups(&big, &big.access(user).await, &[]).await;
        assert!(whole.len() > 20, "user {user} has {} groups", whole.len());
        assert_eq!(paged, whole, "user {user}: pages of 7 equal one page");
        let ids: BTreeSet<i64> = paged.iter().map(|g| g["grpid"].as_i64().unwrap()).collect();
        assert_eq!(ids.len(), paged.len(), "no group twice across pages");
    }
    // The v2 list endpoints page too, with a boolean `more`.
    let token = small.access(0).await;
    let (from, to) = (ymd(40), ymd(0));
    let mut offset = 0;
    let mut rows = 0;
    loop {
        let off = offset.to_string();
        let body = small
            .body(
                "/v2/measure",
                &token,
                &[("action", "getactivity"), ("startdateymd", &from), ("enddateymd", &to), ("offset", &off)],
            )
            .await;
        rows += arr(&body["activities"]).len();
        assert!(body["more"].is_boolean());
        if body["more"] == false {
            break;
        }
        offset = body["offset"].as_i64().unwrap();
    }
    let whole = big
        .body("/v2/measure", &big.access(0).await, &[("action", "getactivity"), ("startdateymd", &from), ("enddateymd", &to)])
        .await;
    assert_eq!(rows, arr(&whole["activities"]).len());
}

#[tokio::test]
async fn lastupdate_returns_what_changed_including_back_dated_entries() {
    let sim = common::start(8, 0).await;
    let lu = NOW - 10 * 86_400;
    let lus = lu.to_string();
    let mut back_dated = 0;
    for user in 0..8 {
        let token = sim.access(user).await;
        let all = all_groups(&sim, &token, &[]).await;
        let changed = all_groups(&sim, &token, &[("lastupdate", &lus)]).await;
        let expected: Vec<&Value> = all.iter().filter(|g| g["modified"].as_i64().unwrap() > lu).collect();
        assert_eq!(changed.iter().collect::<Vec<_>>(), expected, "user {user}: lastupdate = modified after");
        back_dated += changed.iter().filter(|g| g["date"].as_i64().unwrap() < lu).count();
    }
    assert!(back_dated > 0, "some measures were entered long after they were taken");
}

#[tokio::test]
async fn todays_activity_grows_as_the_watch_syncs() {
    let sim = common::start(1, 0).await;
    let token = sim.access(0).await;
    let today = ymd(0);
    let fetch = |token: String, today: String| {
        let sim = &sim;
        async move {
            let body = sim
                .body(
                    "/v2/measure",
                    &token,
                    &[("action", "getactivity"), ("startdateymd", &today), ("enddateymd", &today), ("data_fields", "steps")],
                )
                .await;
            arr(&body["activities"]).iter().find(|r| r["brand"] == 1).cloned()
        }
    };
    let noon = fetch(token.clone(), today.clone()).await.expect("the watch synced this morning");
    sim.advance(8 * 3600).await;
    let token = sim.access(0).await; // the first one expired after 3 hours
    let evening = fetch(token.clone(), today.clone()).await.unwrap();
    assert!(evening["steps"].as_i64() >= noon["steps"].as_i64());
    assert!(evening["modified"].as_i64() > noon["modified"].as_i64(), "modified moves with each sync");
    let lu = noon["modified"].as_i64().unwrap().to_string();
    let changed =
        sim.body("/v2/measure", &token, &[("action", "getactivity"), ("lastupdate", &lu), ("data_fields", "steps")]).await;
    assert!(arr(&changed["activities"]).iter().any(|r| r["date"] == today.as_str() && r["brand"] == 1), "{changed}");
}

#[tokio::test]
async fn sleep_appears_after_waking() {
    let sim = common::start(1, 0).await;
    let token = sim.access(0).await;
    let tomorrow = NaiveDate::parse_from_str(&ymd(0), "%Y-%m-%d").unwrap().succ_opt().unwrap().to_string();
    let window = [("action", "getsummary"), ("startdateymd", tomorrow.as_str()), ("enddateymd", tomorrow.as_str())];
    assert!(arr(&sim.body("/v2/sleep", &token, &window).await["series"]).is_empty(), "tonight has not happened");
    sim.advance(86_400).await;
    let token = sim.access(0).await;
    let nights = sim.body("/v2/sleep", &token, &window).await;
    let night = &arr(&nights["series"])[0];
    assert!(night["created"].as_i64().unwrap() > night["enddate"].as_i64().unwrap(), "synced after waking");
    let lu = NOW.to_string();
    let changed = sim.body("/v2/sleep", &token, &[("action", "getsummary"), ("lastupdate", &lu)]).await;
    assert!(arr(&changed["series"]).iter().any(|s| s["id"] == night["id"]));
}

#[tokio::test]
async fn intraday_steps_add_up_to_the_watch_activity_row() {
    let sim = common::start(1, 0).await;
    let token = sim.access(0).await;
    let paris = chrono_tz::Europe::Paris;
    let mut checked = 0;
    for back in 2..12 {
        let date = NaiveDate::parse_from_str(&ymd(back), "%Y-%m-%d").unwrap();
        let start = paris.from_local_datetime(&date.and_hms_opt(0, 0, 0).unwrap()).unwrap().timestamp();
        let end = paris.from_local_datetime(&date.succ_opt().unwrap().and_hms_opt(0, 0, 0).unwrap()).unwrap().timestamp() - 1;
        let day = date.to_string();
        let act = sim
            .body(
                "/v2/measure",
                &token,
                &[
                    ("action", "getactivity"),
                    ("startdateymd", &day),
                    ("enddateymd", &day),
                    ("data_fields", "steps,hr_min,hr_max"),
                ],
            )
            .await;
        let Some(row) = arr(&act["activities"]).iter().find(|r| r["brand"] == 1).cloned() else { continue };
        let (s, e) = (start.to_string(), end.to_string());
        let series = sim
            .body(
                "/v2/measure",
                &token,
                &[("action", "getintradayactivity"), ("startdate", &s), ("enddate", &e), ("data_fields", "steps,heart_rate")],
            )
            .await;
        let samples = series["series"].as_object().unwrap();
        let steps: i64 = samples.values().filter_map(|x| x["steps"].as_i64()).sum();
        assert_eq!(steps, row["steps"].as_i64().unwrap(), "{day}: intraday steps = daily steps");
        let hr_max = samples.values().filter_map(|x| x["heart_rate"].as_i64()).max().unwrap();
        assert_eq!(hr_max, row["hr_max"].as_i64().unwrap(), "{day}");
        checked += 1;
    }
    assert!(checked >= 5, "the watch was worn on most days");
}

#[tokio::test]
async fn measures_carry_the_quirks_of_real_accounts() {
    // Start 40 days earlier, list everything, then move to NOW: some groups were deleted or
    // edited in between, as users do.
    let earlier = common::start_with(SimConfig { now: Some(NOW - 40 * 86_400), history_days: 20, ..common::config(12, 0) }).await;
    let mut before: BTreeMap<i64, Value> = BTreeMap::new();
    let mut units: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    let mut same_second = 0;
    for user in 0..12 {
        let token = earlier.access(user).await;
        let groups = all_groups(&earlier, &token, &[]).await;
        let mut by_date: BTreeMap<i64, usize> = BTreeMap::new();
        for g in &groups {
            before.insert(g["grpid"].as_i64().unwrap(), g.clone());
            *by_date.entry(g["date"].as_i64().unwrap()).or_default() += 1;
            for m in arr(&g["measures"]) {
                units.entry(m["type"].as_i64().unwrap()).or_default().insert(m["unit"].as_i64().unwrap());
            }
        }
        same_second += by_date.values().filter(|n| **n > 1).count();
    }
    assert!(units[&1].len() >= 2, "weight comes with more than one unit exponent: {:?}", units[&1]);
    assert!(units[&10].len() >= 2, "systolic too: {:?}", units[&10]);
    assert!(same_second > 0, "two groups in one second (a shared scale)");
    assert!(before.values().any(|g| g["attrib"] == 1), "ambiguous measures exist");

    earlier.advance(40 * 86_400).await;
    let cutoff = (NOW - 40 * 86_400).to_string();
    let mut after: BTreeMap<i64, Value> = BTreeMap::new();
    for user in 0..12 {
        let token = earlier.access(user).await;
        for g in all_groups(&earlier, &token, &[("enddate", &cutoff)]).await {
            after.insert(g["grpid"].as_i64().unwrap(), g);
        }
    }
    let deleted = before.keys().filter(|k| !after.contains_key(k)).count();
    let edited = after.values().filter(|g| g["modified"].as_i64() > g["created"].as_i64()).count();
    assert!(deleted > 0, "some measures were deleted after the fact");
    assert!(edited > 0, "some measures were edited after the fact");
    assert!(after.keys().all(|k| before.contains_key(k) || after[k]["created"].as_i64().unwrap() > NOW - 40 * 86_400));
}

#[tokio::test]
async fn data_fields_select_what_comes_back() {
    let sim = common::start(1, 0).await;
    let token = sim.access(0).await;
    let (s, e) = ((NOW - 86_400).to_string(), NOW.to_string());
    let body = sim
        .body(
            "/v2/measure",
            &token,
            &[("action", "getintradayactivity"), ("startdate", &s), ("enddate", &e), ("data_fields", "heart_rate")],
        )
        .await;
    for (k, sample) in body["series"].as_object().unwrap() {
        let keys: BTreeSet<&str> = sample.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["deviceid", "model", "model_id", "heart_rate"]), "sample {k}");
    }
    let sleep = sim
        .body("/v2/sleep", &token, &[("action", "get"), ("startdate", &s), ("enddate", &e), ("data_fields", "hr,rmssd,sdnn_1")])
        .await;
    let segs = arr(&sleep["series"]);
    assert!(segs.iter().all(|x| x.get("hr").is_some() && x.get("rr").is_none() && x.get("snoring").is_none()));
    assert!(segs.iter().any(|x| x.get("rmssd").is_some() && x.get("sdnn_1").is_some()));
    let workouts =
        sim.body("/v2/measure", &token, &[("action", "getworkouts"), ("startdateymd", &ymd(59)), ("enddateymd", &ymd(0))]).await;
    assert!(arr(&workouts["series"]).iter().all(|w| w["data"].is_null()), "without data_fields: data null");
    let summary_plain =
        sim.body("/v2/sleep", &token, &[("action", "getsummary"), ("startdateymd", &ymd(5)), ("enddateymd", &ymd(0))]).await;
    for night in arr(&summary_plain["series"]) {
        assert!(
            night["data"].get("sleep_score").is_none() && night["data"].get("hr_average").is_none(),
            "default field set only"
        );
    }
}

#[tokio::test]
async fn sleep_segments_come_unsorted_but_tile_the_night() {
    let sim = common::start(1, 0).await;
    let token = sim.access(0).await;
    let (s, e) = ((NOW - 86_400).to_string(), NOW.to_string());
    let body =
        sim.body("/v2/sleep", &token, &[("action", "get"), ("startdate", &s), ("enddate", &e), ("data_fields", "hr")]).await;
    let segs: Vec<(i64, i64, i64)> = arr(&body["series"])
        .iter()
        .map(|x| (x["startdate"].as_i64().unwrap(), x["enddate"].as_i64().unwrap(), x["state"].as_i64().unwrap()))
        .collect();
    let mut sorted = segs.clone();
    sorted.sort();
    assert_ne!(segs, sorted, "Withings does not sort segments");
    let nights: Vec<_> = sorted.windows(2).filter(|w| w[0].1 != w[1].0).collect();
    assert!(nights.len() <= 1, "segments of one session are contiguous (a nap may stand apart): {nights:?}");
    assert!(sorted.iter().all(|(a, b, st)| a < b && (0..=3).contains(st)));
    assert_eq!(sorted.first().unwrap().2, 0, "a night starts awake (sleep latency)");
}

#[tokio::test]
async fn the_traveller_changes_time_zone_and_days_stay_local() {
    let sim = common::start(2, 0).await;
    let token = sim.access(1).await;
    let body = sim
        .body(
            "/v2/measure",
            &token,
            &[("action", "getactivity"), ("startdateymd", &ymd(40)), ("enddateymd", &ymd(1)), ("data_fields", "steps")],
        )
        .await;
    let zones: BTreeSet<&str> = arr(&body["activities"]).iter().map(|r| r["timezone"].as_str().unwrap()).collect();
    assert_eq!(zones, BTreeSet::from(["America/New_York", "Europe/London"]));
    let users = sim.users().await;
    assert_eq!(users[1]["timezone"], "Europe/London");
    assert_eq!(users[1]["moves"]["timezone"], "Europe/London");
}

#[tokio::test]
async fn bad_parameters_get_invalid_params_naming_the_parameter() {
    let sim = common::start(1, 0).await;
    let token = sim.access(0).await;
    // (path, parameters, expected status, text the error must contain)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, i64, &'a str);
    let cases: Vec<Case> = vec![
        ("/v2/measure", vec![("action", "getactivity")], 503, "startdateymd"),
        (
            "/v2/measure",
            vec![("action", "getactivity"), ("startdateymd", "2024-13-01"), ("enddateymd", "2024-06-01")],
            503,
            "startdateymd",
        ),
        ("/v2/sleep", vec![("action", "get"), ("enddate", "1718452800")], 503, "startdate"),
        ("/measure", vec![("action", "getmeas"), ("lastupdate", "yesterday")], 503, "lastupdate"),
        ("/measure", vec![("action", "getmeas"), ("offset", "-3")], 503, "offset"),
        ("/measure", vec![("action", "getmeasurements")], 2554, "getmeasurements"),
        ("/measure", vec![], 503, "action"),
    ];
    for (path, params, status, needle) in cases {
        let v = sim.call(path, Some(&token), &params).await;
        assert_eq!(v["status"], status, "{path} {params:?}: {v}");
        assert_eq!(v["body"], serde_json::json!({}));
        assert!(v["error"].as_str().unwrap().contains(needle), "{path} {params:?}: {v}");
    }
}

#[tokio::test]
async fn empty_answers_keep_withings_shapes() {
    let sim = common::start(1, 0).await;
    let token = sim.access(0).await;
    let future = (NOW + 86_400).to_string();
    let later = (NOW + 2 * 86_400).to_string();
    let body =
        sim.body("/v2/measure", &token, &[("action", "getintradayactivity"), ("startdate", &future), ("enddate", &later)]).await;
    assert_eq!(body["series"], serde_json::json!([]), "an empty series is [] at Withings");
    let old = sim.body("/measure", &token, &[("action", "getmeas"), ("startdate", "0"), ("enddate", "86400")]).await;
    assert_eq!(old["measuregrps"], serde_json::json!([]));
    assert_eq!(old["more"], 0);
    let goals = sim.body("/measure", &token, &[("action", "getmeas"), ("category", "2")]).await;
    assert_eq!(goals["measuregrps"], serde_json::json!([]));
}

#[tokio::test]
async fn extreme_parameters_get_an_answer_never_a_reset_connection() {
    let sim = common::start(1, 0).await;
    let token = sim.access(0).await;
    let min = i64::MIN.to_string();
    let max = i64::MAX.to_string();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/measure", vec![("action", "getmeas"), ("startdate", &min), ("enddate", &max)]),
        ("/measure", vec![("action", "getmeas"), ("lastupdate", &min)]),
        ("/measure", vec![("action", "getmeas"), ("offset", &max)]),
        ("/v2/measure", vec![("action", "getactivity"), ("lastupdate", &min)]),
        ("/v2/measure", vec![("action", "getactivity"), ("startdateymd", "-262143-01-01"), ("enddateymd", "+262142-12-31")]),
        ("/v2/measure", vec![("action", "getintradayactivity"), ("startdate", &min), ("enddate", &max)]),
        ("/v2/measure", vec![("action", "getintradayactivity"), ("enddate", &min)]),
        ("/v2/measure", vec![("action", "getworkouts"), ("startdateymd", "0001-01-01"), ("enddateymd", "9999-12-31")]),
        ("/v2/sleep", vec![("action", "get"), ("startdate", &min), ("enddate", &max)]),
        ("/v2/sleep", vec![("action", "getsummary"), ("lastupdate", &max)]),
        ("/v2/heart", vec![("action", "list"), ("startdate", &max), ("enddate", &max)]),
        ("/v2/signature", vec![("action", "getnonce"), ("client_id", "demo-client"), ("timestamp", &min), ("signature", "00")]),
    ];
    for (path, params) in cases {
        let v = sim.call(path, Some(&token), &params).await;
        assert!(matches!(v["status"].as_i64(), Some(0 | 503)), "{path} {params:?}: {v}");
    }
    let (status, v) = sim.admin_post("/_sim/clock", serde_json::json!({"epoch": 9_000_000_000_000_000i64})).await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{v}");
    let (status, _) = sim.admin_post("/_sim/clock", serde_json::json!({"advance_seconds": i64::MAX})).await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
    assert_eq!(sim.users().await.len(), 1, "the simulator still answers");
}
