//! A new job: a checked upload recorded and started, or answered at once
//! from the result cache.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use app::api::{Event, Job, Output};
use pipeline::{Operation, TileGrid};
use plumbing::now_ms;
use tokio::sync::oneshot;
use tracing::info;

use super::{Jobs, Start};
use crate::admission::Reservation;
use crate::intake::{ImageInfo, Source};
use crate::store::NewJob;

/// A checked upload and what to do with it.
pub struct Submission {
    pub file: crate::upload::Upload,
    /// As shown: control characters removed, at most 200 of them.
    pub filename: String,
    pub info: ImageInfo,
    pub ops: Vec<Operation>,
    pub output: Output,
    /// See [`crate::cache::key`].
    pub cache_key: String,
    /// Its share of the memory budget, held while it runs.
    pub memory: Option<Reservation>,
    /// The batch it belongs to (checked to exist).
    pub batch_id: Option<String>,
}

impl Jobs {
    /// Records a checked upload as a new job and starts it in the background.
    pub async fn submit(
        self: &Arc<Self>,
        request: Submission,
        decoded: (Source, Duration),
    ) -> anyhow::Result<(Job, Option<oneshot::Receiver<Result<(), crate::error::AppError>>>)> {
        let Submission { file, filename, info, ops, output, cache_key, memory, batch_id } = request;
        let id = uuid::Uuid::new_v4().to_string();
        let dir = self.settings.jobs_dir.join(&id);
        tokio::fs::create_dir_all(&dir).await?;
        let input = dir.join(format!("input.{}", info.format.extensions_str()[0]));
        let grid = TileGrid::new(info.width, info.height, self.settings.tile_size);
        let (input_bytes, received_at) = (file.len, file.received);
        let recorded = async {
            file.keep_as(&input).await.with_context(|| format!("moving the upload to {}", input.display()))?;
            self.store
                .insert_job(&NewJob {
                    id: &id,
                    filename: &filename,
                    width: info.width,
                    height: info.height,
                    tile_size: self.settings.tile_size,
                    ops: &ops,
                    tiles_total: grid.len(),
                    input_bytes,
                    created_at: now_ms(),
                    output,
                    cache_key: Some(&cache_key),
                    batch_id: batch_id.as_deref(),
                })
                .await?;
            anyhow::Ok(())
        };
        if let Err(e) = recorded.await {
            // No file without its row (a full disk, a failed insert).
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(e);
        }
        let job = self.store.job(&id).await?.context("job just inserted")?;
        self.metrics.upload_bytes.inc_by(input_bytes);
        self.events.emit(Event::Job(job.clone()));
        info!(job = %id, width = info.width, height = info.height, tiles = grid.len(), "job accepted");

        // A JPEG's scan is read while its tiles are cut, a PNG's rows while
        // they are sent, after this returns: the caller hears whether it decoded.
        let (verdict, scan) = match decoded.0 {
            Source::Jpeg(_) | Source::Rows { .. } => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            Source::Pixels(_) => (None, None),
        };
        let (source, read_time) = decoded;
        let fresh = Start::Fresh { source, read_time, verdict, memory, received_at };
        let this = Arc::clone(self);
        tokio::spawn(async move { this.run(&id, fresh).await });
        Ok((job, scan))
    }

    /// Records a job whose result `source` already has (see [`crate::cache`]):
    /// done at once, sharing that file, without the broker. Hands the upload
    /// back when the source's result is gone (deleted meanwhile): the job
    /// must run.
    pub async fn answer_from_cache(
        &self,
        request: Submission,
        source: &Job,
    ) -> anyhow::Result<Result<Job, Submission>> {
        let id = uuid::Uuid::new_v4().to_string();
        let dir = self.settings.jobs_dir.join(&id);
        tokio::fs::create_dir_all(&dir).await?;
        let (from, to) = (self.result_path(&source.id, source.output), self.result_path(&id, source.output));
        let recorded = match crate::cache::share(&from, &to).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = tokio::fs::remove_dir_all(&dir).await;
                return Ok(Err(request));
            }
            Err(e) => Err(anyhow::Error::new(e).context("sharing the cached result")),
            Ok(()) => {
                let input = dir.join(format!("input.{}", request.info.format.extensions_str()[0]));
                let job = NewJob {
                    id: &id,
                    filename: &request.filename,
                    width: source.width,
                    height: source.height,
                    tile_size: source.tile_size,
                    ops: &source.ops,
                    tiles_total: source.tiles_total,
                    input_bytes: request.file.len,
                    created_at: now_ms(),
                    output: source.output,
                    cache_key: Some(&request.cache_key),
                    batch_id: request.batch_id.as_deref(),
                };
                async {
                    request.file.keep_as(&input).await.context("moving the upload")?;
                    self.store.insert_cached_job(&job, &source.id).await?;
                    anyhow::Ok(())
                }
                .await
            }
        };
        if let Err(e) = recorded {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(e);
        }
        let job = self.store.job(&id).await?.context("job just inserted")?;
        self.metrics.cache_hits.inc();
        self.events.emit(Event::Job(job.clone()));
        info!(job = %id, source = %source.id, "job answered from the result cache");
        Ok(Ok(job))
    }
}
