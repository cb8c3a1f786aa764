//! Uploads: a job's image checked, admitted under the budgets and started,
//! or answered from the cache; and a failed job run again.

use std::time::Duration;

use app::api::{Job, JobStatus, Output};
use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use pipeline::{Operation, ops};

use super::job_id;
use crate::admission::Backlog;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::intake::{self, Plan, Source};
use crate::jobs::Submission;
use crate::state::AppState;
use crate::upload::{self, multipart_error};

/// `POST /api/jobs`: a multipart form with the image in a file field (any
/// name, conventionally `image`) and optionally `ops`, a JSON array of
/// operations, `format` and `quality` (see [`output`]). Answers 201 with the
/// job as soon as it is recorded.
pub(super) async fn create_job(
    State(state): State<AppState>,
    form: Result<Multipart, MultipartRejection>,
) -> AppResult<(StatusCode, Json<Job>)> {
    let mut form = form.map_err(|e| AppError::client(e.status(), ErrorCode::BadMultipart, e.body_text()))?;
    // Refused before the body is written to disk, not after; still read
    // (and dropped, bounded), so the client gets the answer, not a broken pipe.
    if let Err(refused) = crate::disk::ensure_free(state.config.data_dir.clone(), state.config.min_free_disk).await {
        drain(&mut form, state.config.max_upload_bytes).await;
        return Err(refused);
    }
    let limits = state.config.limits();
    let mut image: Option<(String, upload::Upload)> = None;
    let mut chain = vec![Operation::default()];
    let (mut format, mut quality, mut batch) = (None, None, None);
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        if field.name() == Some("ops") {
            let text = field.text().await.map_err(multipart_error)?;
            chain = serde_json::from_str(&text).map_err(|e| {
                let message = format!("ops is not a valid operation list: {e}");
                AppError::client(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidOps, message)
            })?;
        } else if field.name() == Some("format") {
            format = Some(field.text().await.map_err(multipart_error)?);
        } else if field.name() == Some("quality") {
            quality = Some(field.text().await.map_err(multipart_error)?);
        } else if field.name() == Some("batch") {
            let id = field.text().await.map_err(multipart_error)?;
            batch = Some(crate::batches::existing(&state, &id).await?.0);
        } else if let Some(name) = field.file_name().map(str::to_owned) {
            match upload::receive(field, &upload::dir(&state.config.data_dir), limits).await {
                Ok(file) => image = Some((name, file)),
                // Refused from its first bytes: the rest is still read (and
                // dropped, bounded), so the client gets the answer, not a
                // broken pipe while it sends.
                Err(refused @ AppError::Client { status, .. }) if status != StatusCode::REQUEST_TIMEOUT => {
                    drain(&mut form, state.config.max_upload_bytes).await;
                    return Err(refused);
                }
                Err(failed) => return Err(failed),
            }
        }
    }
    let (filename, file) =
        image.ok_or_else(|| AppError::bad_request(ErrorCode::MissingImage, "the form has no image file field"))?;
    ops::validate_chain(&chain)
        .map_err(|e| AppError::client(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidOps, e.to_string()))?;
    // The client's file name is shown, never used as a path.
    let filename: String = filename.chars().filter(|c| !c.is_control()).take(200).collect();
    let choose = |info: &intake::ImageInfo| output(format.as_deref(), quality.as_deref(), info);
    let job = admit(&state, file, filename, chain, choose, batch).await?;
    Ok((StatusCode::CREATED, Json(job)))
}

/// Checks an image on disk and starts its job (or answers it from the
/// cache): the common path of an upload and of a job run again.
async fn admit(
    state: &AppState,
    file: upload::Upload,
    filename: String,
    chain: Vec<Operation>,
    choose_output: impl FnOnce(&intake::ImageInfo) -> AppResult<Output>,
    batch: Option<String>,
) -> AppResult<Job> {
    let limits = state.config.limits();
    // Sniffing reads headers and metadata chunks through third-party
    // decoders: off the async threads, like the decode.
    let (file, info) =
        tokio::task::spawn_blocking(move || intake::inspect_file(file.path(), limits).map(|i| (file, i)))
            .await
            .map_err(anyhow::Error::from)??;
    let output = choose_output(&info)?;
    // The same bytes, operations and output as a done job: its result, at once.
    let cache_key = crate::cache::key(&file.sha256, &chain, output);
    let cached = state.store.cached(&cache_key).await?;
    let mut request = Submission { file, filename, info, ops: chain, output, cache_key, memory: None, batch_id: batch };
    if let Some(source) = cached {
        match state.jobs.answer_from_cache(request, &source).await? {
            Ok(job) => return Ok(job),
            Err(back) => request = back, // its result went meanwhile: the job runs
        }
    }
    let backlog =
        Backlog { max_active_jobs: state.config.max_active_jobs, max_queued_tiles: state.config.max_queued_tiles };
    let tile_size = state.config.tile_size;
    let tiles = u64::from(pipeline::TileGrid::new(info.width, info.height, tile_size).len());
    let path = request.file.path().to_owned();
    let plan = tokio::task::spawn_blocking(move || intake::plan(&path, info)).await.map_err(anyhow::Error::from)??;
    let halo = ops::chain_halo(&request.ops);
    let memory = intake::memory_needed(&info, &plan, tile_size, halo, output);
    let mut ticket = state.admission.admit(&state.store, backlog, tiles, memory).await?;
    request.memory = ticket.reservation();
    let input = prepare(state, request.file.path(), info, plan).await?;
    let (job, scan) = state.jobs.submit(request, input).await?;
    // Recorded: the store counts the job now, so the ticket must not too
    // (while the scan below is read, other uploads would see it twice).
    drop(ticket);
    // The tiles of a JPEG or a PNG read by rows are already being sent; the
    // file must read to the end before the upload counts as accepted.
    if let Some(scan) = scan
        && let Ok(Err(refusal)) = scan.await
    {
        state.jobs.cancel(&job.id).await?;
        state.jobs.delete(&job.id).await?;
        return Err(refusal);
    }
    Ok(job)
}

