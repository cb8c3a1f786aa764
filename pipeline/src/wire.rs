//! The Kafka wire format. Task and result messages are binary:
//!
//! ```text
//! magic (4 bytes: "TPT1" task, "TPR1" result, "TPF1" failure)
//! header length (u32, little endian)
//! header (UTF-8 JSON object, that many bytes)
//! pixels (the rest: raw 8-bit samples, row-major, no padding; RGB, or RGBA
//! when the header says "channels": 4; in a result, a PNG file instead when
//! its header says "encoding": "png"; none in a failure)
//! ```
//!
//! The JSON header keeps the format easy to read from any language. Tasks
//! travel raw: tiles of noisy input barely compress and raw costs no CPU.
//! Results may be PNG: processed tiles (blurred ones above all) compress well,
//! and the broker carries fewer bytes.
//! Heartbeats carry no pixels and are plain JSON.

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError, Encoding};
use crate::frame::{Channels, Frame};
use crate::geometry::Rect;
use crate::ops::Operation;

pub const TASK_MAGIC: &[u8; 4] = b"TPT1";
pub const RESULT_MAGIC: &[u8; 4] = b"TPR1";
pub const FAILURE_MAGIC: &[u8; 4] = b"TPF1";

/// One tile to process: `rect` is the tile's place in the image; the pixels
/// are that rectangle grown by `halo` on every side (mirrored at image edges).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskHeader {
    pub job_id: String,
    pub tile: u32,
    pub rect: Rect,
    pub halo: u32,
    pub ops: Vec<Operation>,
    /// 3 (RGB) or 4 (RGBA); 3 when absent.
    #[serde(default)]
    pub channels: Channels,
}

/// A processed tile: `rect.width * rect.height` pixels for `rect` of the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultHeader {
    pub job_id: String,
    pub tile: u32,
    pub rect: Rect,
    pub worker_id: String,
    /// Wall time the worker spent on the operations, in milliseconds.
    pub elapsed_ms: f64,
    /// 3 (RGB) or 4 (RGBA), as in the task; 3 when absent.
    #[serde(default)]
    pub channels: Channels,
    /// How the pixels are encoded; raw when absent.
    #[serde(default)]
    pub encoding: Encoding,
}

/// A tile a worker could not process (a malformed task, a failing
/// operation): the master retries it a bounded number of times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TileFailure {
    pub job_id: String,
    pub tile: u32,
    pub worker_id: String,
    pub error: String,
}

/// What a worker publishes on the results topic for a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Done(TileResult),
    Failed(TileFailure),
}

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

    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        Ok(serde_json::from_slice(bytes)?)
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
}

/// Topic and consumer-group names, all under one prefix so that several
/// tilepipe installations (or tests) can share a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub tasks: String,
    pub results: String,
    pub heartbeats: String,
    /// Tasks that failed too often, kept for inspection and replay.
    pub dead_letters: String,
    /// The master's announcements to all workers (jobs stopped).
    pub control: String,
    /// The consumer group all workers join to share the tasks.
    pub workers_group: String,
    /// The master's consumer group for results.
    pub master_group: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        Self {
            tasks: format!("{prefix}tasks"),
            results: format!("{prefix}results"),
            heartbeats: format!("{prefix}heartbeats"),
            dead_letters: format!("{prefix}dead-letters"),
            control: format!("{prefix}control"),
            workers_group: format!("{prefix}tilepipe-workers"),
            master_group: format!("{prefix}tilepipe-master"),
        }
    }
}

/// Prefix of environment variables that set any Kafka client property, for
/// clusters that need security settings: `TILEPIPE_KAFKA_SASL_MECHANISM=PLAIN`
/// sets `sasl.mechanism`.
pub const KAFKA_ENV_PREFIX: &str = "TILEPIPE_KAFKA_";

/// The Kafka client properties named by `TILEPIPE_KAFKA_*` variables among
/// `vars`: the rest of the name, lower-cased, with `_` for `.`.
pub fn kafka_properties(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut properties: Vec<_> = vars
        .into_iter()
        .filter_map(|(name, value)| {
            let property = name.strip_prefix(KAFKA_ENV_PREFIX)?.to_ascii_lowercase().replace('_', ".");
            (!property.is_empty()).then_some((property, value))
        })
        .collect();
    properties.sort();
    properties
}

