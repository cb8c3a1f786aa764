//! What a running job's tasks are made from: its decoded pixels in a file
//! (see [`Raster`]), or lossless crops of its JPEG. A reader thread makes
//! them in one pass over the input, holding only the rows the next tiles
//! need, and hands each tile's index to dispatch once its task can be made:
//! it cuts every crop of a JPEG from the scan, appending each to the job's
//! crop file, or decodes a PNG or a TIFF a row at a time into the raster
//! (an image decoded whole is written there at once). Dispatch and
//! any retry read from those files. The reader runs ahead of dispatch at its
//! own speed: that pass is also what checks the upload, which is answered
//! when it ends.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use pipeline::codec::Encoding;
use pipeline::jpeg::{Jpeg, JpegError, Layout, McuRect};
use pipeline::wire::{Source, Task, TaskHeader};
use pipeline::{Channels, Frame, TileGrid};
use tokio::sync::mpsc;

use super::raster::Raster;
use crate::error::AppError;

/// Told once the reader has read the whole of a new upload: whether it
/// decoded, or the answer for a malformed file. (Other failures, such as a
/// full disk, fail the job instead: they are not the upload's fault.)
pub type ScanVerdict = tokio::sync::oneshot::Sender<Result<(), AppError>>;

pub enum Input {
    Raster(Arc<Raster>),
    Jpeg { layout: Layout, crops: Arc<Crops> },
}

/// What one task's payload is made from, taken out of the job's lock.
pub enum Payload {
    Region(Arc<Raster>),
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
            Input::Raster(raster) => raster.channels,
            Input::Jpeg { .. } => Channels::Rgb,
        }
    }

    /// The payload of `header`'s task, whose encoding and source it sets.
    pub fn payload(&self, header: &mut TaskHeader) -> Payload {
        match self {
            Input::Raster(raster) => Payload::Region(Arc::clone(raster)),
            Input::Jpeg { layout, crops } => {
                let (x, y, width, height) = layout.bounds(layout.covering_tile(header.rect, header.halo));
                let (image_width, image_height) = (layout.width, layout.height);
                header.encoding = Encoding::Jpeg;
                header.source = Some(Source { x, y, width, height, image_width, image_height });
                Payload::Crop(Arc::clone(crops), header.tile)
            }
        }
    }
}

impl Payload {
    /// The task message (blocking: reads its region or its crop from the file).
    pub fn encode(self, header: TaskHeader) -> anyhow::Result<Vec<u8>> {
        match self {
            Payload::Region(raster) => {
                let input = raster.region(header.rect, header.halo)?;
                Ok(Task { header, input }.encode())
            }
            Payload::Crop(crops, tile) => Ok(Task::encode_jpeg(&header, &crops.read(tile)?)),
        }
    }
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
            tiles.iter().map(|&t| layout.covering_tile(grid.tile(t).expect("a tile of the grid"), halo)).collect();
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
        let malformed = result.as_ref().err().and_then(|e| e.downcast_ref::<JpegError>());
        let _ = verdict.send(malformed.map_or(Ok(()), |e| Err(crate::intake::corrupt_jpeg(e))));
    }
    if let Err(e) = result {
        let _ = tx.send(Err(e.context("cutting the JPEG into tiles")));
    }
}

/// Rows written to the raster at once, at most.
const BAND_ROWS: u32 = 32;

