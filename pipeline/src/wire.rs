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
use crate::ops::{self, Operation};

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
    /// Which sending of the tile this is (1, 2, ...), echoed in a failure so
    /// that a late report of an earlier attempt is not counted again; 0 when
    /// absent (unknown).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// How the pixels travel: `raw` (when absent) or `jpeg`.
    #[serde(default, skip_serializing_if = "Encoding::is_raw")]
    pub encoding: Encoding,
    /// For `jpeg`: where the JPEG's region lies in the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// The job's result is a JPEG of this quality (1..=100): the worker may
    /// answer with its tile coded as [`crate::jpeg::encode_tile`] codes it,
    /// which the master joins into the result without decoding. A PNG or
    /// raw answer is still taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jpeg_quality: Option<u8>,
}

/// The region of the image a `jpeg` task carries (a window around the tile
/// and its halo, clamped to the image), and the image's size, whose borders
/// the halo mirrors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub image_width: u32,
    pub image_height: u32,
}

/// The largest side of a `jpeg` task's region: a tile, its halo and up to
/// two MCUs (32 px each) of alignment and margin on each side.
pub const MAX_SOURCE_SIDE: u32 = MAX_TILE_SIDE + 2 * ops::MAX_HALO + 128;

fn is_zero(n: &u32) -> bool {
    *n == 0
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
    /// The task's `attempt`; 0 when absent (counted whatever the attempt).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// The operation this worker does not implement, when that is why: the
    /// master sends the tile to another partition's worker, without
    /// spending an attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
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

/// A tile's name on the wire, `<job id>/<tile index>`: the key of its task,
/// its result and its dead letter, and a heartbeat's `current_tile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileKey<'a> {
    pub job_id: &'a str,
    pub tile: u32,
}

impl<'a> TileKey<'a> {
    pub fn new(job_id: &'a str, tile: u32) -> Self {
        TileKey { job_id, tile }
    }

    /// Reads a key written by [`TileKey`]'s `Display`; `None` if it is not one.
    pub fn parse(key: &'a str) -> Option<Self> {
        let (job_id, tile) = key.rsplit_once('/')?;
        (!job_id.is_empty() && tile.bytes().all(|b| b.is_ascii_digit()))
            .then(|| Some(TileKey { job_id, tile: tile.parse().ok()? }))
            .flatten()
    }
}

impl std::fmt::Display for TileKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.job_id, self.tile)
    }
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

/// Largest message on any topic: a 2048 px tile with a 127 px halo is ~15 MiB.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;

/// Largest tile side a task or result may describe (the master's largest tile size).
pub const MAX_TILE_SIDE: u32 = 2048;

/// Longest job or worker id a message may carry, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// Longest failure reason kept from a worker, in bytes; the rest is cut.
pub const MAX_ERROR_BYTES: usize = 2000;

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
    /// A header that parses but describes something no sender would make.
    #[error("bad header: {0}")]
    Invalid(String),
}

/// Checks a header's id field: hostile senders can make them megabytes long.
fn check_id(what: &str, id: &str) -> Result<(), WireError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(WireError::Invalid(format!("{what} must be 1..={MAX_ID_BYTES} bytes, got {}", id.len())));
    }
    Ok(())
}

/// Checks a tile's rectangle: within `1..=MAX_TILE_SIDE` on each side and
/// inside the `u32` plane, so that every size derived from it is small.
fn check_rect(rect: Rect) -> Result<(), WireError> {
    let side = 1..=MAX_TILE_SIDE;
    if !side.contains(&rect.width) || !side.contains(&rect.height) {
        return Err(WireError::Invalid(format!(
            "a tile is 1..={MAX_TILE_SIDE} pixels a side, got {}x{}",
            rect.width, rect.height
        )));
    }
    if rect.x.checked_add(rect.width).is_none() || rect.y.checked_add(rect.height).is_none() {
        return Err(WireError::Invalid(format!("the tile at ({}, {}) runs past u32", rect.x, rect.y)));
    }
    Ok(())
}

