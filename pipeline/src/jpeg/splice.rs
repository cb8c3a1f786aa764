//! A JPEG result joined from JPEG tiles without decoding them.
//!
//! Workers code each result tile with [`encode_tile`]. A JPEG codes its 8x8
//! blocks independently of each other, but for the DC predictor that runs
//! along each MCU row, and an encoder pads the image's last MCUs by
//! repeating its edge pixels. So when tiles are cut on MCU boundaries (a
//! tile size divisible by 16), a tile's blocks are the whole image's blocks
//! there, and joining the tiles' bits row by row, coding again only each
//! tile's first DC difference in each MCU row, gives byte for byte the file
//! that coding the whole image gives (tested). The master never holds more
//! than a row of tiles' JPEGs, and never runs a DCT.

use std::sync::OnceLock;

use super::bits::{BitWriter, unstuff};
use super::huffman::Encoder as HuffmanEncoder;
use super::{Component, Jpeg, JpegError, Row, Run, ScanReader, TileIndex, copy_run};
use crate::frame::{Channels, Frame, on_white};
use crate::geometry::{Rect, TileGrid};

/// A tile's pixels as a baseline JPEG at `quality`, coded as every tile of
/// a JPEG result is: 4:2:0 at every quality (as libjpeg and OpenCV write by
/// default: from quality 90 on, jpeg-encoder would code 4:4:4, twice the
/// chroma blocks, 1.7x the time), otherwise jpeg-encoder's defaults
/// (standard Huffman tables, no restart markers). Alpha is flattened onto
/// white, as JPEG has none.
pub fn encode_tile(tile: &Frame, quality: u8) -> Result<Vec<u8>, JpegError> {
    let flattened;
    let rgb = match tile.channels {
        Channels::Rgb => &tile.pixels,
        Channels::Rgba => {
            flattened = on_white(&tile.pixels);
            &flattened
        }
    };
    let (Ok(width), Ok(height)) = (u16::try_from(tile.width), u16::try_from(tile.height)) else {
        return Err(JpegError::Unsupported("a JPEG is at most 65535 pixels a side"));
    };
    let mut out = Vec::with_capacity(rgb.len() / 8);
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
    encoder
        .encode(rgb, width, height, jpeg_encoder::ColorType::Rgb)
        .map_err(|_| JpegError::Unsupported("the tile cannot be coded as a JPEG"))?;
    Ok(out)
}

/// What every tile of a result at one quality must look like: the header of
/// a one-MCU image coded by [`encode_tile`].
struct Reference {
    jpeg: Jpeg,
    /// Its bytes up to the scan's data: the result's header, but for its size.
    header: Vec<u8>,
    /// Where its frame header (SOF) starts in `header`.
    frame_at: usize,
    /// The quantisation table of each component.
    quant: Vec<[u16; 64]>,
}

impl Reference {
    /// The reference for `quality`, made once per quality: the master
    /// checks every result tile against it.
    fn of(quality: u8) -> Result<&'static Self, JpegError> {
        static MADE: [OnceLock<Reference>; 256] = [const { OnceLock::new() }; 256];
        let cell = &MADE[usize::from(quality)];
        if let Some(made) = cell.get() {
            return Ok(made);
        }
        let made = Self::new(quality)?;
        Ok(cell.get_or_init(|| made))
    }

    fn new(quality: u8) -> Result<Self, JpegError> {
        let bytes = encode_tile(&Frame::black(16, 16), quality)?;
        let (jpeg, scan) = Jpeg::parse(&bytes)?;
        let header = bytes[..bytes.len() - scan.len()].to_vec();
        let frame_at = frame_header_at(&header).ok_or(JpegError::Malformed("no frame header"))?;
        let quant = jpeg.quantisation()?;
        Ok(Self { jpeg, header, frame_at, quant })
    }

    /// Reads the markers of `bytes`, a tile that must be `width` x `height`
    /// and coded as this reference is; returns it and its scan.
    fn parse<'b>(&self, bytes: &'b [u8], width: u32, height: u32) -> Result<(Jpeg, &'b [u8]), JpegError> {
        let (jpeg, scan) = Jpeg::parse(bytes)?;
        if (jpeg.width, jpeg.height) != (width, height) {
            return Err(JpegError::Malformed("the tile's size is not its rectangle's"));
        }
        let sampling = |c: &[Component]| c.iter().map(|c| (c.h, c.v)).collect::<Vec<_>>();
        if sampling(&jpeg.components) != sampling(&self.jpeg.components) || jpeg.quantisation()? != self.quant {
            return Err(JpegError::Unsupported("the tile's sampling or quantisation is not the result's"));
        }
        if !jpeg.bits_copy() {
            return Err(JpegError::Unsupported("the tile has other Huffman tables or restart markers"));
        }
        Ok((jpeg, scan))
    }
}

