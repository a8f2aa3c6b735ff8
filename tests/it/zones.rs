//! Local time for people who travel, end to end against the simulator: its user 1 moves from
//! New York to London 20 days before the clock. Every row of every table carries the zone of
//! its local day, on a backfill, on syncs across the move (including weigh-ins first stamped
//! before the day records that reveal the move), on `reharmonize`, and in a fresh backfill;
//! summing steps by the local date of `start + timezone_offset` gives each day's activity
//! steps. Expected zones come from the simulator's own record of the move.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use chrono::{DateTime, NaiveDate, Offset, TimeZone};
use withings_lake::lake::{Endpoint, Lake};
use withings_lake::schema::Resource;
use withings_lake::sync::{Engine, Mode, SyncConfig};

use crate::common::{self, NOW};
use crate::sync::{all_rows, client, d, lake_at, link, run, spec, table_lines};

const MOVER: &str = "user-1";

/// The first instant of the move day: London midnight.
fn move_instant(move_day: NaiveDate) -> i64 {
    chrono_tz::Europe::London.from_local_datetime(&move_day.and_hms_opt(0, 0, 0).unwrap()).earliest().unwrap().timestamp()
}

fn expected_zone(at: i64, move_at: i64) -> chrono_tz::Tz {
    if at >= move_at { chrono_tz::Europe::London } else { chrono_tz::America::New_York }
}

/// The epoch seconds of a row: the table's time column (a date at local noon).
fn row_times(r: Resource, b: &RecordBatch) -> Vec<i64> {
    let schema = r.schema();
    let c = b.column_by_name(&schema.time_column).unwrap();
    match c.data_type() {
        arrow::datatypes::DataType::Date32 => {
            c.as_primitive::<Date32Type>().values().iter().map(|d| i64::from(*d) * 86_400 + 12 * 3600).collect()
        }
        _ => c.as_primitive::<TimestampMicrosecondType>().values().iter().map(|us| us.div_euclid(1_000_000)).collect(),
    }
}

/// Every row of the mover in every table has the zone of its local day and that zone's
/// offset at its time. Summary tables are checked by their local date.
async fn assert_zones(lake: &Lake, move_day: NaiveDate, when: &str) {
    let move_at = move_instant(move_day);
    let mut checked = 0;
    for r in Resource::ALL {
        let b = all_rows(lake, r).await;
        let users = b.column_by_name("user_id").unwrap().as_string::<i32>();
        let zones = b.column_by_name("time_zone").unwrap().as_string::<i32>();
        let offsets = b.column_by_name("timezone_offset").unwrap().as_primitive::<Int32Type>();
        let dates = b.column_by_name("calendar_date").map(|c| c.as_primitive::<Date32Type>().clone());
        let times = row_times(r, &b);
        for i in (0..b.num_rows()).filter(|i| users.value(*i) == MOVER) {
            let want = match &dates {
                Some(dd) if r != Resource::Body => {
                    let day = NaiveDate::from_num_days_from_ce_opt(dd.value(i) + 719_163).unwrap();
                    if day >= move_day { chrono_tz::Europe::London } else { chrono_tz::America::New_York }
                }
                _ => expected_zone(times[i], move_at),
            };
            assert_eq!(
                zones.value(i),
                want.name(),
                "{when}: {r} row at {} ({})",
                times[i],
                DateTime::from_timestamp(times[i], 0).unwrap()
            );
            if !matches!(r, Resource::Activity | Resource::Sleep | Resource::Workouts) {
                let utc = DateTime::from_timestamp(times[i], 0).unwrap().naive_utc();
                let off = want.offset_from_utc_datetime(&utc).fix().local_minus_utc();
                assert_eq!(offsets.value(i), off, "{when}: {r} offset at {utc}");
            }
            checked += 1;
        }
    }
    assert!(checked > 1000, "{when}: only {checked} rows of the mover");
}

