//! The JSON API's types, shared by the server (which produces them) and the
//! browser (which reads them). Field names are the wire names.

use pipeline::Operation;
use serde::{Deserialize, Serialize};

/// Stored as the same snake_case word (`jobs.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "ssr", derive(sqlx::Type), sqlx(rename_all = "snake_case"))]
pub enum JobStatus {
    /// Accepted; the image is being decoded and cut into tiles.
    Queued,
    /// Tiles are out with the workers.
    Running,
    Done,
    Failed,
    /// Stopped by a user; its remaining tiles are skipped.
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, JobStatus::Done | JobStatus::Failed | JobStatus::Cancelled)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub filename: String,
    pub status: JobStatus,
    pub width: u32,
    pub height: u32,
    pub tile_size: u32,
    pub ops: Vec<Operation>,
    pub tiles_total: u32,
    pub tiles_done: u32,
    pub input_bytes: u64,
    /// Why the job failed, in words.
    pub error: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// Where a finished job's time went.
    #[serde(default)]
    pub stages: Option<Stages>,
    /// How the result is encoded.
    #[serde(default)]
    pub output: Output,
    /// Answered from the result cache: the job whose result this one shares
    /// (the same input bytes, operations and output).
    #[serde(default)]
    pub cached_from: Option<String>,
    /// The batch it was submitted in, if any.
    #[serde(default)]
    pub batch_id: Option<String>,
}

/// Images submitted together (`POST /api/batches`, then jobs with its id),
/// with the totals of its jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub id: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub images_total: u32,
    pub images_done: u32,
    pub images_failed: u32,
    pub tiles_total: u64,
    pub tiles_done: u64,
    /// Its jobs, oldest first.
    pub jobs: Vec<Job>,
}

impl Batch {
    pub fn new(id: String, created_at: i64, jobs: Vec<Job>) -> Self {
        let count = |status| jobs.iter().filter(|j| j.status == status).count() as u32;
        Batch {
            images_total: jobs.len() as u32,
            images_done: count(JobStatus::Done),
            images_failed: count(JobStatus::Failed) + count(JobStatus::Cancelled),
            tiles_total: jobs.iter().map(|j| u64::from(j.tiles_total)).sum(),
            tiles_done: jobs.iter().map(|j| u64::from(j.tiles_done)).sum(),
            id,
            created_at,
            jobs,
        }
    }
}

/// How a job's result is encoded. In JSON, tagged by `format`:
/// `{"format": "png"}`, `{"format": "jpeg", "quality": 90}`, `{"format": "webp"}`,
/// `{"format": "tiff"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum Output {
    /// Lossless, fast deflate.
    #[default]
    Png,
    /// Baseline JPEG, 4:2:0, `quality` 1 to 100.
    Jpeg { quality: u8 },
    /// Lossless WebP.
    Webp,
    /// Tiled TIFF, lossless (Deflate), BigTIFF past 4 GiB.
    Tiff,
}

impl Output {
    /// The quality a JPEG result gets when none is asked for.
    pub const JPEG_QUALITY: u8 = 90;

    pub fn extension(self) -> &'static str {
        match self {
            Output::Png => "png",
            Output::Jpeg { .. } => "jpg",
            Output::Webp => "webp",
            Output::Tiff => "tif",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Output::Png => "image/png",
            Output::Jpeg { .. } => "image/jpeg",
            Output::Webp => "image/webp",
            Output::Tiff => "image/tiff",
        }
    }

    /// The longest side the format can hold.
    pub fn max_dimension(self) -> u32 {
        match self {
            Output::Png | Output::Tiff => u32::MAX >> 1,
            Output::Jpeg { .. } => u32::from(u16::MAX),
            Output::Webp => 16_383,
        }
    }

    /// How the format reads in the UI.
    pub fn label(self) -> String {
        match self {
            Output::Png => "PNG".into(),
            Output::Jpeg { quality } => format!("JPEG q{quality}"),
            Output::Webp => "WebP (lossless)".into(),
            Output::Tiff => "TIFF (tiled, lossless)".into(),
        }
    }
}

