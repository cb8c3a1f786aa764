//! A job's start: its input opened (a resumed job's read again from the
//! stored upload), its tiles registered so results can reach it, then its
//! tasks sent as slots of the dispatch window free up.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use app::api::{Job, Output};
use futures::StreamExt;
use pipeline::{TileGrid, ops};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{info, warn};

use super::active::{Active, Clock, Parts, Shape, Shared};
use super::tile::{Placement, Tile};
use super::{DISPATCH_CONCURRENCY, Jobs, Start, done_tiles_file, input, raster, streamed_result, tiles_not_in};
use crate::admission::Reservation;
use crate::intake::{self, Source};
use input::Input;

/// What reads a starting job's input, after its tiles' states are known.
enum Reader {
    /// The image was decoded whole and written: every task can be made.
    Done,
    Jpeg(Arc<input::Crops>),
    Rows(Arc<raster::Raster>, image::ImageFormat),
}

impl Reader {
    /// The tiles to send, in grid order: at once from an image decoded
    /// whole, or as the reader makes them (every tile in `not_done`, so that
    /// those already on the broker have their pixels for a retry).
    fn start(
        self,
        input_path: PathBuf,
        (grid, halo): (TileGrid, u32),
        not_done: Vec<u32>,
        verdict: Option<input::ScanVerdict>,
    ) -> UnboundedReceiver<anyhow::Result<u32>> {
        let (tx, ready) = tokio::sync::mpsc::unbounded_channel();
        match self {
            Reader::Jpeg(crops) => {
                tokio::task::spawn_blocking(move || {
                    input::split(&input_path, grid, halo, &not_done, &crops, &tx, verdict);
                });
            }
            Reader::Rows(raster, format) => {
                tokio::task::spawn_blocking(move || {
                    input::stream_rows((&input_path, format), grid, halo, &not_done, &raster, &tx, verdict);
                });
            }
            Reader::Done => {
                for tile in not_done {
                    let _ = tx.send(Ok(tile));
                }
            }
        }
        ready
    }
}

/// A job's input, ready for its tiles to be registered.
struct Opened {
    clock: Clock,
    grid: TileGrid,
    input: Input,
    reader: Reader,
    verdict: Option<input::ScanVerdict>,
    memory: Option<Reservation>,
}

/// What sending a registered job's tiles needs.
struct Dispatch {
    grid: TileGrid,
    halo: u32,
    reader: Reader,
    verdict: Option<input::ScanVerdict>,
    /// Tiles without a stored result, in grid order.
    not_done: Vec<u32>,
    /// By tile: whether it has never been on the broker.
    unsent: Vec<bool>,
    /// Tiles whose task a previous run left on the broker, and its partition.
    placed: Vec<(u32, i32)>,
}

impl Jobs {
    /// Starts a new job (`fresh`) or resumes one; a job that cannot start
    /// fails with the reason.
    pub(super) async fn run(self: &Arc<Self>, id: &str, how: Start) {
        if let Err(e) = self.start(id, how).await {
            warn!(job = %id, error = %e, "job failed before its tiles were sent");
            self.fail(id, &format!("{e:#}")).await;
        }
    }

    async fn start(self: &Arc<Self>, id: &str, how: Start) -> anyhow::Result<()> {
        let job = self.store.job(id).await?.context("the job was deleted")?;
        let input_path = self.input_path(id).await.context("the job's input file is gone")?;
        let resumed = matches!(how, Start::Resumed { .. });
        let opened = self.open(id, &job, &input_path, how).await?;
        let Some(dispatch) = self.register(id, job, opened, resumed).await? else { return Ok(()) };
        self.dispatch(id, input_path, dispatch).await
    }

