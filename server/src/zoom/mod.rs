//! A done job's result to explore at full resolution: a Deep Zoom pyramid
//! ([`pyramid`]) built from the result file on first request, in the
//! background, in one bounded pass: a PNG or a TIFF read a row at a time,
//! a baseline JPEG cut into bands losslessly and each band decoded, any
//! other image decoded whole under the memory budget. Kept beside the
//! job's files (`zoom/`), so it goes when the job does.

pub mod pyramid;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use app::api::{Output, Zoom};
use pipeline::Channels;
use pipeline::jpeg::{Jpeg, McuRect};
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::error::{AppError, AppResult};
use crate::intake::{self, Plan};
use pyramid::{Pyramid, TileFormat};

/// Where the pyramid's description lies in its directory.
const DESCRIPTION: &str = "zoom.json";
/// Rows of a JPEG decoded at once.
const JPEG_BAND: u32 = 256;

/// The pyramids being built, by job, and what building one takes.
pub struct Zooms {
    builds: Arc<Mutex<HashMap<String, Arc<Build>>>>,
    needs: Needs,
}

/// What a build takes from the server: disk above its floor, its share of
/// the memory budget, and a stop when the server shuts down.
#[derive(Clone)]
pub struct Needs {
    /// The data directory and the free space it must keep (see [`crate::disk`]).
    pub disk: (PathBuf, u64),
    pub admission: Arc<Admission>,
    pub shutdown: CancellationToken,
}

#[derive(Default)]
struct Build {
    /// Thousandths of the result read.
    progress: AtomicU32,
    failed: Mutex<Option<AppError>>,
}

impl Zooms {
    pub fn new(needs: Needs) -> Self {
        Zooms { builds: Arc::default(), needs }
    }

    /// Job `id`'s pyramid in `dir` of its `result`: its description once it
    /// is built; else how far its build has come, starting it if none runs.
    /// A build that failed is reported once, and tried again on the next call.
    pub async fn status(&self, id: &str, (result, dir): (PathBuf, PathBuf)) -> AppResult<Zoom> {
        if let Ok(bytes) = tokio::fs::read(dir.join(DESCRIPTION)).await {
            return Ok(serde_json::from_slice(&bytes).context("reading a pyramid's description")?);
        }
        let build = {
            let mut builds = self.builds.lock().expect("lock");
            if let Some(build) = builds.get(id) {
                let failed = build.failed.lock().expect("lock").take();
                if let Some(error) = failed {
                    builds.remove(id);
                    return Err(error);
                }
                return Ok(Zoom::Building { progress: build.progress.load(Ordering::Relaxed) as f32 / 1000.0 });
            }
            let build = Arc::new(Build::default());
            builds.insert(id.to_owned(), Arc::clone(&build));
            build
        };
        let (needs, builds, id) = (self.needs.clone(), Arc::clone(&self.builds), id.to_owned());
        tokio::spawn(async move {
            match run(&needs, &result, &dir, &build).await {
                Ok(()) => {
                    tracing::info!(job = %id, "zoomable pyramid built");
                    // The description on disk answers from now on.
                    builds.lock().expect("lock").remove(&id);
                }
                Err(e) => {
                    tracing::warn!(job = %id, error = %e, "building a zoomable pyramid");
                    *build.failed.lock().expect("lock") = Some(e);
                }
            }
        });
        Ok(Zoom::Building { progress: 0.0 })
    }
}

