//! A running job as the engine holds it: its input, its tiles' states and
//! its clock. Its fields are private: dispatch, results and retry move it
//! only through the narrow methods here, each one transition or one question.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use app::api::{Output, Stages};
use pipeline::codec::Encoding;
use pipeline::wire::TaskHeader;
use pipeline::{Channels, Operation, TileGrid};

use super::input::{Input, Payload};
use super::tile::{Overdue, Placement, Tile};
use super::window::Slot;
use crate::admission::Reservation;
use crate::assemble::Progress;
use crate::kafka::Position;

/// A running job as the engine's tasks share it.
pub(super) type Shared = Arc<Mutex<Active>>;

/// The encoder that writes the result while the tiles arrive.
pub(super) type Encoder = tokio::task::JoinHandle<anyhow::Result<()>>;

/// When a running job passed its stages, for [`Stages`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    decode_ms: f64,
    decoded_at: Instant,
    /// The same, by the wall clock.
    decoded_at_ms: i64,
    dispatched_at: Option<Instant>,
    last_result_at: Option<Instant>,
    /// When a fresh upload's last byte came in, and its first task was on the broker.
    received_at: Option<Instant>,
    first_task_at: Option<Instant>,
}

impl Clock {
    /// Starts a job's clock now, its input read in `decode_time`.
    pub(super) fn start(decode_time: Duration, received_at: Option<Instant>) -> Self {
        Clock {
            decode_ms: ms(decode_time),
            decoded_at: Instant::now(),
            decoded_at_ms: plumbing::now_ms(),
            dispatched_at: None,
            last_result_at: None,
            received_at,
            first_task_at: None,
        }
    }

