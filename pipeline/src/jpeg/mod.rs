//! Lossless JPEG crops: a baseline JPEG's tiles sent as small JPEGs of their
//! own, cut in the DCT domain (as `jpegtran -crop` does), never decoded to
//! pixels by the master.
//!
//! A task then carries about a thirteenth of its raw bytes. The crop is one
//! MCU wider than its tile and halo on every side (where the image goes on),
//! because chroma upsampling reads neighbouring samples: with that margin,
//! decoding the crop gives exactly the pixels that decoding the whole image
//! gives (tested for every sampling and restart layout below).
//!
//! Most JPEGs are coded with the standard Huffman tables and no restart
//! markers: their crops copy the original's entropy-coded bits and code
//! again only the first DC difference of each component in each crop row
//! (identical bytes to coding every coefficient again, tested; 1.8x faster).
//!
//! Supported: 8-bit sequential Huffman JPEGs (SOF0, SOF1) with one
//! interleaved scan of 1 or 3 components. Anything else (progressive,
//! arithmetic, 12-bit, CMYK, multi-scan) is [`JpegError::Unsupported`] and
//! travels raw.

mod bits;
mod dc;
mod entropy;
mod huffman;
mod index;
mod markers;
mod splice;

pub use index::TileIndex;
pub use splice::{Splice, check_tile, encode_tile};

use std::collections::VecDeque;
use std::sync::Arc;

use crate::frame::{Channels, Frame};
use bits::BitWriter;
use entropy::{ScanReader, copy_run, encode_block};
use huffman::{Decoder as HuffmanDecoder, Encoder as HuffmanEncoder};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JpegError {
    #[error("this JPEG cannot be cropped losslessly: {0}")]
    Unsupported(&'static str),
    #[error("malformed JPEG: {0}")]
    Malformed(&'static str),
}

/// An MCU-aligned region of the image as a JPEG file of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crop {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub bytes: Vec<u8>,
}

/// A region in MCUs: columns `x0..x1`, rows `y0..y1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct McuRect {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

#[derive(Debug, Clone, Copy)]
struct Component {
    id: u8,
    h: u8,
    v: u8,
    tq: u8,
    td: u8,
    ta: u8,
}

/// One DCT block's quantised coefficients, in zigzag order.
type Block = [i16; 64];

/// The decoded coefficients of one MCU row: per component, `v` rows of
/// `mcus_x * h` blocks.
type McuRow = Vec<Vec<Block>>;

/// Where one MCU's entropy-coded bits lie in the scan, for copying them: its
/// start, and per component where its first block's DC and AC begin, that
/// block's DC and the last block's (the DC predictors a crop needs).
#[derive(Debug, Clone, Copy, Default)]
struct McuBits {
    start: u64,
    components: [ComponentBits; 3],
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ComponentBits {
    dc_at: u64,
    ac_at: u64,
    first_dc: i16,
    last_dc: i16,
}

/// A run of MCUs, as copying its bits needs it: per component where its
/// first MCU's first block's DC and AC begin and that DC, and its last MCU's
/// last DC; and the bit where the run ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Run {
    components: [ComponentBits; 3],
    end: u64,
}

impl Run {
    /// The run of `mcus`, which ends at bit `end`; `None` if it is empty.
    fn of(mcus: &[McuBits], end: u64) -> Option<Self> {
        let (first, last) = (mcus.first()?, mcus.last()?);
        let mut components = first.components;
        for (c, last) in components.iter_mut().zip(&last.components) {
            c.last_dc = last.last_dc;
        }
        Some(Self { components, end })
    }
}

/// One decoded MCU row, as the split keeps it: its coefficients (to encode
/// them again) or where its bits lie (to copy them).
enum Row {
    Blocks(McuRow),
    Bits { mcus: Vec<McuBits>, end: u64 },
}

/// An image's size and MCU grid: all that is needed to know which region of
/// it a crop holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub width: u32,
    pub height: u32,
    pub mcu_width: u32,
    pub mcu_height: u32,
}

impl Layout {
    /// MCU columns and rows.
    pub fn mcus(&self) -> (u32, u32) {
        (self.width.div_ceil(self.mcu_width), self.height.div_ceil(self.mcu_height))
    }