/// For every (user, watch, day): the steps summed by the local date of `start +
/// timezone_offset` equal the watch's activity steps of that day.
async fn assert_local_days_sum_to_activity(lake: &Lake, when: &str) {
    let steps = all_rows(lake, Resource::Steps).await;
    let (u, dev) = (
        steps.column_by_name("user_id").unwrap().as_string::<i32>(),
        steps.column_by_name("source_device_id").unwrap().as_string::<i32>(),
    );
    let start = steps.column_by_name("start").unwrap().as_primitive::<TimestampMicrosecondType>();
    let off = steps.column_by_name("timezone_offset").unwrap().as_primitive::<Int32Type>();
    let v = steps.column_by_name("value").unwrap().as_primitive::<Float64Type>();
    let mut sums: BTreeMap<(String, String, NaiveDate), f64> = BTreeMap::new();
    for i in 0..steps.num_rows() {
        let local = DateTime::from_timestamp(start.value(i) / 1_000_000 + i64::from(off.value(i)), 0).unwrap().date_naive();
        *sums.entry((u.value(i).into(), dev.value(i).into(), local)).or_default() += v.value(i);
    }
    let act = all_rows(lake, Resource::Activity).await;
    let (au, adev) = (
        act.column_by_name("user_id").unwrap().as_string::<i32>(),
        act.column_by_name("source_device_id").unwrap().as_string::<i32>(),
    );
    let kind = act.column_by_name("source_type").unwrap().as_string::<i32>();
    let date = act.column_by_name("calendar_date").unwrap().as_primitive::<Date32Type>();
    let asteps = act.column_by_name("steps").unwrap();
    let asteps: Vec<Option<f64>> = match asteps.data_type() {
        arrow::datatypes::DataType::Int64 => asteps.as_primitive::<Int64Type>().iter().map(|x| x.map(|x| x as f64)).collect(),
        _ => asteps.as_primitive::<Float64Type>().iter().collect(),
    };
    let mut days = 0;
    for i in (0..act.num_rows()).filter(|i| kind.value(*i) == "watch" && !adev.is_null(*i)) {
        let day = NaiveDate::from_num_days_from_ce_opt(date.value(i) + 719_163).unwrap();
        let key = (au.value(i).to_string(), adev.value(i).to_string(), day);
        let Some(sum) = sums.remove(&key) else { continue };
        assert_eq!(Some(sum), asteps[i], "{when}: local-day steps of {key:?}");
        days += 1;
    }
    assert!(sums.is_empty(), "{when}: local days of steps without a watch activity day: {:?}", sums.keys().collect::<Vec<_>>());
    assert!(days >= 40, "{when}: only {days} (user, watch, day) compared");
}

#[tokio::test]
async fn a_mover_s_rows_carry_the_zone_of_their_local_day_through_backfill_syncs_and_reharmonize() {
    let sim = common::start(2, 0).await;
    let users = sim.users().await;
    let move_day: NaiveDate = users[1]["moves"]["on"].as_str().unwrap().parse().unwrap();
    assert_eq!(move_day, d(20));
    let dir = tempfile::tempdir().unwrap();
    let store = link(&sim, &dir.path().join("creds"), 2).await;
    let lake = lake_at(&dir.path().join("lake"), 1).await;
    let engine = Engine::new(lake.clone(), client(&sim, 0), store.clone(), SyncConfig::default());

    // 1. A backfill of the New York weeks only.
    let r = run(&engine, &spec(Mode::Backfill { from: d(40), to: d(25) }, NOW)).await;
    assert_eq!(r.users.ok, 2, "{}", r.to_text());
    assert_zones(&lake, move_day, "backfill").await;

    // 2. getmeas alone: the London weigh-ins arrive before any day record of London; the last
    //    day known is in New York, and they are stamped so.
    let r = run(&engine, &spec(Mode::Refresh { families: [Endpoint::Getmeas].into(), windows: Default::default() }, NOW)).await;
    assert_eq!(r.users.ok, 2, "{}", r.to_text());
    let weights = all_rows(&lake, Resource::Weight).await;
    let stale = (0..weights.num_rows())
        .filter(|i| weights.column_by_name("user_id").unwrap().as_string::<i32>().value(*i) == MOVER)
        .filter(|i| row_times(Resource::Weight, &weights)[*i] >= move_instant(move_day))
        .filter(|i| weights.column_by_name("time_zone").unwrap().as_string::<i32>().value(*i) == "America/New_York")
        .count();
    assert!(stale >= 5, "the London weigh-ins first carry the last zone known: {stale}");

    // 3. The sync: the activity days reveal the move; the weigh-ins are stamped again in the
    //    same run (one getmeas listing of the changed days) and count as updates.
    let r = run(&engine, &spec(Mode::Incremental, NOW)).await;
    assert_eq!(r.users.ok, 2, "{}", r.to_text());
    assert!(r.rows["weight"].updated >= stale as u64, "re-stamped weigh-ins are updates: {}", r.to_text());
    assert_zones(&lake, move_day, "sync across the move").await;
    assert_local_days_sum_to_activity(&lake, "sync across the move").await;

    // 4. Later syncs: the clock moves on a day; nothing goes back to the wrong zone, and an idle
    //    sync re-stamps nothing.
    sim.advance(86_400).await;
    let later = NOW + 86_400;
    run(&engine, &spec(Mode::Incremental, later)).await;
    let idle = run(&engine, &spec(Mode::Incremental, later)).await;
    assert_eq!(idle.rows_changed(), 0, "{}", idle.to_text());
    assert_zones(&lake, move_day, "later sync").await;
    assert_local_days_sum_to_activity(&lake, "later sync").await;

    // 5. reharmonize rebuilds the same tables from the raw landing.
    let before: Vec<Vec<String>> =
        futures::future::join_all(Resource::ALL.iter().map(|r| table_lines(&lake, (*r).into(), 0))).await;
    let lease = lake.lease_shard(0, "rebuilder", Duration::ZERO).await.unwrap();
    let m = withings_lake::rebuild::reharmonize(&lake, &lease, "rebuild-zones", &Resource::ALL).await.unwrap();
    lease.release().await;
    let after: Vec<Vec<String>> =
        futures::future::join_all(Resource::ALL.iter().map(|r| table_lines(&lake, (*r).into(), 0))).await;
    for (r, (a, b)) in Resource::ALL.iter().zip(before.iter().zip(&after)) {
        let diff: Vec<(&String, &String)> = a.iter().zip(b).filter(|(x, y)| x != y).take(2).collect();
        assert!(diff.is_empty() && a.len() == b.len(), "{r}: a rebuild changed rows: {diff:#?}");
    }
    assert!(m.partitions.is_empty(), "a rebuild changes nothing: {:?}", m.partitions);

    // 6. A fresh backfill of the whole span equals the lake the syncs kept.
    let dir2 = tempfile::tempdir().unwrap();
    let store2 = link(&sim, &dir2.path().join("creds"), 2).await;
    let fresh = lake_at(&dir2.path().join("lake"), 1).await;
    let engine2 = Engine::new(fresh.clone(), client(&sim, 0), store2, SyncConfig::default());
    let to = DateTime::from_timestamp(later, 0).unwrap().date_naive();
    run(&engine2, &spec(Mode::Backfill { from: d(40), to }, later)).await;
    assert_zones(&fresh, move_day, "fresh backfill").await;
    assert_local_days_sum_to_activity(&fresh, "fresh backfill").await;
    for r in Resource::ALL {
        let (a, b) = (table_lines(&lake, r.into(), 0).await, table_lines(&fresh, r.into(), 0).await);
        let diff: Vec<(&String, &String)> = a.iter().zip(&b).filter(|(x, y)| x != y).take(2).collect();
        assert!(diff.is_empty() && a.len() == b.len(), "{r}: the synced lake differs from a fresh backfill: {diff:#?}");
    }
}

