//! Tasks: a tile to process, its halo and its chain, with its input raw or
//! as a JPEG region of the upload.

use serde::{Deserialize, Serialize};

use super::{
    MAX_OP_NAME_BYTES, MAX_TILE_SIDE, TASK_MAGIC, WireError, check_id, check_rect, decode, encode, frame, is_zero,
    truncate,
};
use crate::codec::Encoding;
use crate::frame::{Channels, Frame};
use crate::geometry::Rect;
use crate::ops::{self, Operation};

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
    /// answer with its tile coded as [`crate::jpeg::encode_tile`] codes it
    /// (4:2:0), which the master joins into the result without decoding. A
    /// PNG or raw answer is still taken. (It replaced `jpeg_quality`, whose
    /// tiles were 4:4:4 from quality 90: a worker that knows only that name
    /// now answers PNG instead of coding tiles the master would refuse.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jpeg_tile_quality: Option<u8>,
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

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub header: TaskHeader,
    pub input: Frame,
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
        if self.jpeg_tile_quality.is_some_and(|q| !(1..=100).contains(&q)) {
            return Err(WireError::Invalid("jpeg_tile_quality must be 1..=100".into()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::TASK_MAGIC;

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
