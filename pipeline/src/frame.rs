//! An owned, tightly packed 8-bit raster (RGB, or RGB with alpha), and the
//! halo copy that makes tiled processing seamless.

use serde::{Deserialize, Serialize};

use crate::geometry::Rect;

/// Samples per pixel. On the wire (`"channels"` in task and result headers)
/// it is the number 3 or 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Channels {
    /// Red, green, blue.
    #[default]
    Rgb,
    /// Red, green, blue, then straight (not premultiplied) alpha.
    Rgba,
}

impl Channels {
    pub const fn count(self) -> usize {
        match self {
            Channels::Rgb => 3,
            Channels::Rgba => 4,
        }
    }
}

impl From<Channels> for u8 {
    fn from(c: Channels) -> u8 {
        c.count() as u8
    }
}

impl TryFrom<u8> for Channels {
    type Error = String;

    fn try_from(n: u8) -> Result<Self, String> {
        match n {
            3 => Ok(Channels::Rgb),
            4 => Ok(Channels::Rgba),
            _ => Err(format!("channels must be 3 or 4, got {n}")),
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub channels: Channels,
    /// Row-major samples, `width * height * channels` bytes, no row padding.
    pub pixels: Vec<u8>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({}x{} {:?})", self.width, self.height, self.channels)
    }
}

impl Frame {
    /// An RGB frame.
    ///
    /// # Panics
    /// If `pixels` does not hold exactly `width * height` RGB pixels.
    pub fn new(width: u32, height: u32, pixels: Vec<u8>) -> Self {
        Self::with_channels(width, height, Channels::Rgb, pixels)
    }

    /// # Panics
    /// If `pixels` does not hold exactly `width * height` pixels of `channels`.
    pub fn with_channels(width: u32, height: u32, channels: Channels, pixels: Vec<u8>) -> Self {
        assert_eq!(pixels.len(), Self::len_of(width, height, channels), "pixel buffer size");
        Self { width, height, channels, pixels }
    }

    /// An RGB frame of zeros.
    pub fn black(width: u32, height: u32) -> Self {
        Self::blank(width, height, Channels::Rgb)
    }

    /// Uniform noise from `seed` (xorshift: the same frame on every machine,
    /// without a dependency), for tests and benchmarks.
    pub fn noise(width: u32, height: u32, channels: Channels, seed: u64) -> Self {
        let mut s = seed | 1;
        let pixels = (0..Self::len_of(width, height, channels))
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect();
        Self::with_channels(width, height, channels, pixels)
    }

    /// Smooth gradients and waves with a little grain, in RGB: compresses
    /// like a photo (the benchmarks' input).
    pub fn photo_like(width: u32, height: u32) -> Self {
        let mut noise = crate::noise::Xorshift64::new(0x2545_F491_4F6C_DD1D);
        let mut pixels = Vec::with_capacity(Self::byte_len(width, height));
        for y in 0..height {
            for x in 0..width {
                let grain = (noise.next_u64() >> 60) as f32 - 8.0;
                let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
                let wave = ((fx * 23.0).sin() * (fy * 17.0).cos() * 60.0) + grain;
                pixels.push((90.0 + 120.0 * fx + wave).clamp(0.0, 255.0) as u8);
                pixels.push((60.0 + 150.0 * fy + wave).clamp(0.0, 255.0) as u8);
                pixels.push((200.0 - 100.0 * fx * fy + wave).clamp(0.0, 255.0) as u8);
            }
        }
        Self::new(width, height, pixels)
    }

    /// A frame of zeros (transparent black with alpha).
    pub fn blank(width: u32, height: u32, channels: Channels) -> Self {
        Self::with_channels(width, height, channels, vec![0; Self::len_of(width, height, channels)])
    }

    /// Bytes of an RGB frame of this size.
    pub const fn byte_len(width: u32, height: u32) -> usize {
        Self::len_of(width, height, Channels::Rgb)
    }

    pub const fn len_of(width: u32, height: u32, channels: Channels) -> usize {
        width as usize * height as usize * channels.count()
    }

    fn row_bytes(&self) -> usize {
        self.width as usize * self.channels.count()
    }

