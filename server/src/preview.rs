//! Previews: a job's input or result at most [`MAX_SIDE`] px on its long
//! side, as a JPEG, so that a page never downloads a gigapixel image to show
//! it. Each is made in one pass over the file: a large baseline JPEG from
//! its DC coefficients (an eighth of its size, without an inverse DCT), a
//! PNG or a TIFF a row at a time (see [`crate::rows`]); any other image is
//! decoded whole, under the memory budget. Made on first request, and kept
//! beside the job's files.

use std::path::{Path, PathBuf};

use app::api::Output;
use pipeline::shrink::Shrinker;
use pipeline::{Channels, Frame};

use crate::error::AppResult;
use crate::intake::{self, ImageInfo, Plan};
use crate::state::AppState;

/// The long side of a preview, at most: a screen's worth.
pub const MAX_SIDE: u32 = 2048;

/// The preview of the image at `image`, made at `preview` if it is not
/// there yet (files that are there are complete: written, then renamed).
pub async fn ensure(state: &AppState, image: PathBuf, preview: PathBuf) -> AppResult<()> {
    if tokio::fs::try_exists(&preview).await.unwrap_or(false) {
        return Ok(());
    }
    let _turn = state.admission.decoder().await;
    let path = image.clone();
    let streamed = tokio::task::spawn_blocking(move || -> AppResult<_> {
        let (info, plan) = intake::inspect_stored(&path)?;
        Ok((info, streamed(&path, &plan)?))
    })
    .await
    .map_err(anyhow::Error::from)??;
    let frame = match streamed {
        (_, Some(frame)) => frame,
        (info, None) => {
            // Decoded whole: its share of the budget first, as a job's.
            let memory = intake::memory_needed(&info, &Plan::Whole, 1, 0, Output::Png);
            let refusal = "this image is too large to preview within the server's memory budget; download it instead";
            let _memory = state.admission.reserve_or_refuse(memory, refusal).await?;
            tokio::task::spawn_blocking(move || whole(&image, info)).await.map_err(anyhow::Error::from)??
        }
    };
    tokio::task::spawn_blocking(move || write(&frame, &preview)).await.map_err(anyhow::Error::from)??;
    Ok(())
}

/// The preview made in one bounded pass, or `None` if the image must be
/// decoded whole.
fn streamed(path: &Path, plan: &Plan) -> AppResult<Option<Frame>> {
    match plan {
        // An eighth is at least 1024 px: smaller ones are cheap to decode.
        Plan::Cut(layout) if layout.width.max(layout.height) >= 8 * 1024 => {
            let file = std::fs::File::open(path).map_err(anyhow::Error::from)?;
            let mut file = std::io::BufReader::with_capacity(64 * 1024, file);
            let jpeg = pipeline::jpeg::Jpeg::read(&mut file).map_err(|e| intake::corrupt_jpeg(&e))?;
            let mut shrinker =
                Shrinker::new((jpeg.width.div_ceil(8), jpeg.height.div_ceil(8)), Channels::Rgb, MAX_SIDE);
            match jpeg.dc_rows(file, |row| shrinker.push(row)) {
                Ok(()) => Ok(Some(shrinker.finish())),
                // CMYK, say: the decoder knows how.
                Err(pipeline::jpeg::JpegError::Unsupported(_)) => Ok(None),
                Err(e) => Err(intake::corrupt_jpeg(&e)),
            }
        }
        Plan::Rows(_) => {
            let format = image::ImageFormat::from_path(path).map_err(anyhow::Error::from)?;
            let mut rows = crate::rows::open(path, format)?
                .ok_or_else(|| anyhow::anyhow!("the file can no longer be read by rows"))?;
            let channels = if rows.has_alpha() { Channels::Rgba } else { Channels::Rgb };
            let mut shrinker = Shrinker::new(rows.size(), channels, MAX_SIDE);
            let mut row = Vec::new();
            while rows.next_row(channels, &mut row)? {
                shrinker.push(&row);
            }
            Ok(Some(shrinker.finish()))
        }
        Plan::Cut(_) | Plan::Whole => Ok(None),
    }
}

fn whole(path: &Path, info: ImageInfo) -> AppResult<Frame> {
    let frame = intake::decode_file(path, info)?;
    let mut shrinker = Shrinker::new((frame.width, frame.height), frame.channels, MAX_SIDE);
    let line = frame.width as usize * frame.channels.count();
    for row in frame.pixels.chunks_exact(line) {
        shrinker.push(row);
    }
    Ok(shrinker.finish())
}

/// Writes `frame` (RGBA over white) as a JPEG at `path`, atomically.
fn write(frame: &Frame, path: &Path) -> anyhow::Result<()> {
    use image::ImageEncoder;
    let rgb = match frame.channels {
        Channels::Rgb => std::borrow::Cow::Borrowed(&frame.pixels),
        Channels::Rgba => std::borrow::Cow::Owned(pipeline::frame::on_white(&frame.pixels)),
    };
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85).write_image(
        &rgb,
        frame.width,
        frame.height,
        image::ExtendedColorType::Rgb8,
    )?;
    let partial = path.with_extension("partial");
    std::fs::write(&partial, &bytes)?;
    std::fs::rename(&partial, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo(w: u32, h: u32) -> Frame {
        Frame::new(w, h, (0..h).flat_map(|y| (0..w).flat_map(move |x| [(x / 40) as u8, (y / 40) as u8, 90])).collect())
    }

    fn jpeg(image: &Frame) -> Vec<u8> {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .encode(&image.pixels, image.width, image.height, image::ExtendedColorType::Rgb8)
            .unwrap();
        jpeg
    }

    /// The preview of each kind of file is the image, shrunk to fit.
    #[test]
    fn every_kind_of_file_gives_a_preview_that_fits() {
        let dir = tempfile::tempdir().unwrap();
        let image = photo(4100, 1000);
        let png = pipeline::codec::encode_png(&image);
        let mut bmp = Vec::new();
        image::RgbImage::from_raw(4100, 1000, image.pixels.clone())
            .unwrap()
            .write_to(&mut std::io::Cursor::new(&mut bmp), image::ImageFormat::Bmp)
            .unwrap();
        let cases = [("wide.jpg", jpeg(&photo(8200, 200))), ("a.jpg", jpeg(&image)), ("a.png", png), ("a.bmp", bmp)];
        for (name, bytes) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let info = intake::inspect_file(&path, intake::CHECKED).unwrap();
            let plan = intake::plan(&path, info).unwrap();
            let frame = match streamed(&path, &plan).unwrap() {
                Some(frame) => frame,
                None => whole(&path, info).unwrap(),
            };
            // A wide JPEG's DC image (an eighth) fits; the others shrink by 3.
            let expected = if name == "wide.jpg" { (1025, 25) } else { (1367, 334) };
            assert_eq!((frame.width, frame.height), expected, "{name}");
            // Blue is 90 everywhere; red grows to the right.
            let at = |x: u32| &frame.pixels[(x * 3) as usize..(x * 3 + 3) as usize];
            assert!(at(0)[2].abs_diff(90) <= 3 && at(frame.width - 1)[0] > 90, "{name}: {:?}", at(frame.width - 1));
            let out = dir.path().join(format!("{name}.preview.jpg"));
            write(&frame, &out).unwrap();
            let back = image::open(&out).unwrap();
            assert_eq!((back.width(), back.height()), expected);
        }
    }
}
