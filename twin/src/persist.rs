//! Persistence helpers: state snapshots written atomically (temp file + rename) so a crash mid-write
//! never leaves a truncated file, and read back on the next start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

/// Errors reading or writing a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The snapshot file could not be written.
    #[error("failed to write snapshot {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The snapshot file exists but could not be read.
    #[error("failed to read snapshot {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The snapshot is not valid JSON for the state.
    #[error("failed to decode snapshot {path}: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The state could not be encoded.
    #[error("failed to encode snapshot: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Writes `value` as JSON to `path` atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let bytes = serde_json::to_vec(value).map_err(Error::Encode)?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Reads a JSON snapshot; `Ok(None)` when the file does not exist yet.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::Decode {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A background writer: callers `mark_dirty()` after each change; the writer coalesces changes
/// for `delay` and then writes one snapshot produced by `snapshot`, so a burst of writes costs one
/// file write.
#[derive(Debug, Clone)]
pub struct Persister {
    dirty: Arc<Notify>,
}

impl Persister {
    /// Spawns the writer task. `snapshot` returns the bytes to write (taken under the caller's lock).
    pub fn spawn(
        path: PathBuf,
        delay: Duration,
        snapshot: impl Fn() -> Result<Vec<u8>, Error> + Send + 'static,
    ) -> (Persister, tokio::task::JoinHandle<()>) {
        let dirty = Arc::new(Notify::new());
        let wake = dirty.clone();
        let task = tokio::spawn(async move {
            loop {
                wake.notified().await;
                tokio::time::sleep(delay).await;
                match snapshot().and_then(|bytes| write_atomic(&path, &bytes)) {
                    Ok(()) => {}
                    Err(e) => tracing::warn!(error = %e, "twin state snapshot failed"),
                }
            }
        });
        (Persister { dirty }, task)
    }

    /// Schedules a snapshot.
    pub fn mark_dirty(&self) {
        self.dirty.notify_one();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_and_missing_file_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("state.json");
        assert!(read_json::<Vec<u32>>(&path).unwrap().is_none());
        write_json(&path, &vec![1u32, 2, 3]).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), Some(vec![1, 2, 3]));
    }
}
