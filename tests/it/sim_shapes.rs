//! Each simulator endpoint has the keys and JSON types of the real-shaped Withings responses
//! (`../shared/fixtures/withings-real/`, recorded from the real API) or, for endpoints those
//! do not cover, of this project's `fixtures/withings/` copies of the reference samples.

use serde_json::{Value, json};

use crate::common::{self, ymd};
use crate::shape::assert_same_shape;

const NULLABLE_DEVICE: &[&str] = &[
    ".body.measuregrps[].deviceid",
    ".body.measuregrps[].hash_deviceid",
    ".body.measuregrps[].modelid",
    ".body.measuregrps[].model",
];

#[tokio::test]
async fn real_shapes_getmeas_match_recorded_responses() {
    let Some(small) = common::real_fixture("measurement.json") else { return };
    let mut groups: Vec<Value> = Vec::new();
    for name in ["measurement_list.json", "measurement_list_2.json", "measurement_positions.json"] {
        groups.extend(common::real_fixture(name).unwrap().as_array().unwrap().iter().cloned());
    }
    groups.extend(small["body"]["measuregrps"].as_array().unwrap().iter().cloned());
    // The recorded envelope has no more/offset; the reference documents them (section 3.1).
    let real = json!({"status": 0, "body": {
        "updatetime": small["body"]["updatetime"], "timezone": small["body"]["timezone"],
        "measuregrps": groups, "more": 0, "offset": 0}});
    let sim = common::start(8, 0).await;
    let mut seen_types = std::collections::BTreeSet::new();
    for user in 0..8 {
        let token = sim.access(user).await;
        let ours = sim.call("/measure", Some(&token), &[("action", "getmeas"), ("category", "1")]).await;
        for g in ours["body"]["measuregrps"].as_array().unwrap() {
            for m in g["measures"].as_array().unwrap() {
                seen_types.insert(m["type"].as_i64().unwrap());
            }
        }
        let optional = [
            ".body.measuregrps[].measures[].position",
            ".body.measuregrps[].measures[].apppfmid",
            ".body.measuregrps[].measures[].appliver",
        ];
        assert_same_shape("measurement_list.json", &real, &ours, NULLABLE_DEVICE, &optional);
    }
    // The synthetic devices produce weight/body composition, BP, SpO2, VO2 max, ECG intervals.
    for t in [1, 4, 5, 6, 8, 9, 10, 11, 54, 76, 77, 88, 91, 123] {
        assert!(seen_types.contains(&t), "no synthetic user produced meastype {t}: {seen_types:?}");
    }
}

#[tokio::test]
async fn real_shapes_getactivity_matches_recorded_response() {
    let Some(real) = common::real_fixture("activity.json") else { return };
    let sim = common::start(1, 0).await;
    let token = sim.access(0).await;
    let fields = "steps,distance,elevation,soft,moderate,intense,active,calories,totalcalories,hr_average,hr_min,hr_max,hr_zone_0,hr_zone_1,hr_zone_2,hr_zone_3";
    let ours = sim
        .call(
            "/v2/measure",
            Some(&token),
            &[("action", "getactivity"), ("startdateymd", &ymd(30)), ("enddateymd", &ymd(0)), ("data_fields", fields)],
        )
        .await;
    let rows = ours["body"]["activities"].as_array().unwrap();
    assert!(rows.len() >= 40, "30 days of watch and phone rows, got {}", rows.len());
    assert!(rows.iter().any(|r| r["brand"] == 1) && rows.iter().any(|r| r["brand"] == 18), "both sources appear");
    // The recorded rows are all from a phone (deviceid null); add the reference's watch row.
    let mut real = real;
    let watch = common::own_fixture("getactivity_watch.json");
    real["body"]["activities"].as_array_mut().unwrap().extend(watch["body"]["activities"].as_array().unwrap().iter().cloned());
    assert_same_shape("activity.json", &real, &ours, &[], &[]);
}

