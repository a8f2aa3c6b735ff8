//! The read side of Vital's REST API, answered from the lake:
//!
//! - `GET /v2/summary/{kind}/{user_id}` ([`Reader::summary`]): `{"<kind>": [objects]}` for
//!   `activity`, `sleep`, `body`, `workouts` (and `sleep_cycle`), the objects whose
//!   `calendar_date` falls in the window's UTC dates, ordered by their time column, then id;
//! - `GET /v2/timeseries/{user_id}/{resource}/grouped` ([`Reader::grouped`]):
//!   `{"groups": {"withings": [{"source", "data": [samples]}]}, "next_cursor", "next"}`, the
//!   samples whose time (the start, for interval types) is in the window, ordered by
//!   (time, primary key), `page_size` samples a page.
//!
//! The objects are the ones change events carry ([`crate::events::objects`]): same fields,
//! same values, same `source`; `user_id` is the person's Vital-style id.
//!
//! Query parameters are Vital's: `start_date` (required; `YYYY-MM-DD` = 00:00:00 UTC, or an
//! ISO 8601 date-time, UTC when it has no offset), `end_date` (optional; a bare date =
//! 23:59:59, none = now), `provider` (`""` or `withings`: data; any other slug: nothing) and
//! `next_cursor` (or Vital's deprecated `cursor`). A window is at most
//! [`ReadLimits::max_window_days`] long; years outside 1970 to 2100, impossible dates, an end
//! before the start and text no date has (quotes, semicolons, NUL...) are
//! [`ReadError::Invalid`] (422, naming the parameter).
//!
//! What is read: only the user's shard ([`crate::lake::shard_of`]) and only the partitions
//! the window touches: the reader names those files (`<resource>/<partition>/part-<shard>.parquet`)
//! and DataFusion opens those that exist; no other file of the lake is listed or opened. The
//! lake's files hold current rows only (a commit merges by key and rewrites the partition),
//! so what is read is what `query` shows analysts. Filters go through DataFusion's DataFrame
//! API as typed literals: no SQL text is ever built from a request.
//!
//! A cursor is opaque: base64url of (format, window end, the last sample's time and key) and
//! an HMAC-SHA256 under the reader's key over that and the query it belongs to (user,
//! resource, window start, the `end_date` given or "open"). A cursor altered, cut, or made for
//! another user, resource or window fails the check (422 naming `next_cursor`). When
//! `end_date` was left out, the first page's "now" travels in the cursor, so the pages of one
//! walk cover one window.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, TimestampMicrosecondType};
use base64::Engine as _;
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc};
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::prelude::{Expr, SessionConfig, SessionContext, ident, lit};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

use crate::events::objects::{self, SourceStyle};
use crate::lake::{Lake, Partition, keys, shard_of};
use crate::schema::{Grain, Kind, Resource};

/// How much one request may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// The longest window (`end_date - start_date`) a summary or time-series read may ask
    /// for, in days. Default 31: a month of minute-level heart rate is ~45,000 samples, and a
    /// read touches at most 32 day partitions (or 2 month partitions) of one shard.
    pub max_window_days: u32,
    /// Samples per page of a grouped time series (at least 1). Default 1000.
    pub page_size: usize,
}

impl Default for ReadLimits {
    fn default() -> ReadLimits {
        ReadLimits { max_window_days: 31, page_size: 1000 }
    }
}

/// Whose data: the application's id (the lake's `user_id` column) and the Vital-style UUID
/// the objects carry as `user_id`.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub user_id: &'a str,
    pub vital_user_id: &'a str,
}

/// The query string of a read, raw: [`Reader`] validates it.
#[derive(Debug, Clone, Default)]
pub struct ReadQuery {
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub next_cursor: Option<String>,
    pub provider: Option<String>,
    /// Vital's deprecated name of `next_cursor` (used when `next_cursor` is absent).
    pub cursor: Option<String>,
}

