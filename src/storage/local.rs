//! Local folders: object_store's `LocalFileSystem` for reads, listings and deletes, with the
//! one write path replaced so that a write killed half-way leaves a file that names its writer.
//!
//! A put writes the payload to `<key>#<writer><seq>`, then renames it over the key (overwrite)
//! or hard-links it to the key and removes it (create-only, which fails if the key exists).
//! The suffix is digits only, so object_store's listings never show the file; `<writer>` is
//! this machine's tag (8 digits: host, boot and pid namespace) and the pid (10 digits).
//!
//! A process killed between the first byte and the rename (or between the link and the
//! removal) leaves that file behind. [`sweep`] removes the ones whose writer is provably dead
//! (this machine's tag, a pid that no longer runs), so any process may sweep any folder at any
//! time without racing a live writer: the lake's shard holder sweeps the lake, the credentials
//! store its folder, the deliverer a files sink outside the lake. Temporary files it cannot
//! attribute (object_store's own `#1`, an older version of this program, another machine or
//! boot) are removed when the sweeper owns their key (`owned`, e.g. the data files of a held
//! shard) or once they are an hour old, which no live write ever is.
//!
//! Like `LocalFileSystem`, a put does not fsync: a finished put survives a killed process, not
//! a power cut.

use std::fmt;
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

use super::crash::{self, Stage};

/// How old a temporary file nobody can attribute must be before a sweep removes it.
pub const UNATTRIBUTED_AFTER: Duration = Duration::from_secs(3600);

const STORE: &str = "LocalFolder";
/// Digits of the writer part of a temporary file's suffix: machine tag (8) and pid (10).
const WRITER_DIGITS: usize = 18;

/// A local folder as an object store (see the module doc).
#[derive(Debug)]
pub struct LocalFolder {
    fs: LocalFileSystem,
}

impl LocalFolder {
    /// The whole file system; keys are absolute paths without the leading `/` (as
    /// object_store's `file://` URLs give them).
    pub fn new() -> LocalFolder {
        LocalFolder { fs: LocalFileSystem::new() }
    }
}

impl Default for LocalFolder {
    fn default() -> Self {
        LocalFolder::new()
    }
}

impl fmt::Display for LocalFolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{STORE}({})", self.fs)
    }
}

/// This machine, boot and pid namespace as 8 digits; 0 when `/proc` does not tell (then no
/// writer is ever presumed dead).
fn machine_tag() -> u32 {
    static TAG: OnceLock<u32> = OnceLock::new();
    *TAG.get_or_init(|| {
        use sha2::Digest;
        let machine = crate::lease::machine();
        if machine.contains("unknown") || !FsPath::new("/proc/self").exists() {
            return 0;
        }
        let d = sha2::Sha256::digest(machine.as_bytes());
        (u32::from_be_bytes(d[..4].try_into().expect("4 bytes")) % 99_999_999) + 1
    })
}

/// The suffix (after `#`) of this process's next temporary file.
fn next_suffix() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(1);
    format!("{:08}{:010}{}", machine_tag(), std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

fn generic(what: &str, path: &FsPath, e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic { store: STORE, source: format!("{what} '{}': {e}", path.display()).into() }
}

/// object_store's ETag for a local file (inode, mtime in microseconds, size), so a put's
/// answer matches what a later `head` says.
fn e_tag(m: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    let mtime = m.modified().ok().and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).unwrap_or_default();
    format!("{:x}-{:x}-{:x}", m.ino(), mtime.as_micros(), m.len())
}

/// Creates `path` (which must not exist), creating its parent folders when missing.
fn create_new(path: &FsPath) -> std::io::Result<std::fs::File> {
    let open = || std::fs::OpenOptions::new().write(true).create_new(true).open(path);
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            open()
        }
        other => other,
    }
}

