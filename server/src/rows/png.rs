//! A PNG read a row at a time (non-interlaced, still ones): the png crate's
//! row reader, each row converted by the same `image` conversions as the
//! whole decode.

use std::fs::File;
use std::io::BufReader;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use image::{ColorType, DynamicImage, ImageBuffer};
use pipeline::Channels;

use super::Rows;
use crate::error::AppError;

/// What the decoder may allocate beyond the rows it hands out: its inflate
/// state and two rows (at most 65535 px x 8 bytes each).
const DECODER_MEMORY: usize = 16 << 20;

pub struct PngRows {
    reader: png::Reader<BufReader<File>>,
    colour: ColorType,
    width: u32,
    height: u32,
}

impl PngRows {
    /// Opens the PNG at `path` and reads its header.
    pub fn open(path: &Path) -> Result<Self, AppError> {
        let file = File::open(path).map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
        let reader = BufReader::with_capacity(64 * 1024, file);
        let opened = catch_unwind(AssertUnwindSafe(move || {
            let mut decoder = png::Decoder::new_with_limits(reader, png::Limits { bytes: DECODER_MEMORY });
            // As `image` reads it: low bit depths and palettes expanded, 16 bits kept.
            decoder.set_transformations(png::Transformations::EXPAND);
            decoder.read_info()
        }))
        .map_err(|_| unreadable("the decoder failed"))?
        .map_err(|e| unreadable(&e.to_string()))?;
        let colour = match opened.output_color_type() {
            (png::ColorType::Grayscale, png::BitDepth::Eight) => ColorType::L8,
            (png::ColorType::Grayscale, png::BitDepth::Sixteen) => ColorType::L16,
            (png::ColorType::GrayscaleAlpha, png::BitDepth::Eight) => ColorType::La8,
            (png::ColorType::GrayscaleAlpha, png::BitDepth::Sixteen) => ColorType::La16,
            (png::ColorType::Rgb, png::BitDepth::Eight) => ColorType::Rgb8,
            (png::ColorType::Rgb, png::BitDepth::Sixteen) => ColorType::Rgb16,
            (png::ColorType::Rgba, png::BitDepth::Eight) => ColorType::Rgba8,
            (png::ColorType::Rgba, png::BitDepth::Sixteen) => ColorType::Rgba16,
            (colour, depth) => return Err(unreadable(&format!("unexpected {colour:?} at {depth:?}"))),
        };
        let (width, height) = opened.info().size();
        Ok(Self { reader: opened, colour, width, height })
    }

    /// Whether its rows come in order: not interlaced, and not an animation
    /// (whose first frame may not be the image's default one).
    pub fn in_order(&self) -> bool {
        let info = self.reader.info();
        !info.interlaced && info.animation_control.is_none()
    }
}

impl Rows for PngRows {
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn has_alpha(&self) -> bool {
        self.colour.has_alpha()
    }

    fn next_row(&mut self, channels: Channels, out: &mut Vec<u8>) -> Result<bool, AppError> {
        let (colour, width) = (self.colour, self.width);
        let reader = &mut self.reader;
        catch_unwind(AssertUnwindSafe(move || {
            let Some(row) = reader.next_row()? else { return Ok(false) };
            out.clear();
            convert(row.data(), colour, width, channels, out);
            Ok(true)
        }))
        .map_err(|_| unreadable("the decoder failed"))?
        .map_err(|e: png::DecodingError| unreadable(&e.to_string()))
    }

    fn memory(&self) -> u64 {
        // The decoder's state, and a row in and out of conversion (16-bit RGBA at most).
        DECODER_MEMORY as u64 + u64::from(self.width) * 8 * 4
    }
}