    /// The MCUs that cover pixels `x0..x1`, `y0..y1` (clamped to the image)
    /// and one MCU more on every side where the image goes on.
    pub fn covering(&self, (x0, y0, x1, y1): (i64, i64, i64, i64)) -> McuRect {
        let (w, h) = (self.mcu_width, self.mcu_height);
        let (cols, rows) = self.mcus();
        let first = |p: i64, size: u32| (p.max(0) / i64::from(size)).saturating_sub(1).max(0) as u32;
        let end = |p: i64, size: u32, count: u32, limit: u32| {
            let p = p.clamp(1, i64::from(limit));
            ((p as u64).div_ceil(u64::from(size)) as u32 + 1).min(count)
        };
        McuRect {
            x0: first(x0, w),
            y0: first(y0, h),
            x1: end(x1, w, cols, self.width),
            y1: end(y1, h, rows, self.height),
        }
    }

    /// The MCUs a tile's task carries: `rect` and `halo` pixels around it
    /// (clamped to the image: the halo's mirrored pixels lie inside), plus
    /// the margin.
    pub fn covering_tile(&self, rect: crate::Rect, halo: u32) -> McuRect {
        let halo = i64::from(halo);
        let (x, y) = (i64::from(rect.x), i64::from(rect.y));
        self.covering((x - halo, y - halo, x + i64::from(rect.width) + halo, y + i64::from(rect.height) + halo))
    }

    /// The pixels `rect` holds: x, y, width, height.
    pub fn bounds(&self, rect: McuRect) -> (u32, u32, u32, u32) {
        let (x, y) = (rect.x0 * self.mcu_width, rect.y0 * self.mcu_height);
        let width = (rect.x1 * self.mcu_width).min(self.width) - x;
        let height = (rect.y1 * self.mcu_height).min(self.height) - y;
        (x, y, width, height)
    }
}

/// A JPEG's Huffman decoders of one class by table number, shared when
/// standard (see [`HuffmanDecoder::shared`]).
type Tables = [Option<Arc<HuffmanDecoder>>; 4];

/// A baseline JPEG read up to its scan: all a crop needs. The scan itself is
/// read from a stream, so a file of any size is split in bounded memory.
pub struct Jpeg {
    pub width: u32,
    pub height: u32,
    sof: u8,
    components: Vec<Component>,
    /// Segments every crop repeats verbatim (JFIF, Adobe, quantisation tables).
    kept: Vec<Vec<u8>>,
    dc: Tables,
    ac: Tables,
    restart_interval: u32,
}

impl Jpeg {
    /// The image's size and MCU grid.
    pub fn layout(&self) -> Layout {
        let h = self.components.iter().map(|c| c.h).max().unwrap_or(1);
        let v = self.components.iter().map(|c| c.v).max().unwrap_or(1);
        Layout { width: self.width, height: self.height, mcu_width: 8 * u32::from(h), mcu_height: 8 * u32::from(v) }
    }

    /// Each component's quantisation table, in zigzag order.
    fn quantisation(&self) -> Result<Vec<[u16; 64]>, JpegError> {
        let mut tables = [None; 4];
        for segment in self.kept.iter().filter(|s| s[1] == 0xDB) {
            let mut body = &segment[4..];
            while let [pq_tq, rest @ ..] = body {
                let (wide, id) = (pq_tq >> 4 != 0, usize::from(pq_tq & 15));
                let size = if wide { 128 } else { 64 };
                let (Some(values), Some(table)) = (rest.get(..size), tables.get_mut(id)) else {
                    return Err(JpegError::Malformed("a short quantisation table"));
                };
                let mut q = [0u16; 64];
                for (k, v) in q.iter_mut().enumerate() {
                    *v = if wide {
                        u16::from_be_bytes([values[2 * k], values[2 * k + 1]])
                    } else {
                        u16::from(values[k])
                    };
                }
                *table = Some(q);
                body = &rest[size..];
            }
        }
        self.components
            .iter()
            .map(|c| {
                tables
                    .get(usize::from(c.tq))
                    .copied()
                    .flatten()
                    .ok_or(JpegError::Malformed("a missing quantisation table"))
            })
            .collect()
    }