/// The blocking part of a put: temporary file, then rename or link (see the module doc).
fn write(dest: &FsPath, key: &str, payload: PutPayload, mode: &PutMode) -> Result<PutResult> {
    let staged_path = || {
        let mut staged = dest.as_os_str().to_owned();
        staged.push("#");
        staged.push(next_suffix());
        PathBuf::from(staged)
    };
    let crash = crash::at_put(key);
    // A name left by a dead process with our pid (a container's pid 1 after a restart) is
    // skipped: the next sequence number is tried.
    let (mut file, staged) = loop {
        let staged = staged_path();
        match create_new(&staged) {
            Ok(f) => break (f, staged),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(generic("cannot create the temporary file", &staged, e)),
        }
    };
    let result = (|| {
        if crash == Some(Stage::During) {
            let bytes: Vec<u8> = payload.iter().flat_map(|c| c.iter().copied()).collect();
            file.write_all(&bytes[..bytes.len() / 2]).map_err(|e| generic("cannot write", &staged, e))?;
            crash::now(Stage::During, key);
        }
        for chunk in payload.iter() {
            file.write_all(chunk).map_err(|e| generic("cannot write", &staged, e))?;
        }
        let meta = file.metadata().map_err(|e| generic("cannot read the metadata of", &staged, e))?;
        drop(file);
        match mode {
            PutMode::Overwrite => std::fs::rename(&staged, dest).map_err(|e| generic("cannot rename over", dest, e))?,
            PutMode::Create => match std::fs::hard_link(&staged, dest) {
                Ok(()) => {
                    if crash == Some(Stage::Linked) {
                        crash::now(Stage::Linked, key);
                    }
                    let _ = std::fs::remove_file(&staged);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(object_store::Error::AlreadyExists { path: dest.display().to_string(), source: e.into() });
                }
                Err(e) => return Err(generic("cannot link", dest, e)),
            },
            PutMode::Update(_) => unreachable!("refused before the write"),
        }
        Ok(PutResult { e_tag: Some(e_tag(&meta)), version: None })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&staged);
    } else if crash == Some(Stage::After) {
        crash::now(Stage::After, key);
    }
    result
}

#[async_trait]
impl ObjectStore for LocalFolder {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        if matches!(opts.mode, PutMode::Update(_)) {
            return Err(object_store::Error::NotImplemented {
                operation: "`put_opts` with mode `PutMode::Update`".into(),
                implementer: self.to_string(),
            });
        }
        if !opts.attributes.is_empty() {
            return Err(object_store::Error::NotImplemented {
                operation: "`put_opts` with `opts.attributes` specified".into(),
                implementer: self.to_string(),
            });
        }
        let dest = self.fs.path_to_filesystem(location)?;
        let key = location.to_string();
        tokio::task::spawn_blocking(move || write(&dest, &key, payload, &opts.mode))
            .await
            .map_err(|e| object_store::Error::Generic { store: STORE, source: Box::new(e) })?
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.fs.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.fs.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[std::ops::Range<u64>]) -> Result<Vec<bytes::Bytes>> {
        self.fs.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.fs.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.fs.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.fs.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.fs.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.fs.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.fs.rename_opts(from, to, options).await
    }
}

/// Whether a temporary file's suffix names a writer of this machine that no longer runs.
fn writer_is_dead(suffix: &str) -> bool {
    let tag = machine_tag();
    if tag == 0 || suffix.len() <= WRITER_DIGITS {
        return false;
    }
    let (Ok(t), Ok(pid)) = (suffix[..8].parse::<u32>(), suffix[8..WRITER_DIGITS].parse::<u32>()) else { return false };
    t == tag && pid != std::process::id() && !crate::lease::process_exists(pid)
}

/// The key a temporary file was written for and its digits suffix, if `name` is one.
fn temporary(name: &str) -> Option<(&str, &str)> {
    let (dest, suffix) = name.rsplit_once('#')?;
    (!dest.is_empty() && !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())).then_some((dest, suffix))
}

/// Which temporary files a sweep may remove besides those of dead writers.
#[derive(Clone, Copy)]
pub enum Unattributed<'a> {
    /// Those whose key `owned` says the caller holds, and any older than
    /// [`UNATTRIBUTED_AFTER`]: for folders only this program writes (the lake, credentials).
    OwnedOrOld(&'a dyn Fn(&Path) -> bool),
    /// None: for a folder others may share (a files sink), where `name#123` may be theirs.
    Keep,
}

