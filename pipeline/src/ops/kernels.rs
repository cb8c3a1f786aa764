//! The pixel kernels behind the operations. Each maps a frame to a frame of
//! the same size and is a pure function of each pixel's neighbourhood, which
//! is what lets tiles with halos reproduce the whole-image result exactly.
//! Blurs treat alpha like a colour channel; every other kernel leaves it as
//! it is.

use libblur::{
    BlurImage, BlurImageMut, BoxBlurParameters, ConvolutionMode, EdgeMode, EdgeMode2D, FastBlurChannels,
    GaussianBlurParams, ThreadingPolicy,
};

use crate::frame::{Channels, Frame};

fn with_libblur(input: &Frame, run: impl FnOnce(&BlurImage<u8>, &mut BlurImageMut<u8>)) -> Frame {
    let layout = match input.channels {
        Channels::Rgb => FastBlurChannels::Channels3,
        Channels::Rgba => FastBlurChannels::Channels4,
    };
    let src = BlurImage::borrow(&input.pixels, input.width, input.height, layout);
    let mut out = Frame::blank(input.width, input.height, input.channels);
    let mut dst = BlurImageMut::borrow(&mut out.pixels, input.width, input.height, layout);
    run(&src, &mut dst);
    out
}

/// libblur's fixed-point separable Gaussian, single-threaded: tiles are the
/// unit of parallelism. Clamp is only ever seen by the halo, which is cropped;
/// the image's own edges were mirrored reflect-101 when the halo was cut.
pub fn gaussian_blur(input: &Frame, kernel: u32, sigma: f64) -> Frame {
    with_libblur(input, |src, dst| {
        libblur::gaussian_blur(
            src,
            dst,
            GaussianBlurParams::new(kernel, sigma),
            EdgeMode2D::new(EdgeMode::Clamp),
            ThreadingPolicy::Single,
            mode(kernel, sigma),
        )
        .expect("validated parameters and matching buffers");
    })
}

/// libblur's fixed-point path (about 1.7x faster) is position-independent for
/// the seed's 51x51, sigma 8 blur (tested over random geometries) but can be 1
/// level off under tiling for other kernels and sigmas, so those take the exact
/// path, which is position-independent everywhere (tested for every kernel).
fn mode(kernel: u32, sigma: f64) -> ConvolutionMode {
    // OpenCV's rule gives 7.999999999999999 for 51, so compare with a tolerance.
    if kernel == 51 && (sigma - 8.0).abs() < 1e-9 { ConvolutionMode::FixedPoint } else { ConvolutionMode::Exact }
}

pub fn box_blur(input: &Frame, kernel: u32) -> Frame {
    with_libblur(input, |src, dst| {
        let params = BoxBlurParameters { x_axis_kernel: kernel, y_axis_kernel: kernel };
        libblur::box_blur(src, dst, params, ThreadingPolicy::Single)
            .expect("validated parameters and matching buffers");
    })
}

/// Unsharp mask: `p + amount * (p - gaussian(p))`, rounded and saturated;
/// alpha is kept, not sharpened (that would ring around every edge).
pub fn unsharp(input: &Frame, kernel: u32, sigma: f64, amount: f32) -> Frame {
    let mut out = gaussian_blur(input, kernel, sigma);
    let n = input.channels.count();
    for (o, p) in out.pixels.chunks_exact_mut(n).zip(input.pixels.chunks_exact(n)) {
        for (o, &p) in o[..3].iter_mut().zip(&p[..3]) {
            let p = f32::from(p);
            *o = saturate(p + amount * (p - f32::from(*o)));
        }
        if n == 4 {
            o[3] = p[3];
        }
    }
    out
}

/// Applies `f` to every colour sample, leaving alpha as it is.
fn map_colour(frame: &mut Frame, f: impl Fn(u8) -> u8) {
    match frame.channels {
        Channels::Rgb => frame.pixels.iter_mut().for_each(|p| *p = f(*p)),
        Channels::Rgba => frame.pixels.chunks_exact_mut(4).for_each(|px| px[..3].iter_mut().for_each(|p| *p = f(*p))),
    }
}

/// OpenCV 5's `cvtColor(RGB2GRAY)` luma, in its 15-bit fixed point.
fn luma(px: &[u8]) -> u8 {
    ((u32::from(px[0]) * 9798 + u32::from(px[1]) * 19235 + u32::from(px[2]) * 3735 + (1 << 14)) >> 15) as u8
}

/// Luma in all three channels.
pub fn grayscale(mut frame: Frame) -> Frame {
    for px in frame.pixels.chunks_exact_mut(frame.channels.count()) {
        let gray = luma(px);
        px[..3].fill(gray);
    }
    frame
}

