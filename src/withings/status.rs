//! Withings `status` codes, grouped into the kinds Withings publishes (its reference says
//! "families"; here family means a sync family, ARCHITECTURE.md).
//!
//! Withings answers HTTP 200 for almost every error and puts the real outcome in the body's
//! `status`; this table is how the client decides what a status means. A code outside every
//! kind is `Unknown`: it is an error (never empty data) and is not retried.

/// The kind a `status` belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    Success,
    /// 100-102, 200, 401: the access token is invalid or expired; refresh and retry once.
    Auth,
    /// Bad or missing parameters: a bug or a bad setting on our side; never retried.
    InvalidParams,
    /// 214, 277, 2553, 2555: the app or user lacks the permission or scope.
    Unauthorized,
    /// 2554.
    NotImplemented,
    /// "An error occurred" and 522 (timeout): retry with back-off, a limited number of times.
    Transient,
    /// 524.
    BadState,
    /// 601: too many requests (or identical token requests within 10 s).
    RateLimited,
    Unknown,
}

const INVALID_PARAMS: &[(i64, i64)] = &[
    (201, 213),
    (216, 218),
    (220, 221),
    (223, 223),
    (225, 225),
    (227, 230),
    (234, 236),
    (238, 238),
    (240, 252),
    (254, 254),
    (260, 267),
    (271, 272),
    (275, 276),
    (283, 288),
    (290, 290),
    (293, 295),
    (297, 297),
    (300, 304),
    (321, 321),
    (323, 353),
    (380, 382),
    (400, 400),
    (501, 511),
    (523, 523),
    (532, 532),
    (3017, 3019),
];

const TRANSIENT: &[(i64, i64)] = &[
    (215, 215),
    (219, 219),
    (222, 222),
    (224, 224),
    (226, 226),
    (231, 233),
    (237, 237),
    (253, 253),
    (255, 259),
    (268, 270),
    (273, 274),
    (278, 282),
    (289, 289),
    (291, 292),
    (296, 296),
    (298, 298),
    (305, 320),
    (322, 322),
    (370, 375),
    (383, 383),
    (391, 391),
    (402, 402),
    (516, 522),
    (525, 531),
    (533, 533),
    (602, 602),
    (700, 700),
    (1051, 1054),
    (2551, 2552),
    (2556, 2559),
    (3000, 3016),
    (3020, 3024),
    (5000, 5006),
    (6000, 6000),
    (6010, 6011),
    (9000, 9000),
    (10000, 10000),
];

fn within(ranges: &[(i64, i64)], code: i64) -> bool {
    ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&code))
}

pub fn kind_of(status: i64) -> StatusKind {
    match status {
        0 => StatusKind::Success,
        100..=102 | 200 | 401 => StatusKind::Auth,
        214 | 277 | 2553 | 2555 => StatusKind::Unauthorized,
        2554 => StatusKind::NotImplemented,
        524 => StatusKind::BadState,
        601 => StatusKind::RateLimited,
        s if within(INVALID_PARAMS, s) => StatusKind::InvalidParams,
        s if within(TRANSIENT, s) => StatusKind::Transient,
        _ => StatusKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_reference_table() {
        assert_eq!(kind_of(0), StatusKind::Success);
        for s in [100, 101, 102, 200, 401] {
            assert_eq!(kind_of(s), StatusKind::Auth, "{s}");
        }
        for s in [201, 213, 247, 293, 503, 511, 3018] {
            assert_eq!(kind_of(s), StatusKind::InvalidParams, "{s}");
        }
        for s in [214, 277, 2553, 2555] {
            assert_eq!(kind_of(s), StatusKind::Unauthorized, "{s}");
        }
        for s in [215, 522, 2556, 5003, 10000] {
            assert_eq!(kind_of(s), StatusKind::Transient, "{s}");
        }
        assert_eq!(kind_of(601), StatusKind::RateLimited);
        assert_eq!(kind_of(2554), StatusKind::NotImplemented);
        assert_eq!(kind_of(524), StatusKind::BadState);
        assert_eq!(kind_of(4242), StatusKind::Unknown);
        // No code is in two kinds.
        for s in 0..11_000 {
            assert!(!(within(INVALID_PARAMS, s) && within(TRANSIENT, s)), "{s} in two kinds");
        }
    }
}
