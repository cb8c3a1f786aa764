//! Batches: many images submitted together (`POST /api/batches`, then each
//! upload with its id in the form's `batch` field), followed as one, their
//! results downloaded as one zip that streams from the result files, and
//! deleted together.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

use app::api::{Batch, JobStatus};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::mpsc;

use crate::error::{AppError, AppResult};
use crate::state::AppState;
use plumbing::now_ms;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/batches", post(create))
        .route("/batches/{id}", get(show).delete(remove))
        .route("/batches/{id}/results.zip", get(results_zip))
}

/// A batch id from a path or a form: a UUID of a batch that exists.
pub async fn existing(state: &AppState, id: &str) -> AppResult<(String, i64)> {
    let id = uuid::Uuid::parse_str(id.trim()).map(|u| u.to_string()).map_err(|_| AppError::not_found("batch"))?;
    let created_at = state.store.batch(&id).await?.ok_or_else(|| AppError::not_found("batch"))?;
    Ok((id, created_at))
}

/// `POST /api/batches`: a new, empty batch.
async fn create(State(state): State<AppState>) -> AppResult<(StatusCode, Json<Batch>)> {
    let (id, created_at) = (uuid::Uuid::new_v4().to_string(), now_ms());
    state.store.insert_batch(&id, created_at).await?;
    Ok((StatusCode::CREATED, Json(Batch::new(id, created_at, Vec::new()))))
}

/// `GET /api/batches/{id}`: the batch, its totals and its jobs.
async fn show(State(state): State<AppState>, Path(id): Path<String>) -> AppResult<Json<Batch>> {
    let (id, created_at) = existing(&state, &id).await?;
    let jobs = state.store.batch_jobs(&id).await?;
    Ok(Json(Batch::new(id, created_at, jobs)))
}

/// `DELETE /api/batches/{id}`: cancels its running jobs, then deletes every
/// job (rows and files) and the batch.
async fn remove(State(state): State<AppState>, Path(id): Path<String>) -> AppResult<StatusCode> {
    let (id, _) = existing(&state, &id).await?;
    for job in state.store.batch_jobs(&id).await? {
        if !job.status.is_finished() {
            state.jobs.cancel(&job.id).await?;
        }
        state.jobs.delete(&job.id).await?;
    }
    state.store.delete_batch(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/batches/{id}/results.zip`: the results of its done jobs, as
/// they are on disk (stored, not compressed again: they are PNG, JPEG or
/// WebP already), written by a blocking thread into a bounded channel, so
/// the download starts at once and the server holds at most a few chunks
/// whatever the batch's size.
async fn results_zip(State(state): State<AppState>, Path(id): Path<String>) -> AppResult<Response> {
    let (id, _) = existing(&state, &id).await?;
    let jobs = state.store.batch_jobs(&id).await?;
    let done: Vec<_> = jobs.iter().filter(|j| j.status == JobStatus::Done).collect();
    let names = entry_names(done.iter().map(|j| (j.filename.as_str(), j.output.extension())));
    let entries: Vec<(String, PathBuf)> =
        names.into_iter().zip(&done).map(|(name, job)| (name, state.jobs.result_path(&job.id, job.output))).collect();
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let failed = tx.clone();
        if let Err(e) = write_zip(entries, Chunks { tx, buffer: Vec::with_capacity(CHUNK) }) {
            // The body ends in an error: the client sees a broken download, not a short zip.
            let _ = failed.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let name = format!("attachment; filename=\"batch-{}.zip\"", &id[..8]);
    let headers = [(header::CONTENT_TYPE, "application/zip".to_owned()), (header::CONTENT_DISPOSITION, name)];
    Ok((headers, Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))).into_response())
}

/// Bytes per chunk sent to the client, and chunks buffered at most.
const CHUNK: usize = 256 * 1024;
const CHUNKS_IN_FLIGHT: usize = 4;

fn write_zip(entries: Vec<(String, PathBuf)>, out: Chunks) -> anyhow::Result<()> {
    use zip::write::SimpleFileOptions;
    let mut zip = zip::ZipWriter::new_stream(out);
    for (name, path) in entries {
        let mut file = std::fs::File::open(&path)?;
        let size = file.metadata()?.len();
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(size >= u64::from(u32::MAX));
        zip.start_file(name, options)?;
        std::io::copy(&mut file, &mut zip)?;
    }
    let mut out = zip.finish()?;
    out.flush()?;
    Ok(())
}

/// A writer that sends what it is given to the response body in chunks,
/// waiting while the client is slow (backpressure), failing once it is gone.
struct Chunks {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buffer: Vec<u8>,
}

impl Chunks {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| std::io::ErrorKind::BrokenPipe.into())
    }
}

impl Write for Chunks {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = bytes.len().min(CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&bytes[..n]);
        if self.buffer.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Each result's name in the zip: the upload's name with the result's
/// extension, made safe (no directories, no control characters), and made
/// unique by a number where two would clash.
fn entry_names<'a>(jobs: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    let mut taken = BTreeSet::new();
    jobs.map(|(filename, extension)| {
        let base = filename.rsplit(['/', '\\']).next().unwrap_or_default();
        let stem = base.rsplit_once('.').map_or(base, |(stem, _)| stem);
        let stem: String = stem.chars().filter(|c| !c.is_control()).collect();
        let stem = if stem.trim_matches('.').is_empty() { "image".to_owned() } else { stem };
        let mut name = format!("{stem}.{extension}");
        let mut n = 1;
        while !taken.insert(name.clone()) {
            n += 1;
            name = format!("{stem} ({n}).{extension}");
        }
        name
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zip_entries_are_safe_and_unique() {
        let names = entry_names(
            [("a.png", "png"), ("a.jpg", "png"), ("../../etc/passwd", "png"), ("..", "jpg"), ("x\ny.tif", "png")]
                .into_iter(),
        );
        assert_eq!(names, ["a.png", "a (2).png", "passwd.png", "image.jpg", "xy.png"]);
    }
}
