//! Image operations. Each one knows the halo (in pixels) it reads beyond a
//! tile, so a chain of them can run on tiles and still equal the whole-image
//! result exactly.

use libblur::{
    BlurImage, BlurImageMut, ConvolutionMode, EdgeMode, EdgeMode2D, FastBlurChannels,
    GaussianBlurParams, ThreadingPolicy,
};
use serde::{Deserialize, Serialize};

use crate::frame::Frame;
use crate::geometry::Rect;

/// Largest Gaussian kernel accepted; beyond it halos dwarf the tiles.
pub const MAX_KERNEL: u32 = 255;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Operation {
    /// OpenCV's `GaussianBlur(img, (kernel, kernel), sigma)`; with no sigma,
    /// OpenCV's rule `0.3 * ((kernel - 1) / 2 - 1) + 0.8` (8 for 51).
    GaussianBlur {
        kernel: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sigma: Option<f64>,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpError {
    #[error("gaussian_blur.kernel must be odd and within 3..={MAX_KERNEL}, got {0}")]
    Kernel(u32),
    #[error("gaussian_blur.sigma must be a finite number within (0, 100], got {0}")]
    Sigma(f64),
    #[error("a job needs at least one operation")]
    EmptyChain,
}

impl Default for Operation {
    /// The seed system's operation: a 51x51 Gaussian blur.
    fn default() -> Self {
        Operation::GaussianBlur {
            kernel: 51,
            sigma: None,
        }
    }
}

impl Operation {
    pub fn validate(&self) -> Result<(), OpError> {
        match *self {
            Operation::GaussianBlur { kernel, sigma } => {
                if kernel % 2 == 0 || !(3..=MAX_KERNEL).contains(&kernel) {
                    return Err(OpError::Kernel(kernel));
                }
                match sigma {
                    Some(s) if !(s.is_finite() && s > 0.0 && s <= 100.0) => Err(OpError::Sigma(s)),
                    _ => Ok(()),
                }
            }
        }
    }

    /// Pixels this operation reads beyond the pixel it writes, on each side.
    pub fn halo(&self) -> u32 {
        match *self {
            Operation::GaussianBlur { kernel, .. } => kernel / 2,
        }
    }

    /// Applies the operation to the whole frame. Pixels within `halo()` of the
    /// frame's border are not meaningful; callers crop them away.
    pub fn apply(&self, input: &Frame) -> Frame {
        match *self {
            Operation::GaussianBlur { kernel, sigma } => {
                let sigma = sigma.unwrap_or_else(|| opencv_sigma(kernel));
                gaussian_blur(input, kernel, sigma)
            }
        }
    }
}

/// OpenCV's default sigma for a kernel size.
pub fn opencv_sigma(kernel: u32) -> f64 {
    0.3 * ((f64::from(kernel) - 1.0) * 0.5 - 1.0) + 0.8
}

fn gaussian_blur(input: &Frame, kernel: u32, sigma: f64) -> Frame {
    let src = BlurImage::borrow(
        &input.pixels,
        input.width,
        input.height,
        FastBlurChannels::Channels3,
    );
    let mut out = Frame::black(input.width, input.height);
    let mut dst = BlurImageMut::borrow(
        &mut out.pixels,
        input.width,
        input.height,
        FastBlurChannels::Channels3,
    );
    // Clamp is only ever seen by the halo, which is cropped; the image's own
    // edges were already mirrored reflect-101 when the halo was cut.
    // Single-threaded: tiles are the unit of parallelism.
    libblur::gaussian_blur(
        &src,
        &mut dst,
        GaussianBlurParams::new(kernel, sigma),
        EdgeMode2D::new(EdgeMode::Clamp),
        ThreadingPolicy::Single,
        ConvolutionMode::FixedPoint,
    )
    .expect("validated parameters and matching buffers");
    out
}

/// The total halo of a chain: every step reads beyond the previous one's output.
pub fn chain_halo(chain: &[Operation]) -> u32 {
    chain.iter().map(Operation::halo).sum()
}

pub fn validate_chain(chain: &[Operation]) -> Result<(), OpError> {
    if chain.is_empty() {
        return Err(OpError::EmptyChain);
    }
    chain.iter().try_for_each(Operation::validate)
}

/// Runs a chain on a tile cut with `halo` pixels on each side and returns the
/// tile's own pixels (the halo cropped away).
pub fn process_tile(chain: &[Operation], input: &Frame, halo: u32) -> Frame {
    let mut frame = std::borrow::Cow::Borrowed(input);
    for op in chain {
        frame = std::borrow::Cow::Owned(op.apply(&frame));
    }
    frame.crop(Rect::new(
        halo,
        halo,
        input.width - 2 * halo,
        input.height - 2 * halo,
    ))
}

/// The reference result: the chain applied to the whole image in one piece.
pub fn process_whole(chain: &[Operation], image: &Frame) -> Frame {
    let halo = chain_halo(chain);
    let padded = image.crop_with_halo(Rect::new(0, 0, image.width, image.height), halo);
    process_tile(chain, &padded, halo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TileGrid;

    fn noise(w: u32, h: u32, seed: u64) -> Frame {
        let mut s = seed | 1;
        let pixels = (0..Frame::byte_len(w, h))
            .map(|_| {
                // xorshift: deterministic, no dependency.
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect();
        Frame::new(w, h, pixels)
    }

    fn tiled(chain: &[Operation], image: &Frame, tile: u32) -> Frame {
        let halo = chain_halo(chain);
        let mut out = Frame::black(image.width, image.height);
        for (_, rect) in TileGrid::new(image.width, image.height, tile).tiles() {
            let result = process_tile(chain, &image.crop_with_halo(rect, halo), halo);
            out.paste(rect.x, rect.y, &result);
        }
        out
    }

    #[test]
    fn tiled_blur_equals_whole_image_blur_bit_for_bit() {
        let chain = [Operation::default()];
        for (w, h, tile, seed) in [
            (300, 217, 64, 1),
            (257, 129, 128, 2),
            (130, 90, 7, 3),
            (100, 61, 100, 4),
            (77, 99, 1_000, 5),
        ] {
            let image = noise(w, h, seed);
            assert_eq!(
                tiled(&chain, &image, tile),
                process_whole(&chain, &image),
                "{w}x{h} tile {tile}"
            );
        }
    }

    #[test]
    fn blur_really_blurs() {
        let image = noise(120, 80, 9);
        let out = process_whole(&[Operation::default()], &image);
        let spread = |f: &Frame| {
            let (min, max) = f
                .pixels
                .iter()
                .fold((255u8, 0u8), |(a, b), &p| (a.min(p), b.max(p)));
            max - min
        };
        assert!(spread(&image) > 200);
        assert!(
            spread(&out) < 60,
            "blurred noise should be flat, spread {}",
            spread(&out)
        );
    }

    #[test]
    fn flat_image_stays_flat() {
        let image = Frame::new(64, 64, vec![137; Frame::byte_len(64, 64)]);
        let out = process_whole(&[Operation::default()], &image);
        assert!(out.pixels.iter().all(|&p| p.abs_diff(137) <= 1));
    }

    #[test]
    fn opencv_sigma_rule() {
        assert!((opencv_sigma(51) - 8.0).abs() < 1e-12);
        assert!((opencv_sigma(3) - 0.8).abs() < 1e-12);
    }

    #[test]
    fn parameters_are_validated() {
        let blur = |kernel, sigma| Operation::GaussianBlur { kernel, sigma };
        assert_eq!(blur(50, None).validate(), Err(OpError::Kernel(50)));
        assert_eq!(blur(1, None).validate(), Err(OpError::Kernel(1)));
        assert_eq!(blur(257, None).validate(), Err(OpError::Kernel(257)));
        assert!(matches!(
            blur(5, Some(-1.0)).validate(),
            Err(OpError::Sigma(_))
        ));
        assert!(matches!(
            blur(5, Some(f64::NAN)).validate(),
            Err(OpError::Sigma(_))
        ));
        assert_eq!(blur(51, Some(8.0)).validate(), Ok(()));
        assert_eq!(validate_chain(&[]), Err(OpError::EmptyChain));
    }

    #[test]
    fn operations_round_trip_as_json() {
        let op: Operation = serde_json::from_str(r#"{"op":"gaussian_blur","kernel":51}"#).unwrap();
        assert_eq!(op, Operation::default());
        assert!(serde_json::from_str::<Operation>(r#"{"op":"melt"}"#).is_err());
    }
}