/// Cuts `text` to at most `max` bytes, at a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
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
        assert!(self.header.encoding.is_raw(), "a task with its input frame is raw");
        encode(TASK_MAGIC, &self.header, &self.input.pixels)
    }

    /// A `jpeg` task: the header (whose `encoding` and `source` say so) and
    /// the JPEG file of its region.
    pub fn encode_jpeg(header: &TaskHeader, jpeg: &[u8]) -> Vec<u8> {
        assert!(header.encoding == Encoding::Jpeg && header.source.is_some(), "a jpeg task's header");
        encode(TASK_MAGIC, header, jpeg)
    }

    /// Checks the header (see [`TaskHeader::input_size`]) before anything is
    /// allocated from it; a `jpeg` task's region is decoded and the tile's
    /// input (with its mirrored halo) cut from it.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let (header, pixels): (TaskHeader, _) = decode(TASK_MAGIC, bytes)?;
        let (w, h) = header.input_size()?;
        let input = match header.encoding {
            Encoding::Raw => frame(w, h, header.channels, pixels)?,
            Encoding::Jpeg => {
                let source = header.check_source()?;
                let region = crate::jpeg::decode(pixels, source.width, source.height)
                    .map_err(|e| WireError::Invalid(e.to_string()))?;
                let image = (source.image_width, source.image_height);
                region
                    .window_with_halo((source.x, source.y), image, header.rect, header.halo)
                    .ok_or_else(|| WireError::Invalid("the JPEG region does not cover the tile and its halo".into()))?
            }
            Encoding::Png => return Err(WireError::Invalid("a task is raw or jpeg, not png".into())),
        };
        Ok(Task { header, input })
    }
}

impl TileResult {
    /// # Panics
    /// If the header's channels are not the output's.
    pub fn encode(&self) -> Vec<u8> {
        assert_eq!(self.header.channels, self.output.channels, "result header channels");
        self.header.encode(&codec::encode(&self.output, self.header.encoding))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        match RawReply::parse(bytes)? {
            RawReply::Done(header, pixels) => header.decode_pixels(pixels).map(|output| TileResult { header, output }),
            RawReply::Failed(_) => Err(WireError::Magic(*FAILURE_MAGIC)),
        }
    }
}

impl TaskHeader {
    /// The size of the input frame (the tile grown by its halo), once the
    /// ids, the rect and the halo are checked: no arithmetic on them can
    /// overflow and no frame derived from them is larger than a tile with
    /// [`ops::MAX_HALO`].
    pub fn input_size(&self) -> Result<(u32, u32), WireError> {
        check_id("job_id", &self.job_id)?;
        check_rect(self.rect)?;
        if self.halo > ops::MAX_HALO {
            return Err(WireError::Invalid(format!("halo must be at most {}, got {}", ops::MAX_HALO, self.halo)));
        }
        if self.jpeg_quality.is_some_and(|q| !(1..=100).contains(&q)) {
            return Err(WireError::Invalid("jpeg_quality must be 1..=100".into()));
        }
        // Both below 2048 + 2 * 512: no overflow.
        Ok((self.rect.width + 2 * self.halo, self.rect.height + 2 * self.halo))
    }

    /// A `jpeg` task's source: RGB, at most [`MAX_SOURCE_SIDE`] a side,
    /// inside an image that holds the tile.
    fn check_source(&self) -> Result<Source, WireError> {
        let invalid = |why: &str| Err(WireError::Invalid(format!("jpeg source: {why}")));
        let Some(s) = self.source else { return invalid("missing") };
        if self.channels != Channels::Rgb {
            return invalid("a JPEG region is RGB");
        }
        let side = 1..=MAX_SOURCE_SIDE;
        if !side.contains(&s.width) || !side.contains(&s.height) {
            return invalid("1..=MAX_SOURCE_SIDE pixels a side");
        }
        let inside = |at: u32, size: u32, limit: u32| u64::from(at) + u64::from(size) <= u64::from(limit);
        if !inside(s.x, s.width, s.image_width) || !inside(s.y, s.height, s.image_height) {
            return invalid("outside the image");
        }
        let r = self.rect;
        if !inside(r.x, r.width, s.image_width) || !inside(r.y, r.height, s.image_height) {
            return invalid("the tile is outside the image");
        }
        Ok(s)
    }