/// `GET /api/jobs/{id}/zoom`: a done job's result as a Deep Zoom pyramid,
/// built on the first request. Its tiles are
/// `/api/jobs/{id}/zoom/{level}/{column}_{row}.{format}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Zoom {
    /// Being built (status 202): the share of the result read so far, 0 to 1.
    Building { progress: f32 },
    /// Ready (status 200). Level `k` is the result shrunk `2^(max - k)`
    /// times, `max` being the level of the full size; tiles are `tile_size`
    /// px a side plus `overlap` px on each inner edge.
    Ready { width: u32, height: u32, tile_size: u32, overlap: u32, format: String },
}

/// Milliseconds a job spent in each stage on the master (the last run of it,
/// if it was resumed). Dispatch and processing overlap: tiles are processed
/// while later ones are still being sent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stages {
    /// When decoding ended, in milliseconds since the Unix epoch: the other
    /// stages count from here (decoding ran just before).
    #[serde(default)]
    pub decoded_at: Option<i64>,
    /// Decoding the upload.
    pub decode_ms: f64,
    /// Cutting and sending every tile, from the end of decoding.
    pub dispatch_ms: f64,
    /// From the end of decoding to the last result.
    pub process_ms: f64,
    /// From the last tile sent to the last result.
    pub collect_ms: f64,
    /// Encoding and writing the result.
    pub encode_ms: f64,
    /// From the upload's last byte to its first task on the broker (none
    /// for a job resumed after a restart).
    #[serde(default)]
    pub first_task_ms: Option<f64>,
}

impl Job {
    /// Progress in percent, 0 to 100.
    pub fn progress(&self) -> f64 {
        if self.tiles_total == 0 {
            return 0.0;
        }
        100.0 * f64::from(self.tiles_done) / f64::from(self.tiles_total)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    Alive,
    /// No heartbeat for longer than the server's worker timeout.
    Lost,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Worker {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub status: WorkerStatus,
    /// Milliseconds since the Unix epoch, by the server's clock.
    pub last_seen: i64,
    pub current_tile: Option<String>,
    pub tiles_done: u64,
    /// From the latest heartbeat, when the worker reports them: CPU use in
    /// percent of one core, resident memory in bytes, and what it runs on.
    #[serde(default)]
    pub cpu_percent: Option<f32>,
    #[serde(default)]
    pub rss_bytes: Option<u64>,
    #[serde(default)]
    pub runtime: Option<String>,
}

/// What the server accepts (`GET /api/limits`), so the browser can check a
/// file before sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(flatten)]
    pub size: SizeLimits,
    pub max_upload_bytes: u64,
}

/// What sizes of image are accepted. One check, [`SizeLimits::check`], for
/// the browser (before sending) and the server (reading the header), so both
/// refuse an image in the same words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeLimits {
    pub min_dimension: u32,
    pub max_dimension: u32,
    pub max_pixels: u64,
}

/// Why an image's size is refused, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeRefusal {
    TooLarge(String),
    TooSmall(String),
}

impl SizeRefusal {
    pub fn message(&self) -> &str {
        match self {
            SizeRefusal::TooLarge(m) | SizeRefusal::TooSmall(m) => m,
        }
    }
}

