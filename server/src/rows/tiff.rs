//! A TIFF read a band of strips or tiles at a time: 8-bit grey, grey with
//! alpha, RGB or RGBA, samples interleaved, of moderate bands (any other is
//! decoded whole). The tiff crate decompresses and undoes predictors; the
//! samples need no conversion beyond grey to RGB, as the whole decode does.

use std::fs::File;
use std::io::BufReader;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use ::tiff::decoder::{ChunkType, Decoder, DecodingResult};
use ::tiff::tags::Tag;
use pipeline::Channels;

use super::Rows;
use crate::error::AppError;

/// The most a band of strips or tiles may hold (a row of 512 px RGBA tiles
/// of a 32768 px wide image, and two tiles): a TIFF stored as a few huge
/// strips is decoded whole instead, under the memory budget.
const MAX_BAND: u64 = 96 << 20;

pub struct TiffRows {
    decoder: Decoder<BufReader<File>>,
    size: (u32, u32),
    /// Samples per pixel: grey, grey and alpha, RGB, RGBA.
    samples: usize,
    /// A strip's or a tile's size, and whether they are tiles.
    chunk: (u32, u32),
    tiled: bool,
    /// Rows `top..top + rows` of the image, decoded.
    band: Vec<u8>,
    top: u32,
    rows: u32,
    next: u32,
}

impl TiffRows {
    /// The TIFF at `path`, if it can be read by bands.
    pub fn open(path: &Path) -> Result<Option<Self>, AppError> {
        let file = File::open(path).map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
        let reader = BufReader::with_capacity(64 * 1024, file);
        let opened = catch_unwind(AssertUnwindSafe(move || -> ::tiff::TiffResult<Option<Self>> {
            let mut limits = ::tiff::decoder::Limits::default();
            limits.decoding_buffer_size = MAX_BAND as usize;
            let mut decoder = Decoder::new(reader)?.with_limits(limits);
            let samples = match decoder.colortype()? {
                ::tiff::ColorType::Gray(8) => 1,
                ::tiff::ColorType::GrayA(8) => 2,
                ::tiff::ColorType::RGB(8) => 3,
                ::tiff::ColorType::RGBA(8) => 4,
                _ => return Ok(None),
            };
            // Black is zero (or RGB), samples interleaved: read as they are.
            let photometric = decoder.find_tag_unsigned::<u16>(Tag::PhotometricInterpretation)?;
            let planar = decoder.find_tag_unsigned::<u16>(Tag::PlanarConfiguration)?.unwrap_or(1);
            if photometric != Some(if samples < 3 { 1 } else { 2 }) || planar != 1 {
                return Ok(None);
            }
            let size = decoder.dimensions()?;
            let chunk = decoder.chunk_dimensions();
            let tiled = decoder.get_chunk_type() == ChunkType::Tile;
            let rows = Self { decoder, size, samples, chunk, tiled, band: Vec::new(), top: 0, rows: 0, next: 0 };
            // Header fields are hostile: in u64, before anything is allocated.
            if chunk.0 == 0 || chunk.1 == 0 || rows.chunks_bytes() > MAX_BAND {
                return Ok(None);
            }
            Ok(Some(rows))
        }))
        .map_err(|_| unreadable("the decoder failed"))?;
        opened.map_err(|e| unreadable(&e.to_string()))
    }

    /// A band of strips or a row of tiles, and a chunk being decoded into
    /// it (with its compressed bytes), at most.
    fn chunks_bytes(&self) -> u64 {
        let (width, chunk) = (u64::from(self.size.0), (u64::from(self.chunk.0), u64::from(self.chunk.1)));
        let covered = if self.tiled { width.div_ceil(chunk.0) * chunk.0 } else { width };
        let samples = self.samples as u64;
        covered * chunk.1 * samples + 2 * chunk.0 * chunk.1 * samples
    }

    /// Decodes the band of strips or tiles holding row `self.next`.
    fn fill(&mut self) -> Result<(), AppError> {
        let (width, height) = self.size;
        let band = self.next / self.chunk.1;
        let (top, rows) = (band * self.chunk.1, self.chunk.1.min(height - band * self.chunk.1));
        let line = width as usize * self.samples;
        self.band.clear();
        self.band.resize(line * rows as usize, 0);
        let across = if self.tiled { width.div_ceil(self.chunk.0) } else { 1 };
        for column in 0..across {
            let index = band * across + column;
            let decoder = &mut self.decoder;
            let chunk = catch_unwind(AssertUnwindSafe(move || decoder.read_chunk(index)))
                .map_err(|_| unreadable("the decoder failed"))?
                .map_err(|e| unreadable(&e.to_string()))?;
            let DecodingResult::U8(data) = chunk else { return Err(unreadable("samples are not 8-bit")) };
            // A chunk holds its data's width (a tile at the right edge, less).
            let x = (column * self.chunk.0) as usize * self.samples;
            let chunk_line = if self.tiled {
                (self.chunk.0.min(width - column * self.chunk.0)) as usize * self.samples
            } else {
                line
            };
            if data.len() < chunk_line * rows as usize {
                return Err(unreadable("a strip or tile is short"));
            }
            for (r, src) in data.chunks_exact(chunk_line).take(rows as usize).enumerate() {
                self.band[r * line + x..r * line + x + chunk_line].copy_from_slice(src);
            }
        }
        (self.top, self.rows) = (top, rows);
        Ok(())
    }
}

