//! `withings-lake schema`: the table listing, JSON equal to the compiled-in schema, and SQL
//! that DataFusion and DuckDB (PyPI `duckdb`, installed by `.ci/run`) both accept with the
//! same columns as the Arrow schema.

use std::process::{Command, Output};

use arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use serde_json::Value;
use withings_lake::schema::Resource;

fn schema(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_withings-lake")).arg("schema").args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "schema failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn schema_lists_the_17_resources_and_describes_one() {
    let all = stdout(&schema(&[]));
    for r in Resource::ALL {
        assert!(all.contains(&format!("| {} ", r.as_str())), "{r} missing from:\n{all}");
    }
    let sleep = stdout(&schema(&["sleep"]));
    for needle in ["ClientFacingSleep", "primary key (id)", "| waso ", "| efficiency ", "ratio", "| apnea_hypopnea_index "] {
        assert!(sleep.contains(needle), "'{needle}' missing from:\n{sleep}");
    }
}

#[test]
fn schema_json_is_the_compiled_in_schema_with_common_columns() {
    let v: Value = serde_json::from_str(&stdout(&schema(&["workouts", "--format", "json"]))).unwrap();
    assert_eq!(v["resource"], "workouts");
    assert_eq!(v["grain"], "month");
    let names: Vec<&str> = v["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    let expected: Vec<&str> = Resource::Workouts.schema().columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, expected);
    for c in ["user_id", "source_type", "ingested_at", "run_id", "intensity", "pool_laps", "spo2_average", "hr_zone_light"] {
        assert!(names.contains(&c), "{c}");
    }
    let all: Value = serde_json::from_str(&stdout(&schema(&["--format", "json"]))).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 18);
}

#[test]
fn schema_rejects_an_unknown_resource_by_name() {
    let out = schema(&["sleeps"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'sleeps'") && err.contains("sleep_stream"), "{err}");
}

#[tokio::test]
async fn schema_sql_creates_the_same_tables_in_datafusion() {
    let sql = stdout(&schema(&["--format", "sql"]));
    // DataFusion gives `TIMESTAMP WITH TIME ZONE` the session's zone; with none set it is naive.
    let ctx = SessionContext::new();
    ctx.sql("SET datafusion.execution.time_zone = 'UTC'").await.unwrap();
    for stmt in sql.split(';').map(str::trim).filter(|s| s.contains("CREATE TABLE")) {
        ctx.sql(stmt).await.unwrap_or_else(|e| panic!("DataFusion refuses:\n{stmt}\n{e}"));
    }
    for r in Resource::ALL {
        let table = ctx.table(r.as_str()).await.unwrap();
        let got = table.schema().as_arrow().clone();
        let want = r.schema().arrow();
        assert_eq!(got.fields().len(), want.fields().len(), "{r}");
        for (g, w) in got.fields().iter().zip(want.fields()) {
            assert_eq!(g.name(), w.name(), "{r}");
            assert_eq!(g.is_nullable(), w.is_nullable(), "{r}.{}", w.name());
            match w.data_type() {
                DataType::Timestamp(_, Some(_)) => {
                    assert!(matches!(g.data_type(), DataType::Timestamp(_, Some(_))), "{r}.{}: {}", w.name(), g.data_type())
                }
                // DataFusion reads VARCHAR as its string view type by default.
                DataType::Utf8 => assert!(matches!(g.data_type(), DataType::Utf8 | DataType::Utf8View), "{r}.{}", w.name()),
                t => assert_eq!(g.data_type(), t, "{r}.{}", w.name()),
            }
        }
    }
}

#[test]
fn schema_sql_creates_the_same_tables_in_duckdb() {
    if !crate::common::duckdb_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("schemas.sql");
    std::fs::write(&file, stdout(&schema(&["--format", "sql"]))).unwrap();
    let script = "import duckdb, json, sys\n\
        con = duckdb.connect()\n\
        con.execute(open(sys.argv[1]).read())\n\
        out = {}\n\
        for (t,) in con.execute('select table_name from information_schema.tables').fetchall():\n\
        \x20   out[t] = [[r[0], r[1], r[2]] for r in con.execute(f'describe \"{t}\"').fetchall()]\n\
        print(json.dumps(out))\n";
    let out = Command::new("python3").args(["-c", script]).arg(&file).output().unwrap();
    assert!(out.status.success(), "duckdb refuses the SQL: {}", String::from_utf8_lossy(&out.stderr));
    let tables: Value = serde_json::from_slice(&out.stdout).unwrap();
    for r in Resource::ALL {
        let cols = tables[r.as_str()].as_array().unwrap_or_else(|| panic!("{r} not created in duckdb"));
        let want = &r.schema().columns;
        assert_eq!(cols.len(), want.len(), "{r}");
        for (c, w) in cols.iter().zip(want) {
            assert_eq!(c[0], w.name.as_str(), "{r}");
            assert_eq!(c[2] == "YES", w.nullable, "{r}.{}", w.name);
            let duck = c[1].as_str().unwrap();
            let expected = match w.data_type.sql() {
                "VARCHAR" => "VARCHAR",
                "INTEGER" => "INTEGER",
                "BIGINT" => "BIGINT",
                "DOUBLE" => "DOUBLE",
                "BOOLEAN" => "BOOLEAN",
                "DATE" => "DATE",
                "BIGINT[]" => "BIGINT[]",
                _ => "TIMESTAMP WITH TIME ZONE",
            };
            assert_eq!(duck, expected, "{r}.{}", w.name);
        }
    }
}
