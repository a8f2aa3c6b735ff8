//! Withings code tables: meastypes, sleep states, workout categories and device models.
//!
//! Sources: the official Withings OpenAPI document and the clients cited in
//! Withings' API reference (measures, sleep, workouts, devices). Codes not in a table are never an error here:
//! callers keep the raw code and decide how to label it (new codes keep being added).

/// What kind of device produced a record, in the vocabulary of the harmonized `source_type`
/// column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceType {
    Scale,
    Cuff,
    Watch,
    SleepMat,
    Phone,
    Thermometer,
    Manual,
    Unknown,
}

impl SourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceType::Scale => "scale",
            SourceType::Cuff => "cuff",
            SourceType::Watch => "watch",
            SourceType::SleepMat => "sleep_mat",
            SourceType::Phone => "phone",
            SourceType::Thermometer => "thermometer",
            SourceType::Manual => "manual",
            SourceType::Unknown => "unknown",
        }
    }
}

/// The source of a sleep record without a known model id, from its Withings device class
/// (`model` of sleep getsummary and sleep get: 16 activity tracker, 32 sleep monitor).
pub fn sleep_device_class(class: Option<i64>) -> SourceType {
    match class {
        Some(16) => SourceType::Watch,
        Some(32) => SourceType::SleepMat,
        _ => SourceType::Unknown,
    }
}

/// The source of a getactivity row without a known model id: a Withings wearable
/// (`is_tracker`), or an external source (brand 18: Google Fit, Apple Health, ...) on a phone.
pub fn activity_source(is_tracker: Option<bool>, brand: Option<i64>) -> SourceType {
    match (is_tracker, brand) {
        (Some(true), _) => SourceType::Watch,
        (_, Some(18)) => SourceType::Phone,
        _ => SourceType::Unknown,
    }
}

/// One row of the device model table: `model_id` / `modelid`, display name, getdevice `type`.
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

/// Device models by `model_id` (reference section 7.2, plus the ids seen in aiowithings).
pub const DEVICE_MODELS: &[DeviceModel] = &[
    dm(1, "Withings WBS01", "Scale", SourceType::Scale),
    dm(2, "WS30", "Scale", SourceType::Scale),
    dm(3, "Kid Scale", "Scale", SourceType::Scale),
    dm(4, "Smart Body Analyzer", "Scale", SourceType::Scale),
    dm(5, "Body+", "Scale", SourceType::Scale),
    dm(6, "Body Cardio", "Scale", SourceType::Scale),
    dm(7, "Body", "Scale", SourceType::Scale),
    dm(9, "Body Pro", "Scale", SourceType::Scale),
    dm(10, "Body Scan", "Scale", SourceType::Scale),
    dm(11, "WBS10", "Scale", SourceType::Scale),
    dm(12, "WBS11", "Scale", SourceType::Scale),
    dm(13, "Sleep Analyzer", "Sleep Monitor", SourceType::SleepMat),
    dm(14, "Body Scale", "Scale", SourceType::Scale),
    dm(15, "Body Comp 2", "Scale", SourceType::Scale),
    dm(16, "Body Smart", "Scale", SourceType::Scale),
    dm(18, "Body Comp", "Scale", SourceType::Scale),
    dm(21, "Smart Baby Monitor", "Babyphone", SourceType::Unknown),
    dm(22, "Withings Home", "Babyphone", SourceType::Unknown),
    dm(41, "Withings Blood Pressure Monitor V1", "Blood Pressure Monitor", SourceType::Cuff),
    dm(42, "Withings Blood Pressure Monitor V2", "Blood Pressure Monitor", SourceType::Cuff),
    dm(43, "Withings Blood Pressure Monitor V3", "Blood Pressure Monitor", SourceType::Cuff),
    dm(44, "BPM Core", "Blood Pressure Monitor", SourceType::Cuff),
    dm(45, "BPM Connect", "Blood Pressure Monitor", SourceType::Cuff),
    dm(46, "BPM Connect Pro", "Blood Pressure Monitor", SourceType::Cuff),
    dm(47, "BPM Pro 2", "Blood Pressure Monitor", SourceType::Cuff),
    dm(48, "BPM Vision", "Blood Pressure Monitor", SourceType::Cuff),
    dm(51, "Pulse", "Activity Tracker", SourceType::Watch),
    dm(52, "Activite", "Activity Tracker", SourceType::Watch),
    dm(53, "Activite (Pop, Steel)", "Activity Tracker", SourceType::Watch),
    dm(54, "Withings Go", "Activity Tracker", SourceType::Watch),
    dm(55, "Activite Steel HR", "Activity Tracker", SourceType::Watch),
    dm(58, "Pulse HR", "Activity Tracker", SourceType::Watch),
    dm(59, "Activite Steel HR Sport Edition", "Activity Tracker", SourceType::Watch),
    dm(60, "Aura Dock", "Sleep Monitor", SourceType::SleepMat),
    dm(61, "Aura Sensor", "Sleep Monitor", SourceType::SleepMat),
    dm(62, "Aura Dock", "Sleep Monitor", SourceType::SleepMat),
    dm(63, "Aura Sensor V2", "Sleep Monitor", SourceType::SleepMat),
    dm(70, "Thermo", "Smart Connected Thermometer", SourceType::Thermometer),
    dm(71, "BeamO", "Smart Connected Thermometer", SourceType::Thermometer),
    dm(90, "Move", "Activity Tracker", SourceType::Watch),
    dm(91, "Move ECG", "Activity Tracker", SourceType::Watch),
    dm(92, "Move ECG", "Activity Tracker", SourceType::Watch),
    dm(93, "ScanWatch", "Activity Tracker", SourceType::Watch),
    dm(94, "ScanWatch 2", "Activity Tracker", SourceType::Watch),
    dm(95, "ScanWatch Light", "Activity Tracker", SourceType::Watch),
    dm(100, "WUP01", "Gateway", SourceType::Unknown),
    dm(1051, "iOS step tracker", "HealthKit Apple", SourceType::Phone),
    dm(1052, "iOS step tracker", "HealthKit Apple", SourceType::Phone),
    dm(1053, "Android step tracker", "HealthKit Google", SourceType::Phone),
    dm(1054, "Android step tracker", "HealthKit Google", SourceType::Phone),
    dm(1055, "GoogleFit tracker", "HealthKit Google", SourceType::Phone),
    dm(1056, "Samsung Health tracker", "HealthKit Google", SourceType::Phone),
    dm(1057, "HealthKit step iPhone tracker", "HealthKit Apple", SourceType::Phone),
    dm(1058, "HealthKit step Apple Watch tracker", "HealthKit Apple", SourceType::Phone),
    dm(1059, "HealthKit other step tracker", "HealthKit Apple", SourceType::Phone),
    dm(1060, "Google Health Connect", "HealthKit Google", SourceType::Phone),
    dm(1061, "iGlucose glucometer", "iGlucose", SourceType::Unknown),
    dm(1062, "Huawei tracker", "HealthKit Huawei", SourceType::Phone),
    dm(1063, "Lingo Sensor", "Lingo", SourceType::Unknown),
];