async fn run(needs: &Needs, result: &Path, dir: &Path, build: &Arc<Build>) -> AppResult<()> {
    // Tiles add a fraction of the result's size on disk, as uploads do.
    crate::disk::ensure_free(needs.disk.0.clone(), needs.disk.1).await?;
    let (admission, stop) = (&needs.admission, &needs.shutdown);
    let path = result.to_owned();
    let (info, plan) =
        tokio::task::spawn_blocking(move || intake::inspect_stored(&path)).await.map_err(anyhow::Error::from)??;
    let reader = match &plan {
        Plan::Cut(layout) => u64::from(layout.width) * u64::from(JPEG_BAND + 4 * layout.mcu_height) * 3 * 3,
        Plan::Rows(reader) => *reader,
        Plan::Whole => intake::memory_needed(&info, &Plan::Whole, 1, 0, Output::Png),
    };
    let memory = reader + pyramid::memory(info.width, Channels::Rgba);
    let refusal = "this result is too large to explore within the server's memory budget; download it instead";
    let _memory = admission.reserve_or_refuse(memory, refusal).await?;
    let _turn = admission.decoder().await;
    let (result, dir, progress, stop) = (result.to_owned(), dir.to_owned(), Arc::clone(build), stop.clone());
    tokio::task::spawn_blocking(move || write(&result, &dir, plan, info, &progress.progress, &stop))
        .await
        .map_err(anyhow::Error::from)?
}

/// Blocking: writes the pyramid of the image at `result` into `dir`,
/// through `dir.partial` (so a pyramid that is there is whole).
fn write(
    result: &Path,
    dir: &Path,
    plan: Plan,
    info: intake::ImageInfo,
    progress: &AtomicU32,
    stop: &CancellationToken,
) -> AppResult<()> {
    let partial = dir.with_extension("partial");
    match std::fs::remove_dir_all(&partial) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(anyhow::Error::from(e).into()),
        _ => {}
    }
    let (width, height) = (info.width, info.height);
    let mut rows_done = 0u32;
    let open = |channels: Channels| -> anyhow::Result<Pyramid> {
        Pyramid::create(&partial, (width, height), channels, TileFormat::for_channels(channels))
    };
    let mut push = |pyramid: &mut Pyramid, row: &[u8]| -> anyhow::Result<()> {
        anyhow::ensure!(!stop.is_cancelled(), "the server is shutting down");
        pyramid.push(row)?;
        rows_done += 1;
        progress.store((u64::from(rows_done) * 1000 / u64::from(height)) as u32, Ordering::Relaxed);
        Ok(())
    };
    let channels = match plan {
        Plan::Cut(_) => {
            let mut pyramid = open(Channels::Rgb)?;
            jpeg_rows(result, |row| push(&mut pyramid, row))?;
            pyramid.finish()?;
            Channels::Rgb
        }
        Plan::Rows(_) => {
            let mut rows = crate::rows::open(result, info.format)?
                .ok_or_else(|| anyhow::anyhow!("the result can no longer be read by rows"))?;
            let channels = if rows.has_alpha() { Channels::Rgba } else { Channels::Rgb };
            let mut pyramid = open(channels)?;
            let mut row = Vec::new();
            while rows.next_row(channels, &mut row)? {
                push(&mut pyramid, &row)?;
            }
            pyramid.finish()?;
            channels
        }
        Plan::Whole => {
            let frame = intake::decode_file(result, info)?;
            let mut pyramid = open(frame.channels)?;
            for row in frame.pixels.chunks_exact(width as usize * frame.channels.count()) {
                push(&mut pyramid, row)?;
            }
            pyramid.finish()?;
            frame.channels
        }
    };
    complete(&partial, dir, (width, height), channels)?;
    Ok(())
}

/// Blocking: describes the pyramid written in `partial` and puts it in place.
fn complete(partial: &Path, dir: &Path, (width, height): (u32, u32), channels: Channels) -> anyhow::Result<()> {
    let description = Zoom::Ready {
        width,
        height,
        tile_size: pyramid::TILE,
        overlap: pyramid::OVERLAP,
        format: TileFormat::for_channels(channels).extension().to_owned(),
    };
    std::fs::write(partial.join(DESCRIPTION), serde_json::to_vec(&description)?)?;
    std::fs::rename(partial, dir).with_context(|| format!("renaming {}", partial.display()))
}

