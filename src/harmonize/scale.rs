//! [`scaled`]: Withings' `{value, unit}` integer pairs to doubles, exactly.

/// `value * 10^unit` from Withings' integers: one correctly rounded operation on exact
/// operands, so `{72450, -3}` is exactly the double nearest 72.45. `None` when the exponent or
/// the value is outside what a double holds exactly.
pub fn scaled(value: i64, unit: i64) -> Option<f64> {
    if !(-15..=15).contains(&unit) || value.unsigned_abs() > (1 << 53) {
        return None;
    }
    let p = 10f64.powi(unit.unsigned_abs() as i32);
    Some(if unit < 0 { value as f64 / p } else { value as f64 * p })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_values_equal_the_decimal_they_stand_for() {
        // Whatever the exponent, the result is the double nearest the decimal value, i.e.
        // what parsing the decimal text gives (the standard is correctly rounded parsing).
        for unit in -15..=3 {
            for value in
                [0i64, 1, 7, 20, 68, 123, 7200, 72450, 19467, 95854, 1_000_001, -4125, 987_654_321, 9_007_199_254_740_992]
            {
                let text = format!("{value}e{unit}");
                assert_eq!(scaled(value, unit), Some(text.parse::<f64>().unwrap()), "{text}");
            }
        }
        assert_eq!(scaled(72450, -3), Some(72.45));
        assert_eq!(scaled(5, 16), None);
        assert_eq!(scaled(i64::MAX, 0), None);
    }
}
