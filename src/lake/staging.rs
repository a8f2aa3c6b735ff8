//! Staging: harmonized batches spill to a local folder per run (Arrow IPC files, already cut
//! by partition), so a run's memory stays bounded whatever the cohort size; a checkpoint
//! commits them one partition at a time ([`super::Lake::commit_staged`]) and empties the
//! folder. The folder is removed when the staging area is dropped.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;

use super::{Coverage, LakeError, Partition, TableId, Unit, split};

/// A run's staging folder and what it holds.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    slices: BTreeMap<(TableId, Partition), Vec<(PathBuf, Coverage)>>,
    files: usize,
    bytes: u64,
}

fn io(path: &Path, e: impl std::fmt::Display) -> LakeError {
    LakeError::Staging { path: path.display().to_string(), reason: e.to_string() }
}

impl Staging {
    /// A fresh folder `<root>/withings-lake-staging/<run_id>-<pid>` (root: the system's
    /// temporary folder unless given).
    pub fn new(root: Option<&Path>, run_id: &str) -> Result<Staging, LakeError> {
        let base = root.map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir).join("withings-lake-staging");
        let dir = base.join(format!("{run_id}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        Ok(Staging { dir, slices: BTreeMap::new(), files: 0, bytes: 0 })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes staged since the last commit.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.slices.is_empty()
    }

    /// Spills a unit to disk, cut by partition.
    pub fn stage(&mut self, unit: &Unit) -> Result<(), LakeError> {
        for (partition, rows) in split(unit)? {
            self.files += 1;
            let path = self.dir.join(format!("{:08}.arrow", self.files));
            let file = File::create(&path).map_err(|e| io(&path, e))?;
            let mut w = FileWriter::try_new(file, &rows.schema()).map_err(|e| io(&path, e))?;
            w.write(&rows).map_err(|e| io(&path, e))?;
            w.finish().map_err(|e| io(&path, e))?;
            self.bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            self.slices.entry((unit.table, partition)).or_default().push((path, unit.coverage.clone()));
        }
        Ok(())
    }

    /// The (table, partition) pairs staged, in commit order.
    pub(crate) fn partitions(&self) -> Vec<(TableId, Partition)> {
        self.slices.keys().cloned().collect()
    }

    /// The staged slices of one partition, in staging order.
    pub(crate) fn load(&self, key: &(TableId, Partition)) -> Result<Vec<(RecordBatch, Coverage)>, LakeError> {
        let mut out = Vec::new();
        for (path, coverage) in self.slices.get(key).into_iter().flatten() {
            let file = File::open(path).map_err(|e| io(path, e))?;
            let reader = FileReader::try_new(file, None).map_err(|e| io(path, e))?;
            for batch in reader {
                out.push((batch.map_err(|e| io(path, e))?, coverage.clone()));
            }
        }
        Ok(out)
    }

    /// Forgets and deletes everything staged (after a commit).
    pub fn clear(&mut self) {
        for (path, _) in self.slices.values().flatten() {
            let _ = std::fs::remove_file(path);
        }
        self.slices.clear();
        self.bytes = 0;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
