//! The scheduler examples in `pipelines/`: the Airflow DAG file read through Python's `ast`
//! (Airflow itself is not needed) and the crontab, checked for the commands, flags, dynamic
//! task mapping, scheduling guards and the absence of secrets that their READMEs promise.

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

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn pipelines() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines"))
}

#[test]
fn airflow_dags_sync_and_backfill_every_shard_without_secrets() {
    let dag_file = pipelines().join("airflow/withings_lake_dag.py");
    let out = match Command::new("python3").args(["-c", FACTS]).arg(&dag_file).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !ci() => {
            eprintln!("skipping the Airflow DAG checks: python3 is not installed");
            return;
        }
        Err(e) => panic!("python3 cannot run (CI=true needs it): {e}"),
    };
    assert!(out.status.success(), "the DAG file does not parse: {}", String::from_utf8_lossy(&out.stderr));
    let facts: Value = serde_json::from_slice(&out.stdout).unwrap();

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