/// Checks a worker's JPEG tile for a result at `quality`: its size is
/// `width` x `height`, it is coded as [`encode_tile`] codes, and its scan
/// reads through. A tile that passes can be spliced; stored with its index
/// appended ([`TileIndex::append_to`]), it is spliced without decoding it
/// again.
pub fn check_tile(bytes: &[u8], (width, height): (u32, u32), quality: u8) -> Result<TileIndex, JpegError> {
    let (jpeg, scan) = Reference::of(quality)?.parse(bytes, width, height)?;
    TileIndex::read(&jpeg, scan)
}

/// Writes a JPEG result a row of tiles at a time: [`Splice::header`], then
/// [`Splice::band`] for each row of the grid from the top, then
/// [`Splice::finish`]. Each returns the bytes to append to the file.
pub struct Splice {
    reference: &'static Reference,
    grid: TileGrid,
    writer: BitWriter,
    predictors: Vec<i16>,
    encoders: [HuffmanEncoder; 4],
    /// The grid row the next band is.
    row: u32,
    /// Each column's unstuffed scan, kept for the next band's.
    tapes: Vec<Vec<u8>>,
}

impl Splice {
    /// A result of `grid`'s size at `quality`. Its tiles must lie on MCU
    /// boundaries, and a JPEG is at most 65535 pixels a side.
    pub fn new(grid: TileGrid, quality: u8) -> Result<Self, JpegError> {
        let reference = Reference::of(quality)?;
        let layout = reference.jpeg.layout();
        if !grid.tile_size.is_multiple_of(layout.mcu_width) || !grid.tile_size.is_multiple_of(layout.mcu_height) {
            return Err(JpegError::Unsupported("tiles that do not lie on MCU boundaries"));
        }
        if grid.width > 65535 || grid.height > 65535 || grid.is_empty() {
            return Err(JpegError::Unsupported("a JPEG is 1 to 65535 pixels a side"));
        }
        let predictors = vec![0; reference.jpeg.components.len()];
        Ok(Self {
            reference,
            grid,
            writer: BitWriter::new(Vec::new()),
            predictors,
            encoders: HuffmanEncoder::standard(),
            row: 0,
            tapes: vec![Vec::new(); grid.columns() as usize],
        })
    }

    /// The file's markers, up to its scan's data.
    pub fn header(&self) -> Vec<u8> {
        let mut header = self.reference.header.clone();
        // SOF: marker, length, precision, then height and width.
        let size = &mut header[self.reference.frame_at + 5..][..4];
        size[..2].copy_from_slice(&(self.grid.height as u16).to_be_bytes());
        size[2..].copy_from_slice(&(self.grid.width as u16).to_be_bytes());
        header
    }

