//! A job's decoded pixels in a file: what the tasks of any input but a cut
//! JPEG are made from. Rows are written once, as the decoder produces them
//! (a streamed PNG) or all at once (an image decoded whole, which is then
//! let go); each task reads back only its tile and halo. So a running job
//! holds no frame in memory, and a retry reads its region again.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::Context;
use pipeline::frame::reflect101;
use pipeline::{Channels, Frame, Rect};

pub struct Raster {
    file: File,
    pub width: u32,
    pub height: u32,
    pub channels: Channels,
}

impl Raster {
    /// An empty raster file at `path` (emptied if it exists).
    pub fn create(path: &Path, (width, height): (u32, u32), channels: Channels) -> std::io::Result<Self> {
        let file = File::options().read(true).write(true).create(true).truncate(true).open(path)?;
        Ok(Self { file, width, height, channels })
    }

    fn row_bytes(&self) -> u64 {
        u64::from(self.width) * self.channels.count() as u64
    }

    /// Writes whole rows from row `y` on.
    pub fn write_rows(&self, y: u32, samples: &[u8]) -> std::io::Result<()> {
        debug_assert_eq!(samples.len() as u64 % self.row_bytes(), 0);
        self.file.write_all_at(samples, u64::from(y) * self.row_bytes())
    }

    /// `rect` with `halo` pixels around it, mirrored at the image's borders
    /// as [`Frame::crop_with_halo`] does (blocking: reads the rows it needs).
    pub fn region(&self, rect: Rect, halo: u32) -> anyhow::Result<Frame> {
        let rows = span(rect.y, rect.height, halo, self.height);
        let columns = span(rect.x, rect.width, halo, self.width);
        let (width, height) = (columns.1 - columns.0, rows.1 - rows.0);
        let n = self.channels.count();
        let mut pixels = vec![0; Frame::len_of(width, height, self.channels)];
        let line = width as usize * n;
        for (i, y) in (rows.0..rows.1).enumerate() {
            let at = u64::from(y) * self.row_bytes() + u64::from(columns.0) * n as u64;
            self.file.read_exact_at(&mut pixels[i * line..(i + 1) * line], at).context("reading the job's pixels")?;
        }
        let window = Frame::with_channels(width, height, self.channels, pixels);
        window
            .window_with_halo((columns.0, rows.0), (self.width, self.height), rect, halo)
            .context("a region outside the image")
    }
}

/// The rows (or columns) `start..start + len` and their halo are read from,
/// as `(first, end)`.
fn span(start: u32, len: u32, halo: u32, size: u32) -> (u32, u32) {
    let from = i64::from(start) - i64::from(halo);
    let to = i64::from(start) + i64::from(len) + i64::from(halo);
    let (mut first, mut last) = (u32::MAX, 0);
    for i in from..to {
        let at = reflect101(i, size);
        first = first.min(at);
        last = last.max(at);
    }
    (first, last + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::noise::Xorshift64;

    #[test]
    fn regions_equal_crops_of_the_whole_frame() {
        let dir = tempfile::tempdir().unwrap();
        for channels in [Channels::Rgb, Channels::Rgba] {
            let (w, h) = (37, 23);
            let mut noise = Xorshift64::new(7);
            let samples: Vec<u8> = (0..Frame::len_of(w, h, channels)).map(|_| noise.next_u64() as u8).collect();
            let frame = Frame::with_channels(w, h, channels, samples);
            let raster = Raster::create(&dir.path().join("pixels"), (w, h), channels).unwrap();
            // Written in two pieces, as a decoder's bands come.
            let split = 9 * w as usize * channels.count();
            raster.write_rows(0, &frame.pixels[..split]).unwrap();
            raster.write_rows(9, &frame.pixels[split..]).unwrap();
            for (rect, halo) in [
                (Rect { x: 0, y: 0, width: 16, height: 16 }, 5),
                (Rect { x: 16, y: 16, width: 16, height: 7 }, 5),
                (Rect { x: 32, y: 0, width: 5, height: 16 }, 30),
                (Rect { x: 0, y: 0, width: w, height: h }, 0),
                (Rect { x: 3, y: 4, width: 1, height: 1 }, 1),
            ] {
                assert_eq!(raster.region(rect, halo).unwrap(), frame.crop_with_halo(rect, halo), "{rect:?} {halo}");
            }
        }
    }
}