#[tokio::test]
async fn real_shapes_getworkouts_matches_recorded_response() {
    let Some(mut real) = common::real_fixture("workouts.json") else { return };
    // The recorded workouts are all from a phone (deviceid null); add the reference's watch one.
    let watch = common::own_fixture("getworkouts_watch.json");
    real["body"]["series"].as_array_mut().unwrap().extend(watch["body"]["series"].as_array().unwrap().iter().cloned());
    let sim = common::start(6, 0).await;
    let fields = "calories,intensity,manual_distance,manual_calories,hr_average,hr_min,hr_max,hr_zone_0,hr_zone_1,hr_zone_2,hr_zone_3,pause_duration,algo_pause_duration,spo2_average,steps,distance,elevation";
    let mut total = 0;
    for user in 0..6 {
        let token = sim.access(user).await;
        let ours = sim
            .call(
                "/v2/measure",
                Some(&token),
                &[("action", "getworkouts"), ("startdateymd", &ymd(59)), ("enddateymd", &ymd(0)), ("data_fields", fields)],
            )
            .await;
        total += ours["body"]["series"].as_array().unwrap().len();
        // Swims and rides have no steps, distance or elevation: null, as Withings sends; only
        // swims have an algo_pause_duration (the recording has no swim, so it shows only null).
        let nullable = [
            ".body.series[].data.steps",
            ".body.series[].data.distance",
            ".body.series[].data.elevation",
            ".body.series[].data.algo_pause_duration",
        ];
        assert_same_shape("workouts.json", &real, &ours, &nullable, &[]);
    }
    assert!(total > 20, "six users over 60 days work out more than 20 times, got {total}");
}

#[tokio::test]
async fn real_shapes_sleep_get_matches_recorded_response() {
    let Some(real) = common::real_fixture("sleep.json") else { return };
    let Some(real_plain) = common::real_fixture("sleep_no_datafields.json") else { return };
    let sim = common::start(1, 0).await;
    let token = sim.access(0).await;
    let start = (common::NOW - 86_400).to_string();
    let end = common::NOW.to_string();
    let ours = sim
        .call(
            "/v2/sleep",
            Some(&token),
            &[("action", "get"), ("startdate", &start), ("enddate", &end), ("data_fields", "hr,rr,snoring")],
        )
        .await;
    assert!(ours["body"]["series"].as_array().unwrap().len() > 5, "{ours}");
    assert_same_shape("sleep.json", &real, &ours, &[], &[]);
    let plain = sim.call("/v2/sleep", Some(&token), &[("action", "get"), ("startdate", &start), ("enddate", &end)]).await;
    // The recorded file without data_fields has no top-level model; we send it, as with fields.
    let mut real_plain = real_plain;
    real_plain["body"]["model"] = json!(32);
    assert_same_shape("sleep_no_datafields.json", &real_plain, &plain, &[], &[]);
}

#[tokio::test]
async fn real_shapes_sleep_getsummary_matches_recorded_responses() {
    let Some(real) = common::real_fixture("sleep_summary.json") else { return };
    let Some(real_plain) = common::real_fixture("sleep_summary_no_datafields.json") else { return };
    let fields: Vec<String> = {
        let mut keys = std::collections::BTreeSet::new();
        for s in real["body"]["series"].as_array().unwrap() {
            keys.extend(s["data"].as_object().unwrap().keys().cloned());
        }
        keys.into_iter().collect()
    };
    let fields = fields.join(",");
    let sim = common::start(6, 0).await;
    for user in 0..6 {
        let token = sim.access(user).await;
        let window = [("action", "getsummary"), ("startdateymd", &ymd(40)[..]), ("enddateymd", &ymd(0)[..])];
        let mut with_fields = window.to_vec();
        with_fields.push(("data_fields", &fields));
        let ours = sim.call("/v2/sleep", Some(&token), &with_fields).await;
        // Watch-only nights have no mat metrics (breathing, snoring, AHI): left out, as Withings does.
        let optional = [
            ".body.series[].data.breathing_disturbances_intensity",
            ".body.series[].data.apnea_hypopnea_index",
            ".body.series[].data.snoring",
            ".body.series[].data.snoringepisodecount",
        ];
        assert_same_shape("sleep_summary.json", &real, &ours, &[], &optional);
        let plain = sim.call("/v2/sleep", Some(&token), &window).await;
        assert_same_shape("sleep_summary_no_datafields.json", &real_plain, &plain, &[], &[]);
    }
}