/// Removes the temporary files of interrupted writes under the folder `root` (see the module
/// doc): those of dead writers of this machine, and the unattributed ones `unattributed`
/// allows. Returns how many it removed. Best effort: a file it cannot read or remove is left
/// for the next sweep.
pub fn sweep(root: &FsPath, unattributed: Unattributed<'_>) -> usize {
    let mut removed = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                dirs.push(e.path());
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((dest, suffix)) = temporary(&name) else { continue };
            let remove = writer_is_dead(suffix)
                || match unattributed {
                    Unattributed::Keep => false,
                    Unattributed::OwnedOrOld(owned) => {
                        let old = e
                            .metadata()
                            .ok()
                            .and_then(|m| m.modified().ok())
                            .and_then(|t| t.elapsed().ok())
                            .is_some_and(|age| age >= UNATTRIBUTED_AFTER);
                        old || Path::from_absolute_path(dir.join(dest)).ok().as_ref().is_some_and(owned)
                    }
                };
            if remove {
                tracing::warn!(file = %e.path().display(), "removing the temporary file of an interrupted write");
                if std::fs::remove_file(e.path()).is_ok() {
                    removed += 1;
                }
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    fn key(dir: &FsPath, rel: &str) -> Path {
        Path::from_absolute_path(dir.join(rel)).unwrap()
    }

    #[tokio::test]
    async fn writes_read_back_list_cleanly_and_create_only_refuses_an_existing_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFolder::new();
        let k = key(dir.path(), "a/b/c.json");
        let put = store.put(&k, PutPayload::from_static(b"one")).await.unwrap();
        assert_eq!(put.e_tag, store.head(&k).await.unwrap().e_tag, "the put's ETag is the one a head gives");
        store.put(&k, PutPayload::from_static(b"two")).await.unwrap();
        assert_eq!(&store.get(&k).await.unwrap().bytes().await.unwrap()[..], b"two");
        let create = PutOptions { mode: PutMode::Create, ..Default::default() };
        let again = store.put_opts(&k, PutPayload::from_static(b"three"), create.clone()).await.unwrap_err();
        assert!(matches!(again, object_store::Error::AlreadyExists { .. }), "{again}");
        store.put_opts(&key(dir.path(), "a/new.json"), PutPayload::from_static(b"x"), create).await.unwrap();
        let update = PutOptions {
            mode: PutMode::Update(object_store::UpdateVersion { e_tag: None, version: None }),
            ..Default::default()
        };
        let refused = store.put_opts(&k, PutPayload::from_static(b"x"), update).await.unwrap_err();
        assert!(matches!(refused, object_store::Error::NotImplemented { .. }), "the lease relies on this: {refused}");
        // No temporary file is left by a finished or refused write.
        let names: Vec<String> =
            std::fs::read_dir(dir.path().join("a")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
        assert!(names.iter().all(|n| !n.contains('#')), "{names:?}");
    }

    #[test]
    fn a_sweep_removes_dead_writers_files_and_keeps_live_and_unattributed_ones() {
        if machine_tag() == 0 {
            return; // no /proc: nobody is ever presumed dead
        }
        let dir = tempfile::tempdir().unwrap();
        let tag = machine_tag();
        let dead = format!("{tag:08}{:010}7", 0x7fff_fffe_u32); // a pid that never runs
        let live = format!("{tag:08}{:010}7", std::process::id());
        let remote = format!("{:08}{:010}7", if tag == 1 { 2 } else { tag - 1 }, 0x7fff_fffe_u32);
        let files = [
            format!("x.json#{dead}"),
            format!("x.json#{live}"),
            format!("y.json#{remote}"),
            "part-0001.parquet#1".to_string(),
            "part-0002.parquet#1".to_string(),
            "notes#draft".to_string(),
            "plain.json".to_string(),
        ];
        for f in &files {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let owned = |k: &Path| k.filename() == Some("part-0001.parquet");
        assert_eq!(sweep(dir.path(), Unattributed::Keep), 1, "a shared folder: only the dead writer's");
        assert_eq!(sweep(dir.path(), Unattributed::OwnedOrOld(&owned)), 1);
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
        left.sort();
        let mut want = vec![
            format!("x.json#{live}"),
            format!("y.json#{remote}"),
            "part-0002.parquet#1".into(),
            "notes#draft".into(),
            "plain.json".into(),
        ];
        want.sort();
        assert_eq!(left, want);
    }
}
