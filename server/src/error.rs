//! The one error type of the HTTP layer: every failure becomes a status code
//! and a JSON body `{ "error": code, "message": words }`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use app::api::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{message}")]
    Client { status: StatusCode, code: &'static str, message: String },
    /// The backlog is full: 503 with Retry-After.
    #[error("{message}")]
    Busy { retry_after_secs: u32, message: String },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    pub fn client(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AppError::Client { status, code, message: message.into() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::client(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            AppError::Client { status, .. } => *status,
            AppError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Database(_) | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry_after = match &self {
            AppError::Busy { retry_after_secs, .. } => Some(*retry_after_secs),
            _ => None,
        };
        let body = match self {
            AppError::Client { code, message, .. } => ApiError { error: code.into(), message },
            AppError::Busy { message, .. } => ApiError { error: "busy".into(), message },
            other => {
                // Details stay in the log; the client learns only that it was us.
                tracing::error!(error = %other, "internal error");
                ApiError { error: "internal".into(), message: "internal server error".into() }
            }
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

pub type AppResult<T> = Result<T, AppError>;
