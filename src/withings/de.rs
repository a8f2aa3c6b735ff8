//! Lenient field decoders for Withings' loosely typed JSON: numbers that arrive as floats or
//! strings, ids that are strings or integers, and empty objects that PHP serializes as `[]`.

use std::collections::BTreeMap;

use serde::de::Error;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

fn number_to_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite() && f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

/// An optional integer: int, integral float, numeric string or bool; null or absent = None.
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => number_to_i64(&v).map(Some).ok_or_else(|| D::Error::custom(format!("expected an integer, got {v}"))),
    }
}

/// A required integer, leniently.
pub fn i64_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = Value::deserialize(d)?;
    number_to_i64(&v).ok_or_else(|| D::Error::custom(format!("expected an integer, got {v}")))
}

/// An optional number (int or float, or a numeric string).
pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => {
            s.trim().parse::<f64>().map(Some).map_err(|_| D::Error::custom(format!("expected a number, got '{s}'")))
        }
        Some(v) => Err(D::Error::custom(format!("expected a number, got {v}"))),
    }
}

/// A value whose `null` means its default (an empty object).
pub fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An optional id or name that is a string in some endpoints and an integer in others.
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(v) => Err(D::Error::custom(format!("expected a string or a number, got {v}"))),
    }
}

/// An optional `{"<epoch>": number}` series (sleep get vitals), `[]` when empty.
pub fn opt_epoch_series<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<i64, f64>>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) if a.is_empty() => Ok(Some(BTreeMap::new())),
        Some(Value::Object(m)) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let t = k.parse::<i64>().map_err(|_| D::Error::custom(format!("series key '{k}' is not an epoch")))?;
                let x = v.as_f64().ok_or_else(|| D::Error::custom(format!("series value at {k} is not a number")))?;
                out.insert(t, x);
            }
            Ok(Some(out))
        }
        Some(v) => Err(D::Error::custom(format!("expected an epoch series, got {}", kind(&v)))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