    /// Where the job's time went, its result written since `encode_started`.
    pub(super) fn stages(&self, encode_started: Instant) -> Stages {
        let last_result = self.last_result_at.unwrap_or(encode_started);
        let dispatched = self.dispatched_at.unwrap_or(last_result).min(last_result);
        Stages {
            decoded_at: Some(self.decoded_at_ms),
            decode_ms: self.decode_ms,
            dispatch_ms: ms(dispatched - self.decoded_at),
            process_ms: ms(last_result - self.decoded_at),
            collect_ms: ms(last_result - dispatched),
            encode_ms: ms(encode_started.elapsed()),
            first_task_ms: self.received_at.zip(self.first_task_at).map(|(received, first)| ms(first - received)),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What a job's result tiles must be: on its grid, with its channels, and
/// fit for its output.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    pub grid: TileGrid,
    pub channels: Channels,
    pub output: Output,
}

/// What a running job starts with.
pub(super) struct Parts {
    pub clock: Clock,
    pub grid: TileGrid,
    pub halo: u32,
    pub ops: Arc<[Operation]>,
    pub input: Input,
    pub tiles: Vec<Tile>,
    pub output: Output,
    pub memory: Option<Reservation>,
}

/// What finishing a job takes from it.
pub(super) struct Finishing {
    pub clock: Clock,
    pub shape: Shape,
    pub encoder: Option<Encoder>,
}

/// A running job: its input and what is known of its tiles. Finished tiles
/// are on disk, not in memory: the result is assembled from them.
pub(super) struct Active {
    clock: Clock,
    grid: TileGrid,
    ops: Arc<[Operation]>,
    halo: u32,
    input: Input,
    tiles: Vec<Tile>,
    remaining: u32,
    output: Output,
    /// Which tiles are done, for the encoder that writes the result while
    /// they arrive (PNG, JPEG).
    progress: Arc<Progress>,
    encoder: Option<Encoder>,
    /// Partitions whose worker said it does not support one of the job's
    /// operations: its tasks go elsewhere.
    unsupported: BTreeSet<i32>,
    /// Its share of the master's memory budget, given back with the job.
    _memory: Option<Reservation>,
}

impl Drop for Active {
    fn drop(&mut self) {
        // A stopped job's encoder stops waiting for its tiles.
        self.progress.abort();
    }
}

impl Active {
    pub(super) fn new(parts: Parts) -> Self {
        let Parts { clock, grid, halo, ops, input, tiles, output, memory } = parts;
        let remaining = tiles.iter().filter(|t| !t.is_done()).count() as u32;
        let progress = Arc::new(Progress::new(tiles.iter().map(Tile::is_done).collect()));
        Active {
            clock,
            grid,
            ops,
            halo,
            input,
            tiles,
            remaining,
            output,
            progress,
            encoder: None,
            unsupported: BTreeSet::new(),
            _memory: memory,
        }
    }

    pub(super) fn shape(&self) -> Shape {
        Shape { grid: self.grid, channels: self.input.channels(), output: self.output }
    }

    /// Tiles not done yet.
    pub(super) fn remaining(&self) -> u32 {
        self.remaining
    }

    /// Starts the encoder that writes the result from the tiles as they are
    /// done: `start` is given which tiles are.
    pub(super) fn stream_result(&mut self, start: impl FnOnce(Arc<Progress>) -> Encoder) {
        self.encoder = Some(start(Arc::clone(&self.progress)));
    }

    /// Lets the result's encoder stop waiting for tiles.
    pub(super) fn abort(&self) {
        self.progress.abort();
    }

    /// Takes what finishing needs; the encoder is taken once.
    pub(super) fn finishing(&mut self) -> Finishing {
        Finishing { clock: self.clock, shape: self.shape(), encoder: self.encoder.take() }
    }

    /// Counts `tile` a task that a previous run left on the broker, in `slot`.
    pub(super) fn hold(&mut self, tile: u32, slot: Slot) {
        if let Some(t) = self.tiles.get_mut(tile as usize) {
            t.hold(slot);
        }
    }

    /// Begins sending `tile` (see [`Tile::begin_send`]), avoiding partitions
    /// that declined the job: its task and the partition to send it to
    /// (`None`: any), or `None` if it is done or being sent already.
    pub(super) fn begin_send(
        &mut self,
        id: &str,
        tile: u32,
        slot: Option<Slot>,
    ) -> Option<(TaskHeader, Payload, Option<i32>)> {
        let partition = self.tiles.get_mut(tile as usize)?.begin_send(slot, &self.unsupported)?;
        let (header, payload) = self.task(id, tile)?;
        Some((header, payload, partition))
    }

    /// The sending begun by [`Active::begin_send`] is on the broker.
    pub(super) fn sent(&mut self, tile: u32, at: Placement, attempts: u32) {
        self.clock.first_task_at.get_or_insert_with(Instant::now);
        self.tiles[tile as usize].sent(at, attempts);
    }

    /// The sending begun by [`Active::begin_send`] failed.
    pub(super) fn send_failed(&mut self, tile: u32) {
        self.tiles[tile as usize].send_failed();
    }

    /// Every tile is on the broker (or done).
    pub(super) fn dispatched(&mut self) {
        self.clock.dispatched_at = Some(Instant::now());
    }

    /// `tile`'s task as it is sent now (its next attempt).
    pub(super) fn task(&self, id: &str, tile: u32) -> Option<(TaskHeader, Payload)> {
        let rect = self.grid.tile(tile)?;
        let mut header = TaskHeader {
            job_id: id.to_owned(),
            tile,
            rect,
            halo: self.halo,
            ops: self.ops.to_vec(),
            channels: self.input.channels(),
            attempt: self.tiles.get(tile as usize)?.attempts() + 1,
            encoding: Encoding::Raw,
            source: None,
            jpeg_tile_quality: match self.output {
                Output::Jpeg { quality } => Some(quality),
                Output::Png | Output::Webp | Output::Tiff => None,
            },
        };
        let payload = self.input.payload(&mut header);
        Some((header, payload))
    }

    /// Whether a result for `tile` is wanted: `None` if the tile is done
    /// already (a duplicate), else the attempts it took (at least one).
    pub(super) fn wants(&self, tile: u32) -> Option<u32> {
        match self.tiles.get(tile as usize) {
            Some(t) if t.is_done() => None,
            Some(t) => Some(t.attempts().max(1)),
            None => Some(1), // not on the grid: the result's rect is refused
        }
    }

    /// Counts `tile` done, once; says whether it was the last.
    pub(super) fn count_done(&mut self, tile: u32) -> bool {
        if !self.tiles.get_mut(tile as usize).is_some_and(Tile::complete) {
            return false;
        }
        self.remaining -= 1;
        self.progress.done(tile);
        if self.remaining == 0 {
            self.clock.last_result_at = Some(Instant::now());
        }
        self.remaining == 0
    }

    /// Whether a failure report of `attempt` is about `tile`'s latest sending.
    pub(super) fn answers_latest(&self, tile: u32, attempt: u32) -> bool {
        self.tiles.get(tile as usize).is_some_and(|t| t.answers_latest(attempt))
    }

    /// `tile`'s worker declined the job: its partition is avoided from now
    /// on. Returns how many partitions have declined, or `None` if the tile
    /// was not waiting on one.
    pub(super) fn bounce(&mut self, tile: u32) -> Option<usize> {
        let partition = self.tiles.get_mut(tile as usize)?.bounce()?;
        self.unsupported.insert(partition);
        Some(self.unsupported.len())
    }

    /// `tile`'s sendings so far, and those that count against its attempts.
    pub(super) fn attempts(&self, tile: u32) -> (u32, u32) {
        self.tiles.get(tile as usize).map_or((0, 0), |t| (t.attempts(), t.spent_attempts()))
    }

    /// The tiles whose task is on the broker, and where.
    pub(super) fn placements(&self) -> Vec<(u32, Placement)> {
        self.tiles.iter().enumerate().filter_map(|(tile, t)| Some((tile as u32, t.placement()?))).collect()
    }

    /// Whether `tile`, placed `at`, is overdue given its partition's
    /// `position` (see [`Tile::overdue`]).
    pub(super) fn overdue(
        &mut self,
        tile: u32,
        at: Placement,
        position: Position,
        (now, timeout): (Instant, Duration),
    ) -> Option<Overdue> {
        self.tiles.get_mut(tile as usize)?.overdue(at, position, now, timeout)
    }
}
