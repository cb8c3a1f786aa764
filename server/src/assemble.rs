//! A job's result, encoded from its tile files. PNG is streamed one band of
//! tiles at a time (a row of tiles of memory, not the image); JPEG and WebP
//! encoders want the whole image, so those results are assembled first.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use app::api::Output;
use pipeline::{Frame, TileGrid};

/// Writes `grid`'s image, from the tiles' raw RGB files, to `out` as `output`.
pub fn write(output: Output, grid: &TileGrid, tile_path: impl Fn(u32) -> PathBuf, out: &Path) -> anyhow::Result<()> {
    if output == Output::Png {
        return write_png(grid, tile_path, out);
    }
    let mut image = Frame::black(grid.width, grid.height);
    for (t, rect) in grid.tiles() {
        image.paste(rect.x, rect.y, &Frame::new(rect.width, rect.height, read_tile(&tile_path(t), rect)?));
    }
    let file = std::io::BufWriter::new(std::fs::File::create(out)?);
    match output {
        Output::Png => unreachable!("streamed above"),
        // jpeg-encoder: about 2.3x faster than image's encoder here (AVX2).
        Output::Jpeg { quality } => {
            let (width, height) = (u16::try_from(grid.width)?, u16::try_from(grid.height)?);
            jpeg_encoder::Encoder::new(file, quality).encode(
                &image.pixels,
                width,
                height,
                jpeg_encoder::ColorType::Rgb,
            )?;
        }
        Output::Webp => image::codecs::webp::WebPEncoder::new_lossless(file).encode(
            &image.pixels,
            grid.width,
            grid.height,
            image::ExtendedColorType::Rgb8,
        )?,
    }
    Ok(())
}

/// Fast deflate with adaptive filters: ~10x faster than the default level for
/// a slightly larger file.
fn write_png(grid: &TileGrid, tile_path: impl Fn(u32) -> PathBuf, out: &Path) -> anyhow::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(out)?);
    let mut encoder = png::Encoder::new(file, grid.width, grid.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    encoder.set_filter(png::Filter::Adaptive);
    let mut writer = encoder.write_header()?.into_stream_writer()?;
    let mut tiles = grid.tiles().peekable();
    while let Some((first, top)) = tiles.next() {
        // The band: every tile in this row of tiles, left to right.
        let mut band = vec![(top, read_tile(&tile_path(first), top)?)];
        while let Some((t, rect)) = tiles.next_if(|(_, r)| r.y == top.y) {
            band.push((rect, read_tile(&tile_path(t), rect)?));
        }
        for row in 0..top.height as usize {
            for (rect, pixels) in &band {
                let stride = rect.width as usize * 3;
                writer.write_all(&pixels[row * stride..][..stride])?;
            }
        }
    }
    writer.finish()?;
    Ok(())
}

fn read_tile(path: &Path, rect: pipeline::Rect) -> anyhow::Result<Vec<u8>> {
    let pixels = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(pixels.len() == Frame::byte_len(rect.width, rect.height), "{} is not a whole tile", path.display());
    Ok(pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth image (JPEG's best case) cut into tiles on disk.
    fn tiles_on_disk(dir: &Path) -> (Frame, TileGrid) {
        let (w, h) = (37, 23);
        let pixels = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [(x * 6) as u8, (y * 10) as u8, ((x + y) * 4) as u8]))
            .collect();
        let image = Frame::new(w, h, pixels);
        let grid = TileGrid::new(w, h, 16);
        for (t, rect) in grid.tiles() {
            std::fs::write(dir.join(format!("{t}.rgb")), image.crop(rect).pixels).unwrap();
        }
        (image, grid)
    }

    #[test]
    fn every_format_holds_the_whole_image() {
        let dir = tempfile::tempdir().unwrap();
        let (image, grid) = tiles_on_disk(dir.path());
        let path = |t: u32| dir.path().join(format!("{t}.rgb"));
        for output in [Output::Png, Output::Webp, Output::Jpeg { quality: 95 }] {
            let out = dir.path().join(format!("result.{}", output.extension()));
            write(output, &grid, path, &out).unwrap();
            let bytes = std::fs::read(&out).unwrap();
            assert_eq!(image::guess_format(&bytes).unwrap().to_mime_type(), output.mime());
            let decoded = image::load_from_memory(&bytes).unwrap().into_rgb8();
            assert_eq!(decoded.dimensions(), (37, 23), "{output:?}");
            let worst = decoded.as_raw().iter().zip(&image.pixels).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
            let allowed = if output == (Output::Jpeg { quality: 95 }) { 12 } else { 0 };
            assert!(worst <= allowed, "{output:?}: {worst} levels off");
        }
    }

    #[test]
    fn a_damaged_tile_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (_, grid) = tiles_on_disk(dir.path());
        let path = |t: u32| dir.path().join(format!("{t}.rgb"));
        std::fs::write(path(4), [1, 2, 3]).unwrap();
        for output in [Output::Png, Output::Webp] {
            let error = write(output, &grid, path, &dir.path().join("out")).unwrap_err().to_string();
            assert!(error.contains("not a whole tile"), "{error}");
        }
    }
}
