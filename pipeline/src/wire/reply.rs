//! Replies: a processed tile (its pixels raw, PNG or JPEG) or a failure.

use serde::{Deserialize, Serialize};

use super::{
    FAILURE_MAGIC, MAX_ERROR_BYTES, RESULT_MAGIC, WireError, check_id, check_rect, decode, encode, is_zero, truncate,
};
use crate::codec::{self, Encoding};
use crate::frame::{Channels, Frame};
use crate::geometry::Rect;

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

#[derive(Debug, Clone, PartialEq)]
pub struct TileResult {
    pub header: ResultHeader,
    pub output: Frame,
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

/// Longest operation name a failure's `unsupported` keeps.
pub const MAX_OP_NAME_BYTES: usize = 64;
