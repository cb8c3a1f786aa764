//! A tiled TIFF written a tile at a time, as large-image tools expect it:
//! lossless (Deflate after horizontal differencing), 8-bit RGB or RGBA
//! (unassociated alpha), one TIFF tile per tilepipe tile (tile sizes are
//! multiples of 16, as TIFF wants), BigTIFF when the file could pass
//! 4 GiB. Tiles are appended in row-major order as they come and the
//! directory follows them; the header is then pointed at it. Memory: one
//! tile and its compressed copy.

use std::io::{self, Seek, SeekFrom, Write};

use pipeline::Channels;

const SHORT: u16 = 3;
const LONG: u16 = 4;
const LONG8: u16 = 16;

pub struct TiffWriter<W: Write + Seek> {
    out: W,
    big: bool,
    size: (u32, u32),
    tile: u32,
    channels: Channels,
    /// Bytes written so far: where the next tile goes.
    at: u64,
    /// Each written tile's offset and length.
    tiles: Vec<(u64, u64)>,
    padded: Vec<u8>,
}

impl<W: Write + Seek> TiffWriter<W> {
    /// Starts a `size` image of `channels` in `tile` x `tile` tiles:
    /// BigTIFF if its tiles, uncompressed, come near 4 GiB.
    pub fn new(out: W, size: (u32, u32), channels: Channels, tile: u32) -> io::Result<Self> {
        let tiles = u64::from(size.0.div_ceil(tile)) * u64::from(size.1.div_ceil(tile));
        let raw = tiles * u64::from(tile) * u64::from(tile) * channels.count() as u64;
        // Deflate grows incompressible data by well under 1%.
        Self::with_kind(out, size, channels, tile, raw + raw / 64 + (64 << 20) > u64::from(u32::MAX))
    }

    fn with_kind(mut out: W, size: (u32, u32), channels: Channels, tile: u32, big: bool) -> io::Result<Self> {
        debug_assert!(tile.is_multiple_of(16), "TIFF tiles are multiples of 16");
        // Little-endian; the directory's offset is written at the end.
        let header: &[u8] = if big {
            &[b'I', b'I', 43, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        } else {
            &[b'I', b'I', 42, 0, 0, 0, 0, 0]
        };
        out.write_all(header)?;
        let padded = Vec::with_capacity(tile as usize * tile as usize * channels.count());
        Ok(Self { out, big, size, tile, channels, at: header.len() as u64, tiles: Vec::new(), padded })
    }

    /// Tiles across and down.
    fn grid(&self) -> (u32, u32) {
        (self.size.0.div_ceil(self.tile), self.size.1.div_ceil(self.tile))
    }

    /// Appends the next tile in row-major order: `width` x `height` pixels
    /// (smaller at the right and bottom edges; padded here).
    pub fn write_tile(&mut self, width: u32, height: u32, pixels: &[u8]) -> io::Result<()> {
        let n = self.channels.count();
        let (tile, line) = (self.tile as usize, width as usize * n);
        if width > self.tile || height > self.tile || pixels.len() != line * height as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a tile of the wrong size"));
        }
        self.padded.clear();
        self.padded.resize(tile * tile * n, 0);
        for (row, src) in self.padded.chunks_exact_mut(tile * n).zip(pixels.chunks_exact(line)) {
            row[..line].copy_from_slice(src);
        }
        // Predictor 2: each sample less the one a pixel to its left.
        for row in self.padded.chunks_exact_mut(tile * n) {
            for i in (n..row.len()).rev() {
                row[i] = row[i].wrapping_sub(row[i - n]);
            }
        }
        let compressed = fdeflate::compress_to_vec(&self.padded);
        self.out.write_all(&compressed)?;
        self.tiles.push((self.at, compressed.len() as u64));
        self.at += compressed.len() as u64;
        Ok(())
    }