impl SizeLimits {
    /// Whether an image of this size is accepted. Too large is checked
    /// first: it is what guards memory.
    pub fn check(&self, width: u32, height: u32) -> Result<(), SizeRefusal> {
        let pixels = u64::from(width) * u64::from(height);
        if width > self.max_dimension || height > self.max_dimension || pixels > self.max_pixels {
            return Err(SizeRefusal::TooLarge(format!(
                "the image is {width}x{height} ({:.0} megapixels); at most {} pixels a side and {:.0} megapixels are accepted",
                pixels as f64 / 1e6,
                self.max_dimension,
                self.max_pixels as f64 / 1e6
            )));
        }
        let min = self.min_dimension;
        if width < min || height < min {
            return Err(SizeRefusal::TooSmall(format!(
                "the image is {width}x{height}; it must be at least {min}x{min} pixels"
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub jobs_total: u64,
    pub jobs_queued: u64,
    pub jobs_running: u64,
    pub jobs_done: u64,
    pub jobs_failed: u64,
    pub tiles_done: u64,
    pub workers_alive: u64,
    pub workers_lost: u64,
    /// Partitions of the tasks topic. Each is read by one worker, so the
    /// workers alive beyond this many get no tasks.
    pub task_partitions: u64,
}

/// Stored as the same snake_case word (`tiles.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "ssr", derive(sqlx::Type), sqlx(rename_all = "snake_case"))]
pub enum TileStatus {
    Queued,
    Done,
}

/// One tile of a job: where it is in the image and who processed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tile {
    pub idx: u32,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub status: TileStatus,
    pub worker_id: Option<String>,
    pub elapsed_ms: Option<f64>,
    pub done_at: Option<i64>,
    /// Times the tile was sent to workers (more than 1: it was retried).
    pub attempts: u32,
    /// The size of its result as it came over the broker.
    #[serde(default)]
    pub result_bytes: Option<u64>,
}

/// A tile finished by a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TileDone {
    pub job_id: String,
    pub tile: u32,
    pub worker_id: String,
    /// How long the worker took over it, by its own clock.
    pub elapsed_ms: f64,
    /// When its result reached the master: milliseconds since the Unix
    /// epoch, by the master's clock. The worker worked on it for about
    /// `elapsed_ms` before that.
    #[serde(default)]
    pub done_at: i64,
    /// Times the tile was sent to workers (more than 1: it was retried).
    #[serde(default)]
    pub attempts: u32,
    /// The size of its result as it came over the broker.
    #[serde(default)]
    pub result_bytes: u64,
}

/// A worker could not process a tile; it is sent again (or the job fails
/// once it has used its attempts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TileFailed {
    pub job_id: String,
    pub tile: u32,
    pub worker_id: String,
    /// The worker's reason, in its words.
    pub error: String,
    /// When the master heard of it, in milliseconds since the Unix epoch.
    pub at: i64,
}

/// What `GET /api/events` streams. The SSE event name is the variant's name
/// in snake case (`job`, `tile`, `tile_failed`, `worker`, `job_deleted`,
/// `worker_gone`); the data is the payload as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Event {
    Job(Job),
    Tile(TileDone),
    TileFailed(TileFailed),
    Worker(Worker),
    /// A job was deleted; the payload is its id.
    JobDeleted(String),
    /// A worker unseen for the retention period was forgotten; the payload is its id.
    WorkerGone(String),
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Job(_) => "job",
            Event::Tile(_) => "tile",
            Event::TileFailed(_) => "tile_failed",
            Event::Worker(_) => "worker",
            Event::JobDeleted(_) => "job_deleted",
            Event::WorkerGone(_) => "worker_gone",
        }
    }
}

/// Every error response's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// A stable, machine-readable code such as `image_too_small`.
    pub error: String,
    /// What went wrong, in words for people.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: JobStatus, done: u32, total: u32) -> Job {
        Job {
            id: format!("{status:?}-{done}"),
            filename: "a.png".into(),
            status,
            width: 1024,
            height: 1024,
            tile_size: 512,
            ops: Vec::new(),
            tiles_total: total,
            tiles_done: done,
            input_bytes: 1,
            error: None,
            created_at: 0,
            finished_at: None,
            stages: None,
            output: Output::Png,
            cached_from: None,
            batch_id: Some("b".into()),
        }
    }

    #[test]
    fn a_batch_totals_its_jobs() {
        let jobs = vec![
            job(JobStatus::Done, 4, 4),
            job(JobStatus::Running, 1, 9),
            job(JobStatus::Failed, 2, 4),
            job(JobStatus::Cancelled, 0, 4),
        ];
        let b = Batch::new("b".into(), 7, jobs);
        assert_eq!((b.images_total, b.images_done, b.images_failed), (4, 1, 2));
        assert_eq!((b.tiles_done, b.tiles_total), (7, 21));
        let empty = Batch::new("e".into(), 7, Vec::new());
        assert_eq!((empty.images_total, empty.tiles_total), (0, 0));
    }
}
