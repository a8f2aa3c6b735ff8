//! Staging: harmonized batches wait in a local folder per run (zstd-compressed Arrow IPC,
//! already cut by partition), so a run's memory stays bounded whatever the cohort size; a
//! checkpoint commits them one partition at a time ([`super::Lake::commit_staged`]) and empties
//! the folder. The folder is removed when the staging area is dropped, and the folders of
//! runs whose process died are removed by the next run on the machine.
//!
//! Slices are buffered in memory per (table, partition) and spilled together, one file per
//! partition per spill, when the buffer passes [`Staging::MEMORY`]: a backfill stages one
//! slice per user, day and table, and a file each would be hundreds of thousands of files.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::ipc::CompressionType;
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::{FileWriter, IpcWriteOptions};

use super::{Coverage, LakeError, Partition, TableId, Unit, split};

/// Where one staged slice is: spilled (file, batch index) or still in memory.
#[derive(Debug)]
enum Slice {
    Spilled { path: PathBuf, index: usize, coverage: Coverage, capture: bool },
    Held { batch: RecordBatch, coverage: Coverage, capture: bool },
}

/// A run's staging folder and what it holds.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    slices: BTreeMap<(TableId, Partition), Vec<Slice>>,
    files: usize,
    /// Bytes of the spilled files.
    spilled: u64,
    /// Arrow memory of the slices still held.
    held: usize,
}

fn io(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> LakeError {
    LakeError::Staging { path: path.display().to_string(), reason: e.to_string(), source: Some(Box::new(e)) }
}

fn refused(path: &Path, reason: String) -> LakeError {
    LakeError::Staging { path: path.display().to_string(), reason, source: None }
}

/// This machine, boot and pid namespace, as 8 hex digits (staging folder names carry it).
fn machine_tag() -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(crate::lease::machine().as_bytes())[..4])
}

/// This process's effective user id (0 where there is none).
fn uid() -> u32 {
    #[cfg(unix)]
    {
        // SAFETY: geteuid(2) cannot fail and touches no memory.
        unsafe { libc::geteuid() }
    }
    #[cfg(not(unix))]
    {
        0
    }
}

