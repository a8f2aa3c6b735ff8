//! Storage locations: one place that turns a URL (or a plain path) into an object store and
//! the prefix inside it.
//!
//! Accepted: a plain path (relative or absolute), `file://`, `memory://NAME` (one shared
//! in-memory store per NAME within a process, for tests), and the cloud schemes object_store
//! knows (`s3://`, `gs://`, `az://`, with options from the standard environment variables).
//!
//! Local folders are served by [`local::LocalFolder`], whose writes leave temporary files that
//! name their writer, so that whatever a killed process left is removed by the next one
//! ([`Location::remove_interrupted_writes`]); [`crash`] arms the crash points tests kill
//! processes with.

pub mod crash;
pub mod local;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use object_store::ObjectStore;
use object_store::memory::InMemory;
use object_store::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage location '{location}': {reason}")]
    Location { location: String, reason: String },
}

/// A location that does not open is a setting to fix.
impl crate::error::Classify for StorageError {
    fn class(&self) -> crate::error::ErrorClass {
        crate::error::ErrorClass::Config
    }
}

/// An opened location: the store and the prefix every key lives under.
#[derive(Clone)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    /// The location for messages (query and user info removed).
    pub url: String,
    /// The URL of the store itself (`file:///`, `s3://bucket/`, `memory://name/`), under which
    /// a query engine registers `store`.
    pub store_url: String,
}

impl std::fmt::Debug for Location {
    /// The URL without query or user info (a SAS token or password never shows).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Location").field("url", &redacted(&self.url)).field("prefix", &self.prefix.as_ref()).finish()
    }
}

/// A location for messages: no query string, no user info.
pub fn redacted(location: &str) -> String {
    match reqwest::Url::parse(location) {
        Ok(mut u) if location.contains("://") => {
            u.set_query(None);
            let _ = u.set_password(None);
            let _ = u.set_username("");
            u.to_string()
        }
        _ => location.to_string(),
    }
}

impl Location {
    /// Removes the temporary files that writes killed half-way left under `dir` (a key of this
    /// location; its prefix for all of it), where the location is a local folder (object
    /// stores replace objects atomically and leave nothing): those of dead writers of this
    /// machine, and the unattributed ones `unattributed` allows (see [`local`]). Blocking (it
    /// walks the folder); returns how many it removed.
    pub fn remove_interrupted_writes(&self, dir: &Path, unattributed: local::Unattributed<'_>) -> usize {
        if self.store_url != "file:///" {
            return 0;
        }
        // The file system path of the key (percent-encoded characters decoded).
        match object_store::local::LocalFileSystem::new().path_to_filesystem(dir) {
            Ok(root) => local::sweep(&root, unattributed),
            Err(_) => 0,
        }
    }

    /// `prefix/part/part...`
    pub fn key(&self, parts: &[&str]) -> Path {
        let mut p = self.prefix.clone();
        for part in parts {
            p = p.join(*part);
        }
        p
    }
}

fn memory_stores() -> &'static Mutex<HashMap<String, Arc<InMemory>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

/// Opens a location. Cloud options come from the environment (AWS_*, GOOGLE_*, AZURE_*).
pub fn open(location: &str) -> Result<Location, StorageError> {
    open_with(location, &BTreeMap::new())
}

/// Opens a location with explicit object_store options (`endpoint`, `region`, `allow_http`,
/// ...), which win over the same options from the environment.
pub fn open_with(location: &str, explicit: &BTreeMap<String, String>) -> Result<Location, StorageError> {
    let err = |reason: String| StorageError::Location { location: redacted(location), reason };
    if let Some(name) = location.strip_prefix("memory://") {
        let mut stores = memory_stores().lock().expect("memory stores lock");
        let store = stores.entry(name.to_string()).or_insert_with(|| Arc::new(InMemory::new())).clone();
        return Ok(Location {
            store,
            prefix: Path::default(),
            url: location.to_string(),
            store_url: format!("memory://{name}/"),
        });
    }
    let url = if location.contains("://") {
        reqwest::Url::parse(location).map_err(|e| err(e.to_string()))?
    } else {
        let path = std::path::Path::new(location);
        std::fs::create_dir_all(path).map_err(|e| err(format!("cannot create the folder: {e}")))?;
        let abs = std::fs::canonicalize(path).map_err(|e| err(e.to_string()))?;
        reqwest::Url::from_directory_path(&abs).map_err(|_| err("not an absolute path".into()))?
    };
    let mut options: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_") || k.starts_with("GOOGLE_") || k.starts_with("AZURE_"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    options.extend(explicit.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())));
    let (store, prefix) = object_store::parse_url_opts(&url, options).map_err(|e| err(e.to_string()))?;
    let store: Box<dyn ObjectStore> = if url.scheme() == "file" { Box::new(local::LocalFolder::new()) } else { store };
    let store_url = format!("{}://{}/", url.scheme(), url.host_str().unwrap_or(""));
    Ok(Location { store: Arc::from(store), prefix, url: redacted(location), store_url })
}
