//! Checking and decoding uploaded images. The format is sniffed from the
//! bytes and the size read from the header before anything is decoded.

use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, Read, Seek};
use std::path::Path;

use app::api::{Output, SizeRefusal};
use axum::http::StatusCode;
use image::metadata::Orientation;
use image::{ImageDecoder, ImageFormat, ImageReader};
use pipeline::{Channels, Frame};

use crate::error::{AppError, ErrorCode};

/// What the header of an acceptable upload says. `width` and `height` are
/// as displayed, after the EXIF orientation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
    pub orientation: Orientation,
    /// Bytes per pixel the decoder produces (for the memory estimate).
    pub decoded_bytes_per_pixel: u8,
}

/// What sizes of image are accepted (the browser checks the same way).
pub use app::api::SizeLimits as Limits;

/// The limits of a file read again from disk: it was checked against the
/// real ones when it came, so it is held to none.
pub const CHECKED: Limits = Limits { min_dimension: 1, max_dimension: u32::MAX, max_pixels: u64::MAX };

/// Memory a decoder may use to read a header and its metadata (ICC
/// profiles, EXIF): real ones are at most a few megabytes.
pub const HEADER_MEMORY: u64 = 16 << 20;

const SUPPORTED: &[ImageFormat] =
    &[ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::WebP, ImageFormat::Bmp, ImageFormat::Tiff, ImageFormat::Gif];

/// Sniffs the format and reads the dimensions without decoding the pixels, so
/// a decompression bomb is refused before it costs any memory.
pub fn inspect(bytes: &[u8], limits: Limits) -> Result<ImageInfo, AppError> {
    inspect_from(Cursor::new(bytes), limits)
}

/// [`inspect`] on a file, which is read only as far as its header.
pub fn inspect_file(path: &Path, limits: Limits) -> Result<ImageInfo, AppError> {
    inspect_from(open(path)?, limits)
}

fn open(path: &Path) -> Result<BufReader<File>, AppError> {
    let file = File::open(path).map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
    Ok(BufReader::with_capacity(64 * 1024, file))
}

fn inspect_from<R: BufRead + Seek>(mut reader: R, limits: Limits) -> Result<ImageInfo, AppError> {
    let mut start = Vec::with_capacity(64);
    (&mut reader).take(64).read_to_end(&mut start).map_err(anyhow::Error::from)?;
    reader.rewind().map_err(anyhow::Error::from)?;
    if start.is_empty() {
        return Err(AppError::bad_request(ErrorCode::EmptyFile, "the uploaded file is empty"));
    }
    let format = image::guess_format(&start).ok().filter(|f| SUPPORTED.contains(f)).ok_or_else(|| {
        AppError::client(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedFormat,
            "not an image in a supported format (PNG, JPEG, WebP, BMP, TIFF or GIF)",
        )
    })?;
    // Decoders are third-party code fed hostile input: a panic is a bad file.
    // No size limits here (ours below give the clearer answer), but a
    // memory limit: reading a header also inflates metadata chunks (a PNG's
    // ICC profile), and a 2 MB file can ask for gigabytes.
    // The reader is dropped after a panic: nothing observes a broken state.
    let header = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || -> image::ImageResult<_> {
        let mut reader = ImageReader::with_format(reader, format);
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(HEADER_MEMORY);
        reader.limits(limits);
        let mut decoder = reader.into_decoder()?;
        // A broken EXIF block is no reason to refuse the pixels.
        let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
        Ok((decoder.dimensions(), orientation, decoder.color_type().bytes_per_pixel()))
    }))
    .map_err(|_| unreadable_panic(format))?;
    let ((width, height), orientation, decoded_bytes_per_pixel) = header.map_err(|e| unreadable(format, e))?;
    let (width, height) = if turns(orientation) { (height, width) } else { (width, height) };
    if width == 0 || height == 0 {
        return Err(AppError::client(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::EmptyImage,
            "the image has no pixels",
        ));
    }
    match limits.check(width, height) {
        Ok(()) => {}
        Err(SizeRefusal::TooLarge(message)) => {
            return Err(AppError::client(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::ImageTooLarge, message));
        }
        Err(SizeRefusal::TooSmall(message)) => {
            return Err(AppError::client(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ImageTooSmall, message));
        }
    }
    Ok(ImageInfo { format, width, height, orientation, decoded_bytes_per_pixel })
}

