//! `withings-lake users import | list | remove`: manage linked users without showing secrets.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;
use withings_lake::credentials::{UserRecord, UserStatus, derived_vital_user_id, parse_vital_user_id, validate_user_id};
use withings_lake::pipeline::PipelineFile;
use withings_lake::secret::Secret;

#[derive(Debug, Args)]
pub struct UsersArgs {
    /// Pipeline file (API, client id, secret variable, credentials location).
    #[arg(long, global = true)]
    pub pipeline: Option<PathBuf>,
    #[command(subcommand)]
    pub command: UsersCommand,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Import users linked elsewhere: CSV (header user_id,withings_user_id,refresh_token, and
    /// optionally vital_user_id) or JSON lines with those keys. Each row is refreshed once to
    /// prove it. `vital_user_id`: the person's id at Vital (a UUID), kept as the `user_id` of
    /// their events, so a team moving off Vital keeps its ids.
    Import {
        #[arg(long)]
        file: PathBuf,
        /// Replace users that are already linked (by default such rows are refused).
        #[arg(long)]
        replace: bool,
    },
    /// List users: status, scopes, last refresh (never tokens).
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Delete a user's record; with --revoke, revoke the authorization at Withings first.
    Remove {
        #[arg(long)]
        user_id: String,
        #[arg(long)]
        revoke: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRow {
    user_id: String,
    withings_user_id: String,
    refresh_token: Secret,
    #[serde(default)]
    vital_user_id: Option<String>,
}

fn rows(text: &str, file: &str) -> Vec<(usize, Result<ImportRow, String>)> {
    let lines: Vec<(usize, &str)> =
        text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty()).collect();
    let Some((_, first)) = lines.first() else { return Vec::new() };
    if first.starts_with('{') {
        return lines
            .iter()
            .map(|(n, l)| (*n, serde_json::from_str::<ImportRow>(l).map_err(|e| format!("{file} line {n}: {e}"))))
            .collect();
    }
    let header: Vec<&str> = first.split(',').map(str::trim).collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(u), Some(w), Some(r)) = (col("user_id"), col("withings_user_id"), col("refresh_token")) else {
        return vec![(1, Err(format!("{file}: the CSV header must name user_id, withings_user_id, refresh_token")))];
    };
    let vital = col("vital_user_id");
    lines[1..]
        .iter()
        .map(|(n, l)| {
            let cells: Vec<&str> = l.split(',').map(str::trim).collect();
            if cells.len() != header.len() {
                return (*n, Err(format!("{file} line {n}: {} cells, the header has {}", cells.len(), header.len())));
            }
            (
                *n,
                Ok(ImportRow {
                    user_id: cells[u].into(),
                    withings_user_id: cells[w].into(),
                    refresh_token: Secret::new(cells[r]),
                    vital_user_id: vital.map(|v| cells[v].to_string()).filter(|v| !v.is_empty()),
                }),
            )
        })
        .collect()
}

pub async fn run(args: UsersArgs) -> anyhow::Result<()> {
    let path = args.pipeline.context("--pipeline FILE is required")?;
    let pipeline = PipelineFile::load(&path)?;
    let store = pipeline.resolve_credentials().await?;
    match args.command {
        UsersCommand::Import { file, replace } => {
            let name = file.display().to_string();
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {name}"))?;
            let client = pipeline.resolve_client()?;
            store.check_writable().await?;
            let (mut ok, mut failed) = (0, 0);
            // One Withings account, one user (notifications are routed by Withings userid).
            let linked = store.list().await?;
            let mut vital_owners: std::collections::HashMap<String, String> =
                linked.iter().map(|r| (r.vital_id(), r.user_id.clone())).collect();
            let mut owners: std::collections::HashMap<String, String> =
                linked.into_iter().map(|r| (r.withings_userid, r.user_id)).collect();
            for (line, row) in rows(&text, &name) {
                let outcome = async {
                    let row = row.map_err(anyhow::Error::msg)?;
                    validate_user_id(&row.user_id)?;
                    // An empty value (CSV cell or JSON string) means none was given.
                    let given =
                        row.vital_user_id.as_deref().filter(|v| !v.trim().is_empty()).map(parse_vital_user_id).transpose()?;
                    let previous = store.get(&row.user_id).await?;
                    let vital_user_id = given.or_else(|| previous.as_ref().and_then(|p| p.vital_user_id.clone()));
                    let vital = vital_user_id.clone().unwrap_or_else(|| derived_vital_user_id(&row.user_id));
                    if let Some(other) = vital_owners.get(&vital).filter(|o| **o != row.user_id) {
                        bail!("Vital user id {vital} is already user '{other}' (one Vital user, one user)");
                    }
                    if !replace && previous.is_some() {
                        bail!("user '{}' is already linked (use --replace to overwrite)", row.user_id);
                    }
                    if let Some(other) = owners.get(&row.withings_user_id).filter(|o| **o != row.user_id) {
                        bail!(
                            "Withings userid {} is already linked as user '{other}' (one account, one user)",
                            row.withings_user_id
                        );
                    }
                    let tokens = client.refresh(&row.refresh_token).await?;
                    let userid = tokens.userid.clone().unwrap_or_default();
                    let now = chrono::Utc::now().timestamp();
                    if let Some(other) = owners.get(&userid).filter(|o| **o != row.user_id).cloned() {
                        // The token is another linked user's: the rotated pair is theirs, saved
                        // to their record (the one they had may be dead now), not a second one.
                        if let Some(mut owner) = store.get(&other).await? {
                            owner.access_token = tokens.access_token;
                            owner.access_expires_at = now + withings_lake::credentials::token_lifetime(tokens.expires_in);
                            owner.refresh_token = tokens.refresh_token;
                            owner.updated_at = now;
                            owner.last_refresh_at = Some(now);
                            store.put(&owner).await?;
                        }
                        bail!(
                            "the refresh token belongs to Withings userid {userid}, already linked as user '{other}' (its \
                             rotated tokens were saved to '{other}')"
                        );
                    }
                    let mismatch = (userid != row.withings_user_id)
                        .then(|| format!("the refresh token belongs to Withings userid {userid}, not {}", row.withings_user_id));
                    // Another account for a linked user: its cursors belong to the old one.
                    if mismatch.is_none() && previous.as_ref().is_some_and(|p| p.withings_userid != userid) {
                        withings_lake::state::StateStore::new(pipeline.resolve_lake_location()?).delete(&row.user_id).await?;
                    }
                    let record = UserRecord {
                        user_id: row.user_id.clone(),
                        withings_userid: userid,
                        scopes: tokens
                            .scope
                            .as_deref()
                            .unwrap_or("")
                            .split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect(),
                        access_token: tokens.access_token,
                        access_expires_at: now + withings_lake::credentials::token_lifetime(tokens.expires_in),
                        refresh_token: tokens.refresh_token,
                        // The refresh rotated the pair: keep it even when the row is wrong, so
                        // the account is not lost, but do not sync it until someone looks.
                        status: if mismatch.is_some() { UserStatus::NeedsReauth } else { UserStatus::Active },
                        status_reason: mismatch.clone(),
                        created_at: now,
                        updated_at: now,
                        last_refresh_at: Some(now),
                        vital_user_id,
                    };
                    store.put(&record).await?;
                    vital_owners.insert(record.vital_id(), record.user_id.clone());
                    if mismatch.is_none() {
                        owners.insert(record.withings_userid.clone(), record.user_id.clone());
                    }
                    if let Some(m) = mismatch {
                        bail!("{m} (stored as needs_reauth so the rotated token is not lost)");
                    }
                    Ok(row.user_id)
                }
                .await;
                match outcome {
                    Ok(user_id) => {
                        ok += 1;
                        println!("line {line}: {user_id}: imported");
                    }
                    Err(e) => {
                        failed += 1;
                        println!("line {line}: failed: {}", withings_lake::error::chain_message(e.as_ref()));
                    }
                }
            }
            println!("{ok} imported, {failed} failed");
            if failed > 0 {
                return Err(super::run::Partial { failed, interrupted: 0, selected: ok + failed }.into());
            }
            Ok(())
        }
        UsersCommand::List { format } => {
            let users = store.list().await?;
            match format {
                Format::Json => {
                    for u in &users {
                        let v = serde_json::json!({
                            "user_id": u.user_id,
                            "vital_user_id": u.vital_id(),
                            "withings_userid": u.withings_userid,
                            "status": u.status.as_str(),
                            "status_reason": u.status_reason,
                            "scopes": u.scopes,
                            "access_expires_at": u.access_expires_at,
                            "last_refresh_at": u.last_refresh_at,
                            "created_at": u.created_at,
                            "updated_at": u.updated_at,
                        });
                        println!("{v}");
                    }
                }
                Format::Table => {
                    let ts = |t: Option<i64>| {
                        t.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                            .map(|d| d.format("%Y-%m-%d %H:%M:%SZ").to_string())
                            .unwrap_or_else(|| "-".into())
                    };
                    println!(
                        "{:<24} {:<36} {:<12} {:<13} {:<21} {:<45}",
                        "user_id", "vital_user_id", "withings", "status", "last_refresh", "scopes"
                    );
                    for u in &users {
                        println!(
                            "{:<24} {:<36} {:<12} {:<13} {:<21} {:<45}",
                            u.user_id,
                            u.vital_id(),
                            u.withings_userid,
                            u.status.as_str(),
                            ts(u.last_refresh_at),
                            u.scopes.join(",")
                        );
                    }
                    println!("{} users", users.len());
                }
            }
            Ok(())
        }
        UsersCommand::Remove { user_id, revoke } => {
            let record = store.get(&user_id).await?.with_context(|| format!("user '{user_id}' is not linked"))?;
            if revoke {
                let client = pipeline.resolve_client()?;
                client
                    .revoke_user(&record.withings_userid)
                    .await
                    .with_context(|| format!("revoking user '{user_id}' at Withings"))?;
                println!("revoked user {user_id} at Withings (userid {})", record.withings_userid);
            }
            store.delete(&user_id).await?;
            println!("removed user {user_id}");
            Ok(())
        }
    }
}
