//! `withings-lake link` and `users import | list | remove` against the simulator, as a
//! person or a scheduler runs them: the real binary, a pipeline file, real HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::{self, Sim};

const SECRET_VAR: &str = "WL_TEST_CLIENT_SECRET";

fn pipeline(dir: &Path, sim: &Sim, extra: &str) -> PathBuf {
    let path = dir.join("pipeline.toml");
    std::fs::write(
        &path,
        format!(
            "[source]\napi_base_url = \"{}\"\nclient_id = \"demo-client\"\nclient_secret_env = \"{SECRET_VAR}\"\nrequests_per_minute = 600\n{extra}\n[credentials]\nurl = \"creds\"\nkey_file = \"creds.key\"\n",
            sim.base
        ),
    )
    .unwrap();
    path
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_withings-lake"));
    c.env(SECRET_VAR, "demo-secret").env_remove("WITHINGS_LAKE_KEY").args(["--log-format", "json"]);
    c
}

async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || bin().args(&args).output().unwrap()).await.unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test]
async fn link_list_and_remove_with_revoke() {
    let sim = common::start(2, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &sim, "").display().to_string();
    let mut child = bin()
        .args(["link", "--pipeline", &p, "--user-id", "alice"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        url_tx.send(lines.next().unwrap().unwrap()).unwrap();
        lines.map(|l| l.unwrap()).collect::<Vec<_>>()
    });
    let url = tokio::task::spawn_blocking(move || url_rx.recv().unwrap()).await.unwrap();
    assert!(url.starts_with(&format!("{}/oauth2_user/authorize2?", sim.base)), "{url}");
    assert!(url.contains("state=") && url.contains("redirect_uri=http%3A%2F%2F127.0.0.1"), "{url}");
    // A plain GET that follows redirects completes the link (the simulator approves at once).
    let page = reqwest::get(&url).await.unwrap();
    assert!(page.status().is_success());
    let mut stderr = child.stderr.take().unwrap();
    let (status, logs) = tokio::task::spawn_blocking(move || {
        let mut logs = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut logs).unwrap();
        (child.wait().unwrap(), logs)
    })
    .await
    .unwrap();
    let rest = reader.join().unwrap();
    // The tokens alice got are the simulator's newest for user 0: in no log line or output.
    let issued = sim.users().await[0]["refresh_token"].as_str().unwrap().to_string();
    assert!(!logs.contains(&issued) && !rest.concat().contains(&issued) && !logs.contains("demo-secret"), "{logs}");
    assert!(logs.contains("user linked"), "JSON logs on stderr: {logs}");
    assert!(status.success(), "link exited {status:?}: {rest:?}");
    let vital = withings_lake::credentials::derived_vital_user_id("alice");
    assert!(
        rest.iter().any(|l| l.starts_with(&format!("linked user alice (Vital user id {vital}, Withings userid 31000000"))),
        "{rest:?}"
    );

    let listed = run(vec!["users".into(), "list".into(), "--pipeline".into(), p.clone(), "--format".into(), "json".into()]).await;
    assert!(listed.status.success(), "{}", text(&listed));
    let row: serde_json::Value = serde_json::from_slice(listed.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(row["user_id"], "alice");
    assert_eq!(row["vital_user_id"], vital.as_str(), "derived from the application's id");
    assert_eq!(row["status"], "active");
    assert!(row.get("refresh_token").is_none() && row.get("access_token").is_none());
    let users = sim.users().await;
    let sim_refresh = users[0]["refresh_token"].as_str().unwrap();
    assert!(!text(&listed).contains(sim_refresh), "no token in the listing");
    // The records on disk are not readable.
    for entry in std::fs::read_dir(dir.path().join("creds/users")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("31000000"));
    }

    let removed = run(vec![
        "users".into(),
        "remove".into(),
        "--pipeline".into(),
        p.clone(),
        "--user-id".into(),
        "alice".into(),
        "--revoke".into(),
    ])
    .await;
    assert!(removed.status.success(), "{}", text(&removed));
    assert!(text(&removed).contains("revoked user alice"));
    assert!(sim.users().await[0]["refresh_token"].is_null(), "revoked at Withings");
    let listed = run(vec!["users".into(), "list".into(), "--pipeline".into(), p, "--format".into(), "json".into()]).await;
    assert!(listed.stdout.is_empty(), "{}", text(&listed));
}

