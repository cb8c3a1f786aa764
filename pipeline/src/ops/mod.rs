//! Image operations. Each one knows the halo (in pixels) it reads beyond a
//! tile, so a chain of them can run on tiles and still equal the whole-image
//! result exactly.

use serde::{Deserialize, Serialize};

use crate::frame::Frame;
use crate::geometry::Rect;

mod kernels;

/// Largest blur kernel accepted; beyond it halos dwarf the tiles.
pub const MAX_KERNEL: u32 = 255;
/// Most steps in one chain.
pub const MAX_STEPS: usize = 16;
/// Largest total halo of a chain, in pixels on each side of a tile.
pub const MAX_HALO: u32 = 512;

/// One step of a job's chain. On the wire and in the API it is a JSON object
/// tagged by `op`, e.g. `{"op": "gaussian_blur", "kernel": 51}`.
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
    /// Mean of the `kernel` x `kernel` neighbourhood.
    BoxBlur {
        kernel: u32,
    },
    /// Unsharp mask: `p + amount * (p - gaussian(p))` with a Gaussian of
    /// `radius` (kernel `2 * radius + 1`, OpenCV's sigma for it).
    Sharpen {
        radius: u32,
        amount: f64,
    },
    /// Sobel gradient magnitude of the luma, in all three channels.
    EdgeDetect,
    /// Luma (OpenCV's weights) in all three channels.
    Grayscale,
    Invert,
    /// `contrast * p + brightness`, saturated.
    BrightnessContrast {
        brightness: f64,
        contrast: f64,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpError {
    #[error("{op}.{param} must be {allowed}, got {got}")]
    Param { op: &'static str, param: &'static str, allowed: &'static str, got: String },
    #[error("a job needs at least one operation")]
    EmptyChain,
    #[error("a chain has at most {MAX_STEPS} operations, got {0}")]
    TooManySteps(usize),
    #[error("the chain reads {0} pixels around each pixel; at most {MAX_HALO} are allowed")]
    HaloTooLarge(u32),
}

impl Default for Operation {
    /// The seed system's operation: a 51x51 Gaussian blur.
    fn default() -> Self {
        Operation::GaussianBlur { kernel: 51, sigma: None }
    }
}

fn check<T: PartialOrd + std::fmt::Display>(
    op: &'static str,
    param: &'static str,
    value: T,
    ok: bool,
    allowed: &'static str,
) -> Result<(), OpError> {
    if ok { Ok(()) } else { Err(OpError::Param { op, param, allowed, got: value.to_string() }) }
}

fn odd_kernel(op: &'static str, kernel: u32) -> Result<(), OpError> {
    let ok = kernel % 2 == 1 && (3..=MAX_KERNEL).contains(&kernel);
    check(op, "kernel", kernel, ok, "an odd number within 3..=255")
}

/// Every operation's name on the wire.
pub const NAMES: [&str; 7] =
    ["gaussian_blur", "box_blur", "sharpen", "edge_detect", "grayscale", "invert", "brightness_contrast"];

impl Operation {
    /// The operation's name on the wire (its `op` tag).
    pub fn name(&self) -> &'static str {
        match self {
            Operation::GaussianBlur { .. } => "gaussian_blur",
            Operation::BoxBlur { .. } => "box_blur",
            Operation::Sharpen { .. } => "sharpen",
            Operation::EdgeDetect => "edge_detect",
            Operation::Grayscale => "grayscale",
            Operation::Invert => "invert",
            Operation::BrightnessContrast { .. } => "brightness_contrast",
        }
    }

    pub fn validate(&self) -> Result<(), OpError> {
        let op = self.name();
        match *self {
            Operation::GaussianBlur { kernel, sigma } => {
                odd_kernel(op, kernel)?;
                match sigma {
                    Some(s) => check(op, "sigma", s, s.is_finite() && s > 0.0 && s <= 100.0, "within (0, 100]"),
                    None => Ok(()),
                }
            }
            Operation::BoxBlur { kernel } => odd_kernel(op, kernel),
            Operation::Sharpen { radius, amount } => {
                check(op, "radius", radius, (1..=MAX_KERNEL / 2).contains(&radius), "within 1..=127")?;
                check(op, "amount", amount, amount.is_finite() && (0.0..=10.0).contains(&amount), "within 0..=10")
            }
            Operation::BrightnessContrast { brightness, contrast } => {
                let b_ok = brightness.is_finite() && (-255.0..=255.0).contains(&brightness);
                check(op, "brightness", brightness, b_ok, "within -255..=255")?;
                let c_ok = contrast.is_finite() && (0.0..=10.0).contains(&contrast);
                check(op, "contrast", contrast, c_ok, "within 0..=10")
            }
            Operation::EdgeDetect | Operation::Grayscale | Operation::Invert => Ok(()),
        }
    }

    /// Pixels this operation reads beyond the pixel it writes, on each side.
    pub fn halo(&self) -> u32 {
        match *self {
            Operation::GaussianBlur { kernel, .. } | Operation::BoxBlur { kernel } => kernel / 2,
            Operation::Sharpen { radius, .. } => radius,
            Operation::EdgeDetect => 1,
            Operation::Grayscale | Operation::Invert | Operation::BrightnessContrast { .. } => 0,
        }
    }

    /// Applies the operation to the whole frame. Pixels within `halo()` of the
    /// frame's border are not meaningful; callers crop them away.
    pub fn apply(&self, input: Frame) -> Frame {
        match *self {
            Operation::GaussianBlur { kernel, sigma } => {
                kernels::gaussian_blur(&input, kernel, sigma.unwrap_or_else(|| opencv_sigma(kernel)))
            }
            Operation::BoxBlur { kernel } => kernels::box_blur(&input, kernel),
            Operation::Sharpen { radius, amount } => {
                let kernel = 2 * radius + 1;
                kernels::unsharp(&input, kernel, opencv_sigma(kernel), amount as f32)
            }
            Operation::EdgeDetect => kernels::sobel(&input),
            Operation::Grayscale => kernels::grayscale(input),
            Operation::Invert => kernels::invert(input),
            Operation::BrightnessContrast { brightness, contrast } => {
                kernels::brightness_contrast(input, brightness as f32, contrast as f32)
            }
        }
    }
}

/// OpenCV's default sigma for a kernel size.
pub fn opencv_sigma(kernel: u32) -> f64 {
    0.3 * ((f64::from(kernel) - 1.0) * 0.5 - 1.0) + 0.8
}

/// The total halo of a chain: every step reads beyond the previous one's output.
pub fn chain_halo(chain: &[Operation]) -> u32 {
    chain.iter().map(Operation::halo).sum()
}

pub fn validate_chain(chain: &[Operation]) -> Result<(), OpError> {
    if chain.is_empty() {
        return Err(OpError::EmptyChain);
    }
    if chain.len() > MAX_STEPS {
        return Err(OpError::TooManySteps(chain.len()));
    }
    chain.iter().try_for_each(Operation::validate)?;
    match chain_halo(chain) {
        halo if halo > MAX_HALO => Err(OpError::HaloTooLarge(halo)),
        _ => Ok(()),
    }
}

/// Runs a chain on a tile cut with `halo` pixels on each side and returns the
/// tile's own pixels (the halo cropped away).
pub fn process_tile(chain: &[Operation], input: Frame, halo: u32) -> Frame {
    let (width, height) = (input.width - 2 * halo, input.height - 2 * halo);
    // After each step only the halo of the steps still to come is read: its
    // own is cropped away before the next runs (three 51x51 blurs of a 512
    // px tile then blur 612, 562 and 512 px squares, not 662 px three times).
    let mut margin = halo;
    let frame = chain.iter().fold(input, |frame, op| {
        let frame = op.apply(frame);
        let trim = op.halo().min(margin);
        if trim == 0 {
            return frame;
        }
        margin -= trim;
        frame.crop(Rect::new(trim, trim, width + 2 * margin, height + 2 * margin))
    });
    // A halo wider than the chain's leaves a margin no step needed.
    match margin {
        0 => frame,
        _ => frame.crop(Rect::new(margin, margin, width, height)),
    }
}

/// The reference result: the chain applied to the whole image in one piece.
pub fn process_whole(chain: &[Operation], image: &Frame) -> Frame {
    let halo = chain_halo(chain);
    let padded = image.crop_with_halo(Rect::new(0, 0, image.width, image.height), halo);
    process_tile(chain, padded, halo)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{Channels, TileGrid};
    use proptest::prelude::*;

    fn noise(w: u32, h: u32, seed: u64) -> Frame {
        noise_with(w, h, Channels::Rgb, seed)
    }

    /// Deterministic noise (xorshift), for this crate's tests.
    pub(crate) fn noise_with(w: u32, h: u32, channels: Channels, seed: u64) -> Frame {
        Frame::noise(w, h, channels, seed)
    }

    fn tiled(chain: &[Operation], image: &Frame, tile: u32) -> Frame {
        let halo = chain_halo(chain);
        let mut out = Frame::blank(image.width, image.height, image.channels);
        for (_, rect) in TileGrid::new(image.width, image.height, tile).tiles() {
            let result = process_tile(chain, image.crop_with_halo(rect, halo), halo);
            out.paste(rect.x, rect.y, &result);
        }
        out
    }

    #[test]
    fn tiled_blur_equals_whole_image_blur_bit_for_bit() {
        let chain = [Operation::default()];
        for (w, h, tile, seed) in
            [(300, 217, 64, 1), (257, 129, 128, 2), (130, 90, 7, 3), (100, 61, 100, 4), (77, 99, 1_000, 5)]
        {
            let image = noise(w, h, seed);
            assert_eq!(tiled(&chain, &image, tile), process_whole(&chain, &image), "{w}x{h} tile {tile}");
        }
    }

    #[test]
    fn blur_really_blurs() {
        let image = noise(120, 80, 9);
        let out = process_whole(&[Operation::default()], &image);
        let spread = |f: &Frame| {
            let (min, max) = f.pixels.iter().fold((255u8, 0u8), |(a, b), &p| (a.min(p), b.max(p)));
            max - min
        };
        assert!(spread(&image) > 200);
        assert!(spread(&out) < 60, "blurred noise should be flat, spread {}", spread(&out));
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
    fn parameters_are_validated_with_their_names_and_ranges() {
        let blur = |kernel, sigma| Operation::GaussianBlur { kernel, sigma };
        let message = |op: Operation| op.validate().unwrap_err().to_string();
        assert_eq!(message(blur(50, None)), "gaussian_blur.kernel must be an odd number within 3..=255, got 50");
        assert!(blur(1, None).validate().is_err());
        assert!(blur(257, None).validate().is_err());
        assert_eq!(message(blur(5, Some(-1.0))), "gaussian_blur.sigma must be within (0, 100], got -1");
        assert!(blur(5, Some(f64::NAN)).validate().is_err());
        assert_eq!(blur(51, Some(8.0)).validate(), Ok(()));
        assert_eq!(
            message(Operation::BoxBlur { kernel: 4 }),
            "box_blur.kernel must be an odd number within 3..=255, got 4"
        );
        assert_eq!(
            message(Operation::Sharpen { radius: 0, amount: 1.0 }),
            "sharpen.radius must be within 1..=127, got 0"
        );
        assert!(Operation::Sharpen { radius: 2, amount: 11.0 }.validate().is_err());
        assert_eq!(
            message(Operation::BrightnessContrast { brightness: 300.0, contrast: 1.0 }),
            "brightness_contrast.brightness must be within -255..=255, got 300"
        );
        assert!(Operation::BrightnessContrast { brightness: 0.0, contrast: -1.0 }.validate().is_err());
        assert_eq!(validate_chain(&[]), Err(OpError::EmptyChain));
        assert_eq!(validate_chain(&vec![Operation::Invert; 17]), Err(OpError::TooManySteps(17)));
        assert_eq!(
            validate_chain(&[blur(255, None), blur(255, None), blur(255, None), blur(255, None), blur(255, None)]),
            Err(OpError::HaloTooLarge(635))
        );
        assert_eq!(validate_chain(&[Operation::Grayscale, Operation::default(), Operation::Invert]), Ok(()));
    }

    fn any_operation() -> impl Strategy<Value = Operation> {
        let odd = (1u32..=15).prop_map(|k| 2 * k + 1);
        prop_oneof![
            (odd.clone(), proptest::option::of(0.3f64..12.0))
                .prop_map(|(kernel, sigma)| Operation::GaussianBlur { kernel, sigma }),
            odd.prop_map(|kernel| Operation::BoxBlur { kernel }),
            (1u32..=8, 0.0f64..4.0).prop_map(|(radius, amount)| Operation::Sharpen { radius, amount }),
            Just(Operation::EdgeDetect),
            Just(Operation::Grayscale),
            Just(Operation::Invert),
            (-100.0f64..100.0, 0.0f64..3.0)
                .prop_map(|(brightness, contrast)| Operation::BrightnessContrast { brightness, contrast }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// The heart of tilepipe: any chain, any image size, any tile size
        /// (1-pixel edge tiles and tiles smaller than the halo included), and
        /// the tiles reassemble to the whole-image result bit for bit.
        #[test]
        fn any_chain_tiled_equals_whole(
            chain in proptest::collection::vec(any_operation(), 1..4),
            w in 1u32..90,
            h in 1u32..90,
            tile in 1u32..70,
            seed in any::<u64>(),
            alpha: bool,
        ) {
            prop_assert_eq!(validate_chain(&chain), Ok(()));
            let image = noise_with(w, h, if alpha { Channels::Rgba } else { Channels::Rgb }, seed);
            prop_assert_eq!(tiled(&chain, &image, tile), process_whole(&chain, &image));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Cropping each step's own halo before the next step changes no
        /// pixel of the tile: each step reads only its halo around what the
        /// steps after it read. A halo wider than the chain's changes none.
        #[test]
        fn trimming_each_steps_halo_changes_nothing(
            chain in proptest::collection::vec(any_operation(), 1..4),
            w in 1u32..40,
            h in 1u32..40,
            extra in 0u32..4,
            seed in any::<u64>(),
        ) {
            let image = noise(w, h, seed);
            let (halo, whole) = (chain_halo(&chain), Rect::new(0, 0, w, h));
            let untrimmed = chain.iter().fold(image.crop_with_halo(whole, halo), |f, op| op.apply(f));
            let expected = untrimmed.crop(Rect::new(halo, halo, w, h));
            prop_assert_eq!(&process_tile(&chain, image.crop_with_halo(whole, halo), halo), &expected);
            let wider = halo + extra;
            prop_assert_eq!(&process_tile(&chain, image.crop_with_halo(whole, wider), wider), &expected);
        }
    }

    /// Every small blur kernel and a spread of large ones, with several sigmas:
    /// the fast fixed-point path is used only where it is exact under tiling.
    #[test]
    fn every_kernel_is_exact_under_tiling() {
        for image in [noise(61, 37, 77), noise_with(43, 29, Channels::Rgba, 78)] {
            every_kernel_is_exact_on(&image);
        }
    }

    fn every_kernel_is_exact_on(image: &Frame) {
        for kernel in (3..=63).step_by(2).chain([101, 155, 201, MAX_KERNEL]) {
            let sigmas = [None, Some(0.5), Some(f64::from(kernel) / 6.0)];
            let chains = sigmas
                .map(|sigma| Operation::GaussianBlur { kernel, sigma })
                .into_iter()
                .chain([Operation::BoxBlur { kernel }])
                .chain(
                    (kernel / 2 <= MAX_KERNEL / 2).then_some(Operation::Sharpen { radius: kernel / 2, amount: 2.0 }),
                );
            for op in chains {
                let chain = [op];
                for tile in [13, 30] {
                    assert!(tiled(&chain, image, tile) == process_whole(&chain, image), "{:?} tile {tile}", chain[0]);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// The seed's blur takes the fast path: exact for any geometry too.
        #[test]
        fn default_blur_tiled_equals_whole(
            w in 1u32..400, h in 1u32..300, tile in 1u32..260, seed in any::<u64>(), alpha: bool,
        ) {
            let chain = [Operation::default()];
            let image = noise_with(w, h, if alpha { Channels::Rgba } else { Channels::Rgb }, seed);
            prop_assert!(tiled(&chain, &image, tile) == process_whole(&chain, &image));
        }
    }

    #[test]
    fn alpha_is_blurred_by_blurs_and_kept_by_everything_else() {
        let image = noise_with(40, 30, Channels::Rgba, 5);
        let alpha = |f: &Frame| f.pixels.iter().skip(3).step_by(4).copied().collect::<Vec<u8>>();
        let kept = [
            Operation::Sharpen { radius: 2, amount: 1.5 },
            Operation::EdgeDetect,
            Operation::Grayscale,
            Operation::Invert,
            Operation::BrightnessContrast { brightness: 30.0, contrast: 1.5 },
        ];
        for op in kept {
            let out = process_whole(std::slice::from_ref(&op), &image);
            assert_eq!(out.channels, Channels::Rgba);
            assert_eq!(alpha(&out), alpha(&image), "{op:?} changed alpha");
            assert_ne!(out.pixels, image.pixels, "{op:?} changed nothing");
        }
        // A blur smooths alpha like any channel, and matches the RGB blur's colours.
        let blurred = process_whole(&[Operation::default()], &image);
        let spread = |v: &[u8]| v.iter().max().unwrap() - v.iter().min().unwrap();
        assert!(spread(&alpha(&blurred)) < spread(&alpha(&image)) / 3);
        let rgb: Vec<u8> = image.pixels.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
        let rgb_blurred = process_whole(&[Operation::default()], &Frame::new(40, 30, rgb));
        let colours: Vec<u8> = blurred.pixels.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
        let worst = colours.iter().zip(&rgb_blurred.pixels).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        assert!(worst <= 1, "RGBA and RGB blurs differ by {worst}");
    }

    #[test]
    fn every_operation_survives_json() {
        let all = [
            Operation::default(),
            Operation::GaussianBlur { kernel: 7, sigma: Some(1.5) },
            Operation::BoxBlur { kernel: 9 },
            Operation::Sharpen { radius: 3, amount: 1.5 },
            Operation::EdgeDetect,
            Operation::Grayscale,
            Operation::Invert,
            Operation::BrightnessContrast { brightness: -20.0, contrast: 1.2 },
        ];
        for op in all {
            let json = serde_json::to_string(&op).unwrap();
            assert!(json.contains(&format!(r#""op":"{}""#, op.name())), "{json}");
            assert_eq!(serde_json::from_str::<Operation>(&json).unwrap(), op);
        }
    }

    #[test]
    fn operations_round_trip_as_json() {
        let op: Operation = serde_json::from_str(r#"{"op":"gaussian_blur","kernel":51}"#).unwrap();
        assert_eq!(op, Operation::default());
        assert!(serde_json::from_str::<Operation>(r#"{"op":"melt"}"#).is_err());
    }
}
