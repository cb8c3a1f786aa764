//! Images read a row at a time, as 8-bit RGB or RGBA: how the jobs of
//! non-interlaced PNGs and of plain TIFFs are fed, so that their pixels are
//! never whole in memory. The rows are exactly those of decoding the whole
//! file ([`crate::intake::decode`]): samples go through the same conversions.

mod png;
mod tiff;

use std::path::Path;

use axum::http::StatusCode;
use image::ImageFormat;
use pipeline::Channels;

use crate::error::{AppError, ErrorCode};
pub use png::PngRows;
pub use tiff::TiffRows;

/// An image read from the top, a row at a time.
pub trait Rows: Send {
    fn size(&self) -> (u32, u32);

    fn has_alpha(&self) -> bool;

    /// Puts the next row into `out` as `channels` samples, the alpha
    /// dropped for RGB (only right when it is opaque); false after the last.
    fn next_row(&mut self, channels: Channels, out: &mut Vec<u8>) -> Result<bool, AppError>;

    /// Bytes it holds at most while reading (decoder state, buffered rows).
    fn memory(&self) -> u64;
}

/// The image at `path`, of `format`, to read by rows; `None` if it cannot
/// be read so (it must be decoded whole).
pub fn open(path: &Path, format: ImageFormat) -> Result<Option<Box<dyn Rows>>, AppError> {
    Ok(match format {
        ImageFormat::Png => Some(PngRows::open(path)?).filter(PngRows::in_order).map(|r| Box::new(r) as Box<dyn Rows>),
        ImageFormat::Tiff => TiffRows::open(path)?.map(|r| Box::new(r) as Box<dyn Rows>),
        _ => None,
    })
}

/// Whether every pixel of `rows` is opaque, reading them all (true at once
/// for an image without alpha).
pub fn opaque(mut rows: Box<dyn Rows>) -> Result<bool, AppError> {
    if !rows.has_alpha() {
        return Ok(true);
    }
    let mut row = Vec::new();
    while rows.next_row(Channels::Rgba, &mut row)? {
        if row.iter().skip(3).step_by(4).any(|&a| a != 255) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The answer to a file that turned out unreadable.
pub fn unreadable(format: &str, why: &str) -> AppError {
    AppError::client(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::UnreadableImage,
        format!("the {format} file could not be read: {why}"),
    )
}
