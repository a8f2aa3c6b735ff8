//! The `withings-lake simulate` binary: prints `listening on http://HOST:PORT` and serves.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn simulate_prints_its_address_and_serves_the_users() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_withings-lake"))
            .args([
                "simulate",
                "--listen",
                "127.0.0.1:0",
                "--users",
                "3",
                "--seed",
                "9",
                "--now",
                "2024-06-15T12:00:00Z",
                "--freeze-clock",
            ])
            .args(["--log-format", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("first line: {line:?}")).to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let users: serde_json::Value = reqwest::get(format!("{url}/_sim/users")).await.unwrap().json().await.unwrap();
    assert_eq!(users["users"].as_array().unwrap().len(), 3);
    let clock: serde_json::Value = reqwest::get(format!("{url}/_sim/clock")).await.unwrap().json().await.unwrap();
    assert_eq!(clock["now"], "2024-06-15T12:00:00Z");
    assert_eq!(clock["frozen"], true);
}

#[test]
fn simulate_rejects_a_bad_flag_with_exit_code_2_naming_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_withings-lake"))
        .args(["simulate", "--now", "yesterday", "--log-format", "text"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--now") && err.contains("yesterday"), "{err}");
    assert!(out.stdout.is_empty(), "nothing on stdout when it does not start");
}