impl Rows for TiffRows {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn has_alpha(&self) -> bool {
        matches!(self.samples, 2 | 4)
    }

    fn next_row(&mut self, channels: Channels, out: &mut Vec<u8>) -> Result<bool, AppError> {
        if self.next == self.size.1 {
            return Ok(false);
        }
        if !(self.top..self.top + self.rows).contains(&self.next) {
            self.fill()?;
        }
        let line = self.size.0 as usize * self.samples;
        let at = (self.next - self.top) as usize * line;
        let row = &self.band[at..at + line];
        out.clear();
        match (self.samples, channels) {
            (3, Channels::Rgb) | (4, Channels::Rgba) => out.extend_from_slice(row),
            (4, Channels::Rgb) => out.extend(row.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]])),
            (3, Channels::Rgba) => out.extend(row.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255])),
            (1, Channels::Rgb) => out.extend(row.iter().flat_map(|&g| [g, g, g])),
            (1, Channels::Rgba) => out.extend(row.iter().flat_map(|&g| [g, g, g, 255])),
            (_, Channels::Rgb) => out.extend(row.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]])),
            (_, Channels::Rgba) => out.extend(row.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0], p[1]])),
        }
        self.next += 1;
        Ok(true)
    }

    fn memory(&self) -> u64 {
        self.chunks_bytes()
    }
}

fn unreadable(why: &str) -> AppError {
    super::unreadable("tif", why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::{self, Limits};

    const ANY: Limits = Limits { min_dimension: 1, max_dimension: 65_535, max_pixels: u64::MAX };

    fn read_all(path: &Path, channels: Channels) -> Vec<u8> {
        let mut rows = TiffRows::open(path).unwrap().expect("read by bands");
        let (mut all, mut row) = (Vec::new(), Vec::new());
        while rows.next_row(channels, &mut row).unwrap() {
            all.extend_from_slice(&row);
        }
        all
    }

    #[test]
    fn strips_and_tiles_read_as_the_whole_decode() {
        let dir = tempfile::tempdir().unwrap();
        let mut noise = pipeline::noise::Xorshift64::new(11);
        let (w, h) = (100u32, 70u32);
        // Written by image (strips), and by tilepipe's own writer (tiles).
        for channels in [Channels::Rgb, Channels::Rgba] {
            let pixels: Vec<u8> =
                (0..pipeline::Frame::len_of(w, h, channels)).map(|_| noise.next_u64() as u8).collect();
            let frame = pipeline::Frame::with_channels(w, h, channels, pixels);
            let mut strips = Vec::new();
            let colour = if channels == Channels::Rgb { image::ColorType::Rgb8 } else { image::ColorType::Rgba8 };
            image::write_buffer_with_format(
                &mut std::io::Cursor::new(&mut strips),
                &frame.pixels,
                w,
                h,
                colour,
                image::ImageFormat::Tiff,
            )
            .unwrap();
            let mut tiles =
                crate::tiff_writer::TiffWriter::new(std::io::Cursor::new(Vec::new()), (w, h), channels, 32).unwrap();
            for (_, rect) in pipeline::TileGrid::new(w, h, 32).tiles() {
                tiles.write_tile(rect.width, rect.height, &frame.crop(rect).pixels).unwrap();
            }
            let tiles = tiles.finish().unwrap().into_inner();
            for (name, bytes) in [("strips", strips), ("tiles", tiles)] {
                let path = dir.path().join(format!("{name}.tif"));
                std::fs::write(&path, &bytes).unwrap();
                let whole = intake::decode(&bytes, intake::inspect(&bytes, ANY).unwrap()).unwrap();
                assert_eq!(whole.channels, channels);
                assert!(read_all(&path, channels) == whole.pixels, "{name} {channels:?}: the rows differ");
            }
        }
    }

    #[test]
    fn grey_becomes_rgb_and_sixteen_bits_are_decoded_whole() {
        let dir = tempfile::tempdir().unwrap();
        let grey: Vec<u8> = (0..40 * 30).map(|i| (i * 7) as u8).collect();
        let mut bytes = Vec::new();
        let cursor = &mut std::io::Cursor::new(&mut bytes);
        image::write_buffer_with_format(cursor, &grey, 40, 30, image::ColorType::L8, image::ImageFormat::Tiff).unwrap();
        let path = dir.path().join("grey.tif");
        std::fs::write(&path, &bytes).unwrap();
        let whole = intake::decode(&bytes, intake::inspect(&bytes, ANY).unwrap()).unwrap();
        assert!(read_all(&path, Channels::Rgb) == whole.pixels);

        let deep: Vec<u8> = vec![0; 40 * 30 * 6];
        let mut bytes = Vec::new();
        let cursor = &mut std::io::Cursor::new(&mut bytes);
        image::write_buffer_with_format(cursor, &deep, 40, 30, image::ColorType::Rgb16, image::ImageFormat::Tiff)
            .unwrap();
        std::fs::write(&path, &bytes).unwrap();
        assert!(TiffRows::open(&path).unwrap().is_none());
    }
}