/// Why a read has no answer; [`ReadError::status`] and [`ReadError::body`] are the HTTP
/// answer, in Vital's (FastAPI's) shapes.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A required query parameter is absent (422).
    #[error("{param}: required")]
    Missing { param: &'static str },
    /// A query parameter's value is refused (422).
    #[error("{param}: {msg}")]
    Invalid { param: &'static str, msg: String },
    /// A path segment names nothing this service reads: an unknown summary kind or time
    /// series (404).
    #[error("{segment}: {what}")]
    NotFound { segment: &'static str, what: String },
    /// The lake could not be read (500; the body says nothing more).
    #[error("reading the lake: {0}")]
    Lake(String),
}

impl ReadError {
    fn invalid(param: &'static str, msg: impl Into<String>) -> ReadError {
        ReadError::Invalid { param, msg: msg.into() }
    }

    fn lake(e: impl std::fmt::Display) -> ReadError {
        ReadError::Lake(e.to_string())
    }

    /// The HTTP status: 422, 404 or 500.
    pub fn status(&self) -> u16 {
        match self {
            ReadError::Missing { .. } | ReadError::Invalid { .. } => 422,
            ReadError::NotFound { .. } => 404,
            ReadError::Lake(_) => 500,
        }
    }

    /// The HTTP body: `HTTPValidationError` (`{"detail": [{"loc", "msg", "type"}]}`) for a
    /// 422, `{"detail": "Not Found"}` for a 404, `{"detail": "Internal Server Error"}` for a
    /// 500 (nothing of the lake's URL, files or errors).
    pub fn body(&self) -> Value {
        match self {
            ReadError::Missing { param } => {
                json!({"detail": [{"loc": ["query", param], "msg": "Field required", "type": "missing"}]})
            }
            ReadError::Invalid { param, msg } => {
                json!({"detail": [{"loc": ["query", param], "msg": msg, "type": "value_error"}]})
            }
            ReadError::NotFound { .. } => json!({"detail": "Not Found"}),
            ReadError::Lake(_) => json!({"detail": "Internal Server Error"}),
        }
    }
}

/// Reads Vital-shaped objects from the lake. Cheap to clone; share it in an `Arc`.
#[derive(Clone)]
pub struct Reader {
    lake: Lake,
    cursor_key: Arc<[u8; 32]>,
    limits: ReadLimits,
    style: SourceStyle,
}

impl std::fmt::Debug for Reader {
    /// Never the cursor key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("lake", &self.lake.location).field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// The summary kinds read, with the key of their response.
const SUMMARIES: [(&str, Resource); 5] = [
    ("activity", Resource::Activity),
    ("sleep", Resource::Sleep),
    ("body", Resource::Body),
    ("workouts", Resource::Workouts),
    ("sleep_cycle", Resource::SleepCycle),
];

/// Vital's time-series path segments and the tables behind them (`body_weight` and
/// `body_fat` are Vital's path names of `weight` and `fat`; the resource names work too).
const SERIES: [(&str, Resource); 14] = [
    ("heartrate", Resource::Heartrate),
    ("hrv", Resource::Hrv),
    ("blood_oxygen", Resource::BloodOxygen),
    ("blood_pressure", Resource::BloodPressure),
    ("respiratory_rate", Resource::RespiratoryRate),
    ("steps", Resource::Steps),
    ("distance", Resource::Distance),
    ("calories_active", Resource::CaloriesActive),
    ("vo2_max", Resource::Vo2Max),
    ("body_weight", Resource::Weight),
    ("weight", Resource::Weight),
    ("body_fat", Resource::Fat),
    ("fat", Resource::Fat),
    ("hypnogram", Resource::Hypnogram),
];

/// The summary kinds [`Reader::summary`] answers.
pub fn summary_kinds() -> impl Iterator<Item = &'static str> {
    SUMMARIES.iter().map(|(k, _)| *k)
}

/// The time-series path segments [`Reader::grouped`] answers.
pub fn series_names() -> impl Iterator<Item = &'static str> {
    SERIES.iter().map(|(k, _)| *k)
}

/// The years a date may have.
const YEARS: std::ops::RangeInclusive<i32> = 1970..=2100;
/// Longest query value accepted (an ISO date-time with fraction and offset is ~32).
const MAX_DATE_LEN: usize = 40;
/// Longest cursor accepted.
const MAX_CURSOR_LEN: usize = 1024;
/// Cursor format version.
const CURSOR_VERSION: u8 = 1;
const MAC_LEN: usize = 32;

/// A validated window: `[start, end]`, both inclusive.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    /// Whether `end_date` was given (else `end` is the first page's now).
    end_given: bool,
}

/// Where a page starts: after (time, key).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    window_end_us: i64,
    time_us: i64,
    key: String,
}

