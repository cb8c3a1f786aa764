//! How a result tile's pixels travel: raw, or as a PNG stream (lossless,
//! fast deflate). Pure: encodes and decodes in memory.

use serde::{Deserialize, Serialize};

use crate::frame::{Channels, Frame};

/// A result's pixel encoding, `"encoding"` in its header (`"raw"` when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The samples themselves, row-major, no padding.
    #[default]
    Raw,
    /// A whole 8-bit RGB or RGBA PNG file of exactly the tile.
    Png,
    /// In a task: a baseline JPEG file of a region of the upload, cut from
    /// it losslessly (see `pipeline::jpeg`); the task's `source` says where.
    /// In a result: the tile as a JPEG of the task's `jpeg_tile_quality`, coded
    /// by [`crate::jpeg::encode_tile`]; the master checks it with
    /// [`crate::jpeg::check_tile`], it is never decoded here.
    Jpeg,
}

impl Encoding {
    pub fn is_raw(&self) -> bool {
        *self == Self::Raw
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("expected {expected} pixel bytes, got {got}")]
    Size { expected: usize, got: usize },
    #[error("bad PNG: {0}")]
    Png(String),
    #[error("a result cannot be a lossy JPEG")]
    Lossy,
}

/// Encodes `frame`'s pixels.
pub fn encode(frame: &Frame, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Raw => frame.pixels.clone(),
        Encoding::Png => encode_png(frame),
        Encoding::Jpeg => panic!("JPEG tiles are coded by jpeg::encode_tile"),
    }
}

/// Decodes pixels that must make a `width` x `height` frame of `channels`.
pub fn decode(
    bytes: &[u8],
    encoding: Encoding,
    (width, height, channels): (u32, u32, Channels),
) -> Result<Frame, CodecError> {
    let expected = Frame::len_of(width, height, channels);
    let pixels = match encoding {
        Encoding::Raw if bytes.len() == expected => bytes.to_vec(),
        Encoding::Raw => return Err(CodecError::Size { expected, got: bytes.len() }),
        Encoding::Png => from_png(bytes, (width, height, channels))?,
        Encoding::Jpeg => return Err(CodecError::Lossy),
    };
    if pixels.len() != expected {
        return Err(CodecError::Size { expected, got: pixels.len() });
    }
    Ok(Frame::with_channels(width, height, channels, pixels))
}

/// The PNG colour type of 8-bit samples of `channels`.
pub fn png_colour(channels: Channels) -> png::ColorType {
    match channels {
        Channels::Rgb => png::ColorType::Rgb,
        Channels::Rgba => png::ColorType::Rgba,
    }
}

/// The one PNG setup tilepipe writes with: 8-bit RGB or RGBA, fdeflate's
/// fast mode (about ten times the default level's speed for a slightly
/// larger file), and `filter`.
pub fn png_encoder<W: std::io::Write>(
    out: W,
    (width, height): (u32, u32),
    channels: Channels,
    filter: png::Filter,
) -> png::Encoder<'static, W> {
    let mut encoder = png::Encoder::new(out, width, height);
    encoder.set_color(png_colour(channels));
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    encoder.set_filter(filter);
    encoder
}

/// `frame` as a PNG in memory, as tiles travel: the Up filter, with which
/// blurred tiles shrink to about a quarter at several hundred MB/s (see
/// the encodings table of `cargo bench -p pipeline`).
pub fn encode_png(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.pixels.len() / 3);
    let encoder = png_encoder(&mut out, (frame.width, frame.height), frame.channels, png::Filter::Up);
    let mut writer = encoder.write_header().expect("a PNG header for a non-empty tile, in memory");
    writer.write_image_data(&frame.pixels).expect("pixels of the frame's own size, in memory");
    writer.finish().expect("an in-memory PNG");
    out
}