/// Blocking: decodes the image at `path` (of `format`) a row at a time
/// into `raster` (as its channels), and sends each of `tiles` (in grid
/// order) once the rows its task reads are written. Stops early when the
/// receiver is gone; sends the error if the file cannot be read or the
/// raster written, and tells `verdict` whether the file was malformed.
pub fn stream_rows(
    (path, format): (&Path, image::ImageFormat),
    grid: TileGrid,
    halo: u32,
    tiles: &[u32],
    raster: &Raster,
    tx: &mpsc::UnboundedSender<anyhow::Result<u32>>,
    verdict: Option<ScanVerdict>,
) {
    let stream = || -> Result<(), AppError> {
        let what = format.extensions_str()[0];
        let mut rows = crate::rows::open(path, format)?
            .ok_or_else(|| crate::rows::unreadable(what, "it can no longer be read by rows"))?;
        let (width, height) = rows.size();
        if (width, height) != (raster.width, raster.height) {
            return Err(anyhow::anyhow!("the input file changed size").into());
        }
        let line = width as usize * raster.channels.count();
        let (mut band, mut row) = (Vec::with_capacity(line * BAND_ROWS as usize), Vec::with_capacity(line));
        let (mut written, mut next) = (0u32, tiles.iter().peekable());
        for y in 0..height {
            if !rows.next_row(raster.channels, &mut row)? {
                return Err(crate::rows::unreadable(what, "the image data ends early"));
            }
            band.extend_from_slice(&row);
            // The rows a tile's task reads: down to its halo, or the last.
            let needed = |t: u32| grid.tile(t).map_or(height, |r| (r.y + r.height).saturating_add(halo).min(height));
            let ready = next.peek().is_some_and(|&&t| needed(t) <= y + 1);
            if ready || band.len() >= line * BAND_ROWS as usize || y + 1 == height {
                raster.write_rows(written, &band).map_err(|e| anyhow::anyhow!("writing the job's pixels: {e}"))?;
                written = y + 1;
                band.clear();
            }
            while let Some(&&t) = next.peek().filter(|&&&t| needed(t) <= written) {
                if tx.send(Ok(t)).is_err() {
                    return Ok(()); // the job stopped
                }
                next.next();
            }
        }
        // The rest of the file: a cut-off or corrupt end is a bad upload.
        while rows.next_row(raster.channels, &mut row)? {}
        Ok(())
    };
    let result = stream();
    if let Some(verdict) = verdict {
        let refusal = match &result {
            Err(AppError::Client { status, code, message }) => Err(AppError::client(*status, *code, message.clone())),
            _ => Ok(()),
        };
        let _ = verdict.send(refusal);
    }
    if let Err(e) = result {
        let _ = tx.send(Err(anyhow::anyhow!("reading the image: {e}")));
    }
}

/// Blocking: writes an image decoded whole into `raster`, so that the job
/// need not keep it.
pub fn write_whole(frame: &Frame, raster: &Raster) -> anyhow::Result<()> {
    raster.write_rows(0, &frame.pixels).context("writing the job's pixels")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    /// A noisy RGB PNG, and where it is written.
    fn png_file(dir: &Path, (w, h): (u32, u32)) -> (std::path::PathBuf, Frame) {
        let mut noise = pipeline::noise::Xorshift64::new(5);
        let frame = Frame::new(w, h, (0..w * h * 3).map(|_| noise.next_u64() as u8).collect());
        let path = dir.join("input.png");
        std::fs::write(&path, pipeline::codec::encode_png(&frame)).unwrap();
        (path, frame)
    }

    #[test]
    fn a_png_read_by_rows_gives_every_tile_its_region() {
        let dir = tempfile::tempdir().unwrap();
        let (path, frame) = png_file(dir.path(), (100, 70));
        let (grid, halo) = (TileGrid::new(100, 70, 32), 5);
        let raster = Raster::create(&dir.path().join("pixels"), (100, 70), Channels::Rgb).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (verdict, told) = tokio::sync::oneshot::channel();
        // Tile 1 was done before a restart: it is not read for.
        let wanted: Vec<u32> = (0..grid.len()).filter(|&t| t != 1).collect();
        stream_rows((&path, image::ImageFormat::Png), grid, halo, &wanted, &raster, &tx, Some(verdict));
        drop(tx);
        let mut sent = Vec::new();
        while let Ok(tile) = rx.try_recv() {
            sent.push(tile.unwrap());
        }
        assert_eq!(sent, wanted, "every wanted tile, in grid order");
        assert!(matches!(told.blocking_recv(), Ok(Ok(()))));
        for t in wanted {
            let rect = grid.tile(t).unwrap();
            assert_eq!(raster.region(rect, halo).unwrap(), frame.crop_with_halo(rect, halo), "tile {t}");
        }
    }

    #[test]
    fn a_corrupt_png_read_by_rows_is_refused_and_fails_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = png_file(dir.path(), (100, 70));
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle..middle + 64].fill(0xAA);
        std::fs::write(&path, &bytes).unwrap();
        let grid = TileGrid::new(100, 70, 32);
        let raster = Raster::create(&dir.path().join("pixels"), (100, 70), Channels::Rgb).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (verdict, told) = tokio::sync::oneshot::channel();
        let all: Vec<u32> = (0..grid.len()).collect();
        stream_rows((&path, image::ImageFormat::Png), grid, 5, &all, &raster, &tx, Some(verdict));
        drop(tx);
        let refusal = told.blocking_recv().unwrap().unwrap_err();
        assert!(matches!(refusal, AppError::Client { code: ErrorCode::UnreadableImage, .. }), "{refusal}");
        let mut last = None;
        while let Ok(tile) = rx.try_recv() {
            last = Some(tile);
        }
        assert!(last.expect("an error is sent").is_err());
    }

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