/// Reads an admitted upload through before it is answered, so that a file
/// whose header passes but whose pixels are cut short or corrupt is a 4xx,
/// not a failed job later: decoded whole here (one decode at a time), or
/// (a JPEG to cut, a PNG read by rows) as its tiles are sent. Returns the
/// job's source and how long this took.
async fn prepare(
    state: &AppState,
    path: &std::path::Path,
    info: intake::ImageInfo,
    plan: Plan,
) -> AppResult<(Source, Duration)> {
    if let Plan::Cut(layout) = plan {
        return Ok((Source::Jpeg(layout), Duration::ZERO));
    }
    let _turn = state.admission.decoder().await;
    let path = path.to_owned();
    let prepared = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        intake::prepare_file(&path, info, plan).map(|source| (source, started.elapsed()))
    });
    prepared.await.map_err(anyhow::Error::from)?
}

/// `POST /api/jobs/{id}/retry`: runs a failed or cancelled job again from its
/// stored input, as a new job with the same operations, output and batch,
/// and deletes the old one. `201` with the new job.
pub(super) async fn retry_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> AppResult<(StatusCode, Json<Job>)> {
    let id = job_id(&id)?;
    let old = state.store.job(&id).await?.ok_or_else(|| AppError::not_found("job"))?;
    if !matches!(old.status, JobStatus::Failed | JobStatus::Cancelled) {
        let message = format!("the job is {}; only failed or cancelled jobs are run again", old.status.as_str());
        return Err(AppError::client(StatusCode::CONFLICT, ErrorCode::NotFailed, message));
    }
    let input = state.jobs.input_path(&id).await.ok_or_else(|| AppError::not_found("input file"))?;
    let file = upload::copy(&input, &upload::dir(&state.config.data_dir)).await?;
    let job =
        admit(&state, file, old.filename.clone(), old.ops.clone(), |_| Ok(old.output), old.batch_id.clone()).await?;
    state.jobs.delete(&id).await?;
    Ok((StatusCode::CREATED, Json(job)))
}

/// Reads and drops what is left of a refused form: at most `limit` bytes,
/// for at most two seconds (as `http::drain` does for other refusals).
async fn drain(form: &mut Multipart, limit: usize) {
    let read = async {
        let mut read = 0;
        while let Ok(Some(mut field)) = form.next_field().await {
            while let Ok(Some(chunk)) = field.chunk().await {
                read += chunk.len();
                if read > limit {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), read).await;
}

/// The result's encoding, from the form's `format`: `same` (the default:
/// a PNG, JPEG, WebP or TIFF input keeps its format, others become PNG),
/// `png`, `jpeg`, `webp` (lossless) or `tiff` (tiled, lossless); and
/// `quality`, for JPEG, 1..=100 (default 90).
fn output(format: Option<&str>, quality: Option<&str>, input: &intake::ImageInfo) -> AppResult<Output> {
    let invalid =
        |message: String| AppError::client(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidOutput, message);
    let shown = |text: &str| text.chars().take(40).collect::<String>();
    let quality = match quality.map(str::trim) {
        None | Some("") => Output::JPEG_QUALITY,
        Some(q) => q
            .parse()
            .ok()
            .filter(|q| (1..=100).contains(q))
            .ok_or_else(|| invalid(format!("quality must be within 1..=100, got {}", shown(q))))?,
    };
    let output = match format.map(str::trim).unwrap_or("same") {
        "png" => Output::Png,
        "jpeg" | "jpg" => Output::Jpeg { quality },
        "webp" => Output::Webp,
        "tiff" | "tif" => Output::Tiff,
        "same" | "" => match input.format {
            image::ImageFormat::Jpeg => Output::Jpeg { quality },
            image::ImageFormat::WebP => Output::Webp,
            image::ImageFormat::Tiff => Output::Tiff,
            _ => Output::Png,
        },
        other => return Err(invalid(format!("format must be same, png, jpeg, webp or tiff, got {}", shown(other)))),
    };
    if input.width.max(input.height) > output.max_dimension() {
        return Err(invalid(format!(
            "{} holds at most {} pixels on a side and this image is {}x{}; choose png",
            output.extension(),
            output.max_dimension(),
            input.width,
            input.height
        )));
    }
    Ok(output)
}