    /// The job, tile and attempt a task names, read from its header alone:
    /// enough to report a task whose pixels or operations are unusable.
    pub fn peek(bytes: &[u8]) -> Option<TaskIds> {
        let (ids, _): (TaskIds, _) = decode(TASK_MAGIC, bytes).ok()?;
        check_id("job_id", &ids.job_id).ok()?;
        Some(ids)
    }
}

impl TaskHeader {
    /// The first operation of a task's chain that this build does not know
    /// (one newer than it), read from the header alone: the worker declines
    /// such a task as unsupported, so the master can send it elsewhere.
    pub fn unknown_op(bytes: &[u8]) -> Option<String> {
        #[derive(Deserialize)]
        struct Named {
            op: String,
        }
        #[derive(Deserialize)]
        struct Chain {
            ops: Vec<Named>,
        }
        let (chain, _): (Chain, _) = decode(TASK_MAGIC, bytes).ok()?;
        let op = chain.ops.into_iter().map(|n| n.op).find(|op| !ops::NAMES.contains(&op.as_str()))?;
        Some(truncate(&op, MAX_OP_NAME_BYTES).to_owned())
    }
}

/// What names a task, whatever else its header holds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TaskIds {
    pub job_id: String,
    pub tile: u32,
    #[serde(default)]
    pub attempt: u32,
}

impl ResultHeader {
    /// A result message: this header and its pixels, already encoded as
    /// its `encoding` says.
    pub fn encode(&self, pixels: &[u8]) -> Vec<u8> {
        encode(RESULT_MAGIC, self, pixels)
    }

    /// Checks the ids and the rect: a result's pixels are never decoded into
    /// more than a [`MAX_TILE_SIDE`] tile.
    pub fn check(&self) -> Result<(), WireError> {
        check_id("job_id", &self.job_id)?;
        check_id("worker_id", &self.worker_id)?;
        check_rect(self.rect)?;
        if !self.elapsed_ms.is_finite() || self.elapsed_ms < 0.0 {
            return Err(WireError::Invalid(format!("elapsed_ms must be a time, got {}", self.elapsed_ms)));
        }
        Ok(())
    }

    /// Decodes the pixels that followed this header, which must be exactly
    /// its rect's (the PNG decoder allocates no more than that).
    pub fn decode_pixels(&self, pixels: &[u8]) -> Result<Frame, WireError> {
        self.check()?;
        let shape = (self.rect.width, self.rect.height, self.channels);
        Ok(codec::decode(pixels, self.encoding, shape)?)
    }
}

impl TileFailure {
    pub fn encode(&self) -> Vec<u8> {
        encode(FAILURE_MAGIC, self, &[])
    }
}

/// A reply whose header is parsed and checked but whose pixels are not yet
/// decoded: the master checks the header against the job first.
#[derive(Debug, Clone, PartialEq)]
pub enum RawReply<'a> {
    Done(ResultHeader, &'a [u8]),
    Failed(TileFailure),
}

impl<'a> RawReply<'a> {
    /// Reads the magic and the header, and checks the header: nothing is
    /// allocated from the sender's numbers. A failure's error is cut to
    /// [`MAX_ERROR_BYTES`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        if bytes.starts_with(FAILURE_MAGIC) {
            let (mut failure, _): (TileFailure, _) = decode(FAILURE_MAGIC, bytes)?;
            check_id("job_id", &failure.job_id)?;
            check_id("worker_id", &failure.worker_id)?;
            failure.error.truncate(truncate(&failure.error, MAX_ERROR_BYTES).len());
            if let Some(op) = &mut failure.unsupported {
                op.truncate(truncate(op, MAX_OP_NAME_BYTES).len());
            }
            return Ok(RawReply::Failed(failure));
        }
        let (header, pixels): (ResultHeader, _) = decode(RESULT_MAGIC, bytes)?;
        header.check()?;
        Ok(RawReply::Done(header, pixels))
    }
}

impl Reply {
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        Ok(match RawReply::parse(bytes)? {
            RawReply::Done(header, pixels) => {
                let output = header.decode_pixels(pixels)?;
                Reply::Done(TileResult { header, output })
            }
            RawReply::Failed(failure) => Reply::Failed(failure),
        })
    }
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