    /// Copies `rect` grown by `halo` pixels on every side. Pixels outside the
    /// image are mirrored reflect-101 (`dcb|abcd|cba`), OpenCV's default border,
    /// so a tile processed with its halo equals the same region of the whole
    /// image processed in one piece.
    pub fn crop_with_halo(&self, rect: Rect, halo: u32) -> Frame {
        self.window_with_halo((0, 0), (self.width, self.height), rect, halo).expect("the frame is the whole image")
    }

    /// [`Frame::crop_with_halo`] for a frame that is only a window of the
    /// image: it lies at `origin` in an image of `image` (width, height),
    /// whose borders the halo mirrors. `None` if the window lacks a pixel
    /// the tile or its halo needs.
    pub fn window_with_halo(&self, origin: (u32, u32), image: (u32, u32), rect: Rect, halo: u32) -> Option<Frame> {
        let n = self.channels.count();
        let out_w = rect.width + 2 * halo;
        let out_h = rect.height + 2 * halo;
        let x0 = i64::from(rect.x) - i64::from(halo);
        let y0 = i64::from(rect.y) - i64::from(halo);
        // Where image column / row `i` is in this frame.
        let local = |i: u32, start: u32, size: u32| i.checked_sub(start).filter(|&l| l < size);
        let column = |ox: u32| local(reflect101(x0 + i64::from(ox), image.0), origin.0, self.width);
        // Columns that need mirroring are at most `halo` on each side; the
        // middle run is one contiguous copy per row.
        let inner_start = (-x0).max(0) as u32;
        let inner_end = (i64::from(image.0) - x0).clamp(0, i64::from(out_w)) as u32;
        let inner = if inner_start < inner_end {
            let a = local((x0 + i64::from(inner_start)) as u32, origin.0, self.width)?;
            let b = local((x0 + i64::from(inner_end) - 1) as u32, origin.0, self.width)? + 1;
            Some((a as usize * n, b as usize * n))
        } else {
            None
        };
        let left: Vec<u32> = (0..inner_start.min(out_w)).map(column).collect::<Option<_>>()?;
        let right: Vec<u32> = (inner_end.max(inner_start)..out_w).map(column).collect::<Option<_>>()?;
        let mut out = Vec::with_capacity(Self::len_of(out_w, out_h, self.channels));
        for oy in 0..out_h {
            let sy = local(reflect101(y0 + i64::from(oy), image.1), origin.1, self.height)? as usize;
            let row = &self.pixels[sy * self.row_bytes()..(sy + 1) * self.row_bytes()];
            let mirrored = |out: &mut Vec<u8>, cols: &[u32]| {
                for &sx in cols {
                    out.extend_from_slice(&row[sx as usize * n..sx as usize * n + n]);
                }
            };
            mirrored(&mut out, &left);
            if let Some((a, b)) = inner {
                out.extend_from_slice(&row[a..b]);
            }
            mirrored(&mut out, &right);
        }
        Some(Frame::with_channels(out_w, out_h, self.channels, out))
    }

    /// Copies `rect` out of the frame (no halo).
    pub fn crop(&self, rect: Rect) -> Frame {
        self.crop_with_halo(rect, 0)
    }

    /// Writes `tile` into this frame with its top-left corner at (`x`, `y`).
    ///
    /// # Panics
    /// If the tile does not fit or has other channels.
    pub fn paste(&mut self, x: u32, y: u32, tile: &Frame) {
        assert!(x + tile.width <= self.width && y + tile.height <= self.height, "tile out of bounds");
        assert_eq!(self.channels, tile.channels, "tile channels");
        let dst_row = self.row_bytes();
        let src_row = tile.row_bytes();
        for (ty, src) in tile.pixels.chunks_exact(src_row).enumerate() {
            let start = (y as usize + ty) * dst_row + x as usize * self.channels.count();
            self.pixels[start..start + src_row].copy_from_slice(src);
        }
    }
}

/// RGBA composited over white, rounded: `c * a / 255 + 255 - a`.
pub fn on_white(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4)
        .flat_map(|p| {
            let a = u32::from(p[3]);
            let over = |c: u8| ((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8;
            [over(p[0]), over(p[1]), over(p[2])]
        })
        .collect()
}

/// Mirrors coordinate `i` into `0..n` the way OpenCV's BORDER_REFLECT_101 does,
/// repeating the reflection when `i` lies more than one image away.
pub fn reflect101(i: i64, n: u32) -> u32 {
    let n = i64::from(n);
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - m }) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn numbered(w: u32, h: u32) -> Frame {
        let pixels = (0..Frame::byte_len(w, h)).map(|i| (i * 7 % 251) as u8).collect();
        Frame::new(w, h, pixels)
    }