#[tokio::test]
async fn a_callback_with_another_state_stores_nothing() {
    let sim = common::start(1, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &sim, "").display().to_string();
    // `link` for mallory: the process, and the redirect URI and state of its authorize URL.
    let start = || async {
        let (child, _, url) = start_link(&p, "mallory", &[]).await;
        let parsed = reqwest::Url::parse(&url).unwrap();
        let q = |name: &str| parsed.query_pairs().find(|(k, _)| k == name).unwrap().1.to_string();
        (child, q("redirect_uri"), q("state"))
    };
    let (child, redirect, _) = start().await;
    // A forged callback's error text is not believed, nor printed: the state is checked first.
    reqwest::get(format!("{redirect}?error=%1b%5b2J%3Cscript%3Eowned&state=forged")).await.unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("state does not match"), "{}", text(&out));
    assert!(!text(&out).contains("script") && !text(&out).contains('\u{1b}'), "{}", text(&out));
    assert!(!dir.path().join("creds/users/mallory.cred").exists());

    // With the right state, only a known error code is printed.
    let (child, redirect, state) = start().await;
    reqwest::get(format!("{redirect}?error=%1b%5b2J%3Cscript%3Eowned&state={state}")).await.unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("unrecognized error code") && !text(&out).contains("script"), "{}", text(&out));
}

#[tokio::test]
async fn import_proves_each_row_and_reports_it() {
    let sim = common::start(3, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &sim, "").display().to_string();
    let users = sim.users().await;
    let good = users[1]["refresh_token"].as_str().unwrap().to_string();
    let other = users[2]["refresh_token"].as_str().unwrap().to_string();
    let csv = dir.path().join("users.csv");
    std::fs::write(
        &csv,
        format!(
            "user_id,withings_user_id,refresh_token\nbob,31000001,{good}\ncarol,31000009,{other}\nzed,31000000,0000000000000000000000000000000000000000\nbad id!,31000000,x\n"
        ),
    )
    .unwrap();
    let out =
        run(vec!["users".into(), "import".into(), "--pipeline".into(), p.clone(), "--file".into(), csv.display().to_string()])
            .await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("line 2: bob: imported"), "{all}");
    assert!(all.contains("line 3: failed: the refresh token belongs to Withings userid 31000002, not 31000009"), "{all}");
    assert!(all.contains("stored as needs_reauth"), "{all}");
    assert!(all.contains("line 4: failed:") && all.contains("line 5: failed: user id 'bad id!'"), "{all}");
    assert!(all.contains("1 imported, 3 failed"), "{all}");
    for secret in [good.as_str(), other.as_str(), "demo-secret"] {
        assert!(!all.contains(secret), "a secret reached the output");
    }
    let listed = run(vec!["users".into(), "list".into(), "--pipeline".into(), p.clone()]).await;
    let table = text(&listed);
    assert!(table.contains("bob") && table.contains("2 users"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("carol") && l.contains("needs_reauth")), "{table}");
    // Importing an already linked user needs --replace.
    let again =
        run(vec!["users".into(), "import".into(), "--pipeline".into(), p.clone(), "--file".into(), csv.display().to_string()])
            .await;
    assert!(text(&again).contains("line 2: failed: user 'bob' is already linked"), "{}", text(&again));
    // bob's Withings account under another id: refused before its token is used.
    let twice = dir.path().join("twice.csv");
    std::fs::write(&twice, "user_id,withings_user_id,refresh_token\ndave,31000001,unused\n").unwrap();
    let out =
        run(vec!["users".into(), "import".into(), "--pipeline".into(), p.clone(), "--file".into(), twice.display().to_string()])
            .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("Withings userid 31000001 is already linked as user 'bob'"), "{}", text(&out));
    // A row claiming another account whose token turns out to be bob's: the rotated pair is
    // saved to bob (whose own may now be dead), and no second record holds bob's account.
    let bobs = sim.users().await[1]["refresh_token"].as_str().unwrap().to_string();
    std::fs::write(&twice, format!("user_id,withings_user_id,refresh_token\nerin,31000005,{bobs}\n")).unwrap();
    let out =
        run(vec!["users".into(), "import".into(), "--pipeline".into(), p.clone(), "--file".into(), twice.display().to_string()])
            .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("already linked as user 'bob' (its rotated tokens were saved to 'bob')"), "{}", text(&out));
    let listed = run(vec!["users".into(), "list".into(), "--pipeline".into(), p]).await;
    assert!(!text(&listed).contains("erin") && text(&listed).contains("2 users"), "{}", text(&listed));
}