/// Largest message on any topic: a 2048 px tile with a 127 px halo is ~15 MiB.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("message is {0} bytes, too short for a header")]
    Truncated(usize),
    #[error("unknown magic {0:?}")]
    Magic([u8; 4]),
    #[error("bad header: {0}")]
    Header(#[from] serde_json::Error),
    #[error("expected {expected} pixel bytes, got {got}")]
    Pixels { expected: usize, got: usize },
    #[error("result pixels: {0}")]
    Codec(#[from] CodecError),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub header: TaskHeader,
    pub input: Frame,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TileResult {
    pub header: ResultHeader,
    pub output: Frame,
}

impl Task {
    /// # Panics
    /// If the header's channels are not the input's.
    pub fn encode(&self) -> Vec<u8> {
        assert_eq!(self.header.channels, self.input.channels, "task header channels");
        encode(TASK_MAGIC, &self.header, &self.input.pixels)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let (header, pixels): (TaskHeader, _) = decode(TASK_MAGIC, bytes)?;
        let (w, h) = (header.rect.width + 2 * header.halo, header.rect.height + 2 * header.halo);
        let input = frame(w, h, header.channels, pixels)?;
        Ok(Task { header, input })
    }
}

impl TileResult {
    /// # Panics
    /// If the header's channels are not the output's.
    pub fn encode(&self) -> Vec<u8> {
        assert_eq!(self.header.channels, self.output.channels, "result header channels");
        encode(RESULT_MAGIC, &self.header, &codec::encode(&self.output, self.header.encoding))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let (header, pixels): (ResultHeader, _) = decode(RESULT_MAGIC, bytes)?;
        let shape = (header.rect.width, header.rect.height, header.channels);
        let output = codec::decode(pixels, header.encoding, shape)?;
        Ok(TileResult { header, output })
    }
}

impl TaskHeader {
    /// The job and tile a task names, read from its header alone: enough to
    /// report a task whose pixels or operations are unusable.
    pub fn peek(bytes: &[u8]) -> Option<(String, u32)> {
        #[derive(Deserialize)]
        struct Ids {
            job_id: String,
            tile: u32,
        }
        let (ids, _): (Ids, _) = decode(TASK_MAGIC, bytes).ok()?;
        Some((ids.job_id, ids.tile))
    }
}

impl TileFailure {
    pub fn encode(&self) -> Vec<u8> {
        encode(FAILURE_MAGIC, self, &[])
    }
}

impl Reply {
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.starts_with(FAILURE_MAGIC) {
            let (failure, _): (TileFailure, _) = decode(FAILURE_MAGIC, bytes)?;
            return Ok(Reply::Failed(failure));
        }
        TileResult::decode(bytes).map(Reply::Done)
    }
}

impl Heartbeat {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("heartbeat serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

fn encode<H: Serialize>(magic: &[u8; 4], header: &H, pixels: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(header).expect("headers serialise");
    let mut out = Vec::with_capacity(8 + json.len() + pixels.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(pixels);
    out
}

fn decode<'a, H: Deserialize<'a>>(magic: &[u8; 4], bytes: &'a [u8]) -> Result<(H, &'a [u8]), WireError> {
    if bytes.len() < 8 {
        return Err(WireError::Truncated(bytes.len()));
    }
    let got: [u8; 4] = bytes[..4].try_into().expect("4 bytes");
    if &got != magic {
        return Err(WireError::Magic(got));
    }
    let len = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    let rest = &bytes[8..];
    if rest.len() < len {
        return Err(WireError::Truncated(bytes.len()));
    }
    let header = serde_json::from_slice(&rest[..len])?;
    Ok((header, &rest[len..]))
}

fn frame(width: u32, height: u32, channels: Channels, pixels: &[u8]) -> Result<Frame, WireError> {
    let expected = Frame::len_of(width, height, channels);
    if pixels.len() != expected {
        return Err(WireError::Pixels { expected, got: pixels.len() });
    }
    Ok(Frame::with_channels(width, height, channels, pixels.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        let header = TaskHeader {
            job_id: "j1".into(),
            tile: 4,
            rect: Rect::new(512, 0, 3, 2),
            halo: 1,
            ops: vec![Operation::default()],
            channels: Channels::Rgb,
        };
        let input = Frame::new(5, 4, (0..60).collect());
        Task { header, input }
    }

    #[test]
    fn rgba_tasks_round_trip_and_rgb_is_the_default() {
        let mut t = task();
        t.header.channels = Channels::Rgba;
        t.input = Frame::with_channels(5, 4, Channels::Rgba, (0..80).collect());
        let bytes = t.encode();
        assert!(String::from_utf8_lossy(&bytes).contains(r#""channels":4"#));
        assert_eq!(Task::decode(&bytes).unwrap(), t);
        // An RGBA payload under a header without "channels" is read as RGB: a size mismatch.
        let json = br#"{"job_id":"j1","tile":4,"rect":{"x":512,"y":0,"width":3,"height":2},"halo":1,"ops":[]}"#;
        let mut old = b"TPT1".to_vec();
        old.extend_from_slice(&(json.len() as u32).to_le_bytes());
        old.extend_from_slice(json);
        old.extend_from_slice(&t.input.pixels);
        assert!(matches!(Task::decode(&old), Err(WireError::Pixels { expected: 60, got: 80 })));
        old.truncate(old.len() - 20);
        assert_eq!(Task::decode(&old).unwrap().header.channels, Channels::Rgb);
    }

    #[test]
    fn task_round_trips() {
        let t = task();
        let bytes = t.encode();
        assert_eq!(&bytes[..4], b"TPT1");
        assert_eq!(Task::decode(&bytes).unwrap(), t);
    }

    #[test]
    fn result_round_trips() {
        let r = TileResult {
            header: ResultHeader {
                job_id: "j1".into(),
                tile: 4,
                rect: Rect::new(512, 0, 3, 2),
                worker_id: "w".into(),
                elapsed_ms: 1.5,
                channels: Channels::Rgb,
                encoding: Encoding::Raw,
            },
            output: Frame::new(3, 2, vec![9; 18]),
        };
        let raw = r.encode();
        let header_len = u32::from_le_bytes(raw[4..8].try_into().unwrap()) as usize;
        assert_eq!(raw.len() - 8 - header_len, 18, "raw pixels follow the header");
        assert_eq!(TileResult::decode(&raw).unwrap(), r);
        let png = TileResult { header: ResultHeader { encoding: Encoding::Png, ..r.header.clone() }, ..r.clone() };
        let bytes = png.encode();
        assert!(String::from_utf8_lossy(&bytes).contains(r#""encoding":"png""#));
        assert_eq!(TileResult::decode(&bytes).unwrap(), png);
        // PNG pixels under a header that says raw are the wrong size.
        let mislabelled = String::from_utf8_lossy(&bytes).replace(r#""encoding":"png""#, r#""encoding":"raw""#);
        assert!(TileResult::decode(mislabelled.as_bytes()).is_err());
    }

    #[test]
    fn replies_are_results_or_failures() {
        let failure = TileFailure { job_id: "j1".into(), tile: 7, worker_id: "w".into(), error: "boom".into() };
        let bytes = failure.encode();
        assert_eq!(&bytes[..4], b"TPF1");
        assert_eq!(Reply::decode(&bytes).unwrap(), Reply::Failed(failure));
        assert!(matches!(Reply::decode(b"TPX1\0\0\0\0"), Err(WireError::Magic(_))));
    }

    #[test]
    fn kafka_properties_come_from_prefixed_variables() {
        let vars = [
            ("TILEPIPE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("TILEPIPE_KAFKA_SSL_CA_LOCATION", "/etc/ca.pem"),
            ("TILEPIPE_BROKERS", "elsewhere:9092"),
            ("TILEPIPE_KAFKA_", "ignored"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let expected = [("security.protocol", "SASL_SSL"), ("ssl.ca.location", "/etc/ca.pem")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(kafka_properties(vars), expected);
    }

    #[test]
    fn control_messages_are_tagged_json() {
        let stop = Control::JobStopped { job_id: "j1".into() };
        assert_eq!(stop.encode(), br#"{"type":"job_stopped","job_id":"j1"}"#);
        assert_eq!(Control::decode(&stop.encode()).unwrap(), stop);
    }

    #[test]
    fn a_task_with_bad_pixels_still_names_its_tile() {
        let bytes = task().encode();
        assert_eq!(TaskHeader::peek(&bytes[..bytes.len() - 3]), Some(("j1".into(), 4)));
        assert_eq!(TaskHeader::peek(b"garbage"), None);
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let bytes = task().encode();
        assert!(matches!(Task::decode(&bytes[..5]), Err(WireError::Truncated(5))));
        assert!(matches!(Task::decode(&bytes[..bytes.len() - 1]), Err(WireError::Pixels { .. })));
        assert!(matches!(TileResult::decode(&bytes), Err(WireError::Magic(_))));
        let mut bad_len = bytes.clone();
        bad_len[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Task::decode(&bad_len), Err(WireError::Truncated(_))));
        let mut bad_json = bytes;
        bad_json[8] = b'x';
        assert!(matches!(Task::decode(&bad_json), Err(WireError::Header(_))));
    }
}
