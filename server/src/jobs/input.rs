//! What a running job's tasks are made from: its decoded image, or lossless
//! crops of its JPEG. A splitter thread cuts every crop in one pass over the
//! scan, holding only the MCU rows the next crops need, appends each to the
//! job's crop file (dispatch and any retry read it from there) and hands its
//! index to dispatch. It runs ahead of dispatch at its own speed: that pass
//! is also what checks the scan, and an upload is answered when it ends.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

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
    Jpeg { layout: Layout, crops: Arc<Crops> },
}

/// What one task's payload is made from, taken out of the job's lock.
pub enum Payload {
    Pixels(Arc<Frame>),
    Crop(Arc<Crops>, u32),
}

/// A job's crops, appended to one file as the splitter cuts them, and where
/// each lies. One file rather than one per tile: creating (and at the end
/// deleting) thousands of small files cost the master more CPU than writing
/// their bytes.
pub struct Crops {
    file: std::fs::File,
    index: Mutex<CropIndex>,
}

struct CropIndex {
    end: u64,
    /// Each tile's crop: its offset and length, once cut.
    at: Vec<Option<(u64, usize)>>,
}

impl Crops {
    /// An empty crop file at `path` (emptied if it exists) for `tiles` tiles.
    pub fn create(path: &Path, tiles: u32) -> std::io::Result<Self> {
        let file = std::fs::File::options().read(true).write(true).create(true).truncate(true).open(path)?;
        Ok(Self { file, index: Mutex::new(CropIndex { end: 0, at: vec![None; tiles as usize] }) })
    }

    /// Appends `tile`'s crop (the splitter is the only writer).
    fn append(&self, tile: u32, crop: &[u8]) -> std::io::Result<()> {
        let offset = self.index.lock().expect("lock").end;
        self.file.write_all_at(crop, offset)?;
        let mut index = self.index.lock().expect("lock");
        index.end = offset + crop.len() as u64;
        if let Some(at) = index.at.get_mut(tile as usize) {
            *at = Some((offset, crop.len()));
        }
        Ok(())
    }

    /// `tile`'s crop (blocking).
    fn read(&self, tile: u32) -> anyhow::Result<Vec<u8>> {
        let at = self.index.lock().expect("lock").at.get(tile as usize).copied().flatten();
        let (offset, len) = at.with_context(|| format!("tile {tile} has not been cut"))?;
        let mut crop = vec![0; len];
        self.file.read_exact_at(&mut crop, offset).context("reading a crop")?;
        Ok(crop)
    }
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
            Input::Jpeg { layout, crops } => {
                let (x, y, width, height) = layout.bounds(covering(layout, header.rect, header.halo));
                let (image_width, image_height) = (layout.width, layout.height);
                header.encoding = Encoding::Jpeg;
                header.source = Some(Source { x, y, width, height, image_width, image_height });
                Payload::Crop(Arc::clone(crops), header.tile)
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
            Payload::Crop(crops, tile) => Ok(Task::encode_jpeg(&header, &crops.read(tile)?)),
        }
    }
}

/// The MCUs a tile's task carries: the tile and its halo, clamped to the
/// image (the halo's mirrored pixels lie inside that), plus the margin.
fn covering(layout: &Layout, rect: Rect, halo: u32) -> McuRect {
    let halo = i64::from(halo);
    let (x, y) = (i64::from(rect.x), i64::from(rect.y));
    layout.covering((x - halo, y - halo, x + i64::from(rect.width) + halo, y + i64::from(rect.height) + halo))
}

/// Blocking: cuts `tiles` (in grid order) out of the JPEG at `path`, appends
/// each crop to `crops` and then sends its index. Stops early when the
/// receiver is gone (the job stopped); sends the error if the file cannot be
/// read or split, and tells `verdict` either way.
pub fn split(
    path: &Path,
    grid: TileGrid,
    halo: u32,
    tiles: &[u32],
    crops: &Crops,
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
            if let Err(e) = crops.append(tiles[i], &crop.bytes) {
                failed = Some(anyhow::anyhow!("writing a crop: {e}"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_are_read_back_from_one_file_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let crops = Crops::create(&dir.path().join("crops"), 4).unwrap();
        crops.append(2, b"second tile").unwrap();
        crops.append(0, b"first").unwrap();
        assert_eq!(crops.read(0).unwrap(), b"first");
        assert_eq!(crops.read(2).unwrap(), b"second tile");
        assert!(crops.read(1).unwrap_err().to_string().contains("not been cut"));
        assert!(crops.read(9).is_err(), "outside the grid");
        // A resumed job cuts again into an emptied file.
        let again = Crops::create(&dir.path().join("crops"), 4).unwrap();
        assert!(again.read(0).is_err());
        assert_eq!(std::fs::metadata(dir.path().join("crops")).unwrap().len(), 0);
    }
}
