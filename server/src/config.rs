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

    /// Partitions of the tasks topic, when the server creates it: the most
    /// workers that can share a job. Each costs the broker reads on every
    /// poll (see docs/performance.md), so it is no larger than needed.
    #[arg(long, env = "TILEPIPE_TASK_PARTITIONS", default_value_t = 4)]
    pub task_partitions: i32,

    /// Tasks kept outstanding on the broker per live worker: the dispatch
    /// window. More hides network latency; fewer keeps the broker's backlog
    /// (and what a lost worker leaves behind) short.
    #[arg(long, env = "TILEPIPE_TASKS_PER_WORKER", default_value_t = crate::jobs::window::DEFAULT_PER_WORKER)]
    pub tasks_per_worker: usize,

    /// Edge length of a tile in pixels: a multiple of 16 from 16 to 2048,
    /// so that tiles lie on JPEG MCU boundaries (a JPEG result is joined
    /// from the workers' JPEG tiles).
    #[arg(long, env = "TILEPIPE_TILE_SIZE", default_value_t = 512, value_parser = tile_size)]
    pub tile_size: u32,

    /// Smallest accepted image width and height in pixels.
    #[arg(long, env = "TILEPIPE_MIN_DIMENSION", default_value_t = 1024)]
    pub min_dimension: u32,

    /// Largest accepted width or height in pixels.
    #[arg(long, env = "TILEPIPE_MAX_DIMENSION", default_value_t = 65_535)]
    pub max_dimension: u32,

    /// Largest accepted image in pixels (width x height), checked from the
    /// file's header before anything is decoded. (The memory budget decides
    /// too: a baseline JPEG is never decoded whole, other formats are.)
    #[arg(long, env = "TILEPIPE_MAX_PIXELS", default_value_t = 4_000_000_000)]
    pub max_pixels: u64,

    /// Memory the master may spend on images: each job reserves what it is
    /// estimated to need (a band of a JPEG, or a whole decoded image) when
    /// it is uploaded and holds it until it stops; an upload that does not
    /// fit waits for none but gets 503 with Retry-After. Bytes, or with a
    /// unit (`512MiB`, `4GiB`).
    #[arg(long, env = "TILEPIPE_MEMORY_BUDGET", default_value = "1GiB", value_parser = crate::disk::parse_bytes)]
    pub memory_budget: u64,

    /// Jobs queued or running at once; beyond it uploads get 503 and Retry-After.
    #[arg(long, env = "TILEPIPE_MAX_ACTIVE_JOBS", default_value_t = 64)]
    pub max_active_jobs: u64,

    /// Tiles waiting for workers across all jobs; beyond it uploads get 503.
    #[arg(long, env = "TILEPIPE_MAX_QUEUED_TILES", default_value_t = 20_000)]
    pub max_queued_tiles: u64,

    /// Largest accepted upload in bytes.
    #[arg(long, env = "TILEPIPE_MAX_UPLOAD_BYTES", default_value_t = 2 * 1024 * 1024 * 1024)]
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
    /// `Authorization: Bearer <token>`. Prefer the variable or
    /// `--token-file`: a flag shows in the process list.
    #[arg(long, env = "TILEPIPE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// A file holding the access token (surrounding whitespace ignored).
    #[arg(long, env = "TILEPIPE_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,

    /// Host names this server answers to besides IP addresses, `localhost`
    /// and the machine's name (comma separated; `*` for any, which also lets
    /// any site's pages send mutations). Behind a reverse proxy, its public name.
    #[arg(long, env = "TILEPIPE_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// Connections served at once; more wait until one closes.
    #[arg(long, env = "TILEPIPE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Seconds a connection may take to send a request's head (and may stay
    /// idle between requests).
    #[arg(long, env = "TILEPIPE_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,

    /// Seconds a request body may pause between two chunks before the request fails with 408.
    #[arg(long, env = "TILEPIPE_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub body_timeout_secs: u64,

    /// Event streams (open dashboards and job pages) served at once.
    #[arg(long, env = "TILEPIPE_MAX_EVENT_STREAMS", default_value_t = 256)]
    pub max_event_streams: usize,

    /// Uploads are refused (507) while the data directory's disk has less
    /// free space than this: bytes, or with a unit (`500MB`, `2GiB`).
    #[arg(long, env = "TILEPIPE_MIN_FREE_DISK", default_value = "1GiB", value_parser = crate::disk::parse_bytes)]
    pub min_free_disk: u64,

    /// Finished jobs older than this are deleted with their files (`7d`,
    /// `12h`, `30m`); kept for ever when unset.
    #[arg(long, env = "TILEPIPE_RETENTION", value_parser = humantime::parse_duration)]
    pub retention: Option<std::time::Duration>,

    /// Seconds open requests get to finish on shutdown.
    #[arg(long, env = "TILEPIPE_SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    pub shutdown_timeout_secs: u64,

    /// With a token set, require it for reading the API and the event stream too.
    #[arg(long, env = "TILEPIPE_PROTECT_READS", default_value_t = false)]
    pub protect_reads: bool,

    /// Seconds without a heartbeat before a worker is shown as lost.
    #[arg(long, env = "TILEPIPE_WORKER_TIMEOUT_SECS", default_value_t = 15)]
    pub worker_timeout_secs: u64,

    /// Seconds without a heartbeat before a lost worker is forgotten (its
    /// row, dashboard entry and metrics go).
    #[arg(long, env = "TILEPIPE_WORKER_RETENTION_SECS", default_value_t = 3600)]
    pub worker_retention_secs: u64,
}

/// A tile size: a multiple of 16 from 16 to 2048.
fn tile_size(text: &str) -> Result<u32, String> {
    let size: u32 = text.parse().map_err(|_| format!("{text:?} is not a number of pixels"))?;
    if !(16..=2048).contains(&size) || !size.is_multiple_of(16) {
        return Err(format!("a tile size is a multiple of 16 from 16 to 2048, not {size}"));
    }
    Ok(size)
}

impl Config {
    /// The defaults, as if no flag or variable were given (for tests and
    /// tools): `TILEPIPE_*` variables in the environment are ignored, so a
    /// developer's exported settings do not change what the tests run.
    pub fn defaults() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let command = Self::command().mut_args(|arg| arg.env(None::<&str>));
        Self::from_arg_matches(&command.get_matches_from(["server"])).expect("the defaults parse")
    }

    pub fn limits(&self) -> crate::intake::Limits {
        crate::intake::Limits {
            min_dimension: self.min_dimension,
            max_dimension: self.max_dimension,
            max_pixels: self.max_pixels,
        }
    }

    /// Reads the token file, if any, into `token`, and refuses an empty
    /// token: an empty value would otherwise silently mean no token at all.
    pub fn resolve_token(&mut self) -> anyhow::Result<()> {
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading the token file {}: {e}", path.display()))?;
            self.token = Some(text.trim().to_owned());
        }
        if self.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            anyhow::bail!("the access token is empty; unset TILEPIPE_TOKEN to run without one");
        }
        Ok(())
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("tilepipe.db")
    }

    pub fn jobs_dir(&self) -> PathBuf {
        self.data_dir.join("jobs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_lie_on_jpeg_mcu_boundaries() {
        assert_eq!(Config::try_parse_from(["server", "--tile-size", "256"]).unwrap().tile_size, 256);
        for bad in ["8", "100", "4096", "big"] {
            let error = Config::try_parse_from(["server", "--tile-size", bad]).unwrap_err().to_string();
            assert!(error.contains("tile size") || error.contains("number of pixels"), "{bad}: {error}");
        }
    }
}