    /// Writes the directory after the tiles and points the header at it.
    pub fn finish(mut self) -> io::Result<W> {
        let (across, down) = self.grid();
        if self.tiles.len() as u64 != u64::from(across) * u64::from(down) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not every tile was written"));
        }
        let entries = self.entries()?;
        let directory = self.write_directory(entries)?;
        if self.big {
            self.out.seek(SeekFrom::Start(8))?;
            self.out.write_all(&directory.to_le_bytes())?;
        } else {
            let directory = u32::try_from(directory).map_err(|_| io::Error::other("a classic TIFF past 4 GiB"))?;
            self.out.seek(SeekFrom::Start(4))?;
            self.out.write_all(&directory.to_le_bytes())?;
        }
        self.out.seek(SeekFrom::End(0))?;
        Ok(self.out)
    }

    /// The directory's entries, in tag order: tag, type, count and value.
    fn entries(&self) -> io::Result<Vec<Entry>> {
        let n = self.channels.count() as u16;
        let short = |v: u16| v.to_le_bytes().to_vec();
        let long = |v: u32| v.to_le_bytes().to_vec();
        let (offsets, counts): (Vec<u8>, Vec<u8>) = if self.big {
            (
                self.tiles.iter().flat_map(|t| t.0.to_le_bytes()).collect(),
                self.tiles.iter().flat_map(|t| t.1.to_le_bytes()).collect(),
            )
        } else {
            let narrow = |v: u64| u32::try_from(v).map_err(|_| io::Error::other("a classic TIFF past 4 GiB"));
            let mut offsets = Vec::new();
            let mut counts = Vec::new();
            for &(offset, count) in &self.tiles {
                offsets.extend(narrow(offset)?.to_le_bytes());
                counts.extend(narrow(count)?.to_le_bytes());
            }
            (offsets, counts)
        };
        let wide = if self.big { LONG8 } else { LONG };
        let tiles = self.tiles.len() as u64;
        let mut entries: Vec<Entry> = vec![
            (256, LONG, 1, long(self.size.0)),
            (257, LONG, 1, long(self.size.1)),
            (258, SHORT, u64::from(n), (0..n).flat_map(|_| 8u16.to_le_bytes()).collect()),
            (259, SHORT, 1, short(8)), // Deflate (zlib)
            (262, SHORT, 1, short(2)), // RGB
            (277, SHORT, 1, short(n)),
            (284, SHORT, 1, short(1)), // samples interleaved
            (317, SHORT, 1, short(2)), // horizontal differencing
            (322, LONG, 1, long(self.tile)),
            (323, LONG, 1, long(self.tile)),
            (324, wide, tiles, offsets),
            (325, wide, tiles, counts),
        ];
        if self.channels == Channels::Rgba {
            entries.push((338, SHORT, 1, short(2))); // unassociated alpha
        }
        Ok(entries)
    }

    /// Writes the directory of `entries` (and first the values too long to
    /// sit in their entry); returns where it starts.
    fn write_directory(&mut self, entries: Vec<Entry>) -> io::Result<u64> {
        // Values too long to sit in their entry go first, at even offsets.
        let inline = if self.big { 8 } else { 4 };
        let mut placed = Vec::with_capacity(entries.len());
        for (tag, kind, count, value) in entries {
            if value.len() <= inline {
                placed.push((tag, kind, count, value));
                continue;
            }
            self.align()?;
            let offset = self.at;
            self.out.write_all(&value)?;
            self.at += value.len() as u64;
            let pointer = if self.big { offset.to_le_bytes().to_vec() } else { (offset as u32).to_le_bytes().to_vec() };
            placed.push((tag, kind, count, pointer));
        }
        self.align()?;
        let directory = self.at;
        let mut ifd = Vec::new();
        if self.big {
            ifd.extend((placed.len() as u64).to_le_bytes());
        } else {
            ifd.extend((placed.len() as u16).to_le_bytes());
        }
        for (tag, kind, count, mut value) in placed {
            ifd.extend(tag.to_le_bytes());
            ifd.extend(kind.to_le_bytes());
            if self.big {
                ifd.extend(count.to_le_bytes());
            } else {
                ifd.extend((count as u32).to_le_bytes());
            }
            value.resize(inline, 0);
            ifd.extend(value);
        }
        ifd.extend(std::iter::repeat_n(0, inline)); // no next directory
        self.out.write_all(&ifd)?;
        Ok(directory)
    }

    /// Pads to an even offset, as TIFF wants of what offsets point at.
    fn align(&mut self) -> io::Result<()> {
        if !self.at.is_multiple_of(2) {
            self.out.write_all(&[0])?;
            self.at += 1;
        }
        Ok(())
    }
}

/// A directory entry: tag, type, count and value (little endian).
type Entry = (u16, u16, u64, Vec<u8>);

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::{Frame, TileGrid};

    fn written(frame: &Frame, tile: u32, big: bool) -> Vec<u8> {
        let size = (frame.width, frame.height);
        let mut tiff = TiffWriter::with_kind(io::Cursor::new(Vec::new()), size, frame.channels, tile, big).unwrap();
        for (_, rect) in TileGrid::new(frame.width, frame.height, tile).tiles() {
            tiff.write_tile(rect.width, rect.height, &frame.crop(rect).pixels).unwrap();
        }
        tiff.finish().unwrap().into_inner()
    }

    #[test]
    fn tiled_tiffs_read_back_exactly_classic_and_big() {
        let mut noise = pipeline::noise::Xorshift64::new(3);
        for channels in [Channels::Rgb, Channels::Rgba] {
            let (w, h) = (100, 70);
            let pixels =
                (0..Frame::len_of(w, h, channels)).map(|i| (i / 7) as u8 ^ (noise.next_u64() as u8 & 3)).collect();
            let frame = Frame::with_channels(w, h, channels, pixels);
            for big in [false, true] {
                let bytes = written(&frame, 32, big);
                assert_eq!(&bytes[..4], if big { b"II+\0" } else { b"II*\0" });
                let image = image::load_from_memory_with_format(&bytes, image::ImageFormat::Tiff).unwrap();
                let back = match channels {
                    Channels::Rgb => image.into_rgb8().into_raw(),
                    Channels::Rgba => image.into_rgba8().into_raw(),
                };
                assert!(back == frame.pixels, "{channels:?} big={big}: the pixels differ");
            }
        }
    }

    #[test]
    fn the_kind_follows_the_size_and_every_tile_is_needed() {
        let tiff = |size| TiffWriter::new(io::Cursor::new(Vec::new()), size, Channels::Rgb, 512).unwrap();
        assert!(!tiff((8192, 8192)).big);
        assert!(tiff((40_000, 40_000)).big);
        let mut partial = tiff((600, 600));
        partial.write_tile(512, 512, &vec![0; 512 * 512 * 3]).unwrap();
        assert!(partial.write_tile(600, 10, &[0; 18_000]).is_err(), "wider than a tile");
        assert!(partial.finish().is_err());
    }
}
