//! body: one row per getmeas group holding any body-composition measure (weight, fat ratio,
//! fat-free and fat mass, muscle, hydration, bone, extra/intracellular water, visceral fat,
//! BMR, metabolic age) or a height. Water, muscle and bone percentages are of that group's
//! weight; BMI uses the group's height, else the latest height at or before the measure. A
//! height-only group is a row with only `height_meter`, so later runs can find the height.

use super::table::{date, ts};
use super::{BODY_MEASTYPES, Context, Group, HEIGHT, Out, Zone, summary_id};
use crate::schema::Resource;

pub(super) fn from_getmeas(out: &mut Out, ctx: &Context, g: &Group, zone: &Zone, height: Option<f64>) {
    if !g.has_any(&BODY_MEASTYPES) && g.get(HEIGHT).is_none() {
        return;
    }
    let weight = g.get(1).filter(|w| *w > 0.0);
    let percent_of_weight = |meastype| Some(g.get(meastype)? / weight? * 100.0);
    let height = g.get(HEIGHT).or(height).filter(|h| *h > 0.0);
    let t = out.table(Resource::Body);
    t.set("id", summary_id(Resource::Body, &ctx.user_id, &g.grpid.to_string()));
    t.set("calendar_date", zone.local_date(g.date).map(date));
    t.set("timestamp", ts(g.date));
    t.set("weight", g.get(1));
    t.set("fat", g.get(6));
    t.set("water_percentage", percent_of_weight(77));
    t.set("muscle_mass_percentage", percent_of_weight(76));
    t.set("bone_mass_percentage", percent_of_weight(88));
    t.set("visceral_fat_index", g.get(170));
    t.set("body_mass_index", weight.zip(height).map(|(w, h)| w / (h * h)));
    t.set("lean_body_mass_kilogram", g.get(5));
    t.set("fat_mass_kilogram", g.get(8));
    t.set("muscle_mass_kilogram", g.get(76));
    t.set("water_kilogram", g.get(77));
    t.set("bone_mass_kilogram", g.get(88));
    t.set("extracellular_water_kilogram", g.get(168));
    t.set("intracellular_water_kilogram", g.get(169));
    t.set("basal_metabolic_rate", g.get(226));
    t.set("metabolic_age", g.get(227));
    t.set("height_meter", height);
    g.stage_group_columns(t, zone);
    out.push(Resource::Body, g.raw);
}
