//! Rebuilding the tables of a shard from its raw landing (`withings-lake reharmonize`): every
//! landed record decoded and harmonized again with today's code, then committed as the whole
//! content of the rebuilt tables (rows that did not change keep their stored version, so a
//! rebuild of an up-to-date lake writes nothing).

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use chrono::Utc;
use serde_json::Value;

use crate::harmonize::{self, Context, Harmonized, SleepSession};
use crate::lake::{Coverage, Lake, LakeError, Manifest, ShardLease, TableId, Unit};
use crate::schema::Resource;
use crate::withings::Endpoint;
use crate::withings::types::{Item, MeasureGroup};
use crate::withings::{MeasureList, SleepGet};

/// One user's landed records: per endpoint, (record key, JSON, context) in key order.
#[derive(Default)]
struct Landed {
    withings_user_id: String,
    records: BTreeMap<Endpoint, Vec<(String, Value, Option<Value>)>>,
}

impl Landed {
    fn items<T: serde::de::DeserializeOwned + crate::withings::types::Plausible>(&self, e: Endpoint) -> Vec<Item<T>> {
        self.records.get(&e).into_iter().flatten().map(|(_, json, _)| Item::decode(json.clone())).collect()
    }

    /// Zone evidence of the landed day-level records (as the sync takes it).
    fn zone_evidence(&self) -> Vec<harmonize::DayZone> {
        let mut out = harmonize::activity_evidence(&self.items(Endpoint::Getactivity));
        out.extend(harmonize::workout_evidence(&self.items(Endpoint::Getworkouts)));
        out.extend(harmonize::sleep_evidence(&self.items(Endpoint::SleepGetsummary)));
        out
    }

    fn context(&self, e: Endpoint, field: &str) -> Option<Value> {
        self.records.get(&e)?.iter().find_map(|(_, _, c)| c.as_ref()?.get(field).cloned())
    }
}

