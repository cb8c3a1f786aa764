//! Workers' replies: finished tiles are stored and assembled, failed ones retried.
//!
//! Every reply is hostile until checked: its header is parsed and checked
//! against the job (grid, rect, channels) before its pixels are decoded, so
//! a forged result costs at most one tile's decode.

use std::sync::Arc;
use std::time::Duration;

use app::api::{Event, Output, TileDone, TileFailed};
use pipeline::TileGrid;
use pipeline::codec::Encoding;
use pipeline::wire::{RawReply, ResultHeader, TileFailure};
use plumbing::kafka::LoggedConsumer;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use plumbing::now_ms;

use super::Jobs;
use super::active::{Shape, Shared};
use crate::done_tiles::{Form, append};

/// Times a result is offered to the store before it is parked, so that one
/// result that cannot be stored does not hold up every other job's.
const STORE_TRIES: u32 = 5;

impl Jobs {
    /// Consumes replies until `shutdown`. A reply's offset is stored only once
    /// its effect is durable (or it is parked), so a crash replays it rather
    /// than losing it.
    pub async fn collect_results(self: Arc<Self>, consumer: LoggedConsumer, shutdown: CancellationToken) {
        let consumer = Arc::new(consumer);
        let paused = self.metrics.results_paused.clone();
        let pauser =
            crate::kafka::pause_while_idle(Arc::clone(&consumer), self.window.busy(), paused, shutdown.clone());
        let pauser = tokio::spawn(pauser);
        self.collect(&consumer, &shutdown).await;
        // Both end on shutdown; the consumer closes once neither holds it.
        let _ = pauser.await;
        tokio::task::spawn_blocking(move || drop(consumer));
    }

