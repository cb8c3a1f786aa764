//! A job's result, encoded from its tile files. PNG and JPEG are streamed
//! one band (a row of tiles) at a time: a band of memory, not the image, and
//! they can be encoded while the results still arrive, each band as soon as
//! its tiles are done ([`Progress`]). A JPEG is joined from the workers'
//! JPEG tiles without decoding them. WebP's encoder wants the whole image
//! (at most 16383 px a side), so that result is assembled at the end.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use anyhow::Context;
use app::api::Output;
use pipeline::jpeg::{Splice, TileIndex, check_tile, encode_tile};
use pipeline::{Channels, Frame, TileGrid};

use crate::done_tiles::{DoneTiles, Form};

/// The finished tiles of one image (of `channels`), in a job's file of done
/// tiles. With `progress`, a tile is read only once it is done.
pub struct Tiles {
    grid: TileGrid,
    channels: Channels,
    done: Mutex<DoneTiles>,
    progress: Option<Arc<Progress>>,
}

/// Which tiles of a running job are done, for an encoder that waits on them.
pub struct Progress {
    state: Mutex<(Vec<bool>, bool)>,
    changed: Condvar,
}

impl Progress {
    pub fn new(done: Vec<bool>) -> Self {
        Self { state: Mutex::new((done, false)), changed: Condvar::new() }
    }

    pub fn done(&self, tile: u32) {
        let mut state = self.state.lock().expect("lock");
        if let Some(done) = state.0.get_mut(tile as usize) {
            *done = true;
        }
        self.changed.notify_all();
    }

    /// The job stopped: waiting encoders give up.
    pub fn abort(&self) {
        self.state.lock().expect("lock").1 = true;
        self.changed.notify_all();
    }

    /// Blocks until `tile` is done.
    fn wait(&self, tile: u32) -> anyhow::Result<()> {
        let mut state = self.state.lock().expect("lock");
        loop {
            anyhow::ensure!(!state.1, "the job stopped");
            if state.0.get(tile as usize).copied().unwrap_or(true) {
                return Ok(());
            }
            state = self.changed.wait(state).expect("lock");
        }
    }
}

/// A done tile's samples, from its bytes as stored: a PNG (a fifth of the
/// raw bytes to write and read back) or raw samples.
fn samples(
    tile: u32,
    (form, bytes): (Form, Vec<u8>),
    rect: pipeline::Rect,
    channels: Channels,
) -> anyhow::Result<Vec<u8>> {
    match form {
        Form::Png => {
            let shape = (rect.width, rect.height, channels);
            let frame = pipeline::codec::decode(&bytes, pipeline::codec::Encoding::Png, shape)
                .with_context(|| format!("decoding tile {tile}"))?;
            Ok(frame.pixels)
        }
        Form::Raw => {
            anyhow::ensure!(
                bytes.len() == Frame::len_of(rect.width, rect.height, channels),
                "tile {tile} is not a whole tile"
            );
            Ok(bytes)
        }
        Form::Jpeg => anyhow::bail!("tile {tile} is a JPEG, and the result is not"),
    }
}

/// Reads `tile` from `done` (blocking): an error if it is not there.
fn stored(done: &mut DoneTiles, tile: u32) -> anyhow::Result<(Form, Vec<u8>)> {
    done.read(tile).context("reading the done tiles")?.with_context(|| format!("tile {tile} is not stored"))
}

/// Checks a done tile as stored, whatever form it came in: what resuming a
/// job relies on.
pub fn check_stored(
    done: &mut DoneTiles,
    (tile, rect): (u32, pipeline::Rect),
    channels: Channels,
    output: Output,
) -> anyhow::Result<()> {
    match (stored(done, tile)?, output) {
        ((Form::Jpeg, stored), Output::Jpeg { quality }) => {
            let (bytes, index) = TileIndex::split(&stored);
            let read = check_tile(bytes, (rect.width, rect.height), quality)?;
            anyhow::ensure!(index.is_none_or(|i| i == read), "tile {tile} holds another tile's index");
            Ok(())
        }
        (stored, _) => samples(tile, stored, rect, channels).map(drop),
    }
}

/// Whether `output` can be encoded while the results arrive.
pub fn streams(output: Output) -> bool {
    !matches!(output, Output::Webp)
}

