//! A job's end: its result written once every tile is done, or the job
//! cancelled, failed or deleted, its files and tiles removed with it.

use std::time::{Duration, Instant};

use app::api::{Event, JobStatus};
use pipeline::wire::Control;
use plumbing::now_ms;
use rdkafka::producer::FutureRecord;
use tracing::{info, warn};

use super::active::Finishing;
use super::{Jobs, done_tiles_file, streamed_result};

/// How long a job whose result could not be written waits to try again.
const FINISH_RETRY: Duration = Duration::from_secs(5);

impl Jobs {
    /// Assembles a job whose tiles are all done. Taken out of the active map
    /// first, so results still arriving change nothing (tile files are
    /// replaced atomically anyway). If the result cannot be written (a full
    /// disk), the job stays running with its tiles and tries again later,
    /// unless it is cancelled meanwhile.
    pub(super) async fn finish(&self, id: &str) {
        let encode_started = Instant::now();
        let (active, clock) = loop {
            let Some(active) = self.active.lock().expect("lock").remove(id) else {
                return;
            };
            let finishing = active.lock().expect("lock").finishing();
            let clock = finishing.clock;
            match self.write_result(id, finishing).await {
                Ok(()) => break (active, clock),
                Err(e) => {
                    let retry = FINISH_RETRY.as_secs();
                    warn!(job = %id, error = %e, "writing the result failed; trying again in {retry}s");
                    self.active.lock().expect("lock").insert(id.to_owned(), active);
                    tokio::time::sleep(FINISH_RETRY).await;
                }
            }
        };
        drop(active); // the input is no longer needed
        if let Err(e) = self.store.set_stages(id, &clock.stages(encode_started)).await {
            warn!(job = %id, error = %e, "recording stage times");
        }
        match self.store.finish_job(id, JobStatus::Done, None, now_ms()).await {
            Ok(true) => {
                info!(job = %id, "job done");
                self.remove_tiles(id).await;
                self.emit_job(id).await;
            }
            Ok(false) => {} // cancelled meanwhile
            Err(e) => warn!(job = %id, error = %e, "marking job done"),
        }
    }

    /// Puts the job's result in place: the one encoded while the results
    /// arrived, most of the time; written now from the tiles otherwise (a
    /// WebP, a resumed job, a failed encoder).
    pub(super) async fn write_result(
        &self,
        id: &str,
        Finishing { shape, encoder, .. }: Finishing,
    ) -> anyhow::Result<()> {
        let path = self.result_path(id, shape.output);
        let tiles_dir = self.tiles_dir(id);
        let streamed = match encoder {
            Some(encoder) => match encoder.await {
                Ok(Ok(())) => tokio::fs::rename(streamed_result(&tiles_dir), &path).await.is_ok(),
                Ok(Err(e)) => {
                    warn!(job = %id, error = %e, "encoding the result as the tiles arrived failed; writing it now");
                    false
                }
                Err(_) => false,
            },
            None => false,
        };
        if streamed {
            return Ok(());
        }
        // Write then rename: a reader never sees half a file.
        let partial = path.with_extension("partial");
        let target = partial.clone();
        let placed: anyhow::Result<()> = async {
            tokio::task::spawn_blocking(move || {
                let done = done_tiles_file(&tiles_dir);
                let tiles = crate::assemble::Tiles::new(shape.grid, shape.channels, &done, None);
                crate::assemble::write(shape.output, &tiles, &target)
            })
            .await??;
            Ok(tokio::fs::rename(&partial, &path).await?)
        }
        .await;
        if placed.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        placed
    }

    /// Stops an unfinished job: its unsent tiles are not sent and results
    /// still in flight are ignored. False if it had already finished.
    pub async fn cancel(&self, id: &str) -> anyhow::Result<bool> {
        let cancelled = self.store.finish_job(id, JobStatus::Cancelled, None, now_ms()).await?;
        if cancelled {
            self.active.lock().expect("lock").remove(id);
            info!(job = %id, "job cancelled");
            self.announce_stopped(id).await;
            self.remove_tiles(id).await;
            self.emit_job(id).await;
        }
        Ok(cancelled)
    }

    /// Removes a finished job's rows and files together.
    pub async fn delete(&self, id: &str) -> anyhow::Result<()> {
        self.store.delete_job(id).await?;
        match tokio::fs::remove_dir_all(self.settings.jobs_dir.join(id)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        self.events.emit(Event::JobDeleted(id.to_owned()));
        Ok(())
    }

    pub(super) async fn fail(&self, id: &str, reason: &str) {
        self.active.lock().expect("lock").remove(id);
        match self.store.finish_job(id, JobStatus::Failed, Some(reason), now_ms()).await {
            Ok(true) => {
                warn!(job = %id, reason, "job failed");
                self.announce_stopped(id).await;
                self.remove_tiles(id).await;
            }
            Ok(false) => {}
            Err(e) => warn!(job = %id, error = %e, "marking job failed"),
        }
        self.emit_job(id).await;
    }

    /// Tells the workers to skip the job's remaining tiles. Best effort: a
    /// worker that misses it processes tiles whose results are ignored.
    pub(super) async fn announce_stopped(&self, id: &str) {
        let payload = Control::JobStopped { job_id: id.to_owned() }.encode();
        let record = FutureRecord::to(&self.topics.control).key(id).payload(&payload);
        if let Err((e, _)) = self.producer.send(record, Duration::from_secs(10)).await {
            warn!(job = %id, error = %e, "announcing a stopped job");
        }
    }

    /// A finished job's tiles are in its result (or no longer wanted).
    pub(super) async fn remove_tiles(&self, id: &str) {
        match tokio::fs::remove_dir_all(self.tiles_dir(id)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                warn!(job = %id, error = %e, "removing tile files")
            }
            _ => {}
        }
    }
}
