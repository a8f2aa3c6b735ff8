//! The scheduler examples in `pipelines/`: the Airflow DAG file read through Python's `ast`
//! (Airflow itself is not needed) and the crontab, checked for the commands, flags, dynamic
//! task mapping, scheduling guards and the absence of secrets that their READMEs promise, and
//! the DAG's imports: Airflow 3 locations first, Airflow 2 paths only as their fallbacks.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Prints what the checks need from the DAG file as JSON: each `DAG(...)` call's literal
/// keywords by `dag_id`, module-level string constants, names read, attributes called, and
/// secret-looking strings or keywords.
const FACTS: &str = r#"
import ast, json, re, sys
tree = ast.parse(open(sys.argv[1]).read())
def lit(node):
    try:
        return ast.literal_eval(node)
    except Exception:
        return "<expr>"
facts = {"dags": {}, "constants": {}, "loaded": [], "called": [], "secrets": []}
for node in ast.walk(tree):
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        facts["called"].append(name)
        kws = {k.arg: lit(k.value) for k in node.keywords if k.arg}
        if name == "DAG" and "dag_id" in kws:
            facts["dags"][kws["dag_id"]] = {k: v for k, v in kws.items() if isinstance(v, (str, int, bool, type(None)))}
        for k in node.keywords:
            if k.arg and re.search("secret|password|token", k.arg, re.I) and isinstance(k.value, ast.Constant):
                facts["secrets"].append(f"keyword {k.arg}=")
    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
        facts["loaded"].append(node.id)
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        s = node.value
        if "demo-secret" in s or re.search(r"client_secret\s*=\s*\S", s) or re.search(r"\b[0-9a-fA-F]{64}\b", s):
            facts["secrets"].append(s[:80])
for node in tree.body:
    if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
        for t in node.targets:
            facts["constants"][getattr(t, "id", "")] = node.value.value
print(json.dumps(facts))
"#;

/// Prints the DAG file's Airflow imports as JSON: `pairs`, one per name bound by a `try` whose
/// body imports only from Airflow 3 locations (`airflow.sdk...`, `airflow.providers...`) and whose
/// `except ImportError` imports the same names from Airflow 2 paths (any other `airflow...`
/// module), each with both modules and the line; and `problems`, every Airflow import that is
/// not part of such a pair (a 2.x path imported outside a fallback, a 3.x import without one, a
/// fallback that binds other names, `import airflow...`, a star import).
const IMPORTS: &str = r#"
import ast, json, sys
tree = ast.parse(open(sys.argv[1]).read())
def airflow(mod):
    return mod == "airflow" or mod.startswith("airflow.")
def airflow3(mod):
    return any(mod == p or mod.startswith(p + ".") for p in ("airflow.sdk", "airflow.providers"))
def bound(stmts):
    names = {}
    for s in stmts:
        for a in s.names:
            names[a.asname or a.name] = (s.module, a.name)
    return names
def catches_import_error(handler):
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(t, ast.Name) and t.id == "ImportError" for t in types)
def airflow_from(s):
    return isinstance(s, ast.ImportFrom) and not s.level and airflow(s.module or "")
pairs, problems, paired = [], [], set()
for node in ast.walk(tree):
    if not isinstance(node, ast.Try) or not any(airflow_from(s) for s in node.body):
        continue
    line = node.lineno
    if not all(airflow_from(s) and airflow3(s.module) for s in node.body):
        problems.append(f"line {line}: a try with Airflow imports must hold only Airflow 3 imports")
        continue
    handlers = [h for h in node.handlers if h.type is not None and catches_import_error(h)]
    if not handlers:
        problems.append(f"line {line}: Airflow 3 imports without an `except ImportError` fallback")
        continue
    old_stmts = [s for s in handlers[0].body if airflow_from(s)]
    if any(airflow3(s.module) for s in old_stmts):
        problems.append(f"line {line}: the fallback imports from an Airflow 3 location again")
        continue
    new, old = bound(node.body), bound(old_stmts)
    if set(new) != set(old):
        problems.append(f"line {line}: Airflow 3 imports {sorted(new)} but the fallback imports {sorted(old)}")
        continue
    for name, (module, original) in new.items():
        if original != old[name][1]:
            problems.append(f"line {line}: {name} is {module}.{original} but {old[name][0]}.{old[name][1]} in the fallback")
        pairs.append({"name": name, "new": module, "old": old[name][0], "line": line})
    paired.update(id(s) for s in node.body + old_stmts)
for node in ast.walk(tree):
    if isinstance(node, ast.Import) and any(airflow(a.name) for a in node.names):
        problems.append(f"line {node.lineno}: `import airflow...`: use `from ... import` in a try/except ImportError pair")
    elif airflow_from(node):
        if any(a.name == "*" for a in node.names):
            problems.append(f"line {node.lineno}: star import from {node.module}")
        elif id(node) not in paired:
            kind = "an Airflow 3 import without a 2.x fallback" if airflow3(node.module) else "an Airflow 2 path outside a fallback"
            problems.append(f"line {node.lineno}: from {node.module} import ...: {kind}")
print(json.dumps({"pairs": pairs, "problems": problems}))
"#;

/// Where each name the DAG imports lives: its Airflow 3 location (no deprecation warning under
/// Airflow 3.3; the exceptions moved to `airflow.sdk.exceptions` in 3.2) and its Airflow 2 path.
const IMPORT_PATHS: [(&str, &str, &str); 8] = [
    ("DAG", "airflow.sdk", "airflow"),
    ("task", "airflow.sdk", "airflow.decorators"),
    ("Param", "airflow.sdk", "airflow.models.param"),
    ("Variable", "airflow.sdk", "airflow.models"),
    ("get_current_context", "airflow.sdk", "airflow.operators.python"),
    ("AirflowException", "airflow.sdk.exceptions", "airflow.exceptions"),
    ("AirflowFailException", "airflow.sdk.exceptions", "airflow.exceptions"),
    ("BashOperator", "airflow.providers.standard.operators.bash", "airflow.operators.bash"),
];

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn pipelines() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines"))
}

