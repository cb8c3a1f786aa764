//! The JSON API, nested under `/api`: here the router and the reads of
//! jobs, workers and limits; `submit` takes uploads (and runs jobs again),
//! `files` serves a job's files (input, result, previews, pyramid).

mod files;
mod submit;

use std::time::Duration;

use app::api::{Job, Stats, Tile, Worker};
use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};

use crate::error::{AppError, AppResult, ErrorCode};
use crate::sse;
use crate::state::AppState;
use plumbing::now_ms;

pub fn router(max_upload_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/jobs", post(submit::create_job).layer(DefaultBodyLimit::max(max_upload_bytes)).get(list_jobs))
        .route("/jobs/{id}", get(get_job).delete(delete_job))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/jobs/{id}/retry", post(submit::retry_job))
        .route("/jobs/{id}/tiles", get(job_tiles))
        .route("/jobs/{id}/result", get(files::job_result))
        .route("/jobs/{id}/input", get(files::job_input))
        .route("/jobs/{id}/preview/{which}", get(files::job_preview))
        .route("/jobs/{id}/zoom", get(files::job_zoom))
        .route("/jobs/{id}/zoom/{level}/{tile}", get(files::zoom_tile))
        .route("/workers", get(list_workers))
        .route("/stats", get(stats))
        .route("/limits", get(limits))
        .route("/events", get(sse::stream))
        .merge(crate::batches::router())
        .fallback(|| async { AppError::not_found("API route") })
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
    let stats = state.store.stats(now_ms(), worker_timeout(&state)).await?;
    Ok(Json(Stats { task_partitions: state.jobs.window().partitions() as u64, ..stats }))
}