#[tokio::test]
async fn real_shapes_getdevice_matches_recorded_response() {
    let Some(real) = common::real_fixture("device.json") else { return };
    let sim = common::start(6, 0).await;
    for user in 0..6 {
        let token = sim.access(user).await;
        let ours = sim.call("/v2/user", Some(&token), &[("action", "getdevice")]).await;
        assert_same_shape("device.json", &real, &ours, &[], &[]);
    }
}

#[tokio::test]
async fn own_fixture_shapes_intraday_heart_token_and_errors() {
    let sim = common::start(1, 0).await;
    let users = sim.users().await;
    let refresh = users[0]["refresh_token"].as_str().unwrap().to_string();
    let refresh_params = [
        ("action", "requesttoken"),
        ("grant_type", "refresh_token"),
        ("client_id", "demo-client"),
        ("client_secret", "demo-secret"),
        ("refresh_token", refresh.as_str()),
    ];
    let token_reply = sim.call("/v2/oauth2", None, &refresh_params).await;
    // The refresh answer carries userid as an integer; the code exchange (tested in sim_oauth)
    // as a string, as both are seen in the field.
    let mut real_token = common::own_fixture("requesttoken.json");
    real_token["body"]["userid"] = json!(12345678);
    assert_same_shape("requesttoken.json", &real_token, &token_reply, &[], &[]);
    let again = sim.call("/v2/oauth2", None, &refresh_params).await;
    assert_same_shape("error_601_same_args.json", &common::own_fixture("error_601_same_args.json"), &again, &[], &[]);

    let token = token_reply["body"]["access_token"].as_str().unwrap();
    let start = (common::NOW - 86_400).to_string();
    let end = common::NOW.to_string();
    let fields = "steps,elevation,calories,distance,duration,heart_rate,spo2_auto,rmssd,sdnn1,rr";
    let intraday = sim
        .call(
            "/v2/measure",
            Some(token),
            &[("action", "getintradayactivity"), ("startdate", &start), ("enddate", &end), ("data_fields", fields)],
        )
        .await;
    assert!(intraday["body"]["series"].as_object().unwrap().len() > 100, "a day of samples");
    assert_same_shape("getintradayactivity.json", &common::own_fixture("getintradayactivity.json"), &intraday, &[], &[]);

    let hearts = sim.call("/v2/heart", Some(token), &[("action", "list")]).await;
    assert!(!hearts["body"]["series"].as_array().unwrap().is_empty(), "60 days of an ECG watch: {hearts}");
    assert_same_shape("heart_list.json", &common::own_fixture("heart_list.json"), &hearts, &[], &[]);

    let expired = sim.call("/measure", Some("0000000000000000000000000000000000000000"), &[("action", "getmeas")]).await;
    assert_same_shape("error_401.json", &common::own_fixture("error_401.json"), &expired, &[], &[]);
    assert_eq!(expired, common::own_fixture("error_401.json"), "the exact error Withings sends");
}

/// The simulator keeps its own catalogue of the devices it hands out (it does not depend on
/// the library); the library's model table must label each of them the same way.
#[test]
fn sim_devices_agree_with_the_model_table() {
    use withings_lake::harmonize::codes::device_model;
    for m in withings_simulator::devices::DEVICE_MODELS {
        let known = device_model(m.id).unwrap_or_else(|| panic!("model {} is not in the library's table", m.id));
        assert_eq!(
            (known.name, known.device_type, known.source_type.as_str()),
            (m.name, m.device_type, m.source_type.as_str()),
            "model {}",
            m.id
        );
    }
}
