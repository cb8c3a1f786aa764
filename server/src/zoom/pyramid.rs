//! A Deep Zoom pyramid written from a stream of rows, in one pass: level
//! `max` is the image, each level below it half the one above (each pixel
//! the mean of the 2x2 it covers), down to level 0 of one pixel. Each level
//! holds only the rows of the tile row it is cutting (plus its overlap) and
//! one row waiting for its pair, so a gigapixel image takes a few strips of
//! memory, not the image. Tiles are `{level}/{col}_{row}.{jpg|png}` in
//! the layout of Microsoft's Deep Zoom format, which viewers such as
//! OpenSeadragon read.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::Context;
use pipeline::{Channels, Frame};

/// Tile side without overlap: with one pixel of overlap on each side the
/// tiles are at most 256 px, Deep Zoom's classic choice.
pub const TILE: u32 = 254;
/// Pixels a tile repeats of each neighbour, so viewers draw no seams.
pub const OVERLAP: u32 = 1;
/// Quality of JPEG tiles: a picture to look at, not to process.
const JPEG_QUALITY: u8 = 85;

/// How tiles are coded: JPEG for opaque images, PNG to keep alpha.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileFormat {
    Jpeg,
    Png,
}

impl TileFormat {
    pub fn for_channels(channels: Channels) -> Self {
        match channels {
            Channels::Rgb => Self::Jpeg,
            Channels::Rgba => Self::Png,
        }
    }

    pub fn from_extension(extension: &str) -> Option<Self> {
        [Self::Jpeg, Self::Png].into_iter().find(|f| f.extension() == extension)
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Png => "png",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
        }
    }

    fn encode(self, tile: &Frame) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            Self::Jpeg => pipeline::jpeg::encode_tile(tile, JPEG_QUALITY)?,
            Self::Png => pipeline::codec::encode(tile, pipeline::codec::Encoding::Png),
        })
    }
}

/// The number of the full-resolution level: levels `0..=max_level`, level
/// `k` being the image shrunk `2^(max - k)` times (rounded up).
pub fn max_level((width, height): (u32, u32)) -> u32 {
    let side = width.max(height).max(1);
    u32::BITS - (side - 1).leading_zeros()
}

/// The size of level `level` of a `width` x `height` image.
pub fn level_size((width, height): (u32, u32), level: u32) -> (u32, u32) {
    let shift = max_level((width, height)) - level;
    let shrink = |side: u32| ((u64::from(side) + (1 << shift) - 1) >> shift).max(1) as u32;
    (shrink(width), shrink(height))
}

/// Bytes a pyramid of an image `width` wide holds at most while it is written.
pub fn memory(width: u32, channels: Channels) -> u64 {
    // Each level's strip, the levels halving in width: twice the first.
    let strip = u64::from(TILE + 2 * OVERLAP + 1) * u64::from(width) * channels.count() as u64;
    2 * strip + 2 * 1024 * 1024
}

pub struct Pyramid {
    dir: PathBuf,
    channels: Channels,
    format: TileFormat,
    /// Indexed by level number: the full-resolution level is the last.
    levels: Vec<Level>,
}

struct Level {
    number: u32,
    width: u32,
    height: u32,
    /// Rows `top..received`, one after the other.
    strip: Vec<u8>,
    top: u32,
    received: u32,
    /// The next tile row to cut.
    tile_row: u32,
    /// An even row waiting for the odd one to halve with it.
    pending: Option<Vec<u8>>,
}

