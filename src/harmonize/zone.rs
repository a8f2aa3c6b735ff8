//! [`Zone`]: the IANA zone a row is stamped with (its `time_zone` and `timezone_offset`
//! columns, and the local dates computed from it). Which zone a sample gets is decided by its
//! record or by the user's zone timeline ([`super::zones`]).

use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// An IANA zone name as Withings sent it, and the zone when chrono-tz knows the name.
#[derive(Debug, Clone)]
pub struct Zone {
    pub name: Option<Arc<str>>,
    tz: Option<Tz>,
}

impl Zone {
    pub fn new(name: Option<&str>) -> Zone {
        let name = name.map(str::trim).filter(|s| !s.is_empty());
        Zone { name: name.map(Arc::from), tz: name.and_then(|n| Tz::from_str(n).ok()) }
    }

    /// Seconds east of UTC at `secs` (DST-aware), when the zone is known.
    pub fn offset_at(&self, secs: i64) -> Option<i32> {
        let tz = self.tz?;
        let utc = DateTime::<Utc>::from_timestamp(secs, 0)?;
        Some(tz.offset_from_utc_datetime(&utc.naive_utc()).fix().local_minus_utc())
    }

    /// The local calendar date of `secs`; the UTC date when the zone is unknown.
    pub fn local_date(&self, secs: i64) -> Option<NaiveDate> {
        let utc = DateTime::<Utc>::from_timestamp(secs, 0)?;
        Some(match self.tz {
            Some(tz) => utc.with_timezone(&tz).date_naive(),
            None => utc.date_naive(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_offsets_follow_dst_on_both_hemispheres() {
        let paris = Zone::new(Some("Europe/Paris"));
        assert_eq!(paris.offset_at(1_704_067_200), Some(3600)); // 2024-01-01, winter
        assert_eq!(paris.offset_at(1_718_452_800), Some(7200)); // 2024-06-15, summer
        let sydney = Zone::new(Some("Australia/Sydney"));
        assert_eq!(sydney.offset_at(1_704_067_200), Some(39600)); // January is summer there
        assert_eq!(sydney.offset_at(1_718_452_800), Some(36000));
        assert_eq!(Zone::new(Some("Asia/Kolkata")).offset_at(1_718_452_800), Some(19800));
        // 2024-06-15T23:30:00Z is already the 16th in Paris.
        assert_eq!(paris.local_date(1_718_494_200), NaiveDate::from_ymd_opt(2024, 6, 16));
        let unknown = Zone::new(Some("Mars/Olympus_Mons"));
        assert_eq!(unknown.name.as_deref(), Some("Mars/Olympus_Mons"));
        assert_eq!(unknown.offset_at(0), None);
        assert_eq!(unknown.local_date(1_718_494_200), NaiveDate::from_ymd_opt(2024, 6, 15));
        assert_eq!(Zone::new(Some("  ")).name, None);
    }
}
