//! The JSON API, nested under `/api`.

use std::time::Duration;

use app::api::{Job, JobStatus, Output, Stats, Tile, Worker};
use axum::Json;
use axum::Router;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use pipeline::{Operation, ops};
use tower::ServiceExt;

use crate::admission::Backlog;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::intake::{self, Plan, Source};
use crate::jobs::Submission;
use crate::sse;
use crate::state::AppState;
use crate::upload::{self, multipart_error};
use plumbing::now_ms;

pub fn router(max_upload_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/jobs", post(create_job).layer(DefaultBodyLimit::max(max_upload_bytes)).get(list_jobs))
        .route("/jobs/{id}", get(get_job).delete(delete_job))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/jobs/{id}/retry", post(retry_job))
        .route("/jobs/{id}/tiles", get(job_tiles))
        .route("/jobs/{id}/result", get(job_result))
        .route("/jobs/{id}/input", get(job_input))
        .route("/jobs/{id}/preview/{which}", get(job_preview))
        .route("/jobs/{id}/zoom", get(job_zoom))
        .route("/jobs/{id}/zoom/{level}/{tile}", get(zoom_tile))
        .route("/workers", get(list_workers))
        .route("/stats", get(stats))
        .route("/limits", get(limits))
        .route("/events", get(sse::stream))
        .merge(crate::batches::router())
        .fallback(|| async { AppError::not_found("API route") })
}

