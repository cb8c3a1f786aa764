//! What a task becomes: its result, a failure to report, or (when it does
//! not say whose it is) a dead letter; nothing for a tile of a stopped job.

use std::time::Instant;

use pipeline::codec::{self, Encoding};
use pipeline::ops;
use pipeline::wire::{ResultHeader, Task, TaskHeader, TaskIds, TileFailure, TileKey, Topics};
use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use tracing::{debug, warn};

use crate::heartbeat::Status;
use crate::stopped;

/// Runs a task's operations and encodes the result message, off the async
/// threads. For a JPEG result the tile travels as a JPEG of the job's
/// quality, which the master joins without decoding; otherwise as PNG:
/// processed tiles compress to about a fifth (blurred noise), and the broker
/// carries fewer bytes (see the README).
async fn process(task: Task, worker_id: &str) -> anyhow::Result<Vec<u8>> {
    let Task { header, input } = task;
    ops::validate_chain(&header.ops)?;
    anyhow::ensure!(header.halo == ops::chain_halo(&header.ops), "halo does not match the operations");
    let worker_id = worker_id.to_owned();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let output = ops::process_tile(&header.ops, input, header.halo);
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let jpeg = header.jpeg_tile_quality.and_then(|quality| pipeline::jpeg::encode_tile(&output, quality).ok());
        let (encoding, pixels) = match jpeg {
            Some(jpeg) => (Encoding::Jpeg, jpeg),
            None => (Encoding::Png, codec::encode(&output, Encoding::Png)),
        };
        let result = ResultHeader {
            job_id: header.job_id,
            tile: header.tile,
            rect: header.rect,
            worker_id,
            elapsed_ms,
            channels: output.channels,
            encoding,
        };
        result.encode(&pixels)
    })
    .await
    .map_err(|e| anyhow::anyhow!("the operations panicked: {}", panic_message(e)))
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned()),
        Err(e) => e.to_string(),
    }
}

/// A record to send for a task.
pub(crate) struct Outgoing {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Option<OwnedHeaders>,
    /// A tile processed (rather than a failure reported or a task parked).
    pub processed: bool,
}

/// What to send for a task: its result, a failure report, or the task itself
/// to the dead-letter topic; nothing for a tile of a stopped job.
pub(crate) async fn handle(
    message: &BorrowedMessage<'_>,
    id: &str,
    topics: &Topics,
    stopped: &stopped::Stopped,
    status: &Status,
) -> Option<Outgoing> {
    let payload = message.payload().unwrap_or_default();
    let failure = match Task::decode(payload) {
        Ok(task) if stopped.contains(&task.header.job_id) => {
            debug!(job = %task.header.job_id, tile = task.header.tile, "skipping a tile of a stopped job");
            return None;
        }
        Ok(task) => match run_task(task, id, status).await {
            Ok((key, payload)) => {
                let (topic, key) = (topics.results.clone(), Some(key.into_bytes()));
                return Some(Outgoing { topic, key, payload, headers: None, processed: true });
            }
            Err(failure) => failure,
        },
        Err(e) => {
            warn!(error = %e, offset = message.offset(), "a malformed task");
            // Tell the master if the task says whose it is; else park it.
            let Some(TaskIds { job_id, tile, attempt }) = TaskHeader::peek(payload) else {
                let headers = OwnedHeaders::new().insert(Header { key: "error", value: Some(&e.to_string()) });
                return Some(Outgoing {
                    topic: topics.dead_letters.clone(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: payload.to_vec(),
                    headers: Some(headers),
                    processed: false,
                });
            };
            TileFailure {
                job_id,
                tile,
                worker_id: id.to_owned(),
                error: format!("malformed task: {e}"),
                attempt,
                unsupported: TaskHeader::unknown_op(payload),
            }
        }
    };
    let key = TileKey::new(&failure.job_id, failure.tile).to_string();
    Some(Outgoing {
        topic: topics.results.clone(),
        key: Some(key.into_bytes()),
        payload: failure.encode(),
        headers: None,
        processed: false,
    })
}

/// Processes a task, named in the heartbeats meanwhile: its key and result
/// message, or the failure to report.
async fn run_task(task: Task, id: &str, status: &Status) -> Result<(String, Vec<u8>), TileFailure> {
    let (job, tile, attempt) = (task.header.job_id.clone(), task.header.tile, task.header.attempt);
    let key = TileKey::new(&job, tile).to_string();
    *status.current.lock().expect("lock") = Some(key.clone());
    let result = process(task, id).await;
    *status.current.lock().expect("lock") = None;
    result.map(|payload| (key, payload)).map_err(|e| {
        warn!(job = %job, tile, error = %e, "a tile failed");
        TileFailure { job_id: job, tile, worker_id: id.to_owned(), error: format!("{e:#}"), attempt, unsupported: None }
    })
}