/// A team moving off Vital imports its users with their Vital ids: kept (canonical form) and
/// listed; a value that is not a UUID, or a Vital id another user has, fails that row alone.
#[tokio::test]
async fn import_keeps_vital_user_ids() {
    let sim = common::start(3, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &sim, "").display().to_string();
    let users = sim.users().await;
    let token = |i: usize| users[i]["refresh_token"].as_str().unwrap().to_string();
    let file = dir.path().join("from-vital.jsonl");
    std::fs::write(
        &file,
        format!(
            "{{\"user_id\":\"ann\",\"withings_user_id\":\"31000000\",\"refresh_token\":\"{}\",\"vital_user_id\":\"9F1C3B6A-2D4E-4F70-8A1B-3C5D7E9F0A12\"}}\n\
             {{\"user_id\":\"ben\",\"withings_user_id\":\"31000001\",\"refresh_token\":\"{}\",\"vital_user_id\":\"not-a-uuid\"}}\n\
             {{\"user_id\":\"cat\",\"withings_user_id\":\"31000002\",\"refresh_token\":\"{}\",\"vital_user_id\":\"9f1c3b6a-2d4e-4f70-8a1b-3c5d7e9f0a12\"}}\n",
            token(0),
            token(1),
            token(2)
        ),
    )
    .unwrap();
    let out =
        run(vec!["users".into(), "import".into(), "--pipeline".into(), p.clone(), "--file".into(), file.display().to_string()])
            .await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("line 1: ann: imported"), "{all}");
    assert!(all.contains("line 2: failed: Vital user id 'not-a-uuid' is not valid"), "{all}");
    assert!(all.contains("line 3: failed: Vital user id 9f1c3b6a-2d4e-4f70-8a1b-3c5d7e9f0a12 is already user 'ann'"), "{all}");
    let listed = run(vec!["users".into(), "list".into(), "--pipeline".into(), p, "--format".into(), "json".into()]).await;
    let rows: Vec<serde_json::Value> = text(&listed).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let ann = rows.iter().find(|r| r["user_id"] == "ann").unwrap();
    assert_eq!(ann["vital_user_id"], "9f1c3b6a-2d4e-4f70-8a1b-3c5d7e9f0a12");
}

#[tokio::test]
async fn pipeline_mistakes_are_named() {
    let sim = common::start(1, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &sim, "requests_per_minuet = 60").display().to_string();
    let out = run(vec!["users".into(), "list".into(), "--pipeline".into(), p.clone()]).await;
    assert_eq!(out.status.code(), Some(2));
    let msg = text(&out);
    assert!(msg.contains("pipeline.toml") && msg.contains("requests_per_minuet"), "{msg}");
    let p = pipeline(dir.path(), &sim, "").display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        bin().env_remove(SECRET_VAR).args(["users", "import", "--pipeline", &p, "--file", "/dev/null"]).output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains(SECRET_VAR), "{}", text(&out));
}

/// Starts `link` for `user_id`: the process, its stdout after the first line, and the
/// authorize URL that line prints.
async fn start_link(
    p: &str,
    user_id: &str,
    extra: &[&str],
) -> (std::process::Child, BufReader<std::process::ChildStdout>, String) {
    let mut child = bin()
        .args(["link", "--pipeline", p, "--user-id", user_id])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let (url, stdout) = tokio::task::spawn_blocking(move || {
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        (first.trim().to_string(), stdout)
    })
    .await
    .unwrap();
    (child, stdout, url)
}

/// Runs `link` for `user_id` and approves as simulator user `sim_user` (the simulator approves
/// at once; its `sim_user` parameter picks the account).
async fn link_as(p: &str, user_id: &str, sim_user: usize, extra: &[&str]) -> (Option<i32>, String) {
    let (child, mut stdout, url) = start_link(p, user_id, extra).await;
    reqwest::get(format!("{url}&sim_user={sim_user}")).await.unwrap();
    tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), format!("{rest}{}", String::from_utf8_lossy(&out.stderr)))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn one_user_id_one_withings_account_unless_replaced() {
    let sim = common::start(2, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &sim, "").display().to_string();
    std::fs::write(
        dir.path().join("pipeline.toml"),
        format!("{}\n[lake]\nurl = \"lake\"\n", std::fs::read_to_string(&p).unwrap()),
    )
    .unwrap();
    let (code, out) = link_as(&p, "alice", 0, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    // alice's cursors, as a sync leaves them.
    let state_file = dir.path().join("lake/_state/users/alice.json");
    std::fs::create_dir_all(state_file.parent().unwrap()).unwrap();
    std::fs::write(&state_file, r#"{"user_id":"alice"}"#).unwrap();

    // alice approves as another Withings user: refused, naming both accounts; nothing changes.
    let (code, out) = link_as(&p, "alice", 1, &[]).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("31000000") && out.contains("31000001") && out.contains("--replace"), "{out}");
    assert!(state_file.exists(), "the cursors are kept");
    let listed = run(vec!["users".into(), "list".into(), "--pipeline".into(), p.clone(), "--format".into(), "json".into()]).await;
    assert!(text(&listed).contains("\"withings_userid\":\"31000000\""), "{}", text(&listed));

    // The account of alice cannot be linked as bob too.
    let (code, out) = link_as(&p, "bob", 0, &[]).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("already linked as user 'alice'"), "{out}");

    // With --replace the switch is accepted and alice's cursors are reset.
    let (code, out) = link_as(&p, "alice", 1, &["--replace"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("linked user alice (Vital user id ") && out.contains(", Withings userid 31000001"), "{out}");
    assert!(!state_file.exists(), "the previous account's cursors are gone");
}