/// One row of decoded samples (16-bit ones big-endian) as 8-bit `channels`.
fn convert(data: &[u8], colour: ColorType, width: u32, channels: Channels, out: &mut Vec<u8>) {
    match (colour, channels) {
        (ColorType::Rgb8, Channels::Rgb) | (ColorType::Rgba8, Channels::Rgba) => out.extend_from_slice(data),
        (ColorType::Rgba8, Channels::Rgb) => out.extend(data.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]])),
        _ => {
            let wide = || data.chunks_exact(2).map(|b| u16::from_be_bytes([b[0], b[1]])).collect::<Vec<u16>>();
            let image = match colour {
                ColorType::L8 => ImageBuffer::from_raw(width, 1, data.to_vec()).map(DynamicImage::ImageLuma8),
                ColorType::La8 => ImageBuffer::from_raw(width, 1, data.to_vec()).map(DynamicImage::ImageLumaA8),
                ColorType::Rgb8 => ImageBuffer::from_raw(width, 1, data.to_vec()).map(DynamicImage::ImageRgb8),
                ColorType::Rgba8 => ImageBuffer::from_raw(width, 1, data.to_vec()).map(DynamicImage::ImageRgba8),
                ColorType::L16 => ImageBuffer::from_raw(width, 1, wide()).map(DynamicImage::ImageLuma16),
                ColorType::La16 => ImageBuffer::from_raw(width, 1, wide()).map(DynamicImage::ImageLumaA16),
                ColorType::Rgb16 => ImageBuffer::from_raw(width, 1, wide()).map(DynamicImage::ImageRgb16),
                _ => ImageBuffer::from_raw(width, 1, wide()).map(DynamicImage::ImageRgba16),
            }
            .expect("a row of the decoder's width");
            // As the whole image is converted: RGBA when it has alpha, which
            // is then dropped if the job is RGB.
            match channels {
                Channels::Rgba => out.extend_from_slice(image.into_rgba8().as_raw()),
                Channels::Rgb if !colour.has_alpha() => out.extend_from_slice(image.into_rgb8().as_raw()),
                Channels::Rgb => {
                    out.extend(image.into_rgba8().as_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]))
                }
            }
        }
    }
}