/// Rebuilds `resources` of the lease's shard of `lake` from the raw landing, as checkpoint 1
/// of `run_id`. Quarantine findings are upserted into the quarantine.
pub async fn reharmonize(lake: &Lake, lease: &ShardLease, run_id: &str, resources: &[Resource]) -> Result<Manifest, LakeError> {
    let shard = lease.shard;
    let mut users: BTreeMap<String, Landed> = BTreeMap::new();
    for e in Endpoint::ALL {
        let table = TableId::Raw(e);
        for p in lake.partitions(table, shard).await? {
            let rows = lake.read(table, &p, shard).await?;
            let col = |n: &str| rows.column_by_name(n).expect("raw landing column").as_string::<i32>().clone();
            let (user, wuser, key, json, context) =
                (col("user_id"), col("withings_user_id"), col("record_key"), col("json"), col("context"));
            for i in 0..rows.num_rows() {
                let landed = users.entry(user.value(i).to_string()).or_default();
                landed.withings_user_id = wuser.value(i).to_string();
                let value: Value = serde_json::from_str(json.value(i)).unwrap_or(Value::Null);
                let ctx_value = (!context.is_null(i)).then(|| serde_json::from_str(context.value(i)).unwrap_or(Value::Null));
                landed.records.entry(e).or_default().push((key.value(i).to_string(), value, ctx_value));
            }
        }
    }

    let now = Utc::now();
    let mut batches: BTreeMap<Resource, Vec<RecordBatch>> = BTreeMap::new();
    let mut quarantine = Vec::new();
    let states = crate::state::StateStore::new(lake.location.clone());
    for (user_id, landed) in &users {
        let tz = landed.context(Endpoint::Getmeas, "timezone").and_then(|v| v.as_str().map(str::to_string));
        // The zone timeline the syncs built (with the current zones they saw), and the
        // day-level records of the landing on top (the same, unless the state is older).
        let state = match states.get(user_id).await {
            Ok(state) => state.unwrap_or_default(),
            Err(e) => return Err(LakeError::corrupt(format!("state of user {user_id}"), e)),
        };
        let mut zones = state.zones;
        for (day, zone, evidence) in landed.zone_evidence() {
            zones.observe(day, &zone, evidence);
        }
        let ctx = Context {
            user_id: user_id.clone(),
            withings_user_id: landed.withings_user_id.clone(),
            run_id: run_id.to_string(),
            ingested_at: now,
            time_zone: tz.clone(),
            zones: std::sync::Arc::new(zones),
        };
        let mut outputs: Vec<Harmonized> = Vec::new();
        // Records are harmonized with the context of the answer they came in (a person who
        // moved has getmeas answers in two zones; a mat and a watch, two device classes).
        if let Some(records) = landed.records.get(&Endpoint::Getmeas) {
            let mut by_zone: BTreeMap<Option<String>, Vec<Item<MeasureGroup>>> = BTreeMap::new();
            for (_, json, c) in records {
                let zone = c.as_ref().and_then(|c| c.get("timezone")?.as_str().map(str::to_string));
                by_zone.entry(zone).or_default().push(Item::decode(json.clone()));
            }
            // The height the sync found by its height-only listing (not landed: its groups
            // are partial) counts, as it did for the sync.
            let known = state.height.and_then(|h| Some((h.at, harmonize::scaled(h.value, h.unit)?)));
            let heights: Vec<(i64, f64)> = known
                .into_iter()
                .chain(by_zone.values().flatten().filter_map(|i| i.value.as_ref().ok()).flat_map(|g| {
                    g.measures.iter().filter(|m| m.kind == 4).filter_map(|m| Some((g.date, harmonize::scaled(m.value, m.unit)?)))
                }))
                .collect();
            for (zone, groups) in by_zone {
                let list = MeasureList { timezone: zone, groups };
                outputs.push(harmonize::getmeas(&ctx, &list, &heights));
            }
        }
        if landed.records.contains_key(&Endpoint::Getactivity) {
            outputs.push(harmonize::getactivity(&ctx, &landed.items(Endpoint::Getactivity)));
        }
        if let Some(samples) = landed.records.get(&Endpoint::Getintradayactivity) {
            let series = samples
                .iter()
                .filter_map(|(k, json, _)| Some((k.split('/').next()?.parse::<i64>().ok()?, Item::decode(json.clone()))))
                .collect();
            outputs.push(harmonize::getintradayactivity(&ctx, &series));
        }
        if landed.records.contains_key(&Endpoint::Getworkouts) {
            outputs.push(harmonize::getworkouts(&ctx, &landed.items(Endpoint::Getworkouts)));
        }
        let summaries = landed.items(Endpoint::SleepGetsummary);
        if landed.records.contains_key(&Endpoint::SleepGetsummary) {
            outputs.push(harmonize::sleep_getsummary(&ctx, &summaries));
        }
        if let Some(records) = landed.records.get(&Endpoint::SleepGet) {
            let mut by_model: BTreeMap<Option<i64>, Vec<Value>> = BTreeMap::new();
            for (_, json, c) in records {
                let model = c.as_ref().and_then(|c| c.get("model")?.as_i64());
                by_model.entry(model).or_default().push(json.clone());
            }
            let sessions = SleepSession::from_summaries(&summaries);
            for (model, series) in by_model {
                let answer = SleepGet::from_body(serde_json::json!({ "model": model, "series": series }))
                    .map_err(|e| LakeError::corrupt("raw_sleep_get", e))?;
                outputs.push(harmonize::sleep_get(&ctx, &answer, &sessions));
            }
        }
        for h in outputs {
            if !h.quarantine.is_empty() {
                quarantine.push(h.quarantine_batch(&ctx));
            }
            for (r, b) in h.tables {
                if resources.contains(&r) && b.num_rows() > 0 {
                    batches.entry(r).or_default().push(b);
                }
            }
        }
    }

    let mut units = Vec::new();
    for r in resources {
        let schema = r.schema();
        let rows = concat_batches(&schema.arrow(), batches.get(r).into_iter().flatten())
            .map_err(|e| LakeError::Arrow { table: (*r).into(), source: Box::new(e) })?;
        let partitions = lake.partitions((*r).into(), shard).await?;
        let users: Vec<String> = users.keys().cloned().collect();
        units.push(Unit { table: (*r).into(), batch: rows, coverage: Coverage::Everything { users, partitions } });
    }
    if !quarantine.is_empty() {
        let q = concat_batches(&quarantine[0].schema(), &quarantine)
            .map_err(|e| LakeError::Arrow { table: TableId::Quarantine, source: Box::new(e) })?;
        units.push(Unit { table: TableId::Quarantine, batch: q, coverage: Coverage::Upsert });
    }
    lake.commit(lease, run_id, 1, &units).await
}
