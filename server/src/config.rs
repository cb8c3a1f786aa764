//! The server's settings: every one a flag and an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(name = "server", about = "tilepipe master: web UI, API, tiling, dispatch and reassembly")]
pub struct Config {
    /// Address the HTTP server listens on.
    #[arg(long, env = "TILEPIPE_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,

    /// Directory for the SQLite database and the job files.
    #[arg(long, env = "TILEPIPE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Kafka bootstrap servers, comma separated.
    #[arg(long, env = "TILEPIPE_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,

    /// Prefix of the topic and consumer-group names (`<prefix>tasks`, ...).
    #[arg(long, env = "TILEPIPE_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,

    /// Partitions of the tasks topic: the most workers that can share a job.
    #[arg(long, env = "TILEPIPE_TASK_PARTITIONS", default_value_t = 12)]
    pub task_partitions: i32,

    /// Edge length of a tile in pixels.
    #[arg(long, env = "TILEPIPE_TILE_SIZE", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(16..=2048))]
    pub tile_size: u32,

    /// Smallest accepted image width and height in pixels.
    #[arg(long, env = "TILEPIPE_MIN_DIMENSION", default_value_t = 1024)]
    pub min_dimension: u32,

    /// Largest accepted width or height in pixels.
    #[arg(long, env = "TILEPIPE_MAX_DIMENSION", default_value_t = 65_535)]
    pub max_dimension: u32,

    /// Largest accepted image in pixels (width x height), checked from the
    /// file's header before anything is decoded.
    #[arg(long, env = "TILEPIPE_MAX_PIXELS", default_value_t = 300_000_000)]
    pub max_pixels: u64,

    /// Jobs queued or running at once; beyond it uploads get 503 and Retry-After.
    #[arg(long, env = "TILEPIPE_MAX_ACTIVE_JOBS", default_value_t = 64)]
    pub max_active_jobs: u64,

    /// Tiles waiting for workers across all jobs; beyond it uploads get 503.
    #[arg(long, env = "TILEPIPE_MAX_QUEUED_TILES", default_value_t = 20_000)]
    pub max_queued_tiles: u64,

    /// Largest accepted upload in bytes.
    #[arg(long, env = "TILEPIPE_MAX_UPLOAD_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_upload_bytes: usize,

    /// Times a tile is sent to workers before it is dead-lettered and its job
    /// fails (counting retries after failures and after missed deadlines).
    #[arg(long, env = "TILEPIPE_MAX_ATTEMPTS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,

    /// Seconds a tile's result may take to arrive once a worker has committed
    /// its task; past it the tile is sent again.
    #[arg(long, env = "TILEPIPE_TILE_TIMEOUT_SECS", default_value_t = 30)]
    pub tile_timeout_secs: u64,

    /// An access token: when set, every mutating API call needs
    /// `Authorization: Bearer <token>`.
    #[arg(long, env = "TILEPIPE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// With a token set, require it for reading the API and the event stream too.
    #[arg(long, env = "TILEPIPE_PROTECT_READS", default_value_t = false)]
    pub protect_reads: bool,

    /// Seconds without a heartbeat before a worker is shown as lost.
    #[arg(long, env = "TILEPIPE_WORKER_TIMEOUT_SECS", default_value_t = 15)]
    pub worker_timeout_secs: u64,
}

impl Config {
    /// The defaults, as if no flag or variable were given (for tests and tools).
    pub fn defaults() -> Self {
        Self::parse_from(["server"])
    }

    pub fn limits(&self) -> crate::intake::Limits {
        crate::intake::Limits {
            min_dimension: self.min_dimension,
            max_dimension: self.max_dimension,
            max_pixels: self.max_pixels,
        }
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("tilepipe.db")
    }

    pub fn jobs_dir(&self) -> PathBuf {
        self.data_dir.join("jobs")
    }
}