impl Reader {
    pub fn new(lake: Lake, cursor_key: [u8; 32], limits: ReadLimits) -> Reader {
        let limits = ReadLimits { page_size: limits.page_size.max(1), ..limits };
        Reader { lake, cursor_key: Arc::new(cursor_key), limits, style: SourceStyle::default() }
    }

    /// The `source` style of time series (to match the pipeline's events: `legacy_fields`,
    /// `provider_logo`); the default is the events' default.
    pub fn with_source_style(mut self, style: SourceStyle) -> Reader {
        self.style = style;
        self
    }

    pub fn limits(&self) -> ReadLimits {
        self.limits
    }

    /// `GET /v2/summary/{kind}/{user_id}`: `{"<kind>": [objects]}`.
    pub async fn summary(&self, who: Who<'_>, kind: &str, q: &ReadQuery) -> Result<Value, ReadError> {
        let Some((key, resource)) = SUMMARIES.iter().find(|(k, _)| *k == kind).copied() else {
            return Err(ReadError::NotFound { segment: "kind", what: format!("no summary '{}'", printable(kind)) });
        };
        let window = self.window(q, Utc::now())?;
        if !withings_provider(q.provider.as_deref())? {
            return Ok(json!({ key: [] }));
        }
        let schema = resource.schema();
        debug_assert_eq!(schema.kind, Kind::Summary);
        let (first, last) = (window.start.date_naive(), window.end.date_naive());
        let by_date = ident("calendar_date")
            .gt_eq(lit(ScalarValue::Date32(Some(days(first)))))
            .and(ident("calendar_date").lt_eq(lit(ScalarValue::Date32(Some(days(last))))));
        let order = [schema.time_column.as_str(), "id"];
        let rows = self.read(resource, who.user_id, first, last, by_date, &order).await?;
        let objects = objects::summaries(resource, &rows, |_| who.vital_user_id.to_string()).map_err(ReadError::lake)?;
        Ok(json!({ key: objects }))
    }

    /// `GET /v2/timeseries/{user_id}/{resource}/grouped`: one page,
    /// `{"groups": {"withings": [{"source", "data"}]}, "next_cursor", "next"}`.
    pub async fn grouped(&self, who: Who<'_>, resource: &str, q: &ReadQuery) -> Result<Value, ReadError> {
        let Some(resource) = SERIES.iter().find(|(k, _)| *k == resource).map(|(_, r)| *r) else {
            return Err(ReadError::NotFound { segment: "resource", what: format!("no time series '{}'", printable(resource)) });
        };
        let mut window = self.window(q, Utc::now())?;
        let raw_cursor = q.next_cursor.as_deref().filter(|c| !c.is_empty()).or(q.cursor.as_deref().filter(|c| !c.is_empty()));
        let after = match raw_cursor {
            None => None,
            Some(c) => {
                let p = self.open_cursor(c, who.user_id, resource, &window)?;
                if !window.end_given {
                    window.end = DateTime::from_timestamp_micros(p.window_end_us)
                        .ok_or_else(|| ReadError::invalid("next_cursor", "is not a cursor of this query"))?;
                }
                Some(p)
            }
        };
        let empty = json!({"groups": {}, "next_cursor": null, "next": null});
        if !withings_provider(q.provider.as_deref())? {
            return Ok(empty);
        }
        let schema = resource.schema();
        let time = schema.time_column.as_str();
        let from_us = after.as_ref().map_or(micros(window.start), |p| p.time_us.max(micros(window.start)));
        let to_us = micros(window.end);
        if from_us > to_us {
            return Ok(empty);
        }
        let in_window = ident(time).gt_eq(lit(ts(from_us))).and(ident(time).lt_eq(lit(ts(to_us))));
        let first = DateTime::from_timestamp_micros(from_us).map_or(window.start, |t| t).date_naive();
        let rows = self.read(resource, who.user_id, first, window.end.date_naive(), in_window, &[time]).await?;

        // (time, key) of every row, in order; the page is what comes after the cursor.
        let times = rows
            .column_by_name(time)
            .ok_or_else(|| ReadError::lake(format!("{resource} has no column {time}")))?
            .as_primitive::<TimestampMicrosecondType>()
            .clone();
        let key_cols: Vec<&ArrayRef> = schema
            .primary_key
            .iter()
            .filter(|c| c.as_str() != "user_id" && c.as_str() != time)
            .map(|c| rows.column_by_name(c).ok_or_else(|| ReadError::lake(format!("{resource} has no column {c}"))))
            .collect::<Result<_, _>>()?;
        let mut order: Vec<(i64, String, u32)> =
            (0..rows.num_rows()).map(|i| (times.value(i), tiebreak(&key_cols, i), i as u32)).collect();
        order.sort();
        let start = match &after {
            None => 0,
            Some(p) => order.partition_point(|(t, k, _)| (*t, k.as_str()) <= (p.time_us, p.key.as_str())),
        };
        let end = (start + self.limits.page_size).min(order.len());
        let page_rows = &order[start..end];
        let next = if end < order.len() {
            let (t, k, _) = &page_rows[page_rows.len() - 1];
            let p = Position { window_end_us: to_us, time_us: *t, key: k.clone() };
            Some(self.seal_cursor(&p, who.user_id, resource, &window))
        } else {
            None
        };
        if page_rows.is_empty() {
            return Ok(empty);
        }
        let indices = UInt32Array::from_iter_values(page_rows.iter().map(|(_, _, i)| *i));
        let page = arrow::compute::take_record_batch(&rows, &indices).map_err(ReadError::lake)?;
        let samples = objects::samples(resource, &page).map_err(ReadError::lake)?;
        // Groups by source, in the order their first sample comes.
        let mut groups: Vec<(String, Value, Vec<Value>)> = Vec::new();
        for (i, s) in samples.into_iter().enumerate() {
            match groups.iter_mut().find(|(g, _, _)| *g == s.group) {
                Some(g) => g.2.push(s.sample),
                None => {
                    let source = objects::source(&page, i, &self.style).map_err(ReadError::lake)?;
                    groups.push((s.group, source, vec![s.sample]));
                }
            }
        }
        let groups: Vec<Value> = groups.into_iter().map(|(_, source, data)| json!({"source": source, "data": data})).collect();
        Ok(json!({"groups": {"withings": groups}, "next_cursor": next, "next": next}))
    }