pub fn invert(mut frame: Frame) -> Frame {
    map_colour(&mut frame, |p| 255 - p);
    frame
}

/// `contrast * p + brightness`, rounded half to even and saturated, as
/// OpenCV's `convertTo`; done through a lookup table.
pub fn brightness_contrast(mut frame: Frame, brightness: f32, contrast: f32) -> Frame {
    let table: Vec<u8> = (0..=255u8).map(|p| saturate(contrast * f32::from(p) + brightness)).collect();
    map_colour(&mut frame, |p| table[usize::from(p)]);
    frame
}

/// Sobel gradient magnitude of the luma, `sqrt(gx² + gy²)` saturated to 255,
/// in all three channels. Border pixels (one on each side) are not meaningful.
pub fn sobel(input: &Frame) -> Frame {
    let (w, h, n) = (input.width as usize, input.height as usize, input.channels.count());
    let gray: Vec<i32> = input.pixels.chunks_exact(n).map(|px| i32::from(luma(px))).collect();
    // Starts as the input so that alpha is kept; every colour sample is overwritten.
    let mut out = input.clone();
    if w < 3 || h < 3 {
        return out;
    }
    for y in 1..h - 1 {
        let (up, mid, down) = (&gray[(y - 1) * w..y * w], &gray[y * w..(y + 1) * w], &gray[(y + 1) * w..(y + 2) * w]);
        let row = &mut out.pixels[y * w * n..(y + 1) * w * n];
        for x in 1..w - 1 {
            let gx = (up[x + 1] + 2 * mid[x + 1] + down[x + 1]) - (up[x - 1] + 2 * mid[x - 1] + down[x - 1]);
            let gy = (down[x - 1] + 2 * down[x] + down[x + 1]) - (up[x - 1] + 2 * up[x] + up[x + 1]);
            let magnitude = saturate(((gx * gx + gy * gy) as f32).sqrt());
            row[x * n..x * n + 3].fill(magnitude);
        }
    }
    out
}

fn saturate(v: f32) -> u8 {
    v.round_ties_even().clamp(0.0, 255.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_matches_opencv_weights() {
        assert_eq!(luma(&[255, 255, 255]), 255);
        assert_eq!(luma(&[0, 0, 0]), 0);
        assert_eq!(luma(&[255, 0, 0]), 76); // 0.299 * 255
        assert_eq!(luma(&[0, 255, 0]), 150); // 0.587 * 255
        assert_eq!(luma(&[0, 0, 255]), 29); // 0.114 * 255
    }

    #[test]
    fn the_seeds_blur_takes_the_fast_path() {
        assert!(mode(51, crate::ops::opencv_sigma(51)) == ConvolutionMode::FixedPoint);
        assert!(mode(51, 8.5) == ConvolutionMode::Exact);
        assert!(mode(21, crate::ops::opencv_sigma(21)) == ConvolutionMode::Exact);
    }

    #[test]
    fn pointwise_operations() {
        let f = Frame::new(2, 1, vec![10, 20, 30, 200, 100, 0]);
        assert_eq!(invert(f.clone()).pixels, [245, 235, 225, 55, 155, 255]);
        assert_eq!(grayscale(f.clone()).pixels, [18, 18, 18, 119, 119, 119]);
        assert_eq!(brightness_contrast(f.clone(), 10.0, 2.0).pixels, [30, 50, 70, 255, 210, 10]);
        assert_eq!(brightness_contrast(f, -300.0, 1.0).pixels, [0; 6]);
    }

    #[test]
    fn sobel_finds_a_vertical_edge() {
        // Left half black, right half white.
        let (w, h) = (8u32, 5u32);
        let pixels = (0..w * h).flat_map(|i| [if i % w >= 4 { 255 } else { 0 }; 3]).collect();
        let out = sobel(&Frame::new(w, h, pixels));
        let at = |x: u32, y: u32| out.pixels[((y * w + x) * 3) as usize];
        assert_eq!(at(1, 2), 0);
        assert_eq!(at(3, 2), 255);
        assert_eq!(at(4, 2), 255);
        assert_eq!(at(6, 2), 0);
    }

    #[test]
    fn unsharp_raises_local_contrast() {
        let (w, h) = (21u32, 1u32);
        let pixels = (0..w * h).flat_map(|i| [if i >= 10 { 150 } else { 100 }; 3]).collect();
        let input = Frame::new(w, h, pixels);
        let out = unsharp(&input, 5, 1.1, 1.0);
        let at = |f: &Frame, x: u32| f.pixels[(x * 3) as usize];
        assert!(at(&out, 9) < 100, "dark side of the edge gets darker: {}", at(&out, 9));
        assert!(at(&out, 10) > 150, "bright side gets brighter: {}", at(&out, 10));
        assert_eq!(at(&out, 3), 100);
    }
}
