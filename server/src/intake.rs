//! Checking and decoding uploaded images. The format is sniffed from the
//! bytes and the size read from the header before anything is decoded.

use std::io::Cursor;

use axum::http::StatusCode;
use image::{ImageFormat, ImageReader};
use pipeline::Frame;

use crate::error::AppError;

/// What the header of an acceptable upload says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
}

const SUPPORTED: &[ImageFormat] =
    &[ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::WebP, ImageFormat::Bmp, ImageFormat::Tiff, ImageFormat::Gif];

/// Sniffs the format and reads the dimensions without decoding the pixels.
pub fn inspect(bytes: &[u8], min_dimension: u32) -> Result<ImageInfo, AppError> {
    if bytes.is_empty() {
        return Err(AppError::bad_request("empty_file", "the uploaded file is empty"));
    }
    let format = image::guess_format(bytes).ok().filter(|f| SUPPORTED.contains(f)).ok_or_else(|| {
        AppError::client(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_format",
            "not an image in a supported format (PNG, JPEG, WebP, BMP, TIFF or GIF)",
        )
    })?;
    let (width, height) =
        ImageReader::with_format(Cursor::new(bytes), format).into_dimensions().map_err(|e| unreadable(format, e))?;
    if width < min_dimension || height < min_dimension {
        return Err(AppError::client(
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_too_small",
            format!("the image is {width}x{height}; it must be at least {min_dimension}x{min_dimension} pixels"),
        ));
    }
    Ok(ImageInfo { format, width, height })
}

/// Decodes the whole image to RGB8.
pub fn decode(bytes: &[u8], info: ImageInfo) -> Result<Frame, AppError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), info.format);
    reader.no_limits();
    let image = reader.decode().map_err(|e| unreadable(info.format, e))?;
    let rgb = image.into_rgb8();
    let (width, height) = rgb.dimensions();
    Ok(Frame::new(width, height, rgb.into_raw()))
}

fn unreadable(format: ImageFormat, e: image::ImageError) -> AppError {
    AppError::client(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unreadable_image",
        format!("the {} file could not be read: {e}", format.extensions_str()[0]),
    )
}

/// Lossless PNG with fast compression: ~10x faster than the default level for
/// a slightly larger file.
pub fn encode_png(frame: &Frame) -> anyhow::Result<Vec<u8>> {
    use image::ImageEncoder;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let mut out = Vec::with_capacity(frame.pixels.len() / 2);
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive).write_image(
        &frame.pixels,
        frame.width,
        frame.height,
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        encode_png(&Frame::black(w, h)).unwrap()
    }

    fn code(r: Result<ImageInfo, AppError>) -> (StatusCode, &'static str) {
        match r.unwrap_err() {
            AppError::Client { status, code, .. } => (status, code),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn reads_size_from_header() {
        let info = inspect(&png(1100, 1024), 1024).unwrap();
        assert_eq!(info, ImageInfo { format: ImageFormat::Png, width: 1100, height: 1024 });
    }

    #[test]
    fn refuses_small_empty_and_unknown() {
        assert_eq!(code(inspect(&png(1023, 2000), 1024)), (StatusCode::UNPROCESSABLE_ENTITY, "image_too_small"));
        assert_eq!(code(inspect(&[], 1024)), (StatusCode::BAD_REQUEST, "empty_file"));
        assert_eq!(code(inspect(b"hello, world", 1024)), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_format"));
        let truncated = &png(2000, 2000)[..12];
        assert_eq!(code(inspect(truncated, 1024)), (StatusCode::UNPROCESSABLE_ENTITY, "unreadable_image"));
    }

    #[test]
    fn decode_round_trips_png() {
        let mut frame = Frame::black(40, 30);
        frame.pixels.iter_mut().enumerate().for_each(|(i, p)| *p = i as u8);
        let bytes = encode_png(&frame).unwrap();
        let info = inspect(&bytes, 1).unwrap();
        assert_eq!(decode(&bytes, info).unwrap(), frame);
    }
}