/// Whether an orientation swaps width and height.
fn turns(orientation: Orientation) -> bool {
    use Orientation::*;
    matches!(orientation, Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH)
}

/// Decodes the whole image to 8-bit RGB, or RGBA when it has alpha (16-bit
/// samples become `round(v / 257)`). Allocation is bounded by what the header
/// declared (already checked), so a lying header cannot exhaust memory.
pub fn decode(bytes: &[u8], info: ImageInfo) -> Result<Frame, AppError> {
    decode_from(Cursor::new(bytes), info)
}

/// [`decode`] from a file.
pub fn decode_file(path: &Path, info: ImageInfo) -> Result<Frame, AppError> {
    decode_from(open(path)?, info)
}

fn decode_from<R: BufRead + Seek>(reader: R, info: ImageInfo) -> Result<Frame, AppError> {
    let mut reader = ImageReader::with_format(reader, info.format);
    let mut limits = image::Limits::default();
    // Stored sideways when the orientation turns it.
    let side = info.width.max(info.height);
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    // Room for the widest decoded layout (16-bit RGBA) plus the RGB8 copy.
    limits.max_alloc = Some(u64::from(info.width) * u64::from(info.height) * 11 + (64 << 20));
    reader.limits(limits);
    let mut image = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || reader.decode()))
        .map_err(|_| unreadable_panic(info.format))?
        .map_err(|e| unreadable(info.format, e))?;
    // Upright, as a viewer shows it (a phone's portrait photo is stored sideways).
    image.apply_orientation(info.orientation);
    let (width, height) = (image.width(), image.height());
    if !image.color().has_alpha() {
        return Ok(Frame::new(width, height, image.into_rgb8().into_raw()));
    }
    let mut samples = image.into_rgba8().into_raw();
    if samples.iter().skip(3).step_by(4).any(|&a| a != 255) {
        return Ok(Frame::with_channels(width, height, Channels::Rgba, samples));
    }
    // Opaque everywhere (as most PNGs from canvases and screenshots are): the
    // alpha says nothing, and dropping it in place saves a quarter of every
    // tile's bytes.
    let pixels = samples.len() / 4;
    for i in 0..pixels {
        samples.copy_within(i * 4..i * 4 + 3, i * 3);
    }
    samples.truncate(pixels * 3);
    Ok(Frame::new(width, height, samples))
}

/// How an accepted upload is read for its job.
#[derive(Debug, Clone)]
pub enum Plan {
    /// An upright baseline JPEG: its tiles are cut from the file losslessly
    /// (see `pipeline::jpeg`), never decoded here.
    Cut(pipeline::jpeg::Layout),
    /// An upright, non-interlaced, still PNG, or a plain TIFF: decoded a
    /// row at a time as its tiles are sent (see [`crate::rows`]), by a
    /// reader that holds at most this many bytes.
    Rows(u64),
    /// Anything else: decoded whole, before the job starts.
    Whole,
}

/// Blocking: the header and the reading plan of a file tilepipe stored (an
/// upload being resumed, or a result), checked as an upload is.
pub fn inspect_stored(path: &Path) -> Result<(ImageInfo, Plan), AppError> {
    let info = inspect_file(path, CHECKED)?;
    Ok((info, plan(path, info)?))
}

/// How the upload at `path` (whose header said `info`) is read.
pub fn plan(path: &Path, info: ImageInfo) -> Result<Plan, AppError> {
    if info.orientation != Orientation::NoTransforms {
        return Ok(Plan::Whole);
    }
    if info.format == ImageFormat::Jpeg {
        return Ok(cuttable_jpeg(path, info)?.map_or(Plan::Whole, Plan::Cut));
    }
    Ok(crate::rows::open(path, info.format)?.map_or(Plan::Whole, |rows| Plan::Rows(rows.memory())))
}

/// What a job's tiles are cut from.
pub enum Source {
    /// The decoded image.
    Pixels(Frame),
    /// A JPEG to cut. Only its header has been read: cutting the tiles reads
    /// the scan, and is what checks it.
    Jpeg(pipeline::jpeg::Layout),
    /// An image of `format` to decode a row at a time, as 8-bit `channels`
    /// (alpha only when some pixel is not opaque, as for an image decoded
    /// whole). Only its header has been read, unless it has alpha (every row
    /// has been, to know that): decoding it is what checks it.
    Rows { format: ImageFormat, channels: Channels },
}

