//! Mapping transport failures to [`QuillError`].
//!
//! Messages are built from reqwest/hyper/io error texts, which may name the URL but never
//! carry request headers, so no secret can reach an error message from here.

use std::error::Error as StdError;
use std::time::Duration;

use super::events::{self, EventKind, Level};
use crate::error::QuillError;

/// What a call is, for error messages: `service/method`, its timeout, and whether it
/// answers with a stream of messages.
#[derive(Debug, Clone)]
pub(crate) struct CallLabel {
    pub path: String,
    pub timeout_ms: u64,
    /// A stream call: once its request went out on a connection, any failure before
    /// END_STREAM (before the response headers too) is the stream breaking off.
    pub streamed: bool,
}

impl CallLabel {
    /// The error of a call past its deadline (reported as a warning event).
    pub fn timeout(&self) -> QuillError {
        self.timed_out(
            QuillError::Timeout {
                reason: format!("call to {} exceeded {} ms", self.path, self.timeout_ms),
            },
            Duration::from_millis(self.timeout_ms),
        )
    }

    pub fn idle_timeout(&self, idle: Duration) -> QuillError {
        self.timed_out(
            QuillError::Timeout {
                reason: format!(
                    "stream {} received no message for {} ms (idle timeout)",
                    self.path,
                    idle.as_millis()
                ),
            },
            idle,
        )
    }

    /// The error of a stream call whose request went out but whose response never
    /// began: `why` is what the transport saw.
    pub fn broke_off_before_response(&self, why: &str) -> QuillError {
        QuillError::Stream {
            reason: format!("stream {} broke off before its response: {why}", self.path),
        }
    }

    fn timed_out(&self, err: QuillError, after: Duration) -> QuillError {
        events::emit(Level::Warning, EventKind::Timeout, |e| {
            e.target = self.path.clone();
            e.elapsed = after;
            e.message = err.to_string();
        });
        err
    }
}

/// Where a body error happened: a unary body is one message, a stream body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    Unary,
    Stream,
}

/// The error and its sources as one line, without repeating a text a wrapper already
/// included (hyper and reqwest often do).
pub(crate) fn describe(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// An error from sending a request, before the response headers arrived.
pub(crate) fn map_send_error(err: reqwest::Error, label: &CallLabel) -> QuillError {
    if err.is_timeout() {
        return label.timeout();
    }
    if err.is_builder() {
        return QuillError::invalid(format!(
            "could not build the request to {}: {}",
            label.path,
            describe(&err)
        ));
    }
    if err.is_redirect() {
        return QuillError::protocol(format!("call to {}: {}", label.path, describe(&err)));
    }
    // A stream whose request reached an open connection and got no response (the
    // connection closed, the stream was reset): the stream broke off, as it would have
    // a moment later with the headers in (protocol.md §3), on every HTTP version.
    if label.streamed && !err.is_connect() {
        return label.broke_off_before_response(&describe(&err));
    }
    // Refused, DNS, TLS handshake, reset or closed before the response: the server
    // could not be reached or gave no answer, which is what Connection means.
    QuillError::Connection {
        reason: format!("call to {}: {}", label.path, describe(&err)),
    }
}

/// An error while reading a response body.
pub(crate) fn map_body_error(err: reqwest::Error, label: &CallLabel, kind: BodyKind) -> QuillError {
    if err.is_timeout() {
        return label.timeout();
    }
    let message = format!(
        "response body of {} broke off: {}",
        label.path,
        describe(&err)
    );
    match kind {
        // A dropped connection is never a normal stream end (protocol.md §3).
        BodyKind::Stream => QuillError::Stream { reason: message },
        BodyKind::Unary => QuillError::Connection { reason: message },
    }
}

/// A panic caught inside a call, as the error the caller gets instead.
pub(crate) fn panic_error(payload: Box<dyn std::any::Any + Send>) -> QuillError {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    QuillError::Cancelled {
        reason: format!("the call was aborted by an internal panic: {text}"),
    }
}

/// Frame decoders report [`QuillError::Decode`]; from the server that is a protocol
/// violation, so the client reports it as such.
pub(crate) fn decode_as_protocol(err: QuillError) -> QuillError {
    match err {
        QuillError::Decode { reason } => QuillError::Protocol { reason },
        other => other,
    }
}

/// A failed task on the client's runtime: a panic must not cross the FFI boundary or
/// unwind through the caller, so it becomes an error.
pub(crate) fn map_join_error(err: tokio::task::JoinError) -> QuillError {
    if err.is_panic() {
        panic_error(err.into_panic())
    } else {
        QuillError::Cancelled {
            reason: "the call was cancelled because the client's runtime shut down".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label() -> CallLabel {
        CallLabel {
            path: "s.v1.S/M".into(),
            timeout_ms: 500,
            streamed: false,
        }
    }

    #[test]
    fn timeout_messages() {
        assert_eq!(
            label().timeout().to_string(),
            "timed out: call to s.v1.S/M exceeded 500 ms"
        );
        let e = label().idle_timeout(Duration::from_millis(20));
        assert!(e.to_string().contains("idle timeout") && e.to_string().contains("20 ms"));
    }

    #[test]
    fn describe_skips_repeats() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        #[derive(Debug)]
        struct Wrap(std::io::Error);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "connect failed")
            }
        }
        impl StdError for Wrap {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        assert_eq!(describe(&Wrap(io)), "connect failed: refused");
    }

    #[test]
    fn decode_errors_become_protocol() {
        let e = decode_as_protocol(QuillError::Decode { reason: "x".into() });
        assert_eq!(e, QuillError::Protocol { reason: "x".into() });
        let s = QuillError::Stream { reason: "y".into() };
        assert_eq!(decode_as_protocol(s.clone()), s);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn join_errors() {
        let panicked = tokio::spawn(async { panic!("boom") }).await.unwrap_err();
        let e = map_join_error(panicked);
        assert!(
            matches!(&e, QuillError::Cancelled { reason } if reason.contains("boom")),
            "{e}"
        );
        let h = tokio::spawn(std::future::pending::<()>());
        h.abort();
        let e = map_join_error(h.await.unwrap_err());
        assert!(matches!(e, QuillError::Cancelled { .. }));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn reqwest_errors_map_by_kind() {
        // Nothing listens on port 9 of localhost in the test environment.
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let err = client
            .post("http://127.0.0.1:9/x")
            .send()
            .await
            .unwrap_err();
        assert!(matches!(
            map_send_error(err, &label()),
            QuillError::Connection { .. }
        ));
        let err = client.post("not a url").send().await.unwrap_err();
        assert!(matches!(
            map_send_error(err, &label()),
            QuillError::InvalidArgument { .. }
        ));
    }
}