    /// The validated window of `q`; `now` is the end when `end_date` is absent.
    fn window(&self, q: &ReadQuery, now: DateTime<Utc>) -> Result<Window, ReadError> {
        let start = match q.start_date.as_deref() {
            None | Some("") => return Err(ReadError::Missing { param: "start_date" }),
            Some(s) => instant("start_date", s, false)?,
        };
        let (end, end_given) = match q.end_date.as_deref() {
            None | Some("") => (now, false),
            Some(s) => (instant("end_date", s, true)?, true),
        };
        let blame = if end_given { "end_date" } else { "start_date" };
        if end < start {
            return Err(ReadError::invalid(blame, "end_date is before start_date"));
        }
        if end - start > TimeDelta::days(i64::from(self.limits.max_window_days)) {
            return Err(ReadError::invalid(
                blame,
                format!("the window from start_date to end_date is longer than {} days", self.limits.max_window_days),
            ));
        }
        Ok(Window { start, end, end_given })
    }

    /// The rows of `user_id` in `resource` matching `filter`, sorted by `order`, from the
    /// user's shard's files of the partitions of the dates `first..=last` (only those).
    async fn read(
        &self,
        resource: Resource,
        user_id: &str,
        first: NaiveDate,
        last: NaiveDate,
        filter: Expr,
        order: &[&str],
    ) -> Result<RecordBatch, ReadError> {
        let schema = resource.schema();
        let loc = &self.lake.location;
        let shard = shard_of(user_id, self.lake.meta.shards);
        let mut urls = Vec::new();
        for p in partitions(schema.grain, first, last) {
            let key = keys::data_file(loc, resource.into(), &p, shard);
            urls.push(ListingTableUrl::parse(format!("{}{}", loc.store_url, key.as_ref())).map_err(ReadError::lake)?);
        }
        if urls.is_empty() {
            return Ok(RecordBatch::new_empty(schema.arrow()));
        }
        let config = SessionConfig::new().set_str("datafusion.execution.time_zone", "UTC").with_target_partitions(2);
        let ctx = SessionContext::new_with_config(config);
        let store_url = url::Url::parse(&loc.store_url).map_err(ReadError::lake)?;
        ctx.register_object_store(&store_url, loc.store.clone());
        // The files named, each read only if it exists (a missing one lists as nothing);
        // files of older schema versions read with nulls in the columns added since.
        let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let table_config =
            ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(schema.arrow());
        let table = ListingTable::try_new(table_config).map_err(ReadError::lake)?;
        let df = ctx
            .read_table(Arc::new(table))
            .and_then(|df| df.filter(ident("user_id").eq(lit(user_id))))
            .and_then(|df| df.filter(filter))
            .and_then(|df| df.sort(order.iter().map(|c| ident(*c).sort(true, false)).collect()))
            .map_err(ReadError::lake)?;
        let batches = df.collect().await.map_err(ReadError::lake)?;
        arrow::compute::concat_batches(&schema.arrow(), &batches).map_err(ReadError::lake)
    }