/// `POST /api/jobs`: a multipart form with the image in a file field (any
/// name, conventionally `image`) and optionally `ops`, a JSON array of
/// operations, `format` and `quality` (see [`output`]). Answers 201 with the
/// job as soon as it is recorded.
async fn create_job(
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
async fn retry_job(State(state): State<AppState>, Path(id): Path<String>) -> AppResult<(StatusCode, Json<Job>)> {
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

async fn list_jobs(State(state): State<AppState>) -> AppResult<Json<Vec<Job>>> {
    Ok(Json(state.store.jobs(200).await?))
}

/// Job ids are UUIDs; anything else is refused before it reaches a query or a path.
fn job_id(id: &str) -> AppResult<String> {
    uuid::Uuid::parse_str(id).map(|u| u.to_string()).map_err(|_| AppError::not_found("job"))
}

async fn get_job(State(state): State<AppState>, Path(id): Path<String>) -> AppResult<Json<Job>> {
    let id = job_id(&id)?;
    state.store.job(&id).await?.map(Json).ok_or_else(|| AppError::not_found("job"))
}

/// `POST /api/jobs/{id}/cancel`: stops a queued or running job.
async fn cancel_job(State(state): State<AppState>, Path(id): Path<String>) -> AppResult<Json<Job>> {
    let id = job_id(&id)?;
    let job = state.store.job(&id).await?.ok_or_else(|| AppError::not_found("job"))?;
    if !state.jobs.cancel(&id).await? {
        return Err(AppError::client(
            StatusCode::CONFLICT,
            ErrorCode::AlreadyFinished,
            format!("the job is already {}", job.status.as_str()),
        ));
    }
    Ok(Json(state.store.job(&id).await?.ok_or_else(|| AppError::not_found("job"))?))
}

/// `DELETE /api/jobs/{id}`: removes a finished job's rows and files.
async fn delete_job(State(state): State<AppState>, Path(id): Path<String>) -> AppResult<StatusCode> {
    let id = job_id(&id)?;
    let job = state.store.job(&id).await?.ok_or_else(|| AppError::not_found("job"))?;
    if !job.status.is_finished() {
        return Err(AppError::client(
            StatusCode::CONFLICT,
            ErrorCode::StillRunning,
            format!("the job is {}; cancel it before deleting it", job.status.as_str()),
        ));
    }
    state.jobs.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn job_tiles(State(state): State<AppState>, Path(id): Path<String>) -> AppResult<Json<Vec<Tile>>> {
    let id = job_id(&id)?;
    state.store.job(&id).await?.ok_or_else(|| AppError::not_found("job"))?;
    Ok(Json(state.store.tiles(&id).await?))
}

async fn job_result(State(state): State<AppState>, Path(id): Path<String>, request: Request) -> AppResult<Response> {
    let id = job_id(&id)?;
    let job = state.store.job(&id).await?.ok_or_else(|| AppError::not_found("job"))?;
    if job.status != JobStatus::Done {
        return Err(not_ready(&job));
    }
    let stem = job.filename.rsplit_once('.').map_or(job.filename.as_str(), |(s, _)| s);
    let download: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || "-_".contains(c) { c } else { '_' }).collect();
    let disposition = format!("attachment; filename=\"{download}-tilepipe.{}\"", job.output.extension());
    let mut response = serve_file(state.jobs.result_path(&id, job.output), job.output.mime(), request).await?;
    if response.status().is_success() {
        let disposition = header::HeaderValue::from_str(&disposition).map_err(anyhow::Error::from)?;
        response.headers_mut().insert(header::CONTENT_DISPOSITION, disposition);
    }
    Ok(response)
}

/// Streams a file from disk, with Range requests (resumable downloads,
/// seeking), never reading it whole into memory.
async fn serve_file(path: std::path::PathBuf, mime: &str, request: Request) -> AppResult<Response> {
    let Ok(response) = tower_http::services::ServeFile::new(path).oneshot(request).await;
    let mut response = response.map(axum::body::Body::new);
    if response.status().is_success() {
        let mime = header::HeaderValue::from_str(mime).map_err(anyhow::Error::from)?;
        response.headers_mut().insert(header::CONTENT_TYPE, mime);
    }
    Ok(response)
}

/// `GET /api/jobs/{id}/input`: the uploaded file as it came, for the
/// before/after view.
async fn job_input(State(state): State<AppState>, Path(id): Path<String>, request: Request) -> AppResult<Response> {
    let id = job_id(&id)?;
    state.store.job(&id).await?.ok_or_else(|| AppError::not_found("job"))?;
    let path = state.jobs.input_path(&id).await.ok_or_else(|| AppError::not_found("input file"))?;
    // Sniffed at upload, named by its format since: never the client's name.
    let format = image::ImageFormat::from_path(&path).map_err(anyhow::Error::from)?;
    serve_file(path, format.to_mime_type(), request).await
}

/// `GET /api/jobs/{id}/preview/{input|result}`: the input, or the done
/// job's result, as a JPEG at most 2048 px on its long side (made on the
/// first request; see [`crate::preview`]).
async fn job_preview(
    State(state): State<AppState>,
    Path((id, which)): Path<(String, String)>,
    request: Request,
) -> AppResult<Response> {
    let id = job_id(&id)?;
    let job = state.store.job(&id).await?.ok_or_else(|| AppError::not_found("job"))?;
    let image = match which.as_str() {
        "input" => state.jobs.input_path(&id).await.ok_or_else(|| AppError::not_found("input file"))?,
        "result" if job.status == JobStatus::Done => state.jobs.result_path(&id, job.output),
        "result" => return Err(not_ready(&job)),
        _ => return Err(AppError::not_found("preview (input or result)")),
    };
    let preview = state.jobs.preview_path(&id, &which);
    if let Err(e) = crate::preview::ensure(&state, image, preview.clone()).await {
        // Deleted while its file was read: gone, not broken.
        return Err(match state.store.job(&id).await {
            Ok(None) => AppError::not_found("job"),
            _ => e,
        });
    }
    let response = serve_file(preview, "image/jpeg", request).await?;
    Ok(unchanging(response))
}

/// A job's input and result never change, nor anything made of them.
fn unchanging(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("private, max-age=86400"));
    response
}

fn not_ready(job: &Job) -> AppError {
    let message = format!("the job is {}; its result is not ready", job.status.as_str());
    AppError::client(StatusCode::CONFLICT, ErrorCode::NotReady, message)
}

/// `GET /api/jobs/{id}/zoom`: the done job's result as a Deep Zoom pyramid
/// (see [`crate::zoom`]): 200 with its description once built; 202 with
/// the progress while it is built, which the first request starts.
async fn job_zoom(State(state): State<AppState>, Path(id): Path<String>) -> AppResult<Response> {
    use axum::response::IntoResponse;
    let id = job_id(&id)?;
    let job = state.store.job(&id).await?.ok_or_else(|| AppError::not_found("job"))?;
    if job.status != JobStatus::Done {
        return Err(not_ready(&job));
    }
    let files = (state.jobs.result_path(&id, job.output), state.jobs.zoom_dir(&id));
    let zoom = state.zooms.status(&id, files).await?;
    let status = match zoom {
        app::api::Zoom::Building { .. } => StatusCode::ACCEPTED,
        app::api::Zoom::Ready { .. } => StatusCode::OK,
    };
    Ok((status, Json(zoom)).into_response())
}

/// `GET /api/jobs/{id}/zoom/{level}/{column}_{row}.{jpg|png}`: a tile of
/// the job's pyramid.
async fn zoom_tile(
    State(state): State<AppState>,
    Path((id, level, tile)): Path<(String, String, String)>,
    request: Request,
) -> AppResult<Response> {
    let id = job_id(&id)?;
    let (path, format) =
        crate::zoom::tile_file(&state.jobs.zoom_dir(&id), &level, &tile).ok_or_else(|| AppError::not_found("tile"))?;
    Ok(unchanging(serve_file(path, format.mime(), request).await?))
}

/// `GET /api/limits`: what uploads are accepted.
async fn limits(State(state): State<AppState>) -> Json<app::api::Limits> {
    let c = &state.config;
    Json(app::api::Limits { size: c.limits(), max_upload_bytes: c.max_upload_bytes as u64 })
}

fn worker_timeout(state: &AppState) -> Duration {
    Duration::from_secs(state.config.worker_timeout_secs)
}

async fn list_workers(State(state): State<AppState>) -> AppResult<Json<Vec<Worker>>> {
    Ok(Json(state.store.workers(now_ms(), worker_timeout(&state)).await?))
}

async fn stats(State(state): State<AppState>) -> AppResult<Json<Stats>> {
    Ok(Json(state.store.stats(now_ms(), worker_timeout(&state)).await?))
}
