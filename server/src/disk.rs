//! Disk use: a free-space floor for uploads, the optional retention of
//! finished jobs, and the clean-up of job directories that have no job.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::{AppError, AppResult, ErrorCode};
use crate::jobs::Jobs;
use crate::store::Store;
use plumbing::ms_ago;

/// Refuses an upload with `507` while `dir`'s disk has less than `floor` bytes free.
pub async fn ensure_free(dir: PathBuf, floor: u64) -> AppResult<()> {
    if floor == 0 {
        return Ok(());
    }
    let free = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        fs4::available_space(&dir)
    })
    .await
    .map_err(anyhow::Error::from)?
    .map_err(anyhow::Error::from)?;
    if free < floor {
        return Err(AppError::client(
            StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::DiskFull,
            format!("the server is low on disk space ({} MB free); try again later", free / 1_000_000),
        ));
    }
    Ok(())
}

/// Deletes finished jobs older than `retention`, every minute, until `shutdown`.
pub async fn keep_for(jobs: Arc<Jobs>, store: Store, retention: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let old = match store.finished_before(ms_ago(retention)).await {
            Ok(old) => old,
            Err(e) => {
                warn!(error = %e, "listing jobs past the retention period");
                continue;
            }
        };
        for id in old {
            match jobs.delete(&id).await {
                Ok(()) => info!(job = %id, "job deleted after the retention period"),
                Err(e) => warn!(job = %id, error = %e, "deleting a job past the retention period"),
            }
        }
    }
}

/// Removes job directories with no job row (left by a crash between
/// writing an upload and recording it) and unfinished uploads.
pub async fn remove_orphans(jobs_dir: &Path, uploads_dir: &Path, store: &Store) {
    // Uploads being received when the server stopped: none can be now.
    match tokio::fs::remove_dir_all(uploads_dir).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => warn!(error = %e, "removing unfinished uploads"),
        _ => {}
    }
    let Ok(mut entries) = tokio::fs::read_dir(jobs_dir).await else { return };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        if uuid::Uuid::parse_str(&name).is_err() {
            continue; // not ours
        }
        match store.job(&name).await {
            Ok(None) => {
                info!(job = %name, "removing the files of a job that was never recorded");
                if let Err(e) = tokio::fs::remove_dir_all(entry.path()).await {
                    warn!(job = %name, error = %e, "removing an orphan job directory");
                }
            }
            Ok(Some(_)) => {}
            Err(e) => return warn!(error = %e, "checking job directories"),
        }
    }
}

/// A byte count: digits, then optionally `B`, `KB`, `MB`, `GB`, `TB` (powers
/// of 1000) or `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024), case-insensitive.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a byte count such as 500MB or 2GiB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => return Err(format!("unknown unit {other:?}; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB")),
    };
    number.checked_mul(scale).ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_take_units() {
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("500 MB"), Ok(500_000_000));
        assert_eq!(parse_bytes("2kib"), Ok(2048));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5 parsecs").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
    }
}