    fn mac(&self, user_id: &str, resource: Resource, window: &Window, payload: &[u8]) -> Hmac<sha2::Sha256> {
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.cursor_key.as_slice()).expect("HMAC takes any key");
        let end = if window.end_given { micros(window.end).to_string() } else { "open".to_string() };
        let binding = format!("withings-lake/read-cursor\0{user_id}\0{resource}\0{}\0{end}\0", micros(window.start));
        mac.update(binding.as_bytes());
        mac.update(payload);
        mac
    }

    fn seal_cursor(&self, p: &Position, user_id: &str, resource: Resource, window: &Window) -> String {
        let mut payload = vec![CURSOR_VERSION];
        payload.extend_from_slice(&p.window_end_us.to_be_bytes());
        payload.extend_from_slice(&p.time_us.to_be_bytes());
        payload.extend_from_slice(p.key.as_bytes());
        let tag = self.mac(user_id, resource, window, &payload).finalize().into_bytes();
        payload.extend_from_slice(&tag);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload)
    }

    fn open_cursor(&self, token: &str, user_id: &str, resource: Resource, window: &Window) -> Result<Position, ReadError> {
        let bad = || ReadError::invalid("next_cursor", "is not a cursor of this query (altered, cut, or from another query)");
        if token.len() > MAX_CURSOR_LEN {
            return Err(bad());
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        if bytes.len() < 1 + 16 + MAC_LEN {
            return Err(bad());
        }
        let (payload, tag) = bytes.split_at(bytes.len() - MAC_LEN);
        self.mac(user_id, resource, window, payload).verify_slice(tag).map_err(|_| bad())?;
        if payload[0] != CURSOR_VERSION {
            return Err(bad());
        }
        let window_end_us = i64::from_be_bytes(payload[1..9].try_into().expect("8 bytes"));
        let time_us = i64::from_be_bytes(payload[9..17].try_into().expect("8 bytes"));
        let key = String::from_utf8(payload[17..].to_vec()).map_err(|_| bad())?;
        if window.end_given && window_end_us != micros(window.end) {
            return Err(bad());
        }
        Ok(Position { window_end_us, time_us, key })
    }
}

/// Whether `provider` asks for Withings data: absent, `""` or `withings`. Another slug asks
/// for nothing here; text no slug has is refused.
fn withings_provider(provider: Option<&str>) -> Result<bool, ReadError> {
    match provider {
        None | Some("") | Some("withings") => Ok(true),
        Some(p) if p.len() <= 64 && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') => Ok(false),
        Some(_) => Err(ReadError::invalid("provider", "is not a provider slug (lowercase letters, digits, _)")),
    }
}

/// A query date: `YYYY-MM-DD` (00:00:00, or 23:59:59 for an end) or an ISO 8601 date-time
/// (UTC when it has no offset).
fn instant(param: &'static str, s: &str, end: bool) -> Result<DateTime<Utc>, ReadError> {
    if s.contains('\0') {
        return Err(ReadError::invalid(param, "contains a NUL character"));
    }
    if s.len() > MAX_DATE_LEN {
        return Err(ReadError::invalid(param, format!("is longer than {MAX_DATE_LEN} characters")));
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-:.+ ".contains(&b)) {
        return Err(ReadError::invalid(param, "has characters no date has"));
    }
    let not_a_date = || ReadError::invalid(param, "is not a date (YYYY-MM-DD) or an ISO 8601 date-time");
    let t = if s.len() == 10 {
        let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| not_a_date())?;
        let time = if end { NaiveTime::from_hms_opt(23, 59, 59) } else { NaiveTime::from_hms_opt(0, 0, 0) };
        d.and_time(time.expect("a valid time")).and_utc()
    } else if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        t.with_timezone(&Utc)
    } else {
        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
            .ok_or_else(not_a_date)?
            .and_utc()
    };
    if !YEARS.contains(&t.year()) {
        return Err(ReadError::invalid(param, format!("year {} is outside {} to {}", t.year(), YEARS.start(), YEARS.end())));
    }
    Ok(t)
}

