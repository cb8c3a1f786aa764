//! The one error type of the HTTP layer: every failure becomes a status code
//! and a JSON body `{ "error": code, "message": words }`.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use app::api::ApiError;

/// What went wrong, for programs: the envelope's `error`, one stable
/// snake_case word each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    AlreadyFinished,
    BadMultipart,
    BadRange,
    BadRequest,
    Busy,
    CrossOrigin,
    DiskFull,
    EmptyFile,
    EmptyImage,
    /// Any other status without a code of its own.
    Error,
    ImageTooLarge,
    ImageTooSmall,
    Internal,
    InvalidOps,
    InvalidOutput,
    MethodNotAllowed,
    MissingImage,
    NotFailed,
    NotFound,
    NotReady,
    StillRunning,
    Timeout,
    TooLarge,
    Unauthorized,
    UnknownHost,
    Unprocessable,
    UnreadableImage,
    UnsupportedFormat,
    UnsupportedMediaType,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AlreadyFinished => "already_finished",
            Self::BadMultipart => "bad_multipart",
            Self::BadRange => "bad_range",
            Self::BadRequest => "bad_request",
            Self::Busy => "busy",
            Self::CrossOrigin => "cross_origin",
            Self::DiskFull => "disk_full",
            Self::EmptyFile => "empty_file",
            Self::EmptyImage => "empty_image",
            Self::Error => "error",
            Self::ImageTooLarge => "image_too_large",
            Self::ImageTooSmall => "image_too_small",
            Self::Internal => "internal",
            Self::InvalidOps => "invalid_ops",
            Self::InvalidOutput => "invalid_output",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::MissingImage => "missing_image",
            Self::NotFailed => "not_failed",
            Self::NotFound => "not_found",
            Self::NotReady => "not_ready",
            Self::StillRunning => "still_running",
            Self::Timeout => "timeout",
            Self::TooLarge => "too_large",
            Self::Unauthorized => "unauthorized",
            Self::UnknownHost => "unknown_host",
            Self::Unprocessable => "unprocessable",
            Self::UnreadableImage => "unreadable_image",
            Self::UnsupportedFormat => "unsupported_format",
            Self::UnsupportedMediaType => "unsupported_media_type",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{message}")]
    Client { status: StatusCode, code: ErrorCode, message: String },
    /// The backlog is full: 503 with Retry-After.
    #[error("{message}")]
    Busy { retry_after_secs: u32, message: String },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    pub fn client(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        AppError::Client { status, code, message: message.into() }
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::client(StatusCode::NOT_FOUND, ErrorCode::NotFound, format!("{what} not found"))
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
            AppError::Client { code, message, .. } => ApiError { error: code.to_string(), message: bounded(message) },
            AppError::Busy { message, .. } => ApiError { error: ErrorCode::Busy.to_string(), message },
            other => {
                // Details stay in the log; the client learns only that it was us.
                tracing::error!(error = %other, "internal error");
                ApiError { error: ErrorCode::Internal.to_string(), message: "internal server error".into() }
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

/// Longest error message sent, in bytes: messages may quote the client's input.
const MAX_MESSAGE_BYTES: usize = 500;

fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let cut = pipeline::wire::truncate(&message, MAX_MESSAGE_BYTES - 3).len();
        message.truncate(cut);
        message.push_str("...");
    }
    message
}

/// Makes every error response the JSON envelope, including those made
/// outside the handlers in plain text or with no body: extractor
/// rejections, 404, 405 and body timeouts. HTML error pages (the web UI's)
/// stay as they are.
pub async fn envelope(response: Response) -> Response {
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let wrapped = content_type.starts_with("application/json") || content_type.starts_with("text/html");
    if !(status.is_client_error() || status.is_server_error()) || wrapped {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    // A server error's text is for the log, not the client.
    let message = if text.is_empty() || status.is_server_error() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let code = match status {
        StatusCode::BAD_REQUEST => ErrorCode::BadRequest,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::REQUEST_TIMEOUT => ErrorCode::Timeout,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::TooLarge,
        StatusCode::RANGE_NOT_SATISFIABLE => ErrorCode::BadRange,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::Unprocessable,
        s if s.is_server_error() => ErrorCode::Internal,
        _ => ErrorCode::Error,
    };
    let mut wrapped = AppError::client(status, code, message).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE, header::CONTENT_RANGE] {
        if let Some(value) = parts.headers.get(&name) {
            wrapped.headers_mut().insert(name, value.clone());
        }
    }
    wrapped
}