/// The pixels of a PNG that must be exactly `shape`: as many bytes, and its
/// own header describing the same tile.
fn from_png(bytes: &[u8], shape: (u32, u32, Channels)) -> Result<Vec<u8>, CodecError> {
    let expected = Frame::len_of(shape.0, shape.1, shape.2);
    let png_error = |e: png::DecodingError| CodecError::Png(e.to_string());
    let limits = png::Limits { bytes: expected + 1024 };
    let mut reader =
        png::Decoder::new_with_limits(std::io::Cursor::new(bytes), limits).read_info().map_err(png_error)?;
    let size = reader.output_buffer_size().ok_or_else(|| CodecError::Png("too large".into()))?;
    if size != expected {
        return Err(CodecError::Size { expected, got: size });
    }
    let info = reader.info();
    let held = match (info.color_type, info.bit_depth) {
        (png::ColorType::Rgb, png::BitDepth::Eight) => (info.width, info.height, Channels::Rgb),
        (png::ColorType::Rgba, png::BitDepth::Eight) => (info.width, info.height, Channels::Rgba),
        (c, d) => return Err(CodecError::Png(format!("{c:?} at {d:?} bits is not a tile"))),
    };
    if held != shape {
        return Err(CodecError::Png(format!("it holds {held:?}, the header says {shape:?}")));
    }
    let mut pixels = vec![0; size];
    reader.next_frame(&mut pixels).map_err(png_error)?;
    Ok(pixels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Gradients, as a blur leaves an image.
    fn smooth(w: u32, h: u32, channels: Channels) -> Frame {
        let n = channels.count() as u32;
        let pixels = (0..h).flat_map(|y| (0..w * n).map(move |i| ((i / n) * 2 + y + (i % n) * 40) as u8)).collect();
        Frame::with_channels(w, h, channels, pixels)
    }

    /// Noise through the seed's blur: what most results look like.
    fn blurred_noise(channels: Channels) -> Frame {
        let input = crate::ops::tests::noise_with(150, 120, channels, 7);
        crate::ops::process_tile(&[crate::Operation::default()], input, 25)
    }

    #[test]
    fn blurred_tiles_shrink_to_a_third_and_come_back_exact() {
        for channels in [Channels::Rgb, Channels::Rgba] {
            let tile = blurred_noise(channels);
            let bytes = encode(&tile, Encoding::Png);
            assert!(bytes.len() * 3 < tile.pixels.len(), "{} of {}", bytes.len(), tile.pixels.len());
            assert_eq!(decode(&bytes, Encoding::Png, (100, 70, channels)).unwrap(), tile);
        }
    }

    #[test]
    fn a_png_of_another_tile_is_refused() {
        let bytes = encode(&smooth(64, 48, Channels::Rgb), Encoding::Png);
        assert!(matches!(decode(&bytes, Encoding::Png, (48, 64, Channels::Rgb)), Err(CodecError::Png(_))));
        assert!(matches!(decode(&bytes, Encoding::Png, (64, 48, Channels::Rgba)), Err(CodecError::Size { .. })));
        assert!(matches!(decode(&bytes[..40], Encoding::Png, (64, 48, Channels::Rgb)), Err(CodecError::Png(_))));
        assert!(decode(b"not a png", Encoding::Png, (1, 1, Channels::Rgb)).is_err());
    }

    #[test]
    fn encodings_are_named_in_json() {
        assert_eq!(serde_json::to_string(&Encoding::Png).unwrap(), r#""png""#);
        assert_eq!(serde_json::from_str::<Encoding>(r#""raw""#).unwrap(), Encoding::Raw);
    }

    proptest! {
        #[test]
        fn any_bytes_decode_to_an_error_or_the_right_size(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut png = encode(&smooth(5, 3, Channels::Rgb), Encoding::Png);
            png.extend_from_slice(&bytes);
            for input in [&bytes[..], &png[..]] {
                if let Ok(frame) = decode(input, Encoding::Png, (5, 3, Channels::Rgb)) {
                    prop_assert_eq!(frame.pixels.len(), 45);
                }
            }
        }
    }
}