    fn pixel(f: &Frame, x: u32, y: u32) -> Vec<u8> {
        let n = f.channels.count();
        let i = (y as usize * f.width as usize + x as usize) * n;
        f.pixels[i..i + n].to_vec()
    }

    fn numbered_rgba(w: u32, h: u32) -> Frame {
        let pixels = (0..Frame::len_of(w, h, Channels::Rgba)).map(|i| (i * 11 % 253) as u8).collect();
        Frame::with_channels(w, h, Channels::Rgba, pixels)
    }

    #[test]
    fn channels_are_3_or_4_on_the_wire() {
        assert_eq!(serde_json::to_string(&Channels::Rgba).unwrap(), "4");
        assert_eq!(serde_json::from_str::<Channels>("3").unwrap(), Channels::Rgb);
        assert!(serde_json::from_str::<Channels>("2").is_err());
    }

    #[test]
    fn reflect101_matches_opencv() {
        // OpenCV: gfedcb|abcdefgh|gfedcba
        let n = 8;
        let got: Vec<u32> = (-6..14).map(|i| reflect101(i, n)).collect();
        assert_eq!(got, [6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(reflect101(-5, 1), 0);
        assert_eq!(reflect101(-3, 2), 1);
    }

    #[test]
    fn halo_is_mirrored_at_all_four_edges() {
        let f = numbered(10, 7);
        let halo = 3;
        // The whole image with its halo: every edge at once.
        let t = f.crop_with_halo(Rect::new(0, 0, 10, 7), halo);
        assert_eq!((t.width, t.height), (16, 13));
        for oy in 0..t.height {
            for ox in 0..t.width {
                let sx = reflect101(i64::from(ox) - 3, 10);
                let sy = reflect101(i64::from(oy) - 3, 7);
                assert_eq!(pixel(&t, ox, oy), pixel(&f, sx, sy), "at ({ox},{oy})");
            }
        }
        // Left halo column 0 mirrors image column 3 (reflect-101 skips the edge).
        assert_eq!(pixel(&t, 0, 3), pixel(&f, 3, 0));
        // Bottom-right corner mirrors both ways.
        assert_eq!(pixel(&t, 15, 12), pixel(&f, 10 - 1 - 3, 7 - 1 - 3));
    }

    #[test]
    fn interior_halo_is_the_neighbours_pixels() {
        let f = numbered(40, 30);
        let t = f.crop_with_halo(Rect::new(10, 10, 5, 5), 4);
        assert_eq!(t, f.crop(Rect::new(6, 6, 13, 13)));
    }

    proptest! {
        #[test]
        fn crop_with_halo_matches_definition(
            w in 1u32..40, h in 1u32..40, halo in 0u32..50,
            fx in 0.0f64..1.0, fy in 0.0f64..1.0, fw in 0.0f64..1.0, fh in 0.0f64..1.0, alpha: bool,
        ) {
            let f = if alpha { numbered_rgba(w, h) } else { numbered(w, h) };
            let x = (fx * f64::from(w)) as u32 % w;
            let y = (fy * f64::from(h)) as u32 % h;
            let rw = 1 + (fw * f64::from(w - x - 1)) as u32;
            let rh = 1 + (fh * f64::from(h - y - 1)) as u32;
            let t = f.crop_with_halo(Rect::new(x, y, rw, rh), halo);
            for oy in 0..t.height {
                for ox in 0..t.width {
                    let sx = reflect101(i64::from(x) + i64::from(ox) - i64::from(halo), w);
                    let sy = reflect101(i64::from(y) + i64::from(oy) - i64::from(halo), h);
                    prop_assert_eq!(pixel(&t, ox, oy), pixel(&f, sx, sy));
                }
            }
        }

        #[test]
        fn paste_inverts_crop(w in 1u32..50, h in 1u32..50, t in 1u32..20, alpha: bool) {
            let f = if alpha { numbered_rgba(w, h) } else { numbered(w, h) };
            let mut out = Frame::blank(w, h, f.channels);
            for (_, r) in crate::TileGrid::new(w, h, t).tiles() {
                out.paste(r.x, r.y, &f.crop(r));
            }
            prop_assert_eq!(out, f);
        }
    }
}
