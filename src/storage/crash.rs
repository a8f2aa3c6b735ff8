//! Crash points, for the tests that prove a killed process leaves a lake the next run
//! completes: `WITHINGS_LAKE_CRASH_AT=<stage>:<n>:<text>` makes the process kill itself with
//! SIGKILL (what `kill -9`, the OOM killer or a lost node do: no destructor, no flush) at
//! `<stage>` of its `<n>`th write to a local folder whose key contains `<text>`.
//!
//! Stages of one write ([`super::local`]):
//! - `during`: half of the bytes are in the temporary file, the key is untouched;
//! - `linked`: a create-only write is linked to its key, its temporary file not yet removed;
//! - `after`: the write is complete and nothing after it has run.
//!
//! Before it dies the process prints `withings-lake: crash point: ...` on stderr, so a test
//! can tell the crash it asked for from any other death. A malformed value stops the process
//! at its first write with exit code 2 and a message naming the variable. Unset, the cost is
//! one check of a cached `None` per write.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms a crash point.
pub const ENV: &str = "WITHINGS_LAKE_CRASH_AT";

/// Where in a write the process dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    During,
    Linked,
    After,
}

#[derive(Debug, PartialEq, Eq)]
struct Rule {
    stage: Stage,
    nth: u64,
    text: String,
}

fn parse(value: &str) -> Result<Rule, String> {
    let mut parts = value.splitn(3, ':');
    let stage = match parts.next() {
        Some("during") => Stage::During,
        Some("linked") => Stage::Linked,
        Some("after") => Stage::After,
        other => return Err(format!("stage {other:?} is not one of during, linked, after")),
    };
    let nth = parts
        .next()
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| *n > 0)
        .ok_or("the write number must be a positive integer")?;
    let text = parts.next().filter(|t| !t.is_empty()).ok_or("the text a key must contain is missing")?.to_string();
    Ok(Rule { stage, nth, text })
}

fn rule() -> Option<&'static Rule> {
    static RULE: OnceLock<Option<Rule>> = OnceLock::new();
    RULE.get_or_init(|| {
        let value = std::env::var(ENV).ok()?;
        match parse(&value) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("withings-lake: {ENV}='{value}': {e} (expected <during|linked|after>:<n>:<text>)");
                std::process::exit(2);
            }
        }
    })
    .as_ref()
}

/// Counts a write to `key` and returns the stage at which it must crash, if it is the armed one.
pub(crate) fn at_put(key: &str) -> Option<Stage> {
    static MATCHED: AtomicU64 = AtomicU64::new(0);
    let r = rule()?;
    if !key.contains(&r.text) {
        return None;
    }
    (MATCHED.fetch_add(1, Ordering::SeqCst) + 1 == r.nth).then_some(r.stage)
}

/// Dies here, as a SIGKILL would kill it.
pub(crate) fn now(stage: Stage, key: &str) -> ! {
    eprintln!("withings-lake: crash point: killed {stage:?} the write of '{key}' ({ENV})");
    // SAFETY: kill(2) on our own pid with a valid signal number has no memory effects.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse("during:2:_state/leases/").unwrap(),
            Rule { stage: Stage::During, nth: 2, text: "_state/leases/".into() }
        );
        assert_eq!(parse("after:1:a:b").unwrap().text, "a:b");
        for bad in ["", "before:1:x", "during:0:x", "during:x:y", "during:1:", "linked:3"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