/// The device model with this id, if the table knows it.
pub fn device_model(id: i64) -> Option<&'static DeviceModel> {
    DEVICE_MODELS.iter().find(|m| m.id == id)
}

/// One getmeas `type`: code, snake_case name, unit of `value * 10^unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasType {
    pub code: i64,
    pub name: &'static str,
    pub unit: &'static str,
}

const fn mt(code: i64, name: &'static str, unit: &'static str) -> MeasType {
    MeasType { code, name, unit }
}

/// getmeas meastypes (reference section 4), official table plus the codes seen in the wild.
pub const MEAS_TYPES: &[MeasType] = &[
    mt(1, "weight", "kg"),
    mt(4, "height", "m"),
    mt(5, "fat_free_mass", "kg"),
    mt(6, "fat_ratio", "%"),
    mt(8, "fat_mass_weight", "kg"),
    mt(9, "diastolic_blood_pressure", "mmHg"),
    mt(10, "systolic_blood_pressure", "mmHg"),
    mt(11, "heart_pulse", "bpm"),
    mt(12, "temperature", "degC"),
    mt(54, "spo2", "%"),
    mt(71, "body_temperature", "degC"),
    mt(73, "skin_temperature", "degC"),
    mt(76, "muscle_mass", "kg"),
    mt(77, "hydration", "kg"),
    mt(88, "bone_mass", "kg"),
    mt(91, "pulse_wave_velocity", "m/s"),
    mt(123, "vo2_max", "ml/min/kg"),
    mt(130, "atrial_fibrillation", "code"),
    mt(135, "qrs_interval", "ms"),
    mt(136, "pr_interval", "ms"),
    mt(137, "qt_interval", "ms"),
    mt(138, "corrected_qt_interval", "ms"),
    mt(139, "atrial_fibrillation_ppg", "code"),
    mt(155, "vascular_age", "years"),
    mt(158, "nerve_health_score_left_foot", "score"),
    mt(159, "nerve_health_score_right_foot", "score"),
    mt(167, "nerve_health_score_feet", "score"),
    mt(168, "extracellular_water", "kg"),
    mt(169, "intracellular_water", "kg"),
    mt(170, "visceral_fat", "index"),
    mt(173, "fat_free_mass_segment", "kg"),
    mt(174, "fat_mass_segment", "kg"),
    mt(175, "muscle_mass_segment", "kg"),
    mt(196, "electrodermal_activity_feet", "uS"),
    mt(197, "electrodermal_activity_left_foot", "uS"),
    mt(198, "electrodermal_activity_right_foot", "uS"),
    mt(226, "basal_metabolic_rate", "kcal"),
    mt(227, "metabolic_age", "years"),
    mt(229, "electrochemical_skin_conductance", "uS"),
];