    /// See [`Layout::covering`].
    pub fn covering(&self, region: (i64, i64, i64, i64)) -> McuRect {
        self.layout().covering(region)
    }

    /// Entropy-decodes the scan once, top to bottom, and writes each wanted
    /// crop as soon as its last MCU row is decoded, holding only the MCU rows
    /// that crops still to come need. `wanted` must be sorted by `y1`;
    /// `emit` gets each crop with its index in `wanted`, and may stop the
    /// split by returning false.
    ///
    /// A scan coded with the standard Huffman tables and without restart
    /// markers (most encoders' default) has its bits copied into the crops:
    /// only each crop row's first DC differences are coded again. Any other
    /// has its coefficients coded again with the standard tables.
    pub fn split(
        &self,
        scan: impl std::io::Read,
        wanted: &[McuRect],
        emit: impl FnMut(usize, Crop) -> bool,
    ) -> Result<(), JpegError> {
        self.split_as(scan, wanted, self.bits_copy(), emit)
    }

    /// Whether crops can copy the scan's bits (see [`Jpeg::split`]).
    fn bits_copy(&self) -> bool {
        let standard = HuffmanEncoder::standard();
        self.restart_interval == 0
            && self.components.iter().enumerate().all(|(i, c)| {
                let (dc, ac) = if i == 0 { (&standard[0], &standard[1]) } else { (&standard[2], &standard[3]) };
                self.dc[usize::from(c.td)].as_ref().is_some_and(|t| t.codes_as(dc))
                    && self.ac[usize::from(c.ta)].as_ref().is_some_and(|t| t.codes_as(ac))
            })
    }

    fn split_as(
        &self,
        scan: impl std::io::Read,
        wanted: &[McuRect],
        copy: bool,
        mut emit: impl FnMut(usize, Crop) -> bool,
    ) -> Result<(), JpegError> {
        debug_assert!(wanted.windows(2).all(|w| w[0].y1 <= w[1].y1), "sorted by y1");
        let (cols, rows) = self.layout().mcus();
        // The first row each crop from `i` on needs.
        let mut keep_from = vec![u32::MAX; wanted.len() + 1];
        for i in (0..wanted.len()).rev() {
            keep_from[i] = keep_from[i + 1].min(wanted[i].y0);
        }
        let encoders = HuffmanEncoder::standard();
        let mut reader = if copy { ScanReader::recording(self, scan) } else { ScanReader::new(self, scan, false) };
        let mut band: VecDeque<Row> = VecDeque::new();
        let mut band_start = 0u32;
        let mut next = 0;
        for row in 0..rows {
            if next == wanted.len() {
                break;
            }
            let decoded = reader.row(cols)?;
            if row >= keep_from[next] {
                band.push_back(decoded);
            } else {
                band_start = row + 1;
            }
            while let Some(rect) = wanted.get(next).filter(|r| r.y1 <= row + 1) {
                if rect.x0 >= rect.x1 || rect.y0 >= rect.y1 || rect.x1 > cols || rect.y0 < band_start {
                    return Err(JpegError::Malformed("a crop outside the image"));
                }
                let rows = band.range((rect.y0 - band_start) as usize..(rect.y1 - band_start) as usize);
                if !emit(next, self.crop(rows, *rect, &encoders, reader.bits.tape())) {
                    return Ok(());
                }
                next += 1;
            }
            while band_start < keep_from[next].min(row + 1) && !band.is_empty() {
                band.pop_front();
                band_start += 1;
            }
            match band.front() {
                Some(Row::Bits { mcus, .. }) => reader.bits.forget_before(mcus[0].start),
                Some(Row::Blocks(_)) => {}
                None => reader.bits.forget_before(reader.bits.position()),
            }
        }
        if next < wanted.len() {
            return Err(JpegError::Malformed("a crop outside the image"));
        }
        Ok(())
    }

