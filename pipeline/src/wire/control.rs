//! The JSON messages, which carry no pixels: the master's control
//! announcements and the workers' heartbeats.

use serde::{Deserialize, Serialize};

use super::{MAX_ID_BYTES, WireError, check_id};

/// What the master tells every worker on the control topic (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// The job was cancelled or failed: skip its remaining tiles.
    JobStopped { job_id: String },
}

impl Control {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("control messages serialise")
    }

    /// Parses and checks a control message: workers remember stopped job
    /// ids, so they must be of bounded length.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let control: Control = serde_json::from_slice(bytes)?;
        match &control {
            Control::JobStopped { job_id } => check_id("job_id", job_id)?,
        }
        Ok(control)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub worker_id: String,
    pub host: String,
    pub pid: u32,
    /// `"job_id/tile"` of the tile in progress, if any.
    pub current_tile: Option<String>,
    pub tiles_done: u64,
    /// Milliseconds since the Unix epoch, by the worker's clock.
    pub sent_at_ms: i64,
    /// The worker process's CPU use since its previous heartbeat, in percent
    /// of one core (above 100 on several). Optional, as are the next two:
    /// older and foreign workers leave them out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f32>,
    /// Its resident memory, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// What it runs on, in words: `"tilepipe-worker 0.1.0 (Rust)"`,
    /// `"python 3.12, confluent-kafka 2.5"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

impl Heartbeat {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("heartbeat serialises")
    }

    /// Parses and checks a heartbeat: ids and names of bounded length.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let beat: Heartbeat = serde_json::from_slice(bytes)?;
        check_id("worker_id", &beat.worker_id)?;
        if beat.host.len() > MAX_HOST_BYTES {
            return Err(WireError::Invalid(format!("host must be at most {MAX_HOST_BYTES} bytes")));
        }
        if beat.current_tile.as_ref().is_some_and(|t| t.len() > MAX_ID_BYTES + 11) {
            return Err(WireError::Invalid("current_tile must be a job id and a tile number".into()));
        }
        if beat.cpu_percent.is_some_and(|c| !(0.0..=MAX_CPU_PERCENT).contains(&c)) {
            return Err(WireError::Invalid(format!("cpu_percent must be 0..={MAX_CPU_PERCENT}")));
        }
        if beat.runtime.as_ref().is_some_and(|r| r.len() > MAX_RUNTIME_BYTES) {
            return Err(WireError::Invalid(format!("runtime must be at most {MAX_RUNTIME_BYTES} bytes")));
        }
        Ok(beat)
    }
}

/// Longest host name a heartbeat may carry (DNS's limit).
pub const MAX_HOST_BYTES: usize = 255;

/// Longest `runtime` a heartbeat may carry.
pub const MAX_RUNTIME_BYTES: usize = 64;

/// Highest `cpu_percent` a heartbeat may report: 1024 cores, busy.
pub const MAX_CPU_PERCENT: f32 = 102_400.0;
