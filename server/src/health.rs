//! `GET /healthz` (the process answers) and `GET /readyz` (it can do its
//! work: the broker answers and the database takes writes).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

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