/// The meastype with this code, if known.
pub fn meas_type(code: i64) -> Option<&'static MeasType> {
    MEAS_TYPES.iter().find(|m| m.code == code)
}

/// Sleep v2 get `state` codes (reference 7.1) with the Vital stage they map to
/// (Vital: 1 deep, 2 light, 3 rem, 4 awake, 5 manual, -1 unknown).
pub const SLEEP_STATES: &[(i64, &str, i64)] = &[
    (0, "awake", 4),
    (1, "light", 2),
    (2, "deep", 1),
    (3, "rem", 3),
    (4, "manual", 5),
    (5, "unspecified", -1),
    (15, "out_of_bed", 4),
];

/// Workout categories (reference section 6): code, slug, display name.
pub const WORKOUT_CATEGORIES: &[(i64, &str, &str)] = &[
    (1, "walk", "Walk"),
    (2, "run", "Run"),
    (3, "hiking", "Hiking"),
    (4, "skating", "Skating"),
    (5, "bmx", "BMX"),
    (6, "bicycling", "Bicycling"),
    (7, "swimming", "Swimming"),
    (8, "surfing", "Surfing"),
    (9, "kitesurfing", "Kitesurfing"),
    (10, "windsurfing", "Windsurfing"),
    (11, "bodyboard", "Bodyboard"),
    (12, "tennis", "Tennis"),
    (13, "table_tennis", "Table tennis"),
    (14, "squash", "Squash"),
    (15, "badminton", "Badminton"),
    (16, "lift_weights", "Lift weights"),
    (17, "fitness", "Fitness"),
    (18, "elliptical", "Elliptical"),
    (19, "pilates", "Pilates"),
    (20, "basketball", "Basket-ball"),
    (21, "soccer", "Soccer"),
    (22, "football", "Football"),
    (23, "rugby", "Rugby"),
    (24, "volleyball", "Volley-ball"),
    (25, "waterpolo", "Waterpolo"),
    (26, "horse_riding", "Horse riding"),
    (27, "golf", "Golf"),
    (28, "yoga", "Yoga"),
    (29, "dancing", "Dancing"),
    (30, "boxing", "Boxing"),
    (31, "fencing", "Fencing"),
    (32, "wrestling", "Wrestling"),
    (33, "martial_arts", "Martial arts"),
    (34, "skiing", "Skiing"),
    (35, "snowboarding", "Snowboarding"),
    (36, "other", "Other"),
    (128, "no_activity", "No activity"),
    (187, "rowing", "Rowing"),
    (188, "zumba", "Zumba"),
    (191, "baseball", "Baseball"),
    (192, "handball", "Handball"),
    (193, "hockey", "Hockey"),
    (194, "ice_hockey", "Ice hockey"),
    (195, "climbing", "Climbing"),
    (196, "ice_skating", "Ice skating"),
    (272, "multi_sport", "Multi-sport"),
    (306, "indoor_walk", "Indoor walk"),
    (307, "indoor_running", "Indoor running"),
    (308, "indoor_cycling", "Indoor cycling"),
    (455, "standup_paddleboarding", "Standup Paddleboarding"),
    (456, "padel", "Padel"),
    (457, "gaming", "Gaming"),
    (490, "beach_volleyball", "Beach volleyball"),
    (491, "stair_stepper", "Stair Stepper"),
    (492, "skateboarding", "Skateboarding"),
    (493, "parkour", "Parkour"),
    (494, "kayaking", "Kayaking"),
    (495, "canoeing", "Canoeing"),
    (496, "sailing", "Sailing"),
    (497, "fishing", "Fishing"),
    (498, "trail_running", "Trail Running"),
    (499, "snowshoeing", "Snowshoeing"),
    (500, "paintball", "Paintball"),
    (501, "archery", "Archery"),
    (502, "scuba_diving", "Scuba Diving"),
    (503, "baseball_training", "Baseball Training"),
    (504, "biathlon", "Biathlon"),
    (505, "bocce", "Bocce"),
    (506, "petanque", "Pétanque"),
    (507, "paragliding", "Paragliding"),
    (508, "frisbee", "Frisbee"),
    (509, "skydiving", "Skydiving"),
    (510, "pickleball", "Pickleball"),
    (511, "cornhole", "Cornhole"),
    (512, "dodgeball", "Dodgeball"),
    (513, "ultimate", "Ultimate"),
    (514, "teqball", "Teqball"),
    (515, "pushing_a_wheelchair_running_pace", "Pushing a Wheelchair (Running Pace)"),
    (516, "pushing_a_wheelchair_walking_pace", "Pushing a Wheelchair (Walking Pace)"),
    (517, "athletics", "Athletics"),
    (518, "track_cycling", "Track Cycling"),
    (519, "pentathlon", "Pentathlon"),
    (520, "sport_shooting", "Sport Shooting"),
    (521, "triathlon", "Triathlon"),
    (522, "diving", "Diving"),
    (523, "mountain_biking", "Mountain Biking"),
    (524, "gravel_biking", "Gravel Biking"),
    (525, "e_biking", "E-Biking"),
    (526, "e_mountain_biking", "E-Mountain Biking"),
    (527, "handcycling", "Handcycling"),
    (528, "velomobile", "Velomobile"),
    (529, "backcountry_skiing", "Backcountry Skiing"),
    (530, "nordic_skiing", "Nordic Skiing"),
    (531, "roller_skiing", "Roller Skiing"),
    (532, "racquetball", "Racquetball"),
    (534, "hip_hop", "Hip Hop"),
    (535, "muaythai", "Muaythai"),
    (536, "taekwondo", "Taekwondo"),
    (537, "judo", "Judo"),
    (538, "trampoline", "Trampoline"),
    (539, "standing_frame", "Standing Frame"),
    (540, "seated_strength", "Seated Strength"),
    (541, "seated_cardio", "Seated Cardio"),
    (542, "walk_with_walker", "Walk With Walker"),
    (543, "walk_with_cane", "Walk With Cane"),
    (544, "breaking", "Breaking"),
    (545, "chores", "Chores"),
    (546, "crossfit", "Crossfit"),
    (547, "spinclass", "Spinclass"),
    (548, "cricket", "Cricket"),
    (549, "flamenco_dancing", "Flamenco Dancing"),
    (550, "hiit", "HIIT"),
    (551, "meditation", "Meditation"),
    (552, "stretching", "Stretching"),
    (553, "yard_work_gardening", "Yard Work Gardening"),
    (554, "cleaning", "Cleaning"),
    (555, "public_speaking", "Public Speaking"),
    (556, "spikeball", "Spikeball"),
    (557, "lacrosse", "Lacrosse"),
    (558, "baby_wearing", "Baby Wearing"),
    (559, "dog_walking", "Dog Walking"),
    (560, "breathing_exercises", "Breathing exercises"),
    (561, "balance_drills", "Balance Drills"),
    (562, "pushing_a_stroller", "Pushing a Stroller"),
    (563, "toddler_wearing", "Toddler Wearing"),
    (564, "bowling", "Bowling"),
    (565, "lasertag", "Lasertag"),
    (566, "nordic_walking", "Nordic Walking"),
    (567, "sumo_wrestling", "Sumo Wrestling"),
    (568, "cooking", "Cooking"),
];

/// Slug and display name of a workout category; `None` for codes newer than this table.
pub fn workout_category(code: i64) -> Option<(&'static str, &'static str)> {
    WORKOUT_CATEGORIES.iter().find(|(c, _, _)| *c == code).map(|(_, slug, name)| (*slug, *name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_unique_codes() {
        let mut seen = std::collections::HashSet::new();
        for (code, slug, _) in WORKOUT_CATEGORIES {
            assert!(seen.insert(*code), "workout code {code} twice");
            assert!(slug.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{slug}");
        }
        assert_eq!(WORKOUT_CATEGORIES.len(), 130);
        assert!(workout_category(533).is_none());
        assert_eq!(workout_category(308), Some(("indoor_cycling", "Indoor cycling")));
        let mut ids = std::collections::HashSet::new();
        for m in DEVICE_MODELS {
            assert!(ids.insert(m.id), "model {} twice", m.id);
        }
        let mut types = std::collections::HashSet::new();
        for m in MEAS_TYPES {
            assert!(types.insert(m.code), "meastype {} twice", m.code);
        }
    }
}
