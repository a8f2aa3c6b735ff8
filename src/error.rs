//! One error classification: every library error type says what the
//! caller should do about it ([`Classify`]), and [`class_of`] finds that answer in any error
//! chain, however much context it is wrapped in. The CLI maps the class to its exit code.

use std::error::Error;

/// What the caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// A setting is wrong (client id, base URL): fix the pipeline file.
    Config,
    /// The user's authorization is gone or lacks a scope: refresh, else relink.
    Auth,
    /// Worth retrying later (network, 5xx, non-JSON, rate limit).
    Transient,
    /// A response (or record) that does not decode: quarantine it, go on.
    Data,
    /// A bug or an answer that makes no sense: stop and report.
    Internal,
    /// Another writer holds what this one needs (a shard lease): try again later.
    Busy,
}

/// An error that knows its class. Implemented by every error type of the library; a type that
/// implements it must also be listed in [`class_of_cause`] (a `dyn Error` cannot be downcast to
/// a `dyn Classify`).
pub trait Classify {
    fn class(&self) -> ErrorClass;
}

/// The error an error variant was made from, when it was made from one (its `#[source]`).
pub type Cause = Box<dyn Error + Send + Sync + 'static>;

/// The class of the first error in `error`'s chain (itself, then its sources) that classifies
/// itself; none when no error of the chain is one of the library's.
pub fn class_of(error: &(dyn Error + 'static)) -> Option<ErrorClass> {
    chain(error).find_map(class_of_cause)
}

/// The class of this one error (not of its sources), when it is one of the library's types.
///
/// This is the one list of the library's error types: a new error type implements
/// [`Classify`] and gets a line here.
pub fn class_of_cause(cause: &(dyn Error + 'static)) -> Option<ErrorClass> {
    macro_rules! classes {
        ($($t:ty),* $(,)?) => {
            $(if let Some(e) = cause.downcast_ref::<$t>() {
                return Some(Classify::class(e));
            })*
        };
    }
    classes!(
        crate::withings::WithingsError,
        crate::credentials::CredentialsError,
        crate::pipeline::PipelineError,
        crate::link::LinkError,
        crate::lake::LakeError,
        crate::lake::query::QueryError,
        crate::lease::LeaseError,
        crate::state::StateError,
        crate::storage::StorageError,
        crate::events::EventsError,
        crate::erasure::ErasureError,
        crate::schema::SchemaError,
        crate::sync::SyncError,
        crate::sync::Failed,
        crate::serve::ServeError,
    );
    None
}

/// `error` and its sources, outermost first.
pub fn chain<'a>(error: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(error), |e| Error::source(*e))
}

/// `error` and its causes on one line, `error: cause: cause`, like anyhow's `{:#}`, except
/// that a cause whose text the line already ends with is left out: a message that quotes its
/// source (`"lake storage at 'k': {source}"`) does not print it twice.
pub fn chain_message(error: &(dyn Error + 'static)) -> String {
    let mut line = error.to_string();
    for cause in chain(error).skip(1) {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::CredentialsError;
    use crate::lake::LakeError;
    use crate::state::StateError;
    use anyhow::Context as _;

    #[derive(Debug, thiserror::Error)]
    #[error("not one of ours: {0}")]
    struct Foreign(#[source] CredentialsError);

    fn corrupt_state() -> StateError {
        StateError::Corrupt { key: "k".into(), source: serde_json::from_str::<u32>("x").unwrap_err() }
    }

    #[test]
    fn class_of_finds_the_first_classified_cause_under_context() {
        let e = Err::<(), _>(LakeError::NotALake { url: "memory://x/".into() })
            .context("opening the lake")
            .context("running the sync")
            .unwrap_err();
        assert_eq!(class_of(e.as_ref()), Some(ErrorClass::Config));

        // Through an error type that does not classify itself.
        let e = anyhow::Error::new(Foreign(CredentialsError::UnknownUser { user_id: "u".into() })).context("step");
        assert_eq!(class_of(e.as_ref()), Some(ErrorClass::Auth));

        // The outermost classified error decides, not its source.
        assert_eq!(class_of(&corrupt_state()), Some(ErrorClass::Data));
        let e = crate::link::LinkError::Reset { user_id: "u".into(), source: corrupt_state() };
        assert_eq!(class_of(&e), Some(ErrorClass::Transient));
        let e = anyhow::Error::new(e).context("linking");
        assert_eq!(class_of(e.as_ref()), Some(ErrorClass::Transient));

        assert_eq!(class_of(anyhow::anyhow!("just text").context("more text").as_ref()), None);
        assert_eq!(class_of(&std::io::Error::other("disk on fire")), None);
    }

    #[test]
    fn chain_message_is_anyhows_alternate_form_without_repeats() {
        let e = Err::<(), _>(CredentialsError::UnknownUser { user_id: "u".into() })
            .context("step one")
            .context("step two")
            .unwrap_err();
        assert_eq!(chain_message(e.as_ref()), format!("{e:#}"));
        assert_eq!(chain_message(e.as_ref()), "step two: step one: user 'u' is not linked (no credentials record)");

        // A message that quotes its source does not repeat it (anyhow's `{:#}` does).
        let text = "sync state 'k' is not valid: expected value at line 1 column 1";
        assert_eq!(corrupt_state().to_string(), text);
        let e = anyhow::Error::new(corrupt_state()).context("reading the state");
        assert_eq!(format!("{e:#}"), format!("reading the state: {text}: expected value at line 1 column 1"));
        assert_eq!(chain_message(e.as_ref()), format!("reading the state: {text}"));
    }
}