impl Pyramid {
    /// A pyramid of a `size` image of `channels` to be written into `dir`,
    /// which must not exist yet (its parent must).
    pub fn create(dir: &Path, size: (u32, u32), channels: Channels, format: TileFormat) -> anyhow::Result<Self> {
        std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
        let levels = (0..=max_level(size))
            .map(|number| {
                std::fs::create_dir(dir.join(number.to_string()))?;
                let (width, height) = level_size(size, number);
                Ok(Level { number, width, height, strip: Vec::new(), top: 0, received: 0, tile_row: 0, pending: None })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { dir: dir.to_owned(), channels, format, levels })
    }

    /// Takes the image's next row: writes every tile it completes, on
    /// every level.
    pub fn push(&mut self, row: &[u8]) -> anyhow::Result<()> {
        let top = self.levels.len() - 1;
        self.push_at(top, Cow::Borrowed(row))
    }

    /// Writes what the last rows left: rows without a pair below odd heights.
    /// Fails if the image was not given all its rows.
    pub fn finish(mut self) -> anyhow::Result<()> {
        for number in (1..self.levels.len()).rev() {
            let level = &mut self.levels[number];
            anyhow::ensure!(level.received == level.height, "level {number} got {} of its rows", level.received);
            if let Some(last) = level.pending.take() {
                let half = halve(&last, None, self.channels);
                self.push_at(number - 1, Cow::Owned(half))?;
            }
        }
        anyhow::ensure!(self.levels[0].received == 1, "level 0 is incomplete");
        Ok(())
    }

    fn push_at(&mut self, mut number: usize, mut row: Cow<[u8]>) -> anyhow::Result<()> {
        let (dir, channels, format) = (&self.dir, self.channels, self.format);
        loop {
            let level = &mut self.levels[number];
            let n = channels.count();
            anyhow::ensure!(row.len() == level.width as usize * n, "a row of the wrong width");
            anyhow::ensure!(level.received < level.height, "more rows than the image has");
            level.strip.extend_from_slice(&row);
            level.received += 1;
            level.cut(dir, channels, format)?;
            if number == 0 {
                return Ok(());
            }
            let y = level.received - 1;
            if y.is_multiple_of(2) {
                level.pending = Some(row.into_owned());
                return Ok(());
            }
            let above = level.pending.take().expect("an even row waits");
            row = Cow::Owned(halve(&above, Some(&row), channels));
            number -= 1;
        }
    }
}

impl Level {
    /// Writes the current tile row if its last row has come, and lets go of
    /// the rows the next one does not need.
    fn cut(&mut self, dir: &Path, channels: Channels, format: TileFormat) -> anyhow::Result<()> {
        let r = self.tile_row;
        let end = ((r + 1) * TILE + OVERLAP).min(self.height);
        if self.received != end {
            return Ok(());
        }
        let n = channels.count();
        let line = self.width as usize * n;
        let start = (r * TILE).saturating_sub(OVERLAP);
        let rows = &self.strip[(start - self.top) as usize * line..];
        for c in 0..self.width.div_ceil(TILE) {
            let x0 = (c * TILE).saturating_sub(OVERLAP);
            let x1 = ((c + 1) * TILE + OVERLAP).min(self.width);
            let pixels: Vec<u8> =
                rows.chunks_exact(line).flat_map(|row| &row[x0 as usize * n..x1 as usize * n]).copied().collect();
            let tile = Frame::with_channels(x1 - x0, end - start, channels, pixels);
            let path = dir.join(self.number.to_string()).join(format!("{c}_{r}.{}", format.extension()));
            std::fs::write(&path, format.encode(&tile)?).with_context(|| format!("writing {}", path.display()))?;
        }
        // The next tile row starts `OVERLAP` rows above this one's end.
        let next = ((r + 1) * TILE).saturating_sub(OVERLAP).min(self.received);
        self.strip.drain(..(next - self.top) as usize * line);
        self.top = next;
        self.tile_row += 1;
        Ok(())
    }
}

/// Two rows (or the last, alone) halved: each output pixel the rounded mean
/// of the 2x2 (or fewer, at the edges) it covers.
fn halve(above: &[u8], below: Option<&[u8]>, channels: Channels) -> Vec<u8> {
    let n = channels.count();
    let width = above.len() / n;
    let mut out = Vec::with_capacity(width.div_ceil(2) * n);
    for x in (0..width).step_by(2) {
        let columns = if x + 1 < width { 2 } else { 1 };
        let count = columns * if below.is_some() { 2 } else { 1 };
        for s in 0..n {
            let at = |row: &[u8], dx: usize| u32::from(row[(x + dx) * n + s]);
            let mut sum = (0..columns).map(|dx| at(above, dx)).sum::<u32>();
            if let Some(below) = below {
                sum += (0..columns).map(|dx| at(below, dx)).sum::<u32>();
            }
            out.push(((sum + count as u32 / 2) / count as u32) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(width: u32, height: u32, channels: Channels) -> Frame {
        let n = channels.count();
        let pixels = (0..height)
            .flat_map(|y| {
                (0..width).flat_map(move |x| [(x * 7 + y) as u8, (y * 3) as u8, (x ^ y) as u8, 200][..n].to_vec())
            })
            .collect();
        Frame::with_channels(width, height, channels, pixels)
    }

    fn build(frame: &Frame, dir: &Path) {
        let mut pyramid = Pyramid::create(dir, (frame.width, frame.height), frame.channels, TileFormat::Png).unwrap();
        for row in frame.pixels.chunks_exact(frame.width as usize * frame.channels.count()) {
            pyramid.push(row).unwrap();
        }
        pyramid.finish().unwrap();
    }

    fn tile(dir: &Path, level: u32, c: u32, r: u32) -> image::DynamicImage {
        image::open(dir.join(level.to_string()).join(format!("{c}_{r}.png"))).unwrap()
    }

    /// Level numbers and sizes as Deep Zoom defines them.
    #[test]
    fn levels_are_deep_zooms() {
        assert_eq!(max_level((1, 1)), 0);
        assert_eq!(max_level((2, 1)), 1);
        assert_eq!(max_level((512, 300)), 9);
        assert_eq!(max_level((513, 300)), 10);
        assert_eq!(level_size((513, 300), 10), (513, 300));
        assert_eq!(level_size((513, 300), 9), (257, 150));
        assert_eq!(level_size((513, 300), 1), (2, 1));
        assert_eq!(level_size((513, 300), 0), (1, 1));
        assert_eq!(level_size((65536, 3), 1), (2, 1));
    }

    /// The full-resolution tiles are the image's own pixels with their
    /// overlap; each level below is the one above halved; every tile exists.
    #[test]
    fn tiles_hold_the_image_and_its_halvings() {
        for (w, h, channels) in [(600, 515, Channels::Rgb), (255, 254, Channels::Rgba), (1, 1, Channels::Rgb)] {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("zoom");
            let frame = image(w, h, channels);
            build(&frame, &out);
            let max = max_level((w, h));
            let mut level = frame.clone();
            for number in (0..=max).rev() {
                assert_eq!((level.width, level.height), level_size((w, h), number));
                let files = std::fs::read_dir(out.join(number.to_string())).unwrap().count() as u32;
                assert_eq!(files, level.width.div_ceil(TILE) * level.height.div_ceil(TILE), "level {number}");
                // The last tile, with its overlap, is that corner of the level.
                let (c, r) = ((level.width - 1) / TILE, (level.height - 1) / TILE);
                let (x, y) = ((c * TILE).saturating_sub(OVERLAP), (r * TILE).saturating_sub(OVERLAP));
                let rect = pipeline::Rect { x, y, width: level.width - x, height: level.height - y };
                let expected = level.crop(rect);
                let got = tile(&out, number, c, r);
                let got = if channels == Channels::Rgb { got.to_rgb8().into_raw() } else { got.to_rgba8().into_raw() };
                assert_eq!(got, expected.pixels, "{w}x{h}, level {number}");
                level = halved(&level);
            }
        }
    }

    /// The reference halving: a whole frame at once.
    fn halved(frame: &Frame) -> Frame {
        let line = frame.width as usize * frame.channels.count();
        let rows: Vec<&[u8]> = frame.pixels.chunks_exact(line).collect();
        let pixels: Vec<u8> =
            rows.chunks(2).flat_map(|pair| halve(pair[0], pair.get(1).copied(), frame.channels)).collect();
        Frame::with_channels(frame.width.div_ceil(2), frame.height.div_ceil(2), frame.channels, pixels)
    }

    #[test]
    fn halving_rounds_the_mean_of_what_is_there() {
        // One pixel over another: 1, 1.5 -> 2, 15.
        assert_eq!(halve(&[0, 1, 10], Some(&[2, 2, 20]), Channels::Rgb), [1, 2, 15]);
        let rgb = |v: u8| [v, v, v];
        let above: Vec<u8> = [rgb(1), rgb(2), rgb(9)].concat();
        let below: Vec<u8> = [rgb(3), rgb(5), rgb(10)].concat();
        // (1+2+3+5)/4 = 2.75 -> 3; (9+10)/2 = 9.5 -> 10.
        assert_eq!(halve(&above, Some(&below), Channels::Rgb), [rgb(3), rgb(10)].concat());
        assert_eq!(halve(&above, None, Channels::Rgb), [rgb(2), rgb(9)].concat());
    }

    #[test]
    fn a_short_image_is_refused_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let frame = image(10, 10, Channels::Rgb);
        let mut pyramid = Pyramid::create(&dir.path().join("z"), (10, 10), Channels::Rgb, TileFormat::Png).unwrap();
        pyramid.push(&frame.pixels[..30]).unwrap();
        assert!(pyramid.finish().is_err());
        let mut pyramid = Pyramid::create(&dir.path().join("y"), (10, 10), Channels::Rgb, TileFormat::Png).unwrap();
        assert!(pyramid.push(&frame.pixels[..27]).is_err(), "a short row");
    }
}
