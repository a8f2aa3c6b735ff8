//! Errors of the Withings client. Each names the endpoint and answers [`Classify::class`].

use super::status::StatusKind;
use crate::error::{Classify, ErrorClass};

#[derive(Debug, thiserror::Error)]
pub enum WithingsError {
    /// The body's `status` is not 0. `message` is Withings' `error` text (it carries no secret).
    #[error("{endpoint}: Withings status {status} ({kind:?}): {message}")]
    Status {
        endpoint: &'static str,
        status: i64,
        kind: StatusKind,
        message: String,
        /// `body.wait_seconds` of a 601, when Withings gives it.
        wait_seconds: Option<i64>,
    },
    /// Still 601 after the retries allowed.
    #[error("{endpoint}: rate limited by Withings (status 601) after {attempts} attempts")]
    RateLimited { endpoint: &'static str, attempts: u32 },
    /// An HTTP status other than 200 (gateway errors).
    #[error("{endpoint}: HTTP {status} from Withings")]
    Http { endpoint: &'static str, status: u16 },
    /// The body is not JSON, or is cut short.
    #[error("{endpoint}: the response is not valid JSON ({reason}; {bytes} bytes)")]
    NotJson { endpoint: &'static str, reason: String, bytes: usize },
    /// Valid JSON that does not have the shape of this endpoint's body.
    #[error("{endpoint}: unexpected response body: {reason}")]
    Decode { endpoint: &'static str, reason: String },
    #[error("{endpoint}: request failed: {reason}")]
    Network { endpoint: &'static str, reason: String },
    /// A response larger than any real page (a broken proxy, a hostile server).
    #[error("{endpoint}: the response is larger than {limit} bytes, more than any real page; not read")]
    TooLarge { endpoint: &'static str, limit: usize },
    /// A paginated endpoint kept saying `more` past the page limit.
    #[error("{endpoint}: still `more` after {pages} pages; stopped (a server that never stops paging)")]
    RunawayPagination { endpoint: &'static str, pages: u32 },
    #[error("invalid Withings client setting {setting}: {reason}")]
    Config { setting: &'static str, reason: String },
}

impl Classify for WithingsError {
    fn class(&self) -> ErrorClass {
        match self {
            WithingsError::Status { kind, .. } => match kind {
                StatusKind::Auth | StatusKind::Unauthorized => ErrorClass::Auth,
                StatusKind::Transient | StatusKind::RateLimited => ErrorClass::Transient,
                StatusKind::InvalidParams
                | StatusKind::NotImplemented
                | StatusKind::BadState
                | StatusKind::Unknown
                | StatusKind::Success => ErrorClass::Internal,
            },
            WithingsError::RateLimited { .. }
            | WithingsError::Http { .. }
            | WithingsError::NotJson { .. }
            | WithingsError::Network { .. }
            | WithingsError::TooLarge { .. } => ErrorClass::Transient,
            WithingsError::Decode { .. } => ErrorClass::Data,
            WithingsError::RunawayPagination { .. } => ErrorClass::Internal,
            WithingsError::Config { .. } => ErrorClass::Config,
        }
    }
}

impl WithingsError {
    /// Whether the same request may succeed if sent again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            WithingsError::Http { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            e => e.class() == ErrorClass::Transient,
        }
    }

    /// The status kind, for status errors.
    pub fn kind(&self) -> Option<StatusKind> {
        match self {
            WithingsError::Status { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// A short label for accounting (`0`, `601`, `http_502`, `not_json`, `network`, ...).
    pub fn label(&self) -> String {
        match self {
            WithingsError::Status { status, .. } => status.to_string(),
            WithingsError::RateLimited { .. } => "601".into(),
            WithingsError::Http { status, .. } => format!("http_{status}"),
            WithingsError::NotJson { .. } => "not_json".into(),
            WithingsError::Decode { .. } => "decode".into(),
            WithingsError::Network { .. } => "network".into(),
            WithingsError::TooLarge { .. } => "too_large".into(),
            WithingsError::RunawayPagination { .. } => "runaway_pagination".into(),
            WithingsError::Config { .. } => "config".into(),
        }
    }
}