    async fn collect(self: &Arc<Self>, consumer: &LoggedConsumer, shutdown: &CancellationToken) {
        while let Some(message) = crate::kafka::next_message(consumer, shutdown, "results").await {
            let arrival = Arrival { at: now_ms(), bytes: message.payload_len() };
            self.metrics.result_bytes.inc_by(arrival.bytes as u64);
            match RawReply::parse(message.payload().unwrap_or_default()) {
                Ok(RawReply::Done(header, pixels)) => {
                    let mut tries = 1;
                    while let Err(e) = self.accept(&header, pixels, arrival).await {
                        let h = &header;
                        if tries == STORE_TRIES {
                            warn!(error = %e, job = %h.job_id, tile = h.tile, "a result cannot be stored; parked");
                            self.park(&message, &format!("storing the result failed: {e:#}")).await;
                            break;
                        }
                        warn!(error = %e, job = %h.job_id, tile = h.tile, "recording a result failed; retrying");
                        tries += 1;
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
                Ok(RawReply::Failed(failure)) => self.reject(failure),
                Err(e) => warn!(error = %e, offset = message.offset(), "skipping a malformed reply"),
            }
            if let Err(e) = consumer.store_offset_from_message(&message) {
                warn!(error = %e, "storing result offset");
            }
        }
    }

    /// Stores a finished tile on disk and in SQLite, then counts it done.
    /// Duplicates, results for stopped or unknown jobs and results that do
    /// not fit their job change nothing; an error means the store failed.
    async fn accept(self: &Arc<Self>, h: &ResultHeader, pixels: &[u8], arrival: Arrival) -> anyhow::Result<()> {
        let active = self.get(&h.job_id);
        let Some((shape, attempts)) = self.expected(active.as_ref(), h).await? else { return Ok(()) };
        if shape.grid.tile(h.tile) != Some(h.rect) || h.channels != shape.channels {
            warn!(job = %h.job_id, tile = h.tile, "result does not match the job's grid or channels; ignored");
            return Ok(());
        }
        if !self.keep_pixels(h, pixels, shape.output).await? {
            return Ok(());
        }
        let job =
            self.store.complete_tile(&h.job_id, h.tile, &h.worker_id, h.elapsed_ms, arrival.bytes, arrival.at).await?;

        // A job being resumed may have been registered meanwhile (it counts
        // tiles stored before it was; this one may have come after).
        let complete =
            active.or_else(|| self.get(&h.job_id)).is_some_and(|a| a.lock().expect("lock").count_done(h.tile));
        if let Some(job) = job {
            self.metrics.observe_tile(h.elapsed_ms);
            self.events.emit(Event::Tile(TileDone {
                job_id: h.job_id.clone(),
                tile: h.tile,
                worker_id: h.worker_id.clone(),
                elapsed_ms: h.elapsed_ms,
                done_at: arrival.at,
                attempts,
                result_bytes: arrival.bytes as u64,
            }));
            self.events.emit(Event::Job(job));
        }
        if complete {
            let (this, id) = (Arc::clone(self), h.job_id.clone());
            tokio::spawn(async move { this.finish(&id).await });
        }
        Ok(())
    }

    /// What a result for `h`'s tile must be, and the attempts the tile took;
    /// `None` if no result is wanted (a duplicate, a stopped or unknown job).
    async fn expected(&self, active: Option<&Shared>, h: &ResultHeader) -> anyhow::Result<Option<(Shape, u32)>> {
        if let Some(a) = active {
            let a = a.lock().expect("lock");
            return Ok(a.wants(h.tile).map(|attempts| (a.shape(), attempts)));
        }
        // Not registered (yet): keep it if the job is running, e.g. still
        // being resumed after a restart (which checks each stored tile
        // against the input's channels).
        Ok(match self.store.job(&h.job_id).await? {
            Some(job) if !job.status.is_finished() => {
                let grid = TileGrid::new(job.width, job.height, job.tile_size);
                Some((Shape { grid, channels: h.channels, output: job.output }, 1))
            }
            _ => None,
        })
    }

    /// Checks a result's pixels off the async threads (a PNG result takes
    /// about a millisecond to decode, a JPEG one a fraction of that to read
    /// through), then appends them as they came to the job's done tiles: a
    /// PNG is a fifth of the raw bytes to write now and read back, a JPEG is
    /// joined into the result as it is. False if they are unreadable (the
    /// result is ignored). Results are stored one at a time (the collect
    /// loop awaits each), so the file has one writer.
    async fn keep_pixels(&self, h: &ResultHeader, pixels: &[u8], output: Output) -> anyhow::Result<bool> {
        let (header, payload, path) = (h.clone(), pixels.to_vec(), self.done_tiles_path(&h.job_id));
        // One hop to the blocking pool: the check is CPU, the append is I/O.
        // Unreadable pixels are the worker's fault (`Ok(Err)`); a tile that
        // cannot be stored is ours (`Err`), and parks the reply.
        let kept = tokio::task::spawn_blocking(move || -> std::io::Result<anyhow::Result<()>> {
            let stored = match check(&header, payload, output) {
                Ok(stored) => stored,
                Err(e) => return Ok(Err(e)),
            };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            append(&path, header.tile, stored.form, &stored.bytes).map(Ok)
        });
        if let Err(e) = kept.await?? {
            warn!(job = %h.job_id, tile = h.tile, worker = %h.worker_id, error = %e, "unreadable result pixels; ignored");
            return Ok(false);
        }
        Ok(true)
    }

    /// A worker could not process a tile: send it again, or give up on it.
    /// Only a report of the tile's latest sending counts: a late one about an
    /// earlier attempt (already sent again) would spend an attempt twice.
    fn reject(self: &Arc<Self>, failure: TileFailure) {
        let TileFailure { job_id, tile, worker_id, error, attempt, unsupported } = failure;
        let Some(active) = self.get(&job_id) else { return };
        if !active.lock().expect("lock").answers_latest(tile, attempt) {
            return;
        }
        warn!(job = %job_id, tile, worker = %worker_id, error = %error, "a worker failed a tile");
        self.metrics.tiles_failed.inc();
        self.events.emit(Event::TileFailed(TileFailed {
            job_id: job_id.clone(),
            tile,
            worker_id: worker_id.clone(),
            error: error.clone(),
            at: now_ms(),
        }));
        let this = Arc::clone(self);
        let reason = format!("{worker_id}: {error}");
        let Some(op) = unsupported else {
            tokio::spawn(async move { this.retry(&job_id, tile, &reason).await });
            return;
        };
        // The worker behind that partition cannot run the job: send the tile
        // elsewhere without spending an attempt, unless no partition is left.
        let Some(declined) = active.lock().expect("lock").bounce(tile) else { return };
        let everywhere = declined >= self.window.partitions();
        tokio::spawn(async move {
            if everywhere {
                let partitions = this.window.partitions();
                let why = format!(
                    "no worker can run this job: the workers on all {partitions} task partitions said they do not support {op}"
                );
                this.fail(&job_id, &why).await;
            } else {
                this.retry(&job_id, tile, &reason).await;
            }
        });
    }

    /// Puts a reply the master cannot take on the dead-letter topic, with
    /// why, and moves on; its tile is sent again when its deadline passes.
    async fn park(&self, message: &BorrowedMessage<'_>, reason: &str) {
        let headers = OwnedHeaders::new().insert(Header { key: "error", value: Some(reason) });
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topics.dead_letters)
            .payload(message.payload().unwrap_or_default())
            .headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Err((e, _)) = self.producer.send(record, Duration::from_secs(10)).await {
            warn!(error = %e, "parking a result failed; it is dropped and its tile will be sent again");
        }
    }
}

/// When a reply reached the master, and its size on the wire.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    at: i64,
    bytes: usize,
}

/// A result's pixels as they are stored.
struct Stored {
    form: Form,
    bytes: Vec<u8>,
}

/// Checks a result's pixels against its header and its job's `output`: a
/// PNG or raw tile is decoded, a JPEG one (taken only for a JPEG result of
/// the same quality) is read through without decoding, and stored with the
/// index that reading gave, so that joining it does not read it again.
fn check(h: &ResultHeader, mut pixels: Vec<u8>, output: Output) -> anyhow::Result<Stored> {
    let (form, bytes) = match h.encoding {
        Encoding::Jpeg => {
            let Output::Jpeg { quality } = output else {
                anyhow::bail!("a JPEG tile for a {} result", output.extension());
            };
            h.check()?;
            let index = pipeline::jpeg::check_tile(&pixels, (h.rect.width, h.rect.height), quality)?;
            index.append_to(&mut pixels);
            (Form::Jpeg, pixels)
        }
        Encoding::Png => {
            h.decode_pixels(&pixels)?;
            (Form::Png, pixels)
        }
        Encoding::Raw => (Form::Raw, h.decode_pixels(&pixels)?.pixels),
    };
    Ok(Stored { form, bytes })
}
