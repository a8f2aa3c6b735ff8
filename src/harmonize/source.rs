//! Provenance: [`Source`], the `source_*` columns of a row (what kind of device, which device
//! and model), and [`source_of`], the one rule that derives it from a record's model id,
//! model name, `attrib` and device id. The columns are staged by
//! [`Table::provenance`](super::table::Table::provenance).

use std::sync::Arc;

use super::codes::{self, SourceType};

/// Where a row came from: the `source_*` columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub kind: SourceType,
    pub device_id: Option<Arc<str>>,
    pub model: Option<Arc<str>>,
    pub model_id: Option<i64>,
}

/// The source of a record: attrib 2 or 4 (entered by hand) is `manual`; otherwise the device
/// model table decides, and `fallback` covers records without a known model.
pub fn source_of(
    model_id: Option<i64>,
    model: Option<&str>,
    attrib: Option<i64>,
    device_id: Option<&str>,
    fallback: SourceType,
) -> Source {
    let known = model_id.and_then(codes::device_model);
    let kind = if matches!(attrib, Some(2 | 4)) { SourceType::Manual } else { known.map_or(fallback, |m| m.source_type) };
    let model = model.map(str::trim).filter(|s| !s.is_empty()).map(Arc::from).or_else(|| known.map(|m| Arc::from(m.name)));
    Source { kind, device_id: device_id.map(str::trim).filter(|s| !s.is_empty()).map(Arc::from), model, model_id }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_entries_and_unknown_models_get_their_source_type() {
        let s = source_of(Some(6), None, Some(2), Some("dev"), SourceType::Unknown);
        assert_eq!((s.kind, s.model.as_deref()), (SourceType::Manual, Some("Body Cardio")));
        let s = source_of(Some(13), Some(""), Some(0), None, SourceType::Unknown);
        assert_eq!((s.kind, s.model.as_deref()), (SourceType::SleepMat, Some("Sleep Analyzer")));
        let s = source_of(Some(4242), Some("Future Gadget"), Some(0), Some(" "), SourceType::Scale);
        assert_eq!((s.kind, s.model.as_deref(), s.device_id), (SourceType::Scale, Some("Future Gadget"), None));
    }
}
