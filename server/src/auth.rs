//! The optional access token. With `TILEPIPE_TOKEN` (or `TILEPIPE_TOKEN_FILE`)
//! set, every mutating API call needs `Authorization: Bearer <token>`; with
//! `TILEPIPE_PROTECT_READS` too, so do reads. Only the event stream, which
//! browsers cannot give headers, may pass it as `?token=` (a URL ends up in
//! logs and histories). Health and metrics stay open for operators.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{AppError, ErrorCode};
use crate::state::AppState;

pub async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = state.config.token.as_deref().filter(|t| !t.is_empty()) else {
        return next.run(request).await;
    };
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    if reading && !state.config.protect_reads {
        return next.run(request).await;
    }
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let events = reading && request.uri().path() == "/events";
    let query = events.then(|| query_token(request.uri().query().unwrap_or(""))).flatten();
    match bearer.or(query.as_deref()) {
        Some(given) if same(given.as_bytes(), token.as_bytes()) => next.run(request).await,
        given => {
            let wrong = given.is_some();
            let limit = state.config.max_upload_bytes;
            // Read what the client is still sending, briefly, so it gets
            // this answer rather than a broken pipe.
            crate::http::drain(request, limit).await;
            let message = if wrong {
                "the access token is wrong"
            } else {
                "this server needs an access token: send Authorization: Bearer <token>"
            };
            let mut response =
                AppError::client(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message).into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            response
        }
    }
}

fn query_token(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| pair.strip_prefix("token=")).map(percent_decode)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3cres") && !same(b"s3cret", b"s3cre") && !same(b"", b"x"));
    }

    #[test]
    fn the_query_token_is_found_and_decoded() {
        assert_eq!(query_token("a=1&token=ab%2Bc&b=2").as_deref(), Some("ab+c"));
        assert_eq!(query_token("token=plain").as_deref(), Some("plain"));
        assert_eq!(query_token("token=bad%zz%4").as_deref(), Some("bad%zz%4"));
        assert_eq!(query_token("tokens=1"), None);
    }
}