/// Longest operation name a failure's `unsupported` keeps.
pub const MAX_OP_NAME_BYTES: usize = 64;

/// Longest host name a heartbeat may carry (DNS's limit).
pub const MAX_HOST_BYTES: usize = 255;

/// Longest `runtime` a heartbeat may carry.
pub const MAX_RUNTIME_BYTES: usize = 64;

/// Highest `cpu_percent` a heartbeat may report: 1024 cores, busy.
pub const MAX_CPU_PERCENT: f32 = 102_400.0;

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

/// `width` x `height` must have been checked: their product is small.
fn frame(width: u32, height: u32, channels: Channels, pixels: &[u8]) -> Result<Frame, WireError> {
    let expected = Frame::len_of(width, height, channels);
    if pixels.len() != expected {
        return Err(WireError::Pixels { expected, got: pixels.len() });
    }
    Ok(Frame::with_channels(width, height, channels, pixels.to_vec()))
}

#[cfg(test)]
mod unknown_op_tests {
    use super::*;

    fn task_with(ops: &str) -> Vec<u8> {
        let header =
            format!(r#"{{"job_id":"j","tile":1,"rect":{{"x":0,"y":0,"width":1,"height":1}},"halo":0,"ops":{ops}}}"#);
        encode(TASK_MAGIC, &serde_json::from_str::<serde_json::Value>(&header).unwrap(), &[0, 0, 0])
    }

    #[test]
    fn an_operation_newer_than_this_build_is_named() {
        assert_eq!(
            TaskHeader::unknown_op(&task_with(r#"[{"op":"invert"},{"op":"posterize","levels":4}]"#)),
            Some("posterize".into())
        );
        assert_eq!(
            TaskHeader::unknown_op(&task_with(r#"[{"op":"invert"},{"op":"box_blur","kernel":4}]"#)),
            None,
            "known, if badly used"
        );
        assert_eq!(TaskHeader::unknown_op(b"TPT1"), None);
        let every = crate::ops::NAMES.map(|name| format!(r#"{{"op":"{name}"}}"#)).join(",");
        assert_eq!(TaskHeader::unknown_op(&task_with(&format!("[{every}]"))), None);
    }

    #[test]
    fn every_operation_is_in_the_list_of_names() {
        let all = [
            Operation::default(),
            Operation::BoxBlur { kernel: 3 },
            Operation::Sharpen { radius: 1, amount: 1.0 },
            Operation::EdgeDetect,
            Operation::Grayscale,
            Operation::Invert,
            Operation::BrightnessContrast { brightness: 0.0, contrast: 1.0 },
        ];
        let names: Vec<&str> = all.iter().map(Operation::name).collect();
        assert_eq!(names, crate::ops::NAMES);
    }
}

#[cfg(test)]
mod tile_key_tests {
    use super::TileKey;

    #[test]
    fn a_tile_key_reads_back_what_it_writes_and_nothing_else() {
        let key = TileKey::new("0f1e-job", 17);
        assert_eq!(key.to_string(), "0f1e-job/17");
        assert_eq!(TileKey::parse("0f1e-job/17"), Some(key));
        for bad in ["", "job", "/3", "job/", "job/-1", "job/+1", "job/x", "job/99999999999"] {
            assert_eq!(TileKey::parse(bad), None, "{bad:?}");
        }
    }
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
            attempt: 2,
            encoding: Encoding::Raw,
            source: None,
            jpeg_quality: None,
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
    fn a_task_may_ask_for_a_jpeg_result_of_a_valid_quality() {
        let mut t = task();
        assert!(!String::from_utf8_lossy(&t.encode()).contains("jpeg_quality"), "absent when not asked");
        t.header.jpeg_quality = Some(90);
        let bytes = t.encode();
        assert!(String::from_utf8_lossy(&bytes).contains(r#""jpeg_quality":90"#));
        assert_eq!(Task::decode(&bytes).unwrap(), t);
        for bad in [0, 101] {
            t.header.jpeg_quality = Some(bad);
            let error = Task::decode(&t.encode()).unwrap_err().to_string();
            assert!(error.contains("jpeg_quality must be 1..=100"), "{error}");
        }
    }

    fn result(encoding: Encoding) -> TileResult {
        TileResult {
            header: ResultHeader {
                job_id: "j1".into(),
                tile: 4,
                rect: Rect::new(512, 0, 3, 2),
                worker_id: "w".into(),
                elapsed_ms: 1.5,
                channels: Channels::Rgb,
                encoding,
            },
            output: Frame::new(3, 2, vec![9; 18]),
        }
    }

    #[test]
    fn result_round_trips() {
        let r = result(Encoding::Raw);
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
        let failure = TileFailure {
            job_id: "j1".into(),
            tile: 7,
            worker_id: "w".into(),
            error: "boom".into(),
            attempt: 2,
            unsupported: None,
        };
        let bytes = failure.encode();
        assert_eq!(&bytes[..4], b"TPF1");
        assert_eq!(Reply::decode(&bytes).unwrap(), Reply::Failed(failure));
        assert!(matches!(Reply::decode(b"TPX1\0\0\0\0"), Err(WireError::Magic(_))));
    }

    #[test]
    fn control_messages_are_tagged_json() {
        let stop = Control::JobStopped { job_id: "j1".into() };
        assert_eq!(stop.encode(), br#"{"type":"job_stopped","job_id":"j1"}"#);
        assert_eq!(Control::decode(&stop.encode()).unwrap(), stop);
        let long = Control::JobStopped { job_id: "j".repeat(MAX_ID_BYTES + 1) };
        assert!(matches!(Control::decode(&long.encode()), Err(WireError::Invalid(_))));
    }

    #[test]
    fn a_task_with_bad_pixels_still_names_its_tile() {
        let bytes = task().encode();
        let ids = TaskIds { job_id: "j1".into(), tile: 4, attempt: 2 };
        assert_eq!(TaskHeader::peek(&bytes[..bytes.len() - 3]), Some(ids));
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

    /// A message with `header` (JSON) and `pixels` after `magic`.
    fn message(magic: &[u8; 4], header: &str, pixels: &[u8]) -> Vec<u8> {
        let mut out = magic.to_vec();
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(pixels);
        out
    }

    #[test]
    fn a_rect_that_wraps_around_u32_is_refused_before_any_allocation() {
        // width + 2 * halo wraps to 2 and height + 2 * halo to 3: 18 bytes of
        // pixels would match the wrapped size.
        let w = u32::MAX - 48 + 3;
        let header = format!(
            r#"{{"job_id":"j","tile":0,"rect":{{"x":0,"y":0,"width":{w},"height":{}}},"halo":24,"ops":[]}}"#,
            u32::MAX - 48 + 4
        );
        let bytes = message(TASK_MAGIC, &header, &[0; 18]);
        assert!(matches!(Task::decode(&bytes), Err(WireError::Invalid(_))), "{:?}", Task::decode(&bytes));
        // Still reported by its ids.
        assert_eq!(TaskHeader::peek(&bytes).map(|ids| ids.tile), Some(0));
        for (rect, halo) in [
            ("\"x\":0,\"y\":0,\"width\":0,\"height\":4", 0),
            ("\"x\":0,\"y\":0,\"width\":2049,\"height\":4", 0),
            ("\"x\":4294967295,\"y\":0,\"width\":2,\"height\":4", 0),
            ("\"x\":0,\"y\":0,\"width\":4,\"height\":4", 513),
        ] {
            let header = format!(r#"{{"job_id":"j","tile":0,"rect":{{{rect}}},"halo":{halo},"ops":[]}}"#);
            assert!(matches!(Task::decode(&message(TASK_MAGIC, &header, &[])), Err(WireError::Invalid(_))), "{rect}");
        }
    }

    #[test]
    fn a_result_claiming_a_huge_tile_is_refused_from_its_header() {
        let header = r#"{"job_id":"j","tile":0,"rect":{"x":0,"y":0,"width":100000,"height":100000},"worker_id":"w","elapsed_ms":1,"encoding":"png"}"#;
        let bytes = message(RESULT_MAGIC, header, &[0; 1000]);
        assert!(matches!(RawReply::parse(&bytes), Err(WireError::Invalid(_))));
        assert!(matches!(Reply::decode(&bytes), Err(WireError::Invalid(_))));
        let nan = header.replace("100000", "4").replace(r#""elapsed_ms":1"#, r#""elapsed_ms":-1"#);
        assert!(matches!(RawReply::parse(&message(RESULT_MAGIC, &nan, &[])), Err(WireError::Invalid(_))));
    }

    #[test]
    fn ids_are_bounded_and_failure_reasons_cut() {
        let long = "x".repeat(MAX_ID_BYTES + 1);
        let failure = TileFailure {
            job_id: long.clone(),
            tile: 0,
            worker_id: "w".into(),
            error: "e".into(),
            attempt: 0,
            unsupported: None,
        };
        assert!(matches!(RawReply::parse(&failure.encode()), Err(WireError::Invalid(_))));
        let chatty = TileFailure { job_id: "j".into(), error: "é".repeat(MAX_ERROR_BYTES), ..failure };
        let Ok(RawReply::Failed(parsed)) = RawReply::parse(&chatty.encode()) else { panic!("a failure") };
        assert_eq!(parsed.error.len(), MAX_ERROR_BYTES);
        let mut t = task();
        t.header.job_id = long;
        assert!(matches!(Task::decode(&t.encode()), Err(WireError::Invalid(_))));
        assert_eq!(TaskHeader::peek(&t.encode()), None);
        assert_eq!(truncate("aé", 2), "a");
    }

    #[test]
    fn heartbeats_have_bounded_names() {
        let beat = Heartbeat {
            worker_id: "w".into(),
            host: "h".into(),
            pid: 1,
            current_tile: Some("j/1".into()),
            tiles_done: 0,
            sent_at_ms: 0,
            cpu_percent: Some(87.5),
            rss_bytes: Some(48 << 20),
            runtime: Some("tilepipe-worker 0.1.0 (Rust)".into()),
        };
        assert_eq!(Heartbeat::decode(&beat.encode()).unwrap(), beat);
        // The resources are optional: an older worker's heartbeat still reads.
        let old = br#"{"worker_id":"w","host":"h","pid":1,"current_tile":null,"tiles_done":3,"sent_at_ms":5}"#;
        let read = Heartbeat::decode(old).unwrap();
        assert_eq!((read.cpu_percent, read.rss_bytes, read.runtime), (None, None, None));
        for bad in [
            Heartbeat { worker_id: String::new(), ..beat.clone() },
            Heartbeat { host: "h".repeat(MAX_HOST_BYTES + 1), ..beat.clone() },
            Heartbeat { current_tile: Some("t".repeat(1000)), ..beat.clone() },
            Heartbeat { cpu_percent: Some(MAX_CPU_PERCENT * 2.0), ..beat.clone() },
            Heartbeat { cpu_percent: Some(-1.0), ..beat.clone() },
            Heartbeat { runtime: Some("r".repeat(MAX_RUNTIME_BYTES + 1)), ..beat.clone() },
        ] {
            assert!(matches!(Heartbeat::decode(&bad.encode()), Err(WireError::Invalid(_))), "{bad:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Any numbers in a header and any pixels: an error or a consistent
        /// task, never a panic or a frame larger than the limits allow.
        #[test]
        fn hostile_task_headers_never_panic(
            x in proptest::prelude::any::<u32>(), y in proptest::prelude::any::<u32>(),
            width in proptest::prelude::any::<u32>(), height in proptest::prelude::any::<u32>(),
            halo in proptest::prelude::any::<u32>(), channels in 0u8..6,
            small in 0u32..8, pixels in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        ) {
            // Small sizes often, so some decode.
            let (width, height) = if small > 3 { (width % 5, height % 5) } else { (width, height) };
            let halo = if small > 5 { halo % 3 } else { halo };
            let header = format!(
                r#"{{"job_id":"j","tile":1,"rect":{{"x":{x},"y":{y},"width":{width},"height":{height}}},"halo":{halo},"ops":[],"channels":{channels}}}"#
            );
            if let Ok(task) = Task::decode(&message(TASK_MAGIC, &header, &pixels)) {
                proptest::prop_assert_eq!(task.input.pixels.len(), pixels.len());
                proptest::prop_assert_eq!(task.input.width, width + 2 * halo);
            }
            let result = header.replace(r#""halo""#, r#""worker_id":"w","elapsed_ms":0,"h""#);
            for encoding in ["raw", "png"] {
                let result = result.replace(r#""ops":[]"#, &format!(r#""encoding":"{encoding}""#));
                if let Ok(Reply::Done(r)) = Reply::decode(&message(RESULT_MAGIC, &result, &pixels)) {
                    proptest::prop_assert_eq!(r.output.width, width);
                }
            }
        }

        /// Any byte of a valid task or result flipped: an error or a message
        /// that is still consistent.
        #[test]
        fn corrupted_messages_never_panic(at in 0usize..400, value in proptest::prelude::any::<u8>()) {
            for mut bytes in [task().encode(), result(Encoding::Png).encode()] {
                let at = at % bytes.len();
                bytes[at] = value;
                if let Ok(t) = Task::decode(&bytes) {
                    proptest::prop_assert_eq!(t.input.pixels.len(), Frame::len_of(t.input.width, t.input.height, t.input.channels));
                }
                if let Ok(Reply::Done(r)) = Reply::decode(&bytes) {
                    proptest::prop_assert_eq!(r.output.width, r.header.rect.width);
                }
                let _ = TaskHeader::peek(&bytes);
            }
        }
    }

    /// A JPEG of `frame`'s pixels, as an upload would be.
    fn jpeg_of(frame: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        let (w, h) = (frame.width as u16, frame.height as u16);
        jpeg_encoder::Encoder::new(&mut out, 90).encode(&frame.pixels, w, h, jpeg_encoder::ColorType::Rgb).unwrap();
        out
    }

    #[test]
    fn a_jpeg_task_carries_its_tiles_input_exactly() {
        let pixels = (0..200u32 * 120 * 3).map(|i| (i * 7 % 251) as u8).collect();
        let upload = jpeg_of(&Frame::new(200, 120, pixels));
        let whole = image::load_from_memory(&upload).unwrap().into_rgb8();
        let whole = Frame::new(200, 120, whole.into_raw());
        let (jpeg, scan) = crate::jpeg::Jpeg::parse(&upload).unwrap();
        let layout = jpeg.layout();
        let (rect, halo) = (Rect { x: 0, y: 64, width: 64, height: 56 }, 25);
        let region = (-25, 39, 89, 145);
        let mcus = layout.covering(region);
        let (x, y, width, height) = layout.bounds(mcus);
        let mut crop = None;
        jpeg.split(scan, &[mcus], |_, c| {
            crop = Some(c.bytes);
            true
        })
        .unwrap();
        let source = Source { x, y, width, height, image_width: 200, image_height: 120 };
        let header = TaskHeader { encoding: Encoding::Jpeg, source: Some(source), rect, halo, ..task().header };
        let bytes = Task::encode_jpeg(&header, &crop.unwrap());
        assert!(bytes.len() < Frame::len_of(114, 106, Channels::Rgb) / 2, "{} bytes", bytes.len());
        let decoded = Task::decode(&bytes).unwrap();
        assert!(decoded.input == whole.crop_with_halo(rect, halo), "the tile's input differs from the whole image's");

        // A region that misses part of the halo, or lies outside the image, is refused.
        let short = TaskHeader { source: Some(Source { height: height - 16, ..source }), ..header.clone() };
        assert!(Task::decode(&Task::encode_jpeg(&short, &[0xFF, 0xD8])).is_err());
        let outside = TaskHeader { source: Some(Source { image_height: 60, ..source }), ..header.clone() };
        let refused = Task::decode(&Task::encode_jpeg(&outside, &[0xFF, 0xD8])).unwrap_err();
        assert!(refused.to_string().contains("outside the image"), "{refused}");
        let huge = TaskHeader { source: Some(Source { width: 1 << 20, ..source }), ..header };
        assert!(Task::decode(&Task::encode_jpeg(&huge, &[0xFF, 0xD8])).is_err());
    }
}