/// The partitions of `grain` holding the dates `first..=last`.
fn partitions(grain: Grain, first: NaiveDate, last: NaiveDate) -> Vec<Partition> {
    let mut out: Vec<Partition> = Vec::new();
    let mut d = first;
    while d <= last {
        let p = Partition::of(grain, d);
        if out.last() != Some(&p) {
            out.push(p);
        }
        d = match d.succ_opt() {
            Some(n) => n,
            None => break,
        };
    }
    out
}

/// The tiebreak of rows with one time: their other primary-key columns, as text (a null
/// sorts first).
fn tiebreak(cols: &[&ArrayRef], i: usize) -> String {
    let mut s = String::new();
    for c in cols {
        if c.is_null(i) {
            s.push('0');
        } else {
            s.push('1');
            match c.data_type() {
                DataType::Utf8 => s.push_str(c.as_string::<i32>().value(i)),
                DataType::Int64 => {
                    s.push_str(&format!("{:020}", c.as_primitive::<arrow::datatypes::Int64Type>().value(i) as u64 ^ (1 << 63)))
                }
                DataType::Int32 => {
                    s.push_str(&format!("{:010}", c.as_primitive::<arrow::datatypes::Int32Type>().value(i) as u32 ^ (1 << 31)))
                }
                DataType::Timestamp(_, _) => {
                    s.push_str(&format!("{:020}", c.as_primitive::<TimestampMicrosecondType>().value(i) as u64 ^ (1 << 63)))
                }
                _ => s.push_str(&arrow::util::display::array_value_to_string(c, i).unwrap_or_default()),
            }
        }
        s.push('\u{1f}');
    }
    s
}

/// A string safe to repeat in a message: printable ASCII, at most 40 characters.
fn printable(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_graphic()).take(40).collect()
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn ts(us: i64) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(Some(us), Some("UTC".into()))
}

fn days(d: NaiveDate) -> i32 {
    d.num_days_from_ce() - 719_163
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_follow_vital_and_refuse_what_no_date_is() {
        let start = instant("start_date", "2024-06-01", false).unwrap();
        assert_eq!(start.to_rfc3339(), "2024-06-01T00:00:00+00:00");
        assert_eq!(instant("end_date", "2024-06-01", true).unwrap().to_rfc3339(), "2024-06-01T23:59:59+00:00");
        assert_eq!(instant("x", "2024-06-01T10:00:00+02:00", false).unwrap().to_rfc3339(), "2024-06-01T08:00:00+00:00");
        assert_eq!(instant("x", "2024-06-01T10:00:00", false).unwrap().to_rfc3339(), "2024-06-01T10:00:00+00:00");
        assert_eq!(instant("x", "2024-06-01T10:00:00.5Z", false).unwrap().timestamp_subsec_millis(), 500);
        for bad in
            ["2024-02-30", "2024-13-01", "0001-01-01", "9999-12-31", "2024-06-01'; DROP TABLE x;--", "2024\0", "yesterday", ""]
        {
            assert!(instant("start_date", bad, false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn partitions_cover_the_dates_once() {
        let d = |s| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let days: Vec<String> =
            partitions(Grain::Day, d("2024-05-30"), d("2024-06-02")).iter().map(|p| p.value.clone()).collect();
        assert_eq!(days, ["2024-05-30", "2024-05-31", "2024-06-01", "2024-06-02"]);
        let months: Vec<String> =
            partitions(Grain::Month, d("2024-05-30"), d("2024-06-02")).iter().map(|p| p.value.clone()).collect();
        assert_eq!(months, ["2024-05", "2024-06"]);
    }

    #[test]
    fn tiebreaks_order_numbers_as_numbers() {
        let a: ArrayRef = Arc::new(arrow::array::Int64Array::from(vec![Some(-5), Some(3), Some(20), None]));
        let keys: Vec<String> = (0..4).map(|i| tiebreak(&[&a], i)).collect();
        assert!(keys[3] < keys[0] && keys[0] < keys[1] && keys[1] < keys[2], "{keys:?}");
    }
}
