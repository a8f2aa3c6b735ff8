//! JSON shape comparison: the keys and JSON types a real response has, checked against ours.
//!
//! A shape is collected per path (`body.measuregrps[].measures[].value`); object keys that
//! are all digits (epoch-keyed series) fold into `*`. Ours must use only keys the real one
//! has at that path, carry every key the real one always carries, and use a JSON type the
//! real one uses there. An integer may stand where the real one has floats; paths listed as
//! `lenient` (fields the recording happens to show only as null, or only as a number) accept
//! null or any number.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

#[derive(Debug, Default)]
struct PathShape {
    types: BTreeSet<&'static str>,
    /// For objects: key -> in how many objects it appeared.
    keys: BTreeMap<String, usize>,
    objects: usize,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "int",
        Value::Number(_) => "float",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn key_of(k: &str) -> &str {
    if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) { "*" } else { k }
}

fn collect(v: &Value, path: &str, out: &mut BTreeMap<String, PathShape>) {
    let entry = out.entry(path.to_string()).or_default();
    entry.types.insert(kind(v));
    match v {
        Value::Object(m) => {
            entry.objects += 1;
            let mut seen = BTreeSet::new();
            for k in m.keys() {
                seen.insert(key_of(k).to_string());
            }
            for k in seen {
                *entry.keys.entry(k).or_default() += 1;
            }
            for (k, x) in m {
                collect(x, &format!("{path}.{}", key_of(k)), out);
            }
        }
        Value::Array(a) => {
            for x in a {
                collect(x, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

/// Differences between `ours` and `real`, empty when the shapes agree.
pub fn diff(real: &Value, ours: &Value, lenient: &[&str], optional: &[&str]) -> Vec<String> {
    let mut r = BTreeMap::new();
    let mut o = BTreeMap::new();
    collect(real, "", &mut r);
    collect(ours, "", &mut o);
    let mut errors = Vec::new();
    for (path, ours_shape) in &o {
        let Some(real_shape) = r.get(path) else {
            // The parent check reports the unknown key itself.
            continue;
        };
        for t in &ours_shape.types {
            let fine = real_shape.types.contains(t)
                || (*t == "int" && real_shape.types.contains("float"))
                || (lenient.contains(&path.as_str())
                    && ["null", "int", "float"].contains(t)
                    && real_shape.types.iter().any(|r| ["null", "int", "float"].contains(r)));
            if !fine {
                errors.push(format!("{path}: type {t}, real has {:?}", real_shape.types));
            }
        }
        for k in ours_shape.keys.keys() {
            if !real_shape.keys.contains_key(k) {
                errors.push(format!("{path}: key '{k}' is not in the real response"));
            }
        }
        if ours_shape.objects > 0 {
            for (k, n) in &real_shape.keys {
                let always = *n == real_shape.objects;
                let ours_n = ours_shape.keys.get(k).copied().unwrap_or(0);
                let child = format!("{path}.{k}");
                if always && ours_n < ours_shape.objects && !optional.contains(&child.as_str()) {
                    errors.push(format!(
                        "{path}: key '{k}' missing in {} of {} objects",
                        ours_shape.objects - ours_n,
                        ours_shape.objects
                    ));
                }
            }
        }
    }
    errors
}

/// Panics with the differences, naming the fixture.
pub fn assert_same_shape(name: &str, real: &Value, ours: &Value, lenient: &[&str], optional: &[&str]) {
    let errors = diff(real, ours, lenient, optional);
    assert!(errors.is_empty(), "simulator response differs in shape from {name}:\n  {}", errors.join("\n  "));
}

#[test]
fn shape_diff_catches_renamed_keys_types_and_missing_keys() {
    let real = serde_json::json!({"a": [{"x": 1, "y": 1.5}, {"x": 2, "y": 2.0}]});
    assert!(diff(&real, &serde_json::json!({"a": [{"x": 3, "y": 4}]}), &[], &[]).is_empty());
    let errs = diff(&real, &serde_json::json!({"a": [{"x": "3", "z": 1.0}]}), &[], &[]);
    assert_eq!(errs.len(), 3, "{errs:?}");
}