    /// Reads the job's input as far as its tasks need before they are sent
    /// (a resumed job's again, from its stored upload), and prepares where
    /// they will be made from.
    async fn open(&self, id: &str, job: &Job, input_path: &Path, how: Start) -> anyhow::Result<Opened> {
        let (source, decode_time, verdict, mut memory, received_at) = match how {
            Start::Fresh { source, read_time, verdict, memory, received_at } => {
                (source, read_time, verdict, memory, Some(received_at))
            }
            Start::Resumed { memory } => {
                // Resuming: read the stored upload again.
                let path = input_path.to_owned();
                let resumed = tokio::task::spawn_blocking(move || {
                    let started = Instant::now();
                    let (info, plan) = intake::inspect_stored(&path)?;
                    intake::prepare_file(&path, info, plan).map(|s| (s, started.elapsed()))
                })
                .await??;
                let (source, read_time) = resumed;
                (source, read_time, None, memory, None)
            }
        };
        let clock = Clock::start(decode_time, received_at);
        let grid = TileGrid::new(job.width, job.height, job.tile_size);
        tokio::fs::create_dir_all(self.tiles_dir(id)).await?;
        // How the tasks are made: from the file the pixels are written to
        // (all at once now, or by the reader thread), or from the crops.
        let raster_at =
            |channels| raster::Raster::create(&self.tiles_dir(id).join("pixels"), (grid.width, grid.height), channels);
        let (size, input, reader) = match source {
            Source::Pixels(frame) => {
                let raster = Arc::new(raster_at(frame.channels)?);
                let size = (frame.width, frame.height);
                anyhow::ensure!(size == (grid.width, grid.height), "the input file changed size");
                let (whole, channels) = (Arc::clone(&raster), frame.channels.count() as u64);
                tokio::task::spawn_blocking(move || input::write_whole(&frame, &whole)).await??;
                // The frame is gone: the job needs only what finishing takes.
                if let Some(memory) = memory.as_mut() {
                    let keep = intake::memory_to_finish(size, channels, grid.tile_size, job.output);
                    crate::admission::shrink(memory, keep);
                }
                (size, Input::Raster(raster), Reader::Done)
            }
            Source::Rows { format, channels } => {
                let raster = Arc::new(raster_at(channels)?);
                ((raster.width, raster.height), Input::Raster(Arc::clone(&raster)), Reader::Rows(raster, format))
            }
            Source::Jpeg(layout) => {
                let crops = Arc::new(input::Crops::create(&self.tiles_dir(id).join("crops"), grid.len())?);
                ((layout.width, layout.height), Input::Jpeg { layout, crops: Arc::clone(&crops) }, Reader::Jpeg(crops))
            }
        };
        anyhow::ensure!(size == (grid.width, grid.height), "the input file changed size");
        Ok(Opened { clock, grid, input, reader, verdict, memory })
    }

    /// Registers the job's tiles and marks it running, so results can reach
    /// it; `None` if it stopped meanwhile or has nothing left to send.
    async fn register(
        self: &Arc<Self>,
        id: &str,
        job: Job,
        Opened { clock, grid, input, reader, verdict, memory }: Opened,
        resumed: bool,
    ) -> anyhow::Result<Option<Dispatch>> {
        if !self.store.start_job(id, grid.tiles()).await? {
            return Ok(None); // cancelled while decoding
        }

        let tiles = self.stored_tiles(id, grid, input.channels(), job.output).await?;
        let unsent: Vec<bool> = tiles.iter().map(Tile::is_unsent).collect();
        let not_done: Vec<u32> = (0..grid.len()).filter(|&t| !tiles[t as usize].is_done()).collect();
        let placed: Vec<(u32, i32)> =
            not_done.iter().filter_map(|&t| Some((t, tiles[t as usize].placement()?.partition))).collect();
        let halo = ops::chain_halo(&job.ops);
        let parts = Parts { clock, grid, halo, ops: job.ops.into(), input, tiles, output: job.output, memory };
        let active = Arc::new(Mutex::new(Active::new(parts)));
        self.active.lock().expect("lock").insert(id.to_owned(), Arc::clone(&active));
        // A cancel that came after `start_job` found nothing to remove from
        // the map: it is seen here instead, so no cancelled job runs on.
        // (Cancel marks the row, then empties the map; this fills the map,
        // then reads the row: one of the two sees the other.)
        if self.store.job(id).await?.is_none_or(|j| j.status.is_finished()) {
            self.active.lock().expect("lock").remove(id);
            self.remove_tiles(id).await;
            return Ok(None);
        }
        if resumed {
            // A result that came between reading the pending tiles and
            // registering the job was stored, but not counted here: count it
            // now. (One stored after this read finds the job registered.)
            let still: BTreeSet<u32> = self.store.pending_tiles(id).await?.iter().map(|p| p.idx).collect();
            let mut a = active.lock().expect("lock");
            for &t in not_done.iter().filter(|t| !still.contains(t)) {
                a.count_done(t);
            }
        }
        let remaining = active.lock().expect("lock").remaining();
        self.emit_job(id).await;
        self.encode_as_tiles_arrive(id, &active);
        drop(active); // the map holds it: a stopped job's is dropped at once
        if remaining == 0 {
            let this = Arc::clone(self);
            let id = id.to_owned();
            tokio::spawn(async move { this.finish(&id).await });
            return Ok(None);
        }
        Ok(Some(Dispatch { grid, halo, reader, verdict, not_done, unsent, placed }))
    }