    /// Encodes `rect` from its decoded `rows` as a JPEG file.
    fn crop<'r>(
        &self,
        rows: impl Iterator<Item = &'r Row>,
        rect: McuRect,
        encoders: &[HuffmanEncoder; 4],
        tape: (&[u8], u64),
    ) -> Crop {
        let (x, y, width, height) = self.layout().bounds(rect);
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(&[0xFF, 0xD8]);
        for segment in &self.kept {
            out.extend_from_slice(segment);
        }
        // The frame: this crop's size, the original's components and tables.
        let n = self.components.len();
        out.extend_from_slice(&[0xFF, self.sof]);
        out.extend_from_slice(&(8 + 3 * n as u16).to_be_bytes());
        out.push(8);
        out.extend_from_slice(&(height as u16).to_be_bytes());
        out.extend_from_slice(&(width as u16).to_be_bytes());
        out.push(n as u8);
        for c in &self.components {
            out.extend_from_slice(&[c.id, c.h << 4 | c.v, c.tq]);
        }
        // Standard tables: they code every value a crop can hold (its first
        // DC differences are whole DC values, absent from an optimised table).
        let tables = if n == 1 { &encoders[..2] } else { &encoders[..] };
        huffman::write_tables(&mut out, tables);
        out.extend_from_slice(&[0xFF, 0xDA]);
        out.extend_from_slice(&(6 + 2 * n as u16).to_be_bytes());
        out.push(n as u8);
        for (i, c) in self.components.iter().enumerate() {
            out.extend_from_slice(&[c.id, if i == 0 { 0x00 } else { 0x11 }]);
        }
        out.extend_from_slice(&[0, 63, 0]);

        let mut writer = BitWriter::new(out);
        let mut predictors = [0i16; 3];
        let tables_of = |ci: usize| if ci == 0 { (&encoders[0], &encoders[1]) } else { (&encoders[2], &encoders[3]) };
        let (x0, x1) = (rect.x0 as usize, rect.x1 as usize);
        for row in rows {
            match row {
                Row::Blocks(row) => {
                    for mx in x0..x1 {
                        for (ci, c) in self.components.iter().enumerate() {
                            let (dc, ac) = tables_of(ci);
                            let blocks_per_row = row[ci].len() / usize::from(c.v);
                            for by in 0..usize::from(c.v) {
                                for bx in 0..usize::from(c.h) {
                                    let block = &row[ci][by * blocks_per_row + mx * usize::from(c.h) + bx];
                                    encode_block(&mut writer, block, &mut predictors[ci], dc, ac);
                                }
                            }
                        }
                    }
                }
                Row::Bits { mcus, end } => {
                    if let Some(run) = Run::of(&mcus[x0..x1], mcus.get(x1).map_or(*end, |m| m.start)) {
                        copy_run(&mut writer, &run, &mut predictors[..n], encoders, tape);
                    }
                }
            }
        }
        let mut bytes = writer.finish();
        bytes.extend_from_slice(&[0xFF, 0xD9]);
        Crop { x, y, width, height, bytes }
    }
}

/// Decodes a crop to 8-bit RGB as the master would decode the whole image
/// (grey becomes three equal channels), checking that its header declares
/// exactly `width` x `height` before anything is decoded.
pub fn decode(bytes: &[u8], width: u32, height: u32) -> Result<Frame, JpegError> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;

    // The options the image crate decodes a whole JPEG with.
    let options =
        DecoderOptions::default().set_strict_mode(false).set_max_width(width as usize).set_max_height(height as usize);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(|_| JpegError::Malformed("unreadable crop header"))?;
    if decoder.dimensions() != Some((width as usize, height as usize)) {
        return Err(JpegError::Malformed("the crop's size is not the task's"));
    }
    let grey = match decoder.input_colorspace() {
        Some(ColorSpace::Luma) => true,
        Some(ColorSpace::YCbCr | ColorSpace::RGB) => false,
        _ => return Err(JpegError::Unsupported("neither grey nor colour")),
    };
    decoder.set_options(decoder.options().jpeg_set_out_colorspace(if grey {
        ColorSpace::Luma
    } else {
        ColorSpace::RGB
    }));
    let samples = decoder.decode().map_err(|_| JpegError::Malformed("undecodable crop"))?;
    let pixels = if grey { samples.iter().flat_map(|&l| [l, l, l]).collect() } else { samples };
    if pixels.len() != Frame::len_of(width, height, Channels::Rgb) {
        return Err(JpegError::Malformed("the crop decoded to another size"));
    }
    Ok(Frame::new(width, height, pixels))
}

#[cfg(test)]
mod tests;