/// Reads an accepted upload for its job as `plan` says.
pub fn prepare_file(path: &Path, info: ImageInfo, plan: Plan) -> Result<Source, AppError> {
    match plan {
        Plan::Cut(layout) => Ok(Source::Jpeg(layout)),
        Plan::Rows(_) => {
            let rows = crate::rows::open(path, info.format)?
                .ok_or_else(|| anyhow::anyhow!("the file can no longer be read by rows"))?;
            let channels = if crate::rows::opaque(rows)? { Channels::Rgb } else { Channels::Rgba };
            Ok(Source::Rows { format: info.format, channels })
        }
        Plan::Whole => decode_file(path, info).map(Source::Pixels),
    }
}

/// An upright baseline JPEG's layout: its tiles are cut from the file and it
/// is never decoded here. (Progressive, CMYK, several scans...: the decoder
/// decides, as for any image.)
pub fn cuttable_jpeg(path: &Path, info: ImageInfo) -> Result<Option<pipeline::jpeg::Layout>, AppError> {
    if info.format != ImageFormat::Jpeg || info.orientation != Orientation::NoTransforms {
        return Ok(None);
    }
    Ok(pipeline::jpeg::Jpeg::read(&mut open(path)?)
        .ok()
        .filter(|jpeg| (jpeg.width, jpeg.height) == (info.width, info.height))
        .map(|jpeg| jpeg.layout()))
}

/// The master memory a job of this image is estimated to need at its peak,
/// in bytes: what it is read into (a band of a cut JPEG's coefficients, or
/// the whole decoded image with the decoder's own buffer), plus what its
/// result is encoded from (a band of tiles, or the whole image for WebP).
pub fn memory_needed(info: &ImageInfo, plan: &Plan, tile_size: u32, halo: u32, output: Output) -> u64 {
    let (width, pixels) = (u64::from(info.width), u64::from(info.width) * u64::from(info.height));
    // RGB for a JPEG; RGBA at most otherwise (alpha is known only once decoded).
    let channels = if info.format == ImageFormat::Jpeg { 3 } else { 4 };
    let input = match plan {
        // The MCU rows the next crops need, as 16-bit coefficients (4:4:4: six bytes a pixel).
        Plan::Cut(_) => width * (u64::from(tile_size) + 2 * u64::from(halo) + 64) * 6,
        // The reader's, and a band of rows on their way to the file.
        Plan::Rows(reader) => reader + width * channels * 40,
        Plan::Whole => {
            let decoded = u64::from(info.decoded_bytes_per_pixel);
            let converted = if matches!(decoded, 3 | 4) { 0 } else { channels };
            let turned = if turns(info.orientation) { decoded } else { 0 };
            pixels * (decoded + converted + turned)
        }
    };
    input + memory_to_finish((info.width, info.height), channels, tile_size, output)
}

/// What a job needs of the memory budget once its input is read: what its
/// result is encoded from, and tasks and results in flight.
pub fn memory_to_finish((width, height): (u32, u32), channels: u64, tile_size: u32, output: Output) -> u64 {
    let (width, pixels) = (u64::from(width), u64::from(width) * u64::from(height));
    let result = match output {
        // The tiles read into one frame, and the encoder's output.
        Output::Webp => pixels * channels * 2,
        // A band of tiles, and the encoder's copy of it (for TIFF, one tile
        // and its compressed copy).
        Output::Png | Output::Tiff => width * u64::from(tile_size) * channels * 2,
        // A row of JPEG tiles (at most about the raw size at quality 100),
        // and a tile that came as PNG or raw being coded.
        Output::Jpeg { .. } => (width + 2 * u64::from(tile_size)) * u64::from(tile_size) * channels,
    };
    // Tasks being encoded and results being decoded.
    const IN_FLIGHT: u64 = 16 << 20;
    result + IN_FLIGHT
}

/// The answer to an upload whose JPEG scan turned out corrupt while its
/// tiles were cut.
pub fn corrupt_jpeg(error: &pipeline::jpeg::JpegError) -> AppError {
    AppError::client(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::UnreadableImage,
        format!("the jpg file is malformed and could not be read ({error})"),
    )
}

fn unreadable_panic(format: ImageFormat) -> AppError {
    AppError::client(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::UnreadableImage,
        format!("the {} file is malformed and could not be read", format.extensions_str()[0]),
    )
}