    /// Starts writing the result from the tile files as they are done, for
    /// an output that can be written so (see [`crate::assemble::streams`]).
    fn encode_as_tiles_arrive(&self, id: &str, active: &Shared) {
        let mut a = active.lock().expect("lock");
        let Shape { grid, channels, output } = a.shape();
        if !crate::assemble::streams(output) || a.remaining() == 0 {
            return;
        }
        let tiles_dir = self.tiles_dir(id);
        a.stream_result(|progress| {
            tokio::task::spawn_blocking(move || {
                let partial = streamed_result(&tiles_dir);
                let done = done_tiles_file(&tiles_dir);
                let tiles = crate::assemble::Tiles::new(grid, channels, &done, Some(progress));
                crate::assemble::write(output, &tiles, &partial)
            })
        });
    }

    /// The job's tiles as the store has them: all unsent for a new job; for
    /// a resumed one, done (if its file is whole, else processing it again)
    /// or where its latest task is.
    async fn stored_tiles(
        &self,
        id: &str,
        grid: TileGrid,
        channels: pipeline::Channels,
        output: Output,
    ) -> anyhow::Result<Vec<Tile>> {
        let mut tiles: Vec<Tile> = (0..grid.len()).map(|_| Tile::unsent()).collect();
        let pending = self.store.pending_tiles(id).await?;
        let done = tiles_not_in(&pending, grid.len());
        let path = self.done_tiles_path(id);
        let checked = tokio::task::spawn_blocking(move || {
            let mut stored = crate::done_tiles::DoneTiles::new(&path);
            done.into_iter()
                .map(|t| {
                    let rect = grid.tile(t).expect("in the grid");
                    (t, crate::assemble::check_stored(&mut stored, (t, rect), channels, output))
                })
                .collect::<Vec<_>>()
        })
        .await?;
        for (t, check) in checked {
            match check {
                Ok(()) => tiles[t as usize] = Tile::done(),
                Err(e) => {
                    warn!(job = %id, tile = t, error = %e, "a done tile's pixels are missing; processing it again");
                    self.store.reopen_tile(id, t).await?;
                }
            }
        }
        for p in &pending {
            let placement =
                p.task_partition.zip(p.task_offset).map(|(partition, offset)| Placement { partition, offset });
            tiles[p.idx as usize] = Tile::resumed(p.attempts, placement);
        }
        Ok(tiles)
    }

    /// Sends the job's tiles as slots of the window free up, until all are
    /// on the broker or the job stops.
    async fn dispatch(
        self: &Arc<Self>,
        id: &str,
        input_path: PathBuf,
        Dispatch { grid, halo, reader, verdict, not_done, unsent, placed }: Dispatch,
    ) -> anyhow::Result<()> {
        // Tasks a previous run left on the broker count against the window.
        for (tile, partition) in placed {
            let slot = self.window.acquire_at(partition).await;
            let Some(active) = self.get(id) else { return Ok(()) };
            active.lock().expect("lock").hold(tile, slot);
        }

        let mut ready = reader.start(input_path, (grid, halo), not_done, verdict);
        // Each as a slot frees up (a stopped job stops taking them), a few
        // sendings at a time.
        let (mut next, mut sending) = (None, futures::stream::FuturesUnordered::new());
        let mut left = unsent.iter().filter(|&&u| u).count();
        loop {
            tokio::select! {
                Some(sent) = sending.next(), if !sending.is_empty() => {
                    sent?;
                }
                tile = ready.recv(), if next.is_none() => match tile {
                    Some(tile) => next = Some(tile?).filter(|&t| unsent[t as usize]),
                    None => break,
                },
                slot = self.window.acquire(left), if next.is_some() && sending.len() < DISPATCH_CONCURRENCY => {
                    if self.get(id).is_none() {
                        break;
                    }
                    left = left.saturating_sub(1);
                    sending.push(self.publish(id, next.take().expect("guarded"), Some(slot)));
                }
            }
        }
        while let Some(sent) = sending.next().await {
            sent?;
        }
        if let Some(active) = self.get(id) {
            active.lock().expect("lock").dispatched();
        }
        info!(job = %id, tiles = grid.len(), "all tiles dispatched");
        Ok(())
    }
}
