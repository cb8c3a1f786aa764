//! A job's files: its input as uploaded, its result, their previews and
//! the result's zoomable pyramid, streamed with `Range` support.

use app::api::{Job, JobStatus};
use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use tower::ServiceExt;

use super::job_id;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::state::AppState;

pub(super) async fn job_result(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> AppResult<Response> {
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
pub(super) async fn job_input(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> AppResult<Response> {
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
pub(super) async fn job_preview(
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
pub(super) async fn job_zoom(State(state): State<AppState>, Path(id): Path<String>) -> AppResult<Response> {
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
pub(super) async fn zoom_tile(
    State(state): State<AppState>,
    Path((id, level, tile)): Path<(String, String, String)>,
    request: Request,
) -> AppResult<Response> {
    let id = job_id(&id)?;
    let (path, format) =
        crate::zoom::tile_file(&state.jobs.zoom_dir(&id), &level, &tile).ok_or_else(|| AppError::not_found("tile"))?;
    Ok(unchanging(serve_file(path, format.mime(), request).await?))
}