/// Blocking: the rows of the baseline JPEG at `path`, exactly as decoding it
/// whole gives them, a band at a time: each band is cut from the file
/// losslessly with an MCU more on each side (what chroma upsampling reads)
/// and decoded alone.
fn jpeg_rows(path: &Path, mut each: impl FnMut(&[u8]) -> anyhow::Result<()>) -> AppResult<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut file = std::io::BufReader::with_capacity(64 * 1024, file);
    let jpeg = Jpeg::read(&mut file).map_err(|e| intake::corrupt_jpeg(&e))?;
    let layout = jpeg.layout();
    let (width, height) = (layout.width, layout.height);
    let bands: Vec<(u32, u32)> =
        (0..height).step_by(JPEG_BAND as usize).map(|y| (y, (y + JPEG_BAND).min(height))).collect();
    let wanted: Vec<McuRect> =
        bands.iter().map(|&(y0, y1)| layout.covering((0, i64::from(y0), i64::from(width), i64::from(y1)))).collect();
    let mut failed = None;
    jpeg.split(file, &wanted, |i, crop| {
        let mut band = || -> anyhow::Result<()> {
            anyhow::ensure!(crop.x == 0 && crop.width == width, "a band narrower than the image");
            let frame = pipeline::jpeg::decode(&crop.bytes, crop.width, crop.height)?;
            let line = width as usize * Channels::Rgb.count();
            let (y0, y1) = bands[i];
            for y in y0..y1 {
                let at = (y - crop.y) as usize * line;
                each(&frame.pixels[at..at + line])?;
            }
            Ok(())
        };
        band().map_err(|e| failed = Some(e)).is_ok()
    })
    .map_err(|e| intake::corrupt_jpeg(&e))?;
    failed.map_or(Ok(()), |e| Err(e.into()))
}

/// The file of the pyramid tile a request names `{level}` and
/// `{column}_{row}.{jpg|png}`, and its format; `None` unless every part
/// parses, so no path is ever built from the request's own text.
pub fn tile_file(dir: &Path, level: &str, tile: &str) -> Option<(PathBuf, TileFormat)> {
    let level: u32 = level.parse().ok()?;
    let (name, extension) = tile.split_once('.')?;
    let (column, row) = name.split_once('_')?;
    let format = TileFormat::from_extension(extension)?;
    let (column, row): (u32, u32) = (column.parse().ok()?, row.parse().ok()?);
    let name = format!("{column}_{row}.{}", format.extension());
    Some((dir.join(level.to_string()).join(name), format))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_names_parse_strictly() {
        let dir = Path::new("/z");
        assert_eq!(tile_file(dir, "12", "3_4.jpg"), Some((dir.join("12/3_4.jpg"), TileFormat::Jpeg)));
        assert_eq!(tile_file(dir, "0", "0_0.png"), Some((dir.join("0/0_0.png"), TileFormat::Png)));
        for (level, tile) in [
            ("x", "0_0.jpg"),
            ("1", "0_0.gif"),
            ("1", "0-0.jpg"),
            ("1", "../0_0.jpg"),
            ("1", "0_0"),
            ("-1", "0_0.jpg"),
            ("1", "0_1_2.jpg"),
        ] {
            assert_eq!(tile_file(dir, level, tile), None, "{level}/{tile}");
        }
    }

    /// A JPEG read by bands gives the rows of decoding it whole, bit for bit.
    #[test]
    fn a_jpeg_by_bands_is_the_whole_decode() {
        let (w, h) = (700u32, 1000u32);
        let pixels: Vec<u8> =
            (0..h).flat_map(|y| (0..w).flat_map(move |x| [(x * 3 + y) as u8, (y / 3) as u8, (x ^ y) as u8])).collect();
        for sampling in [jpeg_encoder::SamplingFactor::F_2_2, jpeg_encoder::SamplingFactor::F_1_1] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("a.jpg");
            let mut encoder = jpeg_encoder::Encoder::new_file(&path, 90).unwrap();
            encoder.set_sampling_factor(sampling);
            encoder.encode(&pixels, w as u16, h as u16, jpeg_encoder::ColorType::Rgb).unwrap();
            let whole = image::open(&path).unwrap().to_rgb8().into_raw();
            let mut rows = Vec::new();
            jpeg_rows(&path, |row| {
                rows.extend_from_slice(row);
                Ok(())
            })
            .unwrap();
            assert!(rows == whole, "{sampling:?}: the bands differ from the whole decode");
        }
    }
}
