//! What a running job's tasks are made from: its decoded image, or lossless
//! crops of its JPEG. A splitter thread cuts every crop in one pass over the
//! scan, holding only the MCU rows the next crops need, writes each next to
//! the tile files (dispatch and any retry read it from there) and hands its
//! index to dispatch. It runs ahead of dispatch at its own speed: that pass
//! is also what checks the scan, and an upload is answered when it ends.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use pipeline::codec::Encoding;
use pipeline::jpeg::{Jpeg, JpegError, Layout, McuRect};
use pipeline::wire::{Source, Task, TaskHeader};
use pipeline::{Channels, Frame, Rect, TileGrid};
use tokio::sync::mpsc;

/// Told once the splitter has read the whole scan of a new upload: whether
/// it decoded, or how it is malformed. (Other failures, such as a full
/// disk, fail the job instead: they are not the upload's fault.)
pub type ScanVerdict = tokio::sync::oneshot::Sender<Result<(), JpegError>>;

pub enum Input {
    Pixels(Arc<Frame>),
    Jpeg { layout: Layout, tiles_dir: PathBuf },
}

/// What one task's payload is made from, taken out of the job's lock.
pub enum Payload {
    Pixels(Arc<Frame>),
    Crop(PathBuf),
}

impl Input {
    pub fn channels(&self) -> Channels {
        match self {
            Input::Pixels(frame) => frame.channels,
            Input::Jpeg { .. } => Channels::Rgb,
        }
    }

    /// The payload of `header`'s task, whose encoding and source it sets.
    pub fn payload(&self, header: &mut TaskHeader) -> Payload {
        match self {
            Input::Pixels(frame) => Payload::Pixels(Arc::clone(frame)),
            Input::Jpeg { layout, tiles_dir } => {
                let (x, y, width, height) = layout.bounds(covering(layout, header.rect, header.halo));
                let (image_width, image_height) = (layout.width, layout.height);
                header.encoding = Encoding::Jpeg;
                header.source = Some(Source { x, y, width, height, image_width, image_height });
                Payload::Crop(crop_path(tiles_dir, header.tile))
            }
        }
    }
}

impl Payload {
    /// The task message (blocking: cuts pixels or reads the crop's file).
    pub fn encode(self, header: TaskHeader) -> anyhow::Result<Vec<u8>> {
        match self {
            Payload::Pixels(frame) => {
                let input = frame.crop_with_halo(header.rect, header.halo);
                Ok(Task { header, input }.encode())
            }
            Payload::Crop(path) => {
                let crop = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                Ok(Task::encode_jpeg(&header, &crop))
            }
        }
    }
}

/// Where tile `tile`'s crop is kept while its job runs (beside its result,
/// which may be `<tile>.jpg`).
fn crop_path(tiles_dir: &Path, tile: u32) -> PathBuf {
    tiles_dir.join(format!("{tile}.crop.jpg"))
}

/// The MCUs a tile's task carries: the tile and its halo, clamped to the
/// image (the halo's mirrored pixels lie inside that), plus the margin.
fn covering(layout: &Layout, rect: Rect, halo: u32) -> McuRect {
    let halo = i64::from(halo);
    let (x, y) = (i64::from(rect.x), i64::from(rect.y));
    layout.covering((x - halo, y - halo, x + i64::from(rect.width) + halo, y + i64::from(rect.height) + halo))
}

/// Blocking: cuts `tiles` (in grid order) out of the JPEG at `path`, writes
/// each crop to its file and then sends its index. Stops early when the
/// receiver is gone (the job stopped); sends the error if the file cannot be
/// read or split, and tells `verdict` either way.
pub fn split(
    path: &Path,
    grid: TileGrid,
    halo: u32,
    tiles: &[u32],
    tiles_dir: &Path,
    tx: &mpsc::UnboundedSender<anyhow::Result<u32>>,
    verdict: Option<ScanVerdict>,
) {
    let split = || -> anyhow::Result<()> {
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut file = std::io::BufReader::new(file);
        let jpeg = Jpeg::read(&mut file)?;
        let layout = jpeg.layout();
        let wanted: Vec<McuRect> =
            tiles.iter().map(|&t| covering(&layout, grid.tile(t).expect("a tile of the grid"), halo)).collect();
        let mut failed = None;
        jpeg.split(file, &wanted, |i, crop| {
            let path = crop_path(tiles_dir, tiles[i]);
            if let Err(e) = write_atomically(&path, &crop.bytes) {
                failed = Some(anyhow::anyhow!("writing {}: {e}", path.display()));
                return false;
            }
            tx.send(Ok(tiles[i])).is_ok()
        })?;
        failed.map_or(Ok(()), Err)
    };
    let result = split();
    if let Some(verdict) = verdict {
        let malformed = result.as_ref().err().and_then(|e| e.downcast_ref::<JpegError>().cloned());
        let _ = verdict.send(malformed.map_or(Ok(()), Err));
    }
    if let Err(e) = result {
        let _ = tx.send(Err(e.context("cutting the JPEG into tiles")));
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("jpg.tmp");
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}