    /// The next row of tiles, from their JPEGs (left to right), each as
    /// stored: with its index appended, or without (then its scan is
    /// decoded to find its bits). Returns the bytes the row adds. A tile
    /// that is not as [`check_tile`] wants is an error.
    pub fn band(&mut self, tiles: &[impl AsRef<[u8]>]) -> Result<Vec<u8>, JpegError> {
        let columns = self.grid.columns();
        let first = self.row * columns;
        let rects: Vec<Rect> = (first..first + columns).filter_map(|t| self.grid.tile(t)).collect();
        if rects.len() != columns as usize || tiles.len() != rects.len() {
            return Err(JpegError::Malformed("not a row of the result's tiles"));
        }
        let layout = self.reference.jpeg.layout();
        let mcu_rows = rects[0].height.div_ceil(layout.mcu_height);
        let n = self.predictors.len();
        let mut parsed = Vec::with_capacity(tiles.len());
        for ((stored, rect), tape) in tiles.iter().zip(&rects).zip(&mut self.tapes) {
            let (bytes, index) = TileIndex::split(stored.as_ref());
            let (jpeg, scan) = self.reference.parse(bytes, rect.width, rect.height)?;
            match index {
                Some(_) => unstuff(scan, tape),
                None => tape.clear(),
            }
            parsed.push((jpeg, scan, index));
        }
        let mut scans: Vec<TileScan> = parsed
            .iter()
            .zip(&self.tapes)
            .map(|((jpeg, scan, index), tape)| {
                let bits = 8 * tape.len() as u64;
                match index.as_ref().and_then(|i| i.runs(mcu_rows, n, bits)) {
                    Some(runs) => TileScan::Indexed { runs: runs.iter(), tape },
                    None => TileScan::Read(Box::new(ScanReader::recording(jpeg, *scan))),
                }
            })
            .collect();
        for _ in 0..mcu_rows {
            for (scan, rect) in scans.iter_mut().zip(&rects) {
                let (run, tape) = scan.next_run(rect.width.div_ceil(layout.mcu_width))?;
                copy_run(&mut self.writer, &run, &mut self.predictors, &self.encoders, tape);
            }
        }
        self.row += 1;
        Ok(self.writer.take())
    }

    /// The end of the file, once every row is in.
    pub fn finish(self) -> Result<Vec<u8>, JpegError> {
        if self.row != self.grid.rows() {
            return Err(JpegError::Malformed("the result is missing rows of tiles"));
        }
        let mut end = self.writer.finish();
        end.extend_from_slice(&[0xFF, 0xD9]);
        Ok(end)
    }
}

/// A tile's scan as a band reads it, MCU row by MCU row: from its index and
/// its unstuffed bits, or decoded.
enum TileScan<'a> {
    Indexed { runs: std::slice::Iter<'a, Run>, tape: &'a [u8] },
    Read(Box<ScanReader<'a, &'a [u8]>>),
}

impl TileScan<'_> {
    /// The next MCU row's run (of `cols` MCUs) and the bits it lies in.
    fn next_run(&mut self, cols: u32) -> Result<(Run, (&[u8], u64)), JpegError> {
        match self {
            Self::Indexed { runs, tape } => {
                let run = *runs.next().expect("the index was checked to have every row");
                Ok((run, (tape, 0)))
            }
            Self::Read(reader) => {
                reader.bits.forget_before(reader.bits.position());
                let Row::Bits { mcus, end } = reader.row(cols)? else {
                    unreachable!("a reader that copies reads bits");
                };
                let run = Run::of(&mcus, end).ok_or(JpegError::Malformed("an empty MCU row"))?;
                Ok((run, reader.bits.tape()))
            }
        }
    }
}