/// Creates `dir` 0700 (`fresh`: it must not exist yet), or checks that the existing one is a
/// real folder of this user that nobody else can enter.
fn private_dir(dir: &Path, fresh: bool) -> Result<(), LakeError> {
    let mut b = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    match b.create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && !fresh => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !fresh => {
            std::fs::create_dir_all(dir.parent().unwrap_or(dir)).map_err(|e| io(dir, e))?;
            return b.create(dir).map_err(|e| io(dir, e));
        }
        Err(e) => return Err(io(dir, e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| io(dir, e))?;
    if !meta.is_dir() {
        return Err(refused(dir, "exists and is not a folder (a symlink is refused)".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if meta.uid() != uid() {
            return Err(refused(
                dir,
                format!("belongs to user {} (not this one): refusing to stage health data there", meta.uid()),
            ));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(refused(dir, format!("is open to other users (mode {mode:04o}): `chmod 700` it or remove it")));
        }
    }
    Ok(())
}

/// Removes the staging folders (`<run>-<machine>-<pid>`) that processes of this machine,
/// boot and pid namespace left when they died (a killed job), where `/proc` can tell.
fn remove_orphans(base: &Path) {
    if !Path::new("/proc/self").exists() || crate::lease::machine().contains("unknown") {
        return;
    }
    let Ok(entries) = std::fs::read_dir(base) else { return };
    let tag = machine_tag();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let mut parts = name.rsplitn(3, '-');
        let (Some(pid), Some(machine)) = (parts.next().and_then(|p| p.parse::<u32>().ok()), parts.next()) else { continue };
        if machine == tag && pid != std::process::id() && !crate::lease::process_exists(pid) {
            tracing::info!(folder = %e.path().display(), "removing the staging folder of a run that did not finish");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Staging {
    /// Slices held in memory before they are spilled to disk.
    pub const MEMORY: usize = 64 * 1024 * 1024;

    /// A fresh private folder `<root>/withings-lake-staging-<uid>/<run_id>-<machine>-<pid>`
    /// (root: `staging_dir`, else `$TMPDIR` or the system's temporary folder). Staged batches are
    /// health data: both folders are 0700, the run's is created new (never reused), and a base
    /// folder that is a symlink, belongs to another user or lets others in is refused.
    pub fn new(root: Option<&Path>, run_id: &str) -> Result<Staging, LakeError> {
        let root = root.map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
        let base = root.join(format!("withings-lake-staging-{}", uid()));
        private_dir(&base, false)?;
        remove_orphans(&base);
        let dir = base.join(format!("{run_id}-{}-{}", machine_tag(), std::process::id()));
        private_dir(&dir, true)?;
        Ok(Staging { dir, slices: BTreeMap::new(), files: 0, spilled: 0, held: 0 })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes staged since the last commit (spilled files, plus memory still held).
    pub fn bytes(&self) -> u64 {
        self.spilled + self.held as u64
    }

    pub fn is_empty(&self) -> bool {
        self.slices.is_empty()
    }

    /// Stages a unit, cut by partition; spills when the memory buffer is full.
    pub fn stage(&mut self, unit: &Unit) -> Result<(), LakeError> {
        self.stage_capturing(unit, false)
    }

    /// Stages a unit whose changes, when `capture` is set, the commit returns for change
    /// events ([`super::Lake::commit_staged`]).
    pub fn stage_capturing(&mut self, unit: &Unit, capture: bool) -> Result<(), LakeError> {
        for (partition, rows) in split(unit)? {
            self.held += rows.get_array_memory_size();
            self.slices.entry((unit.table, partition)).or_default().push(Slice::Held {
                batch: rows,
                coverage: unit.coverage.clone(),
                capture,
            });
        }
        if self.held > Self::MEMORY {
            self.spill()?;
        }
        Ok(())
    }

    /// Writes every held slice to disk: one compressed file per partition.
    pub fn spill(&mut self) -> Result<(), LakeError> {
        let options =
            IpcWriteOptions::default().try_with_compression(Some(CompressionType::ZSTD)).map_err(|e| io(&self.dir, e))?;
        for slices in self.slices.values_mut() {
            if !slices.iter().any(|s| matches!(s, Slice::Held { .. })) {
                continue;
            }
            self.files += 1;
            let path = self.dir.join(format!("{:08}.arrow", self.files));
            // Buffered: the IPC writer issues a write per buffer of every column (hundreds of
            // small writes per batch), the buffer turns them into a few large ones.
            let mut file = Some(std::io::BufWriter::with_capacity(1 << 20, File::create(&path).map_err(|e| io(&path, e))?));
            let mut writer: Option<FileWriter<std::io::BufWriter<File>>> = None;
            let mut index = 0;
            for s in slices.iter_mut() {
                let Slice::Held { batch, coverage, capture } = s else { continue };
                let w = match &mut writer {
                    Some(w) => w,
                    None => writer.insert(
                        FileWriter::try_new_with_options(
                            file.take().expect("one writer per file"),
                            &batch.schema(),
                            options.clone(),
                        )
                        .map_err(|e| io(&path, e))?,
                    ),
                };
                w.write(batch).map_err(|e| io(&path, e))?;
                *s = Slice::Spilled { path: path.clone(), index, coverage: coverage.clone(), capture: *capture };
                index += 1;
            }
            if let Some(mut w) = writer {
                w.finish().map_err(|e| io(&path, e))?;
                let mut buffered = w.into_inner().map_err(|e| io(&path, e))?;
                std::io::Write::flush(&mut buffered).map_err(|e| io(&path, e))?;
            }
            self.spilled += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        }
        self.held = 0;
        Ok(())
    }

    /// The (table, partition) pairs staged, in commit order.
    pub(crate) fn partitions(&self) -> Vec<(TableId, Partition)> {
        self.slices.keys().cloned().collect()
    }

    /// The staged slices of one partition, in staging order, with their capture flags.
    pub(crate) fn load(&self, key: &(TableId, Partition)) -> Result<Vec<(RecordBatch, Coverage, bool)>, LakeError> {
        let mut out = Vec::new();
        let mut open: Option<(PathBuf, Vec<RecordBatch>)> = None;
        for s in self.slices.get(key).into_iter().flatten() {
            match s {
                Slice::Held { batch, coverage, capture } => out.push((batch.clone(), coverage.clone(), *capture)),
                Slice::Spilled { path, index, coverage, capture } => {
                    if open.as_ref().is_none_or(|(p, _)| p != path) {
                        let file = File::open(path).map_err(|e| io(path, e))?;
                        let reader = FileReader::try_new(file, None).map_err(|e| io(path, e))?;
                        let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| io(path, e))?;
                        open = Some((path.clone(), batches));
                    }
                    let (_, batches) = open.as_ref().expect("opened above");
                    let batch = batches.get(*index).ok_or_else(|| refused(path, format!("batch {index} is missing")))?;
                    out.push((batch.clone(), coverage.clone(), *capture));
                }
            }
        }
        Ok(out)
    }

    /// Forgets and deletes everything staged (after a commit).
    pub fn clear(&mut self) {
        let mut paths: Vec<&PathBuf> = self
            .slices
            .values()
            .flatten()
            .filter_map(|s| match s {
                Slice::Spilled { path, .. } => Some(path),
                Slice::Held { .. } => None,
            })
            .collect();
        paths.dedup();
        for p in paths {
            let _ = std::fs::remove_file(p);
        }
        self.slices.clear();
        self.spilled = 0;
        self.held = 0;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn staging_folders_are_private_fresh_and_ours() {
        let root = tempfile::tempdir().unwrap();
        let s = Staging::new(Some(root.path()), "run-a").unwrap();
        assert_eq!(mode(s.dir()), 0o700);
        assert_eq!(mode(s.dir().parent().unwrap()), 0o700);
        // A run's folder is never reused.
        assert!(Staging::new(Some(root.path()), "run-a").is_err());

        // A base folder others can enter is refused, and so is a symlink in its place.
        let open = tempfile::tempdir().unwrap();
        let base = open.path().join(format!("withings-lake-staging-{}", uid()));
        std::fs::create_dir(&base).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Staging::new(Some(open.path()), "run-b").unwrap_err().to_string();
        assert!(e.contains("open to other users"), "{e}");
        let linked = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), linked.path().join(format!("withings-lake-staging-{}", uid()))).unwrap();
        let e = Staging::new(Some(linked.path()), "run-c").unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
    }
}