fn unreadable(format: ImageFormat, e: image::ImageError) -> AppError {
    AppError::client(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::UnreadableImage,
        format!("the {} file could not be read: {e}", format.extensions_str()[0]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        pipeline::codec::encode_png(&Frame::black(w, h))
    }

    const LIMITS: Limits = Limits { min_dimension: 1024, max_dimension: 65_535, max_pixels: 300_000_000 };

    fn code(r: Result<ImageInfo, AppError>) -> (StatusCode, ErrorCode) {
        match r.unwrap_err() {
            AppError::Client { status, code, .. } => (status, code),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn reads_size_from_header() {
        let info = inspect(&png(1100, 1024), LIMITS).unwrap();
        let upright = Orientation::NoTransforms;
        let expected = ImageInfo {
            format: ImageFormat::Png,
            width: 1100,
            height: 1024,
            orientation: upright,
            decoded_bytes_per_pixel: 3,
        };
        assert_eq!(info, expected);
    }

    #[test]
    fn every_lossless_format_decodes_to_its_pixels() {
        // Few colours, so GIF's palette holds them exactly.
        let (w, h) = (40u32, 30u32);
        let pixels: Vec<u8> =
            (0..w * h).flat_map(|i| [[200, 30, 30], [30, 200, 30], [30, 30, 200]][(i % 7 % 3) as usize]).collect();
        let image = image::RgbImage::from_raw(w, h, pixels.clone()).unwrap();
        let small = Limits { min_dimension: 1, ..LIMITS };
        for format in [ImageFormat::Png, ImageFormat::WebP, ImageFormat::Bmp, ImageFormat::Tiff, ImageFormat::Gif] {
            let mut bytes = Vec::new();
            let encoded = match format {
                // image writes WebP only losslessly, which needs the explicit encoder.
                ImageFormat::WebP => image::codecs::webp::WebPEncoder::new_lossless(&mut bytes).encode(
                    &pixels,
                    w,
                    h,
                    image::ExtendedColorType::Rgb8,
                ),
                _ => image.write_to(&mut Cursor::new(&mut bytes), format),
            };
            encoded.unwrap();
            let info = inspect(&bytes, small).unwrap();
            assert_eq!((info.format, info.width, info.height), (format, w, h));
            let frame = decode(&bytes, info).unwrap();
            assert_eq!(frame.channels, Channels::Rgb, "{format:?}");
            assert!(frame.pixels == pixels, "{format:?}: the pixels differ");
        }
    }

    #[test]
    fn an_animated_gif_is_its_first_frame() {
        let frame = |colour: [u8; 4]| image::Frame::new(image::RgbaImage::from_pixel(8, 6, image::Rgba(colour)));
        let mut bytes = Vec::new();
        image::codecs::gif::GifEncoder::new(&mut bytes)
            .encode_frames([frame([250, 0, 0, 255]), frame([0, 0, 250, 255])])
            .unwrap();
        let small = Limits { min_dimension: 1, ..LIMITS };
        let decoded = decode(&bytes, inspect(&bytes, small).unwrap()).unwrap();
        assert_eq!((decoded.width, decoded.height, decoded.channels), (8, 6, Channels::Rgb));
        assert!(decoded.pixels.chunks_exact(3).all(|p| p == [250, 0, 0]), "{:?}", &decoded.pixels[..3]);
    }

    #[test]
    fn refuses_small_empty_and_unknown() {
        assert_eq!(
            code(inspect(&png(1023, 2000), LIMITS)),
            (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ImageTooSmall)
        );
        assert_eq!(code(inspect(&[], LIMITS)), (StatusCode::BAD_REQUEST, ErrorCode::EmptyFile));
        assert_eq!(
            code(inspect(b"hello, world", LIMITS)),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorCode::UnsupportedFormat)
        );
        let truncated = &png(2000, 2000)[..12];
        assert_eq!(code(inspect(truncated, LIMITS)), (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::UnreadableImage));
    }

    #[test]
    fn odd_but_valid_images_decode_to_rgb_or_rgba() {
        use image::{DynamicImage, ImageBuffer, Luma, LumaA, Rgb, Rgba};
        let small = Limits { min_dimension: 1, ..LIMITS };
        let check = |image: DynamicImage, expect: &[u8]| {
            let mut bytes = Vec::new();
            image.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).unwrap();
            let frame = decode(&bytes, inspect(&bytes, small).unwrap()).unwrap();
            let channels = if expect.len() == 4 { 4 } else { 3 };
            assert_eq!((frame.width, frame.height, frame.channels.count()), (3, 2, channels));
            assert_eq!(&frame.pixels[..expect.len()], expect);
        };
        check(DynamicImage::ImageLuma8(ImageBuffer::from_pixel(3, 2, Luma([77]))), &[77, 77, 77]);
        check(DynamicImage::ImageLumaA8(ImageBuffer::from_pixel(3, 2, LumaA([90, 10]))), &[90, 90, 90, 10]);
        check(DynamicImage::ImageRgba8(ImageBuffer::from_pixel(3, 2, Rgba([1, 2, 3, 0]))), &[1, 2, 3, 0]);
        // Alpha that is opaque everywhere is dropped.
        check(DynamicImage::ImageRgba8(ImageBuffer::from_pixel(3, 2, Rgba([1, 2, 3, 255]))), &[1, 2, 3, 1, 2, 3]);
        // 16 bits per channel: v16 becomes round(v16 / 257).
        check(DynamicImage::ImageRgb16(ImageBuffer::from_pixel(3, 2, Rgb([0xffff, 0x8080, 257]))), &[255, 128, 1]);
        check(
            DynamicImage::ImageRgba16(ImageBuffer::from_pixel(3, 2, Rgba([0xffff, 0x8080, 257, 0x7f7f]))),
            &[255, 128, 1, 127],
        );
    }

    #[test]
    fn palette_pngs_decode_to_their_colours() {
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, 4, 2);
        encoder.set_color(png::ColorType::Indexed);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_palette(vec![10, 20, 30, 200, 100, 0]);
        encoder.write_header().unwrap().write_image_data(&[0, 1, 0, 1, 1, 1, 0, 0]).unwrap();
        let frame = decode(&bytes, inspect(&bytes, Limits { min_dimension: 1, ..LIMITS }).unwrap()).unwrap();
        assert_eq!((frame.width, frame.height), (4, 2));
        assert_eq!(&frame.pixels[..6], &[10, 20, 30, 200, 100, 0]);
    }

    #[test]
    fn cmyk_jpegs_decode_to_rgb() {
        // Left half no ink, right half full black ink, in whichever CMYK convention.
        let (w, h) = (32u16, 16u16);
        let cmyk: Vec<u8> =
            (0..h).flat_map(|_| (0..w).flat_map(|x| if x < w / 2 { [0, 0, 0, 0] } else { [0, 0, 0, 255] })).collect();
        let mut bytes = Vec::new();
        jpeg_encoder::Encoder::new(&mut bytes, 95).encode(&cmyk, w, h, jpeg_encoder::ColorType::Cmyk).unwrap();
        let frame = decode(&bytes, inspect(&bytes, Limits { min_dimension: 1, ..LIMITS }).unwrap()).unwrap();
        assert_eq!((frame.width, frame.height), (32, 16));
        let at = |x: usize| i32::from(frame.pixels[(8 * 32 + x) * 3]);
        assert!((at(4) - at(28)).abs() > 150, "no ink {} vs black ink {}", at(4), at(28));
    }

    #[test]
    fn exif_orientation_is_applied() {
        use image::ImageEncoder;
        // 16x8, white on the left half: stored as a phone stores a portrait photo.
        let pixels: Vec<u8> = (0..8).flat_map(|_| (0..16).flat_map(|x| [if x < 8 { 255 } else { 0 }; 3])).collect();
        // A little-endian TIFF block with one entry: Orientation = 6 (turn 90° clockwise).
        let exif = [b'I', b'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0];
        let mut jpeg = Vec::new();
        let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95);
        encoder.set_exif_metadata(exif.to_vec()).unwrap();
        encoder.write_image(&pixels, 16, 8, image::ExtendedColorType::Rgb8).unwrap();

        let info = inspect(&jpeg, Limits { min_dimension: 1, ..LIMITS }).unwrap();
        assert_eq!((info.width, info.height, info.orientation), (8, 16, Orientation::Rotate90));
        let frame = decode(&jpeg, info).unwrap();
        assert_eq!((frame.width, frame.height), (8, 16));
        // The left half went to the top.
        let at = |x: u32, y: u32| frame.pixels[((y * 8 + x) * 3) as usize];
        assert!(at(4, 2) > 200 && at(4, 13) < 50, "top {} bottom {}", at(4, 2), at(4, 13));
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        let mut bomb = pipeline::codec::encode_png(&Frame::black(1, 1));
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        // The CRC no longer matches; the dimensions are still read first.
        match inspect(&bomb, LIMITS) {
            Err(AppError::Client { code, .. }) => {
                assert!([ErrorCode::ImageTooLarge, ErrorCode::UnreadableImage].contains(&code))
            }
            other => panic!("bomb accepted: {other:?}"),
        }
    }

    proptest::proptest! {
        // 200 cases in the test command; `PROPTEST_CASES=100000` for a long run.
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200),
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Intake fuzzing: random bytes, and valid PNG/JPEG/BMP files with
        /// bytes overwritten, never panic; whatever passes the header check
        /// decodes or fails cleanly.
        #[test]
        fn intake_never_panics(
            format in proptest::sample::select(vec![ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Bmp, ImageFormat::Gif]),
            edits in proptest::collection::vec((0usize..4096, proptest::num::u8::ANY), 0..12),
            cut in 0usize..5000,
            random in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let small = Limits { min_dimension: 1, max_dimension: 4096, max_pixels: 4_000_000 };
            let _ = inspect(&random, small);
            let mut frame = Frame::black(37, 23);
            frame.pixels.iter_mut().enumerate().for_each(|(i, p)| *p = (i * 31 % 256) as u8);
            let image = image::RgbImage::from_raw(37, 23, frame.pixels).unwrap();
            let mut bytes = Vec::new();
            image.write_to(&mut Cursor::new(&mut bytes), format).unwrap();
            for (at, value) in edits {
                let len = bytes.len();
                bytes[at % len] = value;
            }
            bytes.truncate(cut.max(1));
            if let Ok(info) = inspect(&bytes, small) {
                let _ = decode(&bytes, info);
            }
        }
    }

    #[test]
    fn a_streamed_jpeg_needs_a_band_and_a_decoded_image_needs_itself() {
        let info = |format, decoded_bytes_per_pixel, orientation| ImageInfo {
            format,
            width: 8192,
            height: 8192,
            orientation,
            decoded_bytes_per_pixel,
        };
        let raw = 8192 * 8192 * 3;
        let upright = Orientation::NoTransforms;
        let cut = Plan::Cut(pipeline::jpeg::Layout { width: 8192, height: 8192, mcu_width: 16, mcu_height: 16 });
        let jpeg = memory_needed(&info(ImageFormat::Jpeg, 3, upright), &cut, 512, 25, Output::Jpeg { quality: 90 });
        assert!(jpeg < raw / 2, "{jpeg}");
        // A PNG read by rows needs a few rows; one decoded whole, itself.
        let reader = 16 << 20;
        let rows = memory_needed(&info(ImageFormat::Png, 8, upright), &Plan::Rows(reader), 512, 25, Output::Png);
        assert!(rows < raw / 2, "{rows}");
        let png = memory_needed(&info(ImageFormat::Png, 3, upright), &Plan::Whole, 512, 25, Output::Png);
        assert!(png > raw && png < raw * 3 / 2, "{png}");
        // 16-bit RGBA is converted (and a turned image copied once more).
        let deep = memory_needed(&info(ImageFormat::Png, 8, upright), &Plan::Whole, 512, 25, Output::Png);
        let sideways = info(ImageFormat::Png, 8, Orientation::Rotate90);
        let turned = memory_needed(&sideways, &Plan::Whole, 512, 25, Output::Png);
        assert!(deep > 4 * raw && turned > deep + 2 * raw, "{deep} {turned}");
        // A WebP result is assembled whole.
        let webp = memory_needed(&info(ImageFormat::Jpeg, 3, upright), &cut, 512, 25, Output::Webp);
        assert!(webp > 2 * raw, "{webp}");
    }

    #[test]
    fn decode_round_trips_png() {
        let mut frame = Frame::black(40, 30);
        frame.pixels.iter_mut().enumerate().for_each(|(i, p)| *p = i as u8);
        let bytes = pipeline::codec::encode_png(&frame);
        let info = inspect(&bytes, Limits { min_dimension: 1, ..LIMITS }).unwrap();
        assert_eq!(decode(&bytes, info).unwrap(), frame);
    }
}