/// Where the frame header (SOF0 or SOF1) starts among a JPEG's markers.
fn frame_header_at(header: &[u8]) -> Option<usize> {
    let mut at = 2;
    loop {
        let &[0xFF, marker, high, low] = header.get(at..at + 4)? else { return None };
        if matches!(marker, 0xC0 | 0xC1) {
            return Some(at);
        }
        at += 2 + usize::from(u16::from_be_bytes([high, low]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Smooth colour with grain and (when asked) an alpha gradient.
    fn image(width: u32, height: u32, channels: Channels) -> Frame {
        let mut noise = crate::noise::Xorshift64::new(0x2545_F491_4F6C_DD1D);
        let pixels = (0..height)
            .flat_map(|y| (0..width).map(move |x| (x, y)))
            .flat_map(|(x, y)| {
                let grain = (noise.next_u64() >> 59) as u32;
                let px = [(x * 3 + grain) as u8, (y * 2 + grain) as u8, ((x + y) + grain) as u8, (x * 5) as u8];
                px.into_iter().take(channels.count()).collect::<Vec<_>>()
            })
            .collect();
        Frame::with_channels(width, height, channels, pixels)
    }

    /// The tiles of `image`, checked, as the master stores them: each with
    /// what `index` makes of its index appended.
    fn stored_tiles(image: &Frame, grid: TileGrid, quality: u8, index: impl Fn(TileIndex) -> Vec<u8>) -> Vec<Vec<u8>> {
        grid.tiles()
            .map(|(_, rect)| {
                let mut tile = encode_tile(&image.crop(rect), quality).unwrap();
                let found = check_tile(&tile, (rect.width, rect.height), quality).unwrap();
                tile.extend(index(found));
                tile
            })
            .collect()
    }

    fn appended(index: TileIndex) -> Vec<u8> {
        let mut out = Vec::new();
        index.append_to(&mut out);
        out
    }

    /// The bits of a tile's scan, unstuffed.
    fn scan_bits(tile: &[u8]) -> u64 {
        let (_, scan) = Jpeg::parse(tile).unwrap();
        let mut tape = Vec::new();
        unstuff(scan, &mut tape);
        8 * tape.len() as u64
    }

    fn splice(tiles: &[Vec<u8>], grid: TileGrid, quality: u8) -> Result<Vec<u8>, JpegError> {
        let mut splice = Splice::new(grid, quality)?;
        let mut out = splice.header();
        for row in tiles.chunks(grid.columns() as usize) {
            out.extend(splice.band(row)?);
        }
        out.extend(splice.finish()?);
        Ok(out)
    }

    #[test]
    fn spliced_tiles_are_the_whole_images_jpeg_byte_for_byte() {
        // Qualities below and from 90, edge tiles of odd sizes, one tile and
        // many, with and without alpha.
        for (width, height, tile, quality) in
            [(100, 75, 32, 75), (100, 75, 16, 90), (64, 48, 64, 95), (45, 130, 48, 50)]
        {
            for channels in [Channels::Rgb, Channels::Rgba] {
                let image = image(width, height, channels);
                let whole = encode_tile(&image, quality).unwrap();
                let grid = TileGrid::new(width, height, tile);
                let indexed = stored_tiles(&image, grid, quality, appended);
                let bare = stored_tiles(&image, grid, quality, |_| Vec::new());
                for (tiles, how) in [(indexed, "copied by their index"), (bare, "decoded")] {
                    let spliced = splice(&tiles, grid, quality).unwrap();
                    assert!(spliced == whole, "{width}x{height}, {tile} px tiles, q{quality}, {how}");
                }
            }
        }
    }

    #[test]
    fn an_index_is_stored_after_its_tile() {
        let tile = encode_tile(&image(48, 40, Channels::Rgb), 75).unwrap();
        let index = check_tile(&tile, (48, 40), 75).unwrap();
        assert_eq!(index.rows.len(), 3, "40 rows are three 16 px MCU rows");
        assert!(index.runs(3, 3, scan_bits(&tile)).is_some(), "a tile's own index is followed");
        let mut stored = tile.clone();
        index.append_to(&mut stored);
        assert_eq!(TileIndex::split(&stored), (&tile[..], Some(index)));
        assert_eq!(TileIndex::split(&tile), (&tile[..], None));
        // A count of rows beyond the bytes there is no index.
        let count = stored.len() - 12;
        stored[count..count + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(TileIndex::split(&stored).1, None);
    }

    #[test]
    fn an_index_that_is_not_its_tiles_is_not_followed() {
        let (image, grid, quality) = (image(64, 64, Channels::Rgb), TileGrid::new(64, 64, 32), 75);
        let whole = encode_tile(&image, quality).unwrap();
        type Spoil = fn(&mut TileIndex);
        let wrong: [(&str, Spoil); 5] = [
            ("a row missing", |i| i.rows.truncate(1)),
            ("beyond the scan", |i| i.rows[1].end += 8 * 4096),
            ("a row starting elsewhere", |i| i.rows[1].components[0].dc_at += 1),
            ("marks out of order", |i| i.rows[0].components[1].ac_at = 0),
            ("a DC out of range", |i| i.rows[0].components[0].first_dc = 1024),
        ];
        let tile = encode_tile(&image.crop(grid.tile(0).unwrap()), quality).unwrap();
        let bits = scan_bits(&tile);
        for (what, spoil) in wrong {
            let mut index = check_tile(&tile, (32, 32), quality).unwrap();
            assert!(index.runs(2, 3, bits).is_some());
            spoil(&mut index);
            assert!(index.runs(2, 3, bits).is_none(), "{what}: refused");
            let tiles = stored_tiles(&image, grid, quality, |mut index| {
                spoil(&mut index);
                appended(index)
            });
            assert!(splice(&tiles, grid, quality).unwrap() == whole, "{what}: decoded instead");
        }
    }

    #[test]
    fn a_garbled_index_never_panics() {
        let (image, grid, quality) = (image(32, 32, Channels::Rgb), TileGrid::new(32, 32, 32), 90);
        let tiles = stored_tiles(&image, grid, quality, appended);
        let jpeg_len = encode_tile(&image, quality).unwrap().len();
        for at in jpeg_len..tiles[0].len() {
            for flip in [0x01, 0x80, 0xFF] {
                let mut garbled = tiles.clone();
                garbled[0][at] ^= flip;
                // Either refused, or a JPEG (DC values read from a garbled
                // index within range give other pixels, not a crash).
                if let Ok(out) = splice(&garbled, grid, quality) {
                    assert!(out.ends_with(&[0xFF, 0xD9]));
                }
            }
        }
    }

    #[test]
    fn tiles_are_4_2_0_at_every_quality() {
        for quality in [1, 50, 89, 90, 95, 100] {
            let bytes = encode_tile(&image(48, 32, Channels::Rgb), quality).unwrap();
            let (jpeg, _) = Jpeg::parse(&bytes).unwrap();
            let sampling: Vec<_> = jpeg.components.iter().map(|c| (c.h, c.v)).collect();
            assert_eq!(sampling, [(2, 2), (1, 1), (1, 1)], "q{quality}");
        }
    }

    #[test]
    fn a_tile_not_coded_as_the_result_is_refused() {
        let tile = image(32, 32, Channels::Rgb);
        let good = encode_tile(&tile, 80).unwrap();
        check_tile(&good, (32, 32), 80).unwrap();
        let refused = |bytes: &[u8], size, quality| check_tile(bytes, size, quality).unwrap_err().to_string();
        assert!(refused(&good, (32, 16), 80).contains("size"));
        assert!(refused(&good, (32, 32), 81).contains("quantisation"));
        // 4:4:4 at the same tables is still not the result's 4:2:0.
        let mut other = Vec::new();
        let mut encoder = jpeg_encoder::Encoder::new(&mut other, 80);
        encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::F_1_1);
        encoder.encode(&tile.pixels, 32, 32, jpeg_encoder::ColorType::Rgb).unwrap();
        assert!(refused(&other, (32, 32), 80).contains("sampling"));
        let mut other = Vec::new();
        let mut encoder = jpeg_encoder::Encoder::new(&mut other, 80);
        encoder.set_restart_interval(2);
        encoder.encode(&tile.pixels, 32, 32, jpeg_encoder::ColorType::Rgb).unwrap();
        assert!(refused(&other, (32, 32), 80).contains("restart markers"));
        // Cut short, or garbled in its scan.
        assert!(refused(&good[..good.len() - 40], (32, 32), 80).contains("ends early"));
        let mut garbled = good.clone();
        let at = garbled.len() - 60;
        garbled[at..at + 20].fill(0xFE);
        assert!(check_tile(&garbled, (32, 32), 80).is_err());
    }

    #[test]
    fn a_splice_wants_whole_rows_of_aligned_tiles() {
        assert!(Splice::new(TileGrid::new(100, 100, 24), 75).is_err(), "24 px tiles cut 16 px MCUs");
        assert!(Splice::new(TileGrid::new(70_000, 100, 512), 90).is_err(), "wider than a JPEG can be");
        let image = image(64, 64, Channels::Rgb);
        let grid = TileGrid::new(64, 64, 32);
        let tile = |t| encode_tile(&image.crop(grid.tile(t).unwrap()), 90).unwrap();
        let mut splice = Splice::new(grid, 90).unwrap();
        assert!(splice.band(&[tile(0)]).is_err(), "half a row");
        splice.band(&[tile(0), tile(1)]).unwrap();
        let mut short = Splice::new(grid, 90).unwrap();
        short.band(&[tile(0), tile(1)]).unwrap();
        assert!(short.finish().is_err(), "a row missing");
    }
}