fn unreadable(why: &str) -> AppError {
    super::unreadable("png", why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::intake::{self, Limits, Plan};

    const ANY: Limits = Limits { min_dimension: 1, max_dimension: 65_535, max_pixels: u64::MAX };

    /// A PNG of `colour` at `depth` whose samples are varied bytes.
    fn png(colour: png::ColorType, depth: png::BitDepth, setup: impl Fn(&mut png::Encoder<&mut Vec<u8>>)) -> Vec<u8> {
        let (w, h) = (13u32, 7u32);
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, w, h);
        encoder.set_color(colour);
        encoder.set_depth(depth);
        setup(&mut encoder);
        let bits = colour.samples() * depth as usize;
        let line = (w as usize * bits).div_ceil(8);
        let mut noise = pipeline::noise::Xorshift64::new(99);
        let data: Vec<u8> = (0..line * h as usize)
            .map(|_| match colour {
                // Indices within the palette (of 3 colours) below.
                png::ColorType::Indexed if depth == png::BitDepth::Eight => (noise.next_u64() % 3) as u8,
                png::ColorType::Indexed => 0b0001_0010,
                _ => noise.next_u64() as u8,
            })
            .collect();
        encoder.write_header().unwrap().write_image_data(&data).unwrap();
        bytes
    }

    /// Every row read by rows, as the job would read them.
    fn by_rows(path: &Path) -> (Channels, Vec<u8>) {
        let channels = if super::super::opaque(Box::new(PngRows::open(path).unwrap())).unwrap() {
            Channels::Rgb
        } else {
            Channels::Rgba
        };
        let mut rows = PngRows::open(path).unwrap();
        assert!(rows.in_order());
        let (mut all, mut row) = (Vec::new(), Vec::new());
        while rows.next_row(channels, &mut row).unwrap() {
            all.extend_from_slice(&row);
        }
        (channels, all)
    }

    #[test]
    fn rows_equal_the_whole_decode_for_every_colour_type() {
        use png::{BitDepth::*, ColorType::*};
        let dir = tempfile::tempdir().unwrap();
        let palette = |e: &mut png::Encoder<&mut Vec<u8>>| e.set_palette(vec![10, 20, 30, 200, 100, 0, 1, 2, 3]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("rgb8", png(Rgb, Eight, |_| {})),
            ("rgba8", png(Rgba, Eight, |_| {})),
            ("gray8", png(Grayscale, Eight, |_| {})),
            ("gray-alpha8", png(GrayscaleAlpha, Eight, |_| {})),
            ("gray1", png(Grayscale, One, |_| {})),
            ("gray16", png(Grayscale, Sixteen, |_| {})),
            ("gray-alpha16", png(GrayscaleAlpha, Sixteen, |_| {})),
            ("rgb16", png(Rgb, Sixteen, |_| {})),
            ("rgba16", png(Rgba, Sixteen, |_| {})),
            ("palette", png(Indexed, Eight, palette)),
            ("palette4", png(Indexed, Four, palette)),
            (
                "palette-trns",
                png(Indexed, Eight, |e| {
                    palette(e);
                    e.set_trns(vec![255, 0, 128]);
                }),
            ),
            ("rgb-trns", png(Rgb, Eight, |e| e.set_trns(vec![0, 0, 0, 0, 0, 0]))),
        ];
        for (name, bytes) in cases {
            let path = dir.path().join(format!("{name}.png"));
            std::fs::write(&path, &bytes).unwrap();
            let info = intake::inspect(&bytes, ANY).unwrap();
            assert!(matches!(intake::plan(&path, info).unwrap(), Plan::Rows(_)), "{name}");
            let whole = intake::decode(&bytes, info).unwrap();
            let (channels, rows) = by_rows(&path);
            assert_eq!(channels, whole.channels, "{name}");
            assert!(rows == whole.pixels, "{name}: the rows differ from the whole decode");
        }
    }

    #[test]
    fn opaque_alpha_is_dropped_as_in_the_whole_decode() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        let opaque_rgba: Vec<u8> = (0..20 * 10).flat_map(|i| [i as u8, 7, 9, 255]).collect();
        image::RgbaImage::from_raw(20, 10, opaque_rgba)
            .unwrap()
            .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
            .unwrap();
        let path = dir.path().join("opaque.png");
        std::fs::write(&path, &bytes).unwrap();
        let whole = intake::decode(&bytes, intake::inspect(&bytes, ANY).unwrap()).unwrap();
        assert_eq!(whole.channels, Channels::Rgb);
        assert_eq!(by_rows(&path), (Channels::Rgb, whole.pixels));
    }

    #[test]
    fn a_cut_off_or_corrupt_png_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = png(png::ColorType::Rgb, png::BitDepth::Eight, |_| {});
        let path = dir.path().join("cut.png");
        std::fs::write(&path, &bytes[..bytes.len() - 40]).unwrap();
        let mut rows = PngRows::open(&path).unwrap();
        let mut row = Vec::new();
        let failed = loop {
            match rows.next_row(Channels::Rgb, &mut row) {
                Ok(true) => continue,
                Ok(false) => break None,
                Err(e) => break Some(e),
            }
        };
        let e = failed.expect("a cut-off file fails");
        assert!(matches!(e, AppError::Client { code: ErrorCode::UnreadableImage, .. }), "{e}");
        std::fs::write(&path, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        assert!(PngRows::open(&path).is_err());
    }

    #[test]
    fn an_interlaced_png_is_decoded_whole() {
        let dir = tempfile::tempdir().unwrap();
        // A 1x1 image's one Adam7 pass is its only row: the same data with
        // the interlace byte set (and the header's CRC again).
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, 1, 1);
        encoder.set_color(png::ColorType::Rgb);
        encoder.write_header().unwrap().write_image_data(&[1, 2, 3]).unwrap();
        bytes[28] = 1;
        let crc = crc32fast::hash(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        let path = dir.path().join("interlaced.png");
        std::fs::write(&path, &bytes).unwrap();
        let info = intake::inspect(&bytes, ANY).unwrap();
        assert!(!PngRows::open(&path).unwrap().in_order());
        assert!(matches!(intake::plan(&path, info).unwrap(), Plan::Whole));
        assert_eq!(intake::decode(&bytes, info).unwrap().pixels, [1, 2, 3]);
    }
}
