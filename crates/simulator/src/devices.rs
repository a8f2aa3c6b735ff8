//! The Withings device models the simulator hands out: model id, display name, getdevice
//! `type`, and the kind of source `/_sim/users` reports. Only the models synthetic users own
//! are here (the simulator emulates Withings and knows nothing of the connector's code
//! tables); the names and types are Withings' own, as the real API returns them.

/// What kind of device a synthetic user owns, as `/_sim/users` names it (`source_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceType {
    Scale,
    Cuff,
    Watch,
    SleepMat,
    Phone,
}

impl SourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceType::Scale => "scale",
            SourceType::Cuff => "cuff",
            SourceType::Watch => "watch",
            SourceType::SleepMat => "sleep_mat",
            SourceType::Phone => "phone",
        }
    }
}

/// One device model: `model_id` / `modelid`, display name, getdevice `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceModel {
    pub id: i64,
    pub name: &'static str,
    pub device_type: &'static str,
    pub source_type: SourceType,
}

const fn dm(id: i64, name: &'static str, device_type: &'static str, source_type: SourceType) -> DeviceModel {
    DeviceModel { id, name, device_type, source_type }
}

/// Every model a synthetic user can own (see `world::User::generate`).
pub const DEVICE_MODELS: &[DeviceModel] = &[
    dm(5, "Body+", "Scale", SourceType::Scale),
    dm(6, "Body Cardio", "Scale", SourceType::Scale),
    dm(10, "Body Scan", "Scale", SourceType::Scale),
    dm(45, "BPM Connect", "Blood Pressure Monitor", SourceType::Cuff),
    dm(63, "Aura Sensor V2", "Sleep Monitor", SourceType::SleepMat),
    dm(91, "Move ECG", "Activity Tracker", SourceType::Watch),
    dm(93, "ScanWatch", "Activity Tracker", SourceType::Watch),
    dm(94, "ScanWatch 2", "Activity Tracker", SourceType::Watch),
    dm(1055, "GoogleFit tracker", "HealthKit Google", SourceType::Phone),
    dm(1057, "HealthKit step iPhone tracker", "HealthKit Apple", SourceType::Phone),
];

/// The device model with this id, if synthetic users can own it.
pub fn device_model(id: i64) -> Option<&'static DeviceModel> {
    DEVICE_MODELS.iter().find(|m| m.id == id)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::DEVICE_MODELS;
    use crate::world::World;

    #[test]
    fn synthetic_users_own_every_catalogued_model_and_no_other() {
        let world = World::new(42, 200, 1_718_452_800, 30);
        let owned: BTreeSet<i64> = world
            .users
            .iter()
            .flat_map(|u| [&u.scale, &u.cuff, &u.watch, &u.sleep_mat, &u.phone])
            .flatten()
            .map(|d| d.model.id)
            .collect();
        let catalogued: BTreeSet<i64> = DEVICE_MODELS.iter().map(|m| m.id).collect();
        assert_eq!(owned, catalogued);
    }
}
