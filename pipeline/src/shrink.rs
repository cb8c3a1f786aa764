//! Downscaling a stream of rows by a whole factor, each output pixel the
//! mean of the block of pixels it covers: how previews of images of any
//! size are made in one pass, holding one output row of sums.

use crate::frame::{Channels, Frame};

pub struct Shrinker {
    width: u32,
    height: u32,
    channels: Channels,
    factor: u32,
    /// Sums of the output row being gathered, one per sample.
    sums: Vec<u32>,
    /// Input rows gathered into `sums`, and all seen.
    gathered: u32,
    seen: u32,
    out: Vec<u8>,
}

impl Shrinker {
    /// For a `width` x `height` image of `channels`, shrunk by the smallest
    /// whole factor that brings its long side to at most `max_side`.
    pub fn new((width, height): (u32, u32), channels: Channels, max_side: u32) -> Self {
        let factor = width.max(height).div_ceil(max_side.max(1)).max(1);
        let out_width = width.div_ceil(factor);
        let samples = out_width as usize * channels.count();
        let out = Vec::with_capacity(samples * height.div_ceil(factor) as usize);
        Self { width, height, channels, factor, sums: vec![0; samples], gathered: 0, seen: 0, out }
    }

    /// The size of the result.
    pub fn size(&self) -> (u32, u32) {
        (self.width.div_ceil(self.factor), self.height.div_ceil(self.factor))
    }

    /// Takes the next input row (`width` pixels; rows past the height are ignored).
    pub fn push(&mut self, row: &[u8]) {
        let n = self.channels.count();
        debug_assert_eq!(row.len(), self.width as usize * n);
        if self.seen == self.height {
            return;
        }
        let k = self.factor as usize;
        for (x, pixel) in row.chunks_exact(n).enumerate() {
            let at = x / k * n;
            for (sum, &v) in self.sums[at..at + n].iter_mut().zip(pixel) {
                *sum += u32::from(v);
            }
        }
        self.seen += 1;
        self.gathered += 1;
        if self.gathered == self.factor || self.seen == self.height {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let (n, k) = (self.channels.count(), self.factor);
        let rows = self.gathered;
        for (i, sum) in self.sums.iter_mut().enumerate() {
            // The last column of blocks may be narrower.
            let column = (i / n) as u32;
            let cols = k.min(self.width - column * k);
            let count = cols * rows;
            self.out.push(((*sum + count / 2) / count) as u8);
            *sum = 0;
        }
        self.gathered = 0;
    }

    /// The shrunk image (rows never pushed are black).
    pub fn finish(mut self) -> Frame {
        if self.gathered > 0 {
            self.flush();
        }
        let (width, height) = self.size();
        self.out.resize(Frame::len_of(width, height, self.channels), 0);
        Frame::with_channels(width, height, self.channels, self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shrink(frame: &Frame, max_side: u32) -> Frame {
        let mut s = Shrinker::new((frame.width, frame.height), frame.channels, max_side);
        let row = frame.width as usize * frame.channels.count();
        for r in frame.pixels.chunks_exact(row) {
            s.push(r);
        }
        s.finish()
    }

    #[test]
    fn each_output_pixel_is_the_rounded_mean_of_its_block() {
        // 5x3 grey-ish RGB, shrunk by 2 (long side 5 -> at most 3).
        let pixels: Vec<u8> = (0..15u8).flat_map(|i| [i * 10, 0, 255]).collect();
        let out = shrink(&Frame::new(5, 3, pixels), 3);
        assert_eq!((out.width, out.height), (3, 2));
        let red: Vec<u8> = out.pixels.chunks_exact(3).map(|p| p[0]).collect();
        // Blocks: (0,1,5,6) (2,3,7,8) (4,9) / (10,11) (12,13) (14): x10, rounded.
        assert_eq!(red, [30, 50, 65, 105, 125, 140]);
        assert!(out.pixels.chunks_exact(3).all(|p| p[1] == 0 && p[2] == 255));
    }

    #[test]
    fn small_images_are_kept_and_large_ones_fit() {
        let frame = Frame::with_channels(7, 4, Channels::Rgba, (0..7 * 4 * 4).map(|i| i as u8).collect());
        assert_eq!(shrink(&frame, 2048), frame);
        let mut s = Shrinker::new((32768, 1000), Channels::Rgb, 2048);
        assert_eq!(s.size(), (2048, 63));
        s.push(&vec![9; 32768 * 3]);
        let out = s.finish();
        assert_eq!(&out.pixels[..3], &[9, 9, 9]);
    }
}
