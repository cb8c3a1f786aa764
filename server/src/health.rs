//! The operator's endpoints: `GET /healthz` (the process answers), `GET
//! /readyz` (it can do its work: the broker answers and the database takes
//! writes) and `GET /metrics`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;

use crate::error::AppResult;
use crate::state::AppState;

pub async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Serialize)]
pub struct Readiness {
    ready: bool,
    database: String,
    broker: String,
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let database = state.store.check_writable().await.map_err(anyhow::Error::from);
    let broker = crate::kafka::check_reachable(state.jobs.producer(), Duration::from_secs(3)).await;
    let word = |r: &anyhow::Result<()>| r.as_ref().map_or_else(|e| format!("{e:#}"), |()| "ok".to_owned());
    let ready = database.is_ok() && broker.is_ok();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Readiness { ready, database: word(&database), broker: word(&broker) }))
}

/// `GET /metrics`: OpenMetrics text.
pub async fn metrics(State(state): State<AppState>) -> AppResult<impl IntoResponse> {
    let timeout = Duration::from_secs(state.config.worker_timeout_secs);
    let text = state.metrics.render(&state.store, state.jobs.window().usage(), timeout).await?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text))
}