fn dag_file() -> std::path::PathBuf {
    pipelines().join("airflow/withings_lake_dag.py")
}

/// Runs `script` on the DAG file with python3 and parses what it prints; `None` (the test is
/// skipped) when python3 is missing outside CI.
fn python_facts(script: &str) -> Option<Value> {
    let out = match Command::new("python3").args(["-c", script]).arg(dag_file()).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !ci() => {
            eprintln!("skipping the Airflow DAG checks: python3 is not installed");
            return None;
        }
        Err(e) => panic!("python3 cannot run (CI=true needs it): {e}"),
    };
    assert!(out.status.success(), "the DAG file does not parse: {}", String::from_utf8_lossy(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn airflow_dags_sync_and_backfill_every_shard_without_secrets() {
    let dag_file = dag_file();
    let Some(facts) = python_facts(FACTS) else { return };

    let sync = &facts["dags"]["withings_lake"];
    assert!(sync.is_object(), "no DAG(dag_id=\"withings_lake\"): {}", facts["dags"]);
    assert_eq!(sync["max_active_runs"], 1, "{sync}");
    assert_eq!(sync["catchup"], false, "{sync}");
    assert_eq!(sync["schedule"], "*/15 * * * *", "{sync}");
    let backfill = &facts["dags"]["withings_lake_backfill"];
    assert!(backfill.is_object(), "no DAG(dag_id=\"withings_lake_backfill\"): {}", facts["dags"]);
    assert!(backfill["schedule"].is_null(), "the backfill is triggered by hand: {backfill}");

    let command = |name: &str| {
        assert!(facts["loaded"].as_array().unwrap().iter().any(|n| n == name), "{name} is defined but never used");
        facts["constants"][name].as_str().unwrap_or_else(|| panic!("no module-level {name} string")).to_string()
    };
    let sync_cmd = command("SYNC_COMMAND");
    for needle in [" sync ", "--pipeline", "--shard", "--log-format json", "--report json"] {
        assert!(sync_cmd.contains(needle), "'{needle}' missing from the sync command: {sync_cmd}");
    }
    let backfill_cmd = command("BACKFILL_COMMAND");
    for needle in [" backfill ", "--from", "--shard", "--log-format json", "--report json"] {
        assert!(backfill_cmd.contains(needle), "'{needle}' missing from the backfill command: {backfill_cmd}");
    }

    let called = facts["called"].as_array().unwrap();
    for method in ["partial", "expand"] {
        assert!(called.iter().any(|c| c == method), "no .{method}(...): shards must be mapped tasks");
    }
    assert_eq!(facts["secrets"], Value::Array(vec![]), "secret-looking values in {}", dag_file.display());
}

#[test]
fn airflow_dag_imports_airflow_3_paths_with_airflow_2_fallbacks() {
    let Some(imports) = python_facts(IMPORTS) else { return };
    let problems = imports["problems"].as_array().unwrap();
    assert!(problems.is_empty(), "Airflow imports in {}:\n{:#?}", dag_file().display(), problems);

    let pairs = imports["pairs"].as_array().unwrap();
    for pair in pairs {
        let name = pair["name"].as_str().unwrap();
        if let Some((_, new, old)) = IMPORT_PATHS.iter().find(|(n, _, _)| *n == name) {
            assert_eq!((pair["new"].as_str().unwrap(), pair["old"].as_str().unwrap()), (*new, *old), "{name}: {pair}");
        }
    }
    // What the DAG cannot do without: a check that found no import at all would prove nothing.
    for name in ["DAG", "task", "Param", "BashOperator", "AirflowException", "AirflowFailException"] {
        assert!(pairs.iter().any(|p| p["name"] == name), "{name} is not imported with a fallback: {pairs:?}");
    }
}

#[test]
fn cron_example_locks_each_of_two_shards_and_snapshots_status() {
    let cron = std::fs::read_to_string(pipelines().join("cron/withings-lake.cron")).unwrap();
    let jobs: Vec<&str> = cron.lines().filter(|l| l.starts_with(|c: char| c.is_ascii_digit() || c == '*')).collect();
    for job in &jobs {
        let schedule: Vec<&str> = job.split_whitespace().take(5).collect();
        assert!(schedule.iter().all(|f| f.chars().all(|c| c.is_ascii_digit() || "*/,-".contains(c))), "not a cron line: {job}");
    }
    let mut locks = Vec::new();
    for shard in ["--shard 0/2", "--shard 1/2"] {
        let line = jobs.iter().find(|l| l.contains(shard)).unwrap_or_else(|| panic!("no cron line with {shard}"));
        for needle in ["flock -n", " sync ", "--log-format json", "--report json", "*/15 "] {
            assert!(line.contains(needle), "'{needle}' missing from: {line}");
        }
        locks.push(line.split_whitespace().find(|w| w.ends_with(".lock")).unwrap_or_else(|| panic!("no lock file: {line}")));
    }
    assert_ne!(locks[0], locks[1], "each shard needs a lock of its own");
    assert!(jobs.iter().any(|l| l.contains(" status ") && l.contains("--format json")), "no status snapshot in:\n{cron}");
    let mut settings = cron.lines().filter(|l| !l.trim_start().starts_with('#'));
    assert!(settings.all(|l| !l.contains("demo-secret") && !l.contains("SECRET=")), "a secret in the crontab");
}
