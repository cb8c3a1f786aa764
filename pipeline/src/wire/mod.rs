//! The Kafka wire format, described for writers of workers in other
//! languages in `docs/protocol.md`. Task and result messages are binary:
//!
//! ```text
//! magic (4 bytes: "TPT1" task, "TPR1" result, "TPF1" failure)
//! header length (u32, little endian)
//! header (UTF-8 JSON object, that many bytes)
//! pixels (the rest: raw 8-bit samples, row-major, no padding; RGB, or RGBA
//! when the header says "channels": 4; instead, when the header's
//! "encoding" says so, a task's may be a JPEG of a region of the upload and
//! a result's a PNG or JPEG file; none in a failure)
//! ```
//!
//! The JSON header keeps the format easy to read from any language.
//! Heartbeats and control messages carry no pixels and are plain JSON.
//! One module per kind of message: `task`, `reply` (results and failures),
//! `control` (the JSON messages) and `names` (tile keys, topic names); this
//! one holds the framing and the limits every message is checked against.

mod control;
mod names;
mod reply;
mod task;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use control::{Control, Heartbeat, MAX_CPU_PERCENT, MAX_HOST_BYTES, MAX_RUNTIME_BYTES};
pub use names::{TileKey, Topics};
pub use reply::{MAX_OP_NAME_BYTES, RawReply, Reply, ResultHeader, TileFailure, TileResult};
pub use task::{MAX_SOURCE_SIDE, Source, Task, TaskHeader, TaskIds};

use crate::codec::CodecError;
use crate::frame::{Channels, Frame};
use crate::geometry::Rect;

pub const TASK_MAGIC: &[u8; 4] = b"TPT1";
pub const RESULT_MAGIC: &[u8; 4] = b"TPR1";
pub const FAILURE_MAGIC: &[u8; 4] = b"TPF1";

fn is_zero(n: &u32) -> bool {
    *n == 0
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
