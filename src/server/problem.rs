//! Building Problem Details (RFC 7807, protocol.md §4) error responses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::protocol::{problem_fields, CONTENT_TYPE_PROBLEM};

/// A Problem Details response under construction.
#[derive(Debug, Clone)]
pub struct ProblemResponse {
    status: StatusCode,
    fields: Map<String, Value>,
    retry_after: Option<u64>,
}

/// The title used for a status when the caller gives none.
pub fn default_title(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "Unauthenticated",
        413 => "Payload Too Large",
        499 => "Cancelled",
        _ => status.canonical_reason().unwrap_or("Error"),
    }
}

impl ProblemResponse {
    /// `{"type": "urn:quill:error:<status>", "title", "status", "detail"}`.
    pub fn new(status: StatusCode, title: Option<&str>, detail: impl Into<String>) -> Self {
        let mut fields = Map::new();
        fields.insert(
            "type".into(),
            Value::String(format!(
                "{}{}",
                problem_fields::TYPE_PREFIX,
                status.as_u16()
            )),
        );
        fields.insert(
            "title".into(),
            Value::String(title.unwrap_or(default_title(status)).to_owned()),
        );
        fields.insert("status".into(), Value::from(status.as_u16()));
        let detail = detail.into();
        if !detail.is_empty() {
            fields.insert("detail".into(), Value::String(detail));
        }
        ProblemResponse {
            status,
            fields,
            retry_after: None,
        }
    }

    /// Adds (or replaces) a field.
    pub fn field(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.to_owned(), value.into());
        self
    }

    /// Sends a `Retry-After: <seconds>` header.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl IntoResponse for ProblemResponse {
    fn into_response(self) -> Response {
        let body =
            serde_json::to_vec(&Value::Object(self.fields)).unwrap_or_else(|_| b"{}".to_vec());
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, CONTENT_TYPE_PROBLEM)],
            body,
        )
            .into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// A Problem Details response with the default title of `status`.
pub fn problem(status: StatusCode, detail: impl Into<String>) -> Response {
    ProblemResponse::new(status, None, detail).into_response()
}

/// 400 invalid argument.
pub fn bad_request(detail: impl Into<String>) -> Response {
    problem(StatusCode::BAD_REQUEST, detail)
}

/// Fallback of the router: 404 for unknown paths.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        format!("no method at {}", uri.path()),
    )
}

/// Fallback of the known paths for methods other than POST: 405 with `Allow: POST`.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let mut resp = problem(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {}; Quill calls are POST",
            uri.path()
        ),
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    resp
}