/// Whole rows of the image: those of the row of tiles starting at `top`.
struct Band {
    top: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Tiles {
    /// The tiles of `grid` in the file of done tiles at `done`.
    pub fn new(grid: TileGrid, channels: Channels, done: &Path, progress: Option<Arc<Progress>>) -> Self {
        Self { grid, channels, done: Mutex::new(DoneTiles::new(done)), progress }
    }

    /// Tile `tile`'s bytes as stored, once it is done.
    fn stored(&self, tile: u32) -> anyhow::Result<(Form, Vec<u8>)> {
        if let Some(progress) = &self.progress {
            progress.wait(tile)?;
        }
        stored(&mut self.done.lock().expect("lock"), tile)
    }

    fn read(&self, tile: u32, rect: pipeline::Rect) -> anyhow::Result<Vec<u8>> {
        samples(tile, self.stored(tile)?, rect, self.channels)
    }

    /// Tile `tile` as a JPEG of `quality`: the worker's as stored (with its
    /// index), or coded from its PNG or raw samples.
    fn jpeg(&self, tile: u32, quality: u8) -> anyhow::Result<Vec<u8>> {
        let rect = self.grid.tile(tile).context("a tile of the grid")?;
        match self.stored(tile)? {
            (Form::Jpeg, bytes) => Ok(bytes),
            stored => {
                let pixels = samples(tile, stored, rect, self.channels)?;
                Ok(encode_tile(&Frame::with_channels(rect.width, rect.height, self.channels, pixels), quality)?)
            }
        }
    }

    /// The band of rows holding row `y`, from its row of tiles.
    fn band(&self, y: u32) -> anyhow::Result<Band> {
        let (grid, n) = (self.grid, self.channels.count());
        let first = y / grid.tile_size * grid.columns();
        let top = grid.tile(first).context("a row inside the image")?;
        let stride = grid.width as usize * n;
        let mut pixels = vec![0; stride * top.height as usize];
        for t in first..first + grid.columns() {
            let rect = grid.tile(t).context("a tile of the grid")?;
            let tile = self.read(t, rect)?;
            let width = rect.width as usize * n;
            for (row, line) in tile.chunks_exact(width).enumerate() {
                pixels[row * stride + rect.x as usize * n..][..width].copy_from_slice(line);
            }
        }
        Ok(Band { top: top.y, height: top.height, pixels })
    }
}

/// Writes the image to `out` as `output`. JPEG has no alpha: an image with
/// alpha is flattened onto white.
pub fn write(output: Output, tiles: &Tiles, out: &Path) -> anyhow::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(out)?);
    match output {
        Output::Png => write_png(tiles, file),
        Output::Jpeg { quality } => write_jpeg(tiles, quality, file),
        Output::Tiff => {
            let (grid, channels) = (tiles.grid, tiles.channels);
            let mut tiff =
                crate::tiff_writer::TiffWriter::new(file, (grid.width, grid.height), channels, grid.tile_size)?;
            for (t, rect) in grid.tiles() {
                tiff.write_tile(rect.width, rect.height, &tiles.read(t, rect)?)?;
            }
            tiff.finish()?.flush()?;
            Ok(())
        }
        Output::Webp => {
            let (grid, channels) = (tiles.grid, tiles.channels);
            let mut image = Frame::blank(grid.width, grid.height, channels);
            for (t, rect) in grid.tiles() {
                let tile = Frame::with_channels(rect.width, rect.height, channels, tiles.read(t, rect)?);
                image.paste(rect.x, rect.y, &tile);
            }
            let colour = match channels {
                Channels::Rgb => image::ExtendedColorType::Rgb8,
                Channels::Rgba => image::ExtendedColorType::Rgba8,
            };
            image::codecs::webp::WebPEncoder::new_lossless(file).encode(
                &image.pixels,
                grid.width,
                grid.height,
                colour,
            )?;
            Ok(())
        }
    }
}

/// Joins the tiles' JPEGs (see [`pipeline::jpeg::Splice`]): a row of
/// compressed tiles in memory, no DCT. A tile that came as PNG or raw is
/// coded first, as a worker would have.
fn write_jpeg(tiles: &Tiles, quality: u8, mut file: impl Write) -> anyhow::Result<()> {
    let grid = tiles.grid;
    let mut splice = Splice::new(grid, quality)?;
    file.write_all(&splice.header())?;
    for row in 0..grid.rows() {
        let band = (row * grid.columns()..(row + 1) * grid.columns())
            .map(|t| tiles.jpeg(t, quality))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let bytes = splice.band(&band).with_context(|| format!("joining row {row} of tiles"))?;
        file.write_all(&bytes)?;
    }
    file.write_all(&splice.finish()?)?;
    file.flush()?;
    Ok(())
}

