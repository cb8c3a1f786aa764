//! Receiving an upload: the file field is written to disk as it arrives,
//! never held whole in memory. Its first bytes are checked as soon as they
//! are in, so an unsupported file or an image whose header is out of bounds
//! is refused before the rest is read.

use std::path::{Path, PathBuf};

use axum::extract::multipart::{Field, MultipartError};
use axum::http::StatusCode;
use sha2::{Digest, Sha256};
use tempfile::TempPath;
use tokio::io::AsyncWriteExt;

use crate::error::{AppError, AppResult, ErrorCode};
use crate::intake::{self, Limits};

/// Bytes read before the header is checked early; enough for the header of
/// every supported format without large metadata in front of it.
const HEAD: usize = 64 * 1024;

/// An upload on disk, deleted when dropped unless moved into a job.
pub struct Upload {
    path: TempPath,
    pub len: u64,
    /// SHA-256 of the bytes, for the result cache.
    pub sha256: [u8; 32],
    /// When its last byte came in.
    pub received: std::time::Instant,
}

impl Upload {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the file to `target` (on the same disk: a rename).
    pub async fn keep_as(self, target: &Path) -> std::io::Result<PathBuf> {
        tokio::fs::rename(&self.path, target).await?;
        // Renamed: nothing is left to delete.
        let _ = self.path.keep();
        Ok(target.to_owned())
    }
}

/// The directory uploads are received in, under the data directory.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("uploads")
}

/// Writes `field` to a new file in `dir` as it arrives.
pub async fn receive(mut field: Field<'_>, dir: &Path, limits: Limits) -> AppResult<Upload> {
    tokio::fs::create_dir_all(dir).await.map_err(anyhow::Error::from)?;
    let dir = dir.to_owned();
    let (file, path) = tokio::task::spawn_blocking(move || {
        tempfile::Builder::new().prefix("upload-").suffix(".part").tempfile_in(dir).map(|f| f.into_parts())
    })
    .await
    .map_err(anyhow::Error::from)?
    .map_err(anyhow::Error::from)?;
    let mut file = tokio::fs::File::from_std(file);
    // The first bytes, until they are checked.
    let (mut head, mut len) = (Some(Vec::new()), 0u64);
    let mut hasher = Sha256::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if let Some(bytes) = &mut head {
            bytes.extend_from_slice(&chunk[..(HEAD - bytes.len()).min(chunk.len())]);
            if bytes.len() == HEAD {
                check_early(head.take().unwrap_or_default(), limits).await?;
            }
        }
        file.write_all(&chunk).await.map_err(anyhow::Error::from)?;
        hasher.update(&chunk);
        len += chunk.len() as u64;
    }
    file.flush().await.map_err(anyhow::Error::from)?;
    Ok(Upload { path, len, sha256: hasher.finalize().into(), received: std::time::Instant::now() })
}

/// A copy of a stored file as a new upload in `dir` (a job run again).
pub async fn copy(source: &Path, dir: &Path) -> AppResult<Upload> {
    let (source, dir) = (source.to_owned(), dir.to_owned());
    let copied = tokio::task::spawn_blocking(move || -> std::io::Result<Upload> {
        std::fs::create_dir_all(&dir)?;
        let (mut file, path) =
            tempfile::Builder::new().prefix("upload-").suffix(".part").tempfile_in(dir)?.into_parts();
        let mut input = std::fs::File::open(source)?;
        let (mut hasher, mut buffer, mut len) = (Sha256::new(), vec![0; 256 * 1024], 0u64);
        loop {
            let n = std::io::Read::read(&mut input, &mut buffer)?;
            if n == 0 {
                break;
            }
            std::io::Write::write_all(&mut file, &buffer[..n])?;
            hasher.update(&buffer[..n]);
            len += n as u64;
        }
        Ok(Upload { path, len, sha256: hasher.finalize().into(), received: std::time::Instant::now() })
    });
    Ok(copied.await.map_err(anyhow::Error::from)?.map_err(anyhow::Error::from)?)
}

/// Refuses an upload from its first bytes when they already say it is not
/// acceptable; a header not complete yet is checked again once all is in.
async fn check_early(head: Vec<u8>, limits: Limits) -> AppResult<()> {
    let checked =
        tokio::task::spawn_blocking(move || intake::inspect(&head, limits)).await.map_err(anyhow::Error::from)?;
    match checked {
        Err(e @ AppError::Client { code, .. })
            if [
                ErrorCode::UnsupportedFormat,
                ErrorCode::ImageTooLarge,
                ErrorCode::ImageTooSmall,
                ErrorCode::EmptyImage,
            ]
            .contains(&code) =>
        {
            Err(e)
        }
        _ => Ok(()),
    }
}

pub fn multipart_error(e: MultipartError) -> AppError {
    let status = e.status();
    let mut cause: Option<&dyn std::error::Error> = Some(&e);
    while let Some(c) = cause {
        if c.is::<tower_http::timeout::TimeoutError>() {
            let message = "the upload paused for too long and was abandoned";
            return AppError::client(StatusCode::REQUEST_TIMEOUT, ErrorCode::Timeout, message);
        }
        cause = c.source();
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::client(status, ErrorCode::TooLarge, "the upload is larger than the server accepts")
    } else {
        AppError::client(StatusCode::BAD_REQUEST, ErrorCode::BadMultipart, e.body_text())
    }
}
