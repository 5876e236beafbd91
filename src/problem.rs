//! Problem Details (RFC 7807) parsing, lenient as protocol.md §4 asks.

use std::fmt;

use base64::Engine as _;

use crate::protocol::problem_fields;

/// Longest body text kept in a [`Problem`]; error bodies can be whole HTML pages.
const MAX_BODY_TEXT: usize = 8 * 1024;

/// Decoded RFC 7807 Problem Details of a failed call (protocol.md §4).
///
/// Every field is optional because proxies answer with plain text or HTML; `body` then
/// holds the text. The HTTP status always wins over the JSON `status`.
///
/// ```
/// let p = quill::Problem::from_response(429, Some("application/problem+json"),
///     br#"{"type":"urn:quill:error:429","title":"Quota exceeded","status":429}"#);
/// assert_eq!(p.title.as_deref(), Some("Quota exceeded"));
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct Problem {
    /// HTTP status of the response.
    pub status: u16,
    /// `type` URI, e.g. `urn:quill:error:429`.
    pub problem_type: Option<String>,
    pub title: Option<String>,
    pub detail: Option<String>,
    pub instance: Option<String>,
    /// `quill_proto_type`: the protobuf type of the structured detail.
    pub proto_type: Option<String>,
    /// `quill_proto_detail_base64`, decoded.
    pub proto_detail: Option<Vec<u8>>,
    /// `Retry-After` in milliseconds, when the server sent one in seconds.
    pub retry_after_ms: Option<u64>,
    /// The raw body as text (lossy UTF-8, capped), for plain-text and HTML errors.
    pub body: String,
    /// The `x-request-id` of the failed call: the one the server answered with, else
    /// the one the request carried; what the server's operators can look a call up by.
    pub request_id: Option<String>,
}

impl fmt::Debug for Problem {
    // The body may echo request headers on misbehaving servers; keep Debug short.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Problem")
            .field("status", &self.status)
            .field("problem_type", &self.problem_type)
            .field("title", &self.title)
            .field("detail", &self.detail)
            .field("instance", &self.instance)
            .field("proto_type", &self.proto_type)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl Problem {
    /// Parse an error response. Never fails: a body that is not Problem Details JSON
    /// still gives the HTTP status and the body text.
    pub fn from_response(status: u16, content_type: Option<&str>, body: &[u8]) -> Problem {
        let text = String::from_utf8_lossy(&body[..body.len().min(MAX_BODY_TEXT)]).into_owned();
        let mut p = Problem {
            status,
            body: text,
            ..Problem::default()
        };
        let looks_json = content_type.is_some_and(|c| c.contains("json"))
            || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if !looks_json {
            return p;
        }
        let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body)
        else {
            return p;
        };
        let s = |k: &str| map.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        p.problem_type = s("type");
        p.title = s("title");
        p.detail = s("detail");
        p.instance = s("instance");
        p.proto_type = s(problem_fields::PROTO_TYPE);
        p.proto_detail = map
            .get(problem_fields::PROTO_DETAIL_BASE64)
            .and_then(|v| v.as_str())
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
        p
    }

    /// Parse a `Retry-After` header given in seconds (HTTP dates are ignored).
    pub fn with_retry_after(mut self, header: Option<&str>) -> Problem {
        self.retry_after_ms = header
            .and_then(|h| h.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| (s * 1000.0).min(u64::MAX as f64) as u64);
        self
    }

    /// Whether protocol.md §4 allows retrying an idempotent call after this status.
    pub fn is_retryable(&self) -> bool {
        matches!(self.status, 408 | 425 | 429 | 500 | 502 | 503 | 504)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(t) = &self.title {
            write!(f, ": {t}")?;
        }
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        if self.title.is_none() && self.detail.is_none() && !self.body.trim().is_empty() {
            let snippet: String = self.body.trim().chars().take(200).collect();
            write!(f, ": {snippet}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_problem_details() {
        let body = br#"{"type": "urn:quill:error:429", "title": "Quota exceeded", "status": 429, "detail": "slow down", "instance": "/x/1", "quill_proto_type": "pkg.QuotaError", "quill_proto_detail_base64": "CgRwZWVy", "extra": 1}"#;
        let p = Problem::from_response(429, Some("application/problem+json"), body);
        assert_eq!(p.problem_type.as_deref(), Some("urn:quill:error:429"));
        assert_eq!(p.title.as_deref(), Some("Quota exceeded"));
        assert_eq!(p.detail.as_deref(), Some("slow down"));
        assert_eq!(p.instance.as_deref(), Some("/x/1"));
        assert_eq!(p.proto_type.as_deref(), Some("pkg.QuotaError"));
        assert_eq!(p.proto_detail.as_deref(), Some(&b"\n\x04peer"[..]));
        assert!(p.body.contains("extra"));
    }

    #[test]
    fn http_status_wins_and_plain_text_falls_back() {
        let p = Problem::from_response(
            503,
            Some("application/problem+json"),
            br#"{"status": 200, "title": "t", "type": "x"}"#,
        );
        assert_eq!(p.status, 503);
        let p = Problem::from_response(502, Some("text/html"), b"<html>Bad gateway</html>");
        assert_eq!(p.status, 502);
        assert_eq!(p.title, None);
        assert_eq!(p.to_string(), "HTTP 502: <html>Bad gateway</html>");
        let p = Problem::from_response(500, Some("application/json"), b"{not json");
        assert_eq!(p.body, "{not json");
    }

    #[test]
    fn retry_after_seconds() {
        let p = Problem::from_response(429, None, b"").with_retry_after(Some("2"));
        assert_eq!(p.retry_after_ms, Some(2000));
        let p = Problem::from_response(429, None, b"")
            .with_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(p.retry_after_ms, None);
    }
}