/// Adaptive filters: the whole image is written once, so the better filter
/// per row is worth its time.
fn write_png(tiles: &Tiles, file: impl Write + 'static) -> anyhow::Result<()> {
    let grid = &tiles.grid;
    let size = (grid.width, grid.height);
    let encoder = pipeline::codec::png_encoder(file, size, tiles.channels, png::Filter::Adaptive);
    let mut writer = encoder.write_header()?.into_stream_writer()?;
    let mut y = 0;
    while y < grid.height {
        let band = tiles.band(y)?;
        writer.write_all(&band.pixels)?;
        y = band.top + band.height;
    }
    writer.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::done_tiles::append;

    /// A smooth image (JPEG's best case), with a gradient of alpha when asked
    /// for, cut into tiles on disk.
    fn tiles_on_disk(dir: &Path, channels: Channels) -> (Frame, Tiles) {
        let (w, h) = (37, 23);
        let pixels = (0..h)
            .flat_map(|y| {
                (0..w).flat_map(move |x| {
                    let px = [(x * 6) as u8, (y * 10) as u8, ((x + y) * 4) as u8, (x * 7) as u8];
                    px.into_iter().take(channels.count())
                })
            })
            .collect();
        let image = Frame::with_channels(w, h, channels, pixels);
        let grid = TileGrid::new(w, h, 16);
        // Stored as results come: every other tile as its PNG, the rest raw.
        let done = dir.join("done");
        for (t, rect) in grid.tiles() {
            let tile = image.crop(rect);
            if t % 2 == 0 {
                let png = pipeline::codec::encode(&tile, pipeline::codec::Encoding::Png);
                append(&done, t, Form::Png, &png).unwrap();
            } else {
                append(&done, t, Form::Raw, &tile.pixels).unwrap();
            }
        }
        (image, Tiles::new(grid, channels, &done, None))
    }

    fn write_and_read(output: Output, tiles: &Tiles, dir: &Path) -> image::DynamicImage {
        let out = dir.join(format!("result.{}", output.extension()));
        write(output, tiles, &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(image::guess_format(&bytes).unwrap().to_mime_type(), output.mime());
        let decoded = image::load_from_memory(&bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (37, 23), "{output:?}");
        decoded
    }

    fn worst(a: &[u8], b: &[u8]) -> u8 {
        a.iter().zip(b).map(|(a, b)| a.abs_diff(*b)).max().unwrap()
    }

    #[test]
    fn every_format_holds_the_whole_image() {
        let dir = tempfile::tempdir().unwrap();
        let (image, tiles) = tiles_on_disk(dir.path(), Channels::Rgb);
        for (output, allowed) in
            [(Output::Png, 0), (Output::Webp, 0), (Output::Tiff, 0), (Output::Jpeg { quality: 95 }, 12)]
        {
            let decoded = write_and_read(output, &tiles, dir.path());
            assert!(!decoded.color().has_alpha());
            let off = worst(decoded.into_rgb8().as_raw(), &image.pixels);
            assert!(off <= allowed, "{output:?}: {off} levels off");
        }
    }

    #[test]
    fn alpha_is_kept_by_png_webp_and_tiff_and_flattened_onto_white_for_jpeg() {
        let dir = tempfile::tempdir().unwrap();
        let (image, tiles) = tiles_on_disk(dir.path(), Channels::Rgba);
        for output in [Output::Png, Output::Webp, Output::Tiff] {
            let decoded = write_and_read(output, &tiles, dir.path());
            assert!(decoded.into_rgba8().as_raw() == &image.pixels, "{output:?}");
        }
        let flat = pipeline::frame::on_white(&image.pixels);
        assert_eq!(
            pipeline::frame::on_white(&[10, 20, 30, 255, 10, 20, 30, 0, 0, 0, 0, 128]),
            [10, 20, 30, 255, 255, 255, 127, 127, 127]
        );
        let decoded = write_and_read(Output::Jpeg { quality: 95 }, &tiles, dir.path());
        assert!(worst(decoded.into_rgb8().as_raw(), &flat) <= 12);
    }

    #[test]
    fn a_result_is_encoded_as_its_tiles_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let (image, mut tiles) = tiles_on_disk(dir.path(), Channels::Rgb);
        let count = tiles.grid.len();
        let progress = Arc::new(Progress::new(vec![false; count as usize]));
        tiles.progress = Some(Arc::clone(&progress));
        let out = dir.path().join("streamed.png");
        std::thread::scope(|s| {
            let encoder = s.spawn(|| write(Output::Png, &tiles, &out));
            // The last tiles first: the encoder waits for the first row.
            for t in (0..count).rev() {
                assert!(!encoder.is_finished(), "finished before tile {t} was done");
                progress.done(t);
            }
            encoder.join().unwrap().unwrap();
        });
        let decoded = image::open(&out).unwrap().into_rgb8();
        assert!(decoded.as_raw() == &image.pixels);

        // A stopped job's encoder gives up instead of waiting for ever.
        let progress = Arc::new(Progress::new(vec![false; count as usize]));
        tiles.progress = Some(Arc::clone(&progress));
        std::thread::scope(|s| {
            let encoder = s.spawn(|| write(Output::Jpeg { quality: 90 }, &tiles, &dir.path().join("stopped.jpg")));
            progress.done(0);
            progress.abort();
            let error = encoder.join().unwrap().unwrap_err().to_string();
            assert!(error.contains("the job stopped"), "{error}");
        });
    }

    #[test]
    fn workers_jpeg_tiles_are_joined_by_the_index_stored_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let (image, tiles) = tiles_on_disk(dir.path(), Channels::Rgb);
        let output = Output::Jpeg { quality: 90 };
        let stored: Vec<Vec<u8>> = tiles
            .grid
            .tiles()
            .map(|(_, rect)| {
                let mut jpeg = encode_tile(&image.crop(rect), 90).unwrap();
                check_tile(&jpeg, (rect.width, rect.height), 90).unwrap().append_to(&mut jpeg);
                jpeg
            })
            .collect();
        let done = dir.path().join("done");
        for (t, rect) in tiles.grid.tiles() {
            append(&done, t, Form::Jpeg, &stored[t as usize]).unwrap();
            check_stored(&mut DoneTiles::new(&done), (t, rect), Channels::Rgb, output).unwrap();
        }
        let out = dir.path().join("joined.jpg");
        write(output, &tiles, &out).unwrap();
        assert!(std::fs::read(&out).unwrap() == encode_tile(&image, 90).unwrap(), "the whole image's JPEG");

        // Tile 1 (16x16, as tile 0) with tile 0's index is not resumed.
        let (jpeg, _) = TileIndex::split(&stored[1]);
        let (_, index) = TileIndex::split(&stored[0]);
        let mut spoilt = jpeg.to_vec();
        index.unwrap().append_to(&mut spoilt);
        append(&done, 1, Form::Jpeg, &spoilt).unwrap();
        let rect = tiles.grid.tile(1).unwrap();
        let error = check_stored(&mut DoneTiles::new(&done), (1, rect), Channels::Rgb, output).unwrap_err().to_string();
        assert!(error.contains("another tile's index"), "{error}");
    }

    #[test]
    fn a_damaged_tile_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (_, tiles) = tiles_on_disk(dir.path(), Channels::Rgb);
        // A raw tile cut short, then a stored PNG that is not one.
        let done = dir.path().join("done");
        append(&done, 5, Form::Raw, &[1, 2, 3]).unwrap();
        for output in [Output::Png, Output::Webp, Output::Jpeg { quality: 90 }] {
            let error = format!("{:#}", write(output, &tiles, &dir.path().join("out")).unwrap_err());
            assert!(error.contains("not a whole tile"), "{error}");
        }
        let (_, tiles) = tiles_on_disk(dir.path(), Channels::Rgb);
        append(&done, 4, Form::Png, b"\x89PNG garbage").unwrap();
        for output in [Output::Png, Output::Webp, Output::Jpeg { quality: 90 }] {
            let error = format!("{:#}", write(output, &tiles, &dir.path().join("out")).unwrap_err());
            assert!(error.contains("decoding tile 4"), "{error}");
        }
        let none = Tiles::new(tiles.grid, Channels::Rgb, &dir.path().join("no-file"), None);
        let error = format!("{:#}", write(Output::Png, &none, &dir.path().join("out")).unwrap_err());
        assert!(error.contains("tile 0 is not stored"), "{error}");
    }
}