/// A backfill whose activity listing fails still commits its getmeas answer, stamped with the
/// only zone known then (the current one, London, also on the New York weeks). The re-run does
/// not list getmeas again (its window is done) but learns the New York days from the activity
/// listing and lists getmeas over them once more: every weigh-in ends in its day's zone.
#[tokio::test]
async fn weigh_ins_committed_before_the_day_records_are_stamped_again_when_they_arrive() {
    let sim = common::start(2, 0).await;
    let move_day: NaiveDate = sim.users().await[1]["moves"]["on"].as_str().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = link(&sim, &dir.path().join("creds"), 2).await;
    let lake = lake_at(&dir.path().join("lake"), 1).await;
    let engine = Engine::new(lake.clone(), client(&sim, 0), store, SyncConfig::default());
    let window = Mode::Backfill { from: d(30), to: d(0) };

    sim.admin_post("/_sim/faults", serde_json::json!({"kind": "status_2554", "count": 1000, "endpoint": "getactivity"})).await;
    let failed = run(&engine, &spec(window.clone(), NOW)).await;
    assert_eq!(failed.users.failed, 2, "{}", failed.to_text());
    let weights = all_rows(&lake, Resource::Weight).await;
    let (users, zones) = (
        weights.column_by_name("user_id").unwrap().as_string::<i32>(),
        weights.column_by_name("time_zone").unwrap().as_string::<i32>(),
    );
    let times = row_times(Resource::Weight, &weights);
    let london_too_early = (0..weights.num_rows())
        .filter(|i| users.value(*i) == MOVER && times[*i] < move_instant(move_day) && zones.value(*i) == "Europe/London")
        .count();
    assert!(london_too_early >= 5, "the New York weigh-ins first carry the current zone: {london_too_early}");

    sim.admin_post("/_sim/faults", serde_json::json!({"clear": true})).await;
    let ok = run(&engine, &spec(window, NOW)).await;
    assert_eq!(ok.users.ok, 2, "{}", ok.to_text());
    assert!(ok.rows["weight"].updated >= london_too_early as u64, "{}", ok.to_text());
    assert_zones(&lake, move_day, "re-run").await;
    assert_local_days_sum_to_activity(&lake, "re-run").await;
    // The other user never moved: nothing of theirs was listed again.
    assert!(
        ok.requests.sent.get("getmeas").copied().unwrap_or(0) <= 1,
        "one listing, for the mover's New York days: {}",
        ok.to_text()
    );
}
